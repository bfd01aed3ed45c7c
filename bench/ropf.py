"""R-OPF benchmark: time and optimality gap of every solver, against pandapower's OPF in the run.

For microgrid9 (seed 000 CASE 1, reactive injections of the DGs) and ieee9 (MATPOWER case9,
generator voltage set-points, slack at 1.0 pu), pandapower's ``runopp`` (interior point, PIPS)
minimizes the slack's active power with every other injection fixed — the same problem. The
exact solver's gap is measured against it; the population solvers' gaps against the exact one
(median and worst over seeds). The project's budgets on microgrid9: exact ≤ 0.1 s, GSO/SBDE
≤ 0.5 s within 0.1 % of the exact optimum; seed 000 reports 48 s for GSO in Matlab.

Large grids (``--large``, on by default): MATPOWER case300 (generator voltages) and SimBench
1-MVLV-rural-all-0-sw (5,483 buses; its 581 PV units as inverters rated 1.1 × their sn_mva,
reactive control; the external grid's Q free). It is the smallest SimBench MV or MV+LV grid with
at least 1,000 buses: the MV grids have 97–144 buses, the MV+LV grids with one LV type 111–254,
and the four "all" MV+LV grids 5,479 (rural), 6,206 (comm), 9,099 (semiurb) and 10,458 (urban),
as ``simbench.get_simbench_net`` loads them. The exact solver runs IPOPT on sparse matrices there
(:mod:`gridledger.grid.ropf.sparse`); pandapower's ``runopp`` runs on the same problem in a child
process with a time limit and is reported only when it converges. Each timed run is the whole
call the DSO makes per certification: compile the network, build the problem, solve (with its
power flows before and after). Wall time is the median of ``--repeat-large`` runs with the
range; CPU time (``time.process_time``) is given too because the machine is shared.

Prints a table, writes the ``ropf`` and ``ropf-large`` sections of docs/benchmarks.md, and ends
with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.loaders import from_pandapower
from gridledger.grid.network import GEN_COLUMNS, Network, table, validate
from gridledger.grid.ropf import RopfProblem, solve_ropf
from gridledger.grid.ropf.reference import pandapower_min_loss

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SEED000_GSO_SECONDS = 48.0
CASES = {"microgrid9": "q", "ieee9": "vm"}
SEARCHES = ("gso", "sbde", "de")
SIMBENCH_CODE = "1-MVLV-rural-all-0-sw"
INVERTER_OVERSIZE = 1.1  # inverter rating / the PV unit's sn_mva: the reactive headroom at full P
RUNOPP_TIMEOUT_S = 180.0


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


# ---- large grids --------------------------------------------------------------------------


def simbench_pandapower():
    """The SimBench grid as a pandapower OPF of the same problem: the PV units' P pinned, their Q
    free within the inverter circle, cost only on the external grid's P (1000/MW, as in
    :mod:`gridledger.grid.ropf.reference`)."""
    import pandapower as pp
    import simbench

    net = simbench.get_simbench_net(SIMBENCH_CODE)
    sg = net.sgen
    cap = np.sqrt(np.maximum((INVERTER_OVERSIZE * sg.sn_mva) ** 2 - sg.p_mw**2, 0.0))
    sg["controllable"] = True
    sg["min_p_mw"], sg["max_p_mw"] = sg.p_mw, sg.p_mw
    sg["min_q_mvar"], sg["max_q_mvar"] = -cap, cap
    eg = net.ext_grid
    eg["controllable"] = True
    eg["min_q_mvar"], eg["max_q_mvar"] = -1e3, 1e3
    eg["min_p_mw"], eg["max_p_mw"] = -1e4, 1e4
    for tab in ("load", "storage", "gen"):
        if len(net[tab]):
            net[tab]["controllable"] = False
    net.poly_cost.drop(net.poly_cost.index, inplace=True)
    pp.create_poly_cost(net, eg.index[0], "ext_grid", cp1_eur_per_mw=1000.0)
    for i in sg.index:
        pp.create_poly_cost(net, i, "sgen", cp1_eur_per_mw=0.0)
    return net


def simbench_network() -> Network:
    """Our network of the same grid: each PV unit a ``regulator`` (an inverter) at its P."""
    pnet = simbench_pandapower()
    sg = pnet.sgen[pnet.sgen.in_service].copy()
    pnet.sgen.drop(pnet.sgen.index, inplace=True)
    net = from_pandapower(pnet, name=SIMBENCH_CODE)
    rating = INVERTER_OVERSIZE * sg.sn_mva
    rows = [
        {"name": f"PV{i}", "bus": int(r.bus), "role": "regulator", "p_mw": float(r.p_mw),
         "q_mvar": 0.0, "vm_pu": 1.0, "sn_mva": float(s), "pmin_mw": float(r.p_mw),
         "pmax_mw": float(r.p_mw), "qmin_mvar": -float(s), "qmax_mvar": float(s),
         "slack_weight": 0.0}
        for (i, r), s in zip(sg.iterrows(), rating, strict=True)
    ]  # fmt: skip
    gen = pd.concat([net.gen, table(rows, GEN_COLUMNS)], ignore_index=True)
    slack = gen.role == "slack"
    gen.loc[slack, ["qmin_mvar", "qmax_mvar", "sn_mva"]] = [-1e3, 1e3, 1e4]  # the HV grid
    return validate(net.with_tables(gen=gen))


def case300_pandapower():
    """pandapower's case300 as the R-OPF: cost on the slack's P, generators' P pinned."""
    import pandapower as pp
    import pandapower.networks as pn

    net = pn.case300()
    net.poly_cost.drop(net.poly_cost.index, inplace=True)
    pp.create_poly_cost(net, net.ext_grid.index[0], "ext_grid", cp1_eur_per_mw=1000.0)
    net.gen["min_p_mw"], net.gen["max_p_mw"] = net.gen.p_mw, net.gen.p_mw
    return net


