"""State sync in process: the snapshot format, replay protection after a restore, and the
attacks a peer can make on a syncing node, over real authenticated P2P links.

The chain here is a solo-validator ledger (real app, store, blocks and commits); the peers are
real :class:`Transport` links serving real snapshots, one of them lying.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chain"))

from ledger_helpers import CHAIN_ID, make_chain
from test_engine_mempool import commit_block

from gridledger.chain import codes
from gridledger.chain.abci import ProposalInfo
from gridledger.chain.app import LedgerApp, gate_failed_key
from gridledger.chain.consensus.tendermint import statesync as ss
from gridledger.chain.consensus.tendermint.reactor import frame_limits
from gridledger.chain.p2p.secret import RECORD_HEAD
from gridledger.chain.p2p.transport import PeerAddress, Transport
from gridledger.chain.snapshot import (
    MAX_CHUNK_BYTES,
    Manifest,
    SnapshotError,
    SnapshotStore,
    chunk_hash,
    encode_chunks,
    rebuild,
)
from gridledger.chain.store import Store
from gridledger.chain.wire import encode_length_prefixed
from gridledger.node.bft_testnet import free_ports

LIMITS = frame_limits(4 << 20, 5000)


def _transfer(chain, amount: int) -> bytes:
    return chain.tx(
        "alice", "token.transfer", {"amount": amount, "denom": "utoken", "to": chain.pub("bob")}
    )


@pytest.fixture
def chain(tmp_path):
    (tmp_path / "chain").mkdir()
    c = make_chain(tmp_path / "chain")
    for amount in (1, 2, 3):
        assert c.submit(_transfer(c, amount)).ok
        c.block()
    yield c
    c.store.close()


def _snapshot(chain, directory: Path, chunk_bytes: int = 256) -> tuple[SnapshotStore, Manifest]:
    snaps = SnapshotStore(directory)
    m = snaps.take(
        chain.app.height, CHAIN_ID, chain.app.app_hash, chain.app.snapshot_items(), {}, chunk_bytes
    )
    return snaps, m


def _restored_app(chain, m: Manifest, chunks: list[bytes], path: Path) -> LedgerApp:
    """A fresh store restored from the snapshot alone (no blocks, no transaction index)."""
    store = Store(path, synchronous="OFF")
    LedgerApp(store).init_chain(bytes.fromhex(chain.store.meta("genesis")))
    sets = {str(h): chain.app._sets_after[h] for h in chain.app._sets_after}
    store.restore_snapshot(
        {
            "app_hash": m.app_hash.hex(),
            "height": m.height,
            "last_block_hash": chain.store.get_block(m.height).hash.hex(),
            "last_results_hash": chain.app.last_results_hash.hex(),
            "last_time_ms": chain.app.last_time_ms,
            "valsets_recent": sets,
        },
        rebuild(m, chunks),
    )
    return LedgerApp(store)


# --- format ---------------------------------------------------------------------------------
def test_snapshot_is_canonical_and_rebuilds_the_state_root(chain, tmp_path):
    snaps, m = _snapshot(chain, tmp_path / "a")
    _, m2 = _snapshot(chain, tmp_path / "b")
    assert m.encode() == m2.encode() and len(m.chunk_hashes) >= 3
    chunks = snaps.chunks(m.height)
    assert rebuild(m, chunks) == dict(chain.app.snapshot_items())
    assert Manifest.decode(m.encode()) == m
    # a chunk that is not the manifest's, keys out of order, a state that is not the root
    with pytest.raises(SnapshotError, match="does not match its hash"):
        rebuild(m, [chunks[1], *chunks[1:]])
    items = chain.app.snapshot_items()
    with pytest.raises(SnapshotError, match="strictly increasing"):
        encode_chunks([items[1], items[0]], 1 << 20)
    # a peer's own chunk with its keys out of order: its hash matches its forged manifest,
    # the order check still refuses it
    swapped = encode_length_prefixed([items[1][0], items[1][1], items[0][0], items[0][1]])
    forged = Manifest(m.height, m.format, m.chain_id, m.app_hash, (chunk_hash(swapped),), {})
    with pytest.raises(SnapshotError, match="strictly increasing"):
        rebuild(forged, [swapped])
    with pytest.raises(SnapshotError, match="unknown snapshot format"):
        Manifest.decode(Manifest(1, 9, "c", bytes(32), (bytes(32),), {}).encode())


def test_snapshots_are_pruned_to_the_newest_k(chain, tmp_path):
    snaps = SnapshotStore(tmp_path / "s", keep=2)
    for h in (4, 8, 12):
        snaps.take(h, CHAIN_ID, chain.app.app_hash, chain.app.snapshot_items(), {}, 256)
    assert [m.height for m in snaps.manifests()] == [12, 8]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["12", "8"]
    assert [m.height for m in SnapshotStore(tmp_path / "s", keep=2).manifests()] == [12, 8]


# --- replay protection after a restore ------------------------------------------------------
def test_a_restored_node_refuses_replays_without_the_transaction_index(chain, tmp_path):
    """What the txid index guarded is judged on state: an executed tx's sequence number is used,
    and a tx that failed the gate (it could pass later) is recorded under gate_failed_key."""
    executed = _transfer(chain, 4)
    assert commit_block(chain, [executed]).tx_results[0].code == codes.OK
    assert chain.submit(chain.tx("vendor", "member.suspend", {"member": chain.pub("alice")})).ok
    chain.block()
    gated = _transfer(chain, 5)  # alice is suspended: fails the gate, sequence unused
    assert commit_block(chain, [gated]).tx_results[0].code == codes.MEMBER_INACTIVE
    assert chain.submit(chain.tx("vendor", "member.reinstate", {"member": chain.pub("alice")})).ok
    chain.block()
    from gridledger.chain.tx import tx_id

    assert gate_failed_key(tx_id(gated).hex()).encode() in dict(chain.app.snapshot_items())
    snaps, m = _snapshot(chain, tmp_path / "s")
    restored = _restored_app(chain, m, snaps.chunks(m.height), tmp_path / "restored.db")
    assert restored.app_hash == chain.app.app_hash
    assert restored.store.get_tx(tx_id(executed)) is None  # no index of the older blocks
    info = ProposalInfo(
        chain.app.height + 1, chain.app.last_time_ms + 1000, chain.keys["validator"].pub_key, b""
    )
    for app in (chain.app, restored):
        for raw in (executed, gated):
            assert app.proposal_problem([raw], info).startswith(
                "block repeats an already committed transaction"
            )
            assert app.prepare_proposal([raw], 1 << 20, info) == []
    # and both judge a block alike, so they compute the same results and app hash
    # (the gated tx's sequence number is the next one again: without its record it would run)
    seq = chain.account("alice")["seq"]
    assert gated == chain.tx(
        "alice",
        "token.transfer",
        {"amount": 5, "denom": "utoken", "to": chain.pub("bob")},
        seq=seq,
    )
    fresh = chain.tx(
        "alice", "token.transfer", {"amount": 6, "denom": "utoken", "to": chain.pub("bob")}, seq=seq
    )
    block = [fresh, executed, gated]
    r1 = chain.app.finalize_block(block, info)
    r2 = restored.finalize_block(block, info)
    assert [(r.code, r.log) for r in r1.tx_results] == [(r.code, r.log) for r in r2.tx_results]
    assert [r.code for r in r1.tx_results] == [codes.OK, codes.DUPLICATE, codes.DUPLICATE]
    assert r1.app_hash == r2.app_hash
    restored.store.close()


# --- serving: request flood -----------------------------------------------------------------
def test_a_request_flood_is_answered_only_up_to_the_per_peer_rate(chain, tmp_path):
    snaps, m = _snapshot(chain, tmp_path / "s")
    sent: list[tuple[bytes, int]] = []
    now = [100.0]
    server = ss.SnapshotServer(
        snaps, lambda h: None, lambda p, k, payload: sent.append((p, k)), clock=lambda: now[0]
    )
    lim = server.limits
    req = ss.encode_chunk_request(m.height, m.format, 0)
    for _ in range(1000):
        server.on_request(b"A" * 32, ss.K_CHUNK_REQ, req)
        server.on_request(b"A" * 32, ss.K_SNAPSHOTS_REQ, b"")
    assert server.served == lim.chunks_burst + lim.snapshots_burst
    assert server.refused == 2000 - server.served
    server.on_request(b"B" * 32, ss.K_CHUNK_REQ, req)  # another peer has its own budget
    assert sent[-1] == (b"B" * 32, ss.K_CHUNK)
    now[0] += 1.0  # one second later: the rate's worth again, not the whole flood
    before = server.served
    for _ in range(1000):
        server.on_request(b"A" * 32, ss.K_CHUNK_REQ, req)
    assert server.served - before == int(lim.chunks_per_s)
    with pytest.raises(ss.StateSyncError):
        server.on_request(b"A" * 32, ss.K_CHUNK_REQ, req + b"x")
    with pytest.raises(ss.StateSyncError):
        server.on_request(b"A" * 32, ss.K_SNAPSHOTS_REQ, b"junk")


# --- syncing over real links ----------------------------------------------------------------
class _CorruptChunks:
    """A peer's snapshot store that flips a bit in every chunk it serves."""

    def __init__(self, inner: SnapshotStore):
        self.inner = inner

    def manifests(self):
        return self.inner.manifests()

    def get(self, height):
        return self.inner.get(height)

    def chunk(self, height, index):
        c = self.inner.chunk(height, index)
        return None if c is None else c[:-1] + bytes([c[-1] ^ 1])


