"""``gridledger schedule CASE``: day-ahead DER scheduling (seed 001), centralized or by ADMM,
off chain or with the aggregator as a contract; ``gridledger vpp``: seed 003's P2P VPP."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from gridledger.cli import CliError

RELAXATION_EXACT_TOL = 1e-3  # relative |ℓ·v − P² − Q²| (see grid.distflow.relaxation_gap)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schedule", help="day-ahead DER schedule of a feeder (DistFlow + ADMM)")
    p.add_argument("case", help="sce56 | case33bw (case[:k]: its first k nodes)")
    p.add_argument("--method", choices=["central", "admm"], default="admm")
    p.add_argument("--on-chain", action="store_true", help="aggregator as a contract (S1)")
    p.add_argument("--validators", type=int, default=1, help="1: solo node; N > 1: BFT testnet")
    p.add_argument("--agent-processes", type=int, default=2)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--rho", type=float, default=None)
    p.add_argument(
        "--clusters",
        type=int,
        default=0,
        help="agents for K connected groups of nodes instead of one per node (ρ = 10 default)",
    )
    p.add_argument("--home", help="keep the chain here (default: a temporary directory)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_schedule)

    a = sub.add_parser(
        "schedule-audit", help="re-run every ADMM round from a node's blocks and compare"
    )
    a.add_argument("db", help="a node's chain.db (HOME/data/chain.db)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(handler=_audit)

    v = sub.add_parser("vpp", help="seed 003's virtual power plant: P2P trading by ADMM")
    v.add_argument("--prosumers", type=int, default=10)
    v.add_argument("--days", type=int, default=7)
    v.add_argument("--seed", type=int, default=3)
    v.add_argument("--profiles", help="CSV: prosumer,hour,solar_kw,wind_kw,inflexible_kw,...")
    v.add_argument("--plot", help="write the trading record of every prosumer to this PNG")
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=_vpp)


def _dispatch_stats(feeder: Any, p_mw: Any, ran: Any) -> dict[str, Any]:
    from gridledger.grid.dispatch import marginal_prices_usd_per_mwh

    prices = None
    if feeder.ders[0].generator is not None:
        prices = _dlmp_stats(marginal_prices_usd_per_mwh(feeder, p_mw, ran))
    return {
        "marginal_price": prices,
        "feasible": bool(ran.feasible),
        "voltage_violation_pu": float(ran.voltage_violation_pu),
        "generator_violation_mw": float(ran.generator_violation_mw),
        "root_vm_pu": {
            "min": round(float(ran.root_vm_pu.min()), 6),
            "max": round(float(ran.root_vm_pu.max()), 6),
        },
        "max_slack_mismatch_mw": float(abs(ran.slack_mismatch_mw).max()),
        "loss_mwh": round(float(ran.loss_mw.sum()), 6),
    }


def _dlmp_stats(dlmp) -> dict[str, float]:
    return {
        "min": round(float(dlmp.min()), 4),
        "max": round(float(dlmp.max()), 4),
        "root": round(float(dlmp[0].mean()), 4),
    }


def run_schedule(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from gridledger.grid.der import DerSpecError
    from gridledger.grid.dispatch import DispatchError, dispatch
    from gridledger.grid.distflow import ScheduleError, solve_central
    from gridledger.grid.feeders import FeederError, load_feeder

    if args.validators < 1:
        raise CliError("--validators must be at least 1")
    if args.on_chain and args.method != "admm":
        raise CliError("--on-chain runs ADMM's aggregator on chain; use --method admm")
    if args.validators > 1 and not args.on_chain:
        raise CliError("--validators needs --on-chain")
    try:
        feeder = load_feeder(args.case)
    except (FeederError, DerSpecError) as exc:
        raise CliError(str(exc)) from exc
    try:
        central = solve_central(feeder)
    except ScheduleError as exc:
        raise CliError(str(exc)) from exc
    exact = central.relaxation_gap <= RELAXATION_EXACT_TOL
    out: dict[str, Any] = {
        "case": args.case,
        "method": args.method,
        "on_chain": bool(args.on_chain),
        "validators": args.validators if args.on_chain else 0,
        "objective": round(central.objective_usd, 6),
        "iterations": 0,
        "gap_pct": 0.0,
        "primal_residual": 0.0,
        "dual_residual": 0.0,
        "seconds": round(central.seconds, 3),
        "relaxation_exact": bool(exact),
        "relaxation_gap": central.relaxation_gap,
        "dlmp": _dlmp_stats(central.dlmp_usd_per_mwh),
        "admm_objective": None,
        "admm_gap_pct": None,
        "central_objective": round(central.objective_usd, 6),
        "central_seconds": round(central.seconds, 3),
    }
    if args.method == "central":
        # the optimum run through the AC power flow: the check that the relaxation is exact
        ran = dispatch(
            feeder,
            central.p_mw,
            central.model.generation_mw()[0],
            central.objective_usd,
            central.v_pu2[0],
        )
        out["dispatch"] = _dispatch_stats(feeder, central.p_mw, ran)
        return out
    from gridledger.grid.admm import default_options

    options = default_options(args.max_iter, args.rho, clusters=args.clusters)
    if args.on_chain:
        from gridledger.agents.admm_chain import (
            OnChainError,
            evaluate_chain_schedule,
            run_on_chain,
        )
        from gridledger.agents.der_agent import W_PER_PU
        from gridledger.market.aggregation import SCALE

        home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="gridledger-admm-"))
        try:
            run = run_on_chain(feeder, options, home, args.validators, args.agent_processes)
        except OnChainError as exc:
            raise CliError(str(exc)) from exc
        if run.schedule is None:
            raise CliError(f"round ended {run.status} without a schedule: {run.state}")
        p_sched = np.array(run.schedule["p_w"], dtype=float) / W_PER_PU
        try:
            admm_objective, ran = evaluate_chain_schedule(feeder, run.schedule)
        except (OnChainError, DispatchError) as exc:
            raise CliError(str(exc)) from exc
        dlmp = np.array(run.schedule["dlmp_utoken_per_kwh"]) / 1000.0
        last = run.state["history"][-1]
        out.update(
            admm_objective=round(admm_objective, 6),
            iterations=run.iterations,
            primal_residual=last[1] / SCALE,
            dual_residual=last[2] / SCALE,
            seconds=round(run.seconds, 3),
            dlmp=_dlmp_stats(dlmp),
            status=run.status,
            home=str(home),
        )
    else:
        from gridledger.grid.admm import solve_admm

        res = solve_admm(feeder, options)
        assert res.dispatch is not None  # default_options keeps dispatch on
        ran, p_sched = res.dispatch, res.p_mw
        out.update(
            admm_objective=round(res.objective_usd, 6),
            iterations=res.iterations,
            primal_residual=res.primal_residual,
            dual_residual=res.dual_residual,
            seconds=round(res.seconds, 3),
            dlmp=_dlmp_stats(res.dlmp_usd_per_mwh),
            converged=res.converged,
        )
    # the schedule is worth what running it costs (grid/dispatch.py): the devices as
    # scheduled, the root's generator as the slack, the substation voltage within the band
    out["objective"] = round(ran.cost_usd, 6)
    out["dispatch"] = _dispatch_stats(feeder, p_sched, ran)
    out["gap_pct"] = _gap_pct(ran.cost_usd, central.objective_usd)
    out["admm_gap_pct"] = _gap_pct(out["admm_objective"], central.objective_usd)
    return out


def _gap_pct(objective_usd: float, central_usd: float) -> float:
    return round(100 * (objective_usd - central_usd) / abs(central_usd), 5)


def _schedule(args: argparse.Namespace) -> int:
    out = run_schedule(args)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        for key in ("case", "method", "objective", "iterations", "gap_pct", "admm_gap_pct",
                    "primal_residual", "dual_residual", "seconds", "relaxation_exact", "dlmp",
                    "dispatch"):  # fmt: skip
            print(f"{key:>18}: {out[key]}")
    return 0


def audit_rounds(db_path: str) -> dict[str, Any]:
    """Replay the aggregator from the committed ``admm.*`` transactions; compare with state."""
    from gridledger.chain import encoding
    from gridledger.chain.contracts.aggregator import chain_records, replay
    from gridledger.chain.store import Store

    if not Path(db_path).is_file():
        raise CliError(f"no chain database at {db_path}")
    store = Store(db_path)
    try:
        rounds = replay(chain_records(store))

        def state(key: str) -> Any:
            raw = store.state_get(key.encode())
            return None if raw is None else encoding.decode(raw)

        out = {}
        for rid, r in rounds.items():
            st = state(f"admm/{rid}/state") or {}
            same = (
                r["z"] == state(f"admm/{rid}/z")
                and r["xi"] == state(f"admm/{rid}/xi")
                and r["history"] == st.get("history")
            )
            schedule = state(f"admm/{rid}/schedule")
            if r["schedule"] is not None:
                same = same and all(
                    r["schedule"][k] == schedule[k]
                    for k in ("z", "p_w", "dlmp_utoken_per_kwh", "status")
                )
            out[rid] = {"iterations": len(r["history"]), "status": st.get("status"),
                        "matches": bool(same)}  # fmt: skip
        return out
    finally:
        store.close()


def _audit(args: argparse.Namespace) -> int:
    out = audit_rounds(args.db)
    print(json.dumps(out, sort_keys=True) if args.json else json.dumps(out, indent=2))
    return 0 if all(r["matches"] for r in out.values()) else 1


def _vpp(args: argparse.Namespace) -> int:
    import numpy as np

    from gridledger.grid.vpp import VppError, generate_profiles, load_profiles_csv, solve_vpp_admm

    try:
        if args.profiles:
            profiles = load_profiles_csv(args.profiles)
        else:
            if args.prosumers < 2 or args.days < 1:
                raise CliError("--prosumers must be ≥ 2 and --days ≥ 1")
            profiles = generate_profiles(args.prosumers, args.days, args.seed)
        result = solve_vpp_admm(profiles)
    except (VppError, OSError) as exc:
        raise CliError(str(exc)) from exc
    net = result.net_p2p_kwh()
    if args.plot:
        plot_trading(profiles, result, args.plot)
    out = {
        "prosumers": len(profiles),
        "days": len(result.days),
        "cost_usd": round(result.cost_usd, 4),
        "iterations_per_day": [d.iterations for d in result.days],
        "residual_kwh": max(d.residual_kwh for d in result.days),
        "seconds": round(sum(d.seconds for d in result.days), 3),
        "bought_kwh": {p.name: round(float(np.clip(net[u], 0, None).sum()), 3)
                       for u, p in enumerate(profiles)},
        "sold_kwh": {p.name: round(float(np.clip(-net[u], 0, None).sum()), 3)
                     for u, p in enumerate(profiles)},
    }  # fmt: skip
    print(json.dumps(out, sort_keys=True) if args.json else json.dumps(out, indent=2))
    return 0


def plot_trading(profiles: list[Any], result: Any, path: str) -> None:
    """Seed 003 Fig. 5: each prosumer's hourly net P2P trade (bought > 0, sold < 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    net = result.net_p2p_kwh()
    n = len(profiles)
    hours = np.arange(net.shape[1])
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.3 * n + 1), sharex=True)
    for u, ax in enumerate(np.atleast_1d(axes)):
        ax.bar(hours, np.clip(net[u], 0, None), width=1.0, color="tab:red", label="bought")
        ax.bar(hours, np.clip(net[u], None, 0), width=1.0, color="tab:green", label="sold")
        ax.set_ylabel(profiles[u].name.replace("prosumer-", "P"), rotation=0, labelpad=14)
        ax.axhline(0, color="k", lw=0.5)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7, ncol=2)
    np.atleast_1d(axes)[-1].set_xlabel("hour from the start of the period")
    fig.suptitle("P2P trading record of each prosumer (kWh per hour)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
