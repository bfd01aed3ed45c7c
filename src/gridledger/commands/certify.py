"""``gridledger ropf`` and ``gridledger validate``: the reactive OPF and the DSO's certificates."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from gridledger.commands.errors import CliError

METHODS = ("exact", "gso", "sbde", "de")
SEARCH_METHODS = ("gso", "sbde", "de")
SVC_COST_HELP = (
    "how an SVC's hourly cost follows from seed 002 eqs. 10-12: 'printed' is eq. 12 as printed, "
    "C(S)/(8760*5) $/h; 'de-goswami' reads C(s) as $/kvar, C(S)*S_kvar/(8760*5) $/h"
)


def register(sub: Any) -> None:
    ropf = sub.add_parser(
        "ropf",
        help="reactive optimal power flow: minimize losses with reactive set-points",
        description=(
            "Minimize the active losses of CASE by moving the regulator generators' reactive "
            "set-points (voltages or reactive injections), active power fixed."
        ),
    )
    ropf.add_argument("case", metavar="CASE", help="case name, pandapower:<name>, or a file")
    ropf.add_argument("--method", choices=METHODS, default="exact")
    ropf.add_argument("--seed", type=int, default=0, help="seed of the population solvers")
    ropf.add_argument(
        "--control",
        choices=("auto", "vm", "q"),
        default="auto",
        help="variables: voltage set-points (vm) or reactive injections (q); auto: q on the "
        "seed-000 microgrids and on grids whose regulators are static generators, vm elsewhere",
    )
    ropf.add_argument(
        "--slack-vm",
        choices=("auto", "fixed", "free"),
        default="auto",
        help="is the reference generator's voltage a variable too? auto: free on the islanded "
        "microgrid (no grid holds it), fixed elsewhere",
    )
    ropf.add_argument("--vmin", type=float, default=None, help="lower voltage limit, pu")
    ropf.add_argument("--vmax", type=float, default=None, help="upper voltage limit, pu")
    ropf.add_argument("--json", action="store_true", help="machine-readable output")
    ropf.add_argument(
        "--svc",
        action="append",
        default=[],
        metavar="BUS:QMIN:QMAX",
        help="add an SVC at BUS with reactive limits QMIN..QMAX Mvar (repeatable); the output "
        "then prices it against the case without it (seed 002 Tables 3 and 4)",
    )
    ropf.add_argument(
        "--svc-cost", choices=("printed", "de-goswami"), default="printed", help=SVC_COST_HELP
    )
    ropf.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="PNG of the search's convergence: best loss and the population's spread per "
        "iteration (gso, sbde, de only)",
    )
    ropf.add_argument(
        "--taps",
        default=None,
        metavar="all|BRANCH,...",
        help="move these transformers' on-load tap changers too (discrete positions; 'all': "
        "every transformer with tap data); prints the losses with the taps fixed beside (with "
        "--svc the SVC is a control, not priced)",
    )
    ropf.add_argument(
        "--tap-search",
        choices=("local", "exhaustive"),
        default="local",
        help="local: pattern search over tap positions; exhaustive: every tap vector",
    )
    ropf.set_defaults(handler=_ropf)

    val = sub.add_parser(
        "validate",
        help="run the DSO's 8-step validation on a scenario: one certificate per interval",
        description=(
            "SCENARIO is a YAML file or the name of a shipped scenario "
            "(seed000_case1, seed000_case2, seed002_ieee9, "
            "seed002_ieee9_svc). A scenario with SVCs also prices them against the network "
            "without them (seed 002 Tables 3 and 4)."
        ),
    )
    val.add_argument("scenario", metavar="SCENARIO")
    val.add_argument("--method", choices=METHODS, default=None, help="override the scenario's")
    val.add_argument("--json", action="store_true", help="machine-readable output")
    val.add_argument(
        "--svc-cost", choices=("printed", "de-goswami"), default="printed", help=SVC_COST_HELP
    )
    val.set_defaults(handler=_validate)


def _auto_control(case: str, network_control: str = "vm") -> str:
    """q on the seed-000 microgrids and on grids whose regulators are static generators."""
    return "q" if str(case).startswith("microgrid9") else network_control


def _ropf(args: argparse.Namespace) -> int:
    from gridledger.grid.cases import load_case
    from gridledger.grid.compiled import compile_network
    from gridledger.grid.network import NetworkError
    from gridledger.grid.ropf import RopfOptions, RopfProblem, solve_ropf

    if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    if args.plot is not None and args.method not in SEARCH_METHODS:
        raise CliError(
            f"--plot draws a population's convergence: use --method {'|'.join(SEARCH_METHODS)}, "
            f"not {args.method}"
        )
    try:
        net = load_case(args.case)
        net_without_svc = net
        if args.svc:
            from gridledger.market.certificate import with_svcs
            from gridledger.market.svc_pricing import svc_rows

            net = with_svcs(net, svc_rows(net, args.svc))
        control = _auto_control(args.case, net.regulator_control)
        control = control if args.control == "auto" else args.control
        options = RopfOptions(
            vmin_pu=args.vmin,
            vmax_pu=args.vmax,
            slack_vm_free=(
                str(args.case) == "microgrid9-islanded"
                if args.slack_vm == "auto"
                else args.slack_vm == "free"
            ),
        )
        problem = RopfProblem(compile_network(net), control, options)
    except (NetworkError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    pricing = None
    tap_result = None
    if args.taps is not None:
        from gridledger.grid.ropf.tap_search import solve_ropf_with_taps

        try:
            tap_result = solve_ropf_with_taps(
                net, control, taps=args.taps, options=options, method=args.method,
                rng=args.seed, search=args.tap_search,
            )  # fmt: skip
        except (NetworkError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        res, problem = tap_result.result, tap_result.problem
    elif args.svc:
        from gridledger.market.svc_pricing import solve_svc_case

        try:
            res, pricing = solve_svc_case(
                net_without_svc, net, control, options, args.method, args.seed, args.svc_cost
            )
        except ValueError as exc:
            raise CliError(str(exc)) from exc
    else:
        res = solve_ropf(problem, args.method, rng=args.seed)
    if args.plot is not None:
        from gridledger.grid.ropf.convergence_plot import plot_convergence

        try:
            plot_convergence(
                res.convergence, args.plot, f"{res.method} on {net.name}", net.base_mva
            )
        except OSError as exc:
            raise CliError(f"--plot {args.plot}: cannot write it: {exc}") from exc
    base = net.base_mva
    names = [str(n) for n in net.gen["name"]]
    setpoints: dict[str, float] = {}
    nr, nk = problem.reg.size, problem.slk.size
    for i, g in enumerate(problem.reg):
        key = f"{names[g]}:{'vm_pu' if control == 'vm' else 'q_mvar'}"
        setpoints[key] = float(res.x[i]) if control == "vm" else float(res.x[i] * base)
    for j, g in enumerate(problem.slk):
        setpoints[f"{names[g]}:vm_pu"] = float(res.x[nr + j])
    for j, svc in enumerate(net.svc["name"]):
        setpoints[f"{svc}:q_mvar"] = float(res.x[nr + nk + j] * base)
    if tap_result is not None:
        for branch, pos in tap_result.positions.items():
            setpoints[f"{branch}:tap_pos"] = float(pos)
    out = {
        "case": net.name,
        "method": res.method,
        "control": control,
        "seed": args.seed if args.method != "exact" else None,
        "loss_before_mw": res.loss_before_pu * base,
        "loss_after_mw": res.loss_after_pu * base,
        "setpoints": setpoints,
        "feasible": res.feasible,
        "violations": [str(v) for v in res.violations],
        "evaluations": res.evaluations,
        "iterations": res.iterations,
        "seconds": res.seconds,
    }
    if pricing is not None:
        out["svc_pricing"] = pricing
    if tap_result is not None:
        out["loss_before_mw"] = tap_result.loss_before_pu * base
        out["taps"] = {
            "positions": tap_result.positions,
            "start_positions": tap_result.start_positions,
            "loss_fixed_taps_mw": tap_result.fixed.loss_after_pu * base,
            "ropf_solves": tap_result.evaluations,
            "search": args.tap_search,
        }
        out["seconds"] = tap_result.seconds
    if res.convergence is not None:
        out["convergence"] = res.convergence.to_dict(base)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"R-OPF on {net.name} by {res.method} ({control} control)")
    print(f"  losses before  {out['loss_before_mw']:12.6f} MW")
    print(f"  losses after   {out['loss_after_mw']:12.6f} MW")
    saved = out["loss_before_mw"] - out["loss_after_mw"]
    pct = saved / out["loss_before_mw"] * 100 if out["loss_before_mw"] else 0.0
    print(f"  reduction      {saved:12.6f} MW ({pct:.2f} %)")
    if tap_result is not None:
        fixed = out["taps"]["loss_fixed_taps_mw"]
        print(f"  taps fixed     {fixed:12.6f} MW (the same R-OPF without moving the taps)")
        print(f"  {tap_result.evaluations} R-OPF solves over tap positions ({args.tap_search})")
    print("  set-points:")
    for k, v in setpoints.items():
        print(f"    {k:<24} {v:12.6f}")
    verdict = "feasible" if res.feasible else "INFEASIBLE: " + "; ".join(out["violations"])
    print(f"  {verdict}")
    print(
        f"  {res.evaluations} power-flow evaluations, {res.iterations} iterations, "
        f"{out['seconds']:.3f} s"
    )
    if pricing is not None:
        _print_svc_pricing(pricing)
    if args.plot is not None:
        print(f"  convergence plot written to {args.plot}")
    return 0


def _with_cli_fields(cert: dict[str, Any]) -> dict[str, Any]:
    """The documented CLI contract names the regulator's pay ``remuneration`` (in micro-tokens,
    the same integer as the certificate's ``remuneration_utoken``)."""
    for reg in cert["regulators"]:
        reg["remuneration"] = reg["remuneration_utoken"]
    return cert


