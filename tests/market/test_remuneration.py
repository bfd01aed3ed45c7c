"""Reactive-power remuneration: seed 000 eqs. 7–8 and seed 002 eqs. 8–12, by hand."""

import math

import pytest

from gridledger.market.remuneration import (
    SEED002_COSTS,
    QuadraticCost,
    RemunerationError,
    degradation_factor,
    delta_pq_kw,
    opportunity_cost,
    reactive_opportunity_cost_usd_per_h,
    reactive_power_cost_per_h,
    regulator_payment,
    svc_cost_usd_per_h,
    svc_investment_usd_per_kvar,
)


def test_eq7_from_zero():
    # Sn = 1500 kVA, Q 0 -> 540 kvar: 1500 − √(1500² − 540²) = 1500 − 1399.4284 kW.
    assert delta_pq_kw(1500, 0, 540) == pytest.approx(1500 - math.sqrt(1500**2 - 540**2))
    assert delta_pq_kw(1500, 0, 540) == pytest.approx(100.5716, abs=1e-4)


def test_eq7_from_a_previous_injection():
    # 750 -> 1200 kvar on 1500 kVA: √(1500² − 750²) − √(1500² − 1200²) = 1299.0381 − 900.
    assert delta_pq_kw(1500, 750, 450) == pytest.approx(399.0381, abs=1e-4)


def test_eq7_reducing_q_is_not_paid():
    assert delta_pq_kw(2500, 1070, -770) == 0.0
    assert delta_pq_kw(1500, 0, 0) == 0.0


def test_eq7_beyond_rating_is_refused():
    with pytest.raises(RemunerationError, match="beyond the rating"):
        delta_pq_kw(1500, 750, 1200)
    with pytest.raises(RemunerationError, match="rating must be positive"):
        delta_pq_kw(0, 0, 0)


def test_eq8_and_payment():
    # ΔPQ 100 kW, R-OPF saves 0.427 kW, k = 0.1/kW -> factor 0.0427; 200 utoken/kWh.
    assert degradation_factor(0.427, 0.1) == pytest.approx(0.0427)
    assert degradation_factor(50.0, 0.1) == 1.0  # capped: "lower than 1"
    assert degradation_factor(-3.0, 0.1) == 0.0  # R-OPF made nothing better: nothing to pay
    assert reactive_power_cost_per_h(100.0, 0.427, 0.1, 200) == pytest.approx(854.0)
    pay = regulator_payment("DG2", 1500, 0, 540, 0.427, 0.1, 200_000, hours=0.25)
    expected = (1500 - math.sqrt(1500**2 - 540**2)) * 0.0427 * 200_000 * 0.25
    assert pay.remuneration_utoken == math.floor(expected)
    assert pay.delta_q_kvar == 540 and pay.q_kvar == 540
    with pytest.raises(RemunerationError, match="integer"):
        regulator_payment("DG2", 1500, 0, 540, 0.4, 0.1, 1.5, hours=1)  # type: ignore[arg-type]
    with pytest.raises(RemunerationError, match="price"):
        reactive_power_cost_per_h(1.0, 1.0, 0.1, -1.0)


def test_seed002_quadratic_opportunity_cost():
    c1 = SEED002_COSTS[1]
    assert c1(100.0) == pytest.approx(150 + 500 + 1100)
    # P = 70 MW, Q = 140 Mvar: S = 156.5248; |C(S) − C(P)|·0.1 = (5·(S − P) + 0.11·Q²)·0.1
    s = math.hypot(70, 140)
    expected = (5 * (s - 70) + 0.11 * (s * s - 70 * 70)) * 0.1
    assert reactive_opportunity_cost_usd_per_h(c1, 70, 140) == pytest.approx(expected)
    assert reactive_opportunity_cost_usd_per_h(c1, 70, -140) == pytest.approx(expected)
    assert reactive_opportunity_cost_usd_per_h(QuadraticCost(1, 2, 3), 5, 0) == 0.0


def test_seed002_svc_cost():
    # S = 100 Mvar: C(s) = 3 − 30.51 + 127.38 = 99.87 $/kvar; ·100 000 kvar / 43 800 h.
    assert svc_investment_usd_per_kvar(100) == pytest.approx(99.87)
    assert svc_cost_usd_per_h(0, 100) == pytest.approx(99.87 * 100_000 / 43_800)
    assert svc_cost_usd_per_h(50, -50) == pytest.approx(svc_cost_usd_per_h(0, 100))
    with pytest.raises(RemunerationError):
        svc_cost_usd_per_h(0, 100, lifetime_years=0)


def test_reactive_price_allocation_on_ieee9_with_an_svc():
    from gridledger.grid.cases import load_case
    from gridledger.grid.powerflow import run_pf
    from gridledger.market.certificate import with_svcs
    from gridledger.market.remuneration import reactive_price_allocation

    net = with_svcs(
        load_case("ieee9-q200"),
        [{"name": "SVC9", "bus": 9, "qmin_mvar": -100.0, "qmax_mvar": 300.0, "q_mvar": 100.0}],
    )
    res = run_pf(net)
    costs = {"G1@1": SEED002_COSTS[1], "G2@2": SEED002_COSTS[2], "G3@3": SEED002_COSTS[3]}
    alloc = reactive_price_allocation(net, res, costs)
    for i, (g, cost) in enumerate(costs.items()):
        p, q = res.gen_p_mw[i], res.gen_q_mvar[i]
        hand = abs(cost(math.hypot(p, q)) - cost(p)) * 0.1  # seed 002 eq. 8
        assert sum(alloc[g].values()) == pytest.approx(hand, rel=1e-12)
        assert set(alloc[g]) == {"L5", "L7", "L9"}
    # Eqs. 10-12 for S = 100 Mvar; the SVC at bus 9 serves only the load at bus 9.
    assert sum(alloc["SVC9"].values()) == pytest.approx(99.87 * 100_000 / 43_800)
    assert alloc["SVC9"]["L9"] == pytest.approx(99.87 * 100_000 / 43_800, rel=1e-6)
    with pytest.raises(RemunerationError, match="unknown generators"):
        reactive_price_allocation(net, res, {"G7": SEED002_COSTS[1]})


def test_eq6_and_eq7_agree():
    # Eq. 7 is eq. 6 in kW: the most lucrative option is all-active output on the circle.
    sn, q0, dq = 1500.0, 200.0, 300.0
    rmlo = math.sqrt(sn**2 - q0**2)  # active power available before the extra reactive output
    rco = math.sqrt(sn**2 - (q0 + dq) ** 2)  # ... and after
    assert opportunity_cost(rmlo, rco) == pytest.approx(delta_pq_kw(sn, q0, dq))
    with pytest.raises(RemunerationError, match="RMLO"):
        opportunity_cost(float("inf"), 1.0)
