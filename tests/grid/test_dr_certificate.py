"""The DSO's DR certificate: its power flows against an independent pandapower model."""

from __future__ import annotations

import hashlib

import pandapower as pp
import pytest
from test_powerflow import _microgrid_pandapower

from gridledger.agents.dr_agent import (
    NoReliefError,
    peak_operating_point,
    relief_certificate,
    split_request,
)
from gridledger.chain import encoding
from gridledger.grid.cases import load_case

PEAK_PPM = 2_400_000  # an evening peak: loads 2.4 x seed 000 Table II, the DGs (PV) at 0
AMPACITY_KA = {(1, 5): 0.130, (1, 7): 0.130, (3, 6): 0.130, (5, 3): 0.130, (7, 4): 0.130}


def _pandapower_line_loading(reductions_w: dict[int, int]) -> float:
    """Loading of line 1-5 (%) in a pandapower model built from the paper's tables."""
    net, bus, _loads = _microgrid_pandapower(islanded=False)
    net.load["p_mw"] *= PEAK_PPM / 1e6
    net.load["q_mvar"] *= PEAK_PPM / 1e6
    for b, w in reductions_w.items():
        i = net.load.index[net.load.bus == bus[b]][0]
        keep = 1 - w / (net.load.at[i, "p_mw"] * 1e6)
        net.load.at[i, "p_mw"] *= keep
        net.load.at[i, "q_mvar"] *= keep
    pp.create_ext_grid(net, bus[1], vm_pu=1.0)
    for i, row in net.line.iterrows():  # 35 mm2 cables 130 A, 50 mm2 155 A (cases.py)
        f, t = int(net.bus.name[row.from_bus]), int(net.bus.name[row.to_bus])
        net.line.at[i, "max_i_ka"] = AMPACITY_KA.get((f, t), 0.155)
    pp.runpp(net, tolerance_mva=1e-10)
    first = net.line.index[(net.line.from_bus == bus[1]) & (net.line.to_bus == bus[5])][0]
    return float(net.res_line.loading_percent[first])


def test_certificate_loadings_match_pandapower_and_digest_covers_the_document() -> None:
    peak = peak_operating_point(load_case("microgrid9"), PEAK_PPM)
    plan = split_request(500_000, {"5": 1_551_360, "3": 610_560})
    assert plan == {"3": 141_208, "5": 358_792}  # 500 000 x 610560 / 2161920 = 141 208.1
    reductions = {int(b): w for b, w in plan.items()}
    cert, doc = relief_certificate(peak, "1-5", reductions)
    assert cert["loading_before_ppm"] / 1e4 == pytest.approx(_pandapower_line_loading({}), abs=0.01)
    assert cert["loading_after_ppm"] / 1e4 == pytest.approx(
        _pandapower_line_loading(reductions), abs=0.01
    )
    assert cert["loading_before_ppm"] > 1_000_000 >= cert["loading_after_ppm"]
    assert cert["digest"] == hashlib.sha256(encoding.encode(doc)).hexdigest()
    assert doc["loading_before_ppm"][doc["branches"].index("1-5")] == cert["loading_before_ppm"]


def test_no_certificate_when_the_event_does_not_relieve_the_line() -> None:
    peak = peak_operating_point(load_case("microgrid9"), PEAK_PPM)
    with pytest.raises(NoReliefError, match="1-5"):
        relief_certificate(peak, "1-5", {5: 10_000})  # too little
    with pytest.raises(NoReliefError, match="1-7"):
        relief_certificate(peak, "1-7", {7: 100_000})  # not overloaded at all
    with pytest.raises(ValueError, match="no single branch"):
        relief_certificate(peak, "4-9", {5: 1})
    with pytest.raises(ValueError, match="cannot reduce"):
        relief_certificate(peak, "1-5", {5: 10**9})
