"""The state machine under a simulated network: agreement and termination in adverse schedules."""

from __future__ import annotations

import hashlib

import pytest

from gridledger.chain.consensus.tendermint.evidence import (
    DuplicateProposalEvidence,
    decode_evidence,
)
from gridledger.chain.consensus.tendermint.types import ConsensusError, Proposal, VoteType

from .simnet import CHAIN, SimNet


def _run_to(net: SimNet, height: int, until_s: float = 60.0, nodes=None) -> None:
    nodes = nodes if nodes is not None else [n for n in net.nodes if n.index not in net.crashed]
    net.run(until_s, stop=lambda: net.all_decided(nodes, height))


def test_four_honest_validators_agree_on_every_height(tmp_path):
    net = SimNet(tmp_path, n=4, target_height=8)
    net.start()
    _run_to(net, 8)
    assert net.all_decided(net.nodes, 8)
    net.assert_agreement()
    # In a clean network every height decides in round 0 with its round-0 proposer's block.
    for h in range(1, 9):
        c = net.nodes[0].commits[h]
        assert c.round == 0
        assert sum(net.valset.power_of(v.validator) for v in c.signatures) * 3 > 2 * 4


@pytest.mark.parametrize("seed", [2, 3, 4, 5])
def test_agreement_with_random_delays_and_drops(tmp_path, seed):
    net = SimNet(tmp_path, n=4, seed=seed, delay_s=(0.001, 0.12), drop=0.25, target_height=5)
    net.start()
    _run_to(net, 5, until_s=600)
    assert net.all_decided(net.nodes, 5)
    net.assert_agreement()


def test_one_crashed_validator_of_four_does_not_stop_the_others(tmp_path):
    net = SimNet(tmp_path, n=4, target_height=6)
    net.start(crashed=frozenset({2}))
    live = [n for n in net.nodes if n.index != 2]
    _run_to(net, 6, nodes=live)
    assert net.all_decided(live, 6)
    net.assert_agreement()
    # Heights whose round-0 proposer is the crashed node need a later round.
    assert any(n.commits[h].round > 0 for n in live for h in n.commits)


def test_two_crashed_of_four_blocks_progress(tmp_path):
    net = SimNet(tmp_path, n=4, target_height=3)
    net.start(crashed=frozenset({1, 2}))
    net.run(30.0)
    assert all(not n.decided for n in net.nodes)
    # Without > 2/3 of prevotes (of any kind) no validator may even precommit.
    sent = [m for n in net.nodes for m in n.sent]
    assert sent and all(getattr(m, "type", None) != VoteType.PRECOMMIT for m in sent)


def test_partition_two_two_stalls_then_heals(tmp_path):
    net = SimNet(tmp_path, n=4, target_height=4)
    group = {0: "a", 1: "a", 2: "b", 3: "b"}
    net.link_filter = lambda s, d, m: group[s] == group[d]
    net.start()
    net.run(10.0)
    assert all(not n.decided for n in net.nodes)
    net.link_filter = lambda s, d, m: True
    _run_to(net, 4, until_s=200.0)
    assert net.all_decided(net.nodes, 4)
    net.assert_agreement()


def test_byzantine_proposer_splitting_its_block_cannot_fork(tmp_path):
    net = SimNet(tmp_path, n=4, seed=7, target_height=6)
    net.split_proposers = {0}
    net.start()
    _run_to(net, 6, until_s=300.0)
    honest = [n for n in net.nodes if n.index != 0]
    assert net.all_decided(honest, 6)
    net.assert_agreement()


def test_second_different_proposal_for_a_round_is_evidence_not_a_vote_change(tmp_path):
    net = SimNet(tmp_path, n=4, target_height=1)
    for n in net.nodes:
        n.cs.start_height(1, net.valset.copy())
    proposer = next(n for n in net.nodes if n.pub == n.cs.proposer(0))
    judge = next(n for n in net.nodes if n is not proposer)
    pv = proposer.cs.privval
    first = pv.sign_unguarded_proposal(1, 0, -1, hashlib.sha256(b"A").digest(), b"A")
    second = pv.sign_unguarded_proposal(1, 0, -1, hashlib.sha256(b"B").digest(), b"B")
    judge.cs.on_proposal(first)
    judge.cs.on_proposal(first)  # a re-sent copy: nothing
    assert judge.evidence == []
    judge.cs.on_proposal(second)
    judge.cs.on_proposal(second)  # reported once
    assert len(judge.evidence) == 1
    ev = judge.evidence[0]
    assert isinstance(ev, DuplicateProposalEvidence) and ev.validator == proposer.pub
    ev.verify(CHAIN, net.valset, 1)
    assert decode_evidence(ev.encode()) == ev
    assert ev == DuplicateProposalEvidence.from_proposals(second, first)  # canonical order
    # The first proposal stays the round's proposal; its prevote is unchanged.
    assert judge.cs.proposal_for(0) == first
    # A forged second proposal (wrong key, or a bad signature) is refused, not reported.
    other = next(n for n in net.nodes if n not in (proposer, judge))
    forged = other.cs.privval.sign_unguarded_proposal(1, 0, -1, b"\x07" * 32, b"C")
    with pytest.raises(ConsensusError, match="not from its proposer"):
        judge.cs.on_proposal(forged)
    bad = Proposal(1, 0, -1, b"\x08" * 32, b"D", proposer.pub, second.signature)
    with pytest.raises(ConsensusError, match="signature"):
        judge.cs.on_proposal(bad)
    assert len(judge.evidence) == 1
    # Evidence that does not conflict, or mixes slots, is refused by verify.
    same = DuplicateProposalEvidence.from_proposals(first, first)
    with pytest.raises(ConsensusError, match="do not conflict"):
        same.verify(CHAIN, net.valset, 1)
    later = pv.sign_unguarded_proposal(1, 1, -1, hashlib.sha256(b"E").digest(), b"E")
    with pytest.raises(ConsensusError, match="different slots"):
        DuplicateProposalEvidence.from_proposals(first, later).verify(CHAIN, net.valset, 1)


def test_equivocating_validator_yields_evidence_and_no_fork(tmp_path):
    net = SimNet(tmp_path, n=4, seed=8, target_height=4)
    net.equivocators = {3}
    net.start()
    _run_to(net, 4, until_s=300.0)
    net.assert_agreement()
    culprit = net.nodes[3].pub
    found = [ev for n in net.nodes[:3] for ev in n.evidence]
    assert found, "no honest node detected the equivocation"
    for ev in found:
        assert ev.validator == culprit
        assert ev.vote_a.block_id != ev.vote_b.block_id
        ev.verify("sim-chain", net.valset, ev.height)


def test_blocks_the_application_rejects_are_never_decided(tmp_path):
    net = SimNet(tmp_path, n=4, seed=9, target_height=4)
    bad_proposer = 1
    net.valid = lambda b: not b.endswith(f"n{bad_proposer}c1".encode()) and b"n1" not in b
    net.start()
    _run_to(net, 4, until_s=300.0)
    net.assert_agreement()
    for n in net.nodes:
        for block in n.decided.values():
            assert b"n1" not in block


def test_weighted_validator_with_more_than_two_thirds_decides_with_one_other_crashed(tmp_path):
    # Powers 5,1,1,1: the big validator alone has 5/8 < 2/3; with one small one it has 6/8.
    net = SimNet(tmp_path, n=4, powers=[5, 1, 1, 1], target_height=3)
    net.start(crashed=frozenset({2, 3}))
    live = net.nodes[:2]
    _run_to(net, 3, nodes=live)
    assert net.all_decided(live, 3)
    net.assert_agreement()
