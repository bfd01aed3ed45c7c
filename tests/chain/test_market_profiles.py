"""Orders and matches with a power profile (one W per slot) on the real ledger application:
hand-computed per-slot matches, escrow, loss caps, per-slot settlement by hand, bad profiles
refused without a state change, and an attacker's longest profile bounded in state."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_market_contract import DSO, FUNDS, SLOT, Kit, T

from gridledger.chain import codes
from gridledger.chain.contracts.market import ESCROW, MAX_WINDOW_SLOTS, order_key
from gridledger.chain.contracts.settlement import done_key

PV = [0, 150_000, 300_000, 300_000, 150_000, 0]  # a PV seller's midday shape, W per slot
FLAT = [100_000, 100_000, 50_000, 50_000, 100_000, 100_000]


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    k = Kit(tmp_path / "home")
    yield k
    k.chain.close()


def _profiled_offer(kit: Kit, name: str, profile: list[int], price: int, start: int = T):
    return kit.offer(
        name, max(profile), price, start, start + len(profile) * SLOT, profile_w=profile
    )


def _profiled_bid(kit: Kit, name: str, profile: list[int], price: int, start: int):
    from test_market_contract import PARTIES

    return kit.send(
        kit.k[name],
        "market.bid",
        {
            "node": PARTIES[name],
            "power_w": max(profile),
            "max_price_utoken_per_kwh": price,
            "start_ms": start,
            "end_ms": start + len(profile) * SLOT,
            "profile_w": profile,
        },
    )


def _state_snapshot(kit: Kit) -> dict[bytes, bytes]:
    return dict(kit.chain.app._committed.items())


def _market_and_money(kit: Kit) -> dict[bytes, bytes]:
    """The state a refused order could have touched: the market's keys and every balance."""
    from gridledger.chain.contracts.tokens import balance_prefix

    prefixes = (b"market/", balance_prefix("utoken").encode())
    return {k: v for k, v in _state_snapshot(kit).items() if k.startswith(prefixes)}


def test_two_profiled_offers_fill_a_constant_and_a_profiled_bid_slot_by_slot(kit: Kit) -> None:
    a = _profiled_offer(kit, "dg2", PV, 100_000)
    b = _profiled_offer(kit, "dg3", FLAT, 110_000)
    constant = kit.bid("load5", 200_000, 120_000, T, T + 6 * SLOT)
    kit.block(T - 8 * SLOT)
    assert a.ok and b.ok and constant.ok, (a.log, b.log, constant.log)
    # cheapest first, per slot the smaller remainder:
    # m0 from the PV offer: min(PV, 200 kW) = 0, 150, 200, 200, 150, 0 kW;
    # the bid then lacks 200, 50, 0, 0, 50, 200 kW, and m1 from dg3 takes min(FLAT, that)
    m0, m1 = kit.match("m0")["match"], kit.match("m1")["match"]
    assert (m0["offer_id"], m1["offer_id"]) == (a.txid, b.txid)
    assert m0["profile_w"] == [0, 150_000, 200_000, 200_000, 150_000, 0]
    assert m0["power_w"] == 200_000  # the peak
    assert m1["profile_w"] == [100_000, 50_000, 0, 0, 50_000, 100_000]
    # the constant bid's remainder is now per slot: 100, 0, 0, 0, 0, 100 kW
    brec = kit.chain.state(order_key(constant.txid))
    assert brec["left_w"] == 100_000
    assert dict(brec["left"]) == {
        T: 100_000,
        T + SLOT: 0,
        T + 2 * SLOT: 0,
        T + 3 * SLOT: 0,
        T + 4 * SLOT: 0,
        T + 5 * SLOT: 100_000,
    }
    # escrow of the constant bid: 200 kW x 1.5 h x 0.12 token/kWh = 36 tokens
    assert kit.bal("load5") == FUNDS - 36_000_000
    # a profiled bid over slots 2-3 (100 kW then 50 kW) finds 100 kW left in the PV offer in
    # slot 2 (300 - 200) and 100 kW in slot 3: m2 = 100, 50 kW
    p_bid = _profiled_bid(kit, "load7", [100_000, 50_000], 120_000, T + 2 * SLOT)
    kit.block(T - 7 * SLOT)
    assert p_bid.ok, p_bid.log
    m2 = kit.match("m2")["match"]
    assert (m2["offer_id"], m2["profile_w"]) == (a.txid, [100_000, 50_000])
    # escrow: (25 + 12.5) kWh x 0.12 token/kWh = 4.5 tokens
    assert kit.bal("load7") == FUNDS - 4_500_000
    # the PV offer keeps 0, 0, 0, 50 kW, 0, 0 (unstored slots are at the profile)
    orec = kit.chain.state(order_key(a.txid))
    assert dict(orec["left"]) == {
        T + SLOT: 0,
        T + 2 * SLOT: 0,
        T + 3 * SLOT: 50_000,
        T + 4 * SLOT: 0,
    }
    # a constant bid against a constant offer is still one constant power (no profile)
    kit.offer("dg4", 10_000, 90_000, T + 6 * SLOT, T + 8 * SLOT)
    kit.bid("load5", 4_000, 95_000, T + 6 * SLOT, T + 8 * SLOT)
    kit.block(T - 6 * SLOT)
    m3 = kit.match("m3")["match"]
    assert m3["power_w"] == 4_000 and "profile_w" not in m3
    kit.supply_matches_balances()


