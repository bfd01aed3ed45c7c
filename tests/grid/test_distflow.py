"""DistFlow SOCP: independent checks (AC power flow, finite differences, the seed's equations)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from pandapower_feeder import feeder_power_flow

from gridledger.grid.der import Battery, DeferrableLoad, DerSpecError, ShapableLoad
from gridledger.grid.distflow import KW_PER_PU, solve_central
from gridledger.grid.dlmp import decompose
from gridledger.grid.feeders import FeederError, case33bw, head


def _ac_voltages(feeder, result, hour: int) -> np.ndarray:
    """pandapower AC power flow at the SOCP's injections; slack at the SOCP's root voltage."""
    v = result.v_pu2[:, hour]
    cap_mvar = np.array([d.capacitor_kvar for d in feeder.ders]) / KW_PER_PU
    q_without_cap = result.q_mvar[:, hour] - cap_mvar * v
    net = feeder_power_flow(feeder, result.p_mw[:, hour], q_without_cap, math.sqrt(v[0]))
    return net.res_bus.vm_pu.to_numpy()


@pytest.mark.parametrize("hour", [3, 12, 19])
def test_voltages_match_ac_power_flow_when_relaxation_exact(feeder33, central33, hour):
    assert central33.relaxation_gap < 1e-4
    vm_ac = _ac_voltages(feeder33, central33, hour)
    np.testing.assert_allclose(np.sqrt(central33.v_pu2[:, hour]), vm_ac, atol=2e-5)


def test_voltage_limits_and_root_price(feeder33, central33):
    vm = np.sqrt(central33.v_pu2)
    assert vm.min() >= feeder33.vmin_pu - 1e-6 and vm.max() <= feeder33.vmax_pu + 1e-6
    gen = feeder33.ders[0].generator
    g_mw = central33.model.g.value[0]
    marginal = 2 * gen.cost_quad_usd_per_mw2h * g_mw + np.array(gen.cost_lin_usd_per_mwh)
    np.testing.assert_allclose(central33.dlmp_usd_per_mwh[0], marginal, rtol=1e-5)


def test_devices_obey_their_equations(feeder33, central33):
    m = central33.model
    for row, node in enumerate(m.bat_nodes):
        bat = feeder33.ders[node].battery
        energy_kwh = m.energy.value[row] * KW_PER_PU
        assert energy_kwh.min() >= bat.energy_kwh_min - 1e-4
        assert energy_kwh.max() <= bat.energy_kwh_max + 1e-4
        assert (
            abs(energy_kwh[-1] - bat.energy_kwh_initial)
            <= bat.end_band * bat.energy_kwh_initial + 1e-4
        )
        step = (m.charge.value[row] * bat.eta_in - m.discharge.value[row] / bat.eta_out) * KW_PER_PU
        np.testing.assert_allclose(np.diff(energy_kwh), step[1:], atol=1e-5)
    for row, node in enumerate(m.shp_nodes):
        shp = feeder33.ders[node].shapable
        s_kw = m.shapable.value[row] * KW_PER_PU
        assert s_kw.sum() == pytest.approx(shp.energy_kwh, abs=1e-4)
        assert np.all(np.abs(s_kw[: shp.start_hour]) < 1e-6)
    for row, node in enumerate(m.dfr_nodes):
        dfr = feeder33.ders[node].deferrable
        d = m.departure.value[row]
        assert np.all(np.diff(d) >= -1e-7)
        assert np.all(d[: dfr.arrival_hour] < 1e-6)
        assert np.all(d[dfr.arrival_hour + dfr.max_delay_hours :] > 1 - 1e-6)
        consumed_kwh = m.deferrable.value[row].sum() * KW_PER_PU
        assert consumed_kwh == pytest.approx(sum(dfr.profile_kw), rel=1e-5)


def test_dlmp_is_the_marginal_cost_of_load():
    """Finite difference: one more kW of load at a node in one hour costs its DLMP."""
    small = head(case33bw(), 6)
    base = solve_central(small)
    node, hour, extra_kw = 5, 18, 5.0
    ders = small.ders[node]
    load = list(ders.load_kw)
    load[hour] += extra_kw
    bumped = solve_central(small.with_ders(node, replace(ders, load_kw=tuple(load))))
    marginal = (bumped.objective_usd - base.objective_usd) / (extra_kw / 1000.0)
    assert marginal == pytest.approx(base.dlmp_usd_per_mwh[node, hour], rel=2e-3)


def test_dlmp_components(feeder33, central33):
    parts = decompose(feeder33, central33.dlmp_usd_per_mwh, central33.voltage_dual)
    np.testing.assert_allclose(parts.energy + parts.loss + parts.voltage, parts.total)
    np.testing.assert_allclose(parts.energy[5], central33.dlmp_usd_per_mwh[0])
    # the root sits at its upper voltage limit (seed 001 §VI), so that limit's dual is positive
    assert central33.voltage_dual[0].max() > 0
    # energy bought far from the substation carries losses: the loss part grows down the feeder
    far = int(np.argmax(feeder33.r_pu.cumsum()))
    assert parts.loss[far].mean() > parts.loss[1].mean()


def test_bad_der_specifications_are_named_before_solving():
    feeder = case33bw()
    node = next(i for i, d in enumerate(feeder.ders) if d.shapable is not None)
    d = feeder.ders[node]
    shp = d.shapable
    too_much = ShapableLoad(shp.power_kw_max * 30, 0.0, shp.power_kw_max, shp.start_hour, 24)
    with pytest.raises(DerSpecError, match=rf"node .*index {node}\).*shapable load.*energy"):
        feeder.with_ders(node, replace(d, shapable=too_much)).validate()
    late = DeferrableLoad((10.0, 10.0, 10.0), arrival_hour=20, max_delay_hours=3)
    with pytest.raises(DerSpecError, match=r"deferrable load.*ends at hour 26 > horizon 24"):
        feeder.with_ders(node, replace(d, deferrable=late)).validate()
    bad_bat = Battery(10, 10, 0, 40, energy_kwh_initial=50)
    with pytest.raises(DerSpecError, match="battery: initial energy 50 kWh outside"):
        feeder.with_ders(node, replace(d, battery=bad_bat)).validate()
    with pytest.raises(DerSpecError, match="load_kw: has 23 values, horizon is 24 h"):
        feeder.with_ders(node, replace(d, load_kw=d.load_kw[:23])).validate()


def test_feeder_must_be_radial():
    feeder = case33bw()
    parent = feeder.parent.copy()
    parent[3] = 5  # 3 -> 5 -> ... -> 3: a loop, the root unreachable
    parent[5] = 3
    with pytest.raises(FeederError, match="does not reach the root"):
        replace(feeder, parent=parent).validate()
