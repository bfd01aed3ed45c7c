"""Real distribution grids from pandapower and SimBench: static generators, storage, switches,
transformers with taps, three-winding transformers; every power flow checked against
pandapower's own, losses (series + no-load) against ``res_line/res_trafo/res_trafo3w.pl_mw``."""

from __future__ import annotations

import copy
import itertools
import math
import sys

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
import simbench

from gridledger.grid.cases import load_case
from gridledger.grid.loaders import (
    CaseFormatError,
    from_pandapower,
    network_from_ppc,
    parse_matpower,
    to_matpower,
)
from gridledger.grid.network import NetworkError
from gridledger.grid.powerflow import run_pf

RURAL3 = "1-LV-rural3--0-sw"  # 129 buses, 118 loads, 17 rooftop PV sgens, one 0.4 MVA trafo


def _pp_solved(net):
    net = copy.deepcopy(net)
    pp.runpp(net, calculate_voltage_angles=True, tolerance_mva=1e-11, max_iteration=30)
    return net


def _pp_total_loss(net) -> float:
    total = net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum()
    if len(net.trafo3w):
        total += net.res_trafo3w.pl_mw.sum()
    if len(net.impedance):
        total += net.res_impedance.pl_mw.sum()
    return float(total)


def _assert_same_voltages(net_pp, ours) -> None:
    known = np.isin(ours.bus_ids, net_pp.bus.index)
    res = net_pp.res_bus.loc[ours.bus_ids[known]]
    np.testing.assert_allclose(ours.vm_pu[known], res.vm_pu, atol=1e-8, rtol=0)
    diff = ours.va_deg[known] + float(net_pp.ext_grid.va_degree.iloc[0]) - res.va_degree
    np.testing.assert_allclose((diff + 180) % 360 - 180, 0, atol=1e-6)


@pytest.fixture(scope="module")
def rural3():
    return simbench.get_simbench_net(RURAL3)


def _cigre_lv_with_pv():
    net = pn.create_cigre_network_lv()
    for i, bus in enumerate([14, 16, 17, 18, 19, 22, 35, 36, 37, 40, 41, 42]):
        pp.create_sgen(net, bus, p_mw=0.004 + 0.001 * i, q_mvar=0.0, sn_mva=0.015 + 0.002 * i,
                       name=f"PV{bus}", type="PV")  # fmt: skip
    return net


def test_simbench_lv_grid_losses_split_and_match_pandapower(rural3) -> None:
    ours_net = load_case(f"simbench:{RURAL3}")
    assert ours_net.regulator_control == "q"
    sgens = ours_net.gen[ours_net.gen.role == "regulator"]
    assert len(sgens) == 17 and set(sgens["name"]) == set(rural3.sgen["name"])
    assert len(ours_net.load) == 118 and set(ours_net.load["name"]) == set(rural3.load["name"])
    ours = run_pf(ours_net, tol=1e-11)
    ref = _pp_solved(rural3)
    _assert_same_voltages(ref, ours)
    # the figures: 3.06 kW series + 1.23 kW transformer no-load = pandapower's 4.29 kW
    assert ours.total_loss_mw == pytest.approx(_pp_total_loss(ref), abs=1e-6)
    lines = ref.res_line.pl_mw.sum()
    # series = the lines' losses + the transformer's winding losses (a part of its pl_mw)
    trafo_series = ours.series_loss_mw - lines
    assert 0 < trafo_series < ref.res_trafo.pl_mw.sum()
    assert ours.no_load_loss_mw == pytest.approx(ref.res_trafo.pl_mw.sum() - trafo_series)
    assert ours.no_load_loss_mw > 1e-3
    assert ours.series_loss_mw + ours.no_load_loss_mw == pytest.approx(ours.total_loss_mw)


