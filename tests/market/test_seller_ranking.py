"""Seller selection (seed 002 Table 5): rank by loss increase, exclude line overloads."""

from __future__ import annotations

import pytest

from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.ropf import RopfProblem, solve_ropf
from gridledger.market.certificate import DsoSettings, superpose
from gridledger.market.scenario import Trade, load_scenario
from gridledger.market.seller_ranking import rank_scenario, rank_sellers

EXACT = DsoSettings(control="vm", method="exact")


def optimized_loss_kw(net) -> float:
    res = solve_ropf(RopfProblem(compile_network(net), "vm"), "exact")
    return res.pf_after.loss_mw * 1000


def test_ranks_by_independently_computed_loss_increase():
    net = load_case("ieee9")
    options = rank_sellers(net, [], 7, 20_000.0, ["bus 1", "bus 2", "bus 3"], EXACT)
    base = optimized_loss_kw(net)
    for o in options:
        alone = optimized_loss_kw(superpose(net, [Trade("x", o.seller, 7, 20_000.0, 0, 1)]))
        assert o.loss_kw == pytest.approx(alone, rel=1e-6)
        assert o.loss_increase_pct == pytest.approx((alone - base) / base * 100, rel=1e-5)
    assert all(o.eligible for o in options)
    ranked = sorted(options, key=lambda o: o.rank)
    assert [o.rank for o in ranked] == [1, 2, 3]
    assert ranked[0].loss_increase_kw <= ranked[1].loss_increase_kw <= ranked[2].loss_increase_kw


def test_a_seller_that_overloads_a_line_is_excluded():
    # G2 (163 MW) selling 125 MW more pushes 288 MW through its 250 MVA step-up branch 8-2.
    net = load_case("ieee9")
    running = [Trade("tr1", "bus 3", 7, 100_000.0, 0, 1)]
    options = {
        o.seller: o for o in rank_sellers(net, running, 5, 125_000.0, ["bus 1", "bus 2"], EXACT)
    }
    assert options["bus 2"].rank is None and not options["bus 2"].eligible
    assert options["bus 2"].overloaded_lines == ["8-2"]
    assert options["bus 2"].max_line_loading_pct > 100
    assert options["bus 1"].rank == 1


def test_bad_requests():
    net = load_case("ieee9")
    with pytest.raises(ValueError, match="power_kw must be positive"):
        rank_sellers(net, [], 7, 0.0, ["bus 1"], EXACT)
    with pytest.raises(ValueError, match="no candidate sellers"):
        rank_sellers(net, [], 7, 10.0, [], EXACT)


def test_scenario_rankings_have_the_running_trades():
    out = rank_scenario(load_scenario("seed002_ieee9"), method="exact")
    assert [r["running_trades"] for r in out] == [[], ["tr1"]]
    assert [r["buyer_bus"] for r in out] == [7, 5]
    assert all(len(r["options"]) == 3 for r in out)
