"""The asyncio side of a validator: consensus messages, transaction gossip and block sync.

One event loop per process runs the :class:`~.state.ConsensusState`, the transport and the
timers; nothing blocks but block execution (the application and the store are synchronous).

Gossip rules (all peers are connected directly; the consortium is a full mesh):

* own proposals and votes go to every peer; a newly seen vote from another validator is relayed
  by about ``relay_copies`` (4) receivers to a random peer each (lost links heal, both halves
  of an equivocation meet) — a constant number of extra frames per vote, not N;
* every ``status_interval_s`` each node announces (height, round). A peer that is behind gets
  committed blocks with their commits (block sync, up to ``sync_batch`` per announcement);
  a peer at our height that has been stuck gets our own messages of this height again;
* transactions accepted from clients are gossiped in batches (one frame per flush), and each
  node checks a transaction's signature once (the application caches it by transaction id);
  that admission runs in short slices between other events, so proposals and votes never wait
  behind a large batch (measured: p50 latency at 1,000 tx/s on 4 validators fell ~10x);
* an idle chain waits up to ``empty_block_interval_s`` for a transaction before the next height;
* evidence of equivocation is gossiped and turned into an ``evidence.submit`` transaction.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gridledger.chain.wire import decode_length_prefixed

from . import statesync
from .evidence import (
    DuplicateProposalEvidence,
    DuplicateVoteEvidence,
    Evidence,
    SignedProposal,
    decode_evidence,
)
from .ledger import LedgerChain
from .privval import PrivValidator
from .state import COMMITTED, ConsensusState, Timeouts
from .types import Commit, ConsensusError, Proposal, Step, Vote, VoteType

if TYPE_CHECKING:
    from gridledger.chain.p2p.transport import Transport

log = logging.getLogger(__name__)

K_PROPOSAL, K_VOTE, K_STATUS, K_TXS, K_BLOCK, K_EVIDENCE = 1, 2, 3, 4, 5, 6
_STATUS = struct.Struct(">QI")
ADMIT_BATCH = 32  # gossiped transactions admitted per store lookup
ADMIT_SLICE_S = 0.004  # longest stretch of gossiped-transaction admission between other events
_BLOCK_HEAD = struct.Struct(">QI")
# Blocks received ahead of our height (block sync) wait in a buffer bounded by height and bytes.
# Only blocks whose commit verified enter it, so a peer cannot fill it with junk; the bounds
# cap what even genuine blocks from a far-ahead peer can hold (two sync batches of full blocks
# would be 256 MiB at the 4 MiB block limit).
FUTURE_WINDOW_BATCHES = 2  # heights buffered: current + 1 .. current + this x sync_batch
MAX_FUTURE_BYTES = 64 * 1024 * 1024
TX_BATCH_BYTES = 1024 * 1024  # largest K_TXS frame; a flush is cut into frames of this size
COMMIT_VOTES_BOUND = 1000  # block frames leave room for a commit of this many precommits


def frame_limits(max_block_bytes: int, max_block_txs: int) -> dict[int, int]:
    """Largest payload per frame kind; the transport ends a link that sends more."""
    blank_vote = Vote(VoteType.PREVOTE, 0, 0, None, bytes(32), bytes(64))
    blank_proposal = SignedProposal(0, 0, -1, bytes(32), bytes(32), bytes(64))
    vote = len(blank_vote.encode())
    # an encoded block: header (< 64 KiB) + a u32 length per transaction + the transactions;
    # other nodes may configure more transactions per block, up to the app's cap (20,000)
    block = max_block_bytes + 4 * max(max_block_txs, 20_000) + 64 * 1024
    commit = len(Commit(0, 0, bytes(32), ()).to_wire()) + COMMIT_VOTES_BOUND * vote
    proposal = len(Proposal(0, 0, -1, bytes(32), b"", bytes(32), bytes(64)).encode())
    return {
        **statesync.frame_limits(commit),
        K_PROPOSAL: proposal + block,
        K_VOTE: vote,
        K_STATUS: _STATUS.size,
        K_TXS: TX_BATCH_BYTES,
        K_BLOCK: _BLOCK_HEAD.size + block + commit,
        K_EVIDENCE: max(
            len(DuplicateVoteEvidence(blank_vote, blank_vote).encode()),
            len(DuplicateProposalEvidence(blank_proposal, blank_proposal).encode()),
        ),
    }


@dataclass
class ReactorConfig:
    timeouts: Timeouts = field(default_factory=Timeouts)
    status_interval_s: float = 0.5
    stuck_after_s: float = 1.0
    # A receiver forwards a new vote to ``relay_fanout`` random peers (not its author) with
    # probability relay_copies / peers, so about relay_copies forwards per vote in total: with
    # each half of an equivocation forwarded ~4 times, the halves meet with probability
    # ~1 - 2^-4 per vote (and an equivocator does it again every round). Lost messages are
    # recovered by the status exchange anyway. Forwarding every vote from every receiver cost
    # N^2 frames per step (measured: half of all frames sent at 20 validators).
    relay_fanout: int = 1
    relay_copies: float = 4.0
    sync_batch: int = 32
    tx_flush_s: float = 0.005
    empty_block_interval_s: float = 1.0


@dataclass
class PeerState:
    height: int = 0
    round: int = 0
    last_sync_sent: tuple[int, float] = (0, 0.0)


class Reactor:
    def __init__(
        self,
        chain: LedgerChain,
        privval: PrivValidator | None,
        config: ReactorConfig | None = None,
        submit_evidence: Callable[[Evidence], None] | None = None,
    ):
        self.chain = chain
        self.privval = privval
        self.config = config or ReactorConfig()
        self.cs = ConsensusState(chain.chain_id, self, privval, self.config.timeouts)
        self._transport: Transport | None = None  # set by attach()
        self.peers: dict[bytes, PeerState] = {}
        self.submit_evidence = submit_evidence
        self.evidence: dict[bytes, Evidence] = {}
        self._tx_buf: list[bytes] = []
        self._tx_flush_scheduled = False
        self._future_blocks: dict[int, tuple[bytes, Commit, int]] = {}  # block, commit, bytes
        self.future_block_bytes = 0
        self._height_started = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()
        self._stopped = False
        self._idle_wait = False
        self._start_timer: asyncio.TimerHandle | None = None
        self._tx_inbox: collections.deque[bytes] = collections.deque()
        self._admitting = False
        self.rejected_msgs = 0
        self.snapshot_server: statesync.SnapshotServer | None = None  # set by the node
        self.commit_listeners: list[Callable[[int], None]] = []

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        """The transport :meth:`attach` gave (nothing is sent before)."""
        if self._transport is None:
            raise RuntimeError("the reactor has no transport: call attach() first")
        return self._transport

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop :meth:`start` runs on (timers are set only after it)."""
        if self._loop is None:
            raise RuntimeError("the reactor has not started: call start() first")
        return self._loop

    def attach(self, transport: Transport) -> None:
        self._transport = transport
        transport.handler = self.on_frame
        transport.frame_limits = frame_limits(self.chain.max_block_bytes, self.chain.max_block_txs)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start_height()
        self._tasks.append(self._loop.create_task(self._status_loop()))

    async def stop(self) -> None:
        self._stopped = True
        for t in self._tasks:
            t.cancel()

    def tx_arrived(self) -> None:
        """A transaction entered the mempool or peer pool: end an idle wait now."""
        if self._idle_wait and self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = self.loop.call_later(
                self.config.timeouts.commit_s, self._start_height
            )
            self._idle_wait = False

    def _start_height(self) -> None:
        self._idle_wait = False
        if self._stopped:
            return
        h = self.chain.height + 1
        self._height_started = time.monotonic()
        self.cs.start_height(h, self.chain.valset(h))
        self._drain_future_blocks()

    # --- Environment for the state machine --------------------------------------------------------
    def broadcast_proposal(self, p: Proposal) -> None:
        self.transport.broadcast(K_PROPOSAL, p.encode())

    def broadcast_vote(self, v: Vote) -> None:
        self.transport.broadcast(K_VOTE, v.encode())

    def relay_vote(self, v: Vote) -> None:
        peers = [pk for pk in self.transport.connected() if pk != v.validator]
        if not peers:
            return
        # About ``relay_copies`` of the receivers forward each vote, whatever the network size.
        if self._rng.random() * len(peers) >= self.config.relay_copies:
            return
        frame = v.encode()
        for pk in self._rng.sample(peers, min(self.config.relay_fanout, len(peers))):
            self.transport.send(pk, K_VOTE, frame)

    def schedule_timeout(self, height: int, rnd: int, step: Step, delay_s: float) -> None:
        self.loop.call_later(delay_s, self._fire_timeout, height, rnd, step)
        if step == Step.PROPOSE and log.isEnabledFor(logging.INFO):
            log.info(
                "height %d round %d: proposer %s", height, rnd, self.cs.proposer(rnd).hex()[:16]
            )

    def _fire_timeout(self, height: int, rnd: int, step: Step) -> None:
        if not self._stopped:
            if height == self.cs.height and rnd == self.cs.round:
                log.info(
                    "height %d round %d: timeout %s in step %s",
                    height,
                    rnd,
                    Step(step).name,
                    self.cs.step,
                )
            self.cs.on_timeout(height, rnd, step)

    def get_value(self, height: int, rnd: int) -> tuple[bytes, bytes]:
        if self.privval is None:  # the state machine asks only a validator (it signs)
            raise ConsensusError("a node without a signing key cannot propose")
        return self.chain.make_block(height, rnd, self.privval.pub_key)

    def block_id_of(self, height: int, block: bytes) -> bytes | None:
        return self.chain.block_id_of(block)

    def validate(self, height: int, block: bytes) -> bool:
        why = self.chain.problem(height, block)
        if why is not None:
            log.warning("height %d: rejecting block: %s", height, why)
        return why is None

    def validate_committed(self, height: int, block: bytes) -> bool:
        why = self.chain.problem(height, block, committed=True)
        if why is not None:
            log.error("height %d: a committed block fails here: %s", height, why)
        return why is None

    def decide(self, height: int, block: bytes, commit: Commit) -> None:
        try:
            self.chain.apply(height, block, commit)
        except Exception:
            # A decided block that this node cannot execute means its state or disk is broken;
            # going on could only make it sign against a chain it does not hold. Stop loudly:
            # what is committed is durable, and a restart resumes (or fails) from there.
            log.critical(
                "cannot execute decided block %d; stopping the node", height, exc_info=True
            )
            os._exit(70)
        for cb in self.commit_listeners:
            cb(height)
        delay = self.config.timeouts.commit_s
        if self._future_blocks:
            delay = 0.0  # catching up: no reason to wait for transactions
        elif not self.chain.has_pending_txs():
            # Nothing to order: wait up to empty_block_interval_s for a transaction (the first
            # one that arrives starts the height), so an idle chain does not burn CPU on
            # empty blocks. Block time still advances at least once per interval.
            delay = max(delay, self.config.empty_block_interval_s)
            self._idle_wait = True
        self._start_timer = self.loop.call_later(delay, self._start_height)

    def on_evidence(self, ev: Evidence) -> None:
        h = ev.hash()
        if h in self.evidence:
            return
        log.warning(
            "equivocation (%s) by %s at height %d", ev.kind, ev.validator.hex()[:16], ev.height
        )
        self.evidence[h] = ev
        self.transport.broadcast(K_EVIDENCE, ev.encode())
        if self.submit_evidence is not None:
            self.submit_evidence(ev)

    # --- inbound ----------------------------------------------------------------------------------
    def on_frame(self, peer: bytes, kind: int, payload: bytes) -> None:
        try:
            if kind == K_VOTE:
                self.cs.on_vote(Vote.decode(payload))
            elif kind == K_PROPOSAL:
                self.cs.on_proposal(Proposal.decode(payload))
            elif kind == K_STATUS:
                self._on_status(peer, payload)
            elif kind == K_TXS:
                self._on_txs(payload)
            elif kind == K_BLOCK:
                self._on_block(payload)
            elif kind == K_EVIDENCE:
                self._on_evidence(payload)
            elif kind in statesync.REQUEST_KINDS:
                if self.snapshot_server is not None:
                    self.snapshot_server.on_request(peer, kind, payload)
            elif kind in statesync.RESPONSE_KINDS:
                return  # a late answer to our own state sync, which has finished
            else:
                raise ConsensusError(f"unknown frame kind {kind}")
        except (ConsensusError, ValueError, struct.error) as exc:
            self.rejected_msgs += 1
            log.warning("rejected frame kind %d from %s: %s", kind, peer.hex()[:16], exc)

    def _on_status(self, peer: bytes, payload: bytes) -> None:
        height, rnd = _STATUS.unpack(payload)
        ps = self.peers.setdefault(peer, PeerState())
        ps.height, ps.round = height, rnd
        now = time.monotonic()
        if height <= self.chain.height:
            last_h, last_t = ps.last_sync_sent
            if last_h == height and now - last_t < 1.0:
                return  # blocks already on their way; do not flood a slow peer
            ps.last_sync_sent = (height, now)
            top = min(self.chain.height, height + self.config.sync_batch - 1)
            for h in range(height, top + 1):
                loaded = self.chain.load(h)
                if loaded is None:
                    break
                block, commit = loaded
                frame = _BLOCK_HEAD.pack(h, len(block)) + block + commit.to_wire()
                self.transport.send(peer, K_BLOCK, frame)
        elif height == self.cs.height and now - self._height_started > self.config.stuck_after_s:
            for m in self.cs.own_messages():
                kind = K_PROPOSAL if isinstance(m, Proposal) else K_VOTE
                self.transport.send(peer, kind, m.encode())
            prop = self.cs.proposal_for(rnd)
            if prop is not None:
                self.transport.send(peer, K_PROPOSAL, prop.encode())
            for v in self.cs.round_votes(rnd):
                self.transport.send(peer, K_VOTE, v.encode())

    def _on_block(self, payload: bytes) -> None:
        h, blen = _BLOCK_HEAD.unpack_from(payload)
        off = _BLOCK_HEAD.size
        if off + blen > len(payload):
            raise ConsensusError("block frame shorter than its block length")
        base = self.chain.height
        if h <= base or h in self._future_blocks:
            return  # already have it, or a genuine copy is buffered
        if h > base + FUTURE_WINDOW_BATCHES * self.config.sync_batch:
            return  # too far ahead: a later sync batch brings it
        if len(payload) > MAX_FUTURE_BYTES:
            raise ConsensusError(f"block frame of {len(payload)} bytes exceeds the sync buffer")
        block = payload[off : off + blen]
        commit = Commit.from_wire(payload[off + blen :])
        # Before anything is kept: the commit must be signed by > 2/3 of the set the block names.
        self.chain.check_synced_block(h, block, commit)
        self._buffer_block(h, block, commit, len(payload))
        self._drain_future_blocks()

    def _buffer_block(self, h: int, block: bytes, commit: Commit, size: int) -> None:
        # Over the byte budget: lower heights are needed first, so evict from the top.
        while self.future_block_bytes + size > MAX_FUTURE_BYTES:
            top = max(self._future_blocks, default=0)
            if top <= h:
                return
            self._forget_block(top)
        self._future_blocks[h] = (block, commit, size)
        self.future_block_bytes += size

    def _forget_block(self, h: int) -> tuple[bytes, Commit, int] | None:
        item = self._future_blocks.pop(h, None)
        if item is not None:
            self.future_block_bytes -= item[2]
        return item

    def _drain_future_blocks(self) -> None:
        h = self.cs.height
        for k in [k for k in self._future_blocks if k < h or k <= self.chain.height]:
            self._forget_block(k)
        if self.cs.step == COMMITTED:
            return
        item = self._forget_block(h)
        if item is None:
            return
        block, commit, _ = item
        # The state machine verifies the commit against this height's validator set again and
        # the block against our chain.
        self.cs.on_commit(block, commit)

    def _on_evidence(self, payload: bytes) -> None:
        ev = decode_evidence(payload)
        if ev.hash() in self.evidence:
            return
        ev.verify(self.chain.chain_id, self.chain.valset(self.chain.height + 1), self.cs.height)
        self.on_evidence(ev)

    # --- transactions -----------------------------------------------------------------------------
    def gossip_tx(self, raw: bytes) -> None:
        """Queue a client's accepted transaction for the next batch to peers."""
        self.tx_arrived()
        self._tx_buf.append(raw)
        if not self._tx_flush_scheduled:
            self._tx_flush_scheduled = True
            self.loop.call_later(self.config.tx_flush_s, self._flush_txs)

    def _flush_txs(self) -> None:
        self._tx_flush_scheduled = False
        buf, self._tx_buf = self._tx_buf, []
        parts: list[bytes] = []
        size = 0
        for t in buf:
            if size + 4 + len(t) > TX_BATCH_BYTES and parts:
                self.transport.broadcast(K_TXS, b"".join(parts))
                parts, size = [], 0
            parts.append(struct.pack(">I", len(t)) + t)
            size += 4 + len(t)
        if parts:
            self.transport.broadcast(K_TXS, b"".join(parts))

    def _on_txs(self, payload: bytes) -> None:
        # Admission (a signature check per transaction) is queued and done in slices between
        # other events, so that proposals and votes are not kept waiting behind a large batch.
        self._tx_inbox.extend(decode_length_prefixed(payload, "transaction", "gossip batch"))
        if not self._admitting:
            self._admitting = True
            self.loop.call_soon(self._admit_some)

    def _admit_some(self) -> None:
        inbox, added = self._tx_inbox, False
        deadline = time.perf_counter() + ADMIT_SLICE_S
        while inbox and time.perf_counter() < deadline:
            # small batches: one store lookup per batch, and the slice deadline still holds
            batch = [inbox.popleft() for _ in range(min(ADMIT_BATCH, len(inbox)))]
            added |= self.chain.add_peer_txs(batch) > 0
        if added:
            self.tx_arrived()
        if inbox and not self._stopped:
            self.loop.call_soon(self._admit_some)
        else:
            self._admitting = False

    # --- status -----------------------------------------------------------------------------------
    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval_s)
            if self._transport is not None:
                self.transport.broadcast(K_STATUS, _STATUS.pack(self.cs.height, self.cs.round))
