"""`evidence.submit`: equivocation evidence recorded on chain once; every bad submission refused."""

from __future__ import annotations

from gridledger.chain import codes
from gridledger.chain.consensus.tendermint.evidence import DuplicateVoteEvidence
from gridledger.chain.consensus.tendermint.privval import PrivValidator
from gridledger.chain.consensus.tendermint.types import Vote, VoteType
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


def test_governance_after_evidence_suspends_and_removes_the_validator(tmp_path):
    net = LedgerNet(tmp_path / "net", 4)
    net.start()
    net.run_until(2)
    culprit = net.keys[3]
    ev = _evidence(tmp_path, culprit)
    net.nodes[0].submit(_submit_tx(net.keys[0], 0, ev.encode().hex()))
    net.run_until(4)
    assert net.nodes[1].app.query(f"state/misbehavior/{culprit.pub_hex}").value == b"1"
    # The DSO suspends the member; the other three validators (3/4 > 2/3) vote its power to 0.
    net.nodes[0].submit(
        make_tx(kp("dso"), CHAIN, 0, "member.suspend", {"member": culprit.pub_hex}).raw
    )
    seqs = {0: 1, 1: 0, 2: 0}
    for i, seq in seqs.items():
        net.nodes[0].submit(
            make_tx(
                net.keys[i],
                CHAIN,
                seq,
                "validator.propose",
                {"power": 0, "pub_key": culprit.pub_hex},
            ).raw
        )
    net.run_until(10)
    node = net.nodes[2]
    # A suspended member can send nothing.
    res = node.app.check_tx(
        make_tx(culprit, CHAIN, 0, "evidence.submit", {"evidence": ev.encode().hex()}).raw
    )
    assert res.code == codes.MEMBER_INACTIVE
    # It left the validator set two heights after the approving block, and the header says so.
    top = node.chain.height
    final = node.chain.validators_at(top)
    assert culprit.pub_key not in {v.pub_key for v in final} and len(final) == 3
    changed = [
        h
        for h in range(2, top + 1)
        if node.chain.validators_at(h) != node.chain.validators_at(h - 1)
    ]
    assert len(changed) == 1
    approved = changed[0] - 2
    events = [
        e["type"]
        for raw in node.store.get_block(approved, writer=True).block().txs
        for e in node.store.get_tx(tx_id(raw), writer=True).events
    ]
    assert "validator.updated" in events
    # The three remaining validators keep agreeing.
    net.run_until(top + 2, nodes=net.nodes[:3])
    ref = [net.nodes[0].store.get_block(h, writer=True).hash for h in range(1, top + 3)]
    for n in net.nodes[1:3]:
        assert [n.store.get_block(h, writer=True).hash for h in range(1, top + 3)] == ref
