"""Attacks on a syncing node by a peer that serves a false snapshot under the chain's real app
hash (its manifest's chunk hashes are its own), over real authenticated links.

The light client cannot catch this one: the manifest's app hash is the verified header's, and
every chunk matches its hash in the manifest. Only the rebuilt root (after every chunk is in)
shows the lie, so what such a peer can cost is the bytes the node fetches and holds first.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridledger.chain.abci import Validator
from gridledger.chain.block import Commit, make_header
from gridledger.chain.consensus.tendermint.validators import ValidatorSet
from gridledger.chain.keys import KeyPair
from gridledger.chain.snapshot import (
    MAX_HEIGHT,
    Manifest,
    SnapshotError,
    SnapshotStore,
    encode_chunks,
)
from gridledger.node.statesync import check_schedule

from .test_state_sync import CHAIN_ID, _LightPeers, _snapshot, _sync, _transfer, make_chain
from .test_state_sync import ss as statesync


@pytest.fixture
def chain(tmp_path):
    """The solo chain of test_state_sync.py: three blocks with a transfer each."""
    (tmp_path / "chain").mkdir()
    c = make_chain(tmp_path / "chain")
    for amount in (1, 2, 3):
        assert c.submit(_transfer(c, amount)).ok
        c.block()
    yield c
    c.store.close()


def _forged(chain, directory, extra_items: int, chunk_bytes: int = 256):
    """A snapshot store offering the real height and app hash over made-up state: the real
    items plus ``extra_items`` keys that are not in the chain's state."""
    real = list(chain.app.snapshot_items())
    extra = [(b"zz/forged/%06d" % i, b"x" * 200) for i in range(extra_items)]
    forged = SnapshotStore(directory)
    m = forged.take(chain.app.height, CHAIN_ID, chain.app.app_hash, iter(real + extra), {}, 256)
    assert len(encode_chunks(iter(real + extra), chunk_bytes)) == len(m.chunk_hashes)
    return forged, m


def test_a_forged_manifest_under_the_real_app_hash_is_refused_once_and_its_peer_dropped(
    chain, tmp_path
):
    honest, m = _snapshot(chain, tmp_path / "honest")
    expected = dict(chain.app.snapshot_items())
    forged, fm = _forged(chain, tmp_path / "forged", extra_items=3)
    assert fm.app_hash == m.app_hash and fm.hash() != m.hash()
    chain.block()  # the header after the snapshot, which carries its app hash
    result, syncer, (liar, good) = asyncio.run(_sync(chain, [forged, honest]))
    assert isinstance(result, statesync.Restored), result
    assert result.manifest == m and result.state == expected
    # whichever was tried first, the forged manifest is never restored, and if it was fetched
    # its peer is dropped and the manifest refused (not fetched again in a later round)
    assert good not in syncer.banned
    if liar in syncer.banned:
        assert "does not rebuild" in syncer.stats.banned[liar.hex()]
        assert fm.hash() in syncer.bad_manifests
    # alone, the liar is fetched once, refused, dropped: the sync fails instead of looping
    result, syncer, _ = asyncio.run(_sync(chain, [forged], timeout_s=3.0))
    assert isinstance(result, statesync.StateSyncError)
    assert "state sync timed out" in str(result)
    assert liar in syncer.banned
    why = syncer.stats.banned[liar.hex()]
    assert "the rebuilt state root is not the manifest's app hash" in why
    assert syncer.stats.refused_manifests == 1
    assert syncer.stats.chunks_fetched == len(fm.chunk_hashes)  # once, not once per round


