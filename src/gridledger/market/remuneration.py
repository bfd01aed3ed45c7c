"""Paying regulator nodes for reactive power: opportunity cost (seed 000 §V, seed 002 §5.2–5.3).

Seed 000 eqs. 6–8, for a DG with a circular capability curve of rating Sn:

    OC  = RMLO − RCO                                           (6)
    ΔPQ = max{0, √(Sn² − Q(t)²) − √(Sn² − (Q(t) + ΔQ)²)}         (7)
    RPC = ΔPQ · k·ΔP_tot(t) · C_kWh(t)                         (8)

ΔPQ (kW) is the active power the extra reactive output ΔQ costs the DG on its circle; k·ΔP_tot(t)
is "a real valued degradation factor lower than 1 that depends on the effect of reactive power
management on losses reduction". We read ΔP_tot(t) here as the loss reduction the R-OPF achieves
in the interval (kW) — the paper: "as more valuable (higher value of k·ΔP_tot(t)) as larger the
effect of R-OPF on the reduction of power losses is" — with k in 1/kW, and cap the factor at 1.
Remuneration for an interval of ``hours`` = RPC · hours, in the price's money unit.

Seed 002 eqs. 8–9, for generators with quadratic cost C_P(P) = a + b·P + c·P²:

    C_Q(Q) = |C_P(√(P² + Q²)) − C_P(P)| · k,   k = 0.1 (the profit rate)

SVC, seed 002 eqs. 10–12 after De & Goswami: C(s) = 0.0003·S² − 0.3051·S + 127.38 with
S = |Q₂ − Q₁| in Mvar, and C(f) = C(s) / (8760 · 5) $/h (five-year life). Two readings:

* ``printed`` (:func:`svc_cost_printed_usd_per_h`): eq. 12 exactly as the seed prints it,
  C(f) = C(S) / (8760 · 5) $/h — cents per hour at most, since C(S) ≤ 127.38 on the SVC's range;
* ``de-goswami`` (:func:`svc_cost_de_goswami_usd_per_h`): C(s) is De & Goswami's price per kvar
  of range, so the hourly cost is C(S) · S_kvar / (8760 · 5) — hundreds of $/h, the order of the
  seed's Table 4. :func:`svc_cost_usd_per_h` is this reading with S = |Q₂ − Q₁| taken from its
  arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..grid.network import Network
    from ..grid.results import PowerFlowResult

SEED002_PROFIT_RATE = 0.1
HOURS_PER_YEAR = 8760.0
SVC_LIFETIME_YEARS = 5.0


class RemunerationError(ValueError):
    """Inputs outside the model's domain (Q beyond the rating, negative prices, ...)."""


def _finite(name: str, x: float) -> float:
    if not math.isfinite(x):
        raise RemunerationError(f"{name} must be finite, got {x}")
    return float(x)


# ---- seed 000: circular capability curve ---------------------------------------------------


def opportunity_cost(return_most_lucrative: float, return_chosen: float) -> float:
    """Eq. 6: OC = RMLO − RCO, what the chosen option gives up against the best one."""
    return _finite("RMLO", return_most_lucrative) - _finite("RCO", return_chosen)


def delta_pq_kw(sn_kva: float, q_prev_kvar: float, delta_q_kvar: float) -> float:
    """Eq. 7: active power given up on the capability circle for the extra reactive output."""
    sn = _finite("sn_kva", sn_kva)
    q0 = _finite("q_prev_kvar", q_prev_kvar)
    dq = _finite("delta_q_kvar", delta_q_kvar)
    if sn <= 0:
        raise RemunerationError(f"rating must be positive, got {sn} kVA")
    for label, q in (("previous", q0), ("new", q0 + dq)):
        if abs(q) > sn * (1 + 1e-12):
            raise RemunerationError(
                f"{label} reactive output {q:g} kvar is beyond the rating {sn:g} kVA"
            )
    before = math.sqrt(max(sn * sn - q0 * q0, 0.0))
    after = math.sqrt(max(sn * sn - (q0 + dq) ** 2, 0.0))
    return max(0.0, before - after)


