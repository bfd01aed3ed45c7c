"""Transformer taps as R-OPF controls: what the tap search saves and what it costs.

Reference measured in the same run: one exact R-OPF with the taps fixed (the work without tap
controls).  Rows (exact R-OPF, generator voltages; seed 002's three taps on ieee9's generator
transformers): ``ieee9-taps`` (±8 × 1.25 %); ``ieee9-q200-taps`` with the SVC at bus 9
(−100…300 Mvar), slack at 1.0 pu and with the slack's voltage free too (seed 002's seven
controls); ``ieee9-q200`` with ±2 × 5 % taps and no SVC, where the exhaustive scan of all 125
tap vectors is run too.  For each: losses with the taps fixed and moving, the positions, the
R-OPF solves from the relaxed start and from the current positions, and the search's wall
time as a multiple of the reference's (median and range over ``--repeat`` runs; the machine is
shared).  Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.ropf import RopfOptions, RopfProblem, solve_ropf
from gridledger.grid.ropf.tap_search import solve_ropf_with_taps
from gridledger.grid.taps import with_tap_changers
from gridledger.market.certificate import with_svcs
from gridledger.market.svc_pricing import svc_rows


def _cases() -> list[tuple[str, object, RopfOptions]]:
    q200 = load_case("ieee9-q200-taps")
    svc = with_svcs(q200, svc_rows(q200, ["9:-100:300"]))
    small = with_tap_changers(
        load_case("ieee9-q200"), ["1-4", "8-2", "3-6"], tap_min=-2, tap_max=2, step_percent=5.0
    )
    return [
        ("ieee9-taps", load_case("ieee9-taps"), RopfOptions()),
        ("ieee9-q200-taps + SVC", svc, RopfOptions()),
        ("ieee9-q200-taps + SVC, slack vm free", svc, RopfOptions(slack_vm_free=True)),
        ("ieee9-q200 ±2 × 5 %", small, RopfOptions()),
    ]


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows, figures = [], {}
    for name, net, options in _cases():
        ref_s, relaxed_s, current_s = [], [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            solve_ropf(RopfProblem(compile_network(net), "vm", options), "exact")
            ref_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            relaxed = solve_ropf_with_taps(net, "vm", options=options)
            relaxed_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            current = solve_ropf_with_taps(net, "vm", options=options, relax=False)
            current_s.append(time.perf_counter() - t0)
        scan = None
        if name.startswith("ieee9-q200 ±2"):
            scan = solve_ropf_with_taps(net, "vm", options=options, search="exhaustive")
        base = net.base_mva
        fixed = relaxed.fixed
        ref = statistics.median(ref_s)
        row = {
            "fixed_mw": round(fixed.loss_after_pu * base, 4),
            "fixed_feasible": fixed.feasible,
            "moving_mw": round(relaxed.result.loss_after_pu * base, 4),
            "moving_feasible": relaxed.result.feasible,
            "positions": list(relaxed.positions.values()),
            "solves_relaxed": relaxed.evaluations,
            "solves_current": current.evaluations,
            "same_loss_both_starts": abs(
                relaxed.result.loss_after_pu - current.result.loss_after_pu
            )
            <= 1e-9 * current.result.loss_after_pu,
            "one_ropf_s": round(ref, 3),
            "relaxed_over_one_ropf": round(statistics.median(relaxed_s) / ref, 1),
            "current_over_one_ropf": round(statistics.median(current_s) / ref, 1),
        }
        if scan is not None:
            row["scan_solves"] = scan.evaluations
            row["scan_mw"] = round(scan.result.loss_after_pu * base, 4)
        figures[name] = row
        rows.append(
            f"| {name} | {row['fixed_mw']:.4f}{'' if fixed.feasible else ' (infeasible)'} | "
            f"{row['moving_mw']:.4f}{'' if relaxed.result.feasible else ' (infeasible)'} | "
            f"{', '.join(f'{p:+d}' for p in row['positions'])} | "
            f"{row['solves_relaxed']} / {row['solves_current']}"
            f"{f' (scan {scan.evaluations})' if scan else ''} | {ref:.3f} | "
            f"{_spread([s / ref for s in relaxed_s])} / {_spread([s / ref for s in current_s])} |"
        )
    print(f"load average {load:.1f} on {os.cpu_count()} cores; {args.repeat} runs")
    print(
        "| case | taps fixed MW | taps moving MW | positions 1-4, 8-2, 3-6 | R-OPF solves "
        "relaxed / current start | one R-OPF s | search time × one R-OPF, relaxed / current |"
    )
    print("|---|---|---|---|---|---|---|")  # fmt: skip
    print("\n".join(rows))
    print(json.dumps({"bench": "taps", "load_average": round(load, 1), "cases": figures}))


if __name__ == "__main__":
    main()
