"""``gridledger validate`` on a real LV grid with rooftop PV (pandapower's CIGRE LV network plus
static generators): sellers are static generators named by element or bus, buyers loads named
by element; the certified operating point is re-checked with pandapower's own power flow."""

from __future__ import annotations

import copy
import json

import pandapower as pp
import pandapower.networks as pn
import pytest
import yaml

from gridledger.cli import main

PV_BUSES = [14, 16, 17, 18, 19, 22, 35, 36, 37, 40, 41, 42]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    net = pn.create_cigre_network_lv()
    for i, bus in enumerate(PV_BUSES):
        pp.create_sgen(net, bus, p_mw=0.004 + 0.001 * i, q_mvar=0.0, sn_mva=0.015 + 0.002 * i,
                       name=f"PV{bus}", type="PV")  # fmt: skip
    path = tmp_path_factory.mktemp("grid") / "cigre_lv_pv.json"
    pp.to_json(net, str(path))
    return net, path


def _scenario(tmp_path, case, trades) -> str:
    doc = {
        "name": "cigre-lv-pv",
        "case": str(case),
        "method": "exact",
        "price_utoken_per_kwh": 200_000,
        "times": {"t1": "2026-06-01T12:00:00Z", "t2": "2026-06-01T12:15:00Z"},
        "trades": trades,
    }
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_certificate_on_a_real_lv_grid_rechecked_by_pandapower(grid, tmp_path, capsys):
    net, case = grid
    trades = [
        {"id": "tr1", "seller": "PV14", "buyer": "Load R11", "power_kw": 5, "start": "t1",
         "end": "t2"},
        {"id": "tr2", "seller": 40, "buyer": "Load C14", "power_kw": 4, "start": "t1",
         "end": "t2"},
    ]  # fmt: skip
    assert main(["validate", _scenario(tmp_path, case, trades), "--json"]) == 0
    cert = json.loads(capsys.readouterr().out)["certificates"][0]
    assert cert["feasible"], cert["reasons"]
    assert {r["node"] for r in cert["regulators"]} == {f"PV{b}" for b in PV_BUSES}
    assert cert["loss_with_ropf_kw"] < cert["loss_without_ropf_kw"]
    assert [t["seller"] for t in cert["trades"]] == ["PV14", "bus 40"]
    assert [t["buyer_bus"] for t in cert["trades"]] == [12, 37]
    # pandapower at the certified operating point: trades superposed, PV at the certified Q
    check = copy.deepcopy(net)
    check.sgen.loc[check.sgen.name == "PV14", "p_mw"] += 0.005
    check.sgen.loc[check.sgen.name == "PV40", "p_mw"] += 0.004
    for load, kw in (("Load R11", 5), ("Load C14", 4)):
        i = check.load.index[check.load.name == load][0]
        p0, q0 = check.load.at[i, "p_mw"], check.load.at[i, "q_mvar"]
        check.load.at[i, "p_mw"] = p0 + kw / 1000
        check.load.at[i, "q_mvar"] = q0 * (p0 + kw / 1000) / p0
    for reg in cert["regulators"]:
        check.sgen.loc[check.sgen.name == reg["node"], "q_mvar"] = reg["q_kvar"] / 1000
    pp.runpp(check, calculate_voltage_angles=True, tolerance_mva=1e-11)
    total_kw = (check.res_line.pl_mw.sum() + check.res_trafo.pl_mw.sum()) * 1000
    # q_kvar is rounded to whole var in the certificate: agreement to a few mW
    assert cert["loss_with_ropf_kw"] + cert["no_load_loss_kw"] == pytest.approx(total_kw, abs=5e-3)
    for bus, vm in cert["bus_vm_pu"].items():
        assert vm == pytest.approx(check.res_bus.vm_pu[int(bus)], abs=1e-5)


def test_a_trade_beyond_the_inverter_is_refused_naming_it(grid, tmp_path, capsys):
    _, case = grid
    trades = [{"id": "big", "seller": "bus 18", "buyer": "Load R1", "power_kw": 40,
               "start": "t1", "end": "t2"}]  # fmt: skip
    assert main(["validate", _scenario(tmp_path, case, trades), "--json"]) == 0
    cert = json.loads(capsys.readouterr().out)["certificates"][0]
    assert not cert["feasible"]
    assert any("(PV18)" in r and "capability limit" in r for r in cert["reasons"]), cert["reasons"]


def test_unknown_buyer_or_seller_is_an_error_naming_it(grid, tmp_path, capsys):
    _, case = grid
    bad_buyer = [{"id": "x", "seller": "PV14", "buyer": "Load Z9", "power_kw": 1,
                  "start": "t1", "end": "t2"}]  # fmt: skip
    assert main(["validate", _scenario(tmp_path, case, bad_buyer)]) == 2
    assert "buyer 'Load Z9' is neither a load" in capsys.readouterr().err
    bad_seller = [{"id": "x", "seller": "PV99", "buyer": "Load R1", "power_kw": 1,
                   "start": "t1", "end": "t2"}]  # fmt: skip
    assert main(["validate", _scenario(tmp_path, case, bad_seller)]) == 2
    assert "'PV99' is neither a generator" in capsys.readouterr().err
