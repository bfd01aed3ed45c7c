"""Running a schedule (grid/dispatch.py): AC power flow against pandapower, the cost of the
centralized optimum, ADMM schedules as the feeder would run them, and the bad paths."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from pandapower_feeder import feeder_power_flow

from gridledger.agents.admm_chain import OnChainError, evaluate_chain_schedule
from gridledger.grid.admm import AdmmOptions, solve_admm
from gridledger.grid.der import Battery
from gridledger.grid.dispatch import (
    DispatchError,
    dispatch,
    generator_cost_usd,
    marginal_prices_usd_per_mwh,
    radial_power_flow,
    reactive_injection_mvar,
)
from gridledger.grid.distflow import solve_central
from gridledger.grid.feeders import case33bw, head, load_feeder
from gridledger.market.aggregation import SCALE


def _run_central(feeder, central, **kw):
    return dispatch(
        feeder,
        central.p_mw,
        central.model.generation_mw()[0],
        central.objective_usd,
        central.v_pu2[0],
        **kw,
    )


@pytest.mark.parametrize("name", ["case33bw", "sce56"])
def test_power_flow_matches_pandapower(name):
    """Each node's fixed load and solar, ±30 % at random (SCE-56 has shunt capacitors):
    voltages, the slack's P and Q and the losses against pandapower's Newton–Raphson."""
    feeder = load_feeder(name)
    rng = np.random.default_rng(7)
    net_kw = np.array([np.subtract(d.solar_kw, d.load_kw) for d in feeder.ders])
    p = net_kw / 1000.0 * (1 + rng.uniform(-0.3, 0.3, net_kw.shape))
    root_vm = 1.03
    flow = radial_power_flow(feeder, p, np.full(feeder.horizon_h, root_vm**2))
    for hour in (3, 12, 19):
        q_fixed = -np.array([d.load_kvar for d in feeder.ders])[:, hour] / 1000.0
        net = feeder_power_flow(feeder, p[:, hour], q_fixed, root_vm)
        np.testing.assert_allclose(np.sqrt(flow.v_pu2[:, hour]), net.res_bus.vm_pu, atol=1e-9)
        # pandapower's root bus carries nothing of its own: its external grid supplies
        # exactly the root's net injection into the feeder
        assert flow.root_mw[hour] == pytest.approx(net.res_ext_grid.p_mw.iloc[0], abs=1e-9)
        assert flow.root_mvar[hour] == pytest.approx(net.res_ext_grid.q_mvar.iloc[0], abs=1e-9)
        loss = (feeder.r_pu[:, None] * flow.ell_pu)[1:, hour].sum()
        assert loss == pytest.approx(net.res_line.pl_mw.sum(), abs=1e-9)


def test_running_the_central_optimum_costs_the_optimum(feeder33, central33):
    ran = _run_central(feeder33, central33)
    assert central33.relaxation_gap < 1e-4  # so the SOCP point is an AC power flow solution
    assert ran.feasible
    assert np.max(np.abs(ran.slack_mismatch_mw)) < 1e-6
    assert ran.cost_usd == pytest.approx(central33.objective_usd, rel=1e-9)
    np.testing.assert_allclose(ran.vm_pu**2, central33.v_pu2, atol=1e-8)


def test_the_slack_pays_for_a_mismatch_at_its_marginal_cost(feeder33, central33):
    """One more kW drawn at a leaf for an hour: the root supplies it plus the extra losses, and
    the cost rises by the generator's cost of that energy (seed 001 eq. 6 by hand)."""
    hour, leaf = 12, feeder33.n_nodes - 1
    p = central33.p_mw.copy()
    p[leaf, hour] -= 0.001
    g0 = central33.model.generation_mw()[0]
    base = _run_central(feeder33, central33)
    ran = dispatch(feeder33, p, g0, central33.objective_usd, central33.v_pu2[0])
    extra = ran.slack_mismatch_mw[hour] - base.slack_mismatch_mw[hour]
    assert 0.001 < extra < 0.0011  # the kW, plus losses on its way
    gen = feeder33.ders[0].generator
    g = base.generator_mw[hour]
    by_hand = (
        gen.cost_quad_usd_per_mw2h * ((g + extra) ** 2 - g**2)
        + gen.cost_lin_usd_per_mwh[hour] * extra
    )
    assert ran.cost_usd - base.cost_usd == pytest.approx(by_hand, rel=1e-9)


