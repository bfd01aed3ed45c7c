"""Radial test feeders with DERs placed as in seed 001 §VI (seeded, reproducible).

A :class:`Feeder` is the radial graph in per-unit (1 MVA base) plus one :class:`NodeDers` per
node.  Node 0 is the root (substation / microturbine); node ``i ≥ 1`` has one line to its parent
``parent[i]``, with impedance ``r_pu[i] + j x_pu[i]``.

Placement (seed 001 §VI; the paper gives proportions, the sizes below are our stated choices):

* uncontrollable load: each load bus's peak (``peak_mva · pf``) times a residential daily shape
  (:data:`LOAD_SHAPE`, evening peak at hour 19), plus a uniform ±10 % perturbation per hour;
  reactive power at the bus's power factor;
* solar at 60 % of the non-root buses, peak ``U(0.5, 1.5)`` × the median bus peak load, shaped by
  the feeder's 24 h solar profile;
* deferrable loads at 70 %: a 3-hour profile of ``U(0.2, 0.5)`` × bus peak, arrival ``U{7..11}``
  (hours 7:00–11:00), at most ``U{2..6}`` hours of delay;
* shapable loads (EVs) at 70 %: energy ``U(0, 10)`` × bus peak × 1 h, window from ``U{10..14}``
  to 24:00, power up to 2× the energy spread evenly over the window;
* a battery at every non-root bus: power 50 % of the bus's peak controllable load (the sum of
  its deferrable and shapable peaks, or its uncontrollable peak when it has none), 4 h of
  energy, starting half full, end-of-day band ±5 %;
* the microturbine at the root: quadratic cost ``a·p² + b_t·p`` with ``b_t`` the hourly energy
  price (SCE-56 price shape) and ``a = 10 $/MW²h``.

Buses with no load of their own get the median bus peak for sizing their flexible loads.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np

from gridledger.grid.der import (
    Battery,
    DeferrableLoad,
    Generator,
    NodeDers,
    ShapableLoad,
    validate_node_ders,
)

HORIZON_H = 24
BASE_MVA = 1.0

# A residential daily shape (fraction of peak, hours 0..23): night trough, morning shoulder,
# evening peak.  Seed 001's Fig. 4 shows such an "average uncontrollable load" without data.
LOAD_SHAPE = (
    0.55, 0.50, 0.48, 0.47, 0.48, 0.55, 0.65, 0.75, 0.78, 0.76, 0.74, 0.73,
    0.72, 0.72, 0.73, 0.76, 0.82, 0.92, 1.00, 0.98, 0.90, 0.80, 0.70, 0.60,
)  # fmt: skip

# Quadratic cost coefficient of the root microturbine (seed 001 eq. 6 gives the form, not the
# value): a few $/MWh of marginal-cost rise per MW keeps the DLMPs responsive to the schedule.
QUAD_COST_USD_PER_MW2H = 10.0


class FeederError(ValueError):
    """A feeder that is not a connected radial tree rooted at node 0."""


@dataclass(frozen=True)
class Feeder:
    name: str
    bus_ids: tuple[int, ...]  # the case's own bus numbers, node order
    parent: np.ndarray  # parent[i] for i ≥ 1; parent[0] = -1
    r_pu: np.ndarray  # line (i, parent[i]); r_pu[0] = 0
    x_pu: np.ndarray
    vmin_pu: float
    vmax_pu: float
    ders: tuple[NodeDers, ...]
    base_kv: float
    root_vm_pu: float | None = None  # None: the root voltage is free within the band
    horizon_h: int = HORIZON_H

    @property
    def n_nodes(self) -> int:
        return len(self.bus_ids)

    def children(self, node: int) -> list[int]:
        return [int(k) for k in np.flatnonzero(self.parent == node)]

    def validate(self) -> Feeder:
        _check_radial(self.parent)
        for node, ders in enumerate(self.ders):
            validate_node_ders(f"{self.bus_ids[node]} (index {node})", ders, self.horizon_h)
        return self

    def with_ders(self, node: int, ders: NodeDers) -> Feeder:
        new = list(self.ders)
        new[node] = ders
        return replace(self, ders=tuple(new))


def _check_radial(parent: np.ndarray) -> None:
    n = len(parent)
    if n < 2 or parent[0] != -1:
        raise FeederError("node 0 must be the root (parent -1) of at least one line")
    for i in range(1, n):
        seen, j = 0, i
        while j != 0:
            j = int(parent[j])
            seen += 1
            if j < 0 or j >= n or seen > n:
                raise FeederError(f"node {i} does not reach the root: not a radial tree")


def _read_csv(name: str) -> list[dict[str, str]]:
    text = resources.files("gridledger.data.sce56").joinpath(name).read_text()
    return list(csv.DictReader(text.splitlines()))


def sce56_price_usd_per_mwh() -> np.ndarray:
    return np.array([float(r["energy_price"]) for r in _read_csv("energy_price_24h.csv")])


def sce56_solar_shape() -> np.ndarray:
    raw = np.array([float(r["solar_output"]) for r in _read_csv("solar_profile_24h.csv")])
    result: np.ndarray = raw / raw.max()
    return result


def _topology(
    bus_ids: list[int], edges: list[tuple[int, int, float, float]], root_bus: int
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Order nodes breadth-first from the root; return bus order, parent, r, x (pu)."""
    adj: dict[int, list[tuple[int, float, float]]] = {b: [] for b in bus_ids}
    for a, b, r, x in edges:
        if a not in adj or b not in adj:
            raise FeederError(f"line {a}-{b} names an unknown bus")
        adj[a].append((b, r, x))
        adj[b].append((a, r, x))
    if len(edges) != len(bus_ids) - 1:
        raise FeederError(f"{len(edges)} lines for {len(bus_ids)} buses: not a radial tree")
    order, par = [root_bus], {root_bus: (-1, 0.0, 0.0)}
    for bus in order:
        for nxt, r, x in adj[bus]:
            if nxt not in par:
                par[nxt] = (bus, r, x)
                order.append(nxt)
    if len(order) != len(bus_ids):
        raise FeederError("feeder is not connected")
    index = {b: i for i, b in enumerate(order)}
    parent = np.array([-1] + [index[par[b][0]] for b in order[1:]])
    rr = np.array([par[b][1] for b in order])
    xx = np.array([par[b][2] for b in order])
    return order, parent, rr, xx


