"""Shipped cases: the seeds' numbers and the stated assumptions, checked one by one."""

from __future__ import annotations

import math

import numpy as np
import pandapower.networks as pn
import pytest

from gridledger.grid.cases import UnknownCaseError, list_cases, load_case
from gridledger.grid.compiled import compile_network
from gridledger.grid.loaders import CaseFormatError, from_pandapower
from gridledger.grid.network import NetworkError
from gridledger.grid.powerflow import run_pf

SHIPPED = [
    "microgrid9",
    "microgrid9-islanded",
    "ieee9",
    "ieee9-q200",
    "ieee9-taps",
    "ieee9-q200-taps",
    "case33bw",
    "sce56",
]

# seed 000 Table I (ohm) and Table II (kW, kVAr)
TABLE_I = {
    (1, 5): (0.6076, 0.098),
    (1, 7): (0.868, 0.14),
    (1, 2): (0.4487, 0.091),
    (2, 8): (0.641, 0.13),
    (3, 6): (1.302, 0.21),
    (5, 3): (0.868, 0.14),
    (7, 4): (1.302, 0.21),
    (8, 9): (0.9615, 0.195),
}
CASE1_P_KW = {2: 764.3, 3: 254.4, 4: 563.4, 5: 646.4, 6: 817.7, 7: 696.7, 8: 319.3, 9: 764.1}
CASE2_P_KW = {1: 1062.5, 5: 646.4, 6: 817.7, 7: 696.7, 8: 319.3, 9: 764.1}
CASE2_Q_KVAR = {1: 534.5, 5: 370.55, 6: 437.85, 7: 458.406, 8: 167.939, 9: 414.908}


def test_list_cases_names_and_descriptions() -> None:
    cases = list_cases()
    assert list(cases) == SHIPPED
    assert all(isinstance(d, str) and 10 < len(d) <= 100 for d in cases.values())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_case_solves(name: str) -> None:
    net = load_case(name)
    assert net.name == name and net.notes
    assert run_pf(net).converged


def test_unknown_case_lists_the_known_ones() -> None:
    with pytest.raises(UnknownCaseError, match="unknown case 'ieee10'; known cases: microgrid9,"):
        load_case("ieee10")
    with pytest.raises(CaseFormatError, match="no such case file"):
        load_case("/nonexistent/case.m")
    with pytest.raises(NetworkError, match="pandapower has no network function 'case7'"):
        load_case("pandapower:case7")


def test_load_case_returns_independent_copies() -> None:
    a = load_case("microgrid9")
    a.load.loc[0, "p_mw"] = 99.0
    assert load_case("microgrid9").load.p_mw.iloc[0] == pytest.approx(0.7643)


def test_microgrid_lines_loads_and_base() -> None:
    net = load_case("microgrid9")
    assert net.base_mva == 1.0 and (net.bus.vn_kv == 20.0).all()
    z_base = 20.0**2 / 1.0
    got = {
        (int(r.from_bus), int(r.to_bus)): (r.r_pu * z_base, r.x_pu * z_base)
        for r in net.branch.itertuples()
    }
    assert set(got) == set(TABLE_I)
    for key, ohm in TABLE_I.items():
        assert got[key] == pytest.approx(ohm)
    loads = {int(r.bus): r.p_mw * 1000 for r in net.load.itertuples()}
    assert loads == pytest.approx(CASE1_P_KW)
    # ratings: sqrt(3) * 20 kV * ampacity (130 A for 35 mm2 Al, 155 A for 50 mm2 Al)
    rate = dict(
        zip(
            zip(net.branch.from_bus, net.branch.to_bus, strict=True),
            net.branch.rate_mva,
            strict=True,
        )
    )
    assert rate[(1, 5)] == pytest.approx(math.sqrt(3) * 20 * 0.130)
    assert rate[(1, 2)] == pytest.approx(math.sqrt(3) * 20 * 0.155)


def test_microgrid_case1_generators() -> None:
    net = load_case("microgrid9")
    gen = net.gen.set_index("name")
    assert gen.loc["GRID", "role"] == "slack" and gen.loc["GRID", "bus"] == 1
    assert gen.loc["GRID", "vm_pu"] == 1.0
    for dg, bus in (("DG2", 2), ("DG3", 3), ("DG4", 4)):
        assert gen.loc[dg, "role"] == "regulator" and gen.loc[dg, "bus"] == bus
        assert gen.loc[dg, "sn_mva"] == 1.5
        # "satisfy the active power demand of the loads fed by the node"
        assert gen.loc[dg, "p_mw"] * 1000 == pytest.approx(CASE1_P_KW[bus])
        assert gen.loc[dg, "q_mvar"] == 0.0
    res = run_pf(net)
    # the DGs' own buses are balanced in P: only the other loads and losses come from the grid
    other = sum(p for b, p in CASE1_P_KW.items() if b not in (2, 3, 4)) / 1000
    assert res.gen_p_mw[0] == pytest.approx(other + res.loss_mw, abs=1e-9)
    assert (res.loading_pct > 0).all() and (res.loading_pct < 100).all()
    assert ((res.vm_pu > 0.95) & (res.vm_pu <= 1.0 + 1e-12)).all()


