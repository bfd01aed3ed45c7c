"""The bridge between the Tendermint engine and the ledger: blocks, the store and the application.

The engine agrees on opaque values; here a value is a ledger :class:`~gridledger.chain.block.Block`
(``u32 header length | header | transactions``) and its id is the header hash. This module builds
proposals from the mempool (``prepare_proposal``), judges them (header fields that must follow
from our own chain, Merkle roots, ``process_proposal``), executes decided blocks
(``finalize_block`` -> store -> ``commit``) and keeps the validator set of each height.

Validator updates returned by ``finalize_block`` at height ``H`` take effect at ``H + 2`` (as in
CometBFT): the block at ``H + 1`` may already be proposed while ``H`` executes, and every node
must agree on who signs each height. When a block schedules or applies a change, the schedule
and the proposer priorities are written to ``consensus_state.json`` (sets of the last two
heights) before the block is committed to the store, so a crash between the two writes is
recovered from either side; between such blocks only the priorities move, deterministically,
and a restart replays them from the last checkpoint.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gridledger.chain.abci import Application, ExecTxResult, ProposalInfo, Validator
from gridledger.chain.block import (
    Block,
    BlockError,
    Commit,
    Header,
    decode_txs,
    encode_txs,
    genesis_hash,
    make_header,
)
from gridledger.chain.mempool import Mempool
from gridledger.chain.store import Store
from gridledger.chain.tx import tx_id

from .types import ConsensusError
from .validators import ValidatorSet, ValidatorSetError, verify_commit

MAX_CLOCK_DRIFT_MS = 30_000
MAX_PEER_TXS = 200_000
# The schedule file is rewritten (one fsync) only when a block changes the validator set, and
# every CHECKPOINT_HEIGHTS heights; in between the priorities are replayed on restart.
CHECKPOINT_HEIGHTS = 1000
UPDATE_DELAY_HEIGHTS = 2


def encode_block(block: Block) -> bytes:
    hb = block.header.encode()
    return struct.pack(">I", len(hb)) + hb + encode_txs(block.txs)


def decode_block(data: bytes) -> Block:
    if len(data) < 4:
        raise BlockError("block shorter than its header length")
    (n,) = struct.unpack_from(">I", data)
    if len(data) < 4 + n:
        raise BlockError("block header runs past the end of the block")
    return Block(Header.decode(data[4 : 4 + n]), tuple(decode_txs(data[4 + n :])))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class AppliedBlock:
    height: int
    block: Block
    results: tuple[ExecTxResult, ...]


class LedgerChain:
    """Block production, validation and execution for one validator or full node."""

    def __init__(
        self,
        app: Application,
        store: Store,
        mempool: Mempool,
        genesis: bytes,
        state_path: str | Path,
        max_block_bytes: int = 4 * 1024 * 1024,
        max_block_txs: int = 5_000,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.app, self.store, self.mempool = app, store, mempool
        self.max_block_bytes, self.max_block_txs = max_block_bytes, max_block_txs
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.state_path = Path(state_path)
        info = app.info()
        if info.last_block_height == 0 and not info.chain_id:
            app.init_chain(genesis)
            info = app.info()
        self.chain_id = info.chain_id
        self.genesis_block_hash = genesis_hash(genesis)
        self.height = store.height(writer=True)
        if info.last_block_height != self.height:
            raise ConsensusError(
                f"application at height {info.last_block_height}, store at {self.height}"
            )
        self._classify = app.classify_tx
        self.peer_txs: OrderedDict[bytes, bytes] = OrderedDict()
        self._recent_committed: OrderedDict[bytes, None] = OrderedDict()
        self._decode_cache: dict[bytes, tuple[Block | None, str | None]] = {}
        self._load_valsets(genesis)
        self.on_applied: list[Callable[[AppliedBlock], None]] = []

    # --- validator sets -------------------------------------------------------------------------
    def _load_valsets(self, genesis: bytes) -> None:
        from gridledger.chain.genesis import parse_genesis

        if self.state_path.exists():
            d = json.loads(self.state_path.read_text())
            sets = {int(h): ValidatorSet.from_json(v) for h, v in d["valsets"].items()}
            self.pending: dict[int, list[Validator]] = {
                int(h): [Validator(bytes.fromhex(k), p) for k, p in u]
                for h, u in d["pending"].items()
            }
            nxt = self.height + 1
            top = max(sets)
            if nxt < min(sets):
                raise ConsensusError(
                    f"{self.state_path} has validator sets for {sorted(sets)}, need {nxt}"
                )
            # Between checkpoints no block changed the set: replay the priority increments.
            vs = sets[min(top, nxt)]
            for h in range(top, nxt):
                vs = self._next_valset(vs, h)
                sets[h + 1] = vs
            self.valsets = {h: s for h, s in sets.items() if h in (nxt - 1, nxt)}
            self.pending = {h: u for h, u in self.pending.items() if h > nxt}
            return
        if self.height != 0:
            raise ConsensusError(f"{self.state_path} missing for a store at height {self.height}")
        g = parse_genesis(genesis)
        vals = [Validator(bytes.fromhex(v["pub_key"]), v["power"]) for v in g.doc["validators"]]
        self.valsets = {1: ValidatorSet(vals)}
        self.pending = {}
        self._save_valsets()
        self._save_history([(1, self.valsets[1].validators)])

    @property
    def _history_path(self) -> Path:
        return self.state_path.with_name("validator_history.json")

    def _load_history(self) -> list[tuple[int, tuple[Validator, ...]]]:
        d = json.loads(self._history_path.read_text())
        return [(int(h), tuple(Validator(bytes.fromhex(k), p) for k, p in vs)) for h, vs in d]

    def _save_history(self, history: list[tuple[int, tuple[Validator, ...]]]) -> None:
        d = [[h, [[v.pub_key.hex(), v.power] for v in vs]] for h, vs in history]
        _write_atomic(self._history_path, json.dumps(d).encode())

    def validators_at(self, height: int) -> tuple[Validator, ...]:
        """The validator set that signs block ``height`` (for light clients and audits)."""
        if not 1 <= height <= self.height + 1:
            raise ConsensusError(f"height {height} outside 1..{self.height + 1}")
        found = None
        for h, vs in self._load_history():
            if h <= height:
                found = vs
        if found is None:  # the history starts at height 1 (the genesis set)
            raise ConsensusError(f"{self._history_path} has no validator set for {height}")
        return found

    def _next_valset(self, vs: ValidatorSet, height: int) -> ValidatorSet:
        """The set for ``height + 1``: scheduled updates, then one proposer-priority step."""
        nxt = vs.copy()
        upd = self.pending.get(height + 1)
        if upd:
            try:
                nxt = nxt.with_updates(upd)
            except ValidatorSetError:
                # The contract refuses impossible changes; should one slip through, keeping the
                # old set is safer than halting every node at once.
                nxt = vs.copy()
        nxt.increment_proposer_priority(1)
        return nxt

    def next_valset(self, height: int) -> ValidatorSet:
        """The set that signs ``height + 1``, known while ``height`` is decided (its updates
        were returned by block ``height - 1``): the header's ``next_validators_hash``."""
        return self._next_valset(self.valsets[height], height)

    def _save_valsets(self) -> None:
        d = {
            "height": self.height,
            "valsets": {str(h): s.to_json() for h, s in self.valsets.items()},
            "pending": {
                str(h): [[v.pub_key.hex(), v.power] for v in u] for h, u in self.pending.items()
            },
        }
        _write_atomic(self.state_path, json.dumps(d, sort_keys=True).encode())

    def valset(self, height: int) -> ValidatorSet:
        s = self.valsets.get(height)
        if s is None:
            raise ConsensusError(f"no validator set known for height {height}")
        return s.copy()

    # --- values for the state machine -----------------------------------------------------------
    def last_block_hash(self) -> bytes:
        if self.height == 0:
            return self.genesis_block_hash
        return bytes.fromhex(self.store.meta("last_block_hash", writer=True))

    def _last_time_ms(self) -> int:
        return int(self.store.meta("last_time_ms", 0, writer=True))

    def make_block(
        self, height: int, rnd: int, proposer: bytes, time_offset_ms: int = 0
    ) -> tuple[bytes, bytes]:
        time_ms = max(self.clock_ms(), self._last_time_ms() + 1) + time_offset_ms
        info = ProposalInfo(height, time_ms, proposer, self.last_block_hash())
        candidates = self.mempool.reap(self.max_block_bytes, self.max_block_txs)
        if self.peer_txs and len(candidates) < self.max_block_txs:
            have = {tx_id(t) for t in candidates}
            room = self.max_block_txs - len(candidates)
            for k, t in self.peer_txs.items():
                if room == 0:
                    break
                if k not in have:
                    candidates.append(t)
                    room -= 1
        txs = self.app.prepare_proposal(candidates, self.max_block_bytes, info)
        if self.peer_txs and len(txs) < len(candidates):
            # A gossiped transaction whose sequence number a committed one used since (a
            # conflicting copy that arrived late) can never be in a block: without this it
            # would stay in the pool, and keep an idle chain making blocks, until evicted.
            kept = set(txs)
            for txid in self.app.replays_among([t for t in candidates if t not in kept]):
                self.peer_txs.pop(txid, None)
        header = make_header(
            self.chain_id,
            height,
            time_ms,
            info.prev_block_hash,
            proposer,
            txs,
            self._classify,
            self.app.info().last_block_app_hash,
            self._last_results_hash(),
            self.valsets[height].validators,
            self.next_valset(height).validators,
        )
        block = Block(header, tuple(txs))
        return encode_block(block), header.hash()

    def _last_results_hash(self) -> bytes:
        return bytes.fromhex(self.store.meta("last_results_hash", writer=True))

    def _decoded(self, data: bytes) -> tuple[Block | None, str | None]:
        """Decode a block and check its body against its header, once per block bytes.

        The id check, the validity check and execution all need the decoded block; with
        thousands of transactions the Merkle roots cost milliseconds, so the last few
        verdicts are kept.
        """
        hit = self._decode_cache.get(data)
        if hit is not None:
            return hit
        res: tuple[Block | None, str | None]
        try:
            block = decode_block(data)
            res = (block, block.check_body(self._classify))
        except BlockError as exc:
            res = (None, str(exc))
        if len(self._decode_cache) >= 4:
            self._decode_cache.pop(next(iter(self._decode_cache)))
        self._decode_cache[data] = res
        return res

    def block_id_of(self, data: bytes) -> bytes | None:
        block, why = self._decoded(data)
        return None if block is None or why is not None else block.hash()

    def problem(self, height: int, data: bytes, committed: bool = False) -> str | None:
        """Why ``data`` is not a valid block for ``height`` on our chain (None: valid).

        ``committed``: more than 2/3 already committed it (catch-up), so a block time ahead of
        our clock is our clock's problem, not the block's; everything else is judged alike.
        """
        block, why = self._decoded(data)
        if block is None:
            return why
        h = block.header
        if h.chain_id != self.chain_id or h.height != height:
            return f"block for chain {h.chain_id!r} height {h.height}"
        if height != self.height + 1:
            return f"block for height {height}, we are at {self.height}"
        if h.prev_block_hash != self.last_block_hash():
            return "block does not extend our last block"
        if h.app_hash != self.app.info().last_block_app_hash:
            return "block's app_hash differs from our state root"
        if h.last_results_hash != self._last_results_hash():
            return "block's last_results_hash differs from ours"
        vs = self.valsets[height]
        if h.validators_hash != vs.hash():
            return "block's validators_hash is not this height's validator set"
        if h.next_validators_hash != self.next_valset(height).hash():
            return "block's next_validators_hash is not the next height's validator set"
        if h.proposer not in vs:
            return "block proposer is not a validator"
        if h.time_ms <= self._last_time_ms():
            return f"block time {h.time_ms} not after the last block"
        if not committed and h.time_ms > self.clock_ms() + MAX_CLOCK_DRIFT_MS:
            return f"block time {h.time_ms} too far ahead of our clock"
        if why is not None:
            return why
        info = ProposalInfo(height, h.time_ms, h.proposer, h.prev_block_hash)
        if not self.app.process_proposal(list(block.txs), info):
            return "the application rejected the block's transactions"
        return None

    def check_synced_block(self, height: int, data: bytes, commit: Commit) -> None:
        """Raise :class:`ConsensusError` unless ``data`` is a committed block for ``height``.

        For block sync, *before* a block for a future height is buffered: the header must be for
        this chain and height, hash to the commit's block id and name a validator set we know
        (this height's, or for a later height our latest one, since a set changes only through
        updates we will have executed); more than 2/3 of that set must have signed the commit,
        and the body must match the header. Cheapest checks first, so a junk frame costs one
        header decode and at most one signature check. The block is still judged against our
        chain (previous hash, state root, ...) when its height comes.
        """
        if commit.height != height:
            raise ConsensusError("block frame height differs from its commit")
        if len(data) < 4:
            raise ConsensusError("block shorter than its header length")
        (n,) = struct.unpack_from(">I", data)
        try:
            header = Header.decode(data[4 : 4 + n])
        except BlockError as exc:
            raise ConsensusError(f"synced block header does not decode: {exc}") from exc
        if header.chain_id != self.chain_id or header.height != height:
            raise ConsensusError(f"synced block is for {header.chain_id!r} height {header.height}")
        if header.hash() != commit.block_id:
            raise ConsensusError("synced block does not match its commit's block id")
        known = self.valsets[height if height in self.valsets else max(self.valsets)]
        if header.validators_hash != known.hash():
            raise ConsensusError(
                f"synced block {height} names a validator set this node does not know yet"
            )
        verify_commit(self.chain_id, known, commit)
        block, why = self._decoded(data)
        if block is None or why is not None:
            raise ConsensusError(f"synced block body does not match its header: {why}")

    def apply(self, height: int, data: bytes, commit: Commit) -> AppliedBlock:
        """Execute and durably commit a decided block; advance the validator sets."""
        if height != self.height + 1:
            raise ConsensusError(f"apply height {height} on top of {self.height}")
        block, _ = self._decoded(data)
        if block is None:
            raise ConsensusError("a decided block does not decode")
        h = block.header
        info = ProposalInfo(height, h.time_ms, h.proposer, h.prev_block_hash)
        res = self.app.finalize_block(list(block.txs), info)
        # Next heights' sets, saved before the store commit (see the module docstring).
        if res.validator_updates:
            self.pending[height + UPDATE_DELAY_HEIGHTS] = list(res.validator_updates)
        nxt = self._next_valset(self.valsets[height], height)
        changed = bool(res.validator_updates) or height + 1 in self.pending
        if nxt.hash() != self.valsets[height].hash():
            history = [e for e in self._load_history() if e[0] <= height]
            self._save_history([*history, (height + 1, nxt.validators)])
        self.valsets = {height: self.valsets[height], height + 1: nxt}
        # Entries for height + 1 stay until the next block: a crash before the store commit
        # re-executes this height and must find them again.
        self.pending = {k: u for k, u in self.pending.items() if k >= height + 1}
        if changed or height % CHECKPOINT_HEIGHTS == 0:
            self._save_valsets_for(height)
        self.store.stage_block(block, commit)
        self.app.commit()
        self.height = height
        for t in block.txs:
            k = tx_id(t)
            self.peer_txs.pop(k, None)
            self._recent_committed[k] = None
        while len(self._recent_committed) > MAX_PEER_TXS:
            self._recent_committed.popitem(last=False)
        self.mempool.update(list(block.txs))
        applied = AppliedBlock(height, block, res.tx_results)
        for cb in self.on_applied:
            cb(applied)
        return applied

    def _save_valsets_for(self, height: int) -> None:
        saved, self.height = self.height, height
        try:
            self._save_valsets()
        finally:
            self.height = saved

    def has_pending_txs(self) -> bool:
        return len(self.mempool) > 0 or bool(self.peer_txs)

    def add_peer_tx(self, raw: bytes) -> bool:
        """A transaction gossiped by a peer validator, which already admitted it with check_tx.

        Here only its form and signature are checked (the app caches the verdict, so the block
        that carries it is not verified twice); executing it against the check state again on
        every node would cost one more full execution per node, and a transaction that has
        become invalid meanwhile only ends up as a failed result in a block.
        """
        return self.add_peer_txs([raw]) > 0

    def add_peer_txs(self, raws: list[bytes]) -> int:
        """:meth:`add_peer_tx` for a batch (one store query for all); returns how many joined."""
        fresh: dict[bytes, bytes] = {}
        for raw in raws:
            txid = tx_id(raw)
            if txid in self.peer_txs or txid in self.mempool or txid in self._recent_committed:
                continue
            fresh.setdefault(txid, raw)
        # stateless admission (form + signature, cached by the app): the sequence is the
        # proposer's business, and peers' transactions may arrive out of order. First, so that
        # the app knows each one's sender and sequence number for the lookup below.
        fresh = {txid: raw for txid, raw in fresh.items() if self.app.precheck_tx(raw).ok}
        if not fresh:
            return 0
        # A transaction committed before its gossip arrived would make every block this node
        # proposes invalid; it is checked here, off the proposer's critical path (pool entries
        # that get committed later are removed by apply). The app's lookup remembers "not
        # committed", which spares the block's own lookups later.
        old = self.app.committed_among(set(fresh))
        added = 0
        for txid, raw in fresh.items():
            if txid in old or len(self.peer_txs) >= MAX_PEER_TXS:
                continue
            self.peer_txs[txid] = raw
            added += 1
        return added

    def load(self, height: int) -> tuple[bytes, Commit] | None:
        sb = self.store.get_block(height, writer=True)
        if sb is None:
            return None
        return encode_block(sb.block()), sb.commit()
