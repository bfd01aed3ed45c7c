"""The DSO certifies a profiled trade slot by slot: each interval's power flow has the trade at
its power in that slot, checked against pandapower with that slot's injections; the loss
shares on chain follow the slot's power."""

from __future__ import annotations

import json

import pandapower as pp

from gridledger.agents.dso_agent import DsoAgent, GridPhase
from gridledger.agents.dso_config import load_dso_config
from gridledger.agents.meter_sim import MeterSim
from gridledger.chain.contracts.market import PENDING, loss_steps_key, match_key
from gridledger.chain.contracts.settlement import done_key

from .localworld import SLOT, T, key
from .test_dso_real_grid import BUSES, _config, grid, world  # noqa: F401 (fixtures)

PV_PROFILE_W = [2_000, 5_000, 3_000]  # PV14's offer, W per slot
BID_W = 4_000  # R11's constant bid


def _reference_losses(grid_file: str, p_mw: float, q_kvar: dict[str, float] | None):
    """pandapower on the stored grid with the trade's injection at PV14 and draw at R11's
    load (constant power factor, as the DSO superposes a trade); regulators' Q if given."""
    net = pp.from_json(grid_file)
    net.sgen.loc[net.sgen.name == "PV14", "p_mw"] += p_mw
    load = net.load.index[net.load.bus == BUSES["R11"]][0]
    p0, q0 = net.load.at[load, "p_mw"], net.load.at[load, "q_mvar"]
    net.load.at[load, "p_mw"] = p0 + p_mw
    net.load.at[load, "q_mvar"] = q0 + p_mw * q0 / p0
    for name, q in (q_kvar or {}).items():
        net.sgen.loc[net.sgen.name == name, "q_mvar"] = q / 1000
    pp.runpp(net)
    return 1000 * (net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum()), net.res_bus.vm_pu


