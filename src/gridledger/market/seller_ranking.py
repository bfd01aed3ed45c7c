"""Which seller should serve a buyer? Seed 002 §6, Table 5.

For each candidate seller the DSO superposes the buyer's demand as a trade from that seller on
the trades already running, runs the R-OPF, and measures the increase of the total losses against
the network without the new demand (also after R-OPF). Candidates whose trade overloads a line —
or breaks any other limit, since the DSO could not certify it — are excluded; the others are
ranked by the loss increase, smallest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..grid.compiled import compile_network
from ..grid.network import Network
from ..grid.ropf import RopfProblem, RopfResult, solve_ropf
from .certificate import DsoSettings, superpose, with_regulators, with_setpoints
from .scenario import Scenario, SetPoint, Trade


@dataclass(frozen=True)
class SellerOption:
    seller: str
    loss_kw: float
    loss_increase_kw: float
    loss_increase_pct: float
    max_line_loading_pct: float
    overloaded_lines: list[str]
    eligible: bool
    reasons: list[str]
    rank: int | None  # 1 = best; None = excluded

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()
        }


def _optimized_loss_kw(net: Network, settings: DsoSettings) -> RopfResult:
    problem = RopfProblem(compile_network(net), settings.control, settings.options())
    return solve_ropf(problem, settings.method, rng=settings.seed)


def rank_sellers(
    base: Network,
    running: Sequence[Trade],
    buyer_bus: int,
    power_kw: float,
    candidates: Sequence[str],
    settings: DsoSettings,
    setpoints: dict[str, SetPoint] | None = None,
    start_ms: int = 0,
    end_ms: int = 1,
) -> list[SellerOption]:
    """Rank ``candidates`` (generator names or ``"bus <id>"``) to serve ``power_kw`` at a bus."""
    if not power_kw > 0:
        raise ValueError(f"power_kw must be positive, got {power_kw}")
    if not candidates:
        raise ValueError("no candidate sellers")

    def prepared(trades: Sequence[Trade]) -> Network:
        net = with_regulators(superpose(base, trades), settings.regulators)
        if setpoints:
            names = set(net.gen["name"])
            net = with_setpoints(net, {g: sp for g, sp in setpoints.items() if g in names})
        return net

    reference = _optimized_loss_kw(prepared(running), settings)
    ref_kw = reference.loss_after_pu * reference.pf_after.base_mva * 1000.0
    options = []
    for seller in candidates:
        trade = Trade("candidate", seller, buyer_bus, power_kw, start_ms, end_ms)
        res = _optimized_loss_kw(prepared([*running, trade]), settings)
        pf = res.pf_after
        loss_kw = pf.loss_mw * 1000.0 if pf.converged else math.nan
        over = [
            f"{f}-{t}"
            for f, t, ld, r in zip(
                pf.branch_from, pf.branch_to, pf.loading_pct, pf.rated, strict=True
            )
            if r and ld > 100.0 + 1e-4
        ]
        reasons = [str(v) for v in res.violations]
        rated = pf.loading_pct[pf.rated]
        options.append(
            SellerOption(
                seller=seller,
                loss_kw=loss_kw,
                loss_increase_kw=loss_kw - ref_kw,
                loss_increase_pct=(loss_kw - ref_kw) / ref_kw * 100.0,
                max_line_loading_pct=float(rated.max()) if rated.size else 0.0,
                overloaded_lines=over,
                eligible=bool(res.feasible),
                reasons=reasons,
                rank=None,
            )
        )
    order = sorted(
        (i for i, o in enumerate(options) if o.eligible), key=lambda i: options[i].loss_increase_kw
    )
    ranks = {i: r + 1 for r, i in enumerate(order)}
    return [SellerOption(**{**asdict(o), "rank": ranks.get(i)}) for i, o in enumerate(options)]


def rank_scenario(scenario: Scenario, method: str | None = None) -> list[dict[str, Any]]:
    """Every ranking request of a scenario: the trades already running just before ``at`` stay."""
    from .certificate import initial_setpoints, scenario_network, scenario_settings

    net = scenario_network(scenario)
    settings = scenario_settings(scenario, method)
    setpoints = initial_setpoints(net, scenario.initial_setpoints)
    out = []
    for req in scenario.ranking:
        running = [t for t in scenario.trades if t.start_ms < req.at_ms < t.end_ms]
        options = rank_sellers(
            net, running, req.buyer_bus, req.power_kw, req.candidates, settings, setpoints
        )
        out.append(
            {
                "buyer_bus": req.buyer_bus,
                "power_kw": req.power_kw,
                "running_trades": [t.id for t in running],
                "options": [o.to_dict() for o in options],
            }
        )
    return out
