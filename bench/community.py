"""Community at scale: N prosumers trading every 15 minutes for H hours on a SimBench MV+LV grid,
on the embedded chain (``gridledger community``'s own code, ``demo/community.py``).

Budgets (issue 13 §3): 1,000 prosumers × 96 slots in ≤ 15 min wall on 2 cores (≥ 96× real
time); the DSO's per-interval certification ≤ 2 s (p95) on a grid of ≥ 500 buses; peak memory
≤ 4 GB.  Reports the chain's size per prosumer-day and where the time goes (order posting and
matching, certification, metering and settlement, block production).  The reference measured in
the same run is the ledger's raw speed: plain token transfers through the same embedded chain.

    python bench/community.py --prosumers 100 --hours 2          # a quick check
    python bench/community.py --prosumers 1000 --hours 24        # the budget run
    python bench/community.py --prosumers 1000 --hours 2 --start-hour 10 --validators 4 \
        --speedup 15                                             # on 4 BFT validator processes

With ``--validators N`` (> 1) the chain is N validator processes on a simulated clock running
``--speedup`` times real time (docs/community.md), so the wall time cannot be shorter than the
simulated timeline divided by the speedup; peak RSS then also reports the largest validator.

Ends with ONE JSON line: prosumers, slots, wall_s, realtime_factor, dso_interval_p95_s,
peak_rss_mb and the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.community import CommunityConfig, run_community
from gridledger.demo.localchain import LocalChain

GRID = "simbench:1-MVLV-rural-all-0-sw"


def ledger_reference(home: Path, n: int = 2000) -> float:
    """Transfers committed per second through the embedded chain (mempool, block, SQLite)."""
    val, alice, bob = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    dso = KeyPair.generate()
    members = [
        {"pub_key": dso.pub_hex, "role": "dso", "name": "DSO"},
        {"pub_key": alice.pub_hex, "role": "prosumer", "name": "a", "bus": 1},
    ]
    balances = [{"account": alice.pub_hex, "denom": "utoken", "amount": 10**12}]
    genesis = make_genesis("bench-ref", 1_000, [(val.pub_hex, 1)], members, balances, [])
    chain = LocalChain(home, genesis, val, 1_000)
    t0 = time.perf_counter()
    for _ in range(n):
        chain.submit(alice, "token.transfer", {"to": bob.pub_hex, "denom": "utoken", "amount": 1})
    while len(chain.mempool):
        chain.produce(chain.now_ms + 1000)
    dt = time.perf_counter() - t0
    chain.close()
    return n / dt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default=GRID)
    p.add_argument("--prosumers", type=int, default=1000)
    p.add_argument("--hours", type=float, default=24)
    p.add_argument("--start-hour", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validators", type=int, default=1)
    p.add_argument("--speedup", type=float, default=20.0)
    args = p.parse_args(argv)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-community-") as tmp:
        ref_tps = ledger_reference(Path(tmp) / "ref")
        cfg = CommunityConfig(
            args.grid,
            args.prosumers,
            args.hours,
            validators=args.validators,
            seed=args.seed,
            start_hour=args.start_hour,
            speedup=args.speedup,
        )
        r = run_community(cfg, Path(tmp) / "community", lambda m: print(m, flush=True))
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = cpu.ru_maxrss / 1024
    # the validators' own peak (VmHWM, read before they stop): the children's rusage would
    # count the memory each inherited at fork
    children_peak_mb = r.get("validators", {}).get("peak_rss_mb", 0.0)
    intervals = r["dso_interval_s"]
    p95 = float(np.percentile(intervals, 95)) if intervals else None
    txs = r["invariant_details"]["verify"]["txs"]
    matches = r["invariant_details"]["matches"]
    budget_wall = 900 * cfg.slots / 96
    print()
    print(f"grid {r['grid']}: {r['buses']} buses; {r['prosumers']} prosumers x {r['slots']} slots")
    print(
        f"wall {r['wall_s']:.1f} s = {r['realtime_factor']:.1f}x real time (budget >= 96x, "
        f"i.e. <= {budget_wall:.0f} s for {cfg.slots} slots); load average at start {load0:.1f}"
    )
    print(
        f"transactions {txs} ({txs / r['wall_s']:.0f}/s; the ledger alone, same run: "
        f"{ref_tps:.0f} transfers/s, ratio {txs / r['wall_s'] / ref_tps:.2f}); matches {matches}"
    )
    if p95 is not None:
        print(
            f"DSO per-interval certification: {len(intervals)} intervals, p50 "
            f"{np.percentile(intervals, 50):.2f} s, p95 {p95:.2f} s, max {max(intervals):.2f} s "
            "(budget p95 <= 2 s)"
        )
    # the embedded chain's consensus is the solo engine: "blocks" is block production, every
    # transaction's execution and the SQLite commit (docs/community.md)
    labels = {
        "orders_matching": "orders + matching",
        "certification": "DSO certification",
        "metering_settlement": "metering + settlement posting",
        "blocks": "consensus (blocks: execution + commit)",
        "report": "invariants + verify",
    }
    print(
        "where the time goes (s): "
        + ", ".join(f"{labels.get(k, k)} {v:.1f}" for k, v in r["time_s"].items())
    )
    print(f"CPU time of the process {cpu.ru_utime + cpu.ru_stime:.0f} s")
    print(
        f"chain {r['chain_bytes'] / 1e6:.1f} MB = {r['chain_bytes_per_prosumer_day'] / 1e3:.1f} "
        f"kB per prosumer-day; peak RSS {peak_mb:.0f} MB (budget 4096)"
    )
    if "validators" in r:
        v = r["validators"]
        print(
            f"{v['count']} BFT validators at {v['speedup']:g}x simulated time: height "
            f"{v['height']}, same app hash on all: {v['same_app_hash']}; largest validator "
            f"process {children_peak_mb:.0f} MB"
        )
    print("invariants: " + ", ".join(f"{k}={v}" for k, v in r["invariants"].items()))
    out = {
        "prosumers": r["prosumers"],
        "slots": r["slots"],
        "buses": r["buses"],
        "wall_s": r["wall_s"],
        "realtime_factor": r["realtime_factor"],
        "dso_interval_p95_s": None if p95 is None else round(p95, 3),
        "dso_intervals": len(intervals),
        "peak_rss_mb": round(peak_mb),
        "txs": txs,
        "matches": matches,
        "ledger_ref_tps": round(ref_tps),
        "tx_rate_vs_ledger_ref": round(txs / r["wall_s"] / ref_tps, 3),
        "chain_bytes_per_prosumer_day": r["chain_bytes_per_prosumer_day"],
        "time_s": r["time_s"],
        "cpu_s": round(cpu.ru_utime + cpu.ru_stime, 1),
        "load_avg_start": round(load0, 1),
        "invariants_ok": all(r["invariants"].values()),
        "validators": r.get("validators", {}).get("count", 1),
        "speedup": r.get("validators", {}).get("speedup"),
        "tx_per_s": round(txs / r["wall_s"], 1),
        "validator_peak_rss_mb": round(children_peak_mb) if "validators" in r else None,
        "orders_refused": sum(sum(s["orders_refused"].values()) for s in r["per_slot"]),
        "trades": sum(s["trades"] for s in r["per_slot"]),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
