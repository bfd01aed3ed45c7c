"""The sparse exact R-OPF (IPOPT): its hand-written derivatives against CasADi's automatic
differentiation, its optimum against the dense SLSQP solver's, and its fallbacks."""

from __future__ import annotations

import copy

import casadi as ca
import numpy as np
import pytest
import scipy.sparse as sp

import gridledger.grid.ropf.sparse as sparse_module
from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.network import GEN_COLUMNS, table
from gridledger.grid.ropf import RopfOptions, RopfProblem, solve_ropf
from gridledger.grid.ropf.exact import SPARSE_FROM_BUSES
from gridledger.grid.ropf.sparse import _Derivatives, _SparseSpace, solve_sparse


def _dm(m) -> ca.DM:
    m = sp.csc_matrix(m, dtype=float)
    return ca.DM(ca.Sparsity(m.shape[0], m.shape[1], m.indptr.tolist(), m.indices.tolist()),
                 m.data.tolist())  # fmt: skip


def symbolic_constraints(fs: _SparseSpace, x: ca.SX) -> ca.SX:
    """The same constraints written the textbook way (S = V·conj(Y·V), |I|² = |Yf·V|²) as CasADi
    expressions: an independent reference for the pair-term derivatives."""
    c, lay = fs.c, fs.layout
    nb, n = c.n_bus, lay.n
    a, m, q, _ = lay.sizes
    va = ca.SX.zeros(nb)
    vm = ca.SX(fs.vm_fixed)
    for k, bus in enumerate(lay.nonref):
        va[int(bus)] = x[k]
    for k, bus in enumerate(lay.vm_free):
        vm[int(bus)] = x[a + k]
    vr, vi = vm * ca.cos(va), vm * ca.sin(va)

    def current(y):
        g, b = _dm(y.real), _dm(y.imag)
        return ca.mtimes(g, vr) - ca.mtimes(b, vi), ca.mtimes(b, vr) + ca.mtimes(g, vi)

    ir, ii = current(c.ybus)
    q_inj = ca.SX.zeros(nb)
    for k, g in enumerate(lay.q_free):
        q_inj[int(c.gen_bus[g])] += x[a + m + k]
    for k, bus in enumerate(c.svc_bus):
        q_inj[int(bus)] += x[a + m + q + k]
    slack = x[n - 1]
    parts = [
        vr * ir + vi * ii - fs.p_sched - fs.bus_w * slack,
        vi * ir - vr * ii - fs.q_sched - q_inj,
    ]
    for y in (c.yf[fs.rated], c.yt[fs.rated]):
        br, bi = current(y)
        parts.append(br * br + bi * bi)
    for g in fs.cap_gens:
        p = c.gen_p[g] + c.slack_weight[g] * slack
        free = np.flatnonzero(lay.q_free == g)
        qg = x[a + m + int(free[0])] if free.size else c.gen_q[g]
        parts.append(p * p + qg * qg)
    return ca.vertcat(*parts)


def inverter_feeder():
    """case33bw with three PV inverters (reactive control), the buses of the feeder's ends."""
    net = load_case("case33bw")
    rows = [
        {
            "name": f"PV{bus}",
            "bus": bus,
            "role": "regulator",
            "p_mw": 0.4,
            "q_mvar": 0.0,
            "vm_pu": 1.0,
            "sn_mva": 0.5,
            "pmin_mw": 0.4,
            "pmax_mw": 0.4,
            "qmin_mvar": -0.5,
            "qmax_mvar": 0.5,
            "slack_weight": 0.0,
        }
        for bus in (18, 25, 33)
    ]
    gen = table(net.gen.to_dict("records") + rows, GEN_COLUMNS)
    return net.with_tables(gen=gen)


DERIVATIVE_CASES = [
    ("ieee9", "vm", RopfOptions()),
    ("microgrid9", "q", RopfOptions()),
    ("microgrid9-islanded", "q", RopfOptions(slack_vm_free=True)),
    ("pandapower:case30", "vm", RopfOptions()),
]


