"""Network validation: every fault gets a NetworkError naming the element and the fault."""

from __future__ import annotations

import numpy as np
import pytest

from gridledger.grid.cases import load_case
from gridledger.grid.compiled import BUS_PQ, BUS_PV, BUS_REF, compile_network
from gridledger.grid.network import (
    GEN_COLUMNS,
    LOAD_COLUMNS,
    NetworkError,
    ohm_to_pu,
    table,
    validate,
)


@pytest.fixture(scope="module")
def mg():
    return load_case("microgrid9")


def _edit(net, name, index, column, value):
    frame = getattr(net, name).copy()
    frame.loc[index, column] = value
    return net.with_tables(**{name: frame})


@pytest.mark.parametrize(
    ("table_name", "index", "column", "value", "message"),
    [
        ("branch", 0, "to_bus", 42, r"branch 0 \(1-5.*\) connects to unknown bus 42"),
        ("branch", 0, "to_bus", 1, "loops bus 1"),
        ("branch", 1, "r_pu", -0.1, "negative r_pu"),
        ("branch", 2, "rate_mva", -1.0, "negative ratio or rate_mva"),
        ("gen", 1, "bus", 99, r"generator 1 \(DG2\) connects to unknown bus 99"),
        ("gen", 1, "role", "boss", "unknown role 'boss'"),
        ("gen", 2, "sn_mva", 0.0, "needs a positive rating sn_mva"),
        ("gen", 2, "vm_pu", 0.0, "has vm_pu=0.0"),
        ("gen", 3, "qmin_mvar", 5.0, "min > max limits"),
        ("gen", 3, "slack_weight", -1.0, "negative weight"),
        ("gen", 1, "p_mw", np.inf, "generator 1 has non-finite p_mw"),
        ("load", 0, "bus", 10, r"load 0 \(L2\) connects to unknown bus 10"),
        ("load", 0, "q_mvar", np.nan, "load 0 has non-finite q_mvar"),
        ("bus", 3, "vn_kv", 0.0, "bus 3 has non-positive vn_kv"),
        ("bus", 4, "vmin_pu", 1.2, "bus 4 voltage limits"),
    ],
)
def test_each_fault_is_named(mg, table_name, index, column, value, message) -> None:
    bad = _edit(mg, table_name, index, column, value)
    with pytest.raises(NetworkError, match=message):
        validate(bad)
    with pytest.raises(NetworkError, match=message):
        compile_network(bad)
    validate(mg)  # the original is untouched


def test_zero_impedance_branch(mg) -> None:
    bad = _edit(_edit(mg, "branch", 3, "r_pu", 0.0), "branch", 3, "x_pu", 0.0)
    with pytest.raises(NetworkError, match="zero impedance"):
        validate(bad)


def test_no_slack(mg) -> None:
    bad = _edit(mg, "gen", 0, "role", "pq")
    with pytest.raises(NetworkError, match="no slack generator"):
        validate(bad)


def test_island_without_slack(mg) -> None:
    # Cutting line 1-2 leaves buses 2, 8, 9 without the grid.
    bad = mg.with_tables(branch=mg.branch.drop(index=2).reset_index(drop=True))
    with pytest.raises(NetworkError, match=r"island of buses \[2, 8, 9\] has no slack"):
        validate(bad)


def test_islands_each_with_slack_are_refused(mg) -> None:
    gen = mg.gen.copy()
    gen.loc[1, "role"] = "slack"  # DG2 could supply the cut-off island
    bad = mg.with_tables(branch=mg.branch.drop(index=2).reset_index(drop=True), gen=gen)
    with pytest.raises(NetworkError, match="2 islands; solve each island"):
        validate(bad)


def test_duplicate_bus_and_svc_limits(mg) -> None:
    bus = mg.bus.copy()
    bus.index = [1, 2, 3, 4, 5, 6, 7, 8, 8]
    with pytest.raises(NetworkError, match=r"duplicate bus id\(s\) \[8\]"):
        validate(mg.with_tables(bus=bus))
    svc = table(
        [{"name": "S9", "bus": 9, "qmin_mvar": 1.0, "qmax_mvar": -1.0, "q_mvar": 0.0}],
        {"name": str, "bus": int, "qmin_mvar": float, "qmax_mvar": float, "q_mvar": float},
    )
    with pytest.raises(NetworkError, match=r"svc 0 \(S9\) has qmin_mvar > qmax_mvar"):
        validate(mg.with_tables(svc=svc))


def test_table_rejects_unknown_and_missing_columns() -> None:
    with pytest.raises(NetworkError, match=r"unknown column\(s\) \['pmw'\]"):
        table([{"name": "L", "bus": 1, "pmw": 1.0, "q_mvar": 0.0}], LOAD_COLUMNS)
    with pytest.raises(NetworkError, match=r"missing column\(s\) \['q_mvar'\]"):
        table([{"name": "L", "bus": 1, "p_mw": 1.0}], LOAD_COLUMNS)
    assert list(table([], GEN_COLUMNS).columns) == list(GEN_COLUMNS)


def test_ohm_to_pu_on_microgrid_base() -> None:
    # 20 kV, 1 MVA: Z_base = 400 ohm
    assert ohm_to_pu(0.6076, 0.098, 20.0, 1.0) == pytest.approx((0.6076 / 400, 0.098 / 400))


def test_compiled_bus_types_and_per_unit(mg) -> None:
    c = compile_network(mg)
    assert c.bus_type[0] == BUS_REF and c.ref == 0
    assert list(c.bus_type[1:4]) == [BUS_PV] * 3
    assert (c.bus_type[4:] == BUS_PQ).all()
    assert c.load_p[4] == pytest.approx(0.6464)  # bus 5: 646.4 kW on 1 MVA
    # Ybus row sums vanish without shunts or charging
    np.testing.assert_allclose(np.asarray(c.ybus.sum(axis=1)).ravel(), 0, atol=1e-9)


def test_networks_are_values(mg) -> None:
    other = _edit(mg, "load", 0, "p_mw", 9.0)
    assert mg.load.p_mw.iloc[0] != 9.0
    assert other.load.p_mw.iloc[0] == 9.0
