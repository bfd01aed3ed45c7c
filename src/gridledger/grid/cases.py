"""Named test networks: the seeds' microgrid, IEEE 9, Baran–Wu 33, SCE 56, and any pandapower case.

``load_case(name)`` accepts a name from :func:`list_cases`, ``"pandapower:<function>"`` (a
network of ``pandapower.networks``), ``"simbench:<code>"`` (a SimBench grid, with the optional
``simbench`` package), or a path to a pandapower ``.json`` or MATPOWER ``.m`` file.
Every call returns a fresh copy (networks are values; change one with ``with_tables``).

The 9-bus MV microgrid (seed 000 §VI, Tables I–II, Fig. 4b)
-----------------------------------------------------------
What the paper gives: line R and X in ohm (Table I), loads in kW/kVAr per case (Table II), DGs at
buses 2, 3, 4, rated 1.5 MVA each in CASE 1 and 2.5/2.5/2.0 MVA in CASE 2, grid at bus 1 in
CASE 1.  What it does not give, and what we assume:

* nominal voltage 20 kV, system base 1 MVA (Z_base = 400 Ω);
* CASE 1: the main grid is the slack at bus 1 holding 1.0 pu; each DG produces the active power of
  its own bus' load ("satisfy the active power demand of the loads fed by the node in which they
  are inserted") and Q = 0 before any optimisation;
* CASE 2 (islanded): bus 1 is a plain load bus; the three DGs share the balance (loads + losses)
  as a distributed slack in proportion to their rating; DG2 is the angle reference.  Their
  scheduled P is the rating share of the total load, so the slack term is only the losses;
* initial reactive state (seed 000 §VI, "we needed to make assumptions for the previous
  interval"): CASE 1 DGs inject Q = 0; CASE 2 DGs share the reactive demand in proportion to
  their ratings.  ``q_mvar`` holds that Q and ``vm_pu`` the voltage the DG's bus then has, so
  ``run_pf`` gives the same operating point with ``regulator_control="vm"`` or ``"q"``.  (A flat
  1.0 pu set-point would be a poor default: with R/X ≈ 6 holding 1.0 pu takes several Mvar.);
* DGs are ``regulator`` generators (the reactive OPF moves them),
  active power in [0, Sn], reactive power in [-Sn, Sn] (the capability circle P² + Q² ≤ Sn²
  is the binding limit);
* line ratings: the per-km data match 12/20 kV aluminium cables — R = 0.868 Ω/km, X = 0.14 Ω/km
  is 35 mm² Al (lines 1-5, 1-7, 3-6, 5-3, 7-4 are 0.7, 1.0, 1.5, 1.0, 1.5 km of it), and
  R = 0.641 Ω/km, X = 0.13 Ω/km is 50 mm² Al (1-2, 2-8, 8-9: 0.7, 1.0, 1.5 km).  We take
  typical buried-cable ampacities of 130 A (35 mm²) and 155 A (50 mm²): 4.50 and 5.37 MVA at
  20 kV;
* voltage limits 0.9–1.1 pu (the gridledger default; seed 000 gives none);
* the grid supply at bus 1 is rated 10 MVA (never binding here).
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from .loaders import (
    CaseFormatError,
    from_pandapower,
    load_matpower,
    load_pandapower_case,
    load_pandapower_json,
    load_simbench,
)
from .network import (
    BRANCH_COLUMNS,
    BUS_COLUMNS,
    DEFAULT_VMAX_PU,
    DEFAULT_VMIN_PU,
    GEN_COLUMNS,
    LOAD_COLUMNS,
    SHUNT_COLUMNS,
    Network,
    NetworkError,
    ohm_to_pu,
    table,
    validate,
)


class UnknownCaseError(NetworkError):
    """No case by that name; the message lists the known ones."""


MICROGRID_VN_KV = 20.0
MICROGRID_BASE_MVA = 1.0
MICROGRID_VMIN_PU = DEFAULT_VMIN_PU
MICROGRID_VMAX_PU = DEFAULT_VMAX_PU
GRID_SUPPLY_SN_MVA = 10.0

# seed 000 Table I: (from, to, R ohm, X ohm) and our cable type inferred from ohm/km.
MICROGRID_LINES = (
    (1, 5, 0.6076, 0.098),
    (1, 7, 0.868, 0.14),
    (1, 2, 0.4487, 0.091),
    (2, 8, 0.641, 0.13),
    (3, 6, 1.302, 0.21),
    (5, 3, 0.868, 0.14),
    (7, 4, 1.302, 0.21),
    (8, 9, 0.9615, 0.195),
)
CABLE_AMPACITY_KA = {"Al 35 mm2": 0.130, "Al 50 mm2": 0.155}
CABLE_R_OHM_PER_KM = {"Al 35 mm2": 0.868, "Al 50 mm2": 0.641}

# seed 000 Table II: bus -> (P kW, Q kVAr)
MICROGRID_LOADS_CASE1 = {
    2: (764.300, 422.358),
    3: (254.400, 172.587),
    4: (563.400, 279.126),
    5: (646.400, 370.550),
    6: (817.700, 437.850),
    7: (696.700, 458.406),
    8: (319.300, 167.939),
    9: (764.100, 414.908),
}
MICROGRID_LOADS_CASE2 = {
    1: (1062.500, 534.500),
    5: (646.400, 370.550),
    6: (817.700, 437.850),
    7: (696.700, 458.406),
    8: (319.300, 167.939),
    9: (764.100, 414.908),
}
DG_BUSES = {"DG2": 2, "DG3": 3, "DG4": 4}
DG_RATING_MVA_CASE1 = {"DG2": 1.5, "DG3": 1.5, "DG4": 1.5}
DG_RATING_MVA_CASE2 = {"DG2": 2.5, "DG3": 2.5, "DG4": 2.0}


def _cable(r_ohm: float, x_ohm: float) -> str:
    """The cable type whose ohm/km ratio R/X matches (both types differ clearly in R/X)."""
    ratio = r_ohm / x_ohm
    return "Al 35 mm2" if abs(ratio - 0.868 / 0.14) < abs(ratio - 0.641 / 0.13) else "Al 50 mm2"


def _microgrid(islanded: bool) -> Network:
    base = MICROGRID_BASE_MVA
    vn = MICROGRID_VN_KV
    bus = table(
        [
            {
                "name": f"bus{b}",
                "vn_kv": vn,
                "vmin_pu": MICROGRID_VMIN_PU,
                "vmax_pu": MICROGRID_VMAX_PU,
            }
            for b in range(1, 10)
        ],
        BUS_COLUMNS,
    )
    bus.index = list(range(1, 10))
    branches = []
    for f, t, r_ohm, x_ohm in MICROGRID_LINES:
        r, x = ohm_to_pu(r_ohm, x_ohm, vn, base)
        cable = _cable(r_ohm, x_ohm)
        km = r_ohm / CABLE_R_OHM_PER_KM[cable]
        branches.append(
            {
                "from_bus": f,
                "to_bus": t,
                "r_pu": r,
                "x_pu": x,
                "b_pu": 0.0,
                "ratio": 0.0,
                "shift_deg": 0.0,
                "rate_mva": math.sqrt(3) * vn * CABLE_AMPACITY_KA[cable],
                "kind": "line",
                "name": f"{f}-{t} ({cable}, {km:.2f} km)",
            }
        )
    loads_kw = MICROGRID_LOADS_CASE2 if islanded else MICROGRID_LOADS_CASE1
    loads = [
        {"name": f"L{b}", "bus": b, "p_mw": p / 1000, "q_mvar": q / 1000}
        for b, (p, q) in loads_kw.items()
    ]
    rating = DG_RATING_MVA_CASE2 if islanded else DG_RATING_MVA_CASE1
    total_load_mw = sum(p for p, _ in loads_kw.values()) / 1000
    total_rating = sum(rating.values())
    gens = []
    if not islanded:
        gens.append(
            {
                "name": "GRID",
                "bus": 1,
                "role": "slack",
                "p_mw": 0.0,
                "q_mvar": 0.0,
                "vm_pu": 1.0,
                "sn_mva": GRID_SUPPLY_SN_MVA,
                "pmin_mw": -GRID_SUPPLY_SN_MVA,
                "pmax_mw": GRID_SUPPLY_SN_MVA,
                "qmin_mvar": -GRID_SUPPLY_SN_MVA,
                "qmax_mvar": GRID_SUPPLY_SN_MVA,
                "slack_weight": 1.0,
            }
        )
    for dg, b in DG_BUSES.items():
        sn = rating[dg]
        if islanded:
            p = total_load_mw * sn / total_rating
            role = "slack" if dg == "DG2" else "regulator"
            weight = sn
        else:
            p = loads_kw[b][0] / 1000
            role = "regulator"
            weight = 0.0
        gens.append(
            {
                "name": dg,
                "bus": b,
                "role": role,
                "p_mw": p,
                "q_mvar": 0.0,
                "vm_pu": 1.0,
                "sn_mva": sn,
                "pmin_mw": 0.0,
                "pmax_mw": sn,
                "qmin_mvar": -sn,
                "qmax_mvar": sn,
                "slack_weight": weight,
            }
        )
    mode = "CASE 2, islanded" if islanded else "CASE 1, grid-connected"
    net = Network(
        name="microgrid9-islanded" if islanded else "microgrid9",
        base_mva=base,
        bus=bus,
        branch=table(branches, BRANCH_COLUMNS),
        gen=table(gens, GEN_COLUMNS),
        load=table(loads, LOAD_COLUMNS),
        notes=f"seed 000 §VI 9-bus MV microgrid, {mode}; assumptions in gridledger.grid.cases",
    )
    return _with_initial_reactive_state(net, islanded)


def _with_initial_reactive_state(net: Network, islanded: bool) -> Network:
    """Set DG ``q_mvar`` and ``vm_pu`` to the paper's operating point before any optimisation.

    Seed 000 §VI: in CASE 1 the DGs inject no reactive power; in CASE 2 the three DGs share the
    network's reactive demand in proportion to their ratings.  The DGs' voltage set-points are the
    voltages of that operating point, so ``regulator_control="vm"`` and ``"q"`` both reproduce it.
    """
    from .powerflow import run_pf

    gen = net.gen.copy()
    dg = gen.name.isin(list(DG_BUSES)).to_numpy()
    share = gen.sn_mva.to_numpy(float) * dg
    share = share / share.sum()
    q = np.zeros(len(gen))
    result = run_pf(net, gen_q=q / net.base_mva, regulator_control="q")
    if islanded:
        # Fixed point on the losses' reactive part: a few rounds settle it to 1e-12 pu.
        for _ in range(50):
            total_q = float(result.gen_q_mvar.sum())
            q = share * total_q
            result = run_pf(net, gen_q=q / net.base_mva, regulator_control="q")
            if np.max(np.abs(result.gen_q_mvar[dg] - q[dg])) < 1e-12:
                break
        else:
            raise NetworkError(f"{net.name}: reactive sharing of the initial state did not settle")
    gen["q_mvar"] = np.where(dg, result.gen_q_mvar, gen.q_mvar)
    pos = net.bus_position()
    vm_at_gen = result.vm_pu[[pos[int(b)] for b in gen.bus]]
    gen["vm_pu"] = np.where(dg, vm_at_gen, gen.vm_pu)
    return net.with_tables(gen=gen)


def _data_path(*parts: str) -> Path:
    return Path(str(resources.files("gridledger").joinpath("data", *parts)))


def _ieee9() -> Network:
    return _renamed(load_matpower(_data_path("cases", "case9.m")), "ieee9", _IEEE9_NOTES)


_IEEE9_NOTES = (
    "MATPOWER case9 (WSCC 9-bus, 100 MVA base); seed 002's 'IEEE 9-bus', base loss 4.95 MW"
)

IEEE9_Q200_BUS = 9  # MATPOWER numbering: the load 125 MW + 50 MVAr is at bus 9
IEEE9_Q200_MVAR = 200.0


def _ieee9_q200() -> Network:
    net = _ieee9()
    load = net.load.copy()
    hit = load.bus == IEEE9_Q200_BUS
    if int(hit.sum()) != 1 or float(load.loc[hit, "q_mvar"].iloc[0]) != 50.0:
        raise NetworkError("case9 data changed: expected one 50 MVAr load at bus 9")
    load.loc[hit, "q_mvar"] = IEEE9_Q200_MVAR
    return _renamed(
        net.with_tables(load=load),
        "ieee9-q200",
        "seed 002 §6 modified IEEE 9-bus: reactive load at bus 9 (MATPOWER numbering, the "
        "125 MW load) raised from 50 to 200 MVAr",
    )


# Seed 002 §6: "the bus voltage magnitude and transformer tap should lie between the limits of
# 0.9–1.1 pu". case9's three generator step-up transformers (MATPOWER lists them as branches
# 1-4, 8-2, 3-6 with no tap) get on-load tap changers of ±8 steps of 1.25 %: 0.9–1.1, at the
# generator end (MATPOWER's from end, bus 8 for 8-2), neutral (ratio 1) as in the data.
IEEE9_TAP_BRANCHES = ("1-4", "8-2", "3-6")


def _ieee9_taps(base: Callable[[], Network], name: str) -> Callable[[], Network]:
    def build() -> Network:
        from .taps import with_tap_changers

        net = with_tap_changers(
            base(), IEEE9_TAP_BRANCHES, tap_min=-8, tap_max=8, step_percent=1.25
        )
        return _renamed(net, name, net.notes + "; OLTCs on 1-4, 8-2, 3-6: ±8 × 1.25 %")

    return build


def _renamed(net: Network, name: str, notes: str) -> Network:
    return replace(net, name=name, notes=notes)


def _case33bw() -> Network:
    import pandapower.networks as pn

    net = from_pandapower(pn.case33bw(), name="case33bw")
    # Baran & Wu number buses 1..33; pandapower uses 0..32.
    shift = {int(b): int(b) + 1 for b in net.bus.index}
    bus = net.bus.copy()
    bus.index = [shift[int(b)] for b in bus.index]
    bus["name"] = [str(b) for b in bus.index]
    branch = net.branch.copy()
    branch["from_bus"] = branch.from_bus.map(shift)
    branch["to_bus"] = branch.to_bus.map(shift)
    branch["name"] = [f"{f}-{t}" for f, t in zip(branch.from_bus, branch.to_bus, strict=True)]
    tables = {"bus": bus, "branch": branch}
    for key in ("gen", "load", "shunt"):
        frame = getattr(net, key).copy()
        frame["bus"] = frame.bus.map(shift)
        tables[key] = frame
    tables["load"]["name"] = [f"L{b}" for b in tables["load"].bus]  # one load per bus
    return _renamed(
        net.with_tables(**tables),
        "case33bw",
        "Baran & Wu 33-bus feeder (12.66 kV) from pandapower, buses renumbered 1..33",
    )


SCE56_VN_KV = 12.0
SCE56_BASE_MVA = 1.0
SCE56_SUBSTATION_SN_MVA = 10.0


def _sce56() -> Network:
    def rows(name: str) -> list[dict[str, str]]:
        with _data_path("sce56", name).open() as fh:
            return list(csv.DictReader(fh))

    base, vn = SCE56_BASE_MVA, SCE56_VN_KV
    lines = rows("lines.csv")
    buses = sorted({int(r["from_bus"]) for r in lines} | {int(r["to_bus"]) for r in lines})
    bus = table(
        [{"name": str(b), "vn_kv": vn, "vmin_pu": 0.95, "vmax_pu": 1.05} for b in buses],
        BUS_COLUMNS,
    )
    bus.index = buses
    branch = []
    for r in lines:
        f, t = int(r["from_bus"]), int(r["to_bus"])
        r_pu, x_pu = ohm_to_pu(float(r["r_ohm"]), float(r["x_ohm"]), vn, base)
        branch.append(
            {
                "from_bus": f,
                "to_bus": t,
                "r_pu": r_pu,
                "x_pu": x_pu,
                "b_pu": 0.0,
                "ratio": 0.0,
                "shift_deg": 0.0,
                "rate_mva": 0.0,
                "kind": "line",
                "name": f"{f}-{t}",
            }
        )
    loads = []
    for r in rows("loads.csv"):
        s, pf = float(r["peak_mva"]), float(r["power_factor"])
        b = int(r["bus"])
        loads.append(
            {"name": f"L{b}", "bus": b, "p_mw": s * pf, "q_mvar": s * math.sqrt(1 - pf * pf)}
        )
    shunts = [
        {"name": f"C{r['bus']}", "bus": int(r["bus"]), "g_mw": 0.0, "b_mvar": float(r["q_mvar"])}
        for r in rows("shunt_capacitors.csv")
    ]
    sn = SCE56_SUBSTATION_SN_MVA
    gen = [
        {
            "name": "SUBSTATION",
            "bus": 1,
            "role": "slack",
            "p_mw": 0.0,
            "q_mvar": 0.0,
            "vm_pu": 1.0,
            "sn_mva": sn,
            "pmin_mw": -sn,
            "pmax_mw": sn,
            "qmin_mvar": -sn,
            "qmax_mvar": sn,
            "slack_weight": 1.0,
        }
    ]
    return Network(
        name="sce56",
        base_mva=base,
        bus=bus,
        branch=table(branch, BRANCH_COLUMNS),
        gen=table(gen, GEN_COLUMNS),
        load=table(loads, LOAD_COLUMNS),
        shunt=table(shunts, SHUNT_COLUMNS),
        notes=(
            "SCE 56-bus feeder (seed 001), 12 kV, 1 MVA base, loads at peak (pf 0.9), 4 "
            "capacitors 0.6 MVAr as shunts, no DERs, lines unrated (seed 001: no current limits)"
        ),
    )


_CASES: dict[str, tuple[str, Callable[[], Network]]] = {
    "microgrid9": (
        "seed 000 9-bus 20 kV microgrid, CASE 1: grid at bus 1, DGs at 2-4 (1.5 MVA)",
        lambda: _microgrid(islanded=False),
    ),
    "microgrid9-islanded": (
        "seed 000 9-bus microgrid, CASE 2: islanded, DGs 2.5/2.5/2.0 MVA share the balance",
        lambda: _microgrid(islanded=True),
    ),
    "ieee9": ("MATPOWER case9 (IEEE/WSCC 9-bus, seed 002), base loss 4.95 MW", _ieee9),
    "ieee9-q200": (
        "ieee9 with the reactive load at bus 9 raised to 200 MVAr (seed 002)",
        _ieee9_q200,
    ),
    "ieee9-taps": (
        "ieee9 with on-load tap changers on its three transformers, 0.9-1.1 (seed 002)",
        _ieee9_taps(_ieee9, "ieee9-taps"),
    ),
    "ieee9-q200-taps": (
        "ieee9-q200 with the same three tap changers (seed 002's seven controls with an SVC)",
        _ieee9_taps(_ieee9_q200, "ieee9-q200-taps"),
    ),
    "case33bw": ("Baran-Wu 33-bus 12.66 kV radial feeder (from pandapower)", _case33bw),
    "sce56": ("SCE 56-bus 12 kV feeder (seed 001) at peak load, 4 capacitors, no DERs", _sce56),
}


def list_cases() -> dict[str, str]:
    """Shipped case names with a one-line description (plus ``pandapower:<name>`` and paths)."""
    return {name: desc for name, (desc, _) in _CASES.items()}


@functools.lru_cache(maxsize=32)
def _load_cached(name: str) -> Network:
    if name in _CASES:
        return validate(_CASES[name][1]())
    if name.startswith("pandapower:"):
        return validate(load_pandapower_case(name.split(":", 1)[1]))
    if name.startswith("simbench:"):
        return validate(load_simbench(name.split(":", 1)[1]))
    raise AssertionError(name)


@functools.lru_cache(maxsize=8)
def _load_json_cached(path: str, mtime_ns: int, size: int) -> Network:
    """A pandapower JSON file parsed once per process and version of the file (its path, mtime
    and size are the key): parsing one takes seconds on a busy machine, and a DSO service
    would otherwise parse its grid again for every object built from the same case."""
    del mtime_ns, size  # part of the cache key only: an edited file is parsed again
    return validate(load_pandapower_json(Path(path)))


def load_case(name: str | Path) -> Network:
    """A network by case name, ``pandapower:<function>``, or path to a ``.json``/``.m`` file."""
    if isinstance(name, str) and (name in _CASES or name.startswith(("pandapower:", "simbench:"))):
        return _load_cached(name).copy()
    path = Path(name)
    if path.suffix.lower() == ".m" and path.is_file():
        return validate(load_matpower(path))
    if path.suffix.lower() == ".json" and path.is_file():
        stat = path.stat()
        return _load_json_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size).copy()
    if path.suffix.lower() in (".m", ".json"):
        raise CaseFormatError(f"no such case file: {path}")
    raise UnknownCaseError(
        f"unknown case {str(name)!r}; known cases: {', '.join(_CASES)}; or "
        "'pandapower:<name>' (e.g. pandapower:case118), 'simbench:<code>' (e.g. "
        "simbench:1-LV-rural3--0-sw), or a path to a .json/.m file"
    )
