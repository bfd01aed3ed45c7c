"""The DSO's refusal rule for an infeasible interval (market/culprits.py) against a brute force
over every subset of the trades, with the final interval checked by pandapower's power flow;
the sensitivities it rests on (grid/sensitivity.py) against finite differences."""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np
import pandapower as pp
import pytest

from gridledger.agents.dso_agent import TradeSpec
from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.powerflow import run_pf
from gridledger.grid.ropf.problem import RopfOptions, check_limits
from gridledger.grid.ropf.reference import to_pandapower
from gridledger.grid.sensitivity import injection_sensitivities
from gridledger.market.certificate import superpose
from gridledger.market.culprits import choose_refusals, overshoots
from gridledger.market.scenario import Trade

VMIN, VMAX = 0.85, 1.0


@pytest.fixture(scope="module")
def net():
    base = load_case("pandapower:case33bw")
    bus = base.bus.copy()
    bus["vmin_pu"], bus["vmax_pu"] = VMIN, VMAX  # a band the sales at the feeder's end break
    return base.with_tables(bus=bus)


def _trades(seed: int) -> list[TradeSpec]:
    rng = np.random.default_rng(seed)
    return [
        TradeSpec(f"m{i}", int(rng.integers(6, 33)), int(rng.integers(1, 6)), float(p))
        for i, p in enumerate(rng.integers(100, 900, 8))
    ]


def _check(net, kept: list[TradeSpec]):
    with_trades = superpose(
        net, [Trade(t.trade_id, f"bus {t.seller_bus}", t.buyer_bus, t.power_kw, 0, 1) for t in kept]
    )
    c = compile_network(with_trades)
    pf = run_pf(c, regulator_control="q", check=False)
    return with_trades, c, pf, check_limits(c, pf, c.vmin_pu, c.vmax_pu, RopfOptions())


def _refuse(net, trades: list[TradeSpec]) -> tuple[dict[str, str], list[TradeSpec]]:
    """The DSO service's loop, with a power flow as the re-check."""
    kept, refused = list(trades), {}
    for _ in range(8):
        with_trades, c, pf, broken = _check(net, kept)
        if not broken:
            break
        new = choose_refusals(
            overshoots(c, pf, broken, kept, with_trades), [t.trade_id for t in kept]
        )
        assert new, "a broken limit and nothing refused"
        refused.update(new)
        kept = [t for t in kept if t.trade_id not in new]
    return refused, kept


def _fewest_refusals(net, trades: list[TradeSpec]) -> int:
    for r in range(len(trades) + 1):
        for out in itertools.combinations(trades, r):
            if not _check(net, [t for t in trades if t not in out])[3]:
                return r
    raise AssertionError("no subset is feasible")


@pytest.mark.parametrize("seed", [0, 1, 7, 8])
def test_refusals_restore_the_limits_with_few_refusals(net, seed: int) -> None:
    trades = _trades(seed)
    assert _check(net, trades)[3], "the case must break a limit"
    refused, kept = _refuse(net, trades)
    fewest = _fewest_refusals(net, trades)
    assert fewest >= 1
    # greedy, not optimal: at most twice the brute force's minimum on these cases (measured:
    # equal on seeds 0 and 8, +1 on 7, 4 against 2 on 1 where two limits break at once)
    assert fewest <= len(refused) <= 2 * fewest
    # pandapower's own power flow of what is approved: every voltage inside the band
    pn = to_pandapower(_check(net, kept)[0], "q")
    pp.runpp(pn, tolerance_mva=1e-9, lightsim2grid=False)
    assert pn.res_bus.vm_pu.between(VMIN - 1e-6, VMAX + 1e-6).all()
    # each refusal names the element, the limit and what the trade adds
    for why in refused.values():
        assert re.match(
            r"refused: (voltage limit at bus \d+: [\d.]+ pu above 1 pu|"
            r"capability limit at generator \d+ at bus \d+ \(PV\d+-m\d\): [\d.]+ MVA above)",
            why,
        )
        assert "this trade adds" in why
    # same input, same refusals; the rule does not depend on the order of the candidates
    assert _refuse(net, trades)[0] == refused
    with_trades, c, pf, broken = _check(net, trades)
    over = overshoots(c, pf, broken, trades, with_trades)
    ids = [t.trade_id for t in trades]
    assert choose_refusals(over, ids) == choose_refusals(over, ids[::-1])


def test_only_trades_that_push_the_limit_are_refused(net) -> None:
    trades = _trades(0)
    with_trades, c, pf, broken = _check(net, trades)
    over = overshoots(c, pf, broken, trades, with_trades)
    refused = choose_refusals(over, [t.trade_id for t in trades])
    for o in over:
        for t in refused:
            assert o.contribution[t] > 0 or any(p.contribution[t] > 0 for p in over)
    # a trade that is not a candidate (already approved) is never refused
    assert not set(choose_refusals(over, ["m1", "m2"])) - {"m1", "m2"}


def test_sensitivities_match_finite_differences(net) -> None:
    c = compile_network(load_case("pandapower:case33bw"))
    pf = run_pf(c, regulator_control="q")
    buses, branches = [17, 32, 10], [0, 5, 20]
    sens = injection_sensitivities(c, pf, buses, branches, "q")
    step_mw = 0.01
    for k in (5, 25):
        for field, rows in (("load_p", sens.dp), ("load_q", sens.dq)):
            bumped = getattr(c, field).copy()
            bumped[k] -= step_mw / c.base_mva  # less load = more injection at bus k
            pf2 = run_pf(dataclasses.replace(c, **{field: bumped}), regulator_control="q")
            fd_v = (pf2.vm_pu[buses] - pf.vm_pu[buses]) / step_mw
            np.testing.assert_allclose(rows[:3, k], fd_v, rtol=2e-3)
            if field == "load_p":
                fd_l = (pf2.loading_pct[branches] - pf.loading_pct[branches]) / step_mw
                np.testing.assert_allclose(rows[3:, k], fd_l, rtol=2e-3, atol=1e-12)
