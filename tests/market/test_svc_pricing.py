"""Seed 002's SVC case (eqs. 10–12, Tables 3–4) from the command line and from Python."""

from __future__ import annotations

import json
import math

import pytest

from gridledger.cli import main
from gridledger.market.remuneration import (
    SEED002_COSTS,
    RemunerationError,
    svc_cost_by_reading,
    svc_cost_de_goswami_usd_per_h,
    svc_cost_printed_usd_per_h,
    svc_investment_usd_per_kvar,
)
from gridledger.market.svc_pricing import SvcSpecError, parse_svc_spec


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eqs_10_to_12_by_hand():
    # S = 100 Mvar. Eq. 10: C = 0.0003·100² − 0.3051·100 + 127.38 = 3 − 30.51 + 127.38 = 99.87.
    assert svc_investment_usd_per_kvar(100) == pytest.approx(99.87, rel=1e-12)
    # Eq. 12 as printed: C(f) = 99.87 / (8760 · 5) = 99.87 / 43 800 = 0.0022801369... $/h.
    assert svc_cost_printed_usd_per_h(100) == pytest.approx(0.00228013698630137, rel=1e-12)
    # De & Goswami: 99.87 $/kvar · 100 000 kvar / 43 800 h = 9 987 000 / 43 800 = 228.0137 $/h.
    assert svc_cost_de_goswami_usd_per_h(100) == pytest.approx(228.013698630137, rel=1e-12)
    # S = 250 Mvar: 0.0003·62 500 = 18.75; 0.3051·250 = 76.275; C = 18.75 − 76.275 + 127.38
    # = 69.855. Printed: 69.855 / 43 800 = 0.00159486...; De & Goswami: 69.855 · 250 000 / 43 800
    # = 17 463 750 / 43 800 = 398.71575 $/h.
    assert svc_cost_by_reading(250, "printed") == pytest.approx(0.0015948630136986, rel=1e-12)
    assert svc_cost_by_reading(250, "de-goswami") == pytest.approx(398.715753424657, rel=1e-12)
    # A ten-year life halves both.
    assert svc_cost_printed_usd_per_h(250, 10) == pytest.approx(69.855 / 87_600, rel=1e-12)
    # S = 0: no range, the printed reading still charges C(0)/43 800 = 127.38 / 43 800.
    assert svc_cost_printed_usd_per_h(0) == pytest.approx(127.38 / 43_800, rel=1e-12)
    assert svc_cost_de_goswami_usd_per_h(0) == 0.0


def test_bad_cost_inputs():
    with pytest.raises(RemunerationError, match="unknown SVC cost reading 'literal'"):
        svc_cost_by_reading(100, "literal")
    with pytest.raises(RemunerationError, match="lifetime must be > 0"):
        svc_cost_printed_usd_per_h(100, 0)
    with pytest.raises(RemunerationError, match="SVC range must be >= 0"):
        svc_cost_de_goswami_usd_per_h(-1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("9", "expected BUS:QMIN:QMAX"),
        ("9:-100", "expected BUS:QMIN:QMAX"),
        ("9:-100:300:1", "expected BUS:QMIN:QMAX"),
        ("nine:-100:300", "expected BUS:QMIN:QMAX"),
        ("9:nan:300", "expected BUS:QMIN:QMAX"),
        ("9:300:-100", "qmin 300 Mvar is above qmax -100 Mvar"),
    ],
)
def test_parse_svc_spec_rejects(text, message):
    with pytest.raises(SvcSpecError, match=message):
        parse_svc_spec(text)


def test_parse_svc_spec_accepts():
    assert parse_svc_spec("9:-100:300") == (9, -100.0, 300.0)
    assert parse_svc_spec(" 4 : -1.5e1 : .5 ") == (4, -15.0, 0.5)


@pytest.mark.parametrize(
    "svcs, message",
    [
        (["9:x:300"], "--svc '9:x:300': expected BUS:QMIN:QMAX"),
        (["12:-100:300"], "bus 12 is not a bus of ieee9-q200"),
        (["9:300:-100"], "qmin 300 Mvar is above qmax -100 Mvar"),
        (["9:-100:300", "9:0:10"], "bus 9 already has an SVC"),
    ],
)
def test_ropf_svc_bad_inputs(capsys, svcs, message):
    argv = ["ropf", "ieee9-q200", "--json"]
    for s in svcs:
        argv += ["--svc", s]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and message in err


@pytest.fixture(scope="module")
def svc_case():
    """`gridledger ropf ieee9-q200 --svc 9:-100:300 --json` under both readings."""
    import contextlib
    import io

    docs = {}
    for reading in ("printed", "de-goswami"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["ropf", "ieee9-q200", "--svc", "9:-100:300", "--svc-cost", reading,
                         "--json"]) == 0  # fmt: skip
        docs[reading] = json.loads(buf.getvalue())
    return docs


