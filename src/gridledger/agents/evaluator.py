"""The DSO's physics for its agent: one interval's operating point with the running trades.

Seed 000 §II.B steps 2–8 on a case of :mod:`gridledger.grid.cases`:

2. generators not in a trade keep their previous set-points (the case's operating point);
3. each trade adds its power to the seller's generator and to the buyer's load (at the load's
   power factor; unity where the bus has no load);
4. the R-OPF (``gridledger.grid.ropf``) moves the regulators' reactive set-points (``q`` control
   on the microgrid, voltage set-points on the transmission case ieee9, as the R-OPF module
   prescribes) to minimize losses within voltage, line and capability limits;
5–8. total losses with and without the R-OPF, shares by the Global method (``grid.losses``,
   seed 000 eq. 5), reactive set-points, ΔQ/ΔPQ and remuneration (``market.remuneration``,
   eqs. 7–8).

The verdict is the R-OPF's feasibility; its violations (line loading, voltage, capability) are
the certificate's reasons.  Every number goes into a plain ``document`` (kept off chain, its
digest on chain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridledger.agents.dso_agent import Evaluation, TradeSpec
from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.losses import global_method
from gridledger.grid.network import GenRole, Network
from gridledger.grid.powerflow import run_pf
from gridledger.grid.ropf import RopfProblem, solve_ropf
from gridledger.market.remuneration import regulator_payment

# k of seed 000 eq. 8 (per kW of loss reduction), taken equal to seed 002's profit rate 0.1: the
# degradation factor k·ΔP_tot reaches 1 (full price) at 10 kW of loss reduction.
K_PER_KW = 0.1
RNG_SEED = 7  # the population solvers are seeded: a certificate can be reproduced exactly


class TradeError(ValueError):
    """A trade that cannot be placed on the network (no generator or bus there)."""


@dataclass
class CaseEvaluator:
    case: str
    method: str = "exact"
    k_per_kw: float = K_PER_KW
    base: Network = field(init=False)
    control: str = field(init=False)

    def __post_init__(self) -> None:
        self.base = load_case(self.case)
        # transmission cases hold voltages; the microgrid's DGs are dispatched in Q (seed 000)
        self.control = "vm" if self.case.startswith("ieee") else "q"

    # -- the network with trades -------------------------------------------------------------
    def with_trades(self, trades: Sequence[TradeSpec]) -> Network:
        gen = self.base.gen.copy()
        load = self.base.load.copy()
        buses = set(int(b) for b in self.base.bus.index)
        for t in trades:
            if t.buyer_bus not in buses:
                raise TradeError(f"trade {t.trade_id}: no bus {t.buyer_bus} in {self.case}")
            gi = gen.index[gen["bus"] == t.seller_bus]
            if len(gi) == 0:
                raise TradeError(f"trade {t.trade_id}: no generator at bus {t.seller_bus}")
            gen.loc[gi[0], "p_mw"] += t.power_kw / 1000
            li = load.index[load["bus"] == t.buyer_bus]
            if len(li):
                p, q = load.loc[li[0], "p_mw"], load.loc[li[0], "q_mvar"]
                load.loc[li[0], "p_mw"] = p + t.power_kw / 1000
                load.loc[li[0], "q_mvar"] = q + (q / p if p else 0.0) * t.power_kw / 1000
            else:
                row = {
                    "name": f"trade-{t.trade_id}",
                    "bus": t.buyer_bus,
                    "p_mw": t.power_kw / 1000,
                    "q_mvar": 0.0,
                }
                load.loc[len(load)] = row
        return self.base.with_tables(gen=gen, load=load.reset_index(drop=True))

    def _pf(self, net: Network):
        return run_pf(net, regulator_control=self.control)

    # -- Evaluator protocol -------------------------------------------------------------------
    def evaluate(self, trades: Sequence[TradeSpec]) -> Evaluation:
        net = self.with_trades(trades)
        c = compile_network(net)
        result = solve_ropf(RopfProblem(c, control=self.control), self.method, rng=RNG_SEED)
        base_kw = net.base_mva * 1000
        loss_kw = result.loss_after_pu * base_kw
        loss_no_kw = result.loss_before_pu * base_kw
        load_kw = float(net.load["p_mw"].sum()) * 1000
        power = {t.trade_id: t.power_kw for t in trades}
        shares = global_method(loss_kw, load_kw, power).by_trade_kw if trades else {}
        shares_no = global_method(loss_no_kw, load_kw, power).by_trade_kw if trades else {}
        pf_after, pf_before = result.pf_after, result.pf_before
        q_kvar, sn_kva = {}, {}
        for g in range(len(net.gen)):
            if net.gen["role"].iloc[g] == GenRole.PQ:
                continue
            bus = int(net.gen["bus"].iloc[g])
            q_kvar[bus] = float(pf_after.gen_q_mvar[g]) * 1000
            sn_kva[bus] = float(net.gen["sn_mva"].iloc[g]) * 1000
        doc: dict[str, Any] = {
            "case": self.case,
            "method": result.method,
            "control": self.control,
            "trades": [t.__dict__ for t in trades],
            "loss_kw": loss_kw,
            "loss_kw_without_ropf": loss_no_kw,
            "load_kw": load_kw,
            "share_kw": shares,
            "share_kw_without_ropf": shares_no,
            "q_kvar": {str(b): q for b, q in q_kvar.items()},
            "q_kvar_without_ropf": {
                str(int(net.gen["bus"].iloc[g])): float(pf_before.gen_q_mvar[g]) * 1000
                for g in range(len(net.gen))
                if net.gen["role"].iloc[g] != GenRole.PQ
            },
            "setpoints": result.to_dict(net.base_mva)["setpoints"],
            "buses": [int(b) for b in pf_after.bus_ids],
            "vm_pu": [float(v) for v in pf_after.vm_pu],
            "vm_pu_without_ropf": [float(v) for v in pf_before.vm_pu],
            "max_loading_pct": float(np.max(pf_after.loading_pct)),
            "feasible": bool(result.feasible),
            "violations": [str(v) for v in result.violations],
            "solver_seconds": result.seconds,
        }
        return Evaluation(
            feasible=bool(result.feasible),
            reasons=[str(v) for v in result.violations],
            loss_kw=loss_kw,
            loss_kw_without_ropf=loss_no_kw,
            share_kw=shares,
            share_kw_without_ropf=shares_no,
            q_kvar=q_kvar,
            sn_kva=sn_kva,
            vm_pu=doc["vm_pu"],
            vm_pu_without_ropf=doc["vm_pu_without_ropf"],
            document=doc,
        )

    def initial_q_kvar(self) -> dict[int, float]:
        """Reactive output before any trade (seed 000 §VI's assumption for the first interval:
        zero in CASE 1, shared by rating in CASE 2; the case encodes it)."""
        pf = self._pf(self.base)
        return {
            int(self.base.gen["bus"].iloc[g]): float(pf.gen_q_mvar[g]) * 1000
            for g in range(len(self.base.gen))
            if self.base.gen["role"].iloc[g] != GenRole.PQ
        }

    def remuneration_utoken(
        self,
        bus: int,
        q_prev_kvar: float,
        q_new_kvar: float,
        loss_reduction_kw: float,
        price_utoken_per_kwh: int,
        hours: float,
    ) -> tuple[float, float, int]:
        g = self.base.gen.index[self.base.gen["bus"] == bus][0]
        sn_kva = float(self.base.gen.loc[g, "sn_mva"]) * 1000
        pay = regulator_payment(
            str(bus),
            sn_kva,
            q_prev_kvar,
            q_new_kvar,
            loss_reduction_kw,
            self.k_per_kw,
            price_utoken_per_kwh,
            hours,
        )
        return pay.delta_q_kvar, pay.delta_pq_kw, pay.remuneration_utoken

    def seller_ranking(
        self, buyers: Sequence[tuple[int, float]], sellers: Sequence[int]
    ) -> list[dict[str, Any]]:
        """Seed 002 Table 5: for each buyer (bus, kW) and candidate seller bus, the increase of
        total losses (ppm of the base case, after R-OPF) and whether a line is overloaded."""
        base_loss = self.evaluate([]).loss_kw
        rows = []
        for buyer, kw in buyers:
            for seller in sellers:
                ev = self.evaluate([TradeSpec(f"{seller}->{buyer}", seller, buyer, kw)])
                overload = any(v.startswith("line") for v in ev.reasons)
                rows.append(
                    {
                        "buyer_node": buyer,
                        "seller_node": seller,
                        "loss_increase_ppm": round(1e6 * (ev.loss_kw - base_loss) / base_loss),
                        "overloads": overload,
                    }
                )
        return rows


def make_evaluator(case: str, method: str = "exact") -> CaseEvaluator:
    return CaseEvaluator(case, method)
