"""``gridledger cases`` and ``gridledger pf``: the network cases and one AC power flow."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gridledger.commands.errors import CliError


def register(sub: Any) -> None:
    cases = sub.add_parser("cases", help="list the network cases that ship with gridledger")
    cases.add_argument("--json", action="store_true", help="machine-readable output")
    cases.set_defaults(handler=_cases)

    pf = sub.add_parser(
        "pf",
        help="run an AC power flow on a case",
        description=(
            "Newton-Raphson power flow on CASE: a shipped case name (see 'gridledger cases'), "
            "pandapower:<name>, or a path to a pandapower .json or MATPOWER .m file."
        ),
    )
    pf.add_argument("case", metavar="CASE")
    pf.add_argument("--json", action="store_true", help="machine-readable output")
    pf.add_argument(
        "--control",
        choices=("vm", "q"),
        default=None,
        help="regulator generators hold their voltage set-point (vm) or inject their "
        "reactive set-point (q); default: the case's own (q for grids whose regulators are "
        "static generators, vm otherwise)",
    )
    pf.add_argument(
        "--q-limits",
        action="store_true",
        help="switch regulators beyond their reactive limits to PQ at the limit (vm control)",
    )
    pf.add_argument("--tol", type=float, default=1e-8, help="largest power mismatch, pu")
    pf.add_argument("--max-iter", type=int, default=30)
    pf.set_defaults(handler=_pf)


def _cases(args: argparse.Namespace) -> int:
    from gridledger.grid.cases import list_cases

    cases = list_cases()
    if args.json:
        print(json.dumps([{"name": k, "description": v} for k, v in cases.items()]))
        return 0
    width = max(len(k) for k in cases)
    for name, desc in cases.items():
        print(f"{name:<{width}}  {desc}")
    print(f"{'pandapower:<name>':<{width}}  any network of pandapower.networks, e.g. case118")
    print(f"{'simbench:<code>':<{width}}  a SimBench grid, e.g. simbench:1-LV-rural3--0-sw")
    print(f"{'<path>.json|.m':<{width}}  a pandapower JSON or MATPOWER case file")
    return 0


def _pf(args: argparse.Namespace) -> int:
    from gridledger.grid.cases import load_case
    from gridledger.grid.network import NetworkError
    from gridledger.grid.powerflow import run_pf

    if not (args.tol > 0) or args.max_iter < 1:
        raise CliError("--tol must be positive and --max-iter at least 1")
    try:
        net = load_case(args.case)
    except NetworkError as exc:
        raise CliError(str(exc)) from exc
    res = run_pf(
        net,
        regulator_control=args.control,
        tol=args.tol,
        max_iter=args.max_iter,
        check=False,
        enforce_q_limits=args.q_limits,
    )
    if args.json:
        out = res.to_dict()
        for row, name in zip(out["generators"], net.gen.name, strict=True):
            row["name"] = name
        out["case"] = net.name
        print(json.dumps(out))
    else:
        _print_tables(net.name, res, list(net.gen.name))
    if not res.converged:
        raise CliError(
            f"{net.name}: power flow did not converge after {res.iterations} iterations "
            f"(largest mismatch {res.max_mismatch_mva:.3g} MVA); the results above are not a "
            "solution"
        )
    return 0


def _print_tables(name: str, res: Any, gen_names: list[str]) -> None:
    status = "converged" if res.converged else "DID NOT CONVERGE"
    print(
        f"{name}: {status} in {res.iterations} iterations, "
        f"largest mismatch {res.max_mismatch_mva:.2e} MVA, losses {res.total_loss_mw:.6g} MW "
        f"(series {res.series_loss_mw:.6g}, transformer no-load {res.no_load_loss_mw:.6g})"
    )
    print()
    print(f"{'bus':>8} {'vm_pu':>9} {'va_deg':>10} {'p_mw':>11} {'q_mvar':>11}")
    for b, vm, va, p, q in zip(
        res.bus_ids, res.vm_pu, res.va_deg, res.bus_p_mw, res.bus_q_mvar, strict=True
    ):
        print(f"{b!s:>8} {vm:9.5f} {va:10.4f} {p:11.5f} {q:11.5f}")
    print()
    print(
        f"{'from':>8} {'to':>8} {'p_from_mw':>11} {'q_from_mvar':>12} {'loss_mw':>10} "
        f"{'loading':>8}"
    )
    for f, t, p, q, loss, ld, rated in zip(
        res.branch_from,
        res.branch_to,
        res.p_from_mw,
        res.q_from_mvar,
        res.branch_loss_mw,
        res.loading_pct,
        res.rated,
        strict=True,
    ):
        loading = f"{ld:7.1f}%" if rated else "     n/a"
        print(f"{f!s:>8} {t!s:>8} {p:11.5f} {q:12.5f} {loss:10.6f} {loading:>8}")
    print()
    print(f"{'gen':>12} {'p_mw':>11} {'q_mvar':>11}")
    for g, p, q in zip(gen_names, res.gen_p_mw, res.gen_q_mvar, strict=True):
        print(f"{g:>12} {p:11.5f} {q:11.5f}")
