"""Locking and proof-of-lock rules of Algorithm 1, driven message by message on one validator."""

from __future__ import annotations

import hashlib

import pytest

from gridledger.chain.abci import Validator
from gridledger.chain.consensus.tendermint.privval import PrivValidator
from gridledger.chain.consensus.tendermint.state import COMMITTED, ConsensusState, Timeouts
from gridledger.chain.consensus.tendermint.types import (
    Commit,
    ConsensusError,
    Proposal,
    Step,
    Vote,
    VoteType,
)
from gridledger.chain.consensus.tendermint.validators import ValidatorSet

from .simnet import make_keys

CHAIN = "lock-chain"


class Recorder:
    def __init__(self):
        self.proposals: list[Proposal] = []
        self.votes: list[Vote] = []
        self.timeouts: list[tuple[int, int, Step, float]] = []
        self.decisions: list[tuple[int, bytes, Commit]] = []
        self.evidence = []
        self.relayed: list[Vote] = []

    def broadcast_proposal(self, p):
        self.proposals.append(p)

    def broadcast_vote(self, v):
        self.votes.append(v)

    def schedule_timeout(self, height, rnd, step, delay_s):
        self.timeouts.append((height, rnd, step, delay_s))

    def get_value(self, height, rnd):
        b = f"own-{height}-{rnd}".encode()
        return b, hashlib.sha256(b).digest()

    def block_id_of(self, height, block):
        return hashlib.sha256(block).digest()

    def validate(self, height, block):
        return not block.startswith(b"invalid")

    def decide(self, height, block, commit):
        self.decisions.append((height, block, commit))

    def on_evidence(self, ev):
        self.evidence.append(ev)

    def relay_vote(self, v):
        self.relayed.append(v)


class Harness:
    """Validator under test plus the keys of the three others, who never propose to it first."""

    def __init__(self, tmp_path):
        keys = make_keys(4, seed=42)
        self.valset = ValidatorSet([Validator(bytes(k.verify_key), 1) for k in keys])
        proposers = [self.valset.proposer_for_round(r) for r in range(4)]
        # The node under test must not propose in rounds 0..2 so that we script those proposals.
        me = next(k for k in keys if bytes(k.verify_key) not in proposers[:3])
        self.me = me
        self.others = {bytes(k.verify_key): k for k in keys if k is not me}
        self.pv = {
            pk: PrivValidator(k, tmp_path / f"o{i}.json", CHAIN)
            for i, (pk, k) in enumerate(self.others.items())
        }
        self.env = Recorder()
        self.cs = ConsensusState(
            CHAIN, self.env, PrivValidator(me, tmp_path / "me.json", CHAIN), Timeouts()
        )
        self.cs.start_height(1, self.valset.copy())

    def propose(self, rnd: int, block: bytes, pol: int = -1) -> bytes:
        pk = self.valset.proposer_for_round(rnd)
        bid = hashlib.sha256(block).digest()
        self.cs.on_proposal(self.pv[pk].sign_proposal(1, rnd, pol, bid, block))
        return bid

    def votes(self, vtype: VoteType, rnd: int, bid: bytes | None, n: int) -> None:
        for pk in list(self.others)[:n]:
            self.cs.on_vote(self.pv[pk].sign_vote(vtype, 1, rnd, bid))

    def my_last_vote(self) -> Vote:
        return self.env.votes[-1]


def test_prevote_for_valid_proposal_then_lock_on_polka(tmp_path):
    h = Harness(tmp_path)
    v = h.propose(0, b"block-v")
    assert h.my_last_vote().type == VoteType.PREVOTE and h.my_last_vote().block_id == v
    h.votes(VoteType.PREVOTE, 0, v, 2)  # 3 of 4 prevotes (with ours): a polka
    last = h.my_last_vote()
    assert (last.type, last.block_id) == (VoteType.PRECOMMIT, v)
    assert (h.cs.hs.locked_id, h.cs.hs.locked_round) == (v, 0)
    assert (h.cs.hs.valid_id, h.cs.hs.valid_round) == (v, 0)