def test_ropf_svc_reports_eq_11_and_12_by_hand(svc_case):
    d = svc_case["printed"]
    assert d["feasible"] and d["setpoints"]["SVC9:q_mvar"] == pytest.approx(
        d["svc_pricing"]["svcs"][0]["q_mvar"]
    )
    p = d["svc_pricing"]
    assert p["reading"] == "printed" and p["lifetime_years"] == 5.0
    (svc,) = p["svcs"]
    assert -100.0 <= svc["q_mvar"] <= 300.0
    # Eq. 11: S = |Q2 − Q1| of the lines' reactive power towards bus 9 (lines 8-9 and 9-4).
    assert set(svc["lines_before_mvar"]) == set(svc["lines_after_mvar"]) == {"8-9", "9-4"}
    q1 = sum(svc["lines_before_mvar"].values())
    q2 = sum(svc["lines_after_mvar"].values())
    s = abs(q2 - q1)
    assert svc["s_mvar"] == pytest.approx(s, rel=1e-12)
    # Eq. 10 then eq. 12 as printed, written out.
    c = 0.0003 * s**2 - 0.3051 * s + 127.38
    assert svc["c_s"] == pytest.approx(c, rel=1e-12)
    assert svc["cost_usd_per_h"] == pytest.approx(c / (8760 * 5), rel=1e-12)
    # The De & Goswami reading prices the same S at C(S) $/kvar × S kvar.
    dg = svc_case["de-goswami"]["svc_pricing"]["svcs"][0]
    assert dg["s_mvar"] == pytest.approx(s, rel=1e-9)
    assert dg["cost_usd_per_h"] == pytest.approx(c * s * 1000 / (8760 * 5), rel=1e-9)
    # Without the SVC the modified case cannot hold 0.9 pu at bus 9; with it, it can.
    assert not p["case_without_svc"]["feasible"] and p["case_with_svc"]["feasible"]
    assert p["case_with_svc"]["loss_mw"] == pytest.approx(d["loss_after_mw"])


def test_ropf_svc_generator_costs_are_eq_8(svc_case):
    p = svc_case["printed"]["svc_pricing"]
    assert [g["name"] for g in p["generators"]] == ["G1@1", "G2@2", "G3@3"]
    total = {"without_svc": 0.0, "with_svc": 0.0}
    for g in p["generators"]:
        curve = SEED002_COSTS[g["bus"]]
        for case in total:
            pm, q = g[case]["p_mw"], g[case]["q_mvar"]
            hand = abs(curve(math.hypot(pm, q)) - curve(pm)) * 0.1  # seed 002 eq. 8, k = 0.1
            assert g[case]["cost_usd_per_h"] == pytest.approx(hand, rel=1e-12)
            total[case] += hand
            # Table 4: each provider's allocation over the loads sums to its cost.
            assert sum(p[f"allocation_{case}"][g["name"]].values()) == pytest.approx(hand)
    svc_usd = p["svcs"][0]["cost_usd_per_h"]
    assert p["total_usd_per_h_without_svc"] == pytest.approx(total["without_svc"])
    assert p["total_usd_per_h_with_svc"] == pytest.approx(total["with_svc"] + svc_usd)
    assert p["saving_usd_per_h"] == pytest.approx(
        total["without_svc"] - total["with_svc"] - svc_usd
    )
    assert sum(p["allocation_with_svc"]["SVC9"].values()) == pytest.approx(svc_usd)


def test_svc_operating_point_matches_pandapower(svc_case):
    """The priced operating point, rebuilt in pandapower (SVC as a static generator)."""
    import pandapower as pp
    import pandapower.networks as pn

    d = svc_case["printed"]
    svc = d["svc_pricing"]["svcs"][0]
    net = pn.case9()  # pandapower buses 0..8 are MATPOWER's 1..9
    net.load.loc[net.load.bus == 8, "q_mvar"] = 200.0
    for name, vm in (("G2@2", 1), ("G3@3", 2)):
        net.gen.loc[net.gen.bus == vm, "vm_pu"] = d["setpoints"][f"{name}:vm_pu"]
    pp.create_sgen(net, 8, p_mw=0.0, q_mvar=svc["q_mvar"])
    pp.runpp(net, tolerance_mva=1e-10)
    # Lines 8-9 and 9-4 (MATPOWER numbering) towards bus 9, at their far ends.
    towards_9 = 0.0
    for _, line in net.line.iterrows():
        res = net.res_line.loc[line.name]
        if line.to_bus == 8:
            towards_9 += res.q_from_mvar
        elif line.from_bus == 8:
            towards_9 += res.q_to_mvar
    assert towards_9 == pytest.approx(svc["line_q_after_mvar"], abs=1e-5)
    assert net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum() == pytest.approx(
        d["loss_after_mw"], abs=1e-6
    )


def test_validate_ships_the_svc_scenario(capsys, svc_case):
    code, out, _ = run(capsys, "validate", "seed002_ieee9_svc", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["certificates"] == []
    ours, cli = doc["svc_pricing"], svc_case["printed"]["svc_pricing"]
    assert ours["method"] == "exact"
    assert ours["svcs"][0]["s_mvar"] == pytest.approx(cli["svcs"][0]["s_mvar"], rel=1e-9)
    assert ours["saving_usd_per_h"] == pytest.approx(cli["saving_usd_per_h"], rel=1e-9)
    code, out, _ = run(capsys, "validate", "seed002_ieee9_svc", "--svc-cost", "de-goswami")
    assert code == 0
    assert "de-goswami reading" in out and "SVC9 at bus 9" in out and "(Table 3)" in out


def test_ropf_svc_table_output(capsys):
    code, out, _ = run(capsys, "ropf", "ieee9-q200", "--svc", "9:-100:300")
    assert code == 0
    for text in ("SVC pricing (eqs. 10-12, printed reading", "S = ", "$/h", "(Table 3)",
                 "(Table 4)", "saving"):  # fmt: skip
        assert text in out
