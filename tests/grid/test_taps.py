"""On-load tap changers: the tap model against pandapower's at other positions (both sides),
taps as R-OPF controls checked against an exhaustive scan and against pandapower's power flow
and OPF at the positions found, and bad tap controls refused by name."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys

import numpy as np
import pandapower as pp
import pytest

from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.loaders import from_pandapower
from gridledger.grid.network import NetworkError
from gridledger.grid.powerflow import run_pf
from gridledger.grid.ropf import RopfOptions, RopfProblem, solve_ropf
from gridledger.grid.ropf.reference import pandapower_min_loss, to_pandapower
from gridledger.grid.ropf.tap_search import solve_ropf_with_taps
from gridledger.grid.taps import at_positions, select_taps, with_tap_changers


def _lv_feeder(tap_side: str = "hv", changer: str | None = "Ratio"):
    """A 20/0.4 kV substation (tap ±2 × 2.5 %) feeding four LV buses with loads and one PV."""
    net = pp.create_empty_network(name="lv feeder")
    mv = pp.create_bus(net, 20.0)
    lv = [pp.create_bus(net, 0.4) for _ in range(5)]
    pp.create_ext_grid(net, mv, vm_pu=1.0)
    pp.create_transformer(net, mv, lv[0], "0.4 MVA 20/0.4 kV", name="T1")
    net.trafo["tap_side"] = tap_side
    net.trafo["tap_changer_type"] = changer
    for a, b in itertools.pairwise(lv):
        pp.create_line(net, a, b, 0.15, "NAYY 4x150 SE")
    for b in lv[1:]:
        pp.create_load(net, b, p_mw=0.05, q_mvar=0.015)
    pp.create_sgen(net, lv[3], p_mw=0.03, sn_mva=0.05, name="PV3")
    return net


def _pp_loss(net) -> float:
    return float(net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum())


@pytest.mark.parametrize("side", ["hv", "lv"])
def test_moving_a_tap_is_pandapowers_transformer_at_that_position(side) -> None:
    base = from_pandapower(_lv_feeder(side))
    assert base.tap.to_dict("records") == [
        {"branch": "T1", "tap_pos": 0, "tap_min": -2, "tap_max": 2, "tap_neutral": 0,
         "step_percent": 2.5, "side": "from" if side == "hv" else "to"}
    ]  # fmt: skip
    for pos in (-2, 1, 2):
        moved = run_pf(at_positions(base, {"T1": pos}), tol=1e-11)
        ref = _lv_feeder(side)
        ref.trafo["tap_pos"] = pos
        pp.runpp(ref, calculate_voltage_angles=True, tolerance_mva=1e-11)
        np.testing.assert_allclose(moved.vm_pu[:6], ref.res_bus.vm_pu.loc[range(6)], atol=1e-8)
        assert moved.total_loss_mw == pytest.approx(_pp_loss(ref), abs=1e-9)
        # the same as pandapower's own conversion at that position, bit for bit in practice
        direct = run_pf(from_pandapower(ref), tol=1e-11)
        np.testing.assert_allclose(moved.vm_pu, direct.vm_pu, atol=1e-12)
    # and the tap does something: +2 steps on the HV side (or -2 on the LV side) lower the LV
    lowered = run_pf(at_positions(base, {"T1": 2 if side == "hv" else -2}), tol=1e-11)
    assert run_pf(base).vm_pu[5] - lowered.vm_pu[5] > 0.04


def test_tap_controls_that_cannot_move_are_refused_by_name() -> None:
    # pandapower ignores a tap without tap_changer_type (SimBench's case): not a control
    unset = from_pandapower(_lv_feeder(changer=None))
    assert unset.tap.empty
    with pytest.raises(NetworkError, match="'T1': the transformer has no tap-changer data"):
        select_taps(unset, ["T1"])
    with pytest.raises(NetworkError, match="no transformer has tap-changer data"):
        select_taps(unset, "all")
    net = load_case("ieee9-taps")
    with pytest.raises(NetworkError, match="tap control '4-5': the branch is a line"):
        select_taps(net, ["1-4", "4-5"])
    with pytest.raises(NetworkError, match="tap control 'T9': no branch of that name"):
        select_taps(net, "T9")
    with pytest.raises(NetworkError, match=r"tap position 9 of '1-4' outside \[-8, 8\]"):
        at_positions(net, {"1-4": 9})
    # a tap table that does not fit its branch is refused when the network is checked
    bad = net.with_tables(tap=net.tap.assign(tap_pos=[0, 9, 0]))
    with pytest.raises(NetworkError, match=r"branch '8-2': tap_pos 9 outside \[tap_min"):
        compile_network(bad)
    on_line = net.with_tables(tap=net.tap.assign(branch=["1-4", "4-5", "3-6"]))
    with pytest.raises(NetworkError, match="'4-5': the branch is a line, not a transformer"):
        compile_network(on_line)
    with pytest.raises(ValueError, match="use search='local'"):
        solve_ropf_with_taps(
            with_tap_changers(load_case("ieee9"), ["1-4", "8-2", "3-6"], tap_min=-20,
                              tap_max=20, step_percent=0.5),
            search="exhaustive",
        )  # fmt: skip


def test_cli_names_a_tap_control_without_tap_data() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gridledger.cli", "ropf", "ieee9", "--taps", "1-4"],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "tap control '1-4': the branch is a line, not a transformer" in run.stderr
    assert "Traceback" not in run.stderr


def test_ieee9_taps_lower_the_optimum_and_pandapower_agrees() -> None:
    """Seed 002's three taps with the generator voltages: 4.66 MW with the taps fixed, 4.01 MW
    with them moving; pandapower's OPF with the taps fixed at the positions found reaches the
    same optimum, and its power flow at our set-points the same losses and voltages."""
    net = load_case("ieee9-taps")
    res = solve_ropf_with_taps(net, "vm")
    assert res.result.feasible and res.fixed.feasible
    assert res.fixed.loss_after_pu * 100 == pytest.approx(4.6591, abs=1e-4)  # no taps moved
    assert res.result.loss_after_pu * 100 < res.fixed.loss_after_pu * 100 - 0.5
    assert res.positions != res.start_positions
    pp_loss, pp_vm = pandapower_min_loss(res.network, "vm")
    assert res.result.loss_after_pu * 100 == pytest.approx(pp_loss, rel=1e-6)
    np.testing.assert_allclose(res.result.x, pp_vm, atol=1e-4)
    check = to_pandapower(res.network, "vm")
    check.gen["vm_pu"] = res.result.x
    pp.runpp(check, calculate_voltage_angles=True, tolerance_mva=1e-10)
    assert _pp_loss(check) == pytest.approx(res.result.pf_after.total_loss_mw, abs=1e-6)
    np.testing.assert_allclose(check.res_bus.vm_pu, res.result.pf_after.vm_pu, atol=1e-8)
    # no single step of one tap from the answer is better (a discrete local optimum)
    for branch, pos in res.positions.items():
        for step in (-1, 1):
            if -8 <= pos + step <= 8:
                near = at_positions(res.network, {branch: pos + step})
                other = solve_ropf(RopfProblem(compile_network(near), "vm"), "exact")
                assert other.loss_after_pu >= res.result.loss_after_pu or not other.feasible


@pytest.mark.slow
def test_local_tap_search_finds_the_exhaustive_optimum() -> None:
    """ieee9-q200 (bus 9 at 0.85 pu: infeasible with the taps fixed) and ieee9 with ±2 steps of
    5 %: the pattern search ends where the scan of all 125 tap vectors does."""
    for case in ("ieee9", "ieee9-q200"):
        net = with_tap_changers(load_case(case), ["1-4", "8-2", "3-6"], tap_min=-2, tap_max=2,
                                step_percent=5.0)  # fmt: skip
        scan = solve_ropf_with_taps(net, "vm", search="exhaustive")
        assert scan.evaluations == 125
        # the generator voltage behind a tap can undo it: several tap vectors may share the
        # optimum, so the losses are compared, not the positions
        for relax in (True, False):
            local = solve_ropf_with_taps(net, "vm", relax=relax)
            assert local.evaluations < 40
            assert local.result.loss_after_pu == pytest.approx(scan.result.loss_after_pu, rel=1e-9)
            assert local.result.feasible
        if case == "ieee9-q200":
            assert not local.fixed.feasible  # the taps make the case feasible
            assert "bus 9" in str(local.fixed.violations[0])


@pytest.mark.slow
def test_taps_on_a_distribution_grid_use_the_sparse_solver_and_match_pandapower() -> None:
    """129-bus SimBench LV grid (IPOPT from 35 buses on): its transformer's tap and the PV
    inverters' Q as controls; the answer is the scan's and pandapower's power flow agrees."""
    import simbench

    sb = simbench.get_simbench_net("1-LV-rural3--0-sw")
    sb.trafo["tap_changer_type"] = "Ratio"
    sb.sgen["p_mw"] *= 0.8  # SimBench's PV runs at its rating: leave the inverters Q room
    net = from_pandapower(sb)
    options = RopfOptions(vmin_pu=0.96, vmax_pu=1.04)
    local = solve_ropf_with_taps(net, "q", options=options)
    scan = solve_ropf_with_taps(net, "q", options=options, search="exhaustive")
    assert scan.evaluations == 5
    assert local.positions == scan.positions
    assert local.result.feasible
    # one step down is best; two would break the voltage band, the inverters then pay for it
    assert local.positions == {"MV1.101-LV3.101-Trafo": -1}
    assert local.result.loss_after_pu < 0.97 * local.fixed.loss_after_pu
    check = copy.deepcopy(sb)
    check.trafo["tap_pos"] = local.positions["MV1.101-LV3.101-Trafo"]
    q = local.result.pf_after.gen_q_mvar
    names = list(local.network.gen["name"])
    for i in check.sgen.index:
        check.sgen.at[i, "q_mvar"] = q[names.index(str(check.sgen.at[i, "name"]))]
    pp.runpp(check, calculate_voltage_angles=True, tolerance_mva=1e-11)
    assert _pp_loss(check) == pytest.approx(local.result.pf_after.total_loss_mw, abs=1e-6)


