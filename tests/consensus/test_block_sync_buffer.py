"""Block sync under attack: the future-block buffer cannot be poisoned or made to pin memory.

The attack from the adversarial review: a peer sends 128 tiny junk block frames for future
heights (they used to fill the buffer, whose entries above the current height were never
removed, so a lagging node never caught up) and multi-MiB junk blocks (which used to be kept).
Here a lagging node's real reactor (real ledger app, store and chain) receives the attack and
then the genuine chain of a 4-validator in-process network; it must catch up to the same block
hashes, and the buffer must stay empty under junk and within its byte bound otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import struct

import pytest

from gridledger.chain.app import LedgerApp
from gridledger.chain.block import Block, CommitSig
from gridledger.chain.consensus.tendermint import reactor as reactor_mod
from gridledger.chain.consensus.tendermint.ledger import (
    MAX_CLOCK_DRIFT_MS,
    LedgerChain,
    decode_block,
    encode_block,
)
from gridledger.chain.consensus.tendermint.reactor import K_BLOCK, Reactor, ReactorConfig
from gridledger.chain.consensus.tendermint.state import Timeouts
from gridledger.chain.consensus.tendermint.types import Commit, Vote, VoteType, vote_sign_bytes
from gridledger.chain.mempool import Mempool
from gridledger.chain.store import Store

from .ledgernet import CHAIN, LedgerNet, kp

TOP = 12
PEER = b"\x01" * 32


class RecordingTransport:
    """Stands in for the TCP transport: the lagging node only receives in these tests."""

    def __init__(self):
        self.handler = None
        self.peers: dict[bytes, object] = {}
        self.sent: list[tuple[bytes | None, int]] = []

    def broadcast(self, kind: int, payload: bytes) -> None:
        self.sent.append((None, kind))

    def send(self, peer: bytes, kind: int, payload: bytes) -> None:
        self.sent.append((peer, kind))

    def connected(self) -> list[bytes]:
        return []


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 4-validator network that committed TOP blocks with transfers in them."""
    net = LedgerNet(tmp_path_factory.mktemp("src"), target_height=TOP)
    net.start()
    for seq in range(6):
        net.nodes[0].submit(net.transfer(seq))
    net.run_until(TOP)
    chain = net.nodes[0].chain
    blocks = {h: chain.load(h) for h in range(1, TOP + 1)}
    yield net, blocks
    for n in net.nodes:
        n.close()


def _frame(h: int, block: bytes, commit: Commit) -> bytes:
    return struct.pack(">QI", h, len(block)) + block + commit.to_wire()


def _lagging(tmp_path, net: LedgerNet, clock_ms=None) -> tuple[Reactor, Store]:
    store = Store(tmp_path / "chain.db", synchronous="OFF")
    app = LedgerApp(store)
    app.init_chain(net.genesis)
    chain = LedgerChain(
        app, store, Mempool(app), net.genesis, tmp_path / "cs.json", clock_ms=clock_ms
    )
    cfg = ReactorConfig(
        timeouts=Timeouts(0.2, 0.1, 0.1, 0.05, 0.1, 0.05, 0.01),
        status_interval_s=10.0,
        empty_block_interval_s=0.05,
    )
    r = Reactor(chain, None, cfg)  # an observer: it signs nothing, it only syncs
    r.attach(RecordingTransport())
    return r, store


