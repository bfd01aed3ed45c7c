"""DSO validation scenarios in YAML: a network, the trades running over time, the initial state.

A scenario file (``scenarios/*.yaml``, shipped inside the package too)::

    name: seed000-case1
    case: microgrid9              # any name load_case accepts
    control: q                    # R-OPF variables: q (reactive injections) or vm (voltages)
    method: exact                 # default solver; the CLI's --method overrides
    seed: 0                       # for the population solvers
    voltage_limits_pu: [0.95, 1.05]   # optional; default: the case's bus limits
    regulators: [DG2, DG3, DG4]   # generators the DSO may move (default: all 'regulator' ones)
    initial_setpoints: case       # or {DG2: {q_kvar: 0}, ...} / {G2: {vm_pu: 1.02}}
    price_utoken_per_kwh: 200000  # C_kWh of seed 000 eq. 8
    k_per_kw: 0.1                 # k of seed 000 eq. 8 (per kW of loss reduction)
    times: {t1: 2026-01-01T10:00:00Z, t2: 2026-01-01T10:15:00Z}
    trades:
      - {id: tr1, seller: DG2, buyer_bus: 5, power_kw: 300, start: t1, end: t2}
      - {id: tr2, seller: "LV3.101 SGen 1", buyer: "LV3.101 Load 7", power_kw: 5, ...}
    intervals: [...]              # optional: [{id, start, end}]; default: cut at trade bounds
    svcs: [{name: SVC9, bus: 9, qmin_mvar: -100, qmax_mvar: 300}]   # optional additions
    slack_vm_free: false          # islanded: the reference DG's voltage is a variable too
    ranking: [{buyer_bus: 7, power_kw: 100, candidates: [G1, G2, G3], at: t1}]  # optional

``seller`` is a generator name (a pandapower static generator's name, too) or a bus number (a
bus without a generator gets a unit-power-factor prosumer injection); the buyer is ``buyer_bus``
(a bus number) or ``buyer`` (a load's name or a bus number). ``control`` defaults to the case's
own (``q`` for grids whose regulators are static generators). Every error names the field and
what was expected.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..grid.network import Network, RegulatorControl

MS_PER_HOUR = 3_600_000
SCENARIO_SUFFIXES = (".yaml", ".yml")


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message names the file, field and expectation."""


Fail = Callable[[str], ScenarioError]  # builds the error for a message (prefixed with the file)
When = Callable[[Any, str], int]  # a time label or timestamp -> ms since the epoch


@dataclass(frozen=True)
class Trade:
    id: str
    seller: str  # generator name, or "bus <id>"
    buyer_bus: int
    power_kw: float
    start_ms: int
    end_ms: int
    buyer_load: str | None = None  # the buyer's load element, when named by it

    def runs_during(self, start_ms: int, end_ms: int) -> bool:
        return self.start_ms < end_ms and start_ms < self.end_ms


@dataclass(frozen=True)
class Interval:
    id: str
    start_ms: int
    end_ms: int

    @property
    def hours(self) -> float:
        return (self.end_ms - self.start_ms) / MS_PER_HOUR


@dataclass(frozen=True)
class SetPoint:
    q_kvar: float | None = None
    vm_pu: float | None = None


@dataclass(frozen=True)
class RankingRequest:
    buyer_bus: int
    power_kw: float
    candidates: list[str]
    at_ms: int


@dataclass(frozen=True)
class Scenario:
    name: str
    case: str
    control: RegulatorControl
    method: str
    seed: int
    trades: list[Trade]
    intervals: list[Interval]
    initial_setpoints: dict[str, SetPoint] | None  # None: the case's own
    regulators: list[str] | None
    voltage_limits_pu: tuple[float, float] | None
    price_utoken_per_kwh: int
    k_per_kw: float
    svcs: list[dict[str, Any]] = field(default_factory=list)
    slack_vm_free: bool = False
    ranking: list[RankingRequest] = field(default_factory=list)
    description: str = ""
    source: str = ""

    def trades_in(self, interval: Interval) -> list[Trade]:
        return [t for t in self.trades if t.runs_during(interval.start_ms, interval.end_ms)]


