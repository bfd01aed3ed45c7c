"""The DSO's technical certificate of a trade, and the workflow that produces it.

Seed 000 §II.B, the eight steps the DSO takes before a new trade may start:

1. read the trades running in the interval and the proposal (here: the scenario / the caller);
2. set the generators not in the new trade at the values they had in the preceding interval
   (their previous reactive set-points; active power stays where running trades put it);
3. add the proposal's power to the seller's generation and the buyer's load
   (:func:`superpose`; the load keeps its power factor);
4. run the R-OPF for new reactive set-points of the regulator nodes;
5. attribute the network losses to each running trade (Global method, seed 000 eq. 5);
6. quantify the change of losses the new trade causes;
7. quantify the reactive power each regulator node must supply (ΔQ against the previous
   interval, and its opportunity cost ΔPQ, seed 000 eq. 7) and its remuneration (eq. 8);
8. the losses attributable to all trades including the new one — all written into a
   :class:`Certificate` with the voltages, line loadings and a verdict with reasons.

"Without R-OPF" (seed 000 Table III, rows N) is the same interval with every regulator left at
the initial set-points (no DSO imposition at all); "with R-OPF" (rows Y) is the optimum.

A certificate is plain data: :meth:`Certificate.to_dict` gives JSON types only, with units in
the key names, so the chain can hash and store it; :meth:`Certificate.from_dict` reads it back.
Floats stay floats here; the chain layer converts what it settles on (W, var, utoken) to integers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..grid.compiled import compile_network
from ..grid.losses import global_method
from ..grid.network import SVC_COLUMNS, GenRole, Network, RegulatorControl, table
from ..grid.powerflow import PowerFlowResult, run_pf
from ..grid.ropf import RopfOptions, RopfProblem, solve_ropf
from .remuneration import RemunerationError, regulator_payment
from .scenario import Interval, Scenario, SetPoint, Trade

CERTIFICATE_VERSION = 1


class WorkflowError(ValueError):
    """The DSO cannot even evaluate the proposal (unknown generator, bus, ...)."""


# ---- the certificate ------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeLoss:
    id: str
    seller: str
    buyer_bus: int
    power_kw: float
    loss_share_kw: float
    loss_share_without_ropf_kw: float


@dataclass(frozen=True)
class RegulatorRecord:
    node: str
    bus: int
    q_kvar: float
    vm_pu: float
    delta_q_kvar: float
    delta_pq_kw: float
    remuneration_utoken: int


@dataclass(frozen=True)
class Certificate:
    """What the DSO signs for one interval (one new trade on top of the running ones)."""

    network: str
    interval: str
    start_ms: int
    end_ms: int
    new_trade: str | None
    method: str
    seed: int
    loss_without_ropf_kw: float
    loss_with_ropf_kw: float
    loss_change_kw: float  # step 6: optimized losses minus the previous interval's optimized
    total_load_kw: float
    trades: list[TradeLoss]
    regulators: list[RegulatorRecord]
    bus_vm_pu: dict[str, float]
    line_loading_pct: dict[str, float]
    feasible: bool
    reasons: list[str]
    evaluations: int = 0
    version: int = CERTIFICATE_VERSION
    # Transformer no-load losses with R-OPF (kW): not shared out over the trades (docs/physics.md)
    no_load_loss_kw: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trades"] = [asdict(t) for t in self.trades]
        d["regulators"] = [asdict(r) for r in self.regulators]
        plain: dict[str, Any] = _plain(d)
        return plain

    def to_chain_dict(self) -> dict[str, Any]:
        """The integer form for the ledger (W, var, utoken; voltages in micro-pu,
        loadings in basis points), every amount rounded to the nearest unit."""

        def i(x: float | None) -> int | None:
            return None if x is None or not math.isfinite(x) else round(x)

        return {
            "version": self.version,
            "network": self.network,
            "interval": self.interval,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "new_trade": self.new_trade,
            "method": self.method,
            "seed": self.seed,
            "loss_without_ropf_w": i(self.loss_without_ropf_kw * 1e3),
            "loss_with_ropf_w": i(self.loss_with_ropf_kw * 1e3),
            "loss_change_w": i(self.loss_change_kw * 1e3),
            "total_load_w": i(self.total_load_kw * 1e3),
            "trades": [
                {
                    "id": t.id,
                    "seller": t.seller,
                    "buyer_bus": t.buyer_bus,
                    "power_w": i(t.power_kw * 1e3),
                    "loss_share_w": i(t.loss_share_kw * 1e3),
                    "loss_share_without_ropf_w": i(t.loss_share_without_ropf_kw * 1e3),
                }
                for t in self.trades
            ],
            "regulators": [
                {
                    "node": r.node,
                    "bus": r.bus,
                    "q_var": i(r.q_kvar * 1e3),
                    "vm_upu": i(r.vm_pu * 1e6),
                    "delta_q_var": i(r.delta_q_kvar * 1e3),
                    "delta_pq_w": i(r.delta_pq_kw * 1e3),
                    "remuneration_utoken": r.remuneration_utoken,
                }
                for r in self.regulators
            ],
            "bus_vm_upu": {b: i(v * 1e6) for b, v in self.bus_vm_pu.items()},
            "line_loading_bp": {n: i(v * 100) for n, v in self.line_loading_pct.items()},
            "feasible": self.feasible,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Certificate:
        try:
            version = data.get("version", CERTIFICATE_VERSION)
            if version != CERTIFICATE_VERSION:
                raise WorkflowError(f"certificate version {version} is not {CERTIFICATE_VERSION}")
            fields = _nan_back(data)
            fields["trades"] = [TradeLoss(**_nan_back(t)) for t in data["trades"]]
            fields["regulators"] = [RegulatorRecord(**r) for r in data["regulators"]]
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise WorkflowError(f"not a certificate: {exc}") from exc


def _nan_back(d: dict[str, Any]) -> dict[str, Any]:
    """``None`` in a kW field was a NaN ("not computed") before ``to_dict``."""
    return {k: (math.nan if v is None and k.endswith("_kw") else v) for k, v in d.items()}


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON has no NaN: "not computed" (e.g. a power flow that diverged)
    return x


# ---- steps 2-3: the operating point of an interval -------------------------------------------


@dataclass(frozen=True)
class DsoSettings:
    control: RegulatorControl = "vm"
    method: str = "exact"
    seed: int = 0
    regulators: list[str] | None = None
    voltage_limits_pu: tuple[float, float] | None = None
    slack_vm_free: bool = False
    price_utoken_per_kwh: int = 0
    k_per_kw: float = 0.1

    def options(self) -> RopfOptions:
        lo, hi = self.voltage_limits_pu or (None, None)
        return RopfOptions(vmin_pu=lo, vmax_pu=hi, slack_vm_free=self.slack_vm_free)


def superpose(net: Network, trades: Sequence[Trade]) -> Network:
    """Add each trade's power to its seller's generation and its buyer's load (constant pf).

    A seller named by a bus with no generator is a prosumer inverter at unit power factor: it
    becomes a fixed-injection (``pq``) generator. A buyer bus with no load gets a new load at
    unit power factor.
    """
    gen = net.gen.copy()
    load = net.load.copy()
    bus_ids = {int(b) for b in net.bus.index}
    for t in trades:
        p_mw = t.power_kw / 1000.0
        if t.seller.startswith("bus "):
            bus = int(t.seller.split()[1])
            if bus not in bus_ids:
                raise WorkflowError(f"trade {t.id}: seller bus {bus} is not in {net.name}")
            at = np.flatnonzero(gen.bus.to_numpy() == bus)
            if at.size:
                gen.loc[gen.index[at[0]], "p_mw"] += p_mw
            else:
                gen = pd.concat([gen, _prosumer_row(gen, t, bus, p_mw)], ignore_index=True)
        else:
            hit = np.flatnonzero(gen["name"].to_numpy() == t.seller)
            if hit.size != 1:
                raise WorkflowError(f"trade {t.id}: no generator named {t.seller!r}")
            gen.loc[gen.index[hit[0]], "p_mw"] += p_mw
        if t.buyer_bus not in bus_ids:
            raise WorkflowError(f"trade {t.id}: buyer bus {t.buyer_bus} is not in {net.name}")
        if t.buyer_load is not None:
            at = np.flatnonzero(load["name"].to_numpy() == t.buyer_load)
            if at.size != 1:
                raise WorkflowError(f"trade {t.id}: no load named {t.buyer_load!r}")
        else:
            at = np.flatnonzero(load.bus.to_numpy() == t.buyer_bus)
        if at.size:
            i = load.index[at[0]]
            p0, q0 = float(load["p_mw"].to_numpy()[at[0]]), float(load["q_mvar"].to_numpy()[at[0]])
            load.at[i, "p_mw"] = p0 + p_mw
            # the load's own power factor, also when its P is negative (a base from which
            # purchases were taken out, as the community's operating point does): with a
            # `p0 > 0` guard, the first purchase onto such a load added no Q and left a stale
            # negative Q whose ratio to the next, tiny P scaled every later purchase's Q by ~50
            load.at[i, "q_mvar"] = q0 + (p_mw * q0 / p0 if p0 != 0 else 0.0)
        else:
            row = {
                "name": f"L{t.buyer_bus}-{t.id}",
                "bus": t.buyer_bus,
                "p_mw": p_mw,
                "q_mvar": 0.0,
            }
            load = pd.concat([load, pd.DataFrame([row])], ignore_index=True)
    return net.with_tables(gen=gen, load=load)


def _prosumer_row(gen: pd.DataFrame, t: Trade, bus: int, p_mw: float) -> pd.DataFrame:
    row = {
        "name": f"PV{bus}-{t.id}",
        "bus": bus,
        "role": GenRole.PQ.value,
        "p_mw": p_mw,
        "q_mvar": 0.0,
        "vm_pu": 1.0,
        "sn_mva": p_mw,
        "pmin_mw": 0.0,
        "pmax_mw": p_mw,
        "qmin_mvar": 0.0,
        "qmax_mvar": 0.0,
        "slack_weight": 0.0,
    }
    return pd.DataFrame([row]).astype(gen.dtypes.to_dict())


def with_setpoints(net: Network, setpoints: dict[str, SetPoint]) -> Network:
    """Generators at the given reactive set-points (q and/or vm)."""
    gen = net.gen.copy()
    names = gen["name"].to_numpy()
    for g, sp in setpoints.items():
        hit = np.flatnonzero(names == g)
        if hit.size != 1:
            raise WorkflowError(f"set-point for unknown generator {g!r}")
        i = gen.index[hit[0]]
        if sp.q_kvar is not None:
            gen.at[i, "q_mvar"] = sp.q_kvar / 1000.0
        if sp.vm_pu is not None:
            gen.at[i, "vm_pu"] = sp.vm_pu
    return net.with_tables(gen=gen)


def with_regulators(net: Network, regulators: list[str] | None) -> Network:
    """Only the listed generators regulate; other regulators keep their Q fixed (step 2)."""
    if regulators is None:
        return net
    gen = net.gen.copy()
    names = set(regulators)
    unknown = names - set(gen["name"])
    if unknown:
        raise WorkflowError(f"regulators {sorted(unknown)} are not generators of {net.name}")
    fixed = (gen.role == GenRole.REGULATOR.value) & ~gen["name"].isin(names)
    gen.loc[fixed, "role"] = GenRole.PQ.value
    return net.with_tables(gen=gen)


def with_svcs(net: Network, svcs: list[dict[str, Any]]) -> Network:
    if not svcs:
        return net
    extra = table(svcs, SVC_COLUMNS)
    svc = extra if net.svc.empty else pd.concat([net.svc, extra], ignore_index=True)
    return net.with_tables(svc=svc)


def setpoints_of(net: Network, res: PowerFlowResult) -> dict[str, SetPoint]:
    """Each generator's reactive output and bus voltage in a solved operating point."""
    pos = net.bus_position()
    return {
        str(name): SetPoint(
            q_kvar=float(res.gen_q_mvar[i] * 1000.0), vm_pu=float(res.vm_pu[pos[int(bus)]])
        )
        for i, (name, bus) in enumerate(zip(net.gen["name"], net.gen.bus, strict=True))
    }