def test_no_load_part_is_what_an_unloaded_transformer_consumes(rural3) -> None:
    idle = copy.deepcopy(rural3)
    idle.load[["p_mw", "q_mvar"]] = 0.0
    idle.sgen[["p_mw", "q_mvar"]] = 0.0
    ref = _pp_solved(idle)
    ours = run_pf(from_pandapower(idle), tol=1e-11)
    assert ours.total_loss_mw == pytest.approx(_pp_total_loss(ref), abs=1e-6)
    # With no load the transformer's loss is its magnetizing loss (pfe_kw at ~1.025 pu): the
    # no-load part carries nearly all of it, the series part only the magnetizing current's.
    assert ours.no_load_loss_mw > 0.97 * ref.res_trafo.pl_mw.sum()
    pfe_mw = float(idle.trafo.pfe_kw.iloc[0]) / 1000
    assert ours.no_load_loss_mw == pytest.approx(pfe_mw * 1.025**2, rel=0.05)


def test_tap_position_is_modelled(rural3) -> None:
    tapped = copy.deepcopy(rural3)
    tapped.trafo["tap_changer_type"] = "Ratio"  # simbench leaves it unset: taps ignored
    tapped.trafo["tap_pos"] = 2
    ours0 = run_pf(from_pandapower(rural3), tol=1e-11)
    ours2 = run_pf(from_pandapower(tapped), tol=1e-11)
    _assert_same_voltages(_pp_solved(tapped), ours2)
    # +2 steps of 2.5 % on the HV side lowers the LV voltages by about 5 %
    assert np.median(ours0.vm_pu - ours2.vm_pu) > 0.04


def test_cigre_lv_with_pv_names_loadings_and_storage(tmp_path) -> None:
    net = _cigre_lv_with_pv()
    pp.create_storage(net, 12, p_mw=0.003, q_mvar=0.001, max_e_mwh=0.01, sn_mva=0.005,
                      name="BAT12")  # fmt: skip
    path = tmp_path / "cigre_lv_pv.json"
    pp.to_json(net, str(path))
    ours_net = load_case(str(path))
    ref = _pp_solved(net)
    ours = run_pf(ours_net, tol=1e-11)
    _assert_same_voltages(ref, ours)
    assert ours.total_loss_mw == pytest.approx(_pp_total_loss(ref), abs=1e-6)
    gen = ours_net.gen.set_index("name")
    assert gen.loc["BAT12", "role"] == "pq" and gen.loc["BAT12", "p_mw"] == -0.003
    assert gen.loc["PV14", "role"] == "regulator"
    # reactive range from the rating at power factor 0.9: ±Sn·sin(acos 0.9)
    assert gen.loc["PV14", "qmax_mvar"] == pytest.approx(0.015 * math.sqrt(1 - 0.81))
    # loadings equal pandapower's loading_percent (lines by max_i_ka, transformers by sn_mva)
    loading = dict(zip(ours_net.branch["name"], ours.loading_pct, strict=True))
    for name, pct in zip(net.line.name, ref.res_line.loading_percent, strict=True):
        assert loading[name] == pytest.approx(pct, abs=1e-6)
    for name, pct in zip(net.trafo.name, ref.res_trafo.loading_percent, strict=True):
        assert loading[name] == pytest.approx(pct, abs=1e-6)


def test_sgen_reactive_range_options() -> None:
    net = _cigre_lv_with_pv()
    net.sgen.loc[net.sgen.name == "PV16", ["min_q_mvar", "max_q_mvar"]] = [-0.001, 0.002]
    gen = from_pandapower(net, sgen_power_factor=0.95).gen.set_index("name")
    assert gen.loc["PV14", "qmax_mvar"] == pytest.approx(0.015 * math.sqrt(1 - 0.95**2))
    assert (gen.loc["PV16", "qmin_mvar"], gen.loc["PV16", "qmax_mvar"]) == (-0.001, 0.002)
    gen = from_pandapower(net, sgen_q_pu=0.3).gen.set_index("name")
    assert gen.loc["PV14", "qmin_mvar"] == pytest.approx(-0.3 * 0.015)
    with pytest.raises(NetworkError, match="sgen_power_factor"):
        from_pandapower(net, sgen_power_factor=1.5)


