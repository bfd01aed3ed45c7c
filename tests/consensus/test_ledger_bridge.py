"""The engine on the real ledger: blocks, state roots, validator-set changes, light client."""

from __future__ import annotations

import dataclasses

import pytest

from gridledger.chain.abci import Validator
from gridledger.chain.block import Block, Commit, CommitSig, Header, make_header, validator_set_hash
from gridledger.chain.consensus.tendermint.ledger import (
    UPDATE_DELAY_HEIGHTS,
    decode_block,
    encode_block,
)
from gridledger.chain.consensus.tendermint.light import LightClient, LightClientError
from gridledger.chain.consensus.tendermint.validators import ValidatorSet
from gridledger.chain.proofs import tx_proof
from gridledger.chain.tx import make_tx, tx_id

from .ledgernet import CHAIN, LedgerNet, kp


def _hashes(node, top: int) -> list[bytes]:
    return [node.store.get_block(h, writer=True).hash for h in range(1, top + 1)]


def test_four_validators_commit_transactions_into_identical_blocks(tmp_path):
    net = LedgerNet(tmp_path, 4)
    net.start()
    raws = [net.transfer(s) for s in range(5)]
    for r in raws:
        net.nodes[1].submit(r)
    net.run_until(4)
    top = min(n.chain.height for n in net.nodes)
    ref = _hashes(net.nodes[0], top)
    for n in net.nodes[1:]:
        assert _hashes(n, top) == ref
        assert n.app.app_hash == net.nodes[0].app.app_hash
    rec = [net.nodes[3].store.get_tx(tx_id(r), writer=True) for r in raws]
    assert all(x is not None and x.code == 0 for x in rec)
    bob = kp("bob").pub_hex
    assert net.nodes[2].app.query(f"state/bal/utoken/{bob}").value == b"25"
    # Every header names the set that signed it, and the commit verifies against that set.
    for h in range(1, top + 1):
        sb = net.nodes[0].store.get_block(h, writer=True)
        blk = sb.block()
        vals = net.nodes[0].chain.validators_at(h)
        assert blk.header.validators_hash == validator_set_hash(vals)
        assert sb.commit().check(CHAIN, vals, sb.hash, h) is None


def test_validator_set_change_applies_a_fixed_number_of_heights_after_approval(tmp_path):
    net = LedgerNet(tmp_path, 4, extra_validator_members=1)
    newcomer = net.extra[0]
    net.start()
    net.run_until(2)
    # Three of four validators (3/4 > 2/3 of the power) vote the newcomer in with power 1.
    for i in range(3):
        k = net.keys[i]
        raw = make_tx(
            k, CHAIN, 0, "validator.propose", {"power": 1, "pub_key": newcomer.pub_hex}
        ).raw
        net.nodes[0].submit(raw)
    net.run_until(8)
    node = net.nodes[0]
    approved_at = None
    for h in range(1, node.chain.height + 1):
        for raw in node.store.get_block(h, writer=True).block().txs:
            rec = node.store.get_tx(tx_id(raw), writer=True)
            if any(e["type"] == "validator.updated" for e in rec.events):
                approved_at = h
    assert approved_at is not None
    effective = approved_at + UPDATE_DELAY_HEIGHTS
    old = node.chain.validators_at(approved_at + 1)
    new = node.chain.validators_at(effective)
    assert newcomer.pub_key not in {v.pub_key for v in old}
    assert newcomer.pub_key in {v.pub_key for v in new} and len(new) == 5
    hdr = node.store.get_block(effective, writer=True).block().header
    assert hdr.validators_hash == validator_set_hash(new)
    prev = node.store.get_block(effective - 1, writer=True).block().header
    assert prev.validators_hash == validator_set_hash(old)
    # The four running validators hold 4/5 > 2/3: the chain goes on without the newcomer.
    net.run_until(effective + 2)
    for n in net.nodes[1:]:
        assert _hashes(n, effective + 2) == _hashes(node, effective + 2)

    # Each header announces the next height's set: the change shows one height early.
    before = node.store.get_block(effective - 2, writer=True).block().header
    assert prev.next_validators_hash == validator_set_hash(new)
    assert before.next_validators_hash == validator_set_hash(old)
    assert hdr.next_validators_hash == validator_set_hash(new)

    # Light client: trusts the genesis set, skips to a header signed by the new set.
    genesis_vals = [Validator(k.pub_key, 1) for k in net.keys]
    lc = LightClient(CHAIN, genesis_vals)
    sb = node.store.get_block(effective + 1, writer=True)
    lc.verify_header(sb.block().header, sb.commit(), new)
    assert lc.trusted.height == effective + 1
    # ... or follows every height across the change (adjacent verification).
    follower = LightClient(CHAIN, genesis_vals)
    steps = []
    for h in range(1, effective + 2):
        b = node.store.get_block(h, writer=True)
        steps.append((b.block().header, b.commit(), node.chain.validators_at(h)))
    st = follower.follow(steps)
    assert st.height == effective + 1 and st.next_validators_hash == validator_set_hash(new)