def _runopp_child(which: str, out) -> None:
    import pandapower as pp

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    net = case300_pandapower() if which == "case300" else simbench_pandapower()
    t0 = time.perf_counter()
    try:
        pp.runopp(net, calculate_voltage_angles=True)
        ok = bool(net.OPF_converged)
    except Exception:  # pandapower raises OPFNotConverged (and others) on failure
        ok = False
    seconds = time.perf_counter() - t0
    loss = float(net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum()) if ok else None
    out.put((ok, seconds, loss))


def runopp(which: str, timeout_s: float) -> dict:
    """pandapower's OPF in a child process; (converged, seconds, losses) or a timeout."""
    queue = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(target=_runopp_child, args=(which, queue))
    child.start()
    child.join(timeout_s)
    if child.is_alive():
        child.terminate()
        child.join()
        return {"converged": False, "seconds": timeout_s, "loss_mw": None, "timed_out": True}
    ok, seconds, loss = queue.get()
    return {"converged": ok, "seconds": seconds, "loss_mw": loss, "timed_out": False}


def bench_large(which: str, repeat: int, timeout_s: float) -> dict:
    net = load_case("pandapower:case300") if which == "case300" else simbench_network()
    control = "vm" if which == "case300" else "q"
    walls, cpus, res, problem = [], [], None, None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        problem = RopfProblem(compile_network(net), control)
        res = solve_ropf(problem, "exact")
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    pp_run = runopp(which, timeout_s)
    kinds = sorted({v.kind for v in res.violations})
    return {
        "buses": problem.compiled.n_bus,
        "variables": problem.dim,
        "exact_s": statistics.median(walls),
        "exact_s_min": min(walls),
        "exact_s_max": max(walls),
        "exact_cpu_s": statistics.median(cpus),
        "exact_iterations": res.iterations,
        "loss_before_mw": res.loss_before_pu * problem.compiled.base_mva,
        "loss_after_mw": res.loss_after_pu * problem.compiled.base_mva,
        "feasible": res.feasible,
        "violated": kinds,
        "runopp_converged": pp_run["converged"],
        "runopp_s": pp_run["seconds"] if pp_run["converged"] else None,
        "runopp_attempt_s": pp_run["seconds"],
        "runopp_timed_out": pp_run["timed_out"],
        "runopp_loss_mw": pp_run["loss_mw"],
    }