def initial_setpoints(net: Network, given: dict[str, SetPoint] | None) -> dict[str, SetPoint]:
    """The reactive state before the first interval: the case's own, with ``given`` on top."""
    base = {
        str(n): SetPoint(q_kvar=float(q) * 1000.0, vm_pu=float(v))
        for n, q, v in zip(net.gen["name"], net.gen.q_mvar, net.gen.vm_pu, strict=True)
    }
    for g, sp in (given or {}).items():
        if g not in base:
            raise WorkflowError(f"initial set-point for unknown generator {g!r} of {net.name}")
        old = base[g]
        base[g] = SetPoint(
            q_kvar=sp.q_kvar if sp.q_kvar is not None else old.q_kvar,
            vm_pu=sp.vm_pu if sp.vm_pu is not None else old.vm_pu,
        )
    return base


# ---- steps 4-8 -------------------------------------------------------------------------------


@dataclass
class IntervalOutcome:
    certificate: Certificate
    setpoints: dict[str, SetPoint]  # the optimized state, "previous" for the next interval
    loss_with_ropf_kw: float
    network: Network = field(repr=False)


def certify_interval(
    base: Network,
    running: Sequence[Trade],
    interval: Interval,
    previous: dict[str, SetPoint],
    initial: dict[str, SetPoint],
    settings: DsoSettings,
    new_trade: str | None = None,
    previous_loss_kw: float | None = None,
) -> IntervalOutcome:
    """Steps 2–8 for one interval with ``running`` trades (the new one included)."""
    net = with_regulators(superpose(base, running), settings.regulators)
    # Rows N: every generator at the initial reactive state.
    net_n = with_setpoints(net, {g: sp for g, sp in initial.items() if g in set(net.gen["name"])})
    pf_n = run_pf(net_n, regulator_control=settings.control, check=False)
    # Rows Y: the R-OPF, starting from the previous interval's optimum.
    net_prev = with_setpoints(
        net, {g: sp for g, sp in previous.items() if g in set(net.gen["name"])}
    )
    problem = RopfProblem(compile_network(net_prev), settings.control, settings.options())
    result = solve_ropf(problem, settings.method, rng=settings.seed)
    pf_y = result.pf_after
    load_kw = float(net.load.p_mw.sum() * 1000.0)

    reasons = [_named(str(v), net) for v in result.violations]
    loss_y = pf_y.loss_mw * 1000.0 if pf_y.converged else math.nan
    loss_n = pf_n.loss_mw * 1000.0 if pf_n.converged else math.nan
    shares = _shares(running, loss_y, load_kw)
    shares_n = _shares(running, loss_n, load_kw)
    trades = [
        TradeLoss(t.id, t.seller, t.buyer_bus, t.power_kw, shares.get(t.id, math.nan),
                  shares_n.get(t.id, math.nan))
        for t in running
    ]  # fmt: skip

    regulators = []
    report = settings.regulators or [
        str(n) for n, r in zip(net.gen["name"], net.gen.role, strict=True) if r == "regulator"
    ]
    now = setpoints_of(net, pf_y) if pf_y.converged else previous
    loss_reduction_kw = loss_n - loss_y if math.isfinite(loss_n - loss_y) else 0.0
    for g in report:
        i = int(np.flatnonzero(net.gen["name"].to_numpy() == g)[0])
        # Whole var, the chain's unit: a solver's 1e-9 kvar wobble is not a ΔQ worth paying.
        q_prev = round(previous[g].q_kvar or 0.0, 3)
        q_new = round(now[g].q_kvar or 0.0, 3)
        sn_kva = float(net.gen.sn_mva.iloc[i] * 1000.0)
        try:
            pay = regulator_payment(
                g, sn_kva, q_prev, q_new, loss_reduction_kw, settings.k_per_kw,
                settings.price_utoken_per_kwh, interval.hours,
            )  # fmt: skip
            dpq, money = pay.delta_pq_kw, pay.remuneration_utoken
        except RemunerationError as exc:
            reasons.append(f"{g}: {exc}")
            dpq, money = 0.0, 0
        regulators.append(
            RegulatorRecord(
                node=g,
                bus=int(net.gen.bus.iloc[i]),
                q_kvar=q_new,
                vm_pu=float(now[g].vm_pu or 0.0),
                delta_q_kvar=q_new - q_prev,
                delta_pq_kw=dpq,
                remuneration_utoken=money if result.feasible else 0,
            )
        )
    names = [str(n) for n in net.branch["name"]]
    cert = Certificate(
        network=net.name,
        interval=interval.id,
        start_ms=interval.start_ms,
        end_ms=interval.end_ms,
        new_trade=new_trade,
        method=settings.method,
        seed=settings.seed,
        loss_without_ropf_kw=loss_n,
        loss_with_ropf_kw=loss_y,
        loss_change_kw=loss_y - previous_loss_kw if previous_loss_kw is not None else math.nan,
        total_load_kw=load_kw,
        trades=trades,
        regulators=regulators,
        bus_vm_pu={str(b): float(v) for b, v in zip(pf_y.bus_ids, pf_y.vm_pu, strict=True)},
        line_loading_pct={
            n: float(ld) for n, ld, r in zip(names, pf_y.loading_pct, pf_y.rated, strict=True) if r
        },
        feasible=bool(result.feasible and not reasons),
        reasons=reasons,
        evaluations=int(result.evaluations),
        no_load_loss_kw=pf_y.no_load_loss_mw * 1000.0 if pf_y.converged else math.nan,
    )
    return IntervalOutcome(cert, now, loss_y, net)


