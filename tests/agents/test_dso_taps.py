"""The DSO moves an on-load tap changer (dso.yaml ``taps``): on a CIGRE LV grid whose MV/LV
transformer has a Ratio tap changer, raising the LV side lowers the losses, so the DSO's
certificate moves the tap; the position goes on chain in the reactive record, bound into the
approval, the losses match pandapower's power flow with the transformer at that position, the
set-point history keeps the position across a restart, and the CLI shows it.  A bad ``taps``
field is an error at start naming the element."""

from __future__ import annotations

import json
from pathlib import Path

import pandapower as pp
import pandapower.networks as pn
import pytest
import yaml

from gridledger.agents.dso_agent import GridPhase
from gridledger.agents.dso_config import DsoConfigError, TapState, load_dso_config
from gridledger.agents.dso_service import DsoService, IntervalDsoAgent
from gridledger.agents.prosumer_agent import OrderSpec, ProsumerAgent
from gridledger.chain.contracts.market import (
    PENDING,
    match_key,
    reactive_digest,
    reactive_key,
)
from gridledger.cli import main

from .localworld import SLOT, T, prosumer_chain

BUSES = {"PV14": 14, "PV40": 40, "R11": 12, "C14": 37}
TAP = "Trafo R0-R1"  # the residential feeder's 0.5 MVA transformer


def _pp_grid() -> pp.pandapowerNet:
    net = pn.create_cigre_network_lv()
    for bus, p_mw, sn in ((14, 0.004, 0.015), (40, 0.006, 0.02)):
        pp.create_sgen(net, bus, p_mw=p_mw, q_mvar=0.0, sn_mva=sn, name=f"PV{bus}")
    # a high-voltage-side ratio tap changer, ±2 steps of 2.5 %, at its neutral position
    i = net.trafo.index[net.trafo.name == TAP][0]
    net.trafo.loc[i, ["tap_pos", "tap_min", "tap_max", "tap_neutral", "tap_step_percent"]] = [
        0, -2, 2, 0, 2.5
    ]  # fmt: skip
    net.trafo.loc[i, "tap_side"] = "hv"
    net.trafo.loc[i, "tap_changer_type"] = "Ratio"
    return net


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("grid") / "cigre_lv_taps.json"
    pp.to_json(_pp_grid(), str(path))
    return str(path)


@pytest.fixture
def world(tmp_path: Path):
    chain, keys, dso = prosumer_chain(tmp_path / "home", "dso-taps", BUSES)
    yield chain, keys, dso
    chain.close()


def _config(tmp_path: Path, keys, **extra) -> Path:
    doc = {
        "method": "exact",
        "regulators": {"PV14": keys["PV14"].pub_hex, "PV40": keys["PV40"].pub_hex},
        **extra,
    }
    path = tmp_path / "dso.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _trade(chain, keys, seller: str, buyer: str, power_w: int, start: int) -> None:
    for name, kind, price in ((seller, "offer", 100_000), (buyer, "bid", 120_000)):
        spec = OrderSpec(kind, power_w, price, start, start + SLOT)
        ProsumerAgent(name, keys[name], BUSES[name], [spec]).step(chain)


def _pandapower_loss_mw(tap_pos: int, q_kvar: dict[int, float], trade_kw: float) -> float:
    """pandapower's total losses (lines + transformers) with the transformer at ``tap_pos``,
    the PV inverters at the certified reactive set-points and the trade superposed (seller
    PV14's output and buyer bus 12's load raised by the traded power, the load at its pf)."""
    net = _pp_grid()
    net.trafo.loc[net.trafo.name == TAP, "tap_pos"] = tap_pos
    for bus, q in q_kvar.items():
        net.sgen.loc[net.sgen.bus == bus, "q_mvar"] = q / 1000
    net.sgen.loc[net.sgen.bus == 14, "p_mw"] += trade_kw / 1000
    i = net.load.index[net.load.bus == 12][0]
    p0, q0 = float(net.load.at[i, "p_mw"]), float(net.load.at[i, "q_mvar"])
    net.load.at[i, "p_mw"] = p0 + trade_kw / 1000
    net.load.at[i, "q_mvar"] = q0 + trade_kw / 1000 * q0 / p0
    pp.runpp(net, tolerance_mva=1e-12)
    return float(net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum())


