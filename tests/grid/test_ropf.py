"""Reactive OPF: the exact solver against pandapower's OPF, the searches against the exact one."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.network import SVC_COLUMNS, table
from gridledger.grid.ropf import RopfOptions, RopfProblem, solve_ropf
from gridledger.grid.ropf.reference import pandapower_min_loss


@pytest.fixture(scope="module")
def pp_case9():
    """pandapower's runopp on its own case9: cost on the slack's P, gens' P pinned, slack 1.0 pu."""
    net = pn.case9()
    net.poly_cost.drop(net.poly_cost.index, inplace=True)
    pp.create_poly_cost(net, 0, "ext_grid", cp1_eur_per_mw=1000.0)
    net.gen["min_p_mw"] = net.gen.p_mw
    net.gen["max_p_mw"] = net.gen.p_mw
    net.bus["min_vm_pu"] = 0.9
    net.bus["max_vm_pu"] = 1.1
    slack_bus = net.ext_grid.bus.iloc[0]
    net.bus.loc[slack_bus, ["min_vm_pu", "max_vm_pu"]] = 1.0
    pp.runopp(net, calculate_voltage_angles=True)
    assert net.OPF_converged
    return float(net.res_line.pl_mw.sum()), net.res_gen.vm_pu.to_numpy()


@pytest.mark.parametrize("case", ["pandapower:case9", "ieee9"])
def test_exact_matches_pandapower_runopp(case, pp_case9):
    pp_loss, pp_vm = pp_case9
    prob = RopfProblem(compile_network(load_case(case)), "vm")
    res = solve_ropf(prob, "exact")
    assert res.feasible
    assert res.loss_before_pu * 100 == pytest.approx(4.9547, abs=1e-4)  # MATPOWER's 4.95 MW
    # Same optimum as the interior-point OPF, to its tolerance.
    assert res.loss_after_pu * 100 == pytest.approx(pp_loss, rel=1e-6)
    np.testing.assert_allclose(res.x, pp_vm, atol=1e-4)
    # And it is a real power-flow solution at those set-points, not a relaxation's number.
    assert res.pf_after.converged and res.pf_after.max_mismatch_pu < 1e-8


# Not the islanded case: pandapower's OPF has no distributed slack, so it would be another problem.
@pytest.mark.parametrize(("case", "control"), [("microgrid9", "q"), ("microgrid9", "vm")])
def test_exact_matches_pandapower_on_the_microgrid(case, control):
    net = load_case(case)
    pp_loss, pp_x = pandapower_min_loss(net, control)
    res = solve_ropf(RopfProblem(compile_network(net), control), "exact")
    assert res.feasible
    assert res.loss_after_pu * net.base_mva == pytest.approx(pp_loss, rel=1e-6)
    if control == "q":  # sgens are the regulators, in the network's order
        # The optimum is flat: 1e-6 in losses leaves ~0.1 kvar of play in the set-points.
        np.testing.assert_allclose(res.x * net.base_mva, pp_x, atol=1e-3)


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("microgrid9", RopfOptions()),
        ("microgrid9-islanded", RopfOptions()),
        ("microgrid9-islanded", RopfOptions(slack_vm_free=True)),
    ],
)
def test_exact_is_a_local_optimum_on_the_microgrid(case, options):
    prob = RopfProblem(compile_network(load_case(case)), "q", options)
    res = solve_ropf(prob, "exact")
    assert res.feasible and res.loss_after_pu < res.loss_before_pu
    # No feasible neighbour (±1 kvar on any DG, ±1e-3 pu on a voltage) is better.
    for i in range(prob.dim):
        for step in (-1e-3, 1e-3):
            x = res.x.copy()
            x[i] = np.clip(x[i] + step, prob.lower[i], prob.upper[i])
            loss, viol, ok = prob.evaluate_x(x[None, :])
            assert ok[0] and (viol[0] > 0 or loss[0] >= res.loss_after_pu - 1e-12)


def test_vm_and_q_control_reach_the_same_optimum():
    c = compile_network(load_case("microgrid9"))
    by_q = solve_ropf(RopfProblem(c, "q"), "exact")
    by_vm = solve_ropf(RopfProblem(c, "vm"), "exact")
    assert by_q.loss_after_pu == pytest.approx(by_vm.loss_after_pu, rel=1e-6)
    np.testing.assert_allclose(by_q.pf_after.gen_q_mvar, by_vm.pf_after.gen_q_mvar, atol=1e-3)


@pytest.mark.parametrize(
    ("case", "control"), [("microgrid9", "q"), ("microgrid9-islanded", "q"), ("ieee9", "vm")]
)
@pytest.mark.parametrize("method", ["gso", "sbde", "de"])
def test_searches_reach_the_exact_optimum_one_seed(case, control, method):
    prob = RopfProblem(compile_network(load_case(case)), control)
    exact = solve_ropf(prob, "exact")
    res = solve_ropf(prob, method, rng=7)
    assert res.feasible
    gap = res.loss_after_pu / exact.loss_after_pu - 1
    assert -1e-7 < gap < 1e-3
    assert res.evaluations > 100 and len(res.history) == res.iterations


@pytest.mark.slow
@pytest.mark.parametrize(("case", "control"), [("microgrid9", "q"), ("ieee9", "vm")])
@pytest.mark.parametrize("method", ["gso", "sbde"])
def test_searches_median_gap_over_ten_seeds(case, control, method):
    prob = RopfProblem(compile_network(load_case(case)), control)
    exact = solve_ropf(prob, "exact")
    gaps = [
        solve_ropf(prob, method, rng=s).loss_after_pu / exact.loss_after_pu - 1 for s in range(10)
    ]
    assert np.median(gaps) < 1e-3
    assert min(gaps) > -1e-7  # nobody beats the exact optimum