def test_substation_voltage_moves_into_the_band(feeder33, central33):
    """Solar pushing a far bus over the band: the DSO lowers the substation voltage for that
    hour, unless the feeder fixes it, which is then reported infeasible with the excursion."""
    hour, far = 12, feeder33.n_nodes - 1  # the end of the longest branch
    p = central33.p_mw.copy()
    p[far, hour] += 1.0  # lifts it to ≈ 1.066 pu with the substation at 1.05
    g0 = central33.model.generation_mw()[0]
    top = np.full(feeder33.horizon_h, feeder33.vmax_pu**2)
    ran = dispatch(feeder33, p, g0, central33.objective_usd, top)
    assert ran.feasible and ran.voltage_violation_pu == 0.0
    assert ran.root_vm_pu[hour] < feeder33.vmax_pu - 1e-3
    assert ran.vm_pu[:, hour].max() == pytest.approx(feeder33.vmax_pu, abs=1e-7)
    fixed = replace(feeder33, root_vm_pu=feeder33.vmax_pu)
    stuck = dispatch(fixed, p, g0, central33.objective_usd, top)
    assert not stuck.feasible
    assert stuck.voltage_violation_pu == pytest.approx(
        stuck.vm_pu[:, hour].max() - feeder33.vmax_pu, abs=1e-12
    )


def test_generator_limits_are_checked(feeder33, central33):
    gen = feeder33.ders[0].generator
    g0 = central33.model.generation_mw()[0]
    small = replace(gen, p_max_kw=float(g0.max() * 1000 - 50))
    feeder = feeder33.with_ders(0, replace(feeder33.ders[0], generator=small))
    ran = _run_central(feeder, central33)
    assert not ran.feasible and ran.generator_violation_mw == pytest.approx(0.05, abs=1e-6)


def test_admm_schedule_runs_feasibly_and_costs_no_less_than_the_optimum():
    """What the gap means: a schedule the feeder can run cannot beat the relaxation's optimum."""
    feeder = head(case33bw(), 8)
    central = solve_central(feeder)
    options = AdmmOptions(rho=50.0, over_relaxation=1.6, adaptive=False, max_iter=25)
    res = solve_admm(feeder, options)
    assert res.dispatch is not None and res.dispatch.feasible
    assert res.dispatch.cost_usd >= central.objective_usd * (1 - 1e-7)
    assert res.history[-1].dispatch_usd == res.dispatch.cost_usd
    # consistent with the local costs: they differ only by the root generator's mismatch
    gen = feeder.ders[0].generator
    g0 = res.generation_mw[0]
    delta = generator_cost_usd(gen, g0 + res.dispatch.slack_mismatch_mw) - generator_cost_usd(
        gen, g0
    )
    assert res.dispatch.cost_usd == pytest.approx(res.objective_usd + delta, rel=1e-12)
    off = solve_admm(feeder, replace(options, dispatch=False))
    assert off.dispatch is None and np.isnan(off.history[-1].dispatch_usd)
    np.testing.assert_array_equal(off.z, res.z)  # evaluating changes nothing


def test_chain_schedule_is_costed_from_its_integers(feeder33, central33):
    schedule = {
        "p_w": [[round(v * 1e6) for v in row] for row in central33.p_mw],
        "z": [[round(v * SCALE) for v in row] for row in central33.z],
    }
    local_usd, ran = evaluate_chain_schedule(feeder33, schedule)
    # injections on chain are whole watts: ≤ 0.5 W per node and hour at ≤ 100 $/MWh
    assert local_usd == pytest.approx(central33.objective_usd, abs=24 * 0.5e-6 * 100)
    assert ran.feasible
    assert ran.cost_usd == pytest.approx(central33.objective_usd, abs=33 * 24 * 0.5e-6 * 100)
    battery = Battery(10.0, 10.0, 0.0, 40.0, 20.0)
    root_storage = feeder33.with_ders(0, replace(feeder33.ders[0], battery=battery))
    with pytest.raises(OnChainError, match="generator at the root as the only costed device"):
        evaluate_chain_schedule(root_storage, schedule)