def write_docs_large(large: dict, load_average: float, timeout_s: float) -> None:
    lines = [
        "<!-- ropf-large:start -->",
        "### ropf on large grids (`bench/ropf.py`)",
        "",
        "Exact R-OPF by IPOPT on sparse matrices (`gridledger.grid.ropf.sparse`); each run "
        "is the whole call: compile the network, build the problem, solve. Wall time "
        "median and range over the runs, CPU time of the process, and pandapower `runopp` on "
        f"the same problem in the same run (a child process, stopped after {timeout_s:.0f}"
        f" s). Load average during the run: {load_average:.1f} on 2 cores.",
        "",
        "| grid | buses | variables | exact s (range) | exact CPU s | iterations | loss MW "
        "before → after | feasible | runopp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in large.items():
        if f["runopp_converged"]:
            pp_text = f"{f['runopp_s']:.2f} s, {f['runopp_loss_mw']:.4f} MW"
        elif f["runopp_timed_out"]:
            pp_text = f"no answer within {f['runopp_attempt_s']:.0f} s"
        else:
            pp_text = f"did not converge ({f['runopp_attempt_s']:.1f} s)"
        feasible = "yes" if f["feasible"] else "no: " + ", ".join(f["violated"])
        grid = f"SimBench {SIMBENCH_CODE}, PV inverters" if name == "simbench" else name
        lines.append(
            f"| {grid} | {f['buses']} | {f['variables']} | {f['exact_s']:.2f} "
            f"({f['exact_s_min']:.2f}–{f['exact_s_max']:.2f}) | {f['exact_cpu_s']:.2f} | "
            f"{f['exact_iterations']} | {f['loss_before_mw']:.4f} → {f['loss_after_mw']:.4f} | "
            f"{feasible} | {pp_text} |"
        )
    lines.append("<!-- ropf-large:end -->")
    text = DOCS.read_text()
    block = "\n".join(lines)
    if "<!-- ropf-large:start -->" in text:
        start = text.index("<!-- ropf-large:start -->")
        end = text.index("<!-- ropf-large:end -->") + len("<!-- ropf-large:end -->")
        text = text[:start] + block + text[end:]
    else:
        at = text.index("<!-- ropf:end -->") + len("<!-- ropf:end -->")
        text = text[:at] + "\n\n" + block + text[at:]
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--repeat-large", type=int, default=3)
    ap.add_argument("--runopp-timeout", type=float, default=RUNOPP_TIMEOUT_S)
    ap.add_argument("--no-large", action="store_true", help="skip case300 and SimBench")
    ap.add_argument("--large-only", action="store_true", help="only case300 and SimBench")
    args = ap.parse_args(argv)
    np.seterr(all="ignore")
    warnings.filterwarnings("ignore")
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    large = {}
    if not args.no_large:
        for which in ("case300", "simbench"):
            large[which] = bench_large(which, args.repeat_large, args.runopp_timeout)
            f = large[which]
            print(f"{which} ({f['buses']} buses): exact {f['exact_s']:.2f} s "
                  f"[{f['exact_s_min']:.2f}, {f['exact_s_max']:.2f}] CPU {f['exact_cpu_s']:.2f} s, "
                  f"{f['exact_iterations']} it, loss {f['loss_before_mw']:.4f} -> "
                  f"{f['loss_after_mw']:.4f} MW, feasible {f['feasible']}; runopp "
                  f"{'converged' if f['runopp_converged'] else 'failed'} "
                  f"in {f['runopp_attempt_s']:.1f} s", flush=True)  # fmt: skip
    large_fields = {
        "case300_exact_s": large["case300"]["exact_s"] if large else None,
        "case300_exact_cpu_s": large["case300"]["exact_cpu_s"] if large else None,
        "case300_runopp_s": large["case300"]["runopp_s"] if large else None,
        "simbench_code": SIMBENCH_CODE,
        "simbench_buses": large["simbench"]["buses"] if large else None,
        "simbench_exact_s": large["simbench"]["exact_s"] if large else None,
        "simbench_exact_cpu_s": large["simbench"]["exact_cpu_s"] if large else None,
        "simbench_runopp_s": large["simbench"]["runopp_s"] if large else None,
        "large": large,
    }
    if args.large_only:
        if not args.no_docs:
            write_docs_large(large, os.getloadavg()[0], args.runopp_timeout)
        print(json.dumps({"bench": "ropf", "load_average": os.getloadavg()[0], **large_fields}))
        return 0
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
        if large:
            write_docs_large(large, figures["load_average"], args.runopp_timeout)
    print(json.dumps({"bench": "ropf", **figures, **large_fields}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
