"""Seed 003's VPP (10 prosumers × 7 days): what the seed's ε = 1e-6 costs against 1e-3, and
what the chain adds.

Measures in one run (the machine is shared and noisy, so the figures that matter are ratios
within the run):

1. the P2P ADMM off chain to ε = 1e-3 and to ε = 1e-6 kWh (the seed's convergence error
   ``Σ_u Σ_v ‖p'_uv − p_uv‖``): iterations per day, wall and CPU seconds, the prosumers' total
   cost and its gap to the centralized problem (cvxpy, one solve per day from the same battery
   energies), the largest trade difference between the two tolerances;
2. with ``--on-chain``, the same at ε = 1e-6 on a node process with ``--agent-processes``
   prosumer processes, every day settled: iterations, seconds, seconds per iteration against
   off chain, the utoken paid, the supply invariant; ``--plot`` draws its trading record
   (seed 003 Fig. 5).

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gridledger.grid.vpp import (  # noqa: E402
    HOURS_PER_DAY,
    dual_step,
    generate_profiles,
    solve_vpp_admm,
    solve_vpp_central_day,
)
from gridledger.market.vpp_rules import contract_step  # noqa: E402


def off_chain(profiles, eps: float, step=dual_step) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    result = solve_vpp_admm(profiles, eps_kwh=eps, max_iter=5000, step=step)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    b0 = np.array([p.battery_initial_kwh for p in profiles])
    central = 0.0
    for d in result.days:  # the central optimum of each day from the ADMM's own battery start
        central += solve_vpp_central_day(profiles, d.day, b0)
        b0 = np.clip(d.battery_end_kwh, 0, [p.battery_kwh for p in profiles])
    iters = [d.iterations for d in result.days]
    return {
        "result": result,
        "iterations_per_day": iters,
        "iterations": sum(iters),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cost_usd": round(result.cost_usd, 6),
        "gap_to_central_usd": float(f"{result.cost_usd - central:.3g}"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prosumers", type=int, default=10)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--on-chain", action="store_true")
    p.add_argument("--agent-processes", type=int, default=2)
    p.add_argument("--plot", help="the on-chain (else ε = 1e-6) trading record to this PNG")
    args = p.parse_args(argv)
    profiles = generate_profiles(args.prosumers, args.days, args.seed)
    figures: dict = {"prosumers": args.prosumers, "days": args.days, "seed": args.seed}
    runs = {}
    for eps in (1e-3, 1e-6):
        runs[eps] = off_chain(profiles, eps)
        shown = {k: v for k, v in runs[eps].items() if k != "result"}
        print(f"off chain ε = {eps:g} kWh: {shown}", flush=True)
        figures[f"off_chain_eps_{eps:g}"] = shown
    loose, tight = runs[1e-3], runs[1e-6]
    figures["iterations_ratio_1e-6_to_1e-3"] = round(tight["iterations"] / loose["iterations"], 2)
    figures["cpu_ratio_1e-6_to_1e-3"] = round(tight["cpu_s"] / loose["cpu_s"], 2)
    figures["max_trade_difference_kwh"] = float(
        f"{max(np.abs(a.trades_kwh - b.trades_kwh).max() for a, b in zip(loose['result'].days, tight['result'].days, strict=True)):.3g}"  # noqa: E501
    )
    shown_result = tight["result"]
    if args.on_chain:
        from gridledger.agents.vpp_chain import run_vpp_on_chain

        with tempfile.TemporaryDirectory(prefix="bench-vpp-") as home:
            started = time.perf_counter()
            run = run_vpp_on_chain(
                f"gen:{args.prosumers},{args.days},{args.seed}",
                Path(home),
                eps_kwh=1e-6,
                agent_processes=args.agent_processes,
            )
            total = time.perf_counter() - started
        rounds_s = sum(d.seconds for d in run.days)
        # what the chain must equal: the ADMM with the contract's integer step, off chain
        exact = off_chain(profiles, 1e-6, contract_step)
        figures["off_chain_contract_step_eps_1e-6"] = {
            k: v for k, v in exact.items() if k != "result"
        }
        figures["on_chain_eps_1e-6"] = {
            "iterations_per_day": [d.iterations for d in run.days],
            "iterations": run.iterations,
            "rounds_s": round(rounds_s, 2),
            "total_s_with_start_and_settle": round(total, 2),
            "s_per_iteration": round(rounds_s / run.iterations, 4),
            "paid_utoken": run.paid_utoken,
            "supply_invariant": run.invariants["supply_invariant"],
            "same_iterations_as_contract_step_off_chain": [d.iterations for d in run.days]
            == exact["iterations_per_day"],
            "max_trade_difference_to_it_kwh": float(
                f"{max(np.abs(a.trades_kwh - b.trades_kwh).max() for a, b in zip(run.days, exact['result'].days, strict=True)):.3g}"  # noqa: E501
            ),
        }
        figures["on_chain_to_off_chain_s_per_iteration"] = round(
            (rounds_s / run.iterations) / (tight["wall_s"] / tight["iterations"]), 2
        )
        print(f"on chain ε = 1e-6: {figures['on_chain_eps_1e-6']}", flush=True)
        shown_result = run
    if args.plot:
        from gridledger.commands.vpp import plot_trading

        plot_trading(profiles, shown_result, args.plot)
    figures["hours"] = args.days * HOURS_PER_DAY
    figures["load_avg"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