def _validate(args: argparse.Namespace) -> int:
    from gridledger.grid.network import NetworkError
    from gridledger.market.certificate import WorkflowError, validate_scenario
    from gridledger.market.scenario import ScenarioError, load_scenario
    from gridledger.market.seller_ranking import rank_scenario

    try:
        scenario = load_scenario(args.scenario)
        certificates = validate_scenario(scenario, args.method)
        ranking = rank_scenario(scenario, args.method) if scenario.ranking else []
        pricing = None
        if scenario.svcs:
            from gridledger.market.svc_pricing import price_scenario_svcs

            pricing = price_scenario_svcs(scenario, args.method, args.svc_cost)
    except (ScenarioError, WorkflowError, NetworkError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        doc: dict[str, Any] = {
            "scenario": scenario.name,
            "certificates": [_with_cli_fields(c.to_dict()) for c in certificates],
        }
        if ranking:
            doc["seller_ranking"] = ranking
        if pricing is not None:
            doc["svc_pricing"] = pricing
        print(json.dumps(doc))
        return 0
    print(f"Scenario {scenario.name}: {scenario.description}")
    for c in certificates:
        _print_certificate(c)
    for r in ranking:
        _print_ranking(r)
    if pricing is not None:
        print(f"\nSVC case by {pricing['method']}:")
        _print_svc_pricing(pricing)
    return 0


def _f(x: float | None, fmt: str = "10.3f") -> str:
    return format(x, fmt) if x is not None and math.isfinite(x) else " " * 7 + "n/a"


def _print_certificate(c: Any) -> None:
    print()
    head = f"Interval {c.interval}  (new trade: {c.new_trade or '-'}; {c.method})"
    print(head)
    print("-" * len(head))
    print(f"  losses without R-OPF {_f(c.loss_without_ropf_kw)} kW")
    print(f"  losses with R-OPF    {_f(c.loss_with_ropf_kw)} kW")
    print(f"  change vs previous   {_f(c.loss_change_kw)} kW")
    print(f"  {'trade':<8}{'seller':<10}{'buyer':>6}{'kW':>10}{'loss kW':>10}{'(no R-OPF)':>12}")
    for t in c.trades:
        print(
            f"  {t.id:<8}{t.seller:<10}{t.buyer_bus:>6}{t.power_kw:>10.1f}"
            f"{_f(t.loss_share_kw)}{_f(t.loss_share_without_ropf_kw, '12.3f')}"
        )
    print(f"  {'node':<8}{'bus':>4}{'Q kvar':>10}{'dQ kvar':>10}{'dPQ kW':>10}{'paid utoken':>14}")
    for r in c.regulators:
        print(
            f"  {r.node:<8}{r.bus:>4}{r.q_kvar:>10.1f}{r.delta_q_kvar:>10.1f}"
            f"{r.delta_pq_kw:>10.2f}{r.remuneration_utoken:>14d}"
        )
    vm = ", ".join(f"{b}:{v:.4f}" for b, v in c.bus_vm_pu.items())
    print(f"  voltages pu  {vm}")
    if c.line_loading_pct:
        worst = max(c.line_loading_pct.items(), key=lambda kv: kv[1])
        print(f"  highest line loading {worst[1]:.1f} % ({worst[0]})")
    print("  verdict: " + ("FEASIBLE" if c.feasible else "REJECTED — " + "; ".join(c.reasons)))


def _print_ranking(r: dict) -> None:
    print()
    running = ", ".join(r["running_trades"]) or "none"
    print(f"Seller ranking for {r['power_kw']:g} kW at bus {r['buyer_bus']} (running: {running})")
    print(f"  {'rank':<6}{'seller':<10}{'loss +%':>10}{'max line %':>12}  excluded because")
    for o in sorted(r["options"], key=lambda o: (o["rank"] is None, o["rank"] or 0)):
        rank = str(o["rank"]) if o["rank"] is not None else "-"
        why = "; ".join(o["reasons"])
        print(
            f"  {rank:<6}{o['seller']:<10}{_f(o['loss_increase_pct'], '10.2f')}"
            f"{o['max_line_loading_pct']:>12.1f}  {why}"
        )


def _usd(x: float | None) -> str:
    return f"{x:12.4f}" if x is not None else "    not priced"


def _print_svc_pricing(p: dict[str, Any]) -> None:
    """Seed 002 Tables 3 and 4: the SVC (eqs. 10-12) and the generators' reactive costs (eq. 8)."""
    wo, w = p["case_without_svc"], p["case_with_svc"]
    print(f"  SVC pricing (eqs. 10-12, {p['reading']} reading, {p['lifetime_years']:g}-year life)")
    for case, c in (("without SVC", wo), ("with SVC", w)):
        state = "feasible" if c["feasible"] else "INFEASIBLE: " + "; ".join(c["violations"])
        print(f"    losses {case:<12} {c['loss_mw']:10.4f} MW  {state}")
    for s in p["svcs"]:
        print(
            f"    {s['name']} at bus {s['bus']}: output {s['q_mvar']:.3f} Mvar "
            f"in [{s['qmin_mvar']:g}, {s['qmax_mvar']:g}]; lines' Q towards the bus "
            f"{s['line_q_before_mvar']:.3f} -> {s['line_q_after_mvar']:.3f} Mvar, "
            f"S = {s['s_mvar']:.3f} Mvar, C(S) = {s['c_s']:.4f}, cost {s['cost_usd_per_h']:.6g} $/h"
        )
    print(f"    {'generator':<10}{'Q no SVC':>10}{'$/h':>14}{'Q SVC':>10}{'$/h':>14}   (Table 3)")
    for g in p["generators"]:
        a, b = g["without_svc"], g["with_svc"]
        print(
            f"    {g['name']:<10}{a['q_mvar']:>10.3f}{_usd(a['cost_usd_per_h']):>14}"
            f"{b['q_mvar']:>10.3f}{_usd(b['cost_usd_per_h']):>14}"
        )
    for label, alloc in (
        ("without SVC", p["allocation_without_svc"]),
        ("with SVC", p["allocation_with_svc"]),
    ):
        print(f"    allocation to loads {label}, $/h (Table 4):")
        for provider, to_loads in alloc.items():
            split = ", ".join(f"{load} {usd:.4g}" for load, usd in to_loads.items())
            print(f"      {provider:<10} {split}")
    if p["total_usd_per_h_without_svc"] is not None:
        print(
            f"    total reactive cost {p['total_usd_per_h_without_svc']:.4f} $/h without SVC, "
            f"{p['total_usd_per_h_with_svc']:.4f} $/h with it: saving "
            f"{p['saving_usd_per_h']:.4f} $/h"
        )
