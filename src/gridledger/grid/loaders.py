"""Turn foreign case formats into a :class:`Network`: MATPOWER ``.m`` files, pandapower networks.

Both go through one converter, :func:`network_from_ppc`, that reads the MATPOWER/PYPOWER case
layout (``baseMVA``, ``bus``, ``gen``, ``branch`` matrices with MATPOWER's column order).

* MATPOWER ``.m``: parsed here.  pandapower's own ``from_mpc`` needs the extra package
  ``matpowercaseframes`` for ``.m`` files (not a dependency, and not installed), and the case
  format is small: numeric matrices assigned to ``mpc.<field>``.
* pandapower networks: ``pandapower.converter.pypower.to_ppc`` (pandapower's own element models:
  lines, transformers, switches) and then the same converter, with loads, static generators and
  storage kept as named elements (:func:`from_pandapower`).  Bus ids stay pandapower's bus
  indices.  SimBench grids (:func:`load_simbench`) are pandapower networks.

Generator ratings: MATPOWER's ``mBase`` is usually the system base (100 MVA even for a 300 MW
unit), so ``sn_mva`` is the smallest circle around the box limits,
``sqrt(Pmax² + max(|Qmin|, |Qmax|)²)``; ``mBase`` only when that is not a positive finite number.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .network import (
    BRANCH_COLUMNS,
    BUS_COLUMNS,
    DEFAULT_VMAX_PU,
    DEFAULT_VMIN_PU,
    GEN_COLUMNS,
    LOAD_COLUMNS,
    SHUNT_COLUMNS,
    SVC_COLUMNS,
    GenRole,
    Network,
    NetworkError,
    table,
    validate,
)
from .taps import pandapower_tap_table

# MATPOWER column indices (0-based), see MATPOWER's idx_bus / idx_gen / idx_brch.
BUS_I, BUS_TYPE, PD, QD, GS, BS, VM, VA, BASE_KV, VMAX, VMIN = 0, 1, 2, 3, 4, 5, 7, 8, 9, 11, 12
GEN_BUS, PG, QG, QMAX, QMIN, VG, MBASE, GEN_STATUS, PMAX, PMIN = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
F_BUS, T_BUS, BR_R, BR_X, BR_B, RATE_A, TAP, SHIFT, BR_STATUS = 0, 1, 2, 3, 4, 5, 8, 9, 10
MP_PQ, MP_PV, MP_REF, MP_NONE = 1, 2, 3, 4


class CaseFormatError(NetworkError):
    """A case file that cannot be read; the message names the file and what is wrong."""


# --------------------------------------------------------------------------------------------
# MATPOWER .m
# --------------------------------------------------------------------------------------------

_FIELD = re.compile(r"mpc\.(\w+)\s*=\s*(\[.*?\]|[^;\n]+)\s*;?", re.DOTALL)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_matpower(text: str, source: str = "<text>") -> dict[str, Any]:
    """Parse the MATPOWER case format into ``{"baseMVA": float, "bus": array, ...}``.

    Numeric matrices and scalars are read; string fields (``version``) are kept as strings;
    cell arrays (``bus_name``) are skipped.
    """
    lines = []
    for raw in text.splitlines():
        # Comments start at '%' (MATPOWER case files never put '%' inside strings of data).
        lines.append(raw.split("%", 1)[0])
    body = "\n".join(lines)
    out: dict[str, Any] = {}
    for match in _FIELD.finditer(body):
        name, value = match.group(1), match.group(2).strip()
        if value.startswith("["):
            out[name] = _parse_matrix(value[1:-1], f"{source}: mpc.{name}")
        elif value.startswith("{"):
            continue
        elif value.startswith("'"):
            out[name] = value.strip("'")
        else:
            try:
                out[name] = float(value)
            except ValueError as exc:
                raise CaseFormatError(f"{source}: mpc.{name} = {value!r} is not a number") from exc
    for required in ("baseMVA", "bus", "gen", "branch"):
        if required not in out:
            raise CaseFormatError(f"{source}: no mpc.{required} found (not a MATPOWER case file?)")
    return out


def _parse_matrix(body: str, where: str) -> np.ndarray:
    rows = []
    # '...' continues a row on the next line (anything after it on the line is ignored).
    body = re.sub(r"\.\.\.[^\n]*(\n|$)", " ", body)
    for chunk in re.split(r"[;\n]", body):
        tokens = chunk.replace(",", " ").split()
        if not tokens:
            continue
        row = []
        for tok in tokens:
            low = tok.lower()
            if low in ("inf", "+inf"):
                row.append(math.inf)
            elif low == "-inf":
                row.append(-math.inf)
            elif _NUMBER.match(tok):
                row.append(float(tok))
            else:
                raise CaseFormatError(f"{where}: cannot read {tok!r} as a number")
        rows.append(row)
    if not rows:
        return np.zeros((0, 0))
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise CaseFormatError(f"{where}: row {i + 1} has {len(row)} columns, expected {width}")
    return np.array(rows, dtype=float)


def load_matpower(path: str | Path, name: str | None = None) -> Network:
    """Read a MATPOWER ``.m`` case file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise CaseFormatError(f"cannot read MATPOWER file {p}: {exc.strerror}") from exc
    ppc = parse_matpower(text, source=str(p))
    return network_from_ppc(ppc, name=name or p.stem, notes=f"MATPOWER case file {p.name}")