def test_light_client_accepts_good_and_rejects_bad_commits_and_proofs(tmp_path):
    net = LedgerNet(tmp_path, 4)
    net.start()
    raw = net.transfer(0, amount=7)
    net.nodes[0].submit(raw)
    net.run_until(4)
    node = net.nodes[1]
    proof = tx_proof(node.store, tx_id(raw), node.app.classify_tx)
    vals = [Validator(k.pub_key, 1) for k in net.keys]
    h = proof["header"]["height"]
    sb = node.store.get_block(h, writer=True)
    header, commit = sb.block().header, sb.commit()

    good = LightClient(CHAIN, vals)
    assert "is in block" in good.verify_tx(proof, vals)

    # Too few signatures: 2 of 4 is not more than 2/3.
    thin = Commit(commit.height, commit.round, commit.block_hash, commit.signatures[:2])
    with pytest.raises(LightClientError, match="needs > 2/3"):
        LightClient(CHAIN, vals).verify_header(header, thin, vals)
    # A forged signature.
    s0 = commit.signatures[0]
    forged = Commit(
        commit.height,
        commit.round,
        commit.block_hash,
        (CommitSig(s0.validator, bytes(64)), *commit.signatures[1:]),
    )
    with pytest.raises(LightClientError, match="bad commit signature"):
        LightClient(CHAIN, vals).verify_header(header, forged, vals)
    # A validator set that the header does not name.
    others = [Validator(kp(f"x{i}").pub_key, 1) for i in range(4)]
    with pytest.raises(LightClientError, match="does not match"):
        LightClient(CHAIN, vals).verify_header(header, commit, others)
    # A self-consistent set that the trusted validators never vouched for.
    fake_keys = [kp(f"fake{i}") for i in range(4)]
    fake_vals = [Validator(k.pub_key, 1) for k in fake_keys]
    fake_header = dataclasses.replace(header, validators_hash=validator_set_hash(fake_vals))
    fake_commit = Commit.sign(CHAIN, header.height, 0, fake_header.hash(), fake_keys)
    with pytest.raises(LightClientError, match="cannot skip"):
        LightClient(CHAIN, vals).verify_header(fake_header, fake_commit, fake_vals)
    # Wrong chain, stale height.
    with pytest.raises(LightClientError, match="chain"):
        LightClient("other", vals).verify_header(header, commit, vals)
    with pytest.raises(LightClientError, match="not above"):
        LightClient(CHAIN, vals, height=h).verify_header(header, commit, vals)
    # A proof whose transaction was swapped for another one.
    other = make_tx(
        kp("alice"),
        CHAIN,
        9,
        "token.transfer",
        {"amount": 1, "denom": "utoken", "to": kp("bob").pub_hex},
    ).raw
    bad = {**proof, "tx": other.hex()}
    with pytest.raises(LightClientError, match="not in the header"):
        LightClient(CHAIN, vals).verify_tx(bad, vals)