def test_microgrid_islanded_generators_and_reactive_sharing() -> None:
    net = load_case("microgrid9-islanded")
    loads_p = {int(r.bus): r.p_mw * 1000 for r in net.load.itertuples()}
    loads_q = {int(r.bus): r.q_mvar * 1000 for r in net.load.itertuples()}
    assert loads_p == pytest.approx(CASE2_P_KW) and loads_q == pytest.approx(CASE2_Q_KVAR)
    gen = net.gen.set_index("name")
    assert list(gen.sn_mva) == [2.5, 2.5, 2.0]
    assert list(gen.role) == ["slack", "regulator", "regulator"]
    assert list(gen.slack_weight) == [2.5, 2.5, 2.0]
    res = run_pf(net, regulator_control="q")
    # initial state: Q shared in proportion to rating, P likewise (distributed slack)
    np.testing.assert_allclose(res.gen_q_mvar / gen.sn_mva.to_numpy(), res.gen_q_mvar[0] / 2.5)
    np.testing.assert_allclose(res.gen_p_mw / gen.sn_mva.to_numpy(), res.gen_p_mw[0] / 2.5)
    total_q = sum(CASE2_Q_KVAR.values()) / 1000
    assert res.gen_q_mvar.sum() > total_q  # loads plus the lines' reactive losses
    c = compile_network(net)
    assert c.ref == 1  # DG2's bus is the angle reference


def test_ieee9_base_loss_is_seed_002s_4_95_mw() -> None:
    res = run_pf(load_case("ieee9"))
    assert res.loss_mw == pytest.approx(4.95, abs=0.01)
    assert res.gen_p_mw[1:] == pytest.approx([163.0, 85.0])


def test_ieee9_matches_pandapower_case9_admittance() -> None:
    ours = compile_network(load_case("ieee9"))
    theirs = compile_network(from_pandapower(pn.case9()))
    np.testing.assert_allclose(ours.ybus.toarray(), theirs.ybus.toarray(), atol=1e-12)
    np.testing.assert_allclose(ours.load_p, theirs.load_p)
    np.testing.assert_allclose(ours.load_q, theirs.load_q)
    np.testing.assert_allclose(ours.gen_p[1:], theirs.gen_p[1:])


def test_ieee9_q200_changes_only_bus_9_reactive_load() -> None:
    base, mod = load_case("ieee9"), load_case("ieee9-q200")
    diff = base.load.compare(mod.load)
    assert list(diff.index) == [2] and mod.load.loc[2, "bus"] == 9
    assert mod.load.loc[2, "q_mvar"] == 200.0 and base.load.loc[2, "q_mvar"] == 50.0
    assert run_pf(mod).loss_mw > run_pf(base).loss_mw


def test_case33bw_baran_wu_figures() -> None:
    net = load_case("case33bw")
    assert list(net.bus.index) == list(range(1, 34))
    assert net.load.p_mw.sum() == pytest.approx(3.715) and net.load.q_mvar.sum() == pytest.approx(
        2.3
    )
    res = run_pf(net)
    # Baran & Wu's published base-case loss: 202.7 kW; lowest voltage 0.9131 pu at bus 18
    assert res.loss_mw * 1000 == pytest.approx(202.7, abs=0.1)
    assert res.vm_pu.min() == pytest.approx(0.9131, abs=1e-4)
    assert res.bus_ids[np.argmin(res.vm_pu)] == 18


def test_sce56_from_packaged_csv() -> None:
    net = load_case("sce56")
    assert len(net.bus) == 56 and len(net.branch) == 55 and len(net.load) == 42
    assert net.base_mva == 1.0 and (net.bus.vn_kv == 12.0).all()
    tan_phi = math.tan(math.acos(0.9))
    np.testing.assert_allclose(net.load.q_mvar / net.load.p_mw, tan_phi)
    assert sorted(net.shunt.bus) == [19, 21, 30, 53] and (net.shunt.b_mvar == 0.6).all()
    assert list(net.gen.role) == ["slack"] and net.gen.bus.iloc[0] == 1
    res = run_pf(net)
    assert res.converged and res.vm_pu.min() > 0.9


def test_pandapower_case_by_name() -> None:
    net = load_case("pandapower:case118")
    assert net.name == "pandapower:case118" and len(net.bus) == 118
    assert run_pf(net).converged
