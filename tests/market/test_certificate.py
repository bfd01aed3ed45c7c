"""The DSO's 8-step workflow: certificates checked against the seeds' equations."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from gridledger.grid.cases import load_case
from gridledger.grid.powerflow import run_pf
from gridledger.market.certificate import (
    Certificate,
    DsoSettings,
    WorkflowError,
    certify_interval,
    initial_setpoints,
    superpose,
    validate_scenario,
    with_setpoints,
)
from gridledger.market.remuneration import delta_pq_kw
from gridledger.market.scenario import Interval, SetPoint, Trade, load_scenario

QUARTER = 900_000


@pytest.fixture(scope="module")
def case1():
    scenario = load_scenario("seed000_case1")
    return scenario, validate_scenario(scenario)


def test_one_certificate_per_interval_with_the_running_trades(case1):
    _, certs = case1
    assert [c.interval for c in certs] == ["t1-t2", "t2-t3", "t3-t4"]
    assert [[t.id for t in c.trades] for c in certs] == [
        ["tr1"],
        ["tr1", "tr2"],
        ["tr1", "tr2", "tr3"],
    ]
    assert [c.new_trade for c in certs] == ["tr1", "tr2", "tr3"]
    assert all(c.feasible and not c.reasons for c in certs)


def test_ropf_lowers_losses_and_shares_follow_eq5(case1):
    _, certs = case1
    base_load_kw = float(load_case("microgrid9").load.p_mw.sum() * 1000)
    for c in certs:
        assert c.loss_with_ropf_kw < c.loss_without_ropf_kw
        traded = sum(t.power_kw for t in c.trades)
        assert c.total_load_kw == pytest.approx(base_load_kw + traded)
        for t in c.trades:  # seed 000 eq. 5
            assert t.loss_share_kw == pytest.approx(
                c.loss_with_ropf_kw * t.power_kw / c.total_load_kw
            )
            assert t.loss_share_without_ropf_kw == pytest.approx(
                c.loss_without_ropf_kw * t.power_kw / c.total_load_kw
            )
    # Step 6 chains the intervals: each change is this interval's loss minus the previous one's.
    for prev, cur in itertools.pairwise(certs):
        assert cur.loss_change_kw == pytest.approx(cur.loss_with_ropf_kw - prev.loss_with_ropf_kw)


def test_regulators_dq_dpq_and_pay_follow_eqs_7_8(case1):
    scenario, certs = case1
    q_prev = {"DG2": 0.0, "DG3": 0.0, "DG4": 0.0}  # CASE 1: no reactive power before t1
    for c in certs:
        saved_kw = c.loss_without_ropf_kw - c.loss_with_ropf_kw
        factor = min(1.0, scenario.k_per_kw * saved_kw)
        for r in c.regulators:
            assert r.delta_q_kvar == pytest.approx(r.q_kvar - q_prev[r.node], abs=2e-3)
            assert r.delta_pq_kw == pytest.approx(
                delta_pq_kw(1500.0, q_prev[r.node], r.delta_q_kvar)
            )
            money = r.delta_pq_kw * factor * scenario.price_utoken_per_kwh * 0.25
            assert r.remuneration_utoken == math.floor(money + 1e-9)
            q_prev[r.node] = r.q_kvar
    assert certs[0].regulators[0].remuneration_utoken > 0


def test_certified_setpoints_reproduce_the_certified_losses(case1):
    scenario, certs = case1
    net = superpose(load_case("microgrid9"), scenario.trades_in(scenario.intervals[-1]))
    c = certs[-1]
    net = with_setpoints(net, {r.node: SetPoint(q_kvar=r.q_kvar) for r in c.regulators})
    res = run_pf(net, regulator_control="q")
    # A third party re-checks the certificate with one power flow (docs/architecture.md).
    assert res.loss_mw * 1000 == pytest.approx(c.loss_with_ropf_kw, abs=1e-5)
    np.testing.assert_allclose(res.vm_pu, [c.bus_vm_pu[str(b)] for b in res.bus_ids], atol=1e-7)


def test_certificate_round_trips_through_strict_json(case1):
    _, certs = case1
    for c in certs:
        text = json.dumps(c.to_dict(), allow_nan=False, sort_keys=True)
        back = Certificate.from_dict(json.loads(text))
        assert back == c
    d = certs[0].to_dict()
    for key in ("loss_without_ropf_kw", "loss_with_ropf_kw", "trades", "regulators", "feasible"):
        assert key in d
    assert set(d["regulators"][0]) >= {"node", "q_kvar", "delta_q_kvar", "delta_pq_kw"}
    with pytest.raises(WorkflowError, match="not a certificate"):
        Certificate.from_dict({"network": "x"})
    with pytest.raises(WorkflowError, match="version"):
        Certificate.from_dict({**d, "version": 99})


def test_islanded_case_runs_and_moves_all_three_dgs():
    scenario = load_scenario("seed000_case2")
    certs = validate_scenario(scenario)
    assert len(certs) == 3 and all(c.feasible for c in certs)
    assert all(c.loss_with_ropf_kw < c.loss_without_ropf_kw for c in certs)
    first = {r.node: r for r in certs[0].regulators}
    assert set(first) == {"DG2", "DG3", "DG4"}
    # CASE 2 starts from the rating-proportional reactive sharing of the case itself.
    net = load_case("microgrid9-islanded")
    q0 = dict(zip(net.gen["name"], net.gen.q_mvar * 1000, strict=True))
    for g, r in first.items():
        assert r.delta_q_kvar == pytest.approx(r.q_kvar - q0[g], abs=2e-3)


def _one(net_name, trade, settings):
    interval = Interval("t", 0, QUARTER)
    net = load_case(net_name)
    init = initial_setpoints(net, None)
    return certify_interval(net, [trade], interval, init, init, settings, new_trade=trade.id)


def test_trade_beyond_the_sellers_capability_is_rejected_with_the_reason():
    # DG2 already serves its 764 kW load; 1400 kW more exceeds its 1.5 MVA rating.
    trade = Trade("big", "DG2", 9, 1400.0, 0, QUARTER)
    out = _one("microgrid9", trade, DsoSettings(control="q", regulators=["DG2", "DG3", "DG4"]))
    cert = out.certificate
    assert not cert.feasible
    assert any("capability limit at generator 1 at bus 2" in r for r in cert.reasons)
    assert all(r.remuneration_utoken == 0 for r in cert.regulators)


def test_trade_that_overloads_a_line_is_rejected_naming_the_line():
    # 6 MW from the grid to bus 9 through the 5.37 MVA cables 1-2, 2-8, 8-9.
    trade = Trade("huge", "GRID", 9, 6000.0, 0, QUARTER)
    cert = _one("microgrid9", trade, DsoSettings(control="q")).certificate
    assert not cert.feasible
    assert any(r.startswith("line limit at line 1-2") for r in cert.reasons)
    assert max(cert.line_loading_pct.values()) > 100


def test_superpose_keeps_the_buyers_power_factor_and_adds_prosumers():
    net = load_case("microgrid9-islanded")
    trades = [Trade("a", "bus 1", 5, 250.0, 0, 1), Trade("b", "DG3", 7, 200.0, 0, 1)]
    out = superpose(net, trades)
    l5_before = net.load[net.load.bus == 5].iloc[0]
    l5 = out.load[out.load.bus == 5].iloc[0]
    assert l5.p_mw == pytest.approx(l5_before.p_mw + 0.25)
    assert l5.q_mvar / l5.p_mw == pytest.approx(l5_before.q_mvar / l5_before.p_mw)
    pv = out.gen[out.gen.bus == 1].iloc[0]
    assert pv.role == "pq" and pv.p_mw == pytest.approx(0.25) and pv.q_mvar == 0
    dg3 = out.gen.set_index("name").loc["DG3"]
    assert dg3.p_mw == pytest.approx(net.gen.set_index("name").loc["DG3"].p_mw + 0.2)
    assert len(net.gen) == 3 and net.load.p_mw.sum() == pytest.approx(4.3067)  # input untouched
    with pytest.raises(WorkflowError, match="no generator named 'DG9'"):
        superpose(net, [Trade("c", "DG9", 5, 1.0, 0, 1)])
    with pytest.raises(WorkflowError, match="buyer bus 42"):
        superpose(net, [Trade("d", "DG3", 42, 1.0, 0, 1)])


def test_superpose_keeps_the_power_factor_of_a_load_taken_below_zero():
    """A base with purchases taken out (P < 0 at the load's power factor), then purchases put
    back one by one: every step stays at the load's Q/P (hand-computed: pf 0.4)."""
    net = load_case("microgrid9-islanded")
    load = net.load.copy()
    i = load.index[load.bus == 5][0]
    load.at[i, "p_mw"], load.at[i, "q_mvar"] = -0.001, -0.0004
    base = net.with_tables(load=load)
    out = superpose(base, [Trade("a", "DG3", 5, 2.0, 0, 1), Trade("b", "DG3", 5, 3.0, 0, 1)])
    l5 = out.load.loc[i]
    assert l5.p_mw == pytest.approx(0.004) and l5.q_mvar == pytest.approx(0.0016)


def test_chain_form_is_integers_in_base_units(case1):
    _, certs = case1
    c = certs[0]
    d = c.to_chain_dict()
    assert d["loss_with_ropf_w"] == round(c.loss_with_ropf_kw * 1000)
    assert d["regulators"][0]["q_var"] == round(c.regulators[0].q_kvar * 1000)
    assert d["trades"][0]["power_w"] == 300_000
    for v in (*d["bus_vm_upu"].values(), *d["line_loading_bp"].values()):
        assert isinstance(v, int)
    json.dumps(d, allow_nan=False)


def test_certify_one_proposed_trade():
    from gridledger.market.certificate import certify_trade

    net = load_case("microgrid9")
    init = initial_setpoints(net, None)
    settings = DsoSettings(control="q", regulators=["DG2", "DG3", "DG4"])
    running = [Trade("tr1", "DG2", 5, 300.0, 0, 3 * QUARTER)]
    proposed = Trade("tr2", "DG3", 7, 200.0, QUARTER, 3 * QUARTER)
    out = certify_trade(net, running, proposed, init, settings)
    assert out.certificate.new_trade == "tr2" and out.certificate.feasible
    assert [t.id for t in out.certificate.trades] == ["tr1", "tr2"]
    assert out.certificate.end_ms - out.certificate.start_ms == 2 * QUARTER
    with pytest.raises(WorkflowError, match="already running"):
        certify_trade(net, running, running[0], init, settings)


def test_a_trade_the_network_cannot_carry_at_all_is_rejected_in_strict_json():
    # 60 MW into a 20 kV microgrid: no operating point exists, the power flow diverges.
    trade = Trade("absurd", "GRID", 9, 60_000.0, 0, QUARTER)
    cert = _one("microgrid9", trade, DsoSettings(control="q")).certificate
    assert not cert.feasible
    assert any("did not converge" in r for r in cert.reasons)
    d = json.loads(json.dumps(cert.to_dict(), allow_nan=False))
    assert d["loss_with_ropf_kw"] is None
    assert math.isnan(Certificate.from_dict(d).loss_with_ropf_kw)


def test_set_points_for_unknown_generators_are_refused():
    net = load_case("microgrid9")
    with pytest.raises(WorkflowError, match="unknown generator 'DG7'"):
        initial_setpoints(net, {"DG7": SetPoint(q_kvar=0.0)})
    with pytest.raises(WorkflowError, match="unknown generator 'DG7'"):
        with_setpoints(net, {"DG7": SetPoint(q_kvar=0.0)})