def test_invalid_proposal_gets_nil_prevote(tmp_path):
    h = Harness(tmp_path)
    h.propose(0, b"invalid-block")
    assert h.my_last_vote().type == VoteType.PREVOTE and h.my_last_vote().block_id is None


def test_locked_validator_prevotes_nil_for_other_block_without_newer_polka(tmp_path):
    h = Harness(tmp_path)
    v = h.propose(0, b"block-v")
    h.votes(VoteType.PREVOTE, 0, v, 2)
    h.votes(VoteType.PRECOMMIT, 0, None, 2)  # others precommit nil: no decision in round 0
    assert any(t[:3] == (1, 0, Step.PRECOMMIT) for t in h.env.timeouts)
    h.cs.on_timeout(1, 0, Step.PRECOMMIT)
    assert h.cs.round == 1
    h.propose(1, b"block-w")  # a different value with no proof of lock
    last = h.my_last_vote()
    assert (last.type, last.round, last.block_id) == (VoteType.PREVOTE, 1, None)
    assert h.cs.hs.locked_id == v


def test_locked_validator_prevotes_its_value_when_reproposed_with_pol(tmp_path):
    h = Harness(tmp_path)
    v = h.propose(0, b"block-v")
    h.votes(VoteType.PREVOTE, 0, v, 2)
    h.votes(VoteType.PRECOMMIT, 0, None, 2)
    h.cs.on_timeout(1, 0, Step.PRECOMMIT)
    h.propose(1, b"block-v", pol=0)  # re-proposal of the locked value with its polka round
    last = h.my_last_vote()
    assert (last.type, last.round, last.block_id) == (VoteType.PREVOTE, 1, v)


def test_newer_polka_unlocks(tmp_path):
    h = Harness(tmp_path)
    v = h.propose(0, b"block-v")
    h.votes(VoteType.PREVOTE, 0, v, 2)
    h.votes(VoteType.PRECOMMIT, 0, None, 2)
    h.cs.on_timeout(1, 0, Step.PRECOMMIT)
    w = h.propose(1, b"block-w")
    assert h.my_last_vote().block_id is None  # still locked on v
    h.votes(VoteType.PREVOTE, 1, w, 3)  # but the others form a polka for w in round 1
    h.votes(VoteType.PRECOMMIT, 1, None, 3)
    h.cs.on_timeout(1, 1, Step.PRECOMMIT)
    assert h.cs.round == 2
    h.propose(2, b"block-w", pol=1)  # proof of lock at round 1 >= our locked round 0
    last = h.my_last_vote()
    assert (last.type, last.round, last.block_id) == (VoteType.PREVOTE, 2, w)


def test_pol_proposal_without_the_polka_is_not_prevoted_yet(tmp_path):
    h = Harness(tmp_path)
    h.cs.on_timeout(1, 0, Step.PROPOSE)  # no proposal in round 0: prevote nil
    h.votes(VoteType.PREVOTE, 0, None, 2)
    h.cs.on_timeout(1, 0, Step.PREVOTE)
    h.votes(VoteType.PRECOMMIT, 0, None, 2)
    h.cs.on_timeout(1, 0, Step.PRECOMMIT)
    n_votes = len(h.env.votes)
    h.propose(1, b"block-x", pol=0)  # claims a polka in round 0 that never happened
    assert len(h.env.votes) == n_votes and h.cs.step == Step.PROPOSE


def test_decides_on_two_thirds_precommits_even_from_an_earlier_round(tmp_path):
    h = Harness(tmp_path)
    v = h.propose(0, b"block-v")
    late = [h.pv[pk].sign_vote(VoteType.PRECOMMIT, 1, 0, v) for pk in h.others]
    h.votes(VoteType.PREVOTE, 1, None, 2)  # two others are already in round 1: skip there
    assert h.cs.round == 1
    for vote in late:  # late precommits for v in round 0 decide v
        h.cs.on_vote(vote)
    assert h.env.decisions and h.env.decisions[0][1] == b"block-v"
    assert h.env.decisions[0][2].round == 0 and h.cs.step == COMMITTED