def test_restart_after_crash_between_schedule_and_store_commit(tmp_path, monkeypatch):
    net = LedgerNet(tmp_path, 4)
    net.start()
    net.run_until(3)
    node = net.nodes[2]
    h = node.chain.height + 1
    block_bytes, block_id = node.chain.make_block(h, 0, node.key.pub_key)
    # A commit from the other validators' keys (they would sign it in consensus).
    commit = Commit.sign(CHAIN, h, 0, block_id, [net.keys[i] for i in (0, 1, 3)])

    def crash():
        raise RuntimeError("power cut")

    monkeypatch.setattr(node.app, "commit", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        node.chain.apply(h, block_bytes, commit)
    node.close()
    monkeypatch.undo()
    node.open()
    assert node.chain.height == h - 1  # the store never got the block
    expected = ValidatorSet(node.chain.valset(h).validators)
    assert node.chain.valset(h).hash() == expected.hash()
    node.chain.apply(h, block_bytes, commit)  # re-executing the decided block works
    assert node.chain.height == h and node.store.get_block(h, writer=True).hash == block_id


def test_blocks_that_do_not_follow_from_our_chain_are_rejected(tmp_path):
    net = LedgerNet(tmp_path, 4)
    net.start()
    net.run_until(2)
    node = net.nodes[0]
    h = node.chain.height + 1
    good, _ = node.chain.make_block(h, 0, node.key.pub_key)
    assert node.chain.problem(h, good) is None
    blk = decode_block(good)

    def variant(**changes) -> bytes:
        return encode_block(Block(dataclasses.replace(blk.header, **changes), blk.txs))

    cases = {
        "extend our last block": variant(prev_block_hash=b"\x01" * 32),
        "app_hash": variant(app_hash=b"\x02" * 32),
        "validators_hash": variant(validators_hash=b"\x03" * 32),
        "next_validators_hash": variant(next_validators_hash=b"\x04" * 32),
        "not a validator": variant(proposer=kp("alice").pub_key),
        "height": variant(height=h + 1),
        "block time": variant(time_ms=1),
        "shorter than": b"\x00",
    }
    for why, data in cases.items():
        problem = node.chain.problem(h, data)
        assert problem is not None and why in problem, (why, problem)
    extra = encode_block(Block(blk.header, (net.transfer(0),)))
    assert node.chain.block_id_of(extra) is None  # body does not match the header's roots
    assert node.chain.height == h - 1  # nothing was applied


def test_chain_refuses_mismatched_store_and_schedule(tmp_path):
    net = LedgerNet(tmp_path, 4)
    net.start()
    net.run_until(2)
    node = net.nodes[0]
    node.close()
    (node.home / "consensus_state.json").unlink()
    with pytest.raises(Exception, match="missing"):
        node.open()


def test_restart_replays_proposer_priorities_from_the_last_checkpoint(tmp_path):
    net = LedgerNet(tmp_path, 4)
    net.start()
    net.run_until(7)
    a, b = net.nodes[0], net.nodes[1]
    h = min(a.chain.height, b.chain.height)
    # Bring both to the same height, then restart one of them from disk.
    a.close()
    a.open()
    b.close()
    b.open()
    assert a.chain.height == b.chain.height == h
    assert a.chain.valset(h + 1).priorities == b.chain.valset(h + 1).priorities
    fresh = ValidatorSet([Validator(k.pub_key, 1) for k in net.keys])
    fresh.increment_proposer_priority(h)  # one step per height since genesis
    assert a.chain.valset(h + 1).priorities == fresh.priorities
    assert a.chain.valset(h + 1).proposer == fresh.proposer


def test_light_client_follows_a_complete_validator_set_change(tmp_path):
    """Adjacent headers: the trusted header's next_validators_hash vouches for the new set, even
    when no member of the old set signs after the change (skipping cannot cross it)."""
    old_keys = [kp(f"old{i}") for i in range(4)]
    new_keys = [kp(f"new{i}") for i in range(4)]
    fake_keys = [kp(f"fake{i}") for i in range(4)]
    old, new, fake = (
        [Validator(k.pub_key, 1) for k in keys] for keys in (old_keys, new_keys, fake_keys)
    )

    def header(h: int, signers: list, nxt: list) -> Header:
        return make_header(
            CHAIN, h, 1000 + h, bytes(32), signers[0].pub_key, [], lambda raw: "other",
            bytes(32), bytes(32), [Validator(k.pub_key, 1) for k in signers], nxt,
        )  # fmt: skip

    h1 = header(1, old_keys, new)  # announces the new set
    h2 = header(2, new_keys, new)
    c1 = Commit.sign(CHAIN, 1, 0, h1.hash(), old_keys)
    c2 = Commit.sign(CHAIN, 2, 0, h2.hash(), new_keys)

    lc = LightClient(CHAIN, old)
    lc.follow([(h1, c1, old), (h2, c2, new)])
    assert lc.trusted.height == 2 and lc.trusted.validators == tuple(new)

    # Skipping straight from genesis to height 2: no old validator signed it, refused.
    with pytest.raises(LightClientError, match="cannot skip"):
        LightClient(CHAIN, old).verify_header(h2, c2, new)
    # A self-consistent set other than the announced one, at the adjacent height: refused.
    h2_fake = header(2, fake_keys, fake)
    c2_fake = Commit.sign(CHAIN, 2, 0, h2_fake.hash(), fake_keys)
    lc2 = LightClient(CHAIN, old)
    lc2.verify_header(h1, c1, old)
    with pytest.raises(LightClientError, match="announced"):
        lc2.verify_header(h2_fake, c2_fake, fake)
    # The announced set must still sign it: 2 of 4 new validators are not enough.
    thin = Commit(2, 0, h2.hash(), c2.signatures[:2])
    with pytest.raises(LightClientError, match="needs > 2/3"):
        lc2.verify_header(h2, thin, new)
    # follow() takes consecutive heights only.
    with pytest.raises(LightClientError, match="does not follow"):
        LightClient(CHAIN, old).follow([(h2, c2, new)])


def test_a_late_conflicting_copy_is_dropped_from_the_peer_pool(tmp_path):
    """A gossiped transaction whose sequence number a committed one has used can never be in a
    block (it would make the block invalid): the proposer leaves it out and drops it from its
    pool, so the pool does not keep an idle chain busy."""
    net = LedgerNet(tmp_path, 4)
    net.start()
    first = net.transfer(0, 5)
    net.nodes[1].submit(first)
    net.run_until(3)
    node = net.nodes[0]
    assert node.store.get_tx(tx_id(first), writer=True).code == 0
    late = net.transfer(0, 6)  # the same sequence number, other bytes, arriving after the commit
    assert node.chain.add_peer_tx(late) and node.chain.has_pending_txs()
    h = node.chain.height + 1
    block, _ = node.chain.make_block(h, 0, node.key.pub_key)
    assert decode_block(block).txs == ()
    assert tx_id(late) not in node.chain.peer_txs and not node.chain.has_pending_txs()
    assert node.app.replays_among([late, first]) == {tx_id(late), tx_id(first)}
