"""Turn foreign case formats into a :class:`Network`: MATPOWER ``.m`` files, pandapower networks.

Both go through one converter, :func:`network_from_ppc`, that reads the MATPOWER/PYPOWER case
layout (``baseMVA``, ``bus``, ``gen``, ``branch`` matrices with MATPOWER's column order).

* MATPOWER ``.m``: parsed here.  pandapower's own ``from_mpc`` needs the extra package
  ``matpowercaseframes`` for ``.m`` files (not a dependency, and not installed), and the case
  format is small: numeric matrices assigned to ``mpc.<field>``.
* pandapower networks: ``pandapower.converter.pypower.to_ppc`` (pandapower's own element models:
  lines, transformers, switches, sgens) and then the same converter.  Bus ids stay pandapower's
  bus indices.

Generator ratings: MATPOWER's ``mBase`` is usually the system base (100 MVA even for a 300 MW
unit), so ``sn_mva`` is the smallest circle around the box limits,
``sqrt(Pmax² + max(|Qmin|, |Qmax|)²)``; ``mBase`` only when that is not a positive finite number.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

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
    slack_bus = int(gen.bus[roles == GenRole.SLACK].iloc[0])
    held = {int(b) for b in gen.bus[roles != GenRole.PQ]}
    pd_, qd, gs, bs = (np.zeros(len(ids)) for _ in range(4))
    for row in net.load.itertuples():
        pd_[pos[int(row.bus)]] += row.p_mw
        qd[pos[int(row.bus)]] += row.q_mvar
    for row in net.shunt.itertuples():
        gs[pos[int(row.bus)]] += row.g_mw
        bs[pos[int(row.bus)]] += row.b_mvar
    name = re.sub(r"[^A-Za-z0-9_]", "_", net.name) or "case"
    lines = [f"function mpc = {name}", f"%   written by gridledger from network {net.name!r}"]
    if offset:
        lines.append(f"%   bus numbers shifted by +{offset} (MATPOWER needs numbers >= 1)")
    lines += ["", "mpc.version = '2';", f"mpc.baseMVA = {_num(net.base_mva)};", ""]
    lines.append("mpc.bus = [")
    for i, (bus_id, row) in enumerate(net.bus.iterrows()):
        b = int(bus_id)
        kind = MP_REF if b == slack_bus else (MP_PV if b in held else MP_PQ)
        cells = [b + offset, kind, pd_[i], qd[i], gs[i], bs[i], 1, 1, 0, row.vn_kv, 1]
        lines.append(_row([*cells, row.vmax_pu, row.vmin_pu]))
    lines += ["];", "", "mpc.gen = ["]
    for row in gen.itertuples():
        cells = [int(row.bus) + offset, row.p_mw, row.q_mvar, row.qmax_mvar, row.qmin_mvar]
        lines.append(_row([*cells, row.vm_pu, net.base_mva, 1, row.pmax_mw, row.pmin_mw]))
    lines += ["];", "", "mpc.branch = ["]
    for row in net.branch.itertuples():
        cells = [int(row.from_bus) + offset, int(row.to_bus) + offset, row.r_pu, row.x_pu]
        cells += [row.b_pu, row.rate_mva, 0, 0, row.ratio, row.shift_deg, 1, -360, 360]
        lines.append(_row(cells))
    lines += ["];", "", "%% gridledger extras (ignored by MATPOWER)", "mpc.gen_sn_mva = ["]
    lines += [_row([v]) for v in gen.sn_mva] + ["];", "mpc.gen_slack_weight = ["]
    lines += [_row([v]) for v in gen.slack_weight] + ["];"]
    if len(net.svc):
        lines.append("mpc.svc = [")
        for row in net.svc.itertuples():
            lines.append(_row([int(row.bus) + offset, row.qmin_mvar, row.qmax_mvar, row.q_mvar]))
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
    bus = np.asarray(ppc["bus"], dtype=float)
    gen = np.asarray(ppc["gen"], dtype=float)
    branch = np.asarray(ppc["branch"], dtype=float)
    if bus.ndim != 2 or bus.shape[1] < 13:
        raise CaseFormatError(f"{name}: bus matrix needs 13 columns, got shape {bus.shape}")
    if gen.ndim != 2 or gen.shape[1] < 10:
        raise CaseFormatError(f"{name}: gen matrix needs at least 10 columns, got {gen.shape}")
    if branch.ndim != 2 or branch.shape[1] < 11:
        raise CaseFormatError(f"{name}: branch matrix needs 11 columns, got {branch.shape}")
    sn_given = _extra_column(ppc, "gen_sn_mva", gen.shape[0], name)
    weights = slack_weight
    if weights is None:
        weights = _extra_column(ppc, "gen_slack_weight", gen.shape[0], name)
    number = bus[:, BUS_I].astype(np.int64)
    ids = number if bus_ids is None else np.asarray(bus_ids, dtype=np.int64)
    if ids.shape != number.shape:
        raise CaseFormatError(f"{name}: {ids.size} bus ids for {number.size} buses")
    id_of = dict(zip(number.tolist(), ids.tolist(), strict=True))
    keep_bus = bus[:, BUS_TYPE] != MP_NONE
    bus_type = dict(zip(number.tolist(), bus[:, BUS_TYPE].astype(int).tolist(), strict=True))

    def bus_id(k: float, what: str) -> int:
        if int(k) not in id_of:
            raise NetworkError(f"{name}: {what} refers to unknown bus {int(k)}")
        return id_of[int(k)]

    bus_rows = []
    for row in bus[keep_bus]:
        vmin, vmax = row[VMIN], row[VMAX]
        if not (0 < vmin < vmax):
            vmin, vmax = DEFAULT_VMIN_PU, DEFAULT_VMAX_PU
        bus_rows.append(
            {
                "name": str(id_of[int(row[BUS_I])]),
                "vn_kv": row[BASE_KV] if row[BASE_KV] > 0 else 1.0,
                "vmin_pu": vmin,
                "vmax_pu": vmax,
            }
        )
    bus_table = table(bus_rows, BUS_COLUMNS)
    bus_table.index = ids[keep_bus]
    alive = set(ids[keep_bus].tolist())

    branch_rows = []
    for i, row in enumerate(branch):
        if row[BR_STATUS] <= 0:
            continue
        f = bus_id(row[F_BUS], f"branch {i}")
        t = bus_id(row[T_BUS], f"branch {i}")
        if f not in alive or t not in alive:
            continue
        rate = row[RATE_A] if math.isfinite(row[RATE_A]) and row[RATE_A] > 0 else 0.0
        is_trafo = row[TAP] not in (0.0, 1.0) or row[SHIFT] != 0.0
        branch_rows.append(
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

    gen_rows = []
    for i, row in enumerate(gen):
        if row[GEN_STATUS] <= 0:
            continue
        b = bus_id(row[GEN_BUS], f"generator {i}")
        kind = bus_type[int(row[GEN_BUS])]
        if kind == MP_NONE:
            continue
        role = {MP_REF: GenRole.SLACK, MP_PV: GenRole.REGULATOR}.get(kind, GenRole.PQ)
        qmin = row[QMIN] if math.isfinite(row[QMIN]) else -1e9
        qmax = row[QMAX] if math.isfinite(row[QMAX]) else 1e9
        gen_rows.append(
            {
                "name": f"G{len(gen_rows) + 1}@{b}",
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

    load_rows = []
    shunt_rows = []
    for row in bus[keep_bus]:
        b = id_of[int(row[BUS_I])]
        if row[PD] != 0 or row[QD] != 0:
            load_rows.append({"name": f"L{b}", "bus": b, "p_mw": row[PD], "q_mvar": row[QD]})
        if row[GS] != 0 or row[BS] != 0:
            shunt_rows.append({"name": f"SH{b}", "bus": b, "g_mw": row[GS], "b_mvar": row[BS]})

    svc_rows = []
    svc = np.asarray(ppc.get("svc", np.zeros((0, 4))), dtype=float)
    if svc.size and (svc.ndim != 2 or svc.shape[1] != 4):
        raise CaseFormatError(
            f"{name}: svc matrix needs 4 columns (bus qmin qmax q), got {svc.shape}"
        )
    for row in svc.reshape(-1, 4):
        b = bus_id(row[0], "svc")
        svc_rows.append(
            {
                "name": f"SVC{b}",
                "bus": b,
                "qmin_mvar": row[1],
                "qmax_mvar": row[2],
                "q_mvar": row[3],
            }
        )
    return Network(
        name=name,
        base_mva=base,
        bus=bus_table,
        branch=table(branch_rows, BRANCH_COLUMNS),
        gen=table(gen_rows, GEN_COLUMNS),
        load=table(load_rows, LOAD_COLUMNS),
        shunt=table(shunt_rows, SHUNT_COLUMNS),
        svc=table(svc_rows, SVC_COLUMNS),
        notes=notes,
    )


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


def from_pandapower(net: Any, name: str | None = None, trafo_model: str = "t") -> Network:
    """Convert a pandapower network (its in-service part) with pandapower's own element models.

    ``trafo_model`` is passed to pandapower (``"t"``, its default, or ``"pi"``).  A transformer's
    T model becomes a pi branch whose shunt has a small conductance; our branch model has no
    branch conductance, so that part is added to the end buses as shunts (exact for bus voltages;
    the shunt's power then shows in the bus injections rather than the branch flow).
    """
    import pandapower as pp  # heavy: only here
    from pandapower.converter.pypower.to_ppc import to_ppc
    from pandapower.pypower.idx_gen import SL_FAC

    if not isinstance(net, pp.pandapowerNet):
        raise TypeError(f"expected a pandapowerNet, got {type(net).__name__}")
    net = copy.deepcopy(net)  # to_ppc writes lookups into the net: keep the caller's clean
    try:
        ppc = to_ppc(net, init="flat", calculate_voltage_angles=True, trafo_model=trafo_model)
    except Exception as exc:  # pandapower raises bare exceptions for unsolvable nets
        raise NetworkError(f"pandapower cannot convert this network: {exc}") from exc
    lookup = net._pd2ppc_lookups["bus"]
    n_ppc = ppc["bus"].shape[0]
    ids = np.full(n_ppc, -1, dtype=np.int64)
    for pd_bus in net.bus.index[net.bus.in_service].to_numpy()[::-1]:
        k = int(lookup[pd_bus])
        if 0 <= k < n_ppc:
            ids[k] = pd_bus  # buses fused by closed switches keep the smallest id
    # pandapower adds internal buses (open line ends, 3-winding star points, impedance
    # switches); they get ids after the largest pandapower bus index.
    aux = np.flatnonzero(ids < 0)
    ids[aux] = int(net.bus.index.max()) + 1 + np.arange(aux.size)
    bus = np.real(ppc["bus"]).copy()
    branch = np.real(ppc["branch"]).copy()
    gen = np.real(ppc["gen"])
    g_branch = ppc.get("branch_g")
    if g_branch is not None and np.any(g_branch != 0):
        # pi shunt conductance g/2 at each end; the from end sits behind the tap (1/tap²).
        tap = branch[:, TAP].copy()
        tap[tap == 0] = 1.0
        f = branch[:, F_BUS].astype(np.int64)
        t = branch[:, T_BUS].astype(np.int64)
        gs = np.zeros(n_ppc)
        np.add.at(gs, f, g_branch / 2 / tap**2 * ppc["baseMVA"])
        np.add.at(gs, t, g_branch / 2 * ppc["baseMVA"])
        bus[:, GS] += gs
    for key in ("branch_r_asym", "branch_x_asym", "branch_g_asym", "branch_b_asym"):
        if key in ppc and np.any(ppc[key] != 0):
            raise NetworkError(f"pandapower network has asymmetric branches ({key}); unsupported")
    weight = gen[:, SL_FAC] if gen.shape[1] > SL_FAC else None
    return network_from_ppc(
        {"baseMVA": ppc["baseMVA"], "bus": bus, "gen": gen, "branch": branch},
        name=name or str(net.name or "pandapower"),
        bus_ids=ids,
        slack_weight=weight,
        notes="converted from pandapower",
    )


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