def place_ders(
    order: list[int],
    peak_kw: dict[int, float],
    pf: dict[int, float],
    capacitors_kvar: dict[int, float],
    price_usd_per_mwh: np.ndarray,
    solar_shape: np.ndarray,
    seed: int,
    gen_p_max_kw: float,
) -> tuple[NodeDers, ...]:
    """Seed 001 §VI placement on the nodes in ``order`` (node 0 = root). See module doc."""
    rng = np.random.default_rng(seed)
    horizon = len(price_usd_per_mwh)
    shape = np.array(LOAD_SHAPE[:horizon])
    peaks = [p for p in peak_kw.values() if p > 0]
    median_peak_kw = float(np.median(peaks))
    non_root = list(range(1, len(order)))
    n = len(non_root)
    solar_nodes = set(rng.choice(non_root, size=round(0.6 * n), replace=False).tolist())
    deferrable_nodes = set(rng.choice(non_root, size=round(0.7 * n), replace=False).tolist())
    shapable_nodes = set(rng.choice(non_root, size=round(0.7 * n), replace=False).tolist())
    ders: list[NodeDers] = []
    for node, bus in enumerate(order):
        peak = peak_kw.get(bus, 0.0)
        tan_phi = math.tan(math.acos(pf.get(bus, 1.0)))
        load = peak * shape * (1 + rng.uniform(-0.1, 0.1, horizon))
        sizing_peak = peak if peak > 0 else median_peak_kw
        solar = np.zeros(horizon)
        if node in solar_nodes:
            solar = rng.uniform(0.5, 1.5) * median_peak_kw * solar_shape
        gen = battery = shapable = deferrable = None
        if node == 0:
            gen = Generator(
                cost_quad_usd_per_mw2h=QUAD_COST_USD_PER_MW2H,
                cost_lin_usd_per_mwh=tuple(float(p) for p in price_usd_per_mwh),
                p_min_kw=0.0,
                p_max_kw=gen_p_max_kw,
                q_min_kvar=-gen_p_max_kw,
                q_max_kvar=gen_p_max_kw,
            )
        else:
            controllable_peak_kw = 0.0
            if node in deferrable_nodes:
                level = rng.uniform(0.2, 0.5) * sizing_peak
                deferrable = DeferrableLoad(
                    profile_kw=(level, level, level),
                    arrival_hour=int(rng.integers(7, 12)),
                    max_delay_hours=int(rng.integers(2, 7)),
                )
                controllable_peak_kw += level
            if node in shapable_nodes:
                energy = rng.uniform(0.0, 10.0) * sizing_peak
                start = int(rng.integers(10, 15))
                p_max = 2.0 * energy / (horizon - start)
                shapable = ShapableLoad(energy, 0.0, p_max, start, horizon)
                controllable_peak_kw += p_max
            if controllable_peak_kw == 0:
                controllable_peak_kw = sizing_peak
            power = 0.5 * controllable_peak_kw
            battery = Battery(
                charge_kw_max=power,
                discharge_kw_max=power,
                energy_kwh_min=0.0,
                energy_kwh_max=4 * power,
                energy_kwh_initial=2 * power,
            )
        ders.append(
            NodeDers(
                load_kw=tuple(float(v) for v in load),
                load_kvar=tuple(float(v) for v in load * tan_phi),
                solar_kw=tuple(float(v) for v in solar),
                capacitor_kvar=capacitors_kvar.get(bus, 0.0),
                generator=gen,
                battery=battery,
                shapable=shapable,
                deferrable=deferrable,
            )
        )
    return tuple(ders)