def test_open_switches_three_winding_and_impedances() -> None:
    """cigre MV with DERs and an extra open line switch (meshed: nothing islanded), and the
    multi-voltage example (three-winding transformer, impedance, xwards, open switches)."""
    mv = pn.create_cigre_network_mv(with_der="pv_wind")
    mv.switch.loc[mv.switch.et == "l", "closed"] = True  # close the loops...
    first = mv.switch.index[mv.switch.et == "l"][0]
    mv.switch.at[first, "closed"] = False  # ...and open one line switch
    for net in (mv, pn.example_multivoltage()):
        ref = _pp_solved(net)
        ours = run_pf(from_pandapower(net), tol=1e-11)
        _assert_same_voltages(ref, ours)
        assert ours.total_loss_mw == pytest.approx(_pp_total_loss(ref), abs=1e-6)


def test_networks_with_generators_keep_sgens_fixed() -> None:
    net = from_pandapower(pn.example_simple())
    assert net.regulator_control == "vm"
    assert net.gen.set_index("name").loc["static generator", "role"] == "pq"


def test_bad_grids_are_refused_with_the_reason(rural3) -> None:
    cut = copy.deepcopy(rural3)
    feeder_switch = cut.switch.index[(cut.switch.et == "l")][5]
    cut.switch.at[feeder_switch, "closed"] = False
    with pytest.raises(NetworkError, match=r"load \d+ is at bus \d+, which no slack supplies"):
        from_pandapower(cut)
    zip_load = copy.deepcopy(rural3)
    zip_load.load.loc[zip_load.load.index[0], "const_z_p_percent"] = 50.0
    with pytest.raises(NetworkError, match="only constant-power loads"):
        from_pandapower(zip_load)
    with pytest.raises(CaseFormatError, match="simbench has no grid 'nope'"):
        load_case("simbench:nope")


def test_simbench_missing_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "simbench", None)  # import simbench -> ModuleNotFoundError
    with pytest.raises(CaseFormatError, match=r"pip install 'gridledger\[simbench\]'"):
        load_case("simbench:1-LV-rural1--0-sw")


def test_ropf_moves_the_pv_inverters_to_pandapowers_optimum() -> None:
    """The static generators' reactive injections are the R-OPF's controls: the exact optimum
    agrees with pandapower's own OPF (PIPS) on the original pandapower network, where the same
    sgens are controllable in Q (P pinned, Q within ±0.436·Sn and the capability circle)."""
    from gridledger.grid.compiled import compile_network
    from gridledger.grid.ropf import RopfProblem, solve_ropf

    net = _cigre_lv_with_pv()
    net.bus["min_vm_pu"], net.bus["max_vm_pu"] = 0.9, 1.1
    ours = solve_ropf(RopfProblem(compile_network(from_pandapower(net)), "q"), "exact")
    assert ours.feasible
    opf = copy.deepcopy(net)
    room = np.minimum(
        np.sqrt(np.maximum(opf.sgen.sn_mva**2 - opf.sgen.p_mw**2, 0)),
        opf.sgen.sn_mva * math.sqrt(1 - 0.9**2),
    )
    opf.sgen["controllable"] = True
    opf.sgen["min_p_mw"] = opf.sgen["max_p_mw"] = opf.sgen.p_mw
    opf.sgen["min_q_mvar"], opf.sgen["max_q_mvar"] = -room, room
    opf.line["max_loading_percent"] = opf.trafo["max_loading_percent"] = 100.0
    pp.create_poly_cost(opf, 0, "ext_grid", cp1_eur_per_mw=1000.0)  # see ropf/reference.py
    for i in opf.sgen.index:
        pp.create_poly_cost(opf, i, "sgen", cp1_eur_per_mw=0.0)
    pp.runopp(opf, calculate_voltage_angles=True)
    assert opf.OPF_converged
    reference = _pp_total_loss(opf)
    assert ours.pf_after.total_loss_mw <= reference + 1e-7  # never worse than PIPS
    assert ours.pf_after.total_loss_mw == pytest.approx(reference, rel=1e-3)
    # the inverters do the work: ~19 % less loss than at unit power factor
    assert ours.pf_after.total_loss_mw < 0.85 * ours.pf_before.total_loss_mw