def _light(chain):
    def light(h: int):
        sb = chain.store.get_block(h)
        if sb is None:
            return None
        vals = tuple(chain.app.validators())  # the solo chain's one validator never changes
        return ss.LightBlock(sb.block().header, sb.commit(), vals)

    return light


def _key(name: str):
    import hashlib

    from nacl.signing import SigningKey

    return SigningKey(hashlib.sha256(name.encode()).digest())


async def _sync(chain, stores: list, timeout_s: float = 20.0):
    """A syncing node linked to one peer per store; returns (result or error, syncer, keys)."""
    keys = [_key(f"peer-{i}") for i in range(len(stores))]
    me = _key("syncing-node")
    pubs = [bytes(k.verify_key) for k in keys]
    ports = free_ports(len(stores) + 1)
    me_addr = PeerAddress(bytes(me.verify_key), "127.0.0.1", ports[-1])
    peers = []
    for k, store, port in zip(keys, stores, ports, strict=False):
        t = Transport(
            CHAIN_ID, k, "127.0.0.1", port, [me_addr], {me_addr.pub_key}, None, frame_limits=LIMITS
        )
        server = ss.SnapshotServer(store, _light(chain), t.send)
        t.handler = lambda p, kind, payload, s=server: s.on_request(p, kind, payload)
        await t.start()
        peers.append(t)
    addrs = [PeerAddress(p, "127.0.0.1", port) for p, port in zip(pubs, ports, strict=False)]
    node = Transport(
        CHAIN_ID, me, "127.0.0.1", ports[-1], addrs, set(pubs), None, frame_limits=LIMITS
    )
    trust = chain.store.get_block(1)
    cfg = ss.StateSyncConfig(
        1, trust.hash, discovery_s=0.3, request_timeout_s=1.0, timeout_s=timeout_s
    )
    syncer = ss.StateSyncer(CHAIN_ID, node, cfg)
    node.handler = syncer.on_frame
    await node.start()
    try:
        async with asyncio.timeout(10):
            while len(node.connected()) < len(stores):
                await asyncio.sleep(0.05)
        try:
            result = await syncer.run()
        except ss.StateSyncError as exc:
            result = exc
    finally:
        for t in (node, *peers):
            await t.close()
    return result, syncer, pubs