def to_matpower(net: Network) -> str:
    """The network as MATPOWER case-file text (version 2), readable by :func:`parse_matpower`.

    MATPOWER has no field for three things gridledger keeps; they go into extra fields that
    MATPOWER ignores and :func:`network_from_ppc` reads back, so a round trip is lossless:
    ``mpc.gen_sn_mva`` (ratings; ``mBase`` is usually the system base), ``mpc.gen_slack_weight``
    (distributed slack) and ``mpc.svc`` (``bus qmin qmax q`` in Mvar).  Bus numbers are kept; if
    any is below 1 (pandapower's 0-based ids) all are shifted so the smallest is 1, as MATPOWER
    requires.
    """
    validate(net)
    ids = np.asarray(net.bus.index, dtype=np.int64)
    offset = 1 - int(ids.min()) if ids.min() < 1 else 0
    pos = net.bus_position()
    gen = net.gen
    roles = gen.role.to_numpy(str)
    slack_buses = {int(b) for b in gen.bus[roles == GenRole.SLACK]}  # several: distributed
    held = {int(b) for b in gen.bus[roles != GenRole.PQ]}
    pd_, qd, gs, bs = (np.zeros(len(ids)) for _ in range(4))
    load, shunt = net.load, net.shunt
    for bus, p, q in zip(load.bus.tolist(), load.p_mw.tolist(), load.q_mvar.tolist(), strict=True):
        pd_[pos[int(bus)]] += p
        qd[pos[int(bus)]] += q
    shunts = zip(shunt.bus.tolist(), shunt.g_mw.tolist(), shunt.b_mvar.tolist(), strict=True)
    for bus, g_mw, b_mvar in shunts:
        gs[pos[int(bus)]] += g_mw
        bs[pos[int(bus)]] += b_mvar
    name = re.sub(r"[^A-Za-z0-9_]", "_", net.name) or "case"
    lines = [f"function mpc = {name}", f"%   written by gridledger from network {net.name!r}"]
    if offset:
        lines.append(f"%   bus numbers shifted by +{offset} (MATPOWER needs numbers >= 1)")
    lines += ["", "mpc.version = '2';", f"mpc.baseMVA = {_num(net.base_mva)};", ""]
    lines.append("mpc.bus = [")
    for i, (_, bus_row) in enumerate(net.bus.iterrows()):
        b = int(ids[i])
        kind = MP_REF if b in slack_buses else (MP_PV if b in held else MP_PQ)
        cells = [b + offset, kind, pd_[i], qd[i], gs[i], bs[i], 1, 1, 0, bus_row.vn_kv, 1]
        lines.append(_row([*cells, bus_row.vmax_pu, bus_row.vmin_pu]))
    lines += ["];", "", "mpc.gen = ["]
    for bus, row in zip(gen.bus.tolist(), gen.itertuples(), strict=True):
        cells = [int(bus) + offset, row.p_mw, row.q_mvar, row.qmax_mvar, row.qmin_mvar]
        lines.append(_row([*cells, row.vm_pu, net.base_mva, 1, row.pmax_mw, row.pmin_mw]))
    lines += ["];", "", "mpc.branch = ["]
    branch = net.branch
    ends = zip(branch.from_bus.tolist(), branch.to_bus.tolist(), strict=True)
    for (f, t), row in zip(ends, branch.itertuples(), strict=True):
        cells = [int(f) + offset, int(t) + offset, row.r_pu, row.x_pu]
        cells += [row.b_pu, row.rate_mva, 0, 0, row.ratio, row.shift_deg, 1, -360, 360]
        lines.append(_row(cells))
    lines += ["];", "", "%% gridledger extras (ignored by MATPOWER)", "mpc.gen_sn_mva = ["]
    lines += [_row([v]) for v in gen.sn_mva] + ["];", "mpc.gen_slack_weight = ["]
    lines += [_row([v]) for v in gen.slack_weight] + ["];"]
    if len(net.svc):
        lines.append("mpc.svc = [")
        for bus, row in zip(net.svc.bus.tolist(), net.svc.itertuples(), strict=True):
            lines.append(_row([int(bus) + offset, row.qmin_mvar, row.qmax_mvar, row.q_mvar]))
        lines.append("];")
    return "\n".join([*lines, ""])


def _row(cells: list[Any]) -> str:
    return "\t" + "\t".join(str(c) if isinstance(c, int) else _num(c) for c in cells) + ";"


def _num(x: float) -> str:
    """Shortest text that reads back as the same float (MATPOWER has no other number syntax)."""
    return repr(float(x))


# --------------------------------------------------------------------------------------------
# The MATPOWER/PYPOWER layout -> Network
# --------------------------------------------------------------------------------------------


def _gen_rating(pmax: float, qmin: float, qmax: float, mbase: float) -> float:
    q = max(abs(qmin), abs(qmax))
    sn = math.hypot(pmax, q) if math.isfinite(pmax) and math.isfinite(q) else math.nan
    if math.isfinite(sn) and sn > 0:
        return sn
    return mbase