def test_a_profiled_trade_is_certified_at_each_slots_power(world, grid, tmp_path) -> None:  # noqa: F811
    chain, keys, dso = world
    regs = {"PV14": keys["PV14"].pub_hex, "PV40": keys["PV40"].pub_hex}
    evaluator, accounts = load_dso_config(
        _config(tmp_path, {"method": "exact", "regulators": regs}), grid
    )
    agent = DsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT, tmp_path / "docs")
    window = {"start_ms": T, "end_ms": T + 3 * SLOT}
    offer = {"node": 14, "power_w": 5_000, "regulation_var": 0, "price_utoken_per_kwh": 100_000}
    assert chain.submit(keys["PV14"], "market.offer", {**offer, **window,
                        "profile_w": PV_PROFILE_W}).ok  # fmt: skip
    bid = {"node": 12, "power_w": BID_W, "max_price_utoken_per_kwh": 120_000}
    assert chain.submit(keys["R11"], "market.bid", {**bid, **window}).ok
    chain.produce(T - 6 * SLOT)
    (mid,) = chain.state(PENDING)
    slot_w = [min(p, BID_W) for p in PV_PROFILE_W]  # per slot, the smaller remainder
    assert chain.state(match_key(mid))["match"]["profile_w"] == slot_w == [2_000, 4_000, 3_000]
    # one loss record per slot (the power changes at each boundary), set-points, approval
    assert agent.step(chain) == 3 + 2
    chain.produce(T - 6 * SLOT + 1)
    assert chain.state(match_key(mid))["status"] == "approved"
    doc = json.loads((tmp_path / "docs" / f"{mid}.json").read_text())
    assert [iv["from_ms"] for iv in doc["intervals"]] == [T, T + SLOT, T + 2 * SLOT]
    steps = chain.state(loss_steps_key(mid))
    for k, (interval, (from_ms, share_w)) in enumerate(zip(doc["intervals"], steps, strict=True)):
        e = interval["evaluation"]
        (trade,) = e["trades"]
        assert trade["power_kw"] == slot_w[k] / 1000
        assert from_ms == T + k * SLOT and share_w == round(1000 * trade["loss_share_kw"])
        # rows N (regulators at the grid's own Q) and rows Y (the R-OPF's Q), by pandapower
        loss_n, vm_n = _reference_losses(grid, slot_w[k] / 1e6, None)
        assert abs(loss_n - e["loss_without_ropf_kw"]) < 1e-4
        assert all(abs(vm_n[int(b)] - v) < 1e-6 for b, v in e["bus_vm_pu_without_ropf"].items())
        q = {r["node"]: r["q_kvar"] for r in e["regulators"]}
        loss_y, vm_y = _reference_losses(grid, slot_w[k] / 1e6, q)
        assert abs(loss_y - e["loss_with_ropf_kw"]) < 1e-4
        assert all(abs(vm_y[int(b)] - v) < 1e-5 for b, v in e["bus_vm_pu"].items())
    # the peak in every slot would be a different operating point (not what was certified)
    loss_peak, _ = _reference_losses(grid, BID_W / 1e6, None)
    assert abs(loss_peak - doc["intervals"][0]["evaluation"]["loss_without_ropf_kw"]) > 0.05
    # the shares follow the slot's power, 2 : 4 : 3, within a watt of rounding
    per_kw = steps[0][1] / (slot_w[0] / 1000)
    assert all(abs(w - per_kw * slot_w[k] / 1000) <= 1 for k, (_t, w) in enumerate(steps))
    # meters read each slot's schedule (the profile's entry); settlement compares slot by slot
    sims = []
    for name in ("PV14", "R11"):
        meter = key(f"meter-{name}")
        bind = {"meter": meter.pub_hex, "prosumer": keys[name].pub_hex}
        assert chain.submit(dso, "member.bind_meter", bind).ok
        sims.append(MeterSim(name, meter, keys[name].pub_hex, T, T + 3 * SLOT, SLOT))
    chain.produce(T + 3 * SLOT)
    assert sum(sim.step(chain) for sim in sims) == 6
    chain.produce(T + 3 * SLOT + 1)
    wh = [w * SLOT // 3_600_000 for w in slot_w]  # 500, 1 000, 750 Wh
    assert [r["export_wh"] for r in sims[0].readings] == wh
    for k in range(3):
        done = chain.state(done_key(mid, T + k * SLOT))
        assert (done["scheduled_wh"], done["delivered_wh"]) == (wh[k], wh[k])
        pays = {p["kind"]: p["amount"] for p in done["payments"] if p["kind"] != "reactive"}
        loss_wh = steps[k][1] * SLOT // 3_600_000
        # at 0.1 token/kWh: the slot's energy and the slot's loss share, no penalty
        assert pays == {"energy": wh[k] * 100, "loss": loss_wh * 100}
    assert chain.state(match_key(mid))["status"] == "settled"


def test_an_interval_of_profiled_and_constant_matches_is_evaluated_slot_by_slot(
    world,  # noqa: F811
    grid,  # noqa: F811
    tmp_path,
) -> None:
    from gridledger.agents.dso_service import IntervalDsoAgent

    chain, keys, dso = world
    regs = {"PV14": keys["PV14"].pub_hex, "PV40": keys["PV40"].pub_hex}
    evaluator, accounts = load_dso_config(_config(tmp_path, {"regulators": regs}), grid)
    calls = []
    solo = evaluator.certify

    def recorded(trades, start_ms, *args, **kwargs):
        calls.append((start_ms, sorted((t.trade_id, t.power_kw) for t in trades)))
        return solo(trades, start_ms, *args, **kwargs)

    agent = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT, tmp_path / "docs")
    window = {"start_ms": T, "end_ms": T + 2 * SLOT}
    orders = [
        ("PV14", "market.offer", {"node": 14, "power_w": 4_000, "regulation_var": 0,
                                  "price_utoken_per_kwh": 100_000, "profile_w": [0, 4_000]}),
        ("R11", "market.bid", {"node": 12, "power_w": 3_000, "max_price_utoken_per_kwh": 120_000}),
        ("PV40", "market.offer", {"node": 40, "power_w": 2_000, "regulation_var": 0,
                                  "price_utoken_per_kwh": 100_000}),
        ("C14", "market.bid", {"node": 37, "power_w": 2_000, "max_price_utoken_per_kwh": 120_000}),
    ]  # fmt: skip
    for name, tx_type, payload in orders:
        assert chain.submit(keys[name], tx_type, {**payload, **window}).ok
    chain.produce(T - 6 * SLOT)
    pending = chain.state(PENDING)
    # by hand: R11 takes min(PV14, 3) = 0, 3 kW (m0) and, from PV40 arriving later,
    # min(2, what R11 lacks: 3, 0) = 2, 0 kW (m1); C14 then takes 0, 1 kW from what PV14 has
    # left (m2) and 0, 1 kW from PV40 (m3)
    profiles = {m: chain.state(match_key(m))["match"].get("profile_w") for m in pending}
    assert profiles == {"m0": [0, 3_000], "m1": [2_000, 0], "m2": [0, 1_000], "m3": [0, 1_000]}
    evaluator.certify = recorded
    agent.step(chain)
    chain.produce(T - 6 * SLOT + 1)
    # one evaluation per slot, each trade at its power in that slot, zero-power ones left out
    assert calls == [(T, [("m1", 2.0)]), (T + SLOT, [("m0", 3.0), ("m2", 1.0), ("m3", 1.0)])]
    assert {chain.state(match_key(m))["status"] for m in pending} == {"approved"}
    steps = chain.state(loss_steps_key("m1"))
    assert steps[0][0] == T and steps[0][1] > 0 and steps[1] == [T + SLOT, 0]