def test_a_snapshot_bomb_stops_at_the_byte_budget(chain, tmp_path):
    honest, m = _snapshot(chain, tmp_path / "honest")
    honest_bytes = sum(map(len, honest.chunks(m.height)))
    forged, fm = _forged(chain, tmp_path / "forged", extra_items=400)  # ~90 KB, 4x the budget
    forged_bytes = sum(map(len, forged.chunks(fm.height)))
    budget = max(honest_bytes, 20_000)
    assert forged_bytes > 4 * budget
    chain.block()

    async def run(stores, timeout_s=20.0):
        real_init = statesync.StateSyncConfig.__post_init__

        def small_budget(cfg):
            cfg.max_snapshot_bytes = budget
            real_init(cfg)

        statesync.StateSyncConfig.__post_init__ = small_budget
        try:
            return await _sync(chain, stores, timeout_s)
        finally:
            statesync.StateSyncConfig.__post_init__ = real_init

    # alone, the bomb is cut at the budget: at most budget + the chunks in flight are fetched
    result, syncer, (bomber,) = asyncio.run(run([forged], timeout_s=3.0))
    assert isinstance(result, statesync.StateSyncError)
    assert syncer.stats.refused_manifests == 1
    assert fm.hash() in syncer.bad_manifests
    assert bomber not in syncer.banned  # an honest state over the budget looks the same
    biggest = max(map(len, forged.chunks(fm.height)))
    assert budget - biggest < syncer.stats.bytes_held <= budget
    assert syncer.stats.chunks_fetched < len(fm.chunk_hashes)
    # with an honest peer, the node restores the real snapshot within the same budget
    result, syncer, _ = asyncio.run(run([forged, honest]))
    assert isinstance(result, statesync.Restored), result
    assert result.manifest == m


def test_the_byte_budget_is_a_positive_setting():
    try:
        statesync.StateSyncConfig(1, b"\0" * 32, max_snapshot_bytes=0)
    except statesync.StateSyncError as exc:
        assert "max_snapshot_bytes" in str(exc)
    else:
        raise AssertionError("a zero byte budget was accepted")


def test_offers_far_in_the_future_only_delay_the_sync_and_go_last_after_one_try(chain, tmp_path):
    honest, m = _snapshot(chain, tmp_path / "honest")
    expected = dict(chain.app.snapshot_items())
    future = SnapshotStore(tmp_path / "future", keep=4)
    for ahead in (10**3, 10**6, 10**9, 2**62):  # no header h + 1 exists for any of them
        future.take(m.height + ahead, CHAIN_ID, m.app_hash, iter(expected.items()), {}, 256)
    chain.block()
    result, syncer, _ = asyncio.run(_sync(chain, [future, honest]))
    assert isinstance(result, statesync.Restored), result
    assert result.manifest == m and result.state == expected
    assert syncer.unverified_heights == {m.height + a for a in (10**3, 10**6, 10**9, 2**62)}
    # a silent peer is no offence; but its offers now go after every verifiable one
    assert syncer.banned == set()
    assert syncer._candidates()[0][0] == m


def test_an_offer_beyond_the_largest_height_is_refused_and_its_peer_dropped(chain, tmp_path):
    """A manifest at height 2^64 made the syncing node crash with a struct.error when it asked
    for header h + 1 (a u64 field), before the manifest bounded its height."""
    honest, m = _snapshot(chain, tmp_path / "honest")
    for height in (MAX_HEIGHT + 1, 2**64, 10**39):
        bad = Manifest(height, m.format, CHAIN_ID, m.app_hash, m.chunk_hashes, {})
        with pytest.raises(SnapshotError, match="manifest height"):
            Manifest.decode(bad.encode())
        with pytest.raises(statesync.StateSyncError, match="manifest height"):
            statesync.decode_offer(statesync.encode_offer([m, bad]))
    # JSON true equals 1 in Python: a second encoding of height 1 and of format 1, refused
    as_bool = Manifest(True, m.format, CHAIN_ID, m.app_hash, m.chunk_hashes, {})
    with pytest.raises(SnapshotError, match="manifest height"):
        Manifest.decode(as_bool.encode())
    with pytest.raises(SnapshotError, match="format"):
        Manifest.decode(Manifest(1, True, CHAIN_ID, m.app_hash, m.chunk_hashes, {}).encode())
    top = Manifest(MAX_HEIGHT, m.format, CHAIN_ID, m.app_hash, m.chunk_hashes, {})
    assert Manifest.decode(top.encode()) == top
    beyond = SnapshotStore(tmp_path / "beyond")
    beyond.save(
        Manifest(2**64, m.format, CHAIN_ID, m.app_hash, m.chunk_hashes, {}),
        [b""] * len(m.chunk_hashes),
    )
    chain.block()
    result, syncer, (liar, good) = asyncio.run(_sync(chain, [beyond, honest]))
    assert isinstance(result, statesync.Restored), result
    assert result.manifest == m
    assert liar in syncer.banned and good not in syncer.banned
    assert "manifest height" in syncer.stats.banned[liar.hex()]


