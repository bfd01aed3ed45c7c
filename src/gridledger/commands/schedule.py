"""``gridledger schedule CASE``: day-ahead DER scheduling (seed 001), centralized or by ADMM,
off chain or with the aggregator as a contract (seed 003's VPP is ``commands/vpp.py``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
