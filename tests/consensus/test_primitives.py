"""Proposer selection, quorum arithmetic, the double-sign guard, evidence and message codecs."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from gridledger.chain.abci import Validator
from gridledger.chain.block import BlockError
from gridledger.chain.consensus.tendermint.evidence import DuplicateVoteEvidence
from gridledger.chain.consensus.tendermint.privval import DoubleSignError, PrivValidator
from gridledger.chain.consensus.tendermint.types import (
    Commit,
    ConsensusError,
    Proposal,
    Vote,
    VoteType,
)
from gridledger.chain.consensus.tendermint.validators import (
    ValidatorSet,
    ValidatorSetError,
    verify_commit,
)
from gridledger.chain.consensus.tendermint.voteset import MAX_VALUES_PER_VALIDATOR, VoteSet

from .simnet import make_keys

_COMMIT_HEAD_BYTES = 8 + 4 + 32 + 2  # height, round, block id, vote count

CHAIN = "prim-chain"


def _vals(powers: list[int], seed: int = 0) -> tuple[list, ValidatorSet]:
    keys = make_keys(len(powers), seed)
    pairs = zip(keys, powers, strict=True)
    vs = ValidatorSet([Validator(bytes(k.verify_key), p) for k, p in pairs])
    return keys, vs


# --- proposer selection ---------------------------------------------------------------------
def test_proposer_priority_first_steps_by_hand():
    keys, vs = _vals([1, 2, 3])
    pk = [bytes(k.verify_key) for k in keys]
    # Step 1: priorities 0 + power = (1, 2, 3) -> power-3 proposes and pays 6: (1, 2, -3).
    assert vs.proposer == pk[2]
    assert dict(zip(vs.validators, vs.priorities, strict=True))[Validator(pk[2], 3)] == -3
    # Step 2: (2, 4, 0) -> power-2 proposes: (2, -2, 0).
    vs.increment_proposer_priority(1)
    assert vs.proposer == pk[1]
    assert sorted(vs.priorities) == [-2, 0, 2]


@pytest.mark.parametrize("powers", [[1, 1, 1, 1], [1, 2, 3], [10, 1, 1, 5], [7, 3, 3, 3, 1]])
def test_each_validator_proposes_in_proportion_to_power(powers):
    keys, vs = _vals(powers)
    total = sum(powers)
    counts = Counter()
    for _ in range(total * 3):
        counts[vs.proposer] += 1
        vs.increment_proposer_priority(1)
    for k, p in zip(keys, powers, strict=True):
        assert counts[bytes(k.verify_key)] == 3 * p


def test_proposer_for_round_matches_stepping_a_copy():
    _, vs = _vals([4, 3, 2, 1])
    c = vs.copy()
    for r in range(6):
        assert vs.proposer_for_round(r) == c.proposer
        c.increment_proposer_priority(1)


def test_new_validator_waits_before_proposing():
    _, vs = _vals([1, 1, 1])
    newcomer = bytes(make_keys(1, seed=99)[0].verify_key)
    vs2 = vs.with_updates([Validator(newcomer, 1)])
    assert len(vs2) == 4
    first = []
    for _ in range(3):
        first.append(vs2.proposer)
        vs2.increment_proposer_priority(1)
    assert newcomer not in first  # starts at -1.125 * total power


def test_updates_remove_and_change_power_and_reject_bad_ones():
    keys, vs = _vals([1, 1, 1, 1])
    pk = [bytes(k.verify_key) for k in keys]
    vs2 = vs.with_updates([Validator(pk[0], 0), Validator(pk[1], 5)])
    assert pk[0] not in vs2 and vs2.power_of(pk[1]) == 5 and vs2.total_power == 7
    assert vs2.hash() != vs.hash()
    with pytest.raises(ValidatorSetError, match="unknown"):
        vs.with_updates([Validator(b"\x09" * 32, 0)])
    with pytest.raises(ValidatorSetError, match="every validator"):
        vs.with_updates([Validator(p, 0) for p in pk])
    with pytest.raises(ValidatorSetError, match="power must be > 0"):
        ValidatorSet([Validator(pk[0], 0)])
    with pytest.raises(ValidatorSetError, match="duplicate"):
        ValidatorSet([Validator(pk[0], 1), Validator(pk[0], 2)])


def test_validator_set_json_round_trip_keeps_priorities():
    _, vs = _vals([3, 1, 2])
    vs.increment_proposer_priority(5)
    back = ValidatorSet.from_json(json.loads(json.dumps(vs.to_json())))
    assert back.priorities == vs.priorities and back.proposer == vs.proposer
    assert back.hash() == vs.hash()


# --- quorum arithmetic ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("total", "power", "quorum", "third"),
    [
        (4, 2, False, True),
        (4, 3, True, True),
        (3, 2, False, True),
        (3, 1, False, False),
        (100, 66, False, True),
        (100, 67, True, True),
        (100, 33, False, False),
        (100, 34, False, True),
        (6, 4, False, True),
        (6, 5, True, True),
    ],
)
def test_quorum_thresholds_are_strict(total, power, quorum, third):
    _, vs = _vals([total])
    assert vs.has_quorum(power) is quorum
    assert vs.has_one_third(power) is third


def test_voteset_counts_power_once_and_flags_conflicts(tmp_path):
    keys, vs = _vals([1, 2, 3, 4])
    pvs = [PrivValidator(k, tmp_path / f"{i}.json", CHAIN) for i, k in enumerate(keys)]
    s = VoteSet(1, 0, VoteType.PREVOTE, vs)
    b = b"\x07" * 32
    assert s.add(pvs[3].sign_vote(VoteType.PREVOTE, 1, 0, b)).added
    assert not s.add(pvs[3].sign_vote(VoteType.PREVOTE, 1, 0, b)).added  # duplicate
    assert s.power_for(b) == 4 and not s.has_quorum_for(b)  # 4/10
    s.add(pvs[2].sign_vote(VoteType.PREVOTE, 1, 0, b))  # 7/10 > 2/3
    assert s.has_quorum_for(b) and s.quorum_block() == (True, b)
    res = s.add(pvs[0].sign_unguarded_vote(VoteType.PREVOTE, 1, 0, None))
    assert res.added and res.conflict is None
    assert s.total == 8
    # An equivocator's second value counts for that value (as the paper counts messages), is
    # reported as a conflict, and does not count twice among the distinct voters.
    res = s.add(pvs[0].sign_unguarded_vote(VoteType.PREVOTE, 1, 0, b))
    assert res.added and res.conflict is not None
    assert {res.conflict[0].block_id, res.conflict[1].block_id} == {None, b}
    assert s.power_for(b) == 8 and s.power_for(None) == 1 and s.total == 8
    assert not s.add(pvs[0].sign_unguarded_vote(VoteType.PREVOTE, 1, 0, b)).added
    for k in range(3, 10):  # a liar cannot make us keep unboundedly many values
        s.add(pvs[0].sign_unguarded_vote(VoteType.PREVOTE, 1, 0, bytes([k]) * 32))
    assert len(s.votes_of(pvs[0].pub_key)) == MAX_VALUES_PER_VALIDATOR
    with pytest.raises(ConsensusError, match="non-validator"):
        other = PrivValidator(make_keys(1, 5)[0], tmp_path / "x.json", CHAIN)
        s.add(other.sign_vote(VoteType.PREVOTE, 1, 0, b))


# --- double-sign guard ----------------------------------------------------------------------
def test_guard_refuses_conflicts_across_restart(tmp_path):
    key = make_keys(1, 3)[0]
    path = tmp_path / "pv.json"
    pv = PrivValidator(key, path, CHAIN)
    b1, b2 = b"\x01" * 32, b"\x02" * 32
    v1 = pv.sign_vote(VoteType.PREVOTE, 5, 2, b1)
    # "Restart": a fresh signer from the same state file.
    pv2 = PrivValidator(key, path, CHAIN)
    with pytest.raises(DoubleSignError, match="conflicting"):
        pv2.sign_vote(VoteType.PREVOTE, 5, 2, b2)
    with pytest.raises(DoubleSignError, match="already signed"):
        pv2.sign_vote(VoteType.PREVOTE, 5, 1, b1)
    with pytest.raises(DoubleSignError, match="already signed"):
        pv2.sign_proposal(5, 2, -1, b1, b"blk")  # propose step precedes prevote
    again = pv2.sign_vote(VoteType.PREVOTE, 5, 2, b1)
    assert again.signature == v1.signature  # identical re-sign returns the stored signature
    assert pv2.sign_vote(VoteType.PRECOMMIT, 5, 2, b1).verify(CHAIN)
    assert PrivValidator(key, path, CHAIN).last.step == 3


def test_guard_refuses_to_start_from_a_corrupt_state_file(tmp_path):
    path = tmp_path / "pv.json"
    path.write_text("{not json")
    with pytest.raises(DoubleSignError, match="unreadable"):
        PrivValidator(make_keys(1)[0], path, CHAIN)


# --- evidence -------------------------------------------------------------------------------
def test_evidence_verifies_and_rejects_forgeries(tmp_path):
    keys, vs = _vals([1, 1, 1, 1])
    pv = PrivValidator(keys[0], tmp_path / "pv.json", CHAIN)
    a = pv.sign_vote(VoteType.PRECOMMIT, 3, 1, b"\x01" * 32)
    b = pv.sign_unguarded_vote(VoteType.PRECOMMIT, 3, 1, b"\x02" * 32)
    ev = DuplicateVoteEvidence.from_votes(b, a)
    assert DuplicateVoteEvidence.from_votes(a, b) == ev  # canonical order
    back = DuplicateVoteEvidence.decode(ev.encode())
    back.verify(CHAIN, vs, 4)
    with pytest.raises(ConsensusError, match="do not conflict"):
        DuplicateVoteEvidence(a, a).verify(CHAIN, vs, 4)
    c = pv.sign_unguarded_vote(VoteType.PRECOMMIT, 3, 2, b"\x02" * 32)
    with pytest.raises(ConsensusError, match="different slots"):
        DuplicateVoteEvidence.from_votes(a, c).verify(CHAIN, vs, 4)
    forged = Vote(b.type, b.height, b.round, b"\x03" * 32, b.validator, b.signature)
    with pytest.raises(ConsensusError, match="signature"):
        DuplicateVoteEvidence.from_votes(a, forged).verify(CHAIN, vs, 4)
    with pytest.raises(ConsensusError, match="signature"):
        ev.verify("other-chain", vs, 4)
    with pytest.raises(ConsensusError, match="future"):
        ev.verify(CHAIN, vs, 2)
    _, other_vs = _vals([1, 1, 1, 1], seed=9)
    with pytest.raises(ConsensusError, match="not a validator"):
        ev.verify(CHAIN, other_vs, 4)
    with pytest.raises(ConsensusError, match="tag"):
        DuplicateVoteEvidence.decode(b"junk" + ev.encode())


# --- codecs and commits ---------------------------------------------------------------------
def test_vote_proposal_commit_round_trip_and_bad_input(tmp_path):
    keys, vs = _vals([1, 1, 1, 1])
    pvs = [PrivValidator(k, tmp_path / f"{i}.json", CHAIN) for i, k in enumerate(keys)]
    bid = hashlib.sha256(b"blk").digest()
    p = pvs[0].sign_proposal(9, 1, 0, bid, b"blk")
    assert Proposal.decode(p.encode()) == p and p.verify(CHAIN)
    with pytest.raises(ConsensusError, match="length"):
        Proposal.decode(p.encode() + b"x")
    votes = tuple(pv.sign_vote(VoteType.PRECOMMIT, 9, 1, bid) for pv in pvs[:3])
    assert Vote.decode(votes[0].encode()) == votes[0]
    with pytest.raises(ConsensusError, match="bytes"):
        Vote.decode(votes[0].encode()[:-1])
    commit = Commit.from_precommits(9, 1, bid, votes)
    assert Commit.from_wire(commit.to_wire()) == commit
    assert Commit.decode(commit.encode()) == commit  # the store's form carries the same facts
    # the wire form is the vote wire layout, so each precommit's own encoding appears in it
    assert all(v.encode() in commit.to_wire() for v in votes)
    verify_commit(CHAIN, vs, commit)
    assert commit.check(CHAIN, vs.validators, bid, 9) is None  # the ledger's check agrees
    with pytest.raises(ConsensusError, match="needs more than 2/3"):
        verify_commit(CHAIN, vs, Commit.from_precommits(9, 1, bid, votes[:2]))
    with pytest.raises(ConsensusError, match="twice"):
        verify_commit(CHAIN, vs, Commit.from_precommits(9, 1, bid, (*votes[:2], votes[0])))
    with pytest.raises(ConsensusError, match="signature"):
        verify_commit("other", vs, commit)
    nil_vote = pvs[3].sign_vote(VoteType.PRECOMMIT, 9, 1, None)
    with pytest.raises(BlockError, match="not a precommit for its block"):
        Commit.from_precommits(9, 1, bid, (*votes, nil_vote))
    wire = bytearray(commit.to_wire())
    wire[_COMMIT_HEAD_BYTES] = int(VoteType.PREVOTE)  # first vote's type byte
    with pytest.raises(BlockError, match="not a precommit for its block"):
        Commit.from_wire(bytes(wire))


def test_guard_refuses_to_start_from_a_torn_or_edited_record(tmp_path):
    key = make_keys(1, 4)[0]
    path = tmp_path / "pv.json"
    PrivValidator(key, path, CHAIN).sign_vote(VoteType.PREVOTE, 7, 0, b"\x01" * 32)
    data = bytearray(path.read_bytes())
    data[data.index(b'"height": 7') + 10] = ord("1")  # height 7 -> 1: would allow re-signing
    path.write_bytes(bytes(data))
    with pytest.raises(DoubleSignError, match="checksum"):
        PrivValidator(key, path, CHAIN)
