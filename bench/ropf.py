"""R-OPF benchmark: time and optimality gap of every solver, against pandapower's OPF in the run.

For microgrid9 (seed 000 CASE 1, reactive injections of the DGs) and ieee9 (MATPOWER case9,
generator voltage set-points, slack at 1.0 pu), pandapower's ``runopp`` (interior point, PIPS)
minimizes the slack's active power with every other injection fixed — the same problem. The
exact solver's gap is measured against it; the population solvers' gaps against the exact one
(median and worst over seeds). Budgets (DESIGN.md): exact ≤ 0.1 s, GSO/SBDE ≤ 0.5 s within
0.1 % of the exact optimum; seed 000 reports 48 s for GSO in Matlab.

Prints a table, writes the ``ropf`` section of docs/benchmarks.md, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.ropf import RopfProblem, solve_ropf
from gridledger.grid.ropf.reference import pandapower_min_loss

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SEED000_GSO_SECONDS = 48.0
CASES = {"microgrid9": "q", "ieee9": "vm"}
SEARCHES = ("gso", "sbde", "de")


def timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_case(name: str, control: str, seeds: int, repeat: int) -> dict:
    net = load_case(name)
    pp_s, (pp_loss, _) = timed(lambda: pandapower_min_loss(net, control), repeat)
    problem = RopfProblem(compile_network(net), control)
    ex_s, ex = timed(lambda: solve_ropf(problem, "exact"), repeat)
    ex_loss = ex.loss_after_pu * net.base_mva
    out = {
        "loss_before_mw": ex.loss_before_pu * net.base_mva,
        "pandapower_s": pp_s,
        "pandapower_loss_mw": pp_loss,
        "exact_s": ex_s,
        "exact_loss_mw": ex_loss,
        "exact_gap_vs_pandapower_pct": (ex_loss / pp_loss - 1) * 100,
        "exact_evaluations": ex.evaluations,
    }
    for method in SEARCHES:
        gaps, secs, evals = [], [], []
        for seed in range(seeds):
            r = solve_ropf(problem, method, rng=seed)
            gaps.append((r.loss_after_pu / ex.loss_after_pu - 1) * 100)
            secs.append(r.seconds)
            evals.append(r.evaluations)
        out[f"{method}_s"] = statistics.median(secs)
        out[f"{method}_gap_median_pct"] = statistics.median(gaps)
        out[f"{method}_gap_max_pct"] = max(gaps)
        out[f"{method}_evaluations"] = int(statistics.median(evals))
    return out


def write_docs(figures: dict, seeds: int) -> None:
    lines = [
        "<!-- ropf:start -->",
        "## ropf — reactive OPF (`bench/ropf.py`)",
        "",
        f"Median wall time per solve; gaps of the searches are against `exact`, median and worst "
        f"over {seeds} seeds; `exact` against pandapower `runopp` (PIPS) on the same problem in "
        "the same run. Seed 000 reports 48 s for GSO (Matlab, i5-7300U).",
        "",
        "| case | solver | seconds | loss MW | gap % (median / worst) | evaluations |",
        "|---|---|---|---|---|---|",
    ]
    for case, f in figures["cases"].items():
        lines.append(
            f"| {case} | pandapower runopp | {f['pandapower_s']:.3f} | "
            f"{f['pandapower_loss_mw']:.6f} | reference | – |"
        )
        lines.append(
            f"| {case} | exact (SLSQP) | {f['exact_s']:.3f} | {f['exact_loss_mw']:.6f} | "
            f"{f['exact_gap_vs_pandapower_pct']:+.2e} vs pandapower | {f['exact_evaluations']} |"
        )
        for m in SEARCHES:
            lines.append(
                f"| {case} | {m} | {f[f'{m}_s']:.3f} | – | {f[f'{m}_gap_median_pct']:.1e} / "
                f"{f[f'{m}_gap_max_pct']:.1e} | {f[f'{m}_evaluations']} |"
            )
    lines += [
        "",
        "Losses before R-OPF: microgrid9 "
        f"{figures['cases']['microgrid9']['loss_before_mw']:.6f} MW, ieee9 "
        f"{figures['cases']['ieee9']['loss_before_mw']:.4f} MW. "
        f"Speed-up of SBDE over seed 000's 48 s: {figures['sbde_speedup_vs_seed000']:.0f}×; "
        f"exact over pandapower runopp on microgrid9: "
        f"{figures['exact_vs_pandapower_speedup_microgrid9']:.0f}×. "
        f"Load average during the run: {figures['load_average']:.1f} on 2 cores (the machine is "
        "shared; absolute times scale with it, the ratios much less). "
        f"Budgets (exact ≤ 0.1 s, GSO/SBDE ≤ 0.5 s and ≤ 0.1 % gap) met in this run: "
        f"{'yes' if figures['budgets_met'] else 'no'}.",
        "<!-- ropf:end -->",
    ]
    text = DOCS.read_text()
    start, end = text.index("<!-- ropf:start -->"), text.index("<!-- ropf:end -->")
    DOCS.write_text(text[:start] + "\n".join(lines) + text[end + len("<!-- ropf:end -->") :])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)
    np.seterr(all="ignore")
    cases = {name: bench_case(name, ctl, args.seeds, args.repeat) for name, ctl in CASES.items()}
    mg = cases["microgrid9"]
    figures = {
        "load_average": os.getloadavg()[0],
        "cases": cases,
        "exact_vs_pandapower_speedup_microgrid9": mg["pandapower_s"] / mg["exact_s"],
        "sbde_speedup_vs_seed000": SEED000_GSO_SECONDS / mg["sbde_s"],
        "gso_speedup_vs_seed000": SEED000_GSO_SECONDS / mg["gso_s"],
        "budgets_met": all(
            f["exact_s"] <= 0.1
            and f["gso_s"] <= 0.5
            and f["sbde_s"] <= 0.5
            and f["gso_gap_median_pct"] < 0.1
            and f["sbde_gap_median_pct"] < 0.1
            for f in cases.values()
        ),
    }
    for case, f in cases.items():
        print(f"{case}: pandapower {f['pandapower_s']:.3f} s {f['pandapower_loss_mw']:.6f} MW; "
              f"exact {f['exact_s']:.4f} s ({f['pandapower_s'] / f['exact_s']:.1f}x faster) "
              f"gap {f['exact_gap_vs_pandapower_pct']:+.1e} %")  # fmt: skip
        for m in SEARCHES:
            print(f"  {m:<5} {f[f'{m}_s']:.3f} s  gap median {f[f'{m}_gap_median_pct']:.1e} %"
                  f"  worst {f[f'{m}_gap_max_pct']:.1e} %"
                  f"  {f[f'{m}_evaluations']} evaluations")  # fmt: skip
    if not args.no_docs:
        write_docs(figures, args.seeds)
    print(json.dumps({"bench": "ropf", **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
