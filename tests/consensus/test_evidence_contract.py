"""`evidence.submit`: equivocation evidence recorded on chain once; every bad submission refused."""

from __future__ import annotations

import json

from gridledger.chain import codes
from gridledger.chain.consensus.tendermint.evidence import (
    DuplicateProposalEvidence,
    DuplicateVoteEvidence,
)
from gridledger.chain.consensus.tendermint.privval import PrivValidator
from gridledger.chain.consensus.tendermint.types import Proposal, Vote, VoteType
from gridledger.chain.consensus.tendermint.validators import ValidatorSet
from gridledger.chain.contracts import evidence as evidence_contract
from gridledger.chain.tx import make_tx, tx_id

from .ledgernet import CHAIN, LedgerNet, kp


def _evidence(tmp_path, key, height=1, chain=CHAIN) -> DuplicateVoteEvidence:
    pv = PrivValidator(key.signing_key, tmp_path / f"pv-{key.pub_hex[:8]}-{height}.json", chain)
    a = pv.sign_vote(VoteType.PREVOTE, height, 0, b"\x01" * 32)
    b = pv.sign_unguarded_vote(VoteType.PREVOTE, height, 0, b"\x02" * 32)
    return DuplicateVoteEvidence.from_votes(a, b)


def _submit_tx(sender, seq: int, ev_hex: str) -> bytes:
    return make_tx(sender, CHAIN, seq, "evidence.submit", {"evidence": ev_hex}).raw


def test_evidence_is_recorded_once_and_counted(tmp_path):
    net = LedgerNet(tmp_path / "net", 4)
    net.start()
    net.run_until(2)
    culprit, reporter = net.keys[3], net.keys[0]
    ev = _evidence(tmp_path, culprit)
    good = _submit_tx(reporter, 0, ev.encode().hex())
    net.nodes[0].submit(good)
    again = _submit_tx(net.keys[1], 0, ev.encode().hex())  # a second reporter, same evidence
    assert net.nodes[0].app.check_tx(again).code == codes.ALREADY_EXISTS  # pending counts
    net.nodes[1].submit(again)  # another node has not seen the first yet: it gets in a block
    net.run_until(5)
    for node in net.nodes:
        # Whichever the block ordered first is recorded; the other fails, changing nothing.
        recs = sorted(
            (node.store.get_tx(tx_id(t), writer=True) for t in (good, again)), key=lambda r: r.code
        )
        assert [r.code for r in recs] == [codes.OK, codes.ALREADY_EXISTS]
        assert "already recorded" in recs[1].log
        assert node.app.query(f"state/misbehavior/{culprit.pub_hex}").value == b"1"
        stored = node.app.query(f"state/evidence/{ev.hash().hex()}")
        assert stored.code == codes.OK and culprit.pub_hex.encode() in stored.value


def test_bad_evidence_is_refused_and_changes_nothing(tmp_path):
    net = LedgerNet(tmp_path / "net", 4)
    net.start()
    net.run_until(2)
    app = net.nodes[0].app
    reporter = net.keys[0]
    ev = _evidence(tmp_path, net.keys[3])
    a, b = ev.vote_a, ev.vote_b

    def check(payload_hex: str, sender=reporter, seq: int = 0):
        return app.check_tx(_submit_tx(sender, seq, payload_hex))

    forged = Vote(b.type, b.height, b.round, b"\x03" * 32, b.validator, b.signature)
    cases = [
        (DuplicateVoteEvidence.from_votes(a, forged).encode().hex(), codes.BAD_SIGNATURE),
        (DuplicateVoteEvidence(a, a).encode().hex(), codes.INVALID_PAYLOAD),  # no conflict
        ("zz", codes.INVALID_PAYLOAD),  # not hex
        ((b"junk" + ev.encode()).hex(), codes.INVALID_PAYLOAD),  # bad tag
        (_evidence(tmp_path, kp("alice")).encode().hex(), codes.NOT_FOUND),  # not a validator
        (_evidence(tmp_path, net.keys[2], height=999).encode().hex(), codes.INVALID_PAYLOAD),
        (_evidence(tmp_path, net.keys[2], chain="other").encode().hex(), codes.BAD_SIGNATURE),
    ]
    for payload, code in cases:
        res = check(payload)
        assert res.code == code, (res.code, res.log)
    # Only validators may report.
    res = app.check_tx(_submit_tx(kp("alice"), 0, ev.encode().hex()))
    assert res.code == codes.ROLE_NOT_ALLOWED
    assert app.query(f"state/misbehavior/{net.keys[3].pub_hex}").code != codes.OK