def test_a_bad_chunk_is_fetched_again_from_another_peer_and_its_peer_dropped(chain, tmp_path):
    snaps, m = _snapshot(chain, tmp_path / "s")
    expected = dict(chain.app.snapshot_items())
    chain.block()  # the header after the snapshot, which carries its app hash
    result, syncer, (liar, honest) = asyncio.run(_sync(chain, [_CorruptChunks(snaps), snaps]))
    assert isinstance(result, ss.Restored), result
    assert result.manifest == m and result.state == expected
    assert result.next_header.app_hash == m.app_hash
    assert liar in syncer.banned and honest not in syncer.banned
    assert "does not match its hash" in syncer.stats.banned[liar.hex()]
    assert syncer.stats.chunks_refetched >= 1
    assert syncer.stats.chunks_fetched == len(m.chunk_hashes)


class _Pruned(_CorruptChunks):
    """A peer that offered the snapshot and pruned it since: it answers "not kept"."""

    def chunk(self, height, index):
        return None


def test_a_snapshot_pruned_by_one_peer_is_fetched_from_another_without_waiting(chain, tmp_path):
    snaps, m = _snapshot(chain, tmp_path / "s")
    chain.block()
    result, syncer, _ = asyncio.run(_sync(chain, [_Pruned(snaps), snaps]))
    assert isinstance(result, ss.Restored), result
    assert result.state == rebuild(m, snaps.chunks(m.height))
    assert syncer.banned == set()  # pruning is no offence
    # alone, the pruned peer makes the sync fail, naming why (it does not wait out timeouts)
    result, syncer, _ = asyncio.run(_sync(chain, [_Pruned(snaps)], timeout_s=2.0))
    assert isinstance(result, ss.StateSyncError)
    assert "no peer keeps snapshot" in str(result)


