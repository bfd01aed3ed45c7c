"""Seed 002 §6's SVC case: what an SVC costs per hour and what the generators' reactive power
costs with and without it (the seed's Tables 3 and 4).

Eq. 11 defines the SVC's range S = |Q₂ − Q₁| from "line reactive power before and after the SVC
installation". We take:

* before / after: the R-OPF optimum of the network without the SVC (the seed's Case 1) and with
  it (Case 2);
* line reactive power: the reactive power the lines incident to the SVC's bus send towards it,
  measured at their far ends (what the rest of the network delivers over those lines).

At the SVC's own bus the lines' reactive power changes by exactly the SVC's output (the bus
balance, constant-power loads); measured at the far ends it also carries the change of the
lines' own reactive losses and charging, so S differs from the SVC output by a few Mvar.

The hourly cost of a range S follows one of :data:`~.remuneration.SVC_COST_READINGS`: eq. 12 as
printed, or De & Goswami's $/kvar reading (see :mod:`.remuneration`). Generators are priced by
seed 002 eq. 8 with the cost curves of eqs. 13–15 on the IEEE 9-bus cases (no curves are known
for other cases: their generators are reported unpriced).
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..grid.network import Network, RegulatorControl
from ..grid.results import PowerFlowResult
from .remuneration import (
    SEED002_COSTS,
    SEED002_PROFIT_RATE,
    SVC_LIFETIME_YEARS,
    QuadraticCost,
    reactive_opportunity_cost_usd_per_h,
    reactive_price_allocation,
    svc_cost_by_reading,
    svc_investment_usd_per_kvar,
)

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SPEC = re.compile(rf"^\s*(?P<bus>\d+)\s*:\s*(?P<lo>{_NUMBER})\s*:\s*(?P<hi>{_NUMBER})\s*$")


class SvcSpecError(ValueError):
    """An SVC given on the command line that the network cannot take."""


def parse_svc_spec(text: str) -> tuple[int, float, float]:
    """``BUS:QMIN:QMAX`` (Mvar) -> (bus, qmin, qmax); a clear error for anything else."""
    m = _SPEC.match(text)
    if m is None:
        raise SvcSpecError(
            f"--svc {text!r}: expected BUS:QMIN:QMAX (bus number, reactive limits in Mvar), "
            "e.g. 9:-100:300"
        )
    bus, lo, hi = int(m["bus"]), float(m["lo"]), float(m["hi"])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise SvcSpecError(f"--svc {text!r}: limits must be finite")
    if lo > hi:
        raise SvcSpecError(f"--svc {text!r}: qmin {lo:g} Mvar is above qmax {hi:g} Mvar")
    return bus, lo, hi


def svc_rows(net: Network, specs: list[str]) -> list[dict[str, Any]]:
    """The SVC table rows for ``specs`` on ``net``: buses checked, one SVC per bus, output 0."""
    rows: list[dict[str, Any]] = []
    buses = {int(b) for b in net.bus_ids}
    taken = {int(b) for b in net.svc["bus"]}
    for text in specs:
        bus, lo, hi = parse_svc_spec(text)
        if bus not in buses:
            raise SvcSpecError(
                f"--svc {text!r}: bus {bus} is not a bus of {net.name} (buses: {sorted(buses)})"
            )
        if bus in taken:
            raise SvcSpecError(f"--svc {text!r}: bus {bus} already has an SVC")
        taken.add(bus)
        start = min(max(0.0, lo), hi)
        rows.append(
            {"name": f"SVC{bus}", "bus": bus, "qmin_mvar": lo, "qmax_mvar": hi, "q_mvar": start}
        )
    return rows


def line_q_towards_bus_mvar(res: PowerFlowResult, bus: int) -> dict[str, float]:
    """Reactive power each line incident to ``bus`` sends towards it, at the line's far end."""
    out: dict[str, float] = {}
    for i, (f, t) in enumerate(zip(res.branch_from, res.branch_to, strict=True)):
        if int(t) == bus:
            out[f"{int(f)}-{int(t)}"] = float(res.q_from_mvar[i])
        elif int(f) == bus:
            out[f"{int(f)}-{int(t)}"] = float(res.q_to_mvar[i])
    return out


def seed002_cost_curves(net: Network) -> dict[str, QuadraticCost]:
    """Eqs. 13–15 by generator name on the IEEE 9-bus cases; empty elsewhere."""
    if not str(net.name).startswith("ieee9"):
        return {}
    return {
        str(name): SEED002_COSTS[int(bus)]
        for name, bus in zip(net.gen["name"], net.gen["bus"], strict=True)
        if int(bus) in SEED002_COSTS
    }


def _generator_costs(
    net: Network, res: PowerFlowResult, costs: dict[str, QuadraticCost]
) -> dict[str, dict[str, Any]]:
    out = {}
    for i, (name, bus) in enumerate(zip(net.gen["name"], net.gen["bus"], strict=True)):
        p, q = float(res.gen_p_mw[i]), float(res.gen_q_mvar[i])
        curve = costs.get(str(name))
        usd = (
            None
            if curve is None
            else reactive_opportunity_cost_usd_per_h(curve, p, q, SEED002_PROFIT_RATE)
        )
        out[str(name)] = {"bus": int(bus), "p_mw": p, "q_mvar": q, "cost_usd_per_h": usd}
    return out


def _allocation(
    net: Network,
    res: PowerFlowResult,
    costs: dict[str, QuadraticCost],
    svc_q_mvar: list[float] | None,
    svc_usd: dict[str, float] | None,
) -> dict[str, dict[str, float]]:
    """Table 4: every priced provider's $/h over the loads, by provider name."""
    alloc = reactive_price_allocation(net, res, costs, svc_q_mvar=svc_q_mvar, svc_usd_per_h=svc_usd)
    return {key: dict(to_loads) for key, to_loads in alloc.items()}


