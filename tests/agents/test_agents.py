"""Agents against the real ledger application: prosumer orders, meter readings, DSO certificates
computed with the real power flow and R-OPF on the seed 000 microgrid."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridledger.agents.dso_agent import DsoAgent, GridPhase, TradeSpec
from gridledger.agents.evaluator import make_evaluator
from gridledger.agents.meter_sim import MeterSim
from gridledger.agents.prosumer_agent import OrderSpec, ProsumerAgent
from gridledger.chain.contracts.market import open_count_key, order_key
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain

SLOT = 900_000
T = 1_800_000_000_000 // SLOT * SLOT
CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]


def key(name: str) -> KeyPair:
    return KeyPair.from_seed(name.encode().ljust(32, b"\0"))


BUSES = {"DG2": 2, "DG3": 3, "DG4": 4, "L5": 5, "L7": 7, "L9": 9}


@pytest.fixture
def world(tmp_path: Path):
    keys = {n: key(n) for n in BUSES}
    val, dso = key("val"), key("dso")
    members = [{"pub_key": dso.pub_hex, "role": "dso", "name": "dso"}] + [
        {"pub_key": k.pub_hex, "role": "prosumer", "name": n, "bus": BUSES[n]}
        for n, k in keys.items()
    ]
    balances = [{"account": k.pub_hex, "denom": "utoken", "amount": 10**11} for k in keys.values()]
    chain = LocalChain(
        tmp_path / "home",
        make_genesis("agents", T - 8 * SLOT, [(val.pub_hex, 1)], members, balances, CONTRACTS),
        val,
        T - 8 * SLOT,
    )
    meters = {n: key(f"meter-{n}") for n in BUSES}
    for n in BUSES:
        chain.submit(
            dso, "member.bind_meter", {"meter": meters[n].pub_hex, "prosumer": keys[n].pub_hex}
        )
    chain.produce(T - 7 * SLOT)
    yield chain, keys, meters, dso
    chain.close()


def test_prosumer_agent_posts_when_due(world) -> None:
    chain, keys, _, _ = world
    agent = ProsumerAgent(
        "DG2",
        keys["DG2"],
        2,
        [
            OrderSpec("offer", 300_000, 100_000, T, T + 2 * SLOT, post_at_ms=T - 6 * SLOT),
            OrderSpec("offer", 100_000, 90_000, T, T + SLOT, post_at_ms=T - 2 * SLOT),
        ],
    )
    assert agent.step(chain) == []  # block time T - 7 slots: nothing due
    chain.produce(T - 6 * SLOT)
    (first,) = agent.step(chain)
    assert agent.step(chain) == []  # never twice
    chain.produce(T - 6 * SLOT + 1)
    assert chain.result(first).ok and not agent.done
    assert chain.state(order_key(first))["offer"]["power_w"] == 300_000
    assert chain.state(open_count_key(agent.key.pub_hex)) == 1  # the second is not due yet
    with pytest.raises(ValueError, match="offer or bid"):
        OrderSpec("swap", 1, 1, T, T + SLOT).payload(2)


def test_dso_certifies_overlapping_trades_and_meters_settle(world, tmp_path: Path) -> None:
    chain, keys, meters, dso = world
    ev = make_evaluator("seed000_case1")
    agent = DsoAgent(
        dso,
        [
            GridPhase(
                0, ev, {2: keys["DG2"].pub_hex, 3: keys["DG3"].pub_hex, 4: keys["DG4"].pub_hex}
            )
        ],
        SLOT,
        tmp_path / "docs",
    )
    # tr1 DG2 -> L5 300 kW over t1-t3, tr2 DG3 -> L7 200 kW over t2-t3 (seed 000 Fig. 3)
    for n, kind, p, price, s, e in (
        ("DG2", "offer", 300_000, 100_000, 0, 2),
        ("L5", "bid", 300_000, 120_000, 0, 2),
    ):
        ProsumerAgent(
            n, keys[n], BUSES[n], [OrderSpec(kind, p, price, T + s * SLOT, T + e * SLOT)]
        ).step(chain)
    chain.produce(T - 6 * SLOT)
    assert agent.step(chain) == 3  # losses, reactive, certificate
    chain.produce(T - 6 * SLOT + 1)
    assert chain.state("market/match/m0")["status"] == "approved"
    for n, kind, p, price, s, e in (
        ("DG3", "offer", 200_000, 100_000, 1, 2),
        ("L7", "bid", 200_000, 120_000, 1, 2),
    ):
        ProsumerAgent(
            n, keys[n], BUSES[n], [OrderSpec(kind, p, price, T + s * SLOT, T + e * SLOT)]
        ).step(chain)
    chain.produce(T - 5 * SLOT)
    assert agent.step(chain) == 3
    chain.produce(T - 5 * SLOT + 1)
    assert chain.state("market/match/m1")["status"] == "approved"
    # the same intervals evaluated directly: t1 with tr1 alone, t2 with both superposed
    tr1, tr2 = TradeSpec("m0", 2, 5, 300.0), TradeSpec("m1", 3, 7, 200.0)
    alone, state = ev.certify([tr1], T, SLOT, ev.initial_state(), 100_000, "m0")
    both, _ = ev.certify([tr1, tr2], T + SLOT, SLOT, state, 100_000, "m1")
    # the second trade re-issued tr1's share from t2: both are in the loss record of t2
    rec_t2 = chain.state(f"market/lossrec/{T + SLOT}")
    assert {s["match_id"]: s["loss_w"] for s in rec_t2["shares"]} == {
        "m0": round(1000 * both.share_kw["m0"]),
        "m1": round(1000 * both.share_kw["m1"]),
    }
    assert rec_t2["total_loss_w"] == round(1000 * both.loss_kw)
    assert sum(s["loss_w"] for s in rec_t2["shares"]) < rec_t2["total_loss_w"]
    # tr1 alone in t1: its own record, unchanged by tr2
    assert chain.state(f"market/lossrec/{T}")["shares"] == [
        {
            "match_id": "m0",
            "loss_w": round(1000 * alone.share_kw["m0"]),
            "loss_w_without_ropf": round(1000 * alone.share_kw_without_ropf["m0"]),
        }
    ]
    # the R-OPF reduces losses; set-points and remuneration are the workflow's
    assert alone.loss_kw < alone.loss_kw_without_ropf
    sps = {sp["node"]: sp for sp in chain.state("market/reactive/m0")["setpoints"]}
    regs = {r.bus: r for r in alone.regulators}
    assert set(sps) == {2, 3, 4}
    assert sps[2]["q_var"] == round(1000 * regs[2].q_kvar)
    assert sps[2]["delta_q_var"] == round(1000 * regs[2].delta_q_kvar)  # from Q = 0 before t1
    assert sps[2]["utoken_per_slot"] == regs[2].utoken_per_slot > 0
    # the off-chain document is stored and its digest is on chain
    assert (tmp_path / "docs" / "m0.json").exists()
    assert chain.state("market/match/m0")["document_digest"] == agent.log[0]["document_digest"]
    # meters: exact schedule without deviation, then settlement of both slots of tr1
    sims = [MeterSim(n, meters[n], keys[n].pub_hex, T, T + 2 * SLOT, SLOT) for n in BUSES]
    chain.produce(T + SLOT - 1)
    assert sum(s.step(chain) for s in sims) == 0  # slot t1 has not ended
    chain.produce(T + 2 * SLOT)
    assert sum(s.step(chain) for s in sims) == 2 * len(BUSES)
    chain.produce(T + 2 * SLOT + 1)
    dg2 = next(s for s in sims if s.name == "DG2")
    assert [r["export_wh"] for r in dg2.readings] == [75_000, 75_000]
    assert chain.state("market/match/m0")["status"] == "settled"
    assert chain.state("market/match/m1")["status"] == "settled"
    assert all(s.done for s in sims)


def test_meter_deviation_is_bounded_and_repeatable(world) -> None:
    _, keys, meters, _ = world
    a = MeterSim("L5", meters["L5"], keys["L5"].pub_hex, T, T + SLOT, SLOT, 50_000, seed=3)
    b = MeterSim("L5", meters["L5"], keys["L5"].pub_hex, T, T + SLOT, SLOT, 50_000, seed=3)
    values = [a._deviate(100_000) for _ in range(200)]
    assert values == [b._deviate(100_000) for _ in range(200)]
    assert min(values) >= 95_000 and max(values) <= 105_000 and len(set(values)) > 50


def test_dso_rejects_an_overloading_trade_with_reasons(world, tmp_path: Path) -> None:
    chain, keys, _, dso = world
    agent = DsoAgent(dso, [GridPhase(0, make_evaluator("seed000_case1"), {})], SLOT)
    # 5 MW more from DG2 (rated 1.5 MVA) into bus 9: beyond what the DG and the cables carry
    ProsumerAgent("DG2", keys["DG2"], 2, [OrderSpec("offer", 5_000_000, 1, T, T + SLOT)]).step(
        chain
    )
    ProsumerAgent("L9", keys["L9"], 9, [OrderSpec("bid", 5_000_000, 10, T, T + SLOT)]).step(chain)
    chain.produce(T - 6 * SLOT)
    assert agent.step(chain) == 1  # a rejection carries no loss or reactive record
    chain.produce(T - 6 * SLOT + 1)
    rec = chain.state("market/match/m0")
    assert rec["status"] == "rejected" and rec["reasons"]
    assert any(r.startswith("line limit at line 8-9") for r in rec["reasons"])
    assert any(r.startswith("capability limit") and "bus 2" in r for r in rec["reasons"])
    # the bid stays open (and escrowed: 5 MW x 0.25 h x 10 utoken/kWh) for other sellers
    assert chain.balance("utoken", keys["L9"].pub_hex) == 10**11 - 12_500
    assert chain.state("market/pending") == []


def test_a_restarted_dso_agent_keeps_the_previous_setpoints(world, tmp_path: Path) -> None:
    chain, keys, _, dso = world
    regs = {b: keys[f"DG{b}"].pub_hex for b in (2, 3, 4)}

    def agent() -> DsoAgent:  # a fresh process: only the documents directory survives
        return DsoAgent(
            dso, [GridPhase(0, make_evaluator("seed000_case1"), regs)], SLOT, tmp_path / "docs"
        )

    def trade(seller: str, buyer: str, power_w: int, s: int) -> None:
        for n, kind, price in ((seller, "offer", 100_000), (buyer, "bid", 120_000)):
            spec = OrderSpec(kind, power_w, price, T + s * SLOT, T + 2 * SLOT)
            ProsumerAgent(n, keys[n], BUSES[n], [spec]).step(chain)

    trade("DG2", "L5", 300_000, 0)
    chain.produce(T - 6 * SLOT)
    assert agent().step(chain) == 3
    chain.produce(T - 6 * SLOT + 1)
    trade("DG3", "L7", 200_000, 1)
    chain.produce(T - 5 * SLOT)
    assert agent().step(chain) == 3  # another fresh agent certifies the second trade
    chain.produce(T - 5 * SLOT + 1)
    ev = make_evaluator("seed000_case1")
    tr1, tr2 = TradeSpec("m0", 2, 5, 300.0), TradeSpec("m1", 3, 7, 200.0)
    _, after_t1 = ev.certify([tr1], T, SLOT, ev.initial_state(), 100_000, "m0")
    both, _ = ev.certify([tr1, tr2], T + SLOT, SLOT, after_t1, 100_000, "m1")
    fresh, _ = ev.certify([tr1, tr2], T + SLOT, SLOT, ev.initial_state(), 100_000, "m1")
    on_chain = {
        sp["node"]: sp["delta_q_var"] for sp in chain.state("market/reactive/m1")["setpoints"]
    }
    # ΔQ is against the optimized t1 interval, not the initial state a restart would assume
    assert on_chain == {r.bus: round(1000 * r.delta_q_kvar) for r in both.regulators}
    assert on_chain != {r.bus: round(1000 * r.delta_q_kvar) for r in fresh.regulators}


def test_dso_rejects_a_trade_whose_buyer_cannot_escrow_the_extras(world, tmp_path: Path) -> None:
    """The approval escrows the buyer's reactive pay and loss charge at the cap; the agent
    checks that before posting, and rejects (with the reason) rather than leave the match
    pending behind an approval the chain would refuse."""
    chain, keys, _, dso = world
    agent = DsoAgent(dso, [GridPhase(0, make_evaluator("seed000_case1"), {})], SLOT)
    for n, kind in (("DG2", "offer"), ("L5", "bid")):
        ProsumerAgent(n, keys[n], BUSES[n], [OrderSpec(kind, 100_000, 10, T, T + SLOT)]).step(chain)
    chain.produce(T - 6 * SLOT)
    # 100 kW x 0.25 h x 10 utoken/kWh = 250 escrowed; the loss cap's charge is 25 % of that,
    # 62 utoken, and L5 keeps only 10 in its free balance
    spend = 10**11 - 250 - 10
    chain.submit(
        keys["L5"],
        "token.transfer",
        {"amount": spend, "denom": "utoken", "to": keys["DG3"].pub_hex},
    )
    chain.produce(T - 6 * SLOT + 1)
    assert chain.balance("utoken", keys["L5"].pub_hex) == 10
    assert agent.step(chain) == 1  # the rejection only
    chain.produce(T - 6 * SLOT + 2)
    rec = chain.state("market/match/m0")
    assert rec["status"] == "rejected"
    assert rec["reasons"] == [
        "the DSO could not certify the trade: the buyer cannot escrow 62 utoken for reactive "
        "pay and losses"
    ]
    assert chain.keys_with_prefix("market/losses/") == []
