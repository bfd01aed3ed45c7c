"""Audit a node's database from genesis: every link, root, signature and state transition.

A fresh application replays every block into a scratch database and checks, per height ``h``:
the stored hash is the header's hash; height, chain id, time and ``prev_block_hash`` link; the
body matches ``num_txs`` and the four Merkle roots; ``app_hash``/``last_results_hash`` equal the
replay's state root and results after ``h-1``; ``validators_hash`` is the replayed set; the commit
carries > 2/3 of that set's power in valid signatures; every transaction is well formed and
validly signed; the recorded result of each transaction equals the replay's. Finally the node's
state table and stored state root must equal the replay's. The first failing height is named.

A node restored by state sync holds no block up to its snapshot height ``b`` (the store's
``state_sync_base``): the replay starts from the snapshot the node kept (``snapshots/<b>/`` next
to its database), whose chunks must hash as its manifest says and whose state root must be the
app hash the node verified; block ``b + 1`` must then carry that app hash and link to the
verified header ``b``, and every later block is checked as above.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gridledger.chain.abci import ProposalInfo
from gridledger.chain.app import LedgerApp
from gridledger.chain.block import HEADER_VERSION, BlockError, genesis_hash, validator_set_hash
from gridledger.chain.snapshot import SnapshotError, SnapshotStore, rebuild
from gridledger.chain.statetree import StateTree
from gridledger.chain.store import Store
from gridledger.chain.tx import tx_id


@dataclass
class VerifyReport:
    ok: bool
    height: int  # last height checked successfully
    bad_height: int | None = None
    base_height: int = 0  # > 0: the replay started from the state-sync snapshot of this height
    problem: str = ""
    blocks: int = 0
    txs: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def verify_chain(db_path: Path | str, snapshots_dir: Path | str | None = None) -> VerifyReport:
    t0 = time.perf_counter()
    rep = VerifyReport(ok=False, height=0)
    try:
        node = Store(db_path, synchronous="NORMAL")
    except sqlite3.DatabaseError as exc:
        rep.problem = f"cannot open the database: {exc}"
        return rep
    with tempfile.TemporaryDirectory(prefix="gridledger-verify-") as tmp:
        replay_store = Store(Path(tmp) / "replay.db", synchronous="OFF")
        try:
            with node.read_snapshot():
                snaps = Path(snapshots_dir or Path(db_path).parent / "snapshots")
                _run(node, replay_store, rep, snaps)
        except sqlite3.DatabaseError as exc:
            _fail(rep, rep.height + 1 if rep.height else None, f"database unreadable: {exc}")
        finally:
            replay_store.close()
            node.close()
    rep.seconds = time.perf_counter() - t0
    return rep


def _fail(rep: VerifyReport, height: int | None, problem: str) -> None:
    rep.bad_height, rep.problem, rep.ok = height, problem, False


def _restore_base(
    node: Store, replay_store: Store, snaps: Path, base: dict[str, Any]
) -> str | None:
    """Put the replay at the node's state-sync snapshot (None), or say why it cannot."""
    height = int(base["height"])
    try:
        kept = SnapshotStore(snaps, keep=1 << 30)
        m = kept.get(height)
        if m is None:
            return f"state-sync snapshot {height} is not kept in {snaps}"
        if m.hash().hex() != base["manifest_hash"] or m.app_hash.hex() != base["app_hash"]:
            return "the kept snapshot is not the one the node restored from"
        state = rebuild(m, kept.chunks(height))
    except (SnapshotError, OSError, KeyError, ValueError) as exc:
        return f"state-sync snapshot {height} does not verify: {exc}"
    meta = {k: base[k] for k in base if k != "manifest_hash"}
    replay_store.restore_snapshot({**meta, "state_sync_base": base}, state)
    return None


