"""The DSO agent's physics: the 8-step workflow of ``gridledger.market.certificate`` on a
scenario's grid, adapted to matches read from the chain.

A scenario (``gridledger.market.scenario``, e.g. ``seed000_case1``) fixes the grid and the DSO's
settings (control, regulators, voltage limits, R-OPF method and seed, k of eq. 8, the initial
reactive state); the trades come from the chain.  Sellers are named by bus (``"bus 2"``): the
workflow adds the power to that bus's generator, or makes it a prosumer injection where the bus
has none.  The remuneration is computed for one market slot at the match's own price.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gridledger.agents.dso_agent import Evaluation, RegulatorOut, TradeSpec
from gridledger.grid.compiled import compile_network
from gridledger.grid.network import Network
from gridledger.grid.powerflow import run_pf
from gridledger.grid.ropf.problem import RopfProblem
from gridledger.market.certificate import (
    DsoSettings,
    certify_interval,
    initial_setpoints,
    scenario_network,
    scenario_settings,
    superpose,
    with_regulators,
    with_setpoints,
)
from gridledger.market.culprits import Overshoot, overshoots
from gridledger.market.scenario import Interval, Scenario, SetPoint, Trade, load_scenario
from gridledger.market.seller_ranking import rank_sellers


@dataclass
class ScenarioEvaluator:
    scenario: Scenario
    method: str | None = None
    net: Network = field(init=False)
    settings: DsoSettings = field(init=False)
    initial: dict[str, SetPoint] = field(init=False)

    def __post_init__(self) -> None:
        self.net = scenario_network(self.scenario)
        self.settings = scenario_settings(self.scenario, self.method)
        self.initial = initial_setpoints(self.net, self.scenario.initial_setpoints)

    @property
    def regulator_buses(self) -> dict[int, str]:
        """Bus -> generator name of the nodes the DSO dispatches for reactive support."""
        names = self.settings.regulators or [
            str(n)
            for n, r in zip(self.net.gen["name"], self.net.gen.role, strict=True)
            if r == "regulator"
        ]
        gen = self.net.gen
        return {int(gen.bus[gen["name"] == n].iloc[0]): n for n in names}

    def initial_state(self) -> dict[str, SetPoint]:
        return dict(self.initial)

    def dump_state(self, state: dict[str, SetPoint]) -> dict[str, list[float | None]]:
        return {g: [sp.q_kvar, sp.vm_pu] for g, sp in state.items()}

    def load_state(self, data: dict[str, list[float | None]]) -> dict[str, SetPoint]:
        return {g: SetPoint(q_kvar=q, vm_pu=v) for g, (q, v) in data.items()}

    @staticmethod
    def _trades(trades: Sequence[TradeSpec], start_ms: int, end_ms: int) -> list[Trade]:
        return [
            Trade(t.trade_id, f"bus {t.seller_bus}", t.buyer_bus, t.power_kw, start_ms, end_ms)
            for t in trades
        ]

    def certify(
        self,
        trades: Sequence[TradeSpec],
        start_ms: int,
        slot_ms: int,
        previous: dict[str, SetPoint],
        price_utoken_per_kwh: int,
        new_trade: str | None,
    ) -> tuple[Evaluation, dict[str, SetPoint]]:
        return self.certify_on(
            self.net, trades, start_ms, slot_ms, previous, price_utoken_per_kwh, new_trade
        )

    def certify_on(
        self,
        net: Network,
        trades: Sequence[TradeSpec],
        start_ms: int,
        slot_ms: int,
        previous: dict[str, SetPoint],
        price_utoken_per_kwh: int,
        new_trade: str | None,
    ) -> tuple[Evaluation, dict[str, SetPoint]]:
        """:meth:`certify` on ``net`` (the scenario's grid, or it with taps moved)."""
        interval = Interval(f"from {start_ms}", start_ms, start_ms + slot_ms)
        settings = dataclasses.replace(self.settings, price_utoken_per_kwh=price_utoken_per_kwh)
        out = certify_interval(
            net,
            self._trades(trades, start_ms, start_ms + slot_ms),
            interval,
            previous,
            self.initial,
            settings,
            new_trade=new_trade,
        )
        cert = out.certificate
        # rows N of Table III: the same interval with every regulator at the initial state
        net_n = with_setpoints(
            out.network,
            {g: sp for g, sp in self.initial.items() if g in set(out.network.gen["name"])},
        )
        pf_n = run_pf(net_n, regulator_control=settings.control, check=False)
        doc = cert.to_dict()
        doc["bus_vm_pu_without_ropf"] = {
            str(b): float(v) for b, v in zip(pf_n.bus_ids, pf_n.vm_pu, strict=True)
        }
        shares = {t.id: t.loss_share_kw for t in cert.trades}
        shares_n = {t.id: t.loss_share_without_ropf_kw for t in cert.trades}
        reasons = list(cert.reasons)
        if any(
            not math.isfinite(v)
            for v in (
                *shares.values(),
                *shares_n.values(),
                cert.loss_with_ropf_kw,
                cert.loss_without_ropf_kw,
            )
        ):
            reasons.append("power flow did not converge")
        evaluation = Evaluation(
            feasible=cert.feasible and not reasons,
            reasons=reasons,
            loss_kw=cert.loss_with_ropf_kw,
            loss_kw_without_ropf=cert.loss_without_ropf_kw,
            share_kw=shares,
            share_kw_without_ropf=shares_n,
            regulators=[
                RegulatorOut(r.bus, r.q_kvar, r.delta_q_kvar, r.delta_pq_kw, r.remuneration_utoken)
                for r in cert.regulators
            ],
            document=doc,
        )
        return evaluation, {**previous, **out.setpoints}

    def overshoots(
        self, trades: Sequence[TradeSpec], start_ms: int, state: dict[str, SetPoint]
    ) -> list[Overshoot]:
        """The limits the trades break at the set-points ``state`` (the R-OPF's), each with every
        trade's contribution: one AC power flow and one Jacobian (``market/culprits.py``)."""
        net = with_regulators(
            superpose(self.net, self._trades(trades, 0, 1)), self.settings.regulators
        )
        net = with_setpoints(net, {g: sp for g, sp in state.items() if g in set(net.gen["name"])})
        problem = RopfProblem(compile_network(net), self.settings.control, self.settings.options())
        pf = problem.solve_pf(problem.current_x())
        return overshoots(
            problem.compiled, pf, problem.violations(pf), trades, net, self.settings.control
        )

    def rank(
        self,
        buyer_bus: int,
        power_kw: float,
        sellers: Sequence[int],
        running: Sequence[TradeSpec],
        previous: dict[str, SetPoint],
    ) -> list[dict[str, Any]]:
        return self.rank_on(self.net, buyer_bus, power_kw, sellers, running, previous)

    def rank_on(
        self,
        net: Network,
        buyer_bus: int,
        power_kw: float,
        sellers: Sequence[int],
        running: Sequence[TradeSpec],
        previous: dict[str, SetPoint],
    ) -> list[dict[str, Any]]:
        """:meth:`rank` on ``net`` (the scenario's grid, or it with taps moved)."""
        options = rank_sellers(
            net,
            self._trades(running, 0, 1),
            buyer_bus,
            power_kw,
            [f"bus {b}" for b in sellers],
            self.settings,
            previous,
        )
        # a seller the DSO could not certify (a line overloaded, or any other limit) is excluded
        return [
            {
                "buyer_node": buyer_bus,
                "seller_node": b,
                "loss_increase_ppm": round(1e4 * o.loss_increase_pct)
                if math.isfinite(o.loss_increase_pct)
                else 10**9,
                "overloads": not o.eligible,
            }
            for b, o in zip(sellers, options, strict=True)
        ]


def make_evaluator(scenario: str, method: str | None = None) -> ScenarioEvaluator:
    return ScenarioEvaluator(load_scenario(scenario), method)