def degradation_factor(loss_reduction_kw: float, k_per_kw: float) -> float:
    """k·ΔP_tot(t) of eq. 8, kept in [0, 1] (the paper: "lower than 1")."""
    red = _finite("loss_reduction_kw", loss_reduction_kw)
    k = _finite("k_per_kw", k_per_kw)
    if k < 0:
        raise RemunerationError(f"k must be >= 0 per kW, got {k}")
    return min(1.0, max(0.0, k * red))


def reactive_power_cost_per_h(
    delta_pq: float, loss_reduction_kw: float, k_per_kw: float, price_per_kwh: float
) -> float:
    """Eq. 8: RPC = ΔPQ · k·ΔP_tot(t) · C_kWh(t), money per hour (price's unit)."""
    dpq = _finite("delta_pq_kw", delta_pq)
    price = _finite("price_per_kwh", price_per_kwh)
    if dpq < 0:
        raise RemunerationError(f"ΔPQ must be >= 0 kW, got {dpq}")
    if price < 0:
        raise RemunerationError(f"price must be >= 0, got {price}")
    return dpq * degradation_factor(loss_reduction_kw, k_per_kw) * price


@dataclass(frozen=True)
class RegulatorPayment:
    """What one regulator node earns in one interval (seed 000 Table III's ΔQ/ΔPQ columns)."""

    node: str
    q_kvar: float
    delta_q_kvar: float
    delta_pq_kw: float
    remuneration_utoken: int


def regulator_payment(
    node: str,
    sn_kva: float,
    q_prev_kvar: float,
    q_new_kvar: float,
    loss_reduction_kw: float,
    k_per_kw: float,
    price_utoken_per_kwh: int,
    hours: float,
) -> RegulatorPayment:
    """Eqs. 7–8 over an interval of ``hours``, paid in whole micro-tokens (rounded down)."""
    if not (math.isfinite(hours) and hours >= 0):
        raise RemunerationError(f"interval length must be >= 0 h, got {hours}")
    if isinstance(price_utoken_per_kwh, bool) or not isinstance(price_utoken_per_kwh, int):
        raise RemunerationError("price_utoken_per_kwh must be an integer (on-chain amount)")
    dq = q_new_kvar - q_prev_kvar
    dpq = delta_pq_kw(sn_kva, q_prev_kvar, dq)
    rpc = reactive_power_cost_per_h(dpq, loss_reduction_kw, k_per_kw, price_utoken_per_kwh)
    return RegulatorPayment(node, q_new_kvar, dq, dpq, math.floor(rpc * hours + 1e-9))


# ---- seed 002: quadratic cost curves ---------------------------------------------------------


@dataclass(frozen=True)
class QuadraticCost:
    """C_P(P) = a + b·P + c·P², $/h with P in MW (seed 002 eq. 9)."""

    a: float
    b: float
    c: float

    def __call__(self, p_mw: float) -> float:
        return self.a + self.b * p_mw + self.c * p_mw * p_mw


# Seed 002 eqs. 13–15, generators at buses 1, 2, 3 of IEEE 9-bus.
SEED002_COSTS = {
    1: QuadraticCost(150.0, 5.0, 0.11),
    2: QuadraticCost(600.0, 1.2, 0.085),
    3: QuadraticCost(335.0, 1.0, 0.1225),
}


def reactive_opportunity_cost_usd_per_h(
    cost: QuadraticCost, p_mw: float, q_mvar: float, k: float = SEED002_PROFIT_RATE
) -> float:
    """Seed 002 eq. 8: |C_P(√(P² + Q²)) − C_P(P)| · k."""
    p = _finite("p_mw", p_mw)
    q = _finite("q_mvar", q_mvar)
    if k < 0:
        raise RemunerationError(f"profit rate k must be >= 0, got {k}")
    return abs(cost(math.hypot(p, q)) - cost(p)) * k


def svc_investment_usd_per_kvar(s_mvar: float) -> float:
    """Seed 002 eq. 10: C(s) = 0.0003·S² − 0.3051·S + 127.38 (S in Mvar)."""
    s = _finite("s_mvar", s_mvar)
    if s < 0:
        raise RemunerationError(f"SVC range must be >= 0 Mvar, got {s}")
    return 0.0003 * s * s - 0.3051 * s + 127.38


SVC_COST_READINGS = ("printed", "de-goswami")


def _lifetime(lifetime_years: float) -> float:
    if not (math.isfinite(lifetime_years) and lifetime_years > 0):
        raise RemunerationError(f"lifetime must be > 0 years, got {lifetime_years}")
    return float(lifetime_years)