_GENERATOR_AT = re.compile(r"generator (\d+) at bus (-?\d+)")
_LINE_AT = re.compile(r"line (-?\d+)-(-?\d+)")


def _named(reason: str, net: Network) -> str:
    """A limit names the element by its index and buses; add the network's own names (a
    pandapower grid's line and static-generator names) so a refusal says what to look at."""

    def gen_name(m: re.Match[str]) -> str:
        g = int(m.group(1))
        name = str(net.gen["name"].iloc[g]) if g < len(net.gen) else "?"
        return f"{m.group(0)} ({name})"

    def line_name(m: re.Match[str]) -> str:
        f, t = int(m.group(1)), int(m.group(2))
        hit = net.branch[(net.branch.from_bus == f) & (net.branch.to_bus == t)]
        name = str(hit["name"].iloc[0]) if len(hit) else ""
        return m.group(0) if not name or name == f"{f}-{t}" else f"{m.group(0)} ({name})"

    return _LINE_AT.sub(line_name, _GENERATOR_AT.sub(gen_name, reason))


def _shares(running: Sequence[Trade], loss_kw: float, load_kw: float) -> dict[str, float]:
    if not math.isfinite(loss_kw):
        return {}
    return global_method(loss_kw, load_kw, {t.id: t.power_kw for t in running}).by_trade_kw


