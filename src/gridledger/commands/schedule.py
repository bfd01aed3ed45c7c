"""``gridledger schedule CASE``: day-ahead DER scheduling (seed 001), centralized or by ADMM,
off chain or with the aggregator as a contract; ``gridledger vpp``: seed 003's P2P VPP."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gridledger.commands.errors import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schedule", help="day-ahead DER schedule of a feeder (DistFlow + ADMM)")
    p.add_argument("case", help="sce56 | case33bw (NAME[:k]: its first k nodes, e.g. case33bw[:6])")
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


def _schedule(args: argparse.Namespace) -> int:
    from gridledger.agents.scheduling import ScheduleRequest, ScheduleRequestError, run_schedule

    request = ScheduleRequest(
        case=args.case,
        method=args.method,
        on_chain=bool(args.on_chain),
        validators=args.validators,
        agent_processes=args.agent_processes,
        max_iter=args.max_iter,
        rho=args.rho,
        clusters=args.clusters,
        home=Path(args.home) if args.home else None,
    )
    try:
        out = run_schedule(request)
    except ScheduleRequestError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        for key in ("case", "method", "objective", "iterations", "gap_pct", "admm_gap_pct",
                    "primal_residual", "dual_residual", "seconds", "relaxation_exact", "dlmp",
                    "dispatch"):  # fmt: skip
            print(f"{key:>18}: {out[key]}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from gridledger.agents.scheduling import ScheduleRequestError, audit_rounds

    try:
        out = audit_rounds(args.db)
    except ScheduleRequestError as exc:
        raise CliError(str(exc)) from exc
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