def svc_cost_printed_usd_per_h(s_mvar: float, lifetime_years: float = SVC_LIFETIME_YEARS) -> float:
    """Seed 002 eq. 12 as printed: C(f) = C(S) / (8760 · life) $/h, S in Mvar (eq. 11)."""
    life = _lifetime(lifetime_years)
    return svc_investment_usd_per_kvar(s_mvar) / (HOURS_PER_YEAR * life)


def svc_cost_de_goswami_usd_per_h(
    s_mvar: float, lifetime_years: float = SVC_LIFETIME_YEARS
) -> float:
    """De & Goswami's reading of eqs. 10–12: C(S) $/kvar × S kvar over the device's life, $/h."""
    life = _lifetime(lifetime_years)
    return svc_investment_usd_per_kvar(s_mvar) * s_mvar * 1000.0 / (HOURS_PER_YEAR * life)


def svc_cost_by_reading(
    s_mvar: float, reading: str, lifetime_years: float = SVC_LIFETIME_YEARS
) -> float:
    """The SVC's $/h for a range S (eq. 11) under ``reading`` (one of :data:`SVC_COST_READINGS`)."""
    if reading == "printed":
        return svc_cost_printed_usd_per_h(s_mvar, lifetime_years)
    if reading == "de-goswami":
        return svc_cost_de_goswami_usd_per_h(s_mvar, lifetime_years)
    raise RemunerationError(
        f"unknown SVC cost reading {reading!r}; expected one of {', '.join(SVC_COST_READINGS)}"
    )


def svc_cost_usd_per_h(
    q_before_mvar: float, q_after_mvar: float, lifetime_years: float = SVC_LIFETIME_YEARS
) -> float:
    """Seed 002 eqs. 11–12: S = |Q₂ − Q₁|, hourly share of C(s)·S over the device's life."""
    if not lifetime_years > 0:
        raise RemunerationError(f"lifetime must be > 0 years, got {lifetime_years}")
    s = abs(_finite("q_after_mvar", q_after_mvar) - _finite("q_before_mvar", q_before_mvar))
    return svc_investment_usd_per_kvar(s) * s * 1000.0 / (HOURS_PER_YEAR * lifetime_years)


# ---- seed 002 Table 4: reactive price of each provider, allocated to the loads ----------------


def reactive_price_allocation(
    net: Network,
    res: PowerFlowResult,
    costs: dict[str, QuadraticCost],
    k: float = SEED002_PROFIT_RATE,
    svc_q_mvar: Sequence[float] | None = None,
    svc_usd_per_h: dict[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """$/h each provider charges (eq. 8 for generators, eqs. 10–12 for SVCs), split over the
    loads by reactive-power tracing (seed 002 Table 4). ``costs`` maps generator names to their
    cost curves; generators without one are not priced. Each provider's row sums to its cost.
    ``svc_usd_per_h`` gives the SVCs' hourly costs by name (see :mod:`.svc_pricing`); without it
    an SVC costs the De & Goswami reading of its own output (S = |Q_svc − 0|).
    """
    import numpy as np

    from ..grid.tracing import allocate_to_loads, trace_power_flow

    names = [str(n) for n in net.gen["name"]]
    unknown = set(costs) - set(names)
    if unknown:
        raise RemunerationError(f"cost curves for unknown generators {sorted(unknown)}")
    amount = {
        g: reactive_opportunity_cost_usd_per_h(
            c, float(res.gen_p_mw[names.index(g)]), float(res.gen_q_mvar[names.index(g)]), k
        )
        for g, c in costs.items()
    }
    q_svc = net.svc.q_mvar.to_numpy(float) if svc_q_mvar is None else np.asarray(svc_q_mvar, float)
    for name, q in zip(net.svc["name"], q_svc, strict=True):
        if svc_usd_per_h is not None:
            amount[str(name)] = float(svc_usd_per_h[str(name)])
        else:
            amount[str(name)] = svc_cost_usd_per_h(0.0, q)  # S = |Q2 − Q1|, nothing before
    trace = trace_power_flow(net, res, "q", svc_q_mvar=q_svc if len(net.svc) else None)
    return allocate_to_loads(trace, amount)