def sce56(seed: int = 1, vmin_pu: float = 0.95, vmax_pu: float = 1.05) -> Feeder:
    """SCE 56-bus feeder (12 kV) with seed 001's DERs; bus 1 is the root."""
    base_kv = 12.0
    z_base = base_kv**2 / BASE_MVA
    lines = _read_csv("lines.csv")
    edges = [
        (
            int(r["from_bus"]),
            int(r["to_bus"]),
            float(r["r_ohm"]) / z_base,
            float(r["x_ohm"]) / z_base,
        )
        for r in lines
    ]
    bus_ids = sorted({e[0] for e in edges} | {e[1] for e in edges})
    order, parent, r_pu, x_pu = _topology(bus_ids, edges, root_bus=1)
    loads = _read_csv("loads.csv")
    peak_kw = {int(r["bus"]): 1000 * float(r["peak_mva"]) * float(r["power_factor"]) for r in loads}
    pf = {int(r["bus"]): float(r["power_factor"]) for r in loads}
    caps = {int(r["bus"]): 1000 * float(r["q_mvar"]) for r in _read_csv("shunt_capacitors.csv")}
    ders = place_ders(
        order, peak_kw, pf, caps, sce56_price_usd_per_mwh(), sce56_solar_shape(), seed, 10_000.0
    )
    return Feeder(
        "sce56", tuple(order), parent, r_pu, x_pu, vmin_pu, vmax_pu, ders, base_kv
    ).validate()


def case33bw(seed: int = 2, vmin_pu: float = 0.90, vmax_pu: float = 1.05) -> Feeder:
    """Baran–Wu 33-bus feeder (12.66 kV, from pandapower) with seed 001's DER placement."""
    import pandapower.networks as pn

    net = pn.case33bw()
    base_kv = float(net.bus.vn_kv.iloc[0])
    z_base = base_kv**2 / BASE_MVA
    closed = net.line[net.line.in_service]
    edges = [
        (
            int(row.from_bus),
            int(row.to_bus),
            row.r_ohm_per_km * row.length_km / z_base,
            row.x_ohm_per_km * row.length_km / z_base,
        )
        for row in closed.itertuples()
    ]
    root_bus = int(net.ext_grid.bus.iloc[0])
    order, parent, r_pu, x_pu = _topology(list(net.bus.index), edges, root_bus)
    peak_kw = {int(b): 1000 * float(p) for b, p in zip(net.load.bus, net.load.p_mw, strict=True)}
    pf = {
        int(b): float(p / math.hypot(p, q)) if p > 0 else 1.0
        for b, p, q in zip(net.load.bus, net.load.p_mw, net.load.q_mvar, strict=True)
    }
    ders = place_ders(
        order, peak_kw, pf, {}, sce56_price_usd_per_mwh(), sce56_solar_shape(), seed, 20_000.0
    )
    return Feeder(
        "case33bw", tuple(order), parent, r_pu, x_pu, vmin_pu, vmax_pu, ders, base_kv
    ).validate()


def load_feeder(name: str, seed: int | None = None) -> Feeder:
    """``sce56`` or ``case33bw``; ``name[:k]`` is the :func:`head` of k nodes."""
    builders = {"sce56": sce56, "case33bw": case33bw}
    base, sep, rest = name.partition("[:")
    if sep and rest.endswith("]") and rest[:-1].isdigit() and base in builders:
        return head(load_feeder(base, seed), int(rest[:-1]))
    if name not in builders:
        raise FeederError(
            f"unknown feeder {name!r}; expected one of {sorted(builders)}, "
            "or NAME[:k] for its first k nodes (e.g. case33bw[:6])"
        )
    return builders[name]() if seed is None else builders[name](seed=seed)


def head(feeder: Feeder, n_nodes: int) -> Feeder:
    """The first ``n_nodes`` nodes (breadth-first order keeps it a connected tree): small cases
    for tests and examples."""
    if not 2 <= n_nodes <= feeder.n_nodes:
        raise FeederError(f"head of {n_nodes} nodes: feeder has {feeder.n_nodes}")
    k = n_nodes
    return replace(
        feeder,
        name=f"{feeder.name}[:{k}]",
        bus_ids=feeder.bus_ids[:k],
        parent=feeder.parent[:k],
        r_pu=feeder.r_pu[:k],
        x_pu=feeder.x_pu[:k],
        ders=feeder.ders[:k],
    ).validate()