@pytest.mark.parametrize(("case", "control", "options"), DERIVATIVE_CASES)
def test_derivatives_match_casadi_automatic_differentiation(case, control, options):
    prob = RopfProblem(compile_network(load_case(case)), control, options)
    fs = _SparseSpace(prob)
    der = _Derivatives(fs)
    assert der.n_g == 2 * prob.compiled.n_bus + 2 * fs.rated.size + fs.cap_gens.size
    xs = ca.SX.sym("x", der.n)
    lam = ca.SX.sym("lam", der.n_g)
    g = symbolic_constraints(fs, xs)
    ref = ca.Function("ref", [xs, lam], [g, ca.jacobian(g, xs), ca.hessian(ca.dot(lam, g), xs)[0]])
    rng = np.random.default_rng(3)
    start = fs.start(prob.solve_pf(prob.current_x()))
    for _ in range(3):
        x = start + rng.normal(0, 0.05, der.n)
        mult = rng.normal(0, 1, der.n_g)
        g_ref, jac_ref, hess_ref = (np.asarray(ca.DM(v).full()) for v in ref(x, mult))
        np.testing.assert_allclose(der.constraints(x), g_ref.ravel(), rtol=1e-10, atol=1e-9)
        jac = np.zeros((der.n_g, der.n))
        np.add.at(jac, (der.jac.rows, der.jac.cols), der.jacobian(x))
        np.testing.assert_allclose(jac, jac_ref, rtol=1e-10, atol=1e-8)
        hess = np.zeros((der.n, der.n))
        np.add.at(hess, (der.hess.rows, der.hess.cols), der.hessian(x, mult))
        np.testing.assert_allclose(hess, np.triu(hess_ref), rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize(
    ("net", "control", "options"),
    [
        (lambda: load_case("microgrid9"), "q", RopfOptions()),
        (lambda: load_case("microgrid9"), "vm", RopfOptions()),
        (lambda: load_case("microgrid9-islanded"), "q", RopfOptions(slack_vm_free=True)),
        (lambda: load_case("ieee9"), "vm", RopfOptions()),
        (lambda: load_case("ieee9"), "vm", RopfOptions(vmin_pu=0.95, vmax_pu=1.05)),
        (inverter_feeder, "q", RopfOptions()),
    ],
    ids=["microgrid9-q", "microgrid9-vm", "islanded", "ieee9", "ieee9-tight", "case33bw-pv"],
)
def test_same_optimum_as_slsqp(net, control, options):
    prob = RopfProblem(compile_network(net()), control, options)
    dense = solve_ropf(prob, "exact", sparse=False)
    ipopt = solve_ropf(prob, "exact", sparse=True)
    assert dense.feasible and ipopt.feasible
    assert ipopt.loss_after_pu < ipopt.loss_before_pu
    assert ipopt.loss_after_pu == pytest.approx(dense.loss_after_pu, rel=1e-6)
    assert ipopt.pf_after.converged and ipopt.pf_after.max_mismatch_pu < 1e-8


@pytest.mark.slow
def test_same_optimum_as_slsqp_on_case118():
    prob = RopfProblem(compile_network(load_case("pandapower:case118")), "vm")
    dense = solve_ropf(prob, "exact", sparse=False)  # about 15 s
    ipopt = solve_ropf(prob, "exact")
    assert ipopt.feasible and dense.feasible
    assert ipopt.loss_after_pu == pytest.approx(dense.loss_after_pu, rel=1e-6)


def test_large_cases_go_to_the_sparse_solver(monkeypatch):
    calls = []
    real = sparse_module.solve_sparse
    monkeypatch.setattr(sparse_module, "solve_sparse", lambda p: calls.append(p) or real(p))
    small = RopfProblem(compile_network(load_case("ieee9")), "vm")
    solve_ropf(small, "exact")
    assert calls == []
    big = RopfProblem(compile_network(load_case("pandapower:case39")), "vm")
    assert big.compiled.n_bus >= SPARSE_FROM_BUSES
    res = solve_ropf(big, "exact")
    assert calls == [big]
    assert res.feasible and res.loss_after_pu < res.loss_before_pu


def test_case300_ends_no_worse_than_it_started():
    # case300 as shipped breaks its 0.94 pu floors and its generators' Q ranges, and generator
    # voltages alone cannot repair both (IPOPT reports local infeasibility): the answer must
    # still be a converged power flow that breaches less than the start.
    prob = RopfProblem(compile_network(load_case("pandapower:case300")), "vm")
    res = solve_sparse(prob)
    assert res.pf_after.converged and not res.feasible
    assert prob.breach(res.pf_after) < prob.breach(res.pf_before) / 2
    assert {v.kind for v in res.violations} <= {"voltage", "reactive"}


def test_stopped_early_keeps_the_better_point():
    prob = RopfProblem(compile_network(load_case("ieee9-q200")), "vm")
    res = solve_sparse(prob, max_iter=1)
    assert prob.breach(res.pf_after) <= prob.breach(res.pf_before)
    assert str(res.violations[0]).startswith("voltage limit at bus 9")


def simbench_with_inverters(code: str):
    """A SimBench grid whose PV units are inverters (rated 1.1 × sn_mva) under reactive control;
    (our network, the pandapower net without them, the PV table)."""
    import pandas as pd

    from gridledger.grid.loaders import from_pandapower

    simbench = pytest.importorskip("simbench")
    pnet = simbench.get_simbench_net(code)
    pv = pnet.sgen[pnet.sgen.in_service].copy()
    bare = copy.deepcopy(pnet)
    bare.sgen.drop(bare.sgen.index, inplace=True)
    net = from_pandapower(bare, name=code)
    rows = [
        {"name": f"PV{i}", "bus": int(r.bus), "role": "regulator", "p_mw": float(r.p_mw),
         "q_mvar": 0.0, "vm_pu": 1.0, "sn_mva": 1.1 * float(r.sn_mva), "pmin_mw": float(r.p_mw),
         "pmax_mw": float(r.p_mw), "qmin_mvar": -1.1 * float(r.sn_mva),
         "qmax_mvar": 1.1 * float(r.sn_mva), "slack_weight": 0.0}
        for i, r in pv.iterrows()
    ]  # fmt: skip
    gen = pd.concat([net.gen, table(rows, GEN_COLUMNS)], ignore_index=True)
    gen.loc[gen.role == "slack", ["qmin_mvar", "qmax_mvar", "sn_mva"]] = [-1e3, 1e3, 1e4]
    return net.with_tables(gen=gen), pnet, pv


def test_simbench_optimum_is_a_pandapower_power_flow():
    # The optimum's inverter set-points, put back on the SimBench grid's own PV units, give
    # pandapower's power flow the same voltages and the same power drawn from the grid.
    import pandapower as pp

    net, pnet, pv = simbench_with_inverters("1-MV-rural--0-sw")
    prob = RopfProblem(compile_network(net), "q")
    res = solve_ropf(prob, "exact", sparse=True)
    assert res.feasible and res.loss_after_pu < res.loss_before_pu
    q_mvar = res.x[: prob.reg.size] * prob.compiled.base_mva
    pnet.sgen.loc[pv.index, "q_mvar"] = q_mvar
    pp.runpp(pnet, calculate_voltage_angles=True, tolerance_mva=1e-10, lightsim2grid=False)
    pos = {int(b): k for k, b in enumerate(prob.compiled.bus_ids)}
    ids = [int(b) for b in pnet.res_bus.index if int(b) in pos]
    k = np.array([pos[b] for b in ids])
    np.testing.assert_allclose(
        res.pf_after.vm_pu[k], pnet.res_bus.vm_pu.loc[ids].to_numpy(), atol=1e-8
    )
    # The grid's intake (losses incl. transformer iron losses, which our loader keeps as bus
    # shunts) is the same too.
    slack = int(np.flatnonzero(prob.compiled.gen_role == "slack")[0])
    grid_mw = float(pnet.res_ext_grid.p_mw.sum())
    assert res.pf_after.gen_p_mw[slack] == pytest.approx(grid_mw, abs=1e-6)


def test_a_branch_limit_left_out_at_first_joins_when_the_answer_breaks_it(monkeypatch):
    # ieee9's branch 2 carries 42 % of its 150 MVA at the start and 44 % at the unconstrained
    # optimum: rated 64.5 MVA it starts inside its limit (98 %) and binds at the optimum. With
    # no limit watched at first, the first answer breaks it; it must join and the second answer
    # must be SLSQP's (which sees every limit from the start).
    net = load_case("ieee9")
    branch = net.branch.copy()
    branch.loc[branch.index[2], "rate_mva"] = 64.5
    prob = RopfProblem(compile_network(net.with_tables(branch=branch)), "vm")
    assert 0.9 < prob.solve_pf(prob.current_x()).loading_pct[2] / 100 < 1.0
    dense = solve_ropf(prob, "exact", sparse=False)
    assert dense.pf_after.loading_pct[2] == pytest.approx(100.0, abs=1e-4)
    rounds = []
    real = sparse_module._ipopt
    monkeypatch.setattr(
        sparse_module, "_ipopt", lambda fs, *a: rounds.append(fs.rated.tolist()) or real(fs, *a)
    )
    monkeypatch.setattr(sparse_module, "WATCH_LOADING", 1.5)
    late = solve_sparse(prob)
    assert rounds[0] == [] and 2 in rounds[-1] and len(rounds) >= 2
    assert late.feasible
    assert late.loss_after_pu == pytest.approx(dense.loss_after_pu, rel=1e-6)
    monkeypatch.setattr(sparse_module, "WATCH_LOADING", 0.5)
    rounds.clear()
    early = solve_sparse(prob)
    assert len(rounds) == 1 and 2 in rounds[0]
    assert early.loss_after_pu == pytest.approx(dense.loss_after_pu, rel=1e-6)