def _run(node: Store, replay_store: Store, rep: VerifyReport, snaps: Path) -> None:
    try:
        genesis_hex = node.meta("genesis")
    except sqlite3.DatabaseError as exc:
        return _fail(rep, None, f"metadata unreadable: {exc}")
    if genesis_hex is None:
        return _fail(rep, None, "no genesis in this database")
    genesis = bytes.fromhex(genesis_hex)
    app = LedgerApp(replay_store)
    app.init_chain(genesis)
    chain_id = app.chain_id
    prev_hash, prev_time = genesis_hash(genesis), app.last_time_ms
    base = node.meta("state_sync_base")
    if base is not None:
        problem = _restore_base(node, replay_store, snaps, base)
        if problem is not None:
            return _fail(rep, int(base["height"]), problem)
        app = LedgerApp(replay_store)
        rep.base_height = rep.height = app.height
        prev_hash, prev_time = bytes.fromhex(base["last_block_hash"]), app.last_time_ms
    try:
        top = node.height()
    except sqlite3.DatabaseError as exc:
        return _fail(rep, None, f"metadata unreadable: {exc}")
    for h in range(rep.base_height + 1, top + 1):
        problem = _check_height(node, replay_store, app, h, chain_id, prev_hash, prev_time, rep)
        if problem is not None:
            return _fail(rep, h, problem)
        sb = replay_store.get_block(h, writer=True)
        if sb is None:
            return _fail(rep, h, "block not stored after replay")
        prev_hash, prev_time = sb.hash, app.last_time_ms
        rep.height, rep.blocks = h, rep.blocks + 1
    try:
        stored_root = bytes.fromhex(node.meta("app_hash"))
        tree = StateTree()
        for k, v in node.state_items(writer=False):
            tree.set(bytes(k), bytes(v))
        disk_root = tree.root()
    except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
        return _fail(rep, top, f"state unreadable: {exc}")
    if stored_root != app.app_hash:
        return _fail(rep, top, "stored state root differs from re-execution")
    if disk_root != app.app_hash:
        return _fail(rep, top, "state table differs from re-execution of the chain")
    rep.ok = True


def _check_height(
    node: Store,
    replay: Store,
    app: LedgerApp,
    h: int,
    chain_id: str,
    prev_hash: bytes,
    prev_time: int,
    rep: VerifyReport,
) -> str | None:
    try:
        sb = node.get_block(h)
        if sb is None:
            return "block missing"
        block = sb.block()
        commit = sb.commit()
    except (BlockError, sqlite3.DatabaseError, ValueError) as exc:
        return f"block does not decode: {exc}"
    hd = block.header
    if block.hash() != sb.hash:
        return "stored block hash is not the hash of its header"
    if hd.version != HEADER_VERSION:
        return f"unknown header version {hd.version}"
    if hd.height != h or hd.chain_id != chain_id:
        return f"header says chain {hd.chain_id!r} height {hd.height}"
    if hd.prev_block_hash != prev_hash:
        return "prev_block_hash does not link to the previous block"
    if hd.time_ms <= prev_time:
        return "block time does not increase"
    body = block.check_body(app.classify_tx)
    if body is not None:
        return body
    if hd.app_hash != app.app_hash:
        return "app_hash differs from the state root re-computed after the previous block"
    if hd.last_results_hash != app.last_results_hash:
        return "last_results_hash differs from the re-computed results of the previous block"
    validators = app.validators_for(h)
    if hd.validators_hash != validator_set_hash(validators):
        return "validators_hash is not the validator set of this height"
    if hd.next_validators_hash != validator_set_hash(app.validators_for(h + 1)):
        return "next_validators_hash is not the validator set of the next height"
    if hd.proposer not in {v.pub_key for v in validators}:
        return "proposer is not a validator"
    bad_commit = commit.check(chain_id, validators, sb.hash, h)
    if bad_commit is not None:
        return bad_commit
    info = ProposalInfo(h, hd.time_ms, hd.proposer, hd.prev_block_hash)
    problem = app.proposal_problem(list(block.txs), info)
    if problem is not None:
        return f"invalid block content: {problem}"
    result = app.finalize_block(list(block.txs), info)
    replay.stage_block(block, commit)
    app.commit()
    for i, (raw, r) in enumerate(zip(block.txs, result.tx_results, strict=True)):
        try:
            rec = node.get_tx(tx_id(raw))
        except (sqlite3.DatabaseError, ValueError) as exc:
            return f"tx {i} result unreadable: {exc}"
        if rec is None or rec.height != h or rec.index != i:
            return f"tx {i} is not indexed at this height"
        if (rec.code, rec.log) != (r.code, r.log):
            return f"tx {i}: recorded result ({rec.code}) differs from re-execution ({r.code})"
    rep.txs += len(block.txs)
    return None