def test_the_dso_moves_a_tap_that_lowers_losses_and_certifies_it_on_chain(
    world, grid, tmp_path, capsys
) -> None:
    chain, keys, dso = world
    evaluator, accounts = load_dso_config(_config(tmp_path, keys, taps=[TAP]), grid)
    assert evaluator.taps == [TAP]
    assert evaluator.initial_state().taps == {TAP: 0}
    home = tmp_path / "dso"
    agent = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT, home / "documents")
    service = DsoService(home, dso, agent)

    _trade(chain, keys, "PV14", "R11", 5_000, T)
    chain.produce(T - 6 * SLOT)
    (mid,) = chain.state(PENDING)
    assert service.on_block(chain) == 3  # loss shares, reactive record, approval
    chain.produce(T - 6 * SLOT + 1)
    record = chain.state(match_key(mid))
    assert record["status"] == "approved", record.get("reasons")

    reactive = chain.state(reactive_key(mid))
    ((tap,),) = [reactive["taps"]]
    assert tap["branch"] == TAP and isinstance(tap["pos"], int) and -2 <= tap["pos"] < 0
    # the approval is bound to the set-points and the tap position together
    assert record["reactive_digest"] == reactive_digest(reactive["setpoints"], reactive["taps"])
    assert record["reactive_digest"] != reactive_digest(reactive["setpoints"])

    doc = json.loads((home / "documents" / f"{mid}.json").read_text())
    (interval,) = doc["intervals"]
    cert = interval["evaluation"]
    assert cert["taps"] == {TAP: tap["pos"]} and cert["taps_before"] == {TAP: 0}
    # moving the tap lowered the losses of the R-OPF with the tap left at 0
    assert cert["loss_with_ropf_kw"] < cert["loss_with_ropf_kw_at_taps_before"] - 1e-3
    # and the certified losses are pandapower's at that position and those set-points
    q_kvar = {r["bus"]: r["q_kvar"] for r in cert["regulators"]}
    assert set(q_kvar) == {14, 40}
    reference = _pandapower_loss_mw(tap["pos"], q_kvar, 5.0)
    assert abs(cert["loss_with_ropf_kw"] / 1000 - reference) < 1e-6
    assert reference < _pandapower_loss_mw(0, q_kvar, 5.0)  # the tap move itself pays
    with capsys.disabled():  # the figures docs/physics.md quotes (run with -s)
        print(
            f"tap {TAP}: 0 -> {tap['pos']}; R-OPF losses "
            f"{cert['loss_with_ropf_kw_at_taps_before']:.3f} kW at 0, "
            f"{cert['loss_with_ropf_kw']:.3f} kW moved; pandapower {1000 * reference:.3f} kW; "
            f"{cert['tap_vectors_evaluated']} tap vectors solved"
        )

    # the set-point history keeps the position: a restarted DSO starts the next search there
    saved = json.loads((home / "documents" / "setpoints.json").read_text())
    assert saved["0"][str(T)]["taps"] == {TAP: tap["pos"]}
    again = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT, home / "documents")
    state = again.phases[0].previous(T + SLOT)
    assert isinstance(state, TapState) and state.taps == {TAP: tap["pos"]}
    assert state.setpoints["PV14"].q_kvar == pytest.approx(q_kvar[14], abs=1e-3)

    # gridledger dso status shows the position each approval set
    assert main(["dso", "status", "--home", str(home), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["approved"] == [mid] and summary["taps"] == {mid: {TAP: tap["pos"]}}
    assert main(["dso", "status", "--home", str(home)]) == 0
    assert f"{mid} taps: {TAP} at {tap['pos']}" in capsys.readouterr().out


def test_gridledger_certificate_shows_the_tap(world, grid, tmp_path, capsys, monkeypatch) -> None:
    chain, keys, dso = world
    evaluator, accounts = load_dso_config(_config(tmp_path, keys, taps="all"), grid)
    assert evaluator.taps == [TAP]  # the only transformer with tap-changer data
    agent = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT)
    _trade(chain, keys, "PV14", "R11", 5_000, T)
    chain.produce(T - 6 * SLOT)
    (mid,) = chain.state(PENDING)
    agent.step(chain)
    chain.produce(T - 6 * SLOT + 1)
    pos = chain.state(reactive_key(mid))["taps"][0]["pos"]

    class Reader:  # the command's node client, reading this chain's committed state
        def state(self, k: str):
            return chain.state(k)

        def close(self) -> None:
            pass

    monkeypatch.setattr("gridledger.commands.prosumer._client", lambda url: Reader())
    assert main(["certificate", mid, "--node", "http://unused", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "approved" and doc["taps"] == {TAP: pos}
    assert main(["certificate", mid, "--node", "http://unused"]) == 0
    assert f"tap changer {TAP}: position {pos}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("taps", "message"),
    [
        (["Trafo X"], r"tap control 'Trafo X': no branch of that name"),
        (["Trafo I0-I1"], r"tap control 'Trafo I0-I1': the transformer has no tap-changer data"),
        (["Line R1-R2"], r"tap control 'Line R1-R2': the branch is a line"),
        ([], "taps must be 'all' or a non-empty list"),
        ("some", "taps must be 'all' or a non-empty list"),
    ],
)
def test_a_bad_taps_field_is_an_error_at_start_naming_it(
    world, grid, tmp_path, taps, message
) -> None:
    chain, keys, dso = world
    height = chain.app.height
    with pytest.raises(DsoConfigError, match=message):
        DsoService.create(tmp_path / "dso", dso, grid, _config(tmp_path, keys, taps=taps), SLOT)
    assert chain.app.height == height and not (tmp_path / "dso").exists()  # nothing posted


def test_without_taps_the_reactive_record_has_none(world, grid, tmp_path) -> None:
    chain, keys, dso = world
    evaluator, accounts = load_dso_config(_config(tmp_path, keys), grid)
    assert evaluator.taps == [] and not isinstance(evaluator.initial_state(), TapState)
    agent = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT)
    _trade(chain, keys, "PV14", "R11", 5_000, T)
    chain.produce(T - 6 * SLOT)
    (mid,) = chain.state(PENDING)
    agent.step(chain)
    chain.produce(T - 6 * SLOT + 1)
    reactive = chain.state(reactive_key(mid))
    assert set(reactive) == {"setpoints", "tx"}
    assert chain.state(match_key(mid))["reactive_digest"] == reactive_digest(reactive["setpoints"])


def test_a_history_without_taps_or_with_a_position_out_of_range_starts_at_the_grids(
    world, grid, tmp_path
) -> None:
    _, keys, _ = world
    evaluator, _ = load_dso_config(_config(tmp_path, keys, taps=[TAP]), grid)
    setpoints = {"PV14": [1.5, 1.01], "PV40": [-0.5, 1.0]}
    old = evaluator.load_state(setpoints)  # a setpoints.json written before taps were controls
    assert old.taps == {TAP: 0} and old.setpoints["PV14"].q_kvar == 1.5
    kept = evaluator.load_state({"setpoints": setpoints, "taps": {TAP: -1}})
    assert kept.taps == {TAP: -1}
    edited = evaluator.load_state({"setpoints": setpoints, "taps": {TAP: 7}})  # range is -2..2
    assert edited.taps == {TAP: 0}
    assert evaluator.load_state(evaluator.dump_state(kept)) == kept


def test_matches_of_one_interval_share_the_tap_position(world, grid, tmp_path) -> None:
    """Two matches delivering in the same slot: one search, one position, in both reactive
    records, each approval bound to it."""
    chain, keys, dso = world
    evaluator, accounts = load_dso_config(_config(tmp_path, keys, taps=[TAP]), grid)
    agent = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT)
    _trade(chain, keys, "PV14", "R11", 5_000, T)
    _trade(chain, keys, "PV40", "C14", 4_000, T)
    chain.produce(T - 6 * SLOT)
    pending = chain.state(PENDING)
    assert len(pending) == 2
    assert agent.step(chain) == 5  # one loss record, then reactive + approval per match
    chain.produce(T - 6 * SLOT + 1)
    taps = [chain.state(reactive_key(m))["taps"] for m in pending]
    assert taps[0] == taps[1] and taps[0][0]["branch"] == TAP and taps[0][0]["pos"] < 0
    for m in pending:
        record, reactive = chain.state(match_key(m)), chain.state(reactive_key(m))
        assert record["status"] == "approved"
        assert record["reactive_digest"] == reactive_digest(reactive["setpoints"], taps[0])
    assert {e["match"]: e["taps"] for e in agent.log} == {
        m: {TAP: taps[0][0]["pos"]} for m in pending
    }
