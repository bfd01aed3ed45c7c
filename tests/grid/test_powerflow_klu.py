"""run_pf on lightsim2grid's KLU Newton: the same answers as our scipy Newton and as pandapower."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

import gridledger.grid.powerflow as powerflow
from gridledger.grid.cases import load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.loaders import from_pandapower
from gridledger.grid.pf_setup import make_setup
from gridledger.grid.powerflow import run_pf


def both_backends(c, control, **kwargs):
    with_klu = run_pf(c, regulator_control=control, check=False, **kwargs)
    powerflow.USE_LIGHTSIM2GRID = False
    try:
        scipy_only = run_pf(c, regulator_control=control, check=False, **kwargs)
    finally:
        powerflow.USE_LIGHTSIM2GRID = True
    return with_klu, scipy_only


@pytest.mark.parametrize(
    ("case", "control", "fits"),
    [
        ("ieee9", "vm", True),
        ("microgrid9", "q", True),
        ("microgrid9-islanded", "vm", True),  # distributed slack over voltage-holding DGs
        ("microgrid9-islanded", "q", False),  # DGs sharing the slack are PQ buses: scipy path
        ("case33bw", "vm", True),
        ("pandapower:case300", "vm", True),
    ],
)
def test_klu_backend_gives_the_scipy_newton_result(case, control, fits):
    c = compile_network(load_case(case))
    assert (powerflow._klu_backend(c, make_setup(c, control)) is not None) == fits
    klu, ref = both_backends(c, control)
    assert klu.converged and ref.converged
    np.testing.assert_allclose(klu.v_complex, ref.v_complex, atol=1e-9)
    assert klu.slack_mw == pytest.approx(ref.slack_mw, abs=1e-6)
    np.testing.assert_allclose(klu.gen_q_mvar, ref.gen_q_mvar, atol=1e-6)
    assert klu.iterations == ref.iterations
    assert klu.max_mismatch_pu <= 1e-8


@pytest.fixture(scope="module")
def simbench_mv():
    simbench = pytest.importorskip("simbench")
    warnings.filterwarnings("ignore")
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    return simbench.get_simbench_net("1-MV-rural--0-sw")


@pytest.mark.parametrize("which", ["case300", "simbench"])
def test_klu_backend_matches_pandapower(which, simbench_mv):
    net = pn.case300() if which == "case300" else simbench_mv
    pp.runpp(net, calculate_voltage_angles=True, tolerance_mva=1e-10, lightsim2grid=False)
    c = compile_network(from_pandapower(net))
    assert powerflow._klu_backend(c, make_setup(c, "vm")) is not None
    res = run_pf(c)
    # Buses fused by closed switches keep the smallest id: compare the buses that kept theirs.
    pos = {int(b): k for k, b in enumerate(c.bus_ids)}
    ids = [int(b) for b in net.res_bus.index if int(b) in pos]
    assert len(ids) > 0.9 * len(net.res_bus)  # the rest: fused buses, transformer star points
    k = np.array([pos[b] for b in ids])
    np.testing.assert_allclose(res.vm_pu[k], net.res_bus.vm_pu.loc[ids].to_numpy(), atol=1e-8)
    np.testing.assert_allclose(res.va_deg[k], net.res_bus.va_degree.loc[ids].to_numpy(), atol=1e-6)


def test_a_diverging_case_reports_the_same_failure_with_or_without_klu():
    net = load_case("ieee9")
    load = net.load.copy()
    load[["p_mw", "q_mvar"]] *= 12.0  # far beyond the loadability limit
    c = compile_network(net.with_tables(load=load))
    klu, ref = both_backends(c, "vm")
    assert not klu.converged and not ref.converged
    assert klu.iterations == ref.iterations
    assert klu.max_mismatch_pu == pytest.approx(ref.max_mismatch_pu)