# --- the engine schedule a manifest carries (no hash covers it) ------------------------------
_PUB = bytes(range(32))
_SET = ValidatorSet([Validator(_PUB, 10)], [0], _PUB).to_json()
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["5", "6", "7", "validators", "proposer"]), inner)
    ),
    max_leaves=12,
)


def _schedule_manifest(consensus: dict) -> Manifest:
    return Manifest(5, 1, CHAIN_ID, b"\0" * 32, (b"\0" * 32,), consensus)


_HEADERS = SimpleNamespace(validators_hash=b"\0" * 32, next_validators_hash=b"\0" * 32)


def test_a_schedule_that_is_not_objects_is_refused_not_a_crash():
    """``"pending": []`` under the real app hash made the syncing node's start raise an
    AttributeError (a peer could stop every node that state-syncs from it)."""
    for pending in ([], None, "x", 7, True):
        why = check_schedule(
            _schedule_manifest({"valsets": {"5": _SET, "6": _SET}, "pending": pending}),
            _HEADERS,
            _HEADERS,
        )
        assert why is not None and "malformed" in why
    for valsets in ([], None, "x", [_SET, _SET]):
        why = check_schedule(
            _schedule_manifest({"valsets": valsets, "pending": {}}), _HEADERS, _HEADERS
        )
        assert why is not None and "malformed" in why


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "valsets": _JSON
            | st.fixed_dictionaries({"5": _JSON | st.just(_SET), "6": _JSON | st.just(_SET)}),
            "pending": _JSON,
        }
    )
    | st.dictionaries(st.sampled_from(["valsets", "pending", "x"]), _JSON)
)
def test_any_schedule_json_gets_a_reason_never_an_exception(consensus):
    why = check_schedule(_schedule_manifest(consensus), _HEADERS, _HEADERS)
    assert isinstance(why, str)  # the headers' zero hashes match no set


# --- one forged header must not make the node walk every height ------------------------------
class _CountingLightPeers(_LightPeers):
    def __init__(self, tables):
        super().__init__(tables)
        self.asked: dict[bytes, int] = dict.fromkeys(tables, 0)

    def send(self, peer: bytes, kind: int, payload: bytes) -> bool:
        self.asked[peer] += 1
        return super().send(peer, kind, payload)


def _long_chain(keys, heights: int, forged_at: int | None = None):
    """Light blocks 1..heights signed by ``keys`` (one set throughout); from ``forged_at`` on,
    a fork signed by strangers under headers naming their own set."""
    strangers = [KeyPair.from_seed(bytes([200 + i]) * 32) for i in range(3)]
    out, prev = {}, bytes(32)
    for h in range(1, heights + 1):
        signers = strangers if forged_at is not None and h >= forged_at else keys
        vals = [Validator(k.pub_key, 1) for k in signers]
        header = make_header(
            CHAIN_ID, h, 1000 * h, prev, signers[0].pub_key, [], lambda raw: "other",
            bytes(32), bytes(32), vals, vals,
        )  # fmt: skip
        commit = Commit.sign(CHAIN_ID, h, 0, header.hash(), signers)
        out[h] = statesync.LightBlock(header, commit, tuple(vals))
        prev = header.hash()
    return out


def test_a_forged_header_costs_the_node_log_n_headers_not_every_height():
    keys = [KeyPair.from_seed(bytes([10 + i]) * 32) for i in range(3)]
    n = 1024
    good, forged = _long_chain(keys, n), _long_chain(keys, n, forged_at=n)
    liar, honest = b"L" * 32, b"H" * 32

    async def run(tables):
        peers = _CountingLightPeers(tables)
        cfg = statesync.StateSyncConfig(1, good[1].header.hash(), request_timeout_s=0.5)
        syncer = statesync.StateSyncer(CHAIN_ID, peers, cfg)
        peers.syncer = syncer
        return await syncer.verify_headers(n - 1), syncer, peers.asked

    (header, nxt, _), syncer, asked = asyncio.run(run({liar: forged, honest: good}))
    assert (header, nxt) == (good[n - 1].header, good[n].header)
    assert liar in syncer.banned and f"header {n}" in syncer.stats.banned[liar.hex()]
    # the liar's one forged header cost the trusted header, its target and a bisection down to
    # the height before it: log2(1024) = 10 halvings, not 1,023 headers
    assert asked[liar] <= 2 + 10 + 1
    assert asked[honest] <= 3  # the trusted header, the skip to n, header n - 1
