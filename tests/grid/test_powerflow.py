"""AC power flow against pandapower, batch against single, and the failure paths."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.loaders import from_pandapower
from gridledger.grid.powerflow import (
    BatchPowerFlowResult,
    PowerFlowDidNotConverge,
    PowerFlowResult,
    run_pf,
    run_pf_batch,
)

PANDAPOWER_CASES = ["case9", "case30", "case33bw", "case118", "case300"]


def _pandapower_solved(case: str, trafo_model: str = "t"):
    net = getattr(pn, case)()
    pp.runpp(
        net,
        tolerance_mva=1e-11,
        calculate_voltage_angles=True,
        trafo_model=trafo_model,
        init="flat",
        max_iteration=50,
    )
    return net


@pytest.mark.parametrize("case", PANDAPOWER_CASES)
def test_voltages_match_pandapower(case: str) -> None:
    net = _pandapower_solved(case)
    ours = run_pf(from_pandapower(net), tol=1e-11)
    assert ours.converged
    res = net.res_bus.loc[ours.bus_ids]
    # pandapower keeps the ext_grid angle (30° in case118); ours references the slack to 0°.
    va_ref = float(net.ext_grid.va_degree.iloc[0])
    np.testing.assert_allclose(ours.vm_pu, res.vm_pu, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.va_deg + va_ref, res.va_degree, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", PANDAPOWER_CASES)
def test_losses_and_line_flows_match_pandapower(case: str) -> None:
    # The pi transformer model has no branch conductance, so branch losses compare exactly.
    net = _pandapower_solved(case, trafo_model="pi")
    ours = run_pf(from_pandapower(net, trafo_model="pi"), tol=1e-11)
    pp_loss = net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum()
    assert ours.loss_mw == pytest.approx(pp_loss, abs=1e-6)
    n_line = len(net.line[net.line.in_service])
    # Lines come first in pandapower's branch order.
    line = net.line[net.line.in_service]
    np.testing.assert_array_equal(ours.branch_from[:n_line], line.from_bus)
    np.testing.assert_allclose(
        ours.p_from_mw[:n_line], net.res_line.p_from_mw[line.index], atol=1e-6
    )
    np.testing.assert_allclose(
        ours.q_from_mvar[:n_line], net.res_line.q_from_mvar[line.index], atol=1e-6
    )
    np.testing.assert_allclose(ours.p_to_mw[:n_line], net.res_line.p_to_mw[line.index], atol=1e-6)
    np.testing.assert_allclose(
        ours.loading_pct[:n_line], net.res_line.loading_percent[line.index], atol=1e-6
    )


def test_generator_outputs_match_pandapower() -> None:
    net = _pandapower_solved("case30")
    ours = run_pf(from_pandapower(net), tol=1e-11)
    # gen rows: ext_grid first, then gens, in pandapower's order
    assert ours.gen_p_mw[0] == pytest.approx(net.res_ext_grid.p_mw.iloc[0], abs=1e-6)
    assert ours.gen_q_mvar[0] == pytest.approx(net.res_ext_grid.q_mvar.iloc[0], abs=1e-6)
    np.testing.assert_allclose(ours.gen_q_mvar[1:], net.res_gen.q_mvar, atol=1e-6)
    np.testing.assert_allclose(ours.gen_p_mw[1:], net.res_gen.p_mw, atol=1e-9)


def _microgrid_pandapower(islanded: bool):
    """seed 000 Tables I-II built directly in pandapower (ohm lines, kW loads) — independent of
    our case builder except for the stated assumptions (20 kV, DG set-points)."""
    lines = [
        (1, 5, 0.6076, 0.098),
        (1, 7, 0.868, 0.14),
        (1, 2, 0.4487, 0.091),
        (2, 8, 0.641, 0.13),
        (3, 6, 1.302, 0.21),
        (5, 3, 0.868, 0.14),
        (7, 4, 1.302, 0.21),
        (8, 9, 0.9615, 0.195),
    ]
    case1 = {2: (764.3, 422.358), 3: (254.4, 172.587), 4: (563.4, 279.126)}
    common = {
        5: (646.4, 370.55),
        6: (817.7, 437.85),
        7: (696.7, 458.406),
        8: (319.3, 167.939),
        9: (764.1, 414.908),
    }
    loads = {**({1: (1062.5, 534.5)} if islanded else case1), **common}
    net = pp.create_empty_network(sn_mva=1.0, f_hz=50)
    bus = {b: pp.create_bus(net, vn_kv=20.0, name=str(b)) for b in range(1, 10)}
    for f, t, r, x in lines:
        pp.create_line_from_parameters(
            net,
            bus[f],
            bus[t],
            length_km=1.0,
            r_ohm_per_km=r,
            x_ohm_per_km=x,
            c_nf_per_km=0.0,
            max_i_ka=1.0,
        )
    for b, (p_kw, q_kvar) in loads.items():
        pp.create_load(net, bus[b], p_mw=p_kw / 1000, q_mvar=q_kvar / 1000)
    return net, bus, loads


def test_microgrid_case1_matches_independent_pandapower_model() -> None:
    ours_net = load_case("microgrid9")
    ours = run_pf(ours_net, regulator_control="q")
    net, bus, loads = _microgrid_pandapower(islanded=False)
    pp.create_ext_grid(net, bus[1], vm_pu=1.0)
    for b in (2, 3, 4):  # DGs cover their own bus' active load, Q = 0
        pp.create_sgen(net, bus[b], p_mw=loads[b][0] / 1000, q_mvar=0.0)
    pp.runpp(net, tolerance_mva=1e-11)
    np.testing.assert_allclose(
        ours.vm_pu, net.res_bus.vm_pu[[bus[b] for b in ours.bus_ids]], atol=1e-8
    )
    np.testing.assert_allclose(
        ours.va_deg, net.res_bus.va_degree[[bus[b] for b in ours.bus_ids]], atol=1e-6
    )
    assert ours.loss_mw == pytest.approx(net.res_line.pl_mw.sum(), abs=1e-9)
    assert ours.gen_q_mvar[1:] == pytest.approx([0, 0, 0], abs=1e-12)
    # the same operating point when the DGs hold the voltages the case stores
    held = run_pf(ours_net, regulator_control="vm")
    np.testing.assert_allclose(held.vm_pu, ours.vm_pu, atol=1e-9)
    assert held.gen_q_mvar[1:] == pytest.approx([0, 0, 0], abs=1e-7)


def test_microgrid_islanded_distributed_slack_matches_pandapower() -> None:
    ours_net = load_case("microgrid9-islanded")
    ours = run_pf(ours_net, regulator_control="vm")
    net, bus, _ = _microgrid_pandapower(islanded=True)
    gen = ours_net.gen
    for _, g in gen.iterrows():
        pp.create_gen(
            net,
            bus[int(g.bus)],
            p_mw=g.p_mw,
            vm_pu=g.vm_pu,
            slack=g.role == "slack",
            slack_weight=g.slack_weight,
        )
    pp.runpp(net, tolerance_mva=1e-11, distributed_slack=True, lightsim2grid=False)
    order = [bus[b] for b in ours.bus_ids]
    np.testing.assert_allclose(ours.vm_pu, net.res_bus.vm_pu[order], atol=1e-8)
    np.testing.assert_allclose(ours.va_deg, net.res_bus.va_degree[order], atol=1e-6)
    np.testing.assert_allclose(ours.gen_p_mw, net.res_gen.p_mw, atol=1e-8)
    np.testing.assert_allclose(ours.gen_q_mvar, net.res_gen.q_mvar, atol=1e-7)
    # distributed slack: each DG's change from schedule is proportional to its rating
    extra = ours.gen_p_mw - gen.p_mw.to_numpy()
    np.testing.assert_allclose(extra / gen.sn_mva.to_numpy(), extra[0] / gen.sn_mva.iloc[0])
    # generation = load + losses
    assert ours.gen_p_mw.sum() == pytest.approx(ours_net.load.p_mw.sum() + ours.loss_mw, abs=1e-9)


def test_result_shapes_and_dict() -> None:
    res = run_pf(load_case("ieee9"))
    assert isinstance(res, PowerFlowResult)
    d = res.to_dict()
    assert d["converged"] is True
    assert [b["bus"] for b in d["buses"]] == list(range(1, 10))
    assert len(d["lines"]) == 9 and {
        "from",
        "to",
        "loading_pct",
        "p_from_mw",
        "q_from_mvar",
    } <= set(d["lines"][0])
    assert d["loss_mw"] == pytest.approx(4.9547, abs=1e-4)


def test_batch_matches_single_solves_vm_control() -> None:
    c = compile_network(load_case("ieee9"))
    rng = np.random.default_rng(7)
    vm = c.gen_vm + rng.uniform(-0.05, 0.05, (40, c.gen_bus.size))
    batch = run_pf_batch(c, gen_vm=vm)
    assert isinstance(batch, BatchPowerFlowResult)
    assert batch.vm_pu.shape == (40, c.n_bus) and batch.branch_loading.shape == (40, c.n_branch)
    assert batch.converged.all()
    for k in range(0, 40, 7):
        one = run_pf(c, gen_vm=vm[k])
        np.testing.assert_allclose(batch.vm_pu[k], one.vm_pu, atol=1e-9)
        np.testing.assert_allclose(np.rad2deg(batch.va_rad[k]), one.va_deg, atol=1e-7)
        np.testing.assert_allclose(batch.gen_q_pu[k] * c.base_mva, one.gen_q_mvar, atol=1e-6)
        np.testing.assert_allclose(batch.gen_p_pu[k] * c.base_mva, one.gen_p_mw, atol=1e-6)
        assert batch.loss_pu[k] * c.base_mva == pytest.approx(one.loss_mw, abs=1e-6)
        np.testing.assert_allclose(batch.branch_loading[k] * 100, one.loading_pct, atol=1e-6)


@pytest.mark.parametrize("chord", [True, False])
def test_batch_q_control_on_microgrid(chord: bool) -> None:
    c = compile_network(load_case("microgrid9"))
    rng = np.random.default_rng(3)
    q = rng.uniform(-0.5, 0.5, (25, c.gen_bus.size))
    batch = run_pf_batch(c, gen_q=q, regulator_control="q", chord=chord)
    assert batch.converged.all()
    for k in (0, 12, 24):
        one = run_pf(c, gen_q=q[k], regulator_control="q")
        np.testing.assert_allclose(batch.vm_pu[k], one.vm_pu, atol=1e-9)
        # regulators inject exactly their set-point; the grid takes the rest
        np.testing.assert_allclose(batch.gen_q_pu[k, 1:], q[k, 1:], atol=1e-12)
        assert batch.loss_pu[k] == pytest.approx(one.loss_mw / c.base_mva, abs=1e-9)


def test_batch_reports_each_failure_without_raising() -> None:
    c = compile_network(load_case("ieee9"))
    heavy = dataclasses.replace(c, load_p=c.load_p * 50, load_q=c.load_q * 50)
    gen_vm = np.tile(c.gen_vm, (3, 1))
    out = run_pf_batch(heavy, gen_vm=gen_vm)
    assert not out.converged.any()
    assert (out.max_mismatch > 1e-8).all()
    assert out.iterations.shape == (3,)
    mixed = run_pf_batch(c, gen_vm=np.vstack([c.gen_vm, c.gen_vm * 0.05]))
    assert mixed.converged.tolist() == [True, False]


def test_non_convergence_is_reported_with_mismatch_and_iterations() -> None:
    net = load_case("ieee9")
    load = net.load.copy()
    load[["p_mw", "q_mvar"]] *= 50
    heavy = net.with_tables(load=load)
    with pytest.raises(PowerFlowDidNotConverge, match=r"after \d+ iterations; largest mismatch"):
        run_pf(heavy)
    res = run_pf(heavy, check=False)
    assert res.converged is False
    assert res.max_mismatch_pu > 1e-8 and res.iterations > 0
    try:
        run_pf(heavy, max_iter=5)
    except PowerFlowDidNotConverge as exc:
        assert exc.result is not None and not exc.result.converged


def test_bad_arguments_are_rejected() -> None:
    c = compile_network(load_case("ieee9"))
    with pytest.raises(ValueError, match="gen_vm must have shape"):
        run_pf(c, gen_vm=[1.0, 1.0])
    with pytest.raises(ValueError, match="non-finite"):
        run_pf(c, gen_q=[0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="regulator_control"):
        run_pf(c, regulator_control="pq")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gen_vm must be positive"):
        run_pf(c, gen_vm=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="disagree on the batch size"):
        run_pf_batch(c, gen_vm=np.ones((4, 3)), gen_q=np.zeros((5, 3)))
    with pytest.raises(TypeError, match="Network or CompiledNetwork"):
        run_pf("ieee9")  # type: ignore[arg-type]


def test_q_limit_enforcement_switches_pv_to_pq() -> None:
    net = load_case("ieee9-q200")
    free = run_pf(net)
    gen = net.gen.copy()
    gen["qmax_mvar"] = 60.0
    limited = net.with_tables(gen=gen)
    res = run_pf(limited, enforce_q_limits=True)
    assert free.gen_q_mvar[1] > 60.0
    regulators = (gen.role == "regulator").to_numpy()
    assert (res.gen_q_mvar[regulators] <= 60.0 + 1e-6).all()
    assert res.gen_q_mvar[1] == pytest.approx(60.0, abs=1e-6)
    # a bus that lost its regulator's voltage control sits below its set-point
    assert res.vm_pu[1] < gen.vm_pu.iloc[1]


def test_pandapower_net_is_not_modified_by_conversion() -> None:
    net = pn.case9()
    before = copy.deepcopy(net.bus)
    from_pandapower(net)
    assert net.bus.equals(before)


def test_batch_warm_starts_give_the_same_solutions() -> None:
    c = compile_network(load_case("ieee9"))
    rng = np.random.default_rng(11)
    vm = c.gen_vm + rng.uniform(-0.04, 0.04, (30, c.gen_bus.size))
    cold = run_pf_batch(c, gen_vm=vm)
    base = run_pf(c).v_complex
    shared = run_pf_batch(c, gen_vm=vm, v0=base)
    own = run_pf_batch(c, gen_vm=vm, v0=np.tile(base, (30, 1)))
    flat = run_pf_batch(c, gen_vm=vm, v0=np.ones(c.n_bus, dtype=complex))
    for other in (shared, own, flat):
        assert other.converged.all()
        np.testing.assert_allclose(other.vm_pu, cold.vm_pu, atol=1e-9)
        np.testing.assert_allclose(other.loss_pu, cold.loss_pu, atol=1e-9)
    with pytest.raises(ValueError, match="v0 must have shape"):
        run_pf_batch(c, gen_vm=vm, v0=np.ones(4, dtype=complex))
    with pytest.raises(ValueError, match="v0 must be finite and non-zero"):
        run_pf_batch(c, gen_vm=vm, v0=np.zeros(c.n_bus, dtype=complex))


def test_batch_larger_than_one_chunk_keeps_row_order() -> None:
    c = compile_network(load_case("microgrid9-islanded"))
    rng = np.random.default_rng(5)
    q = c.gen_q + rng.uniform(-0.4, 0.4, (2500, c.gen_bus.size))
    batch = run_pf_batch(c, gen_q=q, regulator_control="q")
    assert batch.converged.all() and len(batch) == 2500
    for k in (0, 1023, 1024, 2049, 2499):
        one = run_pf(c, gen_q=q[k], regulator_control="q")
        np.testing.assert_allclose(batch.vm_pu[k], one.vm_pu, atol=1e-9)
        np.testing.assert_allclose(batch.gen_p_pu[k], one.gen_p_mw / c.base_mva, atol=1e-9)


def _with_svc_at_bus_9(net):
    from gridledger.grid.network import SVC_COLUMNS, table

    svc = table(
        [{"name": "SVC9", "bus": 9, "qmin_mvar": -100.0, "qmax_mvar": 300.0, "q_mvar": 0.0}],
        SVC_COLUMNS,
    )
    return net.with_tables(svc=svc)


def test_svc_injection_equals_less_reactive_load() -> None:
    # seed 002 Case 2: an SVC at bus 9 of the modified IEEE 9 (range -100..300 MVAr).
    with_svc = compile_network(_with_svc_at_bus_9(load_case("ieee9-q200")))
    net = load_case("ieee9-q200")
    load = net.load.copy()
    load.loc[load.bus == 9, "q_mvar"] = 100.0
    reference = run_pf(net.with_tables(load=load))
    single = run_pf(with_svc, svc_q=[1.0])  # 100 MVAr on the 100 MVA base
    np.testing.assert_allclose(single.vm_pu, reference.vm_pu, atol=1e-10)
    assert single.loss_mw == pytest.approx(reference.loss_mw, abs=1e-8)
    batch = run_pf_batch(with_svc, svc_q=np.array([[0.0], [1.0], [2.0]]))
    assert batch.converged.all()
    np.testing.assert_allclose(batch.vm_pu[1], reference.vm_pu, atol=1e-9)
    # more reactive support at bus 9 lifts its voltage and cuts losses
    assert batch.vm_pu[0, 8] < batch.vm_pu[1, 8] < batch.vm_pu[2, 8]
    assert batch.loss_pu[0] > batch.loss_pu[1]


_MICROGRID = compile_network(load_case("microgrid9"))


@settings(max_examples=25, deadline=None)
@given(
    q=st.lists(st.floats(-0.6, 0.6), min_size=3, max_size=3),
    p=st.lists(st.floats(0.0, 1.2), min_size=3, max_size=3),
)
def test_batch_power_balance_holds_for_any_dg_dispatch(q: list[float], p: list[float]) -> None:
    """Whatever the DGs do, generation = load + losses, in P and (with line charging 0) in Q."""
    c = _MICROGRID
    gen_p = c.gen_p.copy()
    gen_p[1:] = p
    gen_q = c.gen_q.copy()
    gen_q[1:] = q
    out = run_pf_batch(c, gen_q=gen_q[None, :], gen_p=gen_p[None, :], regulator_control="q")
    assert out.converged[0]
    assert out.gen_p_pu[0].sum() == pytest.approx(c.load_p.sum() + out.loss_pu[0], abs=1e-9)
    np.testing.assert_allclose(out.gen_q_pu[0, 1:], q, atol=1e-12)
    np.testing.assert_allclose(out.gen_p_pu[0, 1:], p, atol=1e-12)
    one = run_pf(c, gen_q=gen_q, gen_p=gen_p, regulator_control="q")
    # reactive losses: sum over branches of x |I|^2 (no shunts, no charging here)
    q_loss = float(np.sum(one.q_from_mvar + one.q_to_mvar)) / c.base_mva
    assert out.gen_q_pu[0].sum() == pytest.approx(c.load_q.sum() + q_loss, abs=1e-9)


@pytest.mark.parametrize(
    "name", ["simple_four_bus_system", "example_simple", "create_cigre_network_mv"]
)
def test_distribution_networks_with_transformers_and_switches(name: str) -> None:
    """Phase-shifting transformers (Dyn5: 150°), sgens, switches and pandapower's auxiliary
    buses: voltages agree with pandapower bus by bus, batch and single alike."""
    net = getattr(pn, name)()
    pp.runpp(net, tolerance_mva=1e-11, calculate_voltage_angles=True)
    ours_net = from_pandapower(net)
    ours = run_pf(ours_net, tol=1e-11)
    known = np.isin(ours.bus_ids, net.bus.index)
    res = net.res_bus.loc[ours.bus_ids[known]]
    np.testing.assert_allclose(ours.vm_pu[known], res.vm_pu, atol=1e-8)
    diff = ours.va_deg[known] + float(net.ext_grid.va_degree.iloc[0]) - res.va_degree
    np.testing.assert_allclose((diff + 180) % 360 - 180, 0, atol=1e-6)
    # auxiliary buses pandapower adds get ids after its largest bus index
    assert (ours.bus_ids[~known] > net.bus.index.max()).all()
    batch = run_pf_batch(ours_net, batch_size=2, tol=1e-11)
    assert batch.converged.all()
    np.testing.assert_allclose(batch.vm_pu[1], ours.vm_pu, atol=1e-9)


@pytest.mark.parametrize("chord", [True, False])
def test_batch_on_a_large_network(chord: bool) -> None:
    """case300: the batch kernel still agrees with the sparse single solve (Newton fallback
    works in memory-bounded groups)."""
    c = compile_network(load_case("pandapower:case300"))
    rng = np.random.default_rng(1)
    vm = c.gen_vm + rng.uniform(-0.01, 0.01, (3, c.gen_bus.size))
    batch = run_pf_batch(c, gen_vm=vm, chord=chord)
    assert batch.converged.all()
    for k in range(3):
        one = run_pf(c, gen_vm=vm[k])
        np.testing.assert_allclose(batch.vm_pu[k], one.vm_pu, atol=1e-9)
        assert batch.loss_pu[k] * c.base_mva == pytest.approx(one.loss_mw, abs=1e-5)
