"""Which trades of an infeasible interval the DSO refuses: the fewest, largest contributors.

When the trades of one interval, superposed on the grid, break a limit that the R-OPF cannot
restore, the DSO refuses some of them and approves the rest.  The rule (deterministic and the
same for everyone: same input, same refusals):

1. At the operating point the R-OPF left, take every broken limit (a bus voltage outside its
   band, a branch loaded beyond its rating, a generator beyond its capability).
2. For each, the contribution of each candidate trade: how far the trade pushes that quantity
   in the breaking direction, from one Jacobian of the AC power flow
   (:mod:`gridledger.grid.sensitivity`): ``P · (∂y/∂P_seller - ∂y/∂P_buyer - r_buyer ∂y/∂Q_buyer)``,
   where ``r`` is the buyer load's Q/P (the workflow adds a trade at the load's power factor).
   For a generator's capability, the trade's power if it is sold from that generator's bus.
3. Limits in order of their excess, largest first (ties: the element's name).  For each, the
   trades that push it, largest contribution first (ties: trade id), are refused until the
   contributions refused reach ``MARGIN`` times the excess (refusals for earlier limits count).
4. The DSO re-checks what is left with its full evaluation (AC power flow and R-OPF); if a limit
   still breaks (the linear estimate fell short), it repeats from 1 at the new point.

Each refusal names the element, the limit, the value and what the trade adds to it.  A limit
that the candidates do not push at all cannot be restored by refusing them: the rule then
refuses nothing for it, and the DSO refuses every remaining trade of the interval with that
limit as reason (the interval breaks it whatever is approved).  A power flow that does not
converge has no Jacobian: the largest trades (power, then id) are refused until half the
candidates' power is gone, and the check repeats (a bisection on power).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gridledger.grid.compiled import CompiledNetwork
from gridledger.grid.network import Network
from gridledger.grid.results import PowerFlowResult
from gridledger.grid.ropf.problem import Violation
from gridledger.grid.sensitivity import injection_sensitivities
from gridledger.market.certificate import _named

MARGIN = 1.2  # refuse 20 % beyond the linear estimate: fewer re-checks near the limit
MAX_LIMITS = 16  # limits handled per round, largest excess first (the re-check sees the rest)


class TradeLike(Protocol):
    trade_id: str
    seller_bus: int
    buyer_bus: int
    power_kw: float


@dataclass(frozen=True)
class Overshoot:
    """One broken limit and how much each candidate trade pushes it (the limit's unit)."""

    kind: str  # voltage | line | capability | reactive | convergence
    element: str
    value: float
    limit: float
    unit: str
    excess: float  # > 0
    contribution: Mapping[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "convergence":
            return f"the power flow with this interval's trades does not converge ({self.element})"
        rel = "above" if self.value > self.limit else "below"
        return (
            f"{self.kind} limit at {self.element}: {self.value:.5g} {self.unit} {rel} "
            f"{self.limit:.5g} {self.unit}"
        )


def choose_refusals(overshoots: Sequence[Overshoot], candidates: Sequence[str]) -> dict[str, str]:
    """Trade id -> reason, by the rule of the module docstring (steps 3)."""
    allowed = set(candidates)
    refused: dict[str, str] = {}
    ordered = sorted(overshoots, key=lambda o: (-o.excess, o.element))[:MAX_LIMITS]
    for o in ordered:
        pushes = {t: c for t, c in o.contribution.items() if t in allowed and c > 0}
        done = sum(c for t, c in pushes.items() if t in refused)
        need = MARGIN * o.excess
        for t, c in sorted(pushes.items(), key=lambda x: (-x[1], x[0])):
            if done >= need:
                break
            if t in refused:
                continue
            refused[t] = (
                f"refused: {o.describe()} with this interval's trades; this trade adds "
                f"{c:.3g} {o.unit} (the largest contributors are refused first)"
            )[:200]
            done += c
    return refused


_BUS = re.compile(r"^bus (-?\d+)$")
_LINE = re.compile(r"^line (-?\d+)-(-?\d+)")
_GEN = re.compile(r"generator (\d+) at bus (-?\d+)")


def overshoots(
    c: CompiledNetwork,
    pf: PowerFlowResult,
    violations: Sequence[Violation],
    trades: Sequence[TradeLike],
    net: Network,
    control: str = "q",
) -> list[Overshoot]:
    """Each violation at ``pf`` (the operating point of ``c``, every trade superposed) with the
    contribution of each trade (step 2 of the rule)."""
    if any(v.kind == "convergence" for v in violations) or not pf.converged:
        # no Jacobian: the largest trades holding half the power go (a bisection on power)
        total = sum(t.power_kw for t in trades)
        contribution = {t.trade_id: t.power_kw for t in trades}
        half = total / 2 / MARGIN
        return [Overshoot("convergence", "no solution", 0.0, 0.0, "kW", half, contribution)]
    pos = {int(b): i for i, b in enumerate(c.bus_ids)}
    branch_at = {
        (int(c.bus_ids[f]), int(c.bus_ids[t])): k
        for k, (f, t) in enumerate(zip(c.branch_from, c.branch_to, strict=True))
    }
    ratio = _load_q_ratio(net)
    buses, branches, kinds = [], [], []
    gens = []
    for v in violations:
        if v.kind == "voltage" and (m := _BUS.match(v.element)):
            buses.append(pos[int(m.group(1))])
            kinds.append(v)
        elif v.kind == "line" and (m := _LINE.match(v.element)):
            branches.append(branch_at[(int(m.group(1)), int(m.group(2)))])
        elif v.kind in ("capability", "reactive") and (m := _GEN.search(v.element)):
            gens.append((v, int(m.group(2))))
    line_v = [v for v in violations if v.kind == "line" and _LINE.match(v.element)]
    out: list[Overshoot] = []
    if buses or branches:
        sens = injection_sensitivities(c, pf, buses, branches, control)  # type: ignore[arg-type]
        for row, v in enumerate([*kinds, *line_v]):
            sign = 1.0 if v.value > v.limit else -1.0
            contribution = {}
            for t in trades:
                s, b = pos[t.seller_bus], pos[t.buyer_bus]
                r = ratio.get(t.buyer_bus, 0.0)
                dy = sens.dp[row, s] - sens.dp[row, b] - r * sens.dq[row, b]
                contribution[t.trade_id] = sign * t.power_kw / 1000 * float(dy)
            excess = abs(v.value - v.limit)
            named = _named(v.element, net)  # the grid's own name of the line, where it has one
            out.append(Overshoot(v.kind, named, v.value, v.limit, v.unit, excess, contribution))
    for v, bus in gens:
        contribution = {t.trade_id: t.power_kw / 1000 for t in trades if t.seller_bus == bus}
        excess = abs(v.value - v.limit)  # MVA beyond the rating, met by MW of sales
        named = _named(v.element, net)
        out.append(Overshoot(v.kind, named, v.value, v.limit, v.unit, excess, contribution))
    return out


def _load_q_ratio(net: Network) -> dict[int, float]:
    """Q/P of the first load at each bus: the power factor the workflow adds a purchase at."""
    out: dict[int, float] = {}
    for b, p, q in zip(net.load.bus, net.load.p_mw, net.load.q_mvar, strict=True):
        if int(b) not in out:
            out[int(b)] = float(q / p) if p > 0 else 0.0
    return out