def network_from_ppc(
    ppc: dict[str, Any],
    name: str,
    bus_ids: np.ndarray | None = None,
    slack_weight: np.ndarray | None = None,
    notes: str = "",
) -> Network:
    """Build a Network from MATPOWER-layout matrices (external bus numbers in column BUS_I).

    ``bus_ids`` renames the ppc buses (row order) to other ids; ``slack_weight`` (one per gen
    row) makes a distributed slack.  Out-of-service generators and branches and isolated buses
    (type 4) are dropped.
    """
    base = float(ppc["baseMVA"])
    bus, gen, branch = _ppc_matrices(ppc, name)
    sn_given = _extra_column(ppc, "gen_sn_mva", gen.shape[0], name)
    weights = slack_weight
    if weights is None:
        weights = _extra_column(ppc, "gen_slack_weight", gen.shape[0], name)
    buses = _PpcBuses.of(bus, bus_ids, name)
    branch_rows = _ppc_branch_rows(branch, buses)
    gen_rows = _ppc_gen_rows(gen, buses, sn_given, weights, base)
    load_rows, shunt_rows = _ppc_load_shunt_rows(buses)
    svc_rows = _ppc_svc_rows(ppc, buses)
    return Network(
        name=name,
        base_mva=base,
        bus=buses.table(),
        branch=table(branch_rows, BRANCH_COLUMNS),
        gen=table(gen_rows, GEN_COLUMNS),
        load=table(load_rows, LOAD_COLUMNS),
        shunt=table(shunt_rows, SHUNT_COLUMNS),
        svc=table(svc_rows, SVC_COLUMNS),
        notes=notes,
    )