def test_ropf_cli_with_taps_reports_fixed_and_moved() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gridledger.cli", "ropf", "ieee9-taps", "--taps", "1-4,3-6",
         "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = json.loads(run.stdout)
    assert set(out["taps"]["positions"]) == {"1-4", "3-6"}
    assert out["setpoints"]["1-4:tap_pos"] == out["taps"]["positions"]["1-4"]
    assert out["loss_after_mw"] < out["taps"]["loss_fixed_taps_mw"] < out["loss_before_mw"]


def test_relaxation_derivatives_are_the_finite_differences() -> None:
    """The relaxed R-OPF's tap columns (and the rest) of the balance and branch-current
    Jacobians against central differences, at a point with the taps between steps."""
    from gridledger.grid.ropf.tap_relax import _TapSpace, relaxed_positions

    net = load_case("ieee9-q200-taps")
    prob = RopfProblem(compile_network(net), "vm")
    names = ["1-4", "8-2", "3-6"]
    space = _TapSpace(prob, net, names)
    start = space.start(prob.solve_pf(prob.current_x()))
    x = np.concatenate([start[:-1], [-3.3, 2.1, 1.7], start[-1:]])
    x = x + np.random.default_rng(0).normal(0, 0.01, x.size)
    for fun, jac in ((space.balance_t, space.balance_jac_t), (space.limits_t, space.limits_jac_t)):
        numeric = np.column_stack([(fun(x + h) - fun(x - h)) / 2e-7 for h in np.eye(x.size) * 1e-7])
        np.testing.assert_allclose(jac(x), numeric, atol=1e-6 * np.abs(numeric).max())
    # the relaxed optimum is within the ranges and rounds to a vector the search starts from
    relaxed = relaxed_positions(prob, net, names)
    assert relaxed is not None and all(-8 <= v <= 8 for v in relaxed.values())
    # no relaxation for an LV-side changer or a large grid: the search starts where it is
    lv = net.with_tables(tap=net.tap.assign(side=["from", "to", "from"]))
    assert relaxed_positions(RopfProblem(compile_network(lv), "vm"), lv, names) is None
