"""Distributed energy resources of seed 001 §IV.B, as data, with their validation.

Every device is a frozen dataclass with engineering units in its field names (kW, kWh, hours
as 0-based indices of the scheduling horizon). :func:`validate_node_ders` checks a node's devices
against the horizon *before* anything is solved and names the node, the device and the fault
(:class:`DerSpecError`), so an infeasible specification never reaches the solver as an opaque
"infeasible" status.

Models
------
* :class:`Generator` — dispatchable, quadratic cost ``a·p² + b_t·p`` (eq. 6), p in MW, cost in $.
* :class:`Battery` — eq. 7: charge ``c``, discharge ``d``, energy ``E(t) = E(t-1) + c·η_in −
  d/η_out`` (1 h steps), energy limits and an end-of-day band ``|E(T) − E0| ≤ ε·E0``.  (Eq. 7f in
  the seed reads ``(1+ε)E(1) ≤ E(T) ≤ (1−ε)E(1)``, empty for ε > 0 — a typo for this band.)
* :class:`ShapableLoad` — eq. 8: ``P_min ≤ s(t) ≤ P_max`` inside ``[start_hour, end_hour)``,
  zero outside, ``Σ s(t) = energy``.
* :class:`DeferrableLoad` — eq. 9: a fixed profile started at most ``max_delay_hours`` after
  ``arrival_hour``.  The departure process ``d(t)`` (fraction started by hour t) is relaxed from
  {0, 1} to [0, 1]; consumption is ``Φ d`` with Φ the convolution of the profile with the
  first difference of d (seed 001 after its ref. [22]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KW_PER_PU = 1000.0  # 1 MVA base: the feeders' optimization and power flow run in pu


class DerSpecError(ValueError):
    """A DER specification that cannot be scheduled; the message names node, device and fault."""


@dataclass(frozen=True)
class Generator:
    cost_quad_usd_per_mw2h: float
    cost_lin_usd_per_mwh: tuple[float, ...]
    p_min_kw: float
    p_max_kw: float
    q_min_kvar: float
    q_max_kvar: float


@dataclass(frozen=True)
class Battery:
    charge_kw_max: float
    discharge_kw_max: float
    energy_kwh_min: float
    energy_kwh_max: float
    energy_kwh_initial: float
    eta_in: float = 0.95
    eta_out: float = 0.95
    end_band: float = 0.05


@dataclass(frozen=True)
class ShapableLoad:
    energy_kwh: float
    power_kw_min: float
    power_kw_max: float
    start_hour: int
    end_hour: int


@dataclass(frozen=True)
class DeferrableLoad:
    profile_kw: tuple[float, ...]
    arrival_hour: int
    max_delay_hours: int


@dataclass(frozen=True)
class NodeDers:
    """Everything at one node over the horizon (arrays of length T, kW / kvar)."""

    load_kw: tuple[float, ...]
    load_kvar: tuple[float, ...]
    solar_kw: tuple[float, ...]
    capacitor_kvar: float = 0.0
    generator: Generator | None = None
    battery: Battery | None = None
    shapable: ShapableLoad | None = None
    deferrable: DeferrableLoad | None = None


def deferrable_matrix(load: DeferrableLoad, horizon: int) -> np.ndarray:
    """Φ (T×T, kW per unit of departure process): consumption = Φ @ d."""
    n_profile = len(load.profile_kw)
    conv = np.zeros((horizon, horizon))
    for start in range(horizon):
        for tau in range(n_profile):
            if start + tau < horizon:
                conv[start + tau, start] = load.profile_kw[tau]
    diff = np.eye(horizon) - np.eye(horizon, k=-1)  # start fraction u = D d, d(-1) = 0
    return conv @ diff


def deferrable_bounds(load: DeferrableLoad, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the departure process: 0 before arrival (9a), 1 from arrival + ζ on (9b)."""
    hours = np.arange(horizon)
    upper = (hours >= load.arrival_hour).astype(float)
    lower = (hours >= load.arrival_hour + load.max_delay_hours).astype(float)
    return lower, upper


def _fail(node: str, device: str, why: str) -> None:
    raise DerSpecError(f"node {node}: {device}: {why}")


def validate_node_ders(node: str, ders: NodeDers, horizon: int) -> None:
    """Raise :class:`DerSpecError` if a device of this node cannot be scheduled on the horizon."""
    for name in ("load_kw", "load_kvar", "solar_kw"):
        values = getattr(ders, name)
        if len(values) != horizon:
            _fail(node, name, f"has {len(values)} values, horizon is {horizon} h")
        if not all(math.isfinite(v) for v in values):
            _fail(node, name, "contains a non-finite value")
    if min(ders.solar_kw) < 0:
        _fail(node, "solar_kw", "is negative")
    gen = ders.generator
    if gen is not None:
        if len(gen.cost_lin_usd_per_mwh) != horizon:
            _fail(
                node, "generator", f"cost has {len(gen.cost_lin_usd_per_mwh)} hours, not {horizon}"
            )
        if gen.cost_quad_usd_per_mw2h < 0:
            _fail(node, "generator", "negative quadratic cost (non-convex)")
        if gen.p_min_kw > gen.p_max_kw or gen.q_min_kvar > gen.q_max_kvar:
            _fail(node, "generator", "minimum above maximum")
    bat = ders.battery
    if bat is not None:
        if min(bat.charge_kw_max, bat.discharge_kw_max, bat.energy_kwh_min) < 0:
            _fail(node, "battery", "negative power or energy limit")
        if not (0 < bat.eta_in <= 1 and 0 < bat.eta_out <= 1):
            _fail(node, "battery", f"efficiencies {bat.eta_in}, {bat.eta_out} not in (0, 1]")
        if not bat.energy_kwh_min <= bat.energy_kwh_initial <= bat.energy_kwh_max:
            _fail(
                node,
                "battery",
                f"initial energy {bat.energy_kwh_initial} kWh outside "
                f"[{bat.energy_kwh_min}, {bat.energy_kwh_max}] kWh",
            )
        if bat.end_band < 0:
            _fail(node, "battery", "negative end-of-day band")
    shp = ders.shapable
    if shp is not None:
        if not 0 <= shp.start_hour < shp.end_hour <= horizon:
            _fail(
                node,
                "shapable load",
                f"window [{shp.start_hour}, {shp.end_hour}) not inside [0, {horizon})",
            )
        if shp.power_kw_min < 0 or shp.power_kw_min > shp.power_kw_max:
            _fail(node, "shapable load", "power limits not 0 ≤ min ≤ max")
        hours = shp.end_hour - shp.start_hour
        if not shp.power_kw_min * hours <= shp.energy_kwh <= shp.power_kw_max * hours:
            _fail(
                node,
                "shapable load",
                f"energy {shp.energy_kwh:.3f} kWh not deliverable in {hours} h between "
                f"{shp.power_kw_min} and {shp.power_kw_max} kW",
            )
    dfr = ders.deferrable
    if dfr is not None:
        if not dfr.profile_kw or min(dfr.profile_kw) < 0:
            _fail(node, "deferrable load", "profile empty or negative")
        if dfr.arrival_hour < 0 or dfr.max_delay_hours < 0:
            _fail(node, "deferrable load", "negative arrival or delay")
        latest_end = dfr.arrival_hour + dfr.max_delay_hours + len(dfr.profile_kw)
        if latest_end > horizon:
            _fail(
                node,
                "deferrable load",
                f"arrival {dfr.arrival_hour} + delay {dfr.max_delay_hours} + "
                f"{len(dfr.profile_kw)} h profile ends at hour {latest_end} > horizon {horizon}",
            )