def _two_substations():
    """A 20 kV feeder fed from both ends by two 110 kV external grids (weights 1 and 3)."""
    net = pp.create_empty_network(name="two substations")
    hv1, hv2 = pp.create_bus(net, 110, name="HV1"), pp.create_bus(net, 110, name="HV2")
    mv = [pp.create_bus(net, 20, name=f"MV{i}") for i in range(6)]
    pp.create_ext_grid(net, hv1, vm_pu=1.02, name="grid A")
    pp.create_ext_grid(net, hv2, vm_pu=1.01, name="grid B", slack_weight=3.0)
    pp.create_transformer(net, hv1, mv[0], "25 MVA 110/20 kV", name="T1")
    pp.create_transformer(net, hv2, mv[-1], "25 MVA 110/20 kV", name="T2")
    for a, b in itertools.pairwise(mv):
        pp.create_line(net, a, b, 2.0, "NA2XS2Y 1x185 RM/25 12/20 kV")
    for i, b in enumerate(mv[1:-1]):
        pp.create_load(net, b, p_mw=2.0 + i, q_mvar=0.5)
    pp.create_sgen(net, mv[2], p_mw=1.5, q_mvar=0.2, sn_mva=2.0, name="PV")
    return net


def _pp_distributed(net):
    net = copy.deepcopy(net)
    pp.runpp(net, distributed_slack=True, calculate_voltage_angles=True, tolerance_mva=1e-11)
    return net


def test_several_external_grids_share_the_balance_as_pandapower_distributed_slack() -> None:
    net = _two_substations()
    ours_net = from_pandapower(net)
    assert list(ours_net.gen.role[:2]) == ["slack", "slack"]
    ours = run_pf(ours_net, tol=1e-11)
    ref = _pp_distributed(net)
    _assert_same_voltages(ref, ours)
    assert ours.total_loss_mw == pytest.approx(_pp_total_loss(ref), abs=1e-6)
    # each grid's P and Q is pandapower's; B supplies 3x A's share of the balance
    np.testing.assert_allclose(ours.gen_p_mw[:2], ref.res_ext_grid.p_mw, atol=1e-6)
    np.testing.assert_allclose(ours.gen_q_mvar[:2], ref.res_ext_grid.q_mvar, atol=1e-6)
    assert ours.gen_p_mw[1] == pytest.approx(3 * ours.gen_p_mw[0], rel=1e-9)
    # both stay slacks through MATPOWER text (both written as reference buses); MATPOWER has
    # no field for the inverters' Q control, so it is named here
    back = network_from_ppc(parse_matpower(to_matpower(ours_net)), "back")
    assert list(back.gen.role[:2]) == ["slack", "slack"]
    again = run_pf(back, regulator_control="q", tol=1e-11)
    np.testing.assert_allclose(again.vm_pu, ours.vm_pu, atol=1e-12)


def test_ropf_optimum_with_two_external_grids_is_pandapowers_power_flow() -> None:
    """The PV inverter's Q is the control; pandapower's distributed-slack power flow at the
    optimum's set-point gives the same losses and voltages."""
    from gridledger.grid.compiled import compile_network
    from gridledger.grid.ropf import RopfProblem, solve_ropf

    net = _two_substations()
    compiled = compile_network(from_pandapower(net))
    ours = solve_ropf(RopfProblem(compiled, "q"), "exact")
    assert ours.feasible
    assert ours.pf_after.total_loss_mw < ours.pf_before.total_loss_mw - 1e-4
    check = copy.deepcopy(net)
    check.sgen.loc[check.sgen.index[0], "q_mvar"] = ours.x[0] * compiled.base_mva
    ref = _pp_distributed(check)
    assert ours.pf_after.total_loss_mw == pytest.approx(_pp_total_loss(ref), abs=1e-6)
    _assert_same_voltages(ref, ours.pf_after)