def test_f_plus_one_votes_from_a_higher_round_skip_ahead(tmp_path):
    h = Harness(tmp_path)
    h.votes(VoteType.PREVOTE, 5, None, 1)
    assert h.cs.round == 0  # 1 of 4 is not more than 1/3
    h.votes(VoteType.PREVOTE, 5, None, 2)
    assert h.cs.round == 5


def test_timeouts_grow_with_the_round():
    t = Timeouts()
    assert [t.for_step(Step.PROPOSE, r) for r in range(3)] == [1.0, 1.5, 2.0]
    assert t.for_step(Step.PREVOTE, 2) > t.for_step(Step.PREVOTE, 0)


def test_bad_messages_are_rejected_and_change_nothing(tmp_path):
    h = Harness(tmp_path)
    wrong = next(pk for pk in h.others if pk != h.valset.proposer_for_round(0))
    block = b"block-z"
    p = h.pv[wrong].sign_proposal(1, 0, -1, hashlib.sha256(block).digest(), block)
    with pytest.raises(ConsensusError, match="not from its proposer"):
        h.cs.on_proposal(p)
    pk = next(iter(h.others))
    good = h.pv[pk].sign_vote(VoteType.PREVOTE, 1, 0, None)
    forged = Vote(good.type, good.height, good.round, b"\x01" * 32, pk, good.signature)
    with pytest.raises(ConsensusError, match="signature"):
        h.cs.on_vote(forged)
    assert h.cs.hs.votes[(0, VoteType.PREVOTE)].total == 0
    assert not h.env.votes


def test_equivocating_vote_becomes_evidence_once(tmp_path):
    h = Harness(tmp_path)
    pk = next(iter(h.others))
    a = h.pv[pk].sign_vote(VoteType.PREVOTE, 1, 0, None)
    b = h.pv[pk].sign_unguarded_vote(VoteType.PREVOTE, 1, 0, b"\x02" * 32)
    h.cs.on_vote(a)
    h.cs.on_vote(b)
    h.cs.on_vote(b)
    assert len(h.env.evidence) == 1
    ev = h.env.evidence[0]
    ev.verify(CHAIN, h.valset, 1)
    assert h.cs.hs.votes[(0, VoteType.PREVOTE)].power_for(None) == 1
    assert h.cs.hs.votes[(0, VoteType.PREVOTE)].total == 1  # one voter, though two values


def test_equivocators_second_value_completes_a_proof_of_lock(tmp_path):
    """A node that first saw the equivocator's nil still counts its vote for the block.

    Keeping only the first vote would let the equivocator show half of the validators a polka
    the other half can never assemble (the stall the equivocation fault test found).
    """
    h = Harness(tmp_path)
    h.cs.on_timeout(1, 0, Step.PROPOSE)  # our proposal arrives late: we prevoted nil
    assert h.my_last_vote().block_id is None
    v = h.propose(0, b"block-v")
    honest, liar = list(h.others)[:2], list(h.others)[2]
    for pk in honest:
        h.cs.on_vote(h.pv[pk].sign_vote(VoteType.PREVOTE, 1, 0, v))
    h.cs.on_vote(h.pv[liar].sign_vote(VoteType.PREVOTE, 1, 0, None))  # nil to us ...
    assert h.cs.hs.valid_id is None  # 2 of 4 for v so far
    h.cs.on_vote(h.pv[liar].sign_unguarded_vote(VoteType.PREVOTE, 1, 0, v))  # ... v to others
    assert len(h.env.evidence) == 1
    assert (h.cs.hs.valid_id, h.cs.hs.valid_round) == (v, 0)  # the polka is complete
    assert h.env.relayed[-1].block_id == v  # and passed on for the others to count too