# ---- locating ------------------------------------------------------------------------------


def shipped_scenarios() -> dict[str, Path]:
    """Scenarios packaged with gridledger, by name (file stem)."""
    root = resources.files("gridledger").joinpath("scenarios")
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith(SCENARIO_SUFFIXES):
            out[entry.name.rsplit(".", 1)[0]] = Path(str(entry))
    return dict(sorted(out.items()))


def resolve_scenario(ref: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped scenario (``seed000_case1``)."""
    path = Path(ref)
    if path.is_file():
        return path
    shipped = shipped_scenarios()
    stem = path.name.rsplit(".", 1)[0] if path.suffix in SCENARIO_SUFFIXES else str(ref)
    if stem in shipped:
        return shipped[stem]
    raise ScenarioError(
        f"no scenario file {str(ref)!r} and no shipped scenario by that name; "
        f"shipped: {', '.join(shipped) or 'none'}"
    )


# ---- parsing -------------------------------------------------------------------------------


def load_scenario(ref: str | Path, network: Network | None = None) -> Scenario:
    """Read and check a scenario; ``network`` (else its ``case``) is used to check buses/names."""
    path = resolve_scenario(ref)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from exc
    return parse_scenario(data, source=str(path), network=network)


_SCENARIO_FIELDS = {
    "name", "description", "case", "control", "method", "seed", "voltage_limits_pu",
    "regulators", "initial_setpoints", "price_utoken_per_kwh", "k_per_kw", "times",
    "trades", "intervals", "svcs", "ranking", "slack_vm_free",
}  # fmt: skip
_TRADE_FIELDS = ("id", "seller", "power_kw", "start", "end")  # and buyer_bus or buyer


def parse_scenario(
    data: Any, source: str = "<scenario>", network: Network | None = None
) -> Scenario:
    where = source

    def fail(msg: str) -> ScenarioError:
        return ScenarioError(f"{where}: {msg}")

    _check_fields(data, fail)
    name = _str(data["name"], "name", fail)
    case = _str(data["case"], "case", fail)
    control, method, seed = _solver_choices(data, fail)
    if network is None:
        network = _load_network(case, fail)
    if control is None:
        control = network.regulator_control  # sgen grids regulate by reactive injection
    buses = {int(b) for b in network.bus.index}
    gens = [str(g) for g in network.gen["name"]]

    times = _times(data.get("times", {}), fail)

    def when(value: Any, label: str) -> int:
        if isinstance(value, str) and value in times:
            return times[value]
        return _timestamp_ms(value, label, fail)

    trades = _trades(data["trades"], network, gens, buses, when, fail)
    intervals = _intervals(data.get("intervals"), trades, times, when, fail)
    initial = _setpoints(data.get("initial_setpoints", "case"), gens, fail)
    regulators = _regulators(data.get("regulators"), gens, fail)
    limits = _voltage_limits(data.get("voltage_limits_pu"), fail)
    price, k = _prices(data, fail)
    svcs = _svcs(data.get("svcs", []), buses, fail)
    slack_vm_free = data.get("slack_vm_free", False)
    if not isinstance(slack_vm_free, bool):
        raise fail(f"slack_vm_free must be true or false, got {slack_vm_free!r}")
    ranking = _ranking(data.get("ranking", []), gens, buses, when, fail)
    return Scenario(
        name=name,
        case=case,
        control=control,
        method=method,
        seed=seed,
        trades=trades,
        intervals=intervals,
        initial_setpoints=initial,
        regulators=regulators,
        voltage_limits_pu=limits,
        price_utoken_per_kwh=price,
        k_per_kw=k,
        svcs=svcs,
        slack_vm_free=slack_vm_free,
        ranking=ranking,
        description=str(data.get("description", "")),
        source=source,
    )


def _check_fields(data: Any, fail: Fail) -> None:
    """A mapping with only known fields and the required ones."""
    if not isinstance(data, dict):
        raise fail("top level must be a mapping")
    unknown = sorted(set(data) - _SCENARIO_FIELDS)
    if unknown:
        raise fail(f"unknown field(s) {unknown}; known: {sorted(_SCENARIO_FIELDS)}")
    for key in ("name", "case", "trades"):
        if key not in data:
            raise fail(f"missing field {key!r}")


def _solver_choices(data: dict[str, Any], fail: Fail) -> tuple[RegulatorControl | None, str, int]:
    """Voltage control mode (None: the network's own), R-OPF method and seed."""
    control = data.get("control")
    if control is not None and control not in ("vm", "q"):
        raise fail(f"control must be 'vm' or 'q', got {control!r}")
    method = data.get("method", "exact")
    from ..grid.ropf import METHODS

    if method not in METHODS:
        raise fail(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise fail(f"seed must be a non-negative integer, got {seed!r}")
    return control, method, seed


def _load_network(case: str, fail: Fail) -> Network:
    from ..grid.cases import load_case

    try:
        return load_case(case)
    except ValueError as exc:
        raise fail(f"case: {exc}") from exc


def _trades(
    trades_raw: Any, network: Network, gens: list[str], buses: set[int], when: When, fail: Fail
) -> list[Trade]:
    if not isinstance(trades_raw, list):
        raise fail("trades must be a list")
    trades: list[Trade] = []
    seen: set[str] = set()
    for i, t in enumerate(trades_raw):
        trades.append(_trade(t, f"trades[{i}]", seen, network, gens, buses, when, fail))
    return trades


def _trade(
    t: Any,
    label: str,
    seen: set[str],
    network: Network,
    gens: list[str],
    buses: set[int],
    when: When,
    fail: Fail,
) -> Trade:
    """One trade; its id joins ``seen`` (ids must be unique)."""
    if not isinstance(t, dict):
        raise fail(f"{label} must be a mapping")
    miss = [k for k in _TRADE_FIELDS if k not in t]
    if ("buyer_bus" in t) == ("buyer" in t):
        miss.append("buyer_bus or buyer (exactly one)")
    if miss:
        raise fail(f"{label}: missing field(s) {miss}")
    extra = sorted(set(t) - {*_TRADE_FIELDS, "buyer_bus", "buyer"})
    if extra:
        raise fail(f"{label}: unknown field(s) {extra}")
    tid = _str(t["id"], f"{label}.id", fail)
    if tid in seen:
        raise fail(f"{label}: duplicate trade id {tid!r}")
    seen.add(tid)
    seller = _seller(t["seller"], f"{label}.seller", gens, buses, fail)
    buyer, buyer_load = _buyer(t, label, tid, network, buses, fail)
    power = _number(t["power_kw"], f"{label}.power_kw", fail)
    if power <= 0:
        raise fail(f"{label} ({tid}): power_kw must be positive, got {power}")
    start, end = when(t["start"], f"{label}.start"), when(t["end"], f"{label}.end")
    if end <= start:
        raise fail(f"{label} ({tid}): end must be after start")
    return Trade(tid, seller, buyer, power, start, end, buyer_load)


def _buyer(
    t: dict[str, Any], label: str, tid: str, network: Network, buses: set[int], fail: Fail
) -> tuple[int, str | None]:
    """The buyer's bus, and its load element when the scenario names the buyer by load."""
    load_bus = {str(n): int(b) for n, b in zip(network.load["name"], network.load.bus, strict=True)}
    buyer_load = None
    buyer = t.get("buyer_bus", t.get("buyer"))
    if "buyer" in t and isinstance(buyer, str) and buyer in load_bus:
        buyer_load, buyer = buyer, load_bus[buyer]
    elif "buyer" in t and isinstance(buyer, str) and buyer.lower().startswith("bus "):
        tail = buyer.split()[1]
        buyer = int(tail) if tail.lstrip("-").isdigit() else buyer
    if "buyer" in t and not isinstance(buyer, int):
        shown = list(load_bus)[:10]
        raise fail(
            f"{label} ({tid}): buyer {t['buyer']!r} is neither a load of {network.name} "
            f"(loads: {', '.join(shown)}{', ...' if len(load_bus) > 10 else ''}) nor a bus"
        )
    if not isinstance(buyer, int) or isinstance(buyer, bool) or buyer not in buses:
        raise fail(
            f"{label} ({tid}): buyer_bus {buyer!r} is not a bus of {network.name}; "
            f"buses: {sorted(buses)}"
        )
    return buyer, buyer_load


def _regulators(regulators: Any, gens: list[str], fail: Fail) -> list[str] | None:
    if regulators is not None:
        if not isinstance(regulators, list) or not regulators:
            raise fail("regulators must be a non-empty list of generator names")
        for r in regulators:
            if r not in gens:
                raise fail(f"regulators: no generator {r!r}; generators: {gens}")
        return [str(r) for r in regulators]
    return None


def _voltage_limits(limits: Any, fail: Fail) -> tuple[float, float] | None:
    if limits is None:
        return None
    if (
        not isinstance(limits, list)
        or len(limits) != 2
        or not all(isinstance(v, int | float) for v in limits)
        or not 0 < limits[0] < limits[1]
    ):
        raise fail(f"voltage_limits_pu must be [vmin, vmax] with 0 < vmin < vmax, got {limits}")
    return (float(limits[0]), float(limits[1]))


def _prices(data: dict[str, Any], fail: Fail) -> tuple[int, float]:
    """The energy price (utoken per kWh) and the loss-cost factor k (per kW)."""
    price = data.get("price_utoken_per_kwh", 0)
    if not isinstance(price, int) or isinstance(price, bool) or price < 0:
        raise fail(f"price_utoken_per_kwh must be a non-negative integer, got {price!r}")
    k = _number(data.get("k_per_kw", 0.1), "k_per_kw", fail)
    if k < 0:
        raise fail(f"k_per_kw must be >= 0, got {k}")
    return price, k


def _str(value: Any, label: str, fail: Fail) -> str:
    if not isinstance(value, str) or not value:
        raise fail(f"{label} must be a non-empty string, got {value!r}")
    return value


def _number(value: Any, label: str, fail: Fail) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail(f"{label} must be a finite number, got {value!r}")
    return float(value)


def _timestamp_ms(value: Any, label: str, fail: Fail) -> int:
    dt: datetime | None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise fail(
                f"{label}: {value!r} is neither a time label nor an ISO 8601 timestamp"
            ) from None
    else:
        raise fail(f"{label}: expected a time label or an ISO 8601 timestamp, got {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def _times(raw: Any, fail: Fail) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise fail("times must be a mapping label -> ISO 8601 timestamp")
    return {str(k): _timestamp_ms(v, f"times.{k}", fail) for k, v in raw.items()}


def _seller(value: Any, label: str, gens: list[str], buses: set[int], fail: Fail) -> str:
    if isinstance(value, str) and value in gens:
        return value
    bus = value
    if isinstance(value, str) and value.lower().startswith("bus "):
        try:
            bus = int(value.split()[1])
        except ValueError:
            bus = value
    if isinstance(bus, int) and not isinstance(bus, bool) and bus in buses:
        return f"bus {bus}"
    raise fail(
        f"{label}: {value!r} is neither a generator ({', '.join(gens)}) nor a bus "
        f"of the network (buses {sorted(buses)})"
    )


def _intervals(
    raw: Any, trades: list[Trade], times: dict[str, int], when: When, fail: Fail
) -> list[Interval]:
    if raw is None:
        cuts = sorted({t.start_ms for t in trades} | {t.end_ms for t in trades})
        label = {v: k for k, v in times.items()}
        out = []
        for a, b in itertools.pairwise(cuts):
            if any(t.runs_during(a, b) for t in trades):
                name = f"{label.get(a, _iso(a))}-{label.get(b, _iso(b))}"
                out.append(Interval(name, a, b))
        return out
    if not isinstance(raw, list) or not raw:
        raise fail("intervals must be a non-empty list of {id, start, end}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or {"id", "start", "end"} - set(item):
            raise fail(f"intervals[{i}] must have id, start and end")
        a, b = (
            when(item["start"], f"intervals[{i}].start"),
            when(item["end"], f"intervals[{i}].end"),
        )
        if b <= a:
            raise fail(f"intervals[{i}] ({item['id']}): end must be after start")
        out.append(Interval(str(item["id"]), a, b))
    out.sort(key=lambda iv: iv.start_ms)
    for prev, nxt in itertools.pairwise(out):
        if nxt.start_ms < prev.end_ms:
            raise fail(f"intervals {prev.id} and {nxt.id} overlap")
    return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _setpoints(raw: Any, gens: list[str], fail: Fail) -> dict[str, SetPoint] | None:
    if raw == "case":
        return None
    if not isinstance(raw, dict):
        raise fail("initial_setpoints must be 'case' or a mapping generator -> {q_kvar|vm_pu}")
    out = {}
    for g, sp in raw.items():
        if g not in gens:
            raise fail(f"initial_setpoints: no generator {g!r}; generators: {gens}")
        if not isinstance(sp, dict) or len(sp) != 1 or next(iter(sp)) not in ("q_kvar", "vm_pu"):
            raise fail(f"initial_setpoints.{g} must be {{q_kvar: x}} or {{vm_pu: x}}")
        key, value = next(iter(sp.items()))
        v = _number(value, f"initial_setpoints.{g}.{key}", fail)
        if key == "vm_pu" and not 0.5 < v < 1.5:
            raise fail(f"initial_setpoints.{g}.vm_pu must be in (0.5, 1.5), got {v}")
        out[g] = SetPoint(**{key: v})
    return out


def _svcs(raw: Any, buses: set[int], fail: Fail) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise fail("svcs must be a list")
    out = []
    for i, s in enumerate(raw):
        need = {"name", "bus", "qmin_mvar", "qmax_mvar"}
        if not isinstance(s, dict) or need - set(s) or set(s) - need - {"q_mvar"}:
            raise fail(f"svcs[{i}] must have exactly name, bus, qmin_mvar, qmax_mvar (q_mvar)")
        if s["bus"] not in buses:
            raise fail(f"svcs[{i}]: bus {s['bus']!r} is not a bus of the network")
        lo = _number(s["qmin_mvar"], f"svcs[{i}].qmin_mvar", fail)
        hi = _number(s["qmax_mvar"], f"svcs[{i}].qmax_mvar", fail)
        if lo > hi:
            raise fail(f"svcs[{i}]: qmin_mvar > qmax_mvar")
        q = _number(s.get("q_mvar", 0.0), f"svcs[{i}].q_mvar", fail)
        out.append({"name": str(s["name"]), "bus": int(s["bus"]), "qmin_mvar": lo,
                    "qmax_mvar": hi, "q_mvar": min(max(q, lo), hi)})  # fmt: skip
    return out


def _ranking(
    raw: Any, gens: list[str], buses: set[int], when: When, fail: Fail
) -> list[RankingRequest]:
    if not isinstance(raw, list):
        raise fail("ranking must be a list")
    out = []
    for i, r in enumerate(raw):
        label = f"ranking[{i}]"
        if not isinstance(r, dict) or {"buyer_bus", "power_kw", "candidates", "at"} - set(r):
            raise fail(f"{label} must have buyer_bus, power_kw, candidates and at")
        if r["buyer_bus"] not in buses:
            raise fail(f"{label}: buyer_bus {r['buyer_bus']!r} is not a bus of the network")
        power = _number(r["power_kw"], f"{label}.power_kw", fail)
        if power <= 0:
            raise fail(f"{label}: power_kw must be positive, got {power}")
        if not isinstance(r["candidates"], list) or not r["candidates"]:
            raise fail(f"{label}: candidates must be a non-empty list")
        cands = [_seller(c, f"{label}.candidates", gens, buses, fail) for c in r["candidates"]]
        out.append(RankingRequest(int(r["buyer_bus"]), power, cands, when(r["at"], f"{label}.at")))
    return out