def _loss(kit: Kit, mid: str, from_ms: int, loss_w: int):
    return kit.send(
        DSO,
        "market.losses",
        {
            "from_ms": from_ms,
            "total_loss_w": loss_w,
            "shares": [{"match_id": mid, "loss_w": loss_w}],
        },
    )


def test_a_profiled_trade_is_capped_and_settled_slot_by_slot(kit: Kit) -> None:
    from gridledger.chain.contracts.market import reactive_digest, trade_record

    _profiled_offer(kit, "dg2", PV, 100_000)
    kit.bid("load5", 200_000, 120_000, T, T + 6 * SLOT)
    kit.block(T - 8 * SLOT)
    rec = kit.match("m0")
    m = rec["match"]
    assert m["profile_w"] == [0, 150_000, 200_000, 200_000, 150_000, 0]
    # the loss cap follows the slot's power: 25 % of 0 W in slot 0, of 150 kW in slot 1
    over0 = _loss(kit, "m0", T, 1)
    over1 = _loss(kit, "m0", T + SLOT, 37_501)
    kit.block(T - 7 * SLOT)
    assert kit.final(over0).code == codes.INVALID_PAYLOAD
    assert "of its 0 W (0 W)" in kit.final(over0).log
    assert kit.final(over1).code == codes.INVALID_PAYLOAD
    assert "of its 150000 W (37500 W)" in kit.final(over1).log
    for from_ms, w in ((T, 0), (T + SLOT, 3_000), (T + 2 * SLOT, 5_000), (T + 4 * SLOT, 3_000)):
        assert _loss(kit, "m0", from_ms, w).ok
    kit.ok(DSO, "market.reactive", {"match_id": "m0", "setpoints": []})
    kit.block(T - 6 * SLOT)
    trade = trade_record(m, SLOT)
    # seed 000's trade record with its profile: (0+37.5+50+50+37.5+0) kWh = 175 kWh
    assert trade["profile_w"] == m["profile_w"] and trade["energy_wh"] == 175_000
    flat = {k: v for k, v in trade.items() if k != "profile_w"}
    cert = {
        "match_id": "m0",
        "match_digest": rec["digest"],
        "verdict": "approved",
        "reasons": [],
        "reactive_digest": reactive_digest([]),
    }
    without = kit.send(DSO, "market.certificate", {**cert, "trade": flat})
    kit.block(T - 5 * SLOT)
    assert kit.final(without).code == codes.INVALID_PAYLOAD  # the profile is part of the record
    before = kit.bal("load5")
    approve = kit.send(DSO, "market.certificate", {**cert, "trade": trade})
    kit.block(T - 4 * SLOT)
    assert kit.final(approve).ok, kit.final(approve).log
    # extras escrowed at approval: per slot, the loss cap (25 % of the slot's power) for
    # 0.25 h at 0.1 token/kWh: 0, 9 375 Wh -> 937 500, 12 500 Wh -> 1 250 000 utoken, ...
    assert before - kit.bal("load5") == 4_375_000
    # slot 0: nothing scheduled, nothing metered: nothing owed
    kit.block(T + SLOT)
    kit.read("dg2", T, export_wh=0)
    kit.read("load5", T, import_wh=0)
    # slot 1: 150 kW scheduled = 37.5 kWh, delivered exactly; loss 3 kW x 0.25 h = 750 Wh
    kit.block(T + 2 * SLOT)
    kit.read("dg2", T + SLOT, export_wh=37_500)
    kit.read("load5", T + SLOT, import_wh=37_500)
    # slot 2: 200 kW scheduled = 50 kWh; the seller exports 45 kWh (10 % short, 5 % tolerated)
    kit.block(T + 3 * SLOT)
    kit.read("dg2", T + 2 * SLOT, export_wh=45_000)
    kit.read("load5", T + 2 * SLOT, import_wh=50_000)
    kit.block(T + 3 * SLOT + 1000)
    d0, d1, d2 = (kit.chain.state(done_key("m0", T + k * SLOT)) for k in range(3))
    assert d0["scheduled_wh"] == 0 and d0["payments"] == []
    assert d1["scheduled_wh"] == 37_500 and d1["delivered_wh"] == 37_500
    # 37.5 kWh x 0.1 token/kWh = 3.75 tokens; 750 Wh of loss x 0.1 = 75 000 utoken
    assert {p["kind"]: p["amount"] for p in d1["payments"]} == {
        "energy": 3_750_000,
        "loss": 75_000,
    }
    assert d2["scheduled_wh"] == 50_000 and d2["delivered_wh"] == 45_000
    pays2 = {(p["kind"], p["payer"]): p["amount"] for p in d2["payments"]}
    seller, buyer = kit.k["dg2"].pub_hex, kit.k["load5"].pub_hex
    # 45 kWh x 0.1 = 4.5 tokens; loss 5 kW x 0.25 h = 1 250 Wh x 0.1 = 125 000 utoken;
    # seller's deviation beyond tolerance 5 000 - 2 500 = 2 500 Wh x 0.1 x 20 % = 50 000
    assert pays2 == {
        ("energy", buyer): 4_500_000,
        ("loss", buyer): 125_000,
        ("penalty", seller): 50_000,
    }
    # slot 3 has no new loss step: the slot-2 step (5 kW) is in force, below its 50 kW cap;
    # slot 5 (0 W) would inherit the slot-4 step of 3 kW, but is charged at most its cap: 0
    for k in (3, 4, 5):
        kit.block(T + (k + 1) * SLOT)
        wh = m["profile_w"][k] * SLOT // 3_600_000  # delivered as scheduled
        kit.read("dg2", T + k * SLOT, export_wh=wh)
        kit.read("load5", T + k * SLOT, import_wh=wh)
    kit.block(T + 6 * SLOT + 1000)
    d5 = kit.chain.state(done_key("m0", T + 5 * SLOT))
    assert d5["scheduled_wh"] == 0 and d5["loss_wh"] == 0 and d5["payments"] == []
    assert kit.match("m0")["status"] == "settled"
    assert kit.bal(ESCROW) == 0
    kit.supply_matches_balances()