def test_a_manifest_whose_app_hash_is_not_the_verified_headers_is_refused(chain, tmp_path):
    honest, m = _snapshot(chain, tmp_path / "honest")
    old_state, old_hash = chain.app.snapshot_items(), chain.app.app_hash
    assert chain.submit(_transfer(chain, 9)).ok
    chain.block()  # h + 1: the honest snapshot's header; the lie claims this height
    chain.block()  # h + 2
    lies = SnapshotStore(tmp_path / "lies")
    lies.take(m.height + 1, CHAIN_ID, old_hash, old_state, {}, 256)  # real chunks, wrong state
    result, syncer, (liar, good) = asyncio.run(_sync(chain, [lies, honest]))
    assert isinstance(result, ss.Restored), result
    assert result.manifest.height == m.height and result.state == dict(old_state)
    assert syncer.stats.refused_manifests == 1
    assert liar in syncer.banned and good not in syncer.banned
    # alone, the liar gets nowhere: the sync fails rather than take its state
    result, syncer, _ = asyncio.run(_sync(chain, [lies], timeout_s=2.0))
    assert isinstance(result, ss.StateSyncError)
    assert syncer.stats.refused_manifests == 1


def test_an_oversized_chunk_frame_is_refused_at_its_head(chain, tmp_path):
    async def run():
        ka, kb = _key("receiver"), _key("sender")
        got: list[int] = []
        a = Transport(
            CHAIN_ID,
            ka,
            "127.0.0.1",
            0,
            [],
            {bytes(kb.verify_key)},
            lambda p, kind, payload: got.append(kind),
            frame_limits=LIMITS,
        )
        await a.start()
        b = Transport(
            CHAIN_ID,
            kb,
            "127.0.0.1",
            0,
            [PeerAddress(bytes(ka.verify_key), "127.0.0.1", a.listen_port)],
            {bytes(ka.verify_key)},
            lambda *a: None,
            frame_limits=LIMITS,
        )
        await b.start()
        async with asyncio.timeout(10):
            while bytes(ka.verify_key) not in b.connected():
                await asyncio.sleep(0.05)
        limit = LIMITS[ss.K_CHUNK]
        assert limit == 16 + MAX_CHUNK_BYTES
        assert not b.send(bytes(ka.verify_key), ss.K_CHUNK, bytes(limit + 1))  # ours refuses
        link = b.peers[bytes(ka.verify_key)]
        link.writer.write(RECORD_HEAD.pack(64 << 20, ss.K_CHUNK))  # claims 64 MiB, sends none
        async with asyncio.timeout(5):
            while a.dropped_links < 1:
                await asyncio.sleep(0.02)
        assert got == []
        for t in (a, b):
            await t.close()

    asyncio.run(run())


