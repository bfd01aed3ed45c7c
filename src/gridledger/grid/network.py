"""The network as data: tables with units in their column names (pandapower style).

A :class:`Network` holds engineering-unit tables (MW, Mvar, kV, per-unit on the system base for
branches). Solvers never read these tables in their inner loops; they work on the arrays of
:func:`gridledger.grid.compiled.compile_network`.

Conventions
-----------
* Bus ids are the case's own bus numbers (the table index); solvers use positional indices.
* ``branch`` holds lines and transformers alike in per-unit on ``base_mva`` (MATPOWER style):
  ``r_pu, x_pu, b_pu`` (total line charging), ``ratio`` (off-nominal tap, 0 or 1 = none, on the
  from side), ``shift_deg``, ``rate_mva`` (thermal rating; 0 = unlimited), ``kind``.
  :func:`ohm_to_pu` converts line data given in ohm.
* Generators have a ``role``: ``slack`` (angle reference, and a share of the balance when its
  ``slack_weight`` > 0), ``regulator`` (PV: holds ``vm_pu``, may supply reactive power for voltage
  support), or ``pq`` (fixed P and Q).  ``sn_mva`` is the rating of the capability circle
  P² + Q² ≤ Sn².  ``slack_weight`` > 0 on several generators gives a distributed slack (islanded
  microgrid: the DGs share the balance in proportion to their weights).
* Loads consume ``p_mw, q_mvar``; shunts inject ``-g_mw + j b_mvar`` at 1 pu (b > 0: capacitor);
  SVCs are reactive-only regulators with a range ``[qmin_mvar, qmax_mvar]``.
* ``no_load_shunts`` names the shunt rows that stand for the shunt conductance of branches
  (a transformer's magnetizing branch, a line's dielectric losses): their consumption is a
  network loss, reported apart from the series losses (``PowerFlowResult.no_load_loss_mw``).
* ``tap`` lists on-load tap changers (:mod:`gridledger.grid.taps`): a transformer branch, its
  position and range, step and side; the R-OPF can move them (``ropf.tap_search``).
* ``regulator_control`` says how the case's regulators are meant to run: ``"vm"`` (synchronous
  generators holding a voltage) or ``"q"`` (inverters injecting a reactive set-point, e.g. the
  static generators of a pandapower grid, which pandapower's own power flow treats as PQ).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import pandas as pd

# how regulators run: "vm" (voltage set-points) or "q" (reactive injections)
RegulatorControl = Literal["vm", "q"]


class NetworkError(ValueError):
    """A network that cannot be solved as given; the message names the element and the fault."""


class GenRole(StrEnum):
    SLACK = "slack"
    REGULATOR = "regulator"
    PQ = "pq"


BUS_COLUMNS = {"name": str, "vn_kv": float, "vmin_pu": float, "vmax_pu": float}
BRANCH_COLUMNS = {
    "from_bus": int,
    "to_bus": int,
    "r_pu": float,
    "x_pu": float,
    "b_pu": float,
    "ratio": float,
    "shift_deg": float,
    "rate_mva": float,
    "kind": str,
    "name": str,
}
GEN_COLUMNS = {
    "name": str,
    "bus": int,
    "role": str,
    "p_mw": float,
    "q_mvar": float,
    "vm_pu": float,
    "sn_mva": float,
    "pmin_mw": float,
    "pmax_mw": float,
    "qmin_mvar": float,
    "qmax_mvar": float,
    "slack_weight": float,
}
LOAD_COLUMNS = {"name": str, "bus": int, "p_mw": float, "q_mvar": float}
SHUNT_COLUMNS = {"name": str, "bus": int, "g_mw": float, "b_mvar": float}
SVC_COLUMNS = {"name": str, "bus": int, "qmin_mvar": float, "qmax_mvar": float, "q_mvar": float}
# On-load tap changers (gridledger.grid.taps): the transformer branch they sit on, by name.
TAP_COLUMNS = {
    "branch": str,
    "tap_pos": int,
    "tap_min": int,
    "tap_max": int,
    "tap_neutral": int,
    "step_percent": float,
    "side": str,
}

DEFAULT_VMIN_PU = 0.9
DEFAULT_VMAX_PU = 1.1


def _empty(columns: dict[str, type]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if t is str else t) for c, t in columns.items()})


def table(
    rows: list[dict[str, Any]], columns: dict[str, type], defaults: dict[str, Any] | None = None
) -> pd.DataFrame:
    """A table with the given columns from row dicts, ``defaults`` filled in; unknown keys fail."""
    defaults = defaults or {}
    if not rows:
        return _empty(columns)
    filled = []
    for i, row in enumerate(rows):
        unknown = set(row) - set(columns)
        if unknown:
            raise NetworkError(
                f"row {i}: unknown column(s) {sorted(unknown)}; known: {list(columns)}"
            )
        merged = {**defaults, **row}
        missing = [c for c in columns if c not in merged]
        if missing:
            raise NetworkError(f"row {i}: missing column(s) {missing}")
        filled.append(merged)
    frame = pd.DataFrame(filled, columns=list(columns))
    return frame.astype({c: (object if t is str else t) for c, t in columns.items()})


@dataclass(frozen=True)
class Network:
    """A balanced three-phase network in positive sequence.

    ``bus`` is indexed by bus id; the other tables have a plain 0..n-1 index.
    """

    name: str
    base_mva: float
    bus: pd.DataFrame
    branch: pd.DataFrame
    gen: pd.DataFrame
    load: pd.DataFrame = field(default_factory=lambda: _empty(LOAD_COLUMNS))
    shunt: pd.DataFrame = field(default_factory=lambda: _empty(SHUNT_COLUMNS))
    svc: pd.DataFrame = field(default_factory=lambda: _empty(SVC_COLUMNS))
    f_hz: float = 50.0
    notes: str = ""
    no_load_shunts: tuple[str, ...] = ()
    regulator_control: RegulatorControl = "vm"
    # On-load tap changers; the branch table holds each transformer at its current tap_pos.
    tap: pd.DataFrame = field(default_factory=lambda: _empty(TAP_COLUMNS))

    def with_tables(self, **tables: pd.DataFrame) -> Network:
        """A copy with some tables replaced (networks are values; never mutate one in place)."""
        # mypy matches **tables against every field; the names given are the tables'
        return replace(self, **tables)  # type: ignore[arg-type]

    def copy(self) -> Network:
        return replace(
            self,
            bus=self.bus.copy(),
            branch=self.branch.copy(),
            gen=self.gen.copy(),
            load=self.load.copy(),
            shunt=self.shunt.copy(),
            svc=self.svc.copy(),
            tap=self.tap.copy(),
        )

    @property
    def bus_ids(self) -> np.ndarray:
        return self.bus.index.to_numpy()

    def bus_position(self) -> dict[int, int]:
        """Map bus id -> position in the bus table (the solvers' index)."""
        return {int(b): i for i, b in enumerate(self.bus.index)}

    def gen_index(self, name: str) -> int:
        hits = np.flatnonzero(self.gen["name"].to_numpy() == name)
        if hits.size != 1:
            raise NetworkError(f"{self.name}: no single generator named {name!r}")
        return int(hits[0])


def ohm_to_pu(r_ohm: float, x_ohm: float, vn_kv: float, base_mva: float) -> tuple[float, float]:
    """Series impedance in ohm -> per-unit on (vn_kv, base_mva)."""
    z_base = vn_kv**2 / base_mva
    return r_ohm / z_base, x_ohm / z_base


def validate(net: Network) -> Network:
    """Check the network can be solved; raise :class:`NetworkError` naming the first fault.

    Tables are checked in order (buses, branches, generators, loads, shunts, SVCs), each row by
    row; within a row the checks run in the order written below.  The checks are vectorised
    (a row loop cost ~10 ms on 9 buses, paid on every compile) and report the same first fault.
    """
    if not (net.base_mva > 0 and math.isfinite(net.base_mva)):
        raise NetworkError(f"{net.name}: base_mva must be positive, got {net.base_mva}")
    if net.regulator_control not in ("vm", "q"):
        raise NetworkError(
            f"{net.name}: regulator_control must be 'vm' or 'q', got {net.regulator_control!r}"
        )
    missing = sorted(set(net.no_load_shunts) - set(net.shunt["name"]))
    if missing:
        raise NetworkError(f"{net.name}: no_load_shunts {missing} are not shunts of the network")
    if net.bus.empty:
        raise NetworkError(f"{net.name}: no buses")
    if not net.bus.index.is_unique:
        dup = net.bus.index[net.bus.index.duplicated()].tolist()
        raise NetworkError(f"{net.name}: duplicate bus id(s) {dup}")
    bus = net.bus
    vn = bus.vn_kv.to_numpy(float)
    vmin = bus.vmin_pu.to_numpy(float)
    vmax = bus.vmax_pu.to_numpy(float)
    _first_fault(
        bus.index,
        [
            (~(vn > 0), lambda i, k: f"bus {i} has non-positive vn_kv={vn[k]}"),
            (
                ~((vmin > 0) & (vmin <= vmax)),
                lambda i, k: (
                    f"bus {i} voltage limits must satisfy 0 < vmin_pu <= vmax_pu, "
                    f"got [{vmin[k]}, {vmax[k]}]"
                ),
            ),
        ],
        net.name,
    )
    known = np.asarray(net.bus.index, dtype=np.int64)

    def unknown(frame: pd.DataFrame, column: str) -> np.ndarray:
        values = frame[column].to_numpy()
        return ~np.isin(values.astype(np.int64), known)

    def named(kind: str, frame: pd.DataFrame, text: str) -> Callable[[Any, int], str]:
        names = frame["name"].to_numpy()
        return lambda i, k: f"{kind} {i} ({names[k]}) {text}"

    def bus_ref(kind: str, frame: pd.DataFrame, column: str) -> Callable[[Any, int], str]:
        names, buses = frame["name"].to_numpy(), frame[column].to_numpy()
        return lambda i, k: f"{kind} {i} ({names[k]}) connects to unknown bus {buses[k]}"

    br = net.branch
    fb, tb = br.from_bus.to_numpy(), br.to_bus.to_numpy()
    r, x = br.r_pu.to_numpy(float), br.x_pu.to_numpy(float)
    names = br["name"].to_numpy()
    _first_fault(
        br.index,
        [
            (unknown(br, "from_bus"), bus_ref("branch", br, "from_bus")),
            (unknown(br, "to_bus"), bus_ref("branch", br, "to_bus")),
            (fb == tb, lambda i, k: f"branch {i} ({names[k]}) loops bus {fb[k]}"),
            # A three-winding transformer's star equivalent may have a negative winding
            # resistance (the sum over two windings is positive); a line may not.
            (
                (r < 0) & (br.kind.to_numpy(object) != "transformer"),
                lambda i, k: f"branch {i} ({names[k]}) has negative r_pu={r[k]}",
            ),
            ((r == 0) & (x == 0), named("branch", br, "has zero impedance")),
            (
                (br.ratio.to_numpy(float) < 0) | (br.rate_mva.to_numpy(float) < 0),
                named("branch", br, "has negative ratio or rate_mva"),
            ),
        ],
        net.name,
    )
    gen = net.gen
    role = gen.role.to_numpy(object)
    roles = {r_.value for r_ in GenRole}
    sn = gen.sn_mva.to_numpy(float)
    vm = gen.vm_pu.to_numpy(float)
    gnames = gen["name"].to_numpy()
    _first_fault(
        gen.index,
        [
            (unknown(gen, "bus"), bus_ref("generator", gen, "bus")),
            (
                ~np.isin(role, list(roles)),
                lambda i, k: (
                    f"generator {i} ({gnames[k]}) has unknown role {role[k]!r}; "
                    f"expected one of {[r_.value for r_ in GenRole]}"
                ),
            ),
            (
                ~(sn > 0),
                lambda i, k: (
                    f"generator {i} ({gnames[k]}) needs a positive rating sn_mva, got {sn[k]}"
                ),
            ),
            (
                (role != GenRole.PQ.value) & ~(vm > 0),
                lambda i, k: f"generator {i} ({gnames[k]}) has vm_pu={vm[k]}",
            ),
            (
                (gen.qmin_mvar.to_numpy(float) > gen.qmax_mvar.to_numpy(float))
                | (gen.pmin_mw.to_numpy(float) > gen.pmax_mw.to_numpy(float)),
                named("generator", gen, "has min > max limits"),
            ),
            (gen.slack_weight.to_numpy(float) < 0, named("generator", gen, "has negative weight")),
        ],
        net.name,
    )
    for kind, frame in (("load", net.load), ("shunt", net.shunt), ("svc", net.svc)):
        _first_fault(frame.index, [(unknown(frame, "bus"), bus_ref(kind, frame, "bus"))], net.name)
    svc = net.svc
    _first_fault(
        svc.index,
        [
            (
                svc.qmin_mvar.to_numpy(float) > svc.qmax_mvar.to_numpy(float),
                named("svc", svc, "has qmin_mvar > qmax_mvar"),
            )
        ],
        net.name,
    )
    for frame, cols, kind in (
        (net.branch, ["r_pu", "x_pu", "b_pu", "ratio", "shift_deg", "rate_mva"], "branch"),
        (net.gen, ["p_mw", "q_mvar", "vm_pu", "sn_mva"], "generator"),
        (net.load, ["p_mw", "q_mvar"], "load"),
    ):
        values = frame[cols].to_numpy(dtype=float) if len(frame) else np.zeros((0, len(cols)))
        bad = ~np.isfinite(values)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise NetworkError(f"{net.name}: {kind} {i} has non-finite {cols[j]}")
    _check_islands(net)
    from .taps import check_taps  # the tap changers' rules live with their model

    check_taps(net)
    return net


def _first_fault(
    index: pd.Index,
    checks: list[tuple[np.ndarray, Callable[[Any, int], str]]],
    name: str,
) -> None:
    """Raise for the first row with a fault, naming that row's first failing check."""
    if not len(index):
        return
    masks = np.vstack([np.asarray(mask, dtype=bool) for mask, _ in checks])
    rows = np.flatnonzero(masks.any(axis=0))
    if rows.size:
        k = int(rows[0])
        which = int(np.flatnonzero(masks[:, k])[0])
        raise NetworkError(f"{name}: {checks[which][1](index[k], k)}")


def _check_islands(net: Network) -> None:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pos = net.bus_position()
    n = len(pos)
    f = np.array([pos[int(b)] for b in net.branch.from_bus], dtype=int)
    t = np.array([pos[int(b)] for b in net.branch.to_bus], dtype=int)
    graph = coo_matrix((np.ones(f.size), (f, t)), shape=(n, n))
    n_islands, label = connected_components(graph, directed=False)
    slack_buses = net.gen.loc[net.gen.role == GenRole.SLACK, "bus"]
    if slack_buses.empty:
        raise NetworkError(f"{net.name}: no slack generator (set role='slack' on one generator)")
    has_slack = {int(label[pos[int(b)]]) for b in slack_buses}
    for island in range(n_islands):
        if island not in has_slack:
            members = [int(b) for b, lab in zip(net.bus.index, label, strict=True) if lab == island]
            raise NetworkError(
                f"{net.name}: island of buses {members[:10]}{'...' if len(members) > 10 else ''} "
                "has no slack generator"
            )
    if n_islands > 1:
        raise NetworkError(
            f"{net.name}: network has {n_islands} islands; solve each island as its own network"
        )
