"""``gridledger vpp``: seed 003's virtual power plant, P2P trading coordinated by ADMM — off
chain, or on chain (``--on-chain``: a node process, prosumer agent processes, the dual step in
the VPP contract and the agreed trades paid in tokens)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from gridledger.commands.errors import CliError


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("vpp", help="seed 003's virtual power plant: P2P trading by ADMM")
    v.add_argument("--prosumers", type=int, default=10)
    v.add_argument("--days", type=int, default=7)
    v.add_argument("--seed", type=int, default=3)
    v.add_argument("--profiles", help="CSV: prosumer,hour,solar_kw,wind_kw,inflexible_kw,...")
    v.add_argument("--eps", type=float, default=1e-6, help="Σ‖p' − p‖ to stop at, kWh (seed: 1e-6)")
    v.add_argument("--rho", type=float, default=0.5, help="ADMM penalty, $/kWh²")
    v.add_argument("--max-iter", type=int, default=1000, help="iterations per day at most")
    v.add_argument("--on-chain", action="store_true", help="run it on a node with agent processes")
    v.add_argument("--agent-processes", type=int, default=2, help="prosumer processes (on chain)")
    v.add_argument("--home", help="keep the chain and logs here (default: a temporary directory)")
    v.add_argument("--plot", help="write the trading record of every prosumer to this PNG")
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=_vpp)


def _check(args: argparse.Namespace) -> None:
    if not args.profiles and (args.prosumers < 2 or args.days < 1):
        raise CliError("--prosumers must be ≥ 2 and --days ≥ 1")
    if not 0 < args.eps <= 1e3:
        raise CliError("--eps must be in (0, 1000] kWh")
    if not 0 < args.rho <= 1e6:
        raise CliError("--rho must be in (0, 1e6]")
    if not 1 <= args.max_iter <= 10_000:
        raise CliError("--max-iter must be in [1, 10000]")
    if args.agent_processes < 1:
        raise CliError("--agent-processes must be ≥ 1")


def _vpp(args: argparse.Namespace) -> int:
    from gridledger.grid.vpp import VppError, generate_profiles, load_profiles_csv

    _check(args)
    try:
        if args.profiles:
            profiles = load_profiles_csv(args.profiles)
            spec = str(Path(args.profiles).resolve())
        else:
            profiles = generate_profiles(args.prosumers, args.days, args.seed)
            spec = f"gen:{args.prosumers},{args.days},{args.seed}"
        out, result = _on_chain(args, spec) if args.on_chain else _off_chain(args, profiles)
    except (VppError, OSError) as exc:
        raise CliError(str(exc)) from exc
    if args.plot:
        plot_trading(profiles, result, args.plot)
    out.update(_positions(profiles, result))
    print(json.dumps(out, sort_keys=True) if args.json else json.dumps(out, indent=2))
    return 0


def _positions(profiles: list[Any], result: Any) -> dict[str, Any]:
    import numpy as np

    net = result.net_p2p_kwh()
    return {
        "prosumers": len(profiles),
        "days": net.shape[1] // 24,
        "bought_kwh": {p.name: round(float(np.clip(net[u], 0, None).sum()), 3)
                       for u, p in enumerate(profiles)},
        "sold_kwh": {p.name: round(float(np.clip(-net[u], 0, None).sum()), 3)
                     for u, p in enumerate(profiles)},
        # energy bought over all pairs and hours (what the payments are for)
        "traded_kwh": round(sum(float(np.clip(d.trades_kwh, 0, None).sum())
                                for d in result.days), 3),
        # what Fig. 5's reading needs: who has the renewables, who buys how often
        "hours_buying": {p.name: int((net[u] > 1e-3).sum()) for u, p in enumerate(profiles)},
        "hours_selling": {p.name: int((net[u] < -1e-3).sum()) for u, p in enumerate(profiles)},
        "renewable_kwh": {p.name: round(float((p.solar_kw + p.wind_kw).sum()), 1)
                          for p in profiles},
        "load_kwh": {p.name: round(float((p.inflexible_kw + p.flexible_ref_kw).sum()), 1)
                     for p in profiles},
    }  # fmt: skip


def _off_chain(args: argparse.Namespace, profiles: list[Any]) -> tuple[dict[str, Any], Any]:
    from gridledger.agents.vpp_agent import price_cap_utoken_per_kwh
    from gridledger.grid.vpp import VppPrices, solve_vpp_admm
    from gridledger.market.vpp_rules import UTOKEN_PER_USD, pair_bills, to_fixed

    result = solve_vpp_admm(profiles, rho=args.rho, eps_kwh=args.eps, max_iter=args.max_iter)
    prices = VppPrices()
    paid = 0
    for d in result.days:  # what the contract would bill for the same trades and duals
        n = d.trades_kwh.shape[0]
        own = [to_fixed(d.submitted_kwh[u, [v for v in range(n) if v != u]]).tolist()
               for u in range(n)]  # fmt: skip
        bills = pair_bills(
            to_fixed(d.trades_kwh).tolist(), to_fixed(d.duals_usd_per_kwh).tolist(), own,
            round(prices.p2p_usd_per_kwh * UTOKEN_PER_USD),
            price_cap_utoken_per_kwh(prices),
        )  # fmt: skip
        paid += sum(map(sum, bills))
    out = {
        "on_chain": False,
        "eps_kwh": args.eps,
        "cost_usd": round(result.cost_usd, 4),
        "iterations": sum(d.iterations for d in result.days),
        "iterations_per_day": [d.iterations for d in result.days],
        "residual_kwh": max(d.residual_kwh for d in result.days),
        "seconds": round(sum(d.seconds for d in result.days), 3),
        "paid_utoken": paid,
    }
    return out, result


def _on_chain(args: argparse.Namespace, spec: str) -> tuple[dict[str, Any], Any]:
    from gridledger.agents.vpp_chain import VppChainError, run_vpp_on_chain

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="gridledger-vpp-"))
    try:
        run = run_vpp_on_chain(
            spec, home, rho=args.rho, eps_kwh=args.eps, max_iter=args.max_iter,
            agent_processes=args.agent_processes,
        )  # fmt: skip
    except VppChainError as exc:
        raise CliError(str(exc)) from exc
    out = {
        "on_chain": True,
        "eps_kwh": args.eps,
        "home": str(home),
        "iterations": run.iterations,
        "iterations_per_day": [d.iterations for d in run.days],
        "residual_kwh": max(d.residual_kwh for d in run.days),
        "seconds": round(sum(d.seconds for d in run.days), 3),
        "paid_utoken": run.paid_utoken,
        "paid_utoken_per_day": [d.paid_utoken for d in run.days],
        "supply_invariant": run.invariants["supply_invariant"],
        "invariants": run.invariants,
    }
    return out, run


def plot_trading(profiles: list[Any], result: Any, path: str) -> None:
    """Seed 003 Fig. 5: each prosumer's hourly net P2P trade (bought > 0, sold < 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    net = result.net_p2p_kwh()
    n = len(profiles)
    hours = np.arange(net.shape[1])
    # the seed's two "typical prosumers": the one that sells most, the one that buys most
    total = net.sum(axis=1)
    typical = {int(np.argmin(total)): "\nsells most", int(np.argmax(total)): "\nbuys most"}
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.3 * n + 1), sharex=True)
    for u, ax in enumerate(np.atleast_1d(axes)):
        ax.bar(hours, np.clip(net[u], 0, None), width=1.0, color="tab:red", label="bought")
        ax.bar(hours, np.clip(net[u], None, 0), width=1.0, color="tab:green", label="sold")
        label = profiles[u].name.replace("prosumer-", "P") + typical.get(u, "")
        ax.set_ylabel(label, rotation=0, labelpad=24, fontsize=8)
        ax.axhline(0, color="k", lw=0.5)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7, ncol=2)
    np.atleast_1d(axes)[-1].set_xlabel("hour from the start of the period")
    fig.suptitle("P2P trading record of each prosumer (kWh per hour)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