@pytest.mark.parametrize("method", ["gso", "sbde", "de"])
def test_searches_are_reproducible(method):
    prob = RopfProblem(compile_network(load_case("microgrid9")), "q")
    a = solve_ropf(prob, method, rng=np.random.default_rng(3), iterations=10)
    b = solve_ropf(prob, method, rng=np.random.default_rng(3), iterations=10)
    c = solve_ropf(prob, method, rng=np.random.default_rng(4), iterations=10)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.history == b.history
    assert not np.array_equal(a.x, c.x)


def test_unknown_method_is_refused():
    prob = RopfProblem(compile_network(load_case("ieee9")), "vm")
    with pytest.raises(ValueError, match=r"unknown R-OPF method 'pso'.*exact, gso, sbde, de"):
        solve_ropf(prob, "pso")
    with pytest.raises(ValueError, match="control must be"):
        RopfProblem(prob.compiled, "angle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vmin_pu < vmax_pu"):
        RopfOptions(vmin_pu=1.1, vmax_pu=0.9)


def test_nothing_to_optimize_is_refused():
    with pytest.raises(ValueError, match="nothing to optimize"):
        RopfProblem(compile_network(load_case("case33bw")), "vm")


def with_svc(net, bus: int, qmin_mvar: float, qmax_mvar: float):
    svc = table(
        [
            {
                "name": f"SVC{bus}",
                "bus": bus,
                "qmin_mvar": qmin_mvar,
                "qmax_mvar": qmax_mvar,
                "q_mvar": 0.0,
            }
        ],
        SVC_COLUMNS,
    )
    return net.with_tables(svc=svc)


def test_infeasible_case_names_the_limit_and_an_svc_repairs_it():
    # Seed 002: with 200 Mvar at bus 9, generator voltages alone cannot hold bus 9 above 0.9 pu.
    net = load_case("ieee9-q200")
    res = solve_ropf(RopfProblem(compile_network(net), "vm"), "exact")
    assert not res.feasible
    assert any(v.kind == "voltage" and v.element == "bus 9" for v in res.violations)
    assert "voltage limit at bus 9" in str(res.violations[0])
    # Seed 002 case 2: an SVC of -100..300 Mvar at bus 9.
    fixed = solve_ropf(RopfProblem(compile_network(with_svc(net, 9, -100, 300)), "vm"), "exact")
    assert fixed.feasible
    assert fixed.x[-1] > 0  # the SVC injects
    sbde = solve_ropf(RopfProblem(compile_network(with_svc(net, 9, -100, 300)), "vm"), "sbde", 1)
    assert sbde.feasible
    assert sbde.loss_after_pu == pytest.approx(fixed.loss_after_pu, rel=1e-3)


def test_tighter_voltage_limits_bind():
    c = compile_network(load_case("ieee9"))
    free = solve_ropf(RopfProblem(c, "vm"), "exact")
    tight = solve_ropf(RopfProblem(c, "vm", RopfOptions(vmin_pu=0.95, vmax_pu=1.05)), "exact")
    assert tight.feasible
    assert tight.pf_after.vm_pu.max() <= 1.05 + 1e-6
    assert tight.loss_after_pu > free.loss_after_pu


def test_q_bounds_follow_the_capability_circle():
    c = compile_network(load_case("microgrid9"))
    prob = RopfProblem(c, "q")
    p = c.gen_p[prob.reg]
    np.testing.assert_allclose(prob.upper, np.sqrt(c.gen_sn[prob.reg] ** 2 - p**2))
    np.testing.assert_allclose(prob.lower, -prob.upper)


@pytest.mark.parametrize("method", ["gso", "sbde", "de"])
def test_one_batched_power_flow_per_iteration(method, monkeypatch):
    import gridledger.grid.ropf.problem as problem_module

    calls = []
    real = problem_module.run_pf_batch

    def counting(*args, **kwargs):
        calls.append(np.atleast_2d(kwargs["gen_vm"]).shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(problem_module, "run_pf_batch", counting)
    prob = RopfProblem(compile_network(load_case("microgrid9")), "q")
    res = solve_ropf(prob, method, rng=0, iterations=5)
    assert len(calls) == 6  # the initial population, then one per iteration
    assert sum(calls) == res.evaluations - 2  # plus the two checking power flows


@settings(max_examples=6, deadline=None)
@given(st.floats(0.5, 1.3), st.integers(0, 2**16))
def test_no_search_beats_exact_at_other_load_levels(scale, seed):
    net = load_case("microgrid9")
    load = net.load.copy()
    load[["p_mw", "q_mvar"]] *= scale
    gen = net.gen.copy()
    dg = gen.role == "regulator"
    gen.loc[dg, "p_mw"] *= scale  # the DGs still serve their own bus' load
    prob = RopfProblem(compile_network(net.with_tables(load=load, gen=gen)), "q")
    exact = solve_ropf(prob, "exact")
    found = solve_ropf(prob, "sbde", rng=seed)
    assert exact.feasible
    assert exact.loss_after_pu <= found.loss_after_pu * (1 + 1e-9)
    assert exact.loss_after_pu <= exact.loss_before_pu


def test_infeasible_everywhere_returns_the_least_breaching_point():
    # ieee9-q200 without an SVC: no set-point holds bus 9 at 0.9 pu; the answer must still be no
    # worse than the start in limit breach.
    prob = RopfProblem(compile_network(load_case("ieee9-q200")), "vm")
    for method in ("exact", "sbde"):
        res = solve_ropf(prob, method, rng=0)
        assert not res.feasible
        assert prob.breach(res.pf_after) <= prob.breach(res.pf_before)
        assert str(res.violations[0]).startswith("voltage limit at bus 9: 0.85")