@pytest.mark.parametrize(
    ("profile", "power_w", "slots", "message"),
    [
        ([100, 200], 200, 3, "profile_w has 2 entries; the window"),
        ([100, -1, 200], 200, 3, "profile_w[1] must be in [0,"),
        ([100, "150", 200], 200, 3, "profile_w[1] must be an integer W, got str"),
        ([100, True, 200], 200, 3, "profile_w[1] must be an integer W, got bool"),
        ([100, 150, 200], 150, 3, "power_w 150 must equal the profile's peak 200"),
        ("100,200,300", 300, 3, "profile_w must be a list of 1..96"),
        ([], 1, 3, "profile_w must be a list of 1..96"),
        ([1] * 97, 1, 97, "profile_w must be a list of 1..96"),
    ],
)
def test_bad_profiles_are_refused_and_change_nothing(kit, profile, power_w, slots, message):
    kit.block(T - 8 * SLOT)
    before = _market_and_money(kit)
    offer = kit.offer("dg2", power_w, 100, T, T + slots * SLOT, profile_w=profile)
    payload = {
        "node": 5,
        "power_w": power_w,
        "max_price_utoken_per_kwh": 100,
        "start_ms": T,
        "end_ms": T + slots * SLOT,
        "profile_w": profile,
    }
    bid = kit.send(kit.k["load5"], "market.bid", payload)
    for out in (offer, bid):
        if out.ok:  # admitted statelessly; refused when executed with the slot length
            kit.block(T - 7 * SLOT)
            out = kit.final(out)
        assert out.code == codes.INVALID_PAYLOAD, out.log
        assert message in out.log
    assert _market_and_money(kit) == before  # no order, no index key, nothing escrowed