def price_svc_case(
    net_without: Network,
    pf_without: PowerFlowResult,
    net_with: Network,
    pf_with: PowerFlowResult,
    svc_q_mvar: list[float],
    reading: str = "printed",
    lifetime_years: float = SVC_LIFETIME_YEARS,
) -> dict[str, Any]:
    """Seed 002 Tables 3–4 for one network without and with its SVCs, as plain JSON data.

    ``pf_without`` / ``pf_with`` are the solved operating points (the R-OPF optima of Case 1 and
    Case 2); ``svc_q_mvar`` the SVCs' outputs in ``net_with.svc`` order.
    """
    if not (pf_without.converged and pf_with.converged):
        raise ValueError("SVC pricing needs converged power flows with and without the SVC")
    svcs = []
    svc_usd: dict[str, float] = {}
    for row, q in zip(net_with.svc.to_dict("records"), svc_q_mvar, strict=True):
        before = line_q_towards_bus_mvar(pf_without, int(row["bus"]))
        after = line_q_towards_bus_mvar(pf_with, int(row["bus"]))
        q1, q2 = sum(before.values()), sum(after.values())
        s = abs(q2 - q1)  # eq. 11
        usd = svc_cost_by_reading(s, reading, lifetime_years)  # eqs. 10 and 12
        svc_usd[str(row["name"])] = usd
        svcs.append(
            {
                "name": str(row["name"]),
                "bus": int(row["bus"]),
                "qmin_mvar": float(row["qmin_mvar"]),
                "qmax_mvar": float(row["qmax_mvar"]),
                "q_mvar": float(q),
                "line_q_before_mvar": q1,
                "line_q_after_mvar": q2,
                "lines_before_mvar": before,
                "lines_after_mvar": after,
                "s_mvar": s,
                "c_s": svc_investment_usd_per_kvar(s),
                "cost_usd_per_h": usd,
            }
        )
    costs = seed002_cost_curves(net_with)
    gens_without = _generator_costs(net_without, pf_without, costs)
    gens_with = _generator_costs(net_with, pf_with, costs)
    generators = [
        {
            "name": name,
            "bus": g["bus"],
            "without_svc": {k: v for k, v in g.items() if k != "bus"},
            "with_svc": {k: v for k, v in gens_with[name].items() if k != "bus"},
        }
        for name, g in gens_without.items()
    ]
    priced = bool(costs)
    total_without = sum(g["cost_usd_per_h"] or 0.0 for g in gens_without.values())
    total_with = sum(g["cost_usd_per_h"] or 0.0 for g in gens_with.values()) + sum(svc_usd.values())
    return {
        "reading": reading,
        "lifetime_years": float(lifetime_years),
        "generator_cost_curves": "seed 002 eqs. 13-15, k = 0.1" if priced else None,
        "svcs": svcs,
        "generators": generators,
        "allocation_without_svc": _allocation(net_without, pf_without, costs, None, None),
        "allocation_with_svc": _allocation(net_with, pf_with, costs, list(svc_q_mvar), svc_usd),
        "total_usd_per_h_without_svc": total_without if priced else None,
        "total_usd_per_h_with_svc": total_with if priced else None,
        "saving_usd_per_h": total_without - total_with if priced else None,
    }


def solve_svc_case(
    net_without: Network,
    net_with: Network,
    control: RegulatorControl,
    options: Any,
    method: str,
    seed: int,
    reading: str = "printed",
) -> tuple[Any, dict[str, Any]]:
    """R-OPF of Case 1 (no SVC) and Case 2 (with the SVCs), then :func:`price_svc_case`.

    Returns Case 2's :class:`~gridledger.grid.ropf.RopfResult` and the pricing report, which also
    carries both cases' losses and feasibility.
    """
    from ..grid.compiled import compile_network
    from ..grid.ropf import RopfProblem, solve_ropf

    without = solve_ropf(RopfProblem(compile_network(net_without), control, options), method, seed)
    with_ = solve_ropf(RopfProblem(compile_network(net_with), control, options), method, seed)
    n_svc = len(net_with.svc)
    svc_q = [float(q) * net_with.base_mva for q in with_.x[len(with_.x) - n_svc :]]
    report = price_svc_case(net_without, without.pf_after, net_with, with_.pf_after, svc_q, reading)
    base = net_with.base_mva
    report["case_without_svc"] = {
        "loss_mw": without.loss_after_pu * base,
        "feasible": without.feasible,
        "violations": [str(v) for v in without.violations],
    }
    report["case_with_svc"] = {
        "loss_mw": with_.loss_after_pu * base,
        "feasible": with_.feasible,
        "violations": [str(v) for v in with_.violations],
    }
    return with_, report


def price_scenario_svcs(scenario: Any, method: str | None, reading: str) -> dict[str, Any]:
    """The SVC case of a scenario with ``svcs``: its network without and with them, R-OPF by the
    scenario's control, limits, method and seed."""
    from ..grid.cases import load_case
    from .certificate import scenario_settings, with_regulators, with_svcs

    settings = scenario_settings(scenario, method)
    base = with_regulators(load_case(scenario.case), scenario.regulators)
    net_with = with_svcs(base, scenario.svcs)
    _, report = solve_svc_case(
        base, net_with, settings.control, settings.options(), settings.method, settings.seed,
        reading,
    )  # fmt: skip
    report["method"] = settings.method
    return report
