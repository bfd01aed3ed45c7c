"""MATPOWER .m parsing and pandapower conversion, including malformed input."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from gridledger.grid.cases import load_case
from gridledger.grid.loaders import (
    CaseFormatError,
    from_pandapower,
    load_matpower,
    network_from_ppc,
    parse_matpower,
)
from gridledger.grid.network import NetworkError
from gridledger.grid.powerflow import run_pf

THREE_BUS = """function mpc = tiny
% a 3-bus case exercising the parser: comments, continuation, Inf, commas, out-of-service rows
mpc.version = '2';
mpc.baseMVA = 10;   % small base
mpc.bus = [
  1 3 0   0   0 0 1 1 0 20 1 1.05 0.95;
  2 1 4.0 1.5 0 0.5 1 1 0 20 1 1.05 0.95;  % capacitor 0.5 MVAr
  3 1 2.0, 0.5, 0.1 0 1 1 0 20 1 1.05 0.95;
  4 4 0   0   0 0 1 1 0 20 1 1.05 0.95;
];
mpc.gen = [
  1 0 0 Inf -Inf 1.02 100 1 8 0;
  3 1 0 2   -2   1.0  100 0 2 0;
];
mpc.branch = [
  1 2 0.01 0.03 0.002 12 0 0 0 0 1 -360 360;
  2 3 0.02 0.04 0.0 6 0 0 0.98 0 1 -360 360;
  1 3 0.02 ...
      0.05 0 0 0 0 0 0 0 -360 360;
  3 4 0.02 0.05 0 0 0 0 0 0 1 -360 360;
];
mpc.bus_name = {
  'one';
  'two';
};
"""


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.m"
    path.write_text(THREE_BUS)
    return path


def test_parser_reads_the_format(tiny: Path) -> None:
    ppc = parse_matpower(tiny.read_text())
    assert ppc["version"] == "2" and ppc["baseMVA"] == 10.0
    assert ppc["bus"].shape == (4, 13) and ppc["branch"].shape == (4, 13)
    assert ppc["bus"][2, 4] == 0.1  # commas separate like spaces
    assert math.isinf(ppc["gen"][0, 3]) and ppc["gen"][0, 4] == -math.inf
    assert ppc["branch"][2, 10] == 0  # the continued row is one row
    assert "bus_name" not in ppc


def test_matpower_network_drops_out_of_service_and_isolated(tiny: Path) -> None:
    net = load_case(str(tiny))
    assert list(net.bus.index) == [1, 2, 3]  # bus 4 is isolated (type 4)
    assert [
        (int(f), int(t)) for f, t in zip(net.branch.from_bus, net.branch.to_bus, strict=True)
    ] == [
        (1, 2),
        (2, 3),
    ]
    assert list(net.branch.kind) == ["line", "transformer"]
    assert len(net.gen) == 1 and net.gen.role.iloc[0] == "slack"  # gen 2 is out of service
    assert net.shunt[["bus", "g_mw", "b_mvar"]].values.tolist() == [[2, 0.0, 0.5], [3, 0.1, 0.0]]
    assert net.load.p_mw.tolist() == [4.0, 2.0]
    # infinite Q limits become large finite ones; rating falls back to mBase
    assert net.gen.sn_mva.iloc[0] == 100.0
    res = run_pf(net)
    assert res.converged and res.vm_pu[0] == pytest.approx(1.02)
    # balance: slack P = loads + shunt conductance + losses
    g_mw = 0.1 * res.vm_pu[2] ** 2
    assert res.gen_p_mw[0] == pytest.approx(6.0 + g_mw + res.loss_mw, abs=1e-9)


def test_shipped_case9_file_matches_pandapower_results() -> None:
    net = pn.case9()
    pp.runpp(net, tolerance_mva=1e-11)
    ours = run_pf(load_case("ieee9"), tol=1e-11)
    np.testing.assert_allclose(ours.vm_pu, net.res_bus.vm_pu, atol=1e-9)
    np.testing.assert_allclose(ours.va_deg, net.res_bus.va_degree, atol=1e-7)
    # generator rating: the circle around the box limits, sqrt(Pmax^2 + Qmax^2)
    sn = load_case("ieee9").gen.sn_mva.tolist()
    assert sn == pytest.approx([math.hypot(250, 300), math.hypot(300, 300), math.hypot(270, 300)])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mpc.baseMVA = 100;", r"no mpc\.bus found"),
        (THREE_BUS.replace("0.002 12", "0.002 twelve"), "cannot read 'twelve' as a number"),
        (THREE_BUS.replace("2 1 4.0 1.5 0 0.5", "2 1 4.0 1.5 0"), "row 2 has 12 columns"),
        (THREE_BUS.replace("mpc.baseMVA = 10;", "mpc.baseMVA = ten;"), "is not a number"),
    ],
)
def test_malformed_matpower_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.m"
    path.write_text(text)
    with pytest.raises(CaseFormatError, match=message):
        load_matpower(path)


def test_branch_to_unknown_bus_in_matpower(tmp_path: Path) -> None:
    path = tmp_path / "bad.m"
    path.write_text(THREE_BUS.replace("2 3 0.02 0.04", "2 7 0.02 0.04"))
    with pytest.raises(NetworkError, match="branch 1 refers to unknown bus 7"):
        load_matpower(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bus", lambda ppc: ppc["bus"][:, :12], "bus matrix needs 13 columns"),
        ("gen", lambda ppc: ppc["gen"][:, :9], "gen matrix needs at least 10 columns"),
        ("branch", lambda ppc: ppc["branch"][:, :10], "branch matrix needs 11 columns"),
        ("gen_sn_mva", lambda ppc: [1.0], "mpc.gen_sn_mva has 1 values for 2 generators"),
        ("svc", lambda ppc: np.ones((1, 3)), r"svc matrix needs 4 columns \(bus qmin qmax q\)"),
        ("svc", lambda ppc: np.array([[9.0, -1.0, 1.0, 0.0]]), "svc refers to unknown bus 9"),
    ],
)
def test_malformed_ppc_is_refused(tiny: Path, field: str, value: Any, message: str) -> None:
    ppc = parse_matpower(tiny.read_text())
    ppc[field] = value(ppc)
    with pytest.raises((CaseFormatError, NetworkError), match=f"tiny: {message}"):
        network_from_ppc(ppc, "tiny")


def test_ppc_buses_renamed_and_dead_elements_dropped(tiny: Path) -> None:
    ppc = parse_matpower(tiny.read_text())
    with pytest.raises(CaseFormatError, match="tiny: 3 bus ids for 4 buses"):
        network_from_ppc(ppc, "tiny", bus_ids=np.array([10, 20, 30]))
    net = network_from_ppc(ppc, "tiny", bus_ids=np.array([10, 20, 30, 40]))
    # bus 4 is isolated (type 4); branch 1-3 and generator 2 are out of service; branch 3-4
    # leads to the isolated bus
    assert net.bus.index.tolist() == [10, 20, 30]
    assert net.bus.name.tolist() == ["10", "20", "30"]
    assert net.branch[["from_bus", "to_bus"]].to_numpy().tolist() == [[10, 20], [20, 30]]
    assert net.branch.kind.tolist() == ["line", "transformer"]  # 2-3 has a 0.98 tap
    assert net.gen.name.tolist() == ["G1@10"] and net.gen.role.tolist() == ["slack"]
    assert net.load.set_index("bus").p_mw.to_dict() == {20: 4.0, 30: 2.0}
    assert net.shunt.set_index("bus")[["g_mw", "b_mvar"]].to_numpy().tolist() == [
        [0.0, 0.5],
        [0.1, 0.0],
    ]


def test_missing_matpower_file() -> None:
    with pytest.raises(CaseFormatError, match="cannot read MATPOWER file"):
        load_matpower("/nonexistent/x.m")


def test_pandapower_json_roundtrip(tmp_path: Path) -> None:
    net = pn.case30()
    path = tmp_path / "case30.json"
    pp.to_json(net, str(path))
    ours = run_pf(load_case(str(path)), tol=1e-11)
    pp.runpp(net, tolerance_mva=1e-11)
    np.testing.assert_allclose(ours.vm_pu, net.res_bus.vm_pu, atol=1e-8)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CaseFormatError, match="not a pandapower JSON network"):
        load_case(str(bad))


def test_pandapower_conversion_keeps_bus_ids_and_slack_weights() -> None:
    net = pp.create_empty_network()
    b = [pp.create_bus(net, vn_kv=20.0, index=i) for i in (10, 20, 30)]
    pp.create_line_from_parameters(net, b[0], b[1], 1.0, 0.3, 0.1, 0.0, 0.4)
    pp.create_line_from_parameters(net, b[1], b[2], 1.0, 0.3, 0.1, 0.0, 0.4)
    pp.create_gen(net, b[0], p_mw=1.0, vm_pu=1.0, slack=True, slack_weight=1.0)
    pp.create_gen(net, b[2], p_mw=1.0, vm_pu=1.0, slack_weight=3.0)
    pp.create_load(net, b[1], p_mw=3.0, q_mvar=1.0)
    ours = from_pandapower(net)
    assert list(ours.bus.index) == [10, 20, 30]
    assert ours.gen.slack_weight.tolist() == [1.0, 3.0]
    assert ours.gen.role.tolist() == ["slack", "regulator"]
    res = run_pf(ours)
    extra = res.gen_p_mw - 1.0
    assert extra[1] == pytest.approx(3 * extra[0])
    # the caller's network is left as it was
    assert net.res_bus.empty
    with pytest.raises(TypeError, match="pandapowerNet"):
        from_pandapower({"bus": []})


@pytest.mark.parametrize(
    "case", ["microgrid9", "microgrid9-islanded", "ieee9", "case33bw", "sce56", "pandapower:case30"]
)
def test_matpower_writer_round_trip(case: str, tmp_path: Path) -> None:
    from gridledger.grid.loaders import to_matpower
    from gridledger.grid.network import SVC_COLUMNS, table

    net = load_case(case)
    if case == "ieee9":
        svc = [{"name": "S", "bus": 9, "qmin_mvar": -100.0, "qmax_mvar": 300.0, "q_mvar": 20.0}]
        net = net.with_tables(svc=table(svc, SVC_COLUMNS))
    path = tmp_path / "out.m"
    path.write_text(to_matpower(net))
    back = load_case(str(path))
    shift = 1 if case.startswith("pandapower:") else 0  # 0-based ids move to 1-based
    assert list(back.bus.index) == [b + shift for b in net.bus.index]
    for column in ("role", "p_mw", "q_mvar", "vm_pu", "sn_mva", "slack_weight", "qmax_mvar"):
        assert back.gen[column].tolist() == net.gen[column].tolist(), column
    assert back.svc[["qmin_mvar", "qmax_mvar", "q_mvar"]].values.tolist() == (
        net.svc[["qmin_mvar", "qmax_mvar", "q_mvar"]].values.tolist()
    )
    a, b = run_pf(net), run_pf(back)
    np.testing.assert_array_equal(a.vm_pu, b.vm_pu)
    assert a.loss_mw == b.loss_mw
    np.testing.assert_array_equal(a.loading_pct, b.loading_pct)


def test_matpower_extra_fields_must_match_the_generators(tmp_path: Path) -> None:
    from gridledger.grid.loaders import to_matpower

    text = to_matpower(load_case("ieee9")).replace(
        "mpc.gen_sn_mva = [\n", "mpc.gen_sn_mva = [\n\t1;\n"
    )
    path = tmp_path / "bad.m"
    path.write_text(text)
    with pytest.raises(CaseFormatError, match=r"mpc\.gen_sn_mva has 4 values for 3 generators"):
        load_matpower(path)


def test_a_pandapower_json_file_is_parsed_once_per_version(tmp_path: Path, monkeypatch) -> None:
    """A DSO service builds several objects from one grid file: the file is parsed once, each
    caller gets its own copy, and an edited file is parsed again."""
    import gridledger.grid.cases as cases

    parsed: list[Path] = []
    real = cases.load_pandapower_json

    def counting(path: Path, *args: Any) -> Any:
        parsed.append(path)
        return real(path, *args)

    monkeypatch.setattr(cases, "load_pandapower_json", counting)
    path = tmp_path / "lv.json"
    pp.to_json(pn.create_cigre_network_lv(), str(path))
    first, second = load_case(str(path)), load_case(path)
    assert len(parsed) == 1
    first.load.loc[first.load.index[0], "p_mw"] = 99.0  # one caller's change stays its own
    assert second.load.p_mw.iloc[0] != 99.0 and load_case(path).load.p_mw.iloc[0] != 99.0
    net = pn.create_cigre_network_lv()
    net.load.loc[net.load.index[0], "p_mw"] = 0.123
    pp.to_json(net, str(path))  # a new version of the file: its mtime (and here size) changes
    stat = path.stat()  # a file system with coarse timestamps could keep the mtime: move it
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert math.isclose(load_case(path).load.p_mw.iloc[0], 0.123) and len(parsed) == 2