def test_a_fractional_power_cannot_even_be_signed(kit: Kit) -> None:
    """Canonical encoding has no floats: a profile of kW fractions never reaches the chain
    (the CLI converts kW to whole W first)."""
    from gridledger.chain.encoding import EncodingError

    with pytest.raises(EncodingError, match="float cannot be encoded"):
        kit.offer("dg2", 200, 100, T, T + 2 * SLOT, profile_w=[100, 1.5])


def test_an_attackers_longest_profiles_grow_state_by_a_bounded_amount(kit: Kit) -> None:
    """The longest window the market allows, with a profile that differs in every slot, and a
    bid shaped against it so that every slot of both orders is partly filled: each record is
    bounded by MAX_WINDOW_SLOTS entries, whatever the attacker chooses."""
    kit.ok(DSO, "market.configure", {"max_window_slots": MAX_WINDOW_SLOTS})
    kit.block(T - 8 * SLOT)
    n = MAX_WINDOW_SLOTS
    big = 10**10  # MAX_POWER_W: the widest integers a profile may hold
    before = _state_snapshot(kit)
    offer = _profiled_offer(kit, "dg2", [big - k for k in range(n)], 1)
    bid = _profiled_bid(kit, "load5", [1 + k % 2 for k in range(n)], 1, T)
    kit.block(T - 7 * SLOT)
    assert kit.final(offer).ok and kit.final(bid).ok, (kit.final(offer).log, kit.final(bid).log)
    m0 = kit.match("m0")["match"]
    assert m0["profile_w"] == [1 + k % 2 for k in range(n)]
    after = _state_snapshot(kit)
    grown = {k: v for k, v in after.items() if before.get(k) != v}
    # per order: its record (payload with <= 96 profile entries, <= 96 remainders) and a
    # fixed number of index keys; per match: one record with <= 96 entries
    biggest = max(len(v) for v in grown.values())
    # measured: 3 997 bytes (the offer: 96 eleven-digit entries, 96 [slot, W] remainders)
    assert biggest < 6_000, biggest
    assert sum(len(k) + len(v) for k, v in grown.items()) < 20_000
    assert len(grown) < 40
    # a profile longer than the longest window is refused before it reaches the book
    too_long = _profiled_offer(kit, "dg3", [1] * (n + 1), 1)
    assert too_long.code == codes.INVALID_PAYLOAD and "1..96" in too_long.log