def test_state_sync_decoders_raise_typed_errors_only():
    for bad in (b"", b"\x00" * 7, b"\x00" * 8 + b"\x00\x00\x00\x05ab"):
        with pytest.raises(ss.StateSyncError):
            ss.LightBlock.decode(bad)
    with pytest.raises(ss.StateSyncError):
        ss.decode_offer(encode_length_prefixed([b"{}"]))
    with pytest.raises(ss.StateSyncError):
        ss.decode_offer(b"\x00\x00\x00\x09x")
    with pytest.raises(ss.StateSyncError):
        ss.decode_chunk(b"short")
    with pytest.raises(ss.StateSyncError):
        ss.StateSyncConfig(0, bytes(32))


# --- light verification across a complete validator-set change ------------------------------
class _LightPeers:
    """Peers that answer light-block requests at once from fixed tables (no sockets)."""

    def __init__(self, tables: dict[bytes, dict[int, ss.LightBlock]]):
        self.tables = tables
        self.syncer: ss.StateSyncer | None = None

    def connected(self) -> list[bytes]:
        return list(self.tables)

    def send(self, peer: bytes, kind: int, payload: bytes) -> bool:
        lb = self.tables[peer].get(ss.decode_height(payload))
        if kind == ss.K_LIGHT_REQ and lb is not None:
            loop = asyncio.get_running_loop()
            loop.call_soon(self.syncer.on_frame, peer, ss.K_LIGHT, lb.encode())
        return True


def _headers(old: list, new: list, forged_at: int | None = None) -> dict[int, ss.LightBlock]:
    """Heights 1..6: ``old`` signs 1-2, header 2 announces ``new``, which signs 3-6. With
    ``forged_at``, that height and those after it are signed by strangers under headers naming
    their own set."""
    from gridledger.chain.abci import Validator
    from gridledger.chain.block import Commit, make_header
    from gridledger.chain.keys import KeyPair

    def vals(keys):
        return [Validator(k.pub_key, 1) for k in keys]

    strangers = [KeyPair.from_seed(bytes([200 + i]) * 32) for i in range(3)]
    out, prev = {}, bytes(32)
    for h in range(1, 7):
        signers = old if h <= 2 else new
        nxt = old if h < 2 else new
        if forged_at is not None and h >= forged_at:  # a fork: the real sets sign none of it
            signers = nxt = strangers
        header = make_header(
            CHAIN_ID,
            h,
            1000 * h,
            prev,
            signers[0].pub_key,
            [],
            lambda raw: "other",
            bytes(32),
            bytes(32),
            vals(signers),
            vals(nxt),
        )
        commit = Commit.sign(CHAIN_ID, h, 0, header.hash(), signers)
        out[h] = ss.LightBlock(header, commit, tuple(vals(signers)))
        prev = header.hash()
    return out


def test_headers_after_a_complete_set_change_are_verified_step_by_step():
    from gridledger.chain.keys import KeyPair

    old = [KeyPair.from_seed(bytes([10 + i]) * 32) for i in range(3)]
    new = [KeyPair.from_seed(bytes([20 + i]) * 32) for i in range(3)]
    good, forged = _headers(old, new), _headers(old, new, forged_at=4)
    liar, honest = b"L" * 32, b"H" * 32

    async def run(tables):
        peers = _LightPeers(tables)
        cfg = ss.StateSyncConfig(1, good[1].header.hash(), request_timeout_s=0.5)
        syncer = ss.StateSyncer(CHAIN_ID, peers, cfg)
        peers.syncer = syncer
        try:
            return await syncer.verify_headers(5), syncer
        except ss.StateSyncError as exc:
            return exc, syncer

    # no old validator signs header 6, so a skip is refused; adjacent steps follow the change
    (header, nxt, vals), syncer = asyncio.run(run({liar: forged, honest: good}))
    assert nxt == good[6].header and header == good[5].header
    assert {v.pub_key for v in vals} == {k.pub_key for k in new}
    # the liar's chain breaks at its forged height 4: dropped, and nothing of it trusted
    assert liar in syncer.banned and "header 4" in syncer.stats.banned[liar.hex()]
    result, syncer = asyncio.run(run({liar: forged}))
    assert isinstance(result, ss.StateSyncError)