async def _until(pred, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _junk_frames(blocks: dict) -> list[bytes]:
    """Tiny junk, big junk, forged commits, a genuine header with a swapped body."""
    frames = []
    fake_commit = Commit(5, 0, b"\x22" * 32, ())
    for h in range(2, 2 + 128):  # the 128 tiny frames of the review, heights 2..129
        frames.append(_frame(h, b"junk", Commit(h, 0, b"\x22" * 32, ())))
    big = os.urandom(20 * 1024 * 1024)
    for h in (2, 3, 4):  # 20 MiB junk blocks
        frames.append(_frame(h, big, Commit(h, 0, b"\x33" * 32, ())))
    frames.append(_frame(5, b"x", fake_commit)[:-3])  # truncated frame
    # A genuine block carried by a commit signed by keys outside the validator set.
    block5, commit5 = blocks[5]
    strangers = [kp(f"stranger-{i}") for i in range(4)]
    forged = tuple(
        Vote(VoteType.PRECOMMIT, 5, commit5.round, commit5.block_id, k.pub_key, b"\x00" * 64)
        for k in strangers
    )
    frames.append(
        _frame(5, block5, Commit.from_precommits(5, commit5.round, commit5.block_id, forged))
    )
    # The genuine commit with one signature flipped and the others dropped below 2/3.
    s0 = commit5.signatures[0]
    flipped = CommitSig(s0.validator, bytes([s0.signature[0] ^ 1]) + s0.signature[1:])
    frames.append(_frame(5, block5, Commit(5, commit5.round, commit5.block_id, (flipped,))))
    # The genuine header and commit of block 6 with another block's transactions as the body.
    block6, commit6 = blocks[6]
    (n6,) = struct.unpack_from(">I", block6)
    other_txs = next(b for b, _ in blocks.values() if len(b) > 4 + n6 + 8 and b != block6)
    (no,) = struct.unpack_from(">I", other_txs)
    swapped = block6[: 4 + n6] + other_txs[4 + no :]
    frames.append(_frame(6, swapped, commit6))
    return frames


def test_junk_future_blocks_are_refused_and_the_node_still_catches_up(source, tmp_path):
    net, blocks = source
    r, store = _lagging(tmp_path, net)
    junk = _junk_frames(blocks)
    # Frames beyond the window (current + 2 x sync_batch) are ignored unread; the rest refused.
    window = reactor_mod.FUTURE_WINDOW_BATCHES * r.config.sync_batch
    checked = sum(1 for f in junk if struct.unpack_from(">Q", f)[0] <= window)
    assert 0 < checked < len(junk)

    async def run() -> None:
        await r.start()
        for f in junk:
            r.on_frame(PEER, K_BLOCK, f)
            # nothing from a junk frame is kept: no entry, no bytes
            assert r._future_blocks == {} and r.future_block_bytes == 0
        assert r.rejected_msgs == checked and r.chain.height == 0
        # Then the genuine chain, highest first (the worst order for the buffer).
        for h in range(TOP, 0, -1):
            r.on_frame(PEER, K_BLOCK, _frame(h, *blocks[h]))
        await _until(lambda: r.chain.height >= TOP)
        await r.stop()

    asyncio.run(run())
    assert r.rejected_msgs == checked
    for h in range(1, TOP + 1):
        assert store.get_block(h).hash == net.nodes[0].store.get_block(h).hash
    assert r._future_blocks == {} and r.future_block_bytes == 0  # nothing left behind
    store.close()


def test_buffer_is_bounded_by_height_window_and_bytes(source, tmp_path, monkeypatch):
    net, blocks = source
    sizes = {h: len(_frame(h, *bc)) for h, bc in blocks.items()}  # what an entry counts
    # room for 4 and 3, or for 3 and 2, never for all three
    budget = max(sizes[4], sizes[2]) + sizes[3] + min(sizes[4], sizes[2]) // 2
    monkeypatch.setattr(reactor_mod, "MAX_FUTURE_BYTES", budget)
    r, store = _lagging(tmp_path, net)

    async def run() -> None:
        await r.start()
        # Far beyond the window (current + 2 x sync_batch): not even checked, not kept.
        r.config.sync_batch = 2  # window: heights 1..4 while at height 0
        r.on_frame(PEER, K_BLOCK, _frame(5, *blocks[5]))
        assert r._future_blocks == {}
        # Highest first: 4 and 3 fit; 2 evicts 4 (lower heights are needed first).
        for h in (4, 3, 2):
            r.on_frame(PEER, K_BLOCK, _frame(h, *blocks[h]))
            assert r.future_block_bytes <= budget
        assert sorted(r._future_blocks) == [2, 3]
        assert r.future_block_bytes == sizes[2] + sizes[3]
        # Block 1 arrives and evicts 3 for room; the node executes 1 and 2 from the buffer.
        r.on_frame(PEER, K_BLOCK, _frame(1, *blocks[1]))
        await _until(lambda: r.chain.height >= 2)
        assert r._future_blocks == {} and r.future_block_bytes == 0
        # The next sync batch brings 3 again.
        r.on_frame(PEER, K_BLOCK, _frame(3, *blocks[3]))
        await _until(lambda: r.chain.height >= 3)
        # Stale entries (at or below our height) are never buffered.
        r.on_frame(PEER, K_BLOCK, _frame(2, *blocks[2]))
        assert r._future_blocks == {}
        await r.stop()

    asyncio.run(run())
    assert r.rejected_msgs == 0
    assert store.get_block(3).hash == net.nodes[0].store.get_block(3).hash
    store.close()


def test_block_of_a_future_height_naming_an_unknown_set_is_not_buffered(source, tmp_path):
    """Signed by the real validators, but naming a set this node cannot know yet: refused."""
    net, blocks = source
    r, store = _lagging(tmp_path, net)
    b = decode_block(blocks[3][0])
    header = dataclasses.replace(b.header, validators_hash=b"\x44" * 32)
    forged = encode_block(Block(header, b.txs))
    bid = header.hash()
    votes = tuple(
        Vote(
            VoteType.PRECOMMIT,
            3,
            0,
            bid,
            k.pub_key,
            k.signing_key.sign(vote_sign_bytes(CHAIN, VoteType.PRECOMMIT, 3, 0, bid)).signature,
        )
        for k in net.keys
    )

    async def run() -> None:
        await r.start()
        r.on_frame(PEER, K_BLOCK, _frame(3, forged, Commit.from_precommits(3, 0, bid, votes)))
        assert r._future_blocks == {} and r.rejected_msgs == 1
        await r.stop()

    asyncio.run(run())
    store.close()


def test_node_with_a_slow_clock_still_executes_committed_blocks(source, tmp_path):
    """A block time far ahead of our clock makes us refuse a *proposal*, never a committed
    block: a node whose clock lags by more than the drift bound still catches up."""
    net, blocks = source
    first_time = decode_block(blocks[1][0]).header.time_ms
    slow = lambda: first_time - MAX_CLOCK_DRIFT_MS - 60_000  # noqa: E731 - a stopped, slow clock
    r, store = _lagging(tmp_path, net, clock_ms=slow)
    assert "too far ahead" in r.chain.problem(1, blocks[1][0])  # as a proposal: refused

    async def run() -> None:
        await r.start()
        for h in range(1, TOP + 1):
            r.on_frame(PEER, K_BLOCK, _frame(h, *blocks[h]))
        await _until(lambda: r.chain.height >= TOP)
        await r.stop()

    asyncio.run(run())
    assert r.rejected_msgs == 0
    assert store.get_block(TOP).hash == net.nodes[0].store.get_block(TOP).hash
    store.close()
