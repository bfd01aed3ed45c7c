"""State sync against replay from genesis: what a new node saves by starting from a snapshot.

One run builds a solo chain (pre-signed transfers among N prosumer accounts in blocks of 1,000),
then measures, on the same machine and in the same run:
- reference: replaying the chain from genesis (``verify_chain``: re-execute every block, check
  every commit and signature), which is what a new node without state sync does;
- state sync's local work: taking the snapshot (sort, chunk, write), checking the chunks and
  rebuilding the state root from them, and restoring a fresh store and application from it.

The network transfer of the chunks is not included (the process test,
tests/consensus/test_state_sync_network.py, does it over real links). Prints the ratio of
replay time to state-sync time and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from gridledger.chain.app import LedgerApp
from gridledger.chain.consensus.solo import SoloEngine
from gridledger.chain.mempool import Mempool
from gridledger.chain.snapshot import SnapshotStore, rebuild
from gridledger.chain.store import Store
from gridledger.chain.verify import verify_chain
from ledger import CHAIN_ID, make_accounts, signed_transfers


def build_chain(tmp: Path, n_acc: int, per_account: int) -> tuple[Store, LedgerApp, bytes]:
    staff, accs, genesis = make_accounts(n_acc)
    store = Store(tmp / "chain.db", synchronous="OFF")
    app = LedgerApp(store)
    app.init_chain(genesis)
    mempool = Mempool(app)
    engine = SoloEngine(app, store, mempool, staff["validator"], max_block_txs=1000)
    txs = signed_transfers(accs, per_account)
    for i in range(0, len(txs), 1000):
        for raw in txs[i : i + 1000]:
            if not mempool.add(raw).ok:
                raise RuntimeError("a pre-signed transfer was refused")
        while len(mempool):
            engine.produce_block()
    return store, app, genesis


def one_run(n_acc: int, per_account: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="gridledger-bench-statesync-") as d:
        tmp = Path(d)
        store, app, genesis = build_chain(tmp, n_acc, per_account)
        t = time.perf_counter()
        rep = verify_chain(store.path)
        replay_s = time.perf_counter() - t
        if not rep.ok:
            raise RuntimeError(f"verify failed: {rep.problem}")

        t = time.perf_counter()
        snaps = SnapshotStore(tmp / "snapshots")
        m = snaps.take(app.height, CHAIN_ID, app.app_hash, app.snapshot_items(), {})
        take_s = time.perf_counter() - t

        t = time.perf_counter()
        chunks = snaps.chunks(m.height)
        state = rebuild(m, chunks)
        rebuild_s = time.perf_counter() - t

        t = time.perf_counter()
        fresh = Store(tmp / "restored.db", synchronous="FULL")
        LedgerApp(fresh).init_chain(genesis)
        fresh.restore_snapshot(
            {
                "app_hash": m.app_hash.hex(),
                "height": m.height,
                "last_block_hash": store.meta("last_block_hash"),
                "last_results_hash": app.last_results_hash.hex(),
                "last_time_ms": app.last_time_ms,
                "valsets_recent": {str(h): v for h, v in app._sets_after.items()},
            },
            state,
        )
        restored = LedgerApp(fresh)
        restore_s = time.perf_counter() - t
        if restored.app_hash != app.app_hash:
            raise RuntimeError("the restored app hash differs")
        sync_s = rebuild_s + restore_s
        out = {
            "accounts": n_acc,
            "blocks": app.height,
            "txs": rep.txs,
            "state_keys": len(state),
            "snapshot_bytes": sum(len(c) for c in chunks),
            "chunks": len(chunks),
            "replay_s": round(replay_s, 3),
            "snapshot_take_s": round(take_s, 3),
            "rebuild_s": round(rebuild_s, 3),
            "restore_s": round(restore_s, 3),
            "replay_over_sync": round(replay_s / sync_s, 1),
        }
        fresh.close()
        store.close()
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, default=5000)
    p.add_argument("--per-account", type=int, default=2, help="transfers per account")
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    runs = [one_run(args.accounts, args.per_account) for _ in range(args.runs)]
    for r in runs:
        print(
            f"{r['txs']} txs in {r['blocks']} blocks, {r['state_keys']} state keys "
            f"({r['snapshot_bytes'] / 1e6:.1f} MB, {r['chunks']} chunks): replay from genesis "
            f"{r['replay_s']} s; snapshot {r['snapshot_take_s']} s; state sync "
            f"{r['rebuild_s']} s rebuild + {r['restore_s']} s restore -> "
            f"{r['replay_over_sync']}x faster than replay"
        )
    ratios = [r["replay_over_sync"] for r in runs]
    print(
        json.dumps(
            {"bench": "statesync", "runs": runs, "ratio_min": min(ratios), "ratio_max": max(ratios)}
        )
    )


if __name__ == "__main__":
    main()