def _ppc_matrices(ppc: dict[str, Any], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bus, gen and branch matrices, checked for their MATPOWER column counts."""
    bus = np.asarray(ppc["bus"], dtype=float)
    gen = np.asarray(ppc["gen"], dtype=float)
    branch = np.asarray(ppc["branch"], dtype=float)
    if bus.ndim != 2 or bus.shape[1] < 13:
        raise CaseFormatError(f"{name}: bus matrix needs 13 columns, got shape {bus.shape}")
    if gen.ndim != 2 or gen.shape[1] < 10:
        raise CaseFormatError(f"{name}: gen matrix needs at least 10 columns, got {gen.shape}")
    if branch.ndim != 2 or branch.shape[1] < 11:
        raise CaseFormatError(f"{name}: branch matrix needs 11 columns, got {branch.shape}")
    return bus, gen, branch


@dataclass(frozen=True)
class _PpcBuses:
    """A ppc's buses: their new ids, MATPOWER types and which are kept (not isolated)."""

    case: str  # the network's name, for errors
    rows: np.ndarray  # the kept rows of the bus matrix
    ids: np.ndarray  # the kept buses' ids
    id_of: dict[int, int]  # ppc bus number -> id
    type_of: dict[int, int]  # ppc bus number -> MATPOWER bus type

    @staticmethod
    def of(bus: np.ndarray, bus_ids: np.ndarray | None, name: str) -> _PpcBuses:
        number = bus[:, BUS_I].astype(np.int64)
        ids = number if bus_ids is None else np.asarray(bus_ids, dtype=np.int64)
        if ids.shape != number.shape:
            raise CaseFormatError(f"{name}: {ids.size} bus ids for {number.size} buses")
        keep = bus[:, BUS_TYPE] != MP_NONE
        return _PpcBuses(
            case=name,
            rows=bus[keep],
            ids=ids[keep],
            id_of=dict(zip(number.tolist(), ids.tolist(), strict=True)),
            type_of=dict(zip(number.tolist(), bus[:, BUS_TYPE].astype(int).tolist(), strict=True)),
        )

    def bus_id(self, k: float, what: str) -> int:
        if int(k) not in self.id_of:
            raise NetworkError(f"{self.case}: {what} refers to unknown bus {int(k)}")
        return self.id_of[int(k)]

    def alive(self) -> set[int]:
        return set(self.ids.tolist())

    def table(self) -> pd.DataFrame:
        bus_rows = []
        for row in self.rows:
            vmin, vmax = row[VMIN], row[VMAX]
            if not (0 < vmin < vmax):
                vmin, vmax = DEFAULT_VMIN_PU, DEFAULT_VMAX_PU
            bus_rows.append(
                {
                    "name": str(self.id_of[int(row[BUS_I])]),
                    "vn_kv": row[BASE_KV] if row[BASE_KV] > 0 else 1.0,
                    "vmin_pu": vmin,
                    "vmax_pu": vmax,
                }
            )
        bus_table = table(bus_rows, BUS_COLUMNS)
        bus_table.index = self.ids
        return bus_table


def _ppc_branch_rows(branch: np.ndarray, buses: _PpcBuses) -> list[dict[str, Any]]:
    """In-service branches between kept buses; a tap or a phase shift makes a transformer."""
    alive = buses.alive()
    rows = []
    for i, row in enumerate(branch):
        if row[BR_STATUS] <= 0:
            continue
        f = buses.bus_id(row[F_BUS], f"branch {i}")
        t = buses.bus_id(row[T_BUS], f"branch {i}")
        if f not in alive or t not in alive:
            continue
        rate = row[RATE_A] if math.isfinite(row[RATE_A]) and row[RATE_A] > 0 else 0.0
        is_trafo = row[TAP] not in (0.0, 1.0) or row[SHIFT] != 0.0
        rows.append(
            {
                "from_bus": f,
                "to_bus": t,
                "r_pu": row[BR_R],
                "x_pu": row[BR_X],
                "b_pu": row[BR_B],
                "ratio": row[TAP],
                "shift_deg": row[SHIFT],
                "rate_mva": rate,
                "kind": "transformer" if is_trafo else "line",
                "name": f"{f}-{t}",
            }
        )
    return rows


def _ppc_gen_rows(
    gen: np.ndarray,
    buses: _PpcBuses,
    sn_given: np.ndarray | None,
    weights: np.ndarray | None,
    base: float,
) -> list[dict[str, Any]]:
    """In-service generators at kept buses; the bus type gives the role."""
    rows: list[dict[str, Any]] = []
    for i, row in enumerate(gen):
        if row[GEN_STATUS] <= 0:
            continue
        b = buses.bus_id(row[GEN_BUS], f"generator {i}")
        kind = buses.type_of[int(row[GEN_BUS])]
        if kind == MP_NONE:
            continue
        role = {MP_REF: GenRole.SLACK, MP_PV: GenRole.REGULATOR}.get(kind, GenRole.PQ)
        qmin = row[QMIN] if math.isfinite(row[QMIN]) else -1e9
        qmax = row[QMAX] if math.isfinite(row[QMAX]) else 1e9
        rows.append(
            {
                "name": f"G{len(rows) + 1}@{b}",
                "bus": b,
                "role": role.value,
                "p_mw": row[PG],
                "q_mvar": row[QG],
                "vm_pu": row[VG] if row[VG] > 0 else 1.0,
                "sn_mva": float(sn_given[i])
                if sn_given is not None
                else _gen_rating(row[PMAX], row[QMIN], row[QMAX], row[MBASE] or base),
                "pmin_mw": row[PMIN],
                "pmax_mw": row[PMAX],
                "qmin_mvar": qmin,
                "qmax_mvar": qmax,
                "slack_weight": 0.0 if weights is None else float(weights[i]),
            }
        )
    return rows


def _ppc_load_shunt_rows(buses: _PpcBuses) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A kept bus's demand (PD, QD) is a load; its shunt admittance (GS, BS) a shunt."""
    load_rows, shunt_rows = [], []
    for row in buses.rows:
        b = buses.id_of[int(row[BUS_I])]
        if row[PD] != 0 or row[QD] != 0:
            load_rows.append({"name": f"L{b}", "bus": b, "p_mw": row[PD], "q_mvar": row[QD]})
        if row[GS] != 0 or row[BS] != 0:
            shunt_rows.append({"name": f"SH{b}", "bus": b, "g_mw": row[GS], "b_mvar": row[BS]})
    return load_rows, shunt_rows


def _ppc_svc_rows(ppc: dict[str, Any], buses: _PpcBuses) -> list[dict[str, Any]]:
    """The optional ``svc`` matrix (bus, qmin, qmax, q) that :func:`to_matpower` writes."""
    svc = np.asarray(ppc.get("svc", np.zeros((0, 4))), dtype=float)
    if svc.size and (svc.ndim != 2 or svc.shape[1] != 4):
        raise CaseFormatError(
            f"{buses.case}: svc matrix needs 4 columns (bus qmin qmax q), got {svc.shape}"
        )
    rows = []
    for row in svc.reshape(-1, 4):
        b = buses.bus_id(row[0], "svc")
        rows.append(
            {
                "name": f"SVC{b}",
                "bus": b,
                "qmin_mvar": row[1],
                "qmax_mvar": row[2],
                "q_mvar": row[3],
            }
        )
    return rows


def _extra_column(ppc: dict[str, Any], key: str, n: int, name: str) -> np.ndarray | None:
    """An optional one-value-per-generator field written by :func:`to_matpower`."""
    if key not in ppc:
        return None
    values = np.asarray(ppc[key], dtype=float).ravel()
    if values.size != n:
        raise CaseFormatError(f"{name}: mpc.{key} has {values.size} values for {n} generators")
    return values


# --------------------------------------------------------------------------------------------
# pandapower
# --------------------------------------------------------------------------------------------


# Static generators that set no reactive limits of their own may give reactive power up to this
# power factor at their rated apparent power: |Q| <= Sn·sin(acos 0.9) = 0.436·Sn, the range
# the German LV connection rule VDE-AR-N 4105 asks of inverters above 4.6 kVA.
DEFAULT_SGEN_POWER_FACTOR = 0.9
# pandapower elements that are loads, static generators and storage: kept as named elements
# (sellers and buyers are named by them) instead of being folded into bus injections.
_ELEMENT_KINDS = ("load", "sgen", "storage")


def from_pandapower(
    net: Any,
    name: str | None = None,
    trafo_model: str = "t",
    *,
    sgen_power_factor: float = DEFAULT_SGEN_POWER_FACTOR,
    sgen_q_pu: float | None = None,
) -> Network:
    """Convert a pandapower network (its in-service part) with pandapower's own element models.

    Topology, lines, transformers (tap positions included), switches (open bus-bus and line
    switches), impedances and wards go through pandapower's ``to_ppc``; loads, static generators
    and storage units are kept as named elements:

    * each load is a load named by its pandapower name (``"load <index>"`` when it has none or
      shares it), ``p_mw·scaling``, ``q_mvar·scaling``;
    * each static generator is a generator (a seller) injecting its ``p_mw, q_mvar`` (times
      ``scaling``), rated ``sn_mva`` (its |S| when missing), with a reactive range
      ``±Sn·sin(acos sgen_power_factor)`` — or ``±sgen_q_pu·Sn`` — unless it gives
      ``min_q_mvar``/``max_q_mvar`` itself;
    * each storage unit is a ``pq`` generator injecting ``-p_mw, -q_mvar`` (pandapower counts
      charging as positive).

    A distribution grid (static generators and no voltage-holding ``gen``): the static
    generators are the ``regulator``s and the network's ``regulator_control`` is ``"q"`` — they
    inject their reactive set-point, as in pandapower's power flow, and the R-OPF moves it.
    With ``gen`` elements (transmission cases such as case300) those regulate by voltage and the
    static generators are fixed (``pq``) injections, as in pandapower.

    Several in-service external grids are all ``slack`` generators: the first holds the angle
    reference, the others hold their voltage magnitude, and they share the balance by their
    ``slack_weight`` — pandapower's ``runpp(net, distributed_slack=True)``.

    ``trafo_model`` is passed to pandapower (``"t"``, its default, or ``"pi"``).  A transformer's
    T model becomes a pi branch whose shunt has a small conductance (its no-load losses); our
    branch model has no branch conductance, so it becomes a shunt at each end, listed in the
    network's ``no_load_shunts`` so its losses are reported with the branch losses.
    """
    _check_pandapower_options(net, sgen_power_factor, sgen_q_pu)
    title = name or str(net.name or "pandapower")
    net = copy.deepcopy(net)  # to_ppc writes lookups into the net: keep the caller's clean
    _refuse_voltage_dependent_loads(net, title)
    elements = {kind: _in_service(net, kind) for kind in _ELEMENT_KINDS}
    ppc = _branch_model_ppc(net, trafo_model)
    ids = _ppc_bus_ids(net, ppc)
    out = _network_from_pandapower_ppc(ppc, ids, title)
    alive = {int(b) for b in out.bus.index}
    our_bus = _OurBus(net._pd2ppc_lookups["bus"], ids, alive, title)
    out = _with_pandapower_names(out, net, ppc, ids, alive)
    shunt, no_load = _no_load_shunts(out, ppc, ids, alive)
    # Static generators regulate (by their reactive injection) unless voltage-holding
    # generators are there to do it; then they stay fixed injections, as in pandapower.
    sgen_regulates = not elements["sgen"].empty and not (out.gen.role == GenRole.REGULATOR).any()
    sgen_role = GenRole.REGULATOR if sgen_regulates else GenRole.PQ
    names = _ElementNames()  # one name space, taken in this order: loads, sgens, storage
    load_rows = _load_rows(elements["load"], our_bus, names)
    gen_rows = _sgen_rows(elements["sgen"], our_bus, names, sgen_role, sgen_power_factor, sgen_q_pu)
    gen_rows += _storage_rows(elements["storage"], our_bus, names)
    gen_all, load_all = _with_element_rows(out, gen_rows, load_rows, title)
    return replace(
        out,
        gen=gen_all,
        load=load_all,
        shunt=shunt,
        no_load_shunts=no_load,
        regulator_control="q" if sgen_regulates else "vm",
        tap=pandapower_tap_table(net, ppc, ids, alive, [str(n) for n in out.branch["name"]]),
    )


def _check_pandapower_options(net: Any, sgen_power_factor: float, sgen_q_pu: float | None) -> None:
    import pandapower as pp  # heavy: only here

    if not isinstance(net, pp.pandapowerNet):
        raise TypeError(f"expected a pandapowerNet, got {type(net).__name__}")
    if not 0 < sgen_power_factor <= 1:
        raise NetworkError(f"sgen_power_factor must be in (0, 1], got {sgen_power_factor}")
    if sgen_q_pu is not None and not 0 <= sgen_q_pu <= 1:
        raise NetworkError(f"sgen_q_pu must be in [0, 1], got {sgen_q_pu}")


def _branch_model_ppc(net: Any, trafo_model: str) -> dict[str, Any]:
    """pandapower's ``to_ppc`` of ``net`` (a copy: it is changed) without its loads, static
    generators and storage, which the loader adds back as named elements."""
    from pandapower.converter.pypower.to_ppc import to_ppc

    for kind in _ELEMENT_KINDS:
        if kind in net and len(net[kind]):
            net[kind]["in_service"] = False  # added back as named elements
    try:
        ppc: dict[str, Any] = to_ppc(
            net, init="flat", calculate_voltage_angles=True, trafo_model=trafo_model
        )
    except Exception as exc:  # pandapower raises bare exceptions for unsolvable nets
        raise NetworkError(f"pandapower cannot convert this network: {exc}") from exc
    return ppc


def _ppc_bus_ids(net: Any, ppc: dict[str, Any]) -> np.ndarray:
    """Our bus id of each ppc bus: the pandapower bus index (the smallest of buses fused by
    closed switches); pandapower's internal buses (open line ends, 3-winding star points,
    impedance switches) get ids after the largest pandapower bus index."""
    lookup = net._pd2ppc_lookups["bus"]
    n_ppc = ppc["bus"].shape[0]
    ids = np.full(n_ppc, -1, dtype=np.int64)
    for pd_bus in net.bus.index[net.bus.in_service].to_numpy()[::-1]:
        k = int(lookup[pd_bus])
        if 0 <= k < n_ppc:
            ids[k] = pd_bus  # buses fused by closed switches keep the smallest id
    aux = np.flatnonzero(ids < 0)
    ids[aux] = int(net.bus.index.max()) + 1 + np.arange(aux.size)
    return ids


def _network_from_pandapower_ppc(ppc: dict[str, Any], ids: np.ndarray, title: str) -> Network:
    """The network of pandapower's ppc (symmetric branches only), its distributed slack kept."""
    from pandapower.pypower.idx_gen import SL_FAC

    bus = np.real(ppc["bus"]).copy()
    branch = np.real(ppc["branch"]).copy()
    gen = np.real(ppc["gen"])
    for key in ("branch_r_asym", "branch_x_asym", "branch_g_asym", "branch_b_asym"):
        if key in ppc and np.any(ppc[key] != 0):
            raise NetworkError(f"pandapower network has asymmetric branches ({key}); unsupported")
    weight = gen[:, SL_FAC] if gen.shape[1] > SL_FAC else None
    return network_from_ppc(
        {"baseMVA": ppc["baseMVA"], "bus": bus, "gen": gen, "branch": branch},
        name=title,
        bus_ids=ids,
        slack_weight=weight,
        notes="converted from pandapower",
    )


class _OurBus:
    """Our bus id of a pandapower bus that an element sits on; an error names the element
    when no slack supplies that bus."""

    def __init__(self, lookup: np.ndarray, ids: np.ndarray, alive: set[int], title: str) -> None:
        self.lookup, self.ids, self.alive, self.title = lookup, ids, alive, title

    def __call__(self, pd_bus: int, what: str) -> int:
        k = int(self.lookup[pd_bus]) if 0 <= pd_bus < self.lookup.size else -1
        b = int(self.ids[k]) if 0 <= k < self.ids.size else -1
        if b not in self.alive:
            raise NetworkError(
                f"{self.title}: {what} is at bus {pd_bus}, which no slack supplies (an island "
                "cut off by open switches or out-of-service branches?)"
            )
        return b


def _with_pandapower_names(
    out: Network, net: Any, ppc: dict[str, Any], ids: np.ndarray, alive: set[int]
) -> Network:
    """``out`` with its branches and ppc generators named, typed and rated after pandapower's
    elements (where the rows can be matched one to one)."""
    branch_names, kinds, rates = _branch_names(net, ppc, ids, alive)
    if len(branch_names) == len(out.branch):
        out = out.with_tables(
            branch=out.branch.assign(name=branch_names, kind=kinds, rate_mva=rates)
        )
    if len(out.gen) == ppc["gen"].shape[0]:  # row k of out.gen is row k of ppc's gen matrix
        out = _name_ppc_generators(out, net)
    return out


def _load_rows(loads: pd.DataFrame, our_bus: _OurBus, names: _ElementNames) -> list[dict[str, Any]]:
    """Each pandapower load as our load, ``p_mw·scaling, q_mvar·scaling``."""
    rows = []
    for idx, row in loads.iterrows():
        p, q = row.p_mw * row.scaling, row.q_mvar * row.scaling
        b = our_bus(int(row.bus), f"load {idx}")
        rows.append({"name": names.pick("load", idx, row), "bus": b, "p_mw": p, "q_mvar": q})
    return rows


def _sgen_rows(
    sgens: pd.DataFrame,
    our_bus: _OurBus,
    names: _ElementNames,
    role: GenRole,
    sgen_power_factor: float,
    sgen_q_pu: float | None,
) -> list[dict[str, Any]]:
    """Each static generator as a generator (a seller) with its rating and reactive range."""
    rows = []
    for idx, row in sgens.iterrows():
        p, q = row.p_mw * row.scaling, row.q_mvar * row.scaling
        sn = _rating(row.get("sn_mva", math.nan), p, q)
        q_lim = sn * (sgen_q_pu if sgen_q_pu is not None else _sin_acos(sgen_power_factor))
        qmin = _finite_or(row.get("min_q_mvar", math.nan), -q_lim)
        qmax = _finite_or(row.get("max_q_mvar", math.nan), q_lim)
        rows.append(
            {
                "name": names.pick("sgen", idx, row),
                "bus": our_bus(int(row.bus), f"sgen {idx}"),
                "role": role.value,
                "p_mw": p,
                "q_mvar": q,
                "vm_pu": 1.0,
                "sn_mva": sn,
                "pmin_mw": 0.0,
                "pmax_mw": max(sn, p),
                "qmin_mvar": min(qmin, q),
                "qmax_mvar": max(qmax, q),
                "slack_weight": 0.0,
            }
        )
    return rows


def _storage_rows(
    storage: pd.DataFrame, our_bus: _OurBus, names: _ElementNames
) -> list[dict[str, Any]]:
    """Each storage unit as a ``pq`` generator injecting ``-p_mw, -q_mvar`` (pandapower counts
    charging as positive)."""
    rows = []
    for idx, row in storage.iterrows():
        p, q = -row.p_mw * row.scaling, -row.q_mvar * row.scaling
        sn = _rating(row.get("sn_mva", math.nan), p, q)
        rows.append(
            {
                "name": names.pick("storage", idx, row),
                "bus": our_bus(int(row.bus), f"storage {idx}"),
                "role": GenRole.PQ.value,
                "p_mw": p,
                "q_mvar": q,
                "vm_pu": 1.0,
                "sn_mva": sn,
                "pmin_mw": -sn,
                "pmax_mw": sn,
                "qmin_mvar": min(-sn, q),
                "qmax_mvar": max(sn, q),
                "slack_weight": 0.0,
            }
        )
    return rows


def _with_element_rows(
    out: Network,
    gen_rows: list[dict[str, Any]],
    load_rows: list[dict[str, Any]],
    title: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``out``'s generator and load tables with the element rows appended (column types kept);
    a name used twice fails."""
    gen_table = out.gen
    taken = set(gen_table["name"]) | set(out.load["name"])
    clash = sorted(taken & {r["name"] for r in gen_rows + load_rows})
    if clash:
        raise NetworkError(f"{title}: element name(s) {clash} used twice; rename them")
    gen_all = pd.concat([gen_table, table(gen_rows, GEN_COLUMNS)], ignore_index=True)
    load_all = pd.concat([out.load, table(load_rows, LOAD_COLUMNS)], ignore_index=True)
    return (
        gen_all.astype(gen_table.dtypes.to_dict()) if len(gen_table) else gen_all,
        load_all.astype(out.load.dtypes.to_dict()) if len(out.load) else load_all,
    )


def _in_service(net: Any, kind: str) -> pd.DataFrame:
    if kind not in net or not len(net[kind]):
        return pd.DataFrame(columns=["name", "bus", "p_mw", "q_mvar", "scaling", "in_service"])
    frame = net[kind]
    live_bus = net.bus.in_service.reindex(frame.bus).fillna(False).to_numpy(bool)
    result: pd.DataFrame = frame[frame.in_service.to_numpy(bool) & live_bus]
    return result


def _refuse_voltage_dependent_loads(net: Any, title: str) -> None:
    """Our loads draw constant power; pandapower's ZIP loads would give other voltages."""
    if "load" not in net or not len(net.load):
        return
    cols = [c for c in net.load.columns if c.startswith("const_") and c.endswith("_percent")]
    live = net.load[net.load.in_service.to_numpy(bool)]
    for col in cols:
        bad = live.index[live[col].fillna(0).to_numpy(float) != 0]
        if len(bad):
            raise NetworkError(
                f"{title}: load {bad[0]} has {col}={live.at[bad[0], col]}; only constant-power "
                "loads are supported (set the const_*_percent columns to 0)"
            )


class _ElementNames:
    """pandapower element names, unique across the network; ``"<kind> <index>"`` otherwise."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def pick(self, kind: str, idx: Any, row: pd.Series) -> str:
        given = row.get("name")
        text = str(given).strip() if isinstance(given, str) else ""
        label = text if text and text not in self.used else f"{kind} {idx}"
        self.used.add(label)
        return label


def _rating(sn: Any, p: float, q: float) -> float:
    """The element's own rating, else its apparent power (no reserve for reactive power)."""
    value = float(sn) if sn is not None else math.nan
    if math.isfinite(value) and value > 0:
        return value
    return max(math.hypot(p, q), 1e-6)


def _sin_acos(pf: float) -> float:
    return math.sqrt(max(1.0 - pf * pf, 0.0))


def _finite_or(value: Any, default: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return default
    return x if math.isfinite(x) else default


def _branch_names(
    net: Any, ppc: dict[str, Any], ids: np.ndarray, alive: set[int]
) -> tuple[list[str], list[str], list[float]]:
    """Names, kinds and ratings of the branches :func:`network_from_ppc` keeps, in its order.

    Name: the pandapower element's when it has a unique one, else ``"<from>-<to>"`` as for
    MATPOWER cases.  Kind ``transformer`` for two- and three-winding transformers.  Rating, so
    that our current-based loading is pandapower's ``loading_percent``: a line carries
    ``max_i_ka·df·parallel`` at its bus voltage, i.e. ``√3·vn_kv·max_i_ka·df·parallel`` MVA; a
    transformer ``sn_mva·parallel`` (its rated current at the buses' nominal voltage, which is
    pandapower's when the buses' vn_kv is the transformer's rated voltage).  Three-winding
    transformers, impedances and wards are unrated here.
    """
    ranges = net._pd2ppc_lookups.get("branch", {}) or {}
    label: dict[int, str] = {}
    rating: dict[int, float] = {}
    trafo_rows: set[int] = set()
    for kind, (start, stop) in ranges.items():
        if kind in ("trafo", "trafo3w"):
            trafo_rows.update(range(start, stop))
        if kind == "line" and len(net.line) == stop - start:
            vn = net.bus.vn_kv.reindex(net.line.from_bus).to_numpy(float)
            amps = (net.line.max_i_ka * net.line.df * net.line.parallel).to_numpy(float)
            for j, mva in enumerate(math.sqrt(3) * vn * amps):
                rating[start + j] = float(mva) if math.isfinite(mva) and mva > 0 else 0.0
        if kind == "trafo" and len(net.trafo) == stop - start:
            for j, mva in enumerate((net.trafo.sn_mva * net.trafo.parallel).to_numpy(float)):
                rating[start + j] = float(mva) if math.isfinite(mva) and mva > 0 else 0.0
        if kind not in net or not len(net[kind]):
            continue
        frame = net[kind]
        names = frame["name"] if "name" in frame else pd.Series([None] * len(frame))
        counts = names.value_counts()
        per = (stop - start) // max(len(frame), 1)
        for j in range(stop - start):
            given = names.iloc[j % len(frame)]
            if isinstance(given, str) and given.strip() and counts.get(given, 0) == 1:
                label[start + j] = given if per == 1 else f"{given} ({j // len(frame) + 1}/{per})"
    out, kinds, rates = [], [], []
    for k, row in enumerate(np.real(ppc["branch"])):
        f, t = int(ids[int(row[F_BUS])]), int(ids[int(row[T_BUS])])
        if row[BR_STATUS] <= 0 or f not in alive or t not in alive:
            continue
        out.append(label.get(k, f"{f}-{t}"))
        is_trafo = k in trafo_rows or row[TAP] not in (0.0, 1.0) or row[SHIFT] != 0.0
        kinds.append("transformer" if is_trafo else "line")
        rates.append(rating.get(k, 0.0))
    return out, kinds, rates


def _name_ppc_generators(out: Network, net: Any) -> Network:
    """ext_grid and gen rows carry their pandapower names when those are unique."""
    lookups = net._pd2ppc_lookups
    gen = out.gen.copy()
    names = gen["name"].to_numpy(object).copy()
    for kind in ("ext_grid", "gen"):
        rows = lookups.get(kind)
        if rows is None or kind not in net:
            continue
        frame = net[kind][net[kind].in_service.to_numpy(bool)]
        if len(rows) != len(frame):
            continue
        for k, (_, row) in zip(np.asarray(rows, dtype=np.int64), frame.iterrows(), strict=True):
            given = row.get("name")
            if isinstance(given, str) and given.strip() and 0 <= k < len(names):
                names[k] = given
            if kind == "ext_grid" and 0 <= k < len(names):
                # pandapower's power flow puts no reactive limit on an external grid (its
                # ppc row says 0..0): unlimited unless the element sets its own.
                i = gen.index[k]
                gen.at[i, "qmin_mvar"] = _finite_or(row.get("min_q_mvar"), -1e9)
                gen.at[i, "qmax_mvar"] = _finite_or(row.get("max_q_mvar"), 1e9)
    if len(set(names)) == len(names):
        gen["name"] = names
    return out.with_tables(gen=gen)


def _no_load_shunts(
    out: Network, ppc: dict[str, Any], ids: np.ndarray, alive: set[int]
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The pi model's shunt conductance g/2 at each end of a branch (the from end behind the
    tap, 1/tap²) as shunts named after the branch; returns the shunt table and their names."""
    g_branch = ppc.get("branch_g")
    if g_branch is None or not np.any(g_branch != 0):
        return out.shunt, ()
    branch = np.real(ppc["branch"])
    base = float(ppc["baseMVA"])
    rows: list[dict[str, Any]] = []
    kept = iter(out.branch["name"].tolist())
    for k, row in enumerate(branch):
        f, t = int(ids[int(row[F_BUS])]), int(ids[int(row[T_BUS])])
        if row[BR_STATUS] <= 0 or f not in alive or t not in alive:
            continue
        label = next(kept)
        g = float(np.real(g_branch[k]))
        if g == 0:
            continue
        tap = row[TAP] if row[TAP] != 0 else 1.0
        rows.append({"name": f"no-load {label} from", "bus": f, "g_mw": g / 2 / tap**2 * base,
                     "b_mvar": 0.0})  # fmt: skip
        rows.append({"name": f"no-load {label} to", "bus": t, "g_mw": g / 2 * base, "b_mvar": 0.0})
    extra = table(rows, SHUNT_COLUMNS)
    shunt = extra if out.shunt.empty else pd.concat([out.shunt, extra], ignore_index=True)
    return shunt, tuple(r["name"] for r in rows)


def load_pandapower_json(path: str | Path, name: str | None = None) -> Network:
    """Read a network saved with ``pandapower.to_json``."""
    import pandapower as pp

    p = Path(path)
    if not p.is_file():
        raise CaseFormatError(f"no such pandapower JSON file: {p}")
    try:
        net = pp.from_json(str(p))
    except Exception as exc:  # pandapower raises many kinds on bad JSON
        raise CaseFormatError(f"{p}: not a pandapower JSON network ({exc})") from exc
    return from_pandapower(net, name=name or p.stem)


def pandapower_case_names() -> list[str]:
    """Public network functions of ``pandapower.networks`` callable without arguments."""
    import pandapower.networks as pn

    names = []
    for n in dir(pn):
        fn = getattr(pn, n)
        if n.startswith("_") or not inspect.isfunction(fn):
            continue
        params = inspect.signature(fn).parameters.values()
        if all(
            p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            for p in params
        ):
            names.append(n)
    return sorted(names)


def load_pandapower_case(case: str) -> Network:
    """A network from ``pandapower.networks`` by function name, e.g. ``"case118"``."""
    import pandapower as pp
    import pandapower.networks as pn

    known = pandapower_case_names()
    if case not in known:
        shown = [n for n in known if n.startswith("case")]
        raise CaseFormatError(
            f"pandapower has no network function {case!r}; its test cases include: "
            f"{', '.join(shown)}"
        )
    net = getattr(pn, case)()
    if not isinstance(net, pp.pandapowerNet):
        raise CaseFormatError(f"pandapower.networks.{case}() does not return a network")
    return from_pandapower(net, name=f"pandapower:{case}")


SIMBENCH_MISSING = (
    "simbench:{code} needs the optional package 'simbench' (it ships the SimBench grids and "
    "their profiles): pip install 'gridledger[simbench]'"
)


def load_simbench(code: str) -> Network:
    """A SimBench grid by its code, e.g. ``"1-LV-rural3--0-sw"`` (needs the ``simbench`` extra)."""
    try:
        import simbench
    except ModuleNotFoundError as exc:
        raise CaseFormatError(SIMBENCH_MISSING.format(code=code)) from exc
    codes = simbench.collect_all_simbench_codes()
    if code not in codes:
        lv = [c for c in codes if "-LV-" in c and c.endswith("--0-sw")]
        raise CaseFormatError(
            f"simbench has no grid {code!r}; its low-voltage grids include: {', '.join(lv)}"
        )
    net = simbench.get_simbench_net(code)
    return from_pandapower(net, name=f"simbench:{code}")