def test_evidence_jails_the_validator_from_two_heights_later(tmp_path):
    net = LedgerNet(tmp_path / "net", 4)
    net.start()
    net.run_until(2)
    culprit = net.keys[3]
    ev = _evidence(tmp_path, culprit)
    net.nodes[0].submit(_submit_tx(net.keys[0], 0, ev.encode().hex()))
    net.run_until(6)
    node = net.nodes[1]
    assert node.app.query(f"state/misbehavior/{culprit.pub_hex}").value == b"1"
    jail = json.loads(node.app.query(f"state/jail/{culprit.pub_hex}").value)
    at = jail["at_height"]
    assert jail == {
        "at_height": at,
        "evidence": ev.hash().hex(),
        "from_height": at + 2,
        "power": 1,
        "reason": "duplicate prevote at height 1",
    }
    # The block that recorded the evidence carries the jail event.
    events = [
        (e["type"], e["attributes"])
        for raw in node.store.get_block(at, writer=True).block().txs
        for e in node.store.get_tx(tx_id(raw), writer=True).events
    ]
    assert (
        "validator.jailed",
        {"evidence": ev.hash().hex(), "pub_key": culprit.pub_hex, "reason": jail["reason"]},
    ) in events
    # Power 0 from at + 2 on: the set of every later height, and the header that names it.
    keys_at = {h: {v.pub_key for v in node.chain.validators_at(h)} for h in range(1, 7)}
    assert all(culprit.pub_key in keys_at[h] for h in range(1, at + 2))
    assert all(keys_at[h] == {k.pub_key for k in net.keys[:3]} for h in range(at + 2, 7))
    vs = ValidatorSet(node.chain.validators_at(at + 2))
    assert node.store.get_block(at + 2, writer=True).block().header.validators_hash == vs.hash()
    # A second, different equivocation is still recorded, the jail stays as it was.
    ev2 = _evidence(tmp_path, culprit, height=2)
    net.nodes[0].submit(_submit_tx(net.keys[1], 0, ev2.encode().hex()))
    # Voting to remove a key that holds no power is refused (it is already out).
    res = node.app.check_tx(
        make_tx(
            net.keys[2], CHAIN, 0, "validator.propose", {"power": 0, "pub_key": culprit.pub_hex}
        ).raw
    )
    assert res.code == codes.NOT_FOUND and "not a validator" in res.log
    # The DSO may still suspend the member; a suspended member can send nothing.
    net.nodes[0].submit(
        make_tx(kp("dso"), CHAIN, 0, "member.suspend", {"member": culprit.pub_hex}).raw
    )
    net.run_until(9, nodes=net.nodes[:3])
    assert node.app.query(f"state/misbehavior/{culprit.pub_hex}").value == b"2"
    assert json.loads(node.app.query(f"state/jail/{culprit.pub_hex}").value) == jail
    res = node.app.check_tx(
        make_tx(culprit, CHAIN, 0, "evidence.submit", {"evidence": ev.encode().hex()}).raw
    )
    assert res.code == codes.MEMBER_INACTIVE
    # The three remaining validators keep agreeing.
    top = min(n.chain.height for n in net.nodes[:3])
    ref = [net.nodes[0].store.get_block(h, writer=True).hash for h in range(1, top + 1)]
    for n in net.nodes[1:3]:
        assert [n.store.get_block(h, writer=True).hash for h in range(1, top + 1)] == ref


def test_evidence_against_a_powerless_or_old_validator_is_refused(tmp_path, monkeypatch):
    net = LedgerNet(tmp_path / "net", 4, extra_validator_members=1)
    net.start()
    net.run_until(6)
    app = net.nodes[0].app
    # A validator member that never held power: nothing to punish, refused.
    spare = _evidence(tmp_path, net.extra[0], height=2)
    res = app.check_tx(_submit_tx(net.keys[0], 0, spare.encode().hex()))
    assert res.code == codes.NOT_FOUND and "no validator power" in res.log
    # Too old: beyond the evidence window (shrunk here to 3 heights to reach it quickly).
    monkeypatch.setattr(evidence_contract, "MAX_EVIDENCE_AGE_HEIGHTS", 3)
    old = _evidence(tmp_path, net.keys[3], height=1)
    res = app.check_tx(_submit_tx(net.keys[0], 0, old.encode().hex()))
    assert res.code == codes.INVALID_PAYLOAD and "too old" in res.log
    assert app.query(f"state/jail/{net.keys[3].pub_hex}").code != codes.OK
    assert app.query(f"state/misbehavior/{net.extra[0].pub_hex}").code != codes.OK


def test_duplicate_proposal_evidence_jails_the_proposer(tmp_path):
    net = LedgerNet(tmp_path / "net", 4)
    net.start()
    net.run_until(2)
    culprit = net.keys[2]
    pv = PrivValidator(culprit.signing_key, tmp_path / "pv-prop.json", CHAIN)
    a = pv.sign_unguarded_proposal(2, 0, -1, b"\x0a" * 32, b"")
    b = pv.sign_unguarded_proposal(2, 0, -1, b"\x0b" * 32, b"")
    ev = DuplicateProposalEvidence.from_proposals(a, b)
    app = net.nodes[0].app
    # Refused: a forged signature, and two proposals that do not conflict.
    forged = Proposal(2, 0, -1, b"\x0c" * 32, b"", culprit.pub_key, b.signature)
    bad = DuplicateProposalEvidence.from_proposals(a, forged).encode().hex()
    assert app.check_tx(_submit_tx(net.keys[0], 0, bad)).code == codes.BAD_SIGNATURE
    same = DuplicateProposalEvidence.from_proposals(a, a).encode().hex()
    assert app.check_tx(_submit_tx(net.keys[0], 0, same)).code == codes.INVALID_PAYLOAD
    net.nodes[0].submit(_submit_tx(net.keys[0], 0, ev.encode().hex()))
    net.run_until(6)
    for node in net.nodes:
        jail = json.loads(node.app.query(f"state/jail/{culprit.pub_hex}").value)
        assert jail["reason"] == "duplicate proposal at height 2"
        assert jail["evidence"] == ev.hash().hex()
        top = node.chain.height
        assert culprit.pub_key not in {v.pub_key for v in node.chain.validators_at(top)}
        rec = json.loads(node.app.query(f"state/evidence/{ev.hash().hex()}").value)
        assert (rec["height"], rec["round"], rec["step"]) == (2, 0, 1)