def test_bad_input_is_named(feeder33, central33):
    v0 = central33.v_pu2[0]
    with pytest.raises(ValueError, match=r"must be nodes × hours = \(33, 24\)"):
        radial_power_flow(feeder33, central33.p_mw[:, :12], v0)
    p = central33.p_mw.copy()
    p[17] -= 60.0  # 60 MW drawn at the end of a 12.66 kV feeder
    with pytest.raises(DispatchError, match="beyond what the feeder can carry"):
        radial_power_flow(feeder33, p, v0)


def test_reactive_injection_follows_the_capacitor_voltage():
    feeder = load_feeder("sce56")
    cap = np.array([d.capacitor_kvar for d in feeder.ders])
    assert np.count_nonzero(cap) >= 2
    v = np.full((feeder.n_nodes, feeder.horizon_h), 1.1025)
    q = reactive_injection_mvar(feeder, v)
    for i, d in enumerate(feeder.ders):
        np.testing.assert_allclose(q[i], cap[i] / 1000 * 1.1025 - np.array(d.load_kvar) / 1000)


def test_admm_goes_on_when_a_schedule_cannot_run(monkeypatch):
    """An iterate the feeder cannot carry is recorded (NaN, infeasible); ADMM does not stop."""
    import gridledger.grid.admm as admm

    def collapse(*args, **kwargs):
        raise DispatchError("radial power flow: voltage collapse")

    monkeypatch.setattr(admm, "run_schedule", collapse)
    feeder = head(case33bw(), 4)
    res = solve_admm(feeder, AdmmOptions(rho=50.0, adaptive=False, max_iter=3))
    assert res.iterations == 3 and res.dispatch is None
    assert all(np.isnan(h.dispatch_usd) and h.dispatch_feasible is False for h in res.history)


@pytest.mark.parametrize("name", ["case33bw", "sce56"])
def test_marginal_prices_of_the_optimum_are_its_dlmps(name, feeder33, central33):
    """Envelope theorem: at the optimum, the root generator's marginal cost times a node's loss
    factor is the node's balance dual wherever no bus but the root sits at a voltage limit."""
    feeder, central = (feeder33, central33) if name == "case33bw" else (load_feeder(name), None)
    central = central or solve_central(feeder)
    ran = _run_central(feeder, central)
    prices = marginal_prices_usd_per_mwh(feeder, central.p_mw, ran)
    free = np.all(np.abs(central.voltage_dual[1:]) < 1e-6, axis=0)
    assert free.sum() >= 10  # SCE-56: a far bus reaches 1.05 pu from 11:00 on
    np.testing.assert_allclose(prices[:, free], central.dlmp_usd_per_mwh[:, free], atol=2e-3)
    # the root pays its generator's marginal cost (seed 001 eq. 6 differentiated by hand)
    gen = feeder.ders[0].generator
    by_hand = np.array(gen.cost_lin_usd_per_mwh) + 2 * gen.cost_quad_usd_per_mw2h * ran.generator_mw
    np.testing.assert_allclose(prices[0], by_hand, rtol=1e-12)
    np.testing.assert_allclose(prices[0], central.dlmp_usd_per_mwh[0], atol=1e-4)


def test_marginal_prices_need_a_priced_slack(feeder33, central33):
    ran = _run_central(feeder33, central33)
    no_gen = feeder33.with_ders(0, replace(feeder33.ders[0], generator=None))
    with pytest.raises(ValueError, match="no generator at the root"):
        marginal_prices_usd_per_mwh(no_gen, central33.p_mw, ran)