def base_loss_kw(net: Network, setpoints: dict[str, SetPoint], settings: DsoSettings) -> float:
    """Optimized losses before any trade: the reference of step 6 for the first interval, so
    that every interval's change compares R-OPF with R-OPF and isolates the trade's effect."""
    net0 = with_setpoints(with_regulators(net, settings.regulators), setpoints)
    problem = RopfProblem(compile_network(net0), settings.control, settings.options())
    res = solve_ropf(problem, settings.method, rng=settings.seed).pf_after
    return res.loss_mw * 1000.0 if res.converged else math.nan


def scenario_network(scenario: Scenario) -> Network:
    from ..grid.cases import load_case

    return with_svcs(load_case(scenario.case), scenario.svcs)


def scenario_settings(scenario: Scenario, method: str | None = None) -> DsoSettings:
    return DsoSettings(
        control=scenario.control,
        method=method or scenario.method,
        seed=scenario.seed,
        regulators=scenario.regulators,
        voltage_limits_pu=scenario.voltage_limits_pu,
        slack_vm_free=scenario.slack_vm_free,
        price_utoken_per_kwh=scenario.price_utoken_per_kwh,
        k_per_kw=scenario.k_per_kw,
    )


def validate_scenario(scenario: Scenario, method: str | None = None) -> list[Certificate]:
    """One certificate per interval, carrying the optimized set-points from one to the next."""
    net = scenario_network(scenario)
    settings = scenario_settings(scenario, method)
    initial = initial_setpoints(net, scenario.initial_setpoints)
    previous = initial
    prev_loss = base_loss_kw(net, initial, settings)
    started: set[str] = set()
    out = []
    for interval in scenario.intervals:
        running = scenario.trades_in(interval)
        new = [t.id for t in running if t.id not in started]
        started.update(new)
        outcome = certify_interval(
            net, running, interval, previous, initial, settings,
            new_trade=",".join(new) or None, previous_loss_kw=prev_loss,
        )  # fmt: skip
        out.append(outcome.certificate)
        previous = {**previous, **outcome.setpoints}
        prev_loss = outcome.loss_with_ropf_kw
    return out


def certify_trade(
    base: Network,
    running: Sequence[Trade],
    proposed: Trade,
    previous: dict[str, SetPoint],
    settings: DsoSettings,
    initial: dict[str, SetPoint] | None = None,
    previous_loss_kw: float | None = None,
) -> IntervalOutcome:
    """The DSO's answer to one proposed trade over its own window, on top of ``running``.

    ``previous``: the regulators' set-points of the preceding interval (step 2); ``initial``: the
    reactive state "without R-OPF" (defaults to ``previous``). The outcome's ``setpoints`` go to
    the regulator nodes if the certificate is feasible.
    """
    if any(t.id == proposed.id for t in running):
        raise WorkflowError(f"trade {proposed.id} is already running")
    interval = Interval(proposed.id, proposed.start_ms, proposed.end_ms)
    return certify_interval(
        base, [*running, proposed], interval, previous, initial or previous, settings,
        new_trade=proposed.id, previous_loss_kw=previous_loss_kw,
    )  # fmt: skip
