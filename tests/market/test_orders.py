"""Order validation and the integer energy/money arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridledger.market.orders import (
    DEFAULT_SLOT_MS,
    OrderError,
    bid_from_dict,
    cost_utoken,
    energy_wh,
    offer_from_dict,
    parse_bid,
    parse_offer,
    slots_of,
)

T0 = 1_700_000_100_000 // DEFAULT_SLOT_MS * DEFAULT_SLOT_MS
OFFER = {
    "node": 2,
    "power_w": 300_000,
    "regulation_var": 540_000,
    "price_utoken_per_kwh": 120_000,
    "start_ms": T0,
    "end_ms": T0 + 4 * DEFAULT_SLOT_MS,
}
BID = {
    "node": 5,
    "power_w": 300_000,
    "max_price_utoken_per_kwh": 150_000,
    "start_ms": T0,
    "end_ms": T0 + 2 * DEFAULT_SLOT_MS,
}


def test_energy_and_cost_by_hand() -> None:
    # 300 kW for 15 min = 75 kWh; at 0.12 token/kWh = 9 tokens = 9_000_000 utoken
    assert energy_wh(300_000, DEFAULT_SLOT_MS) == 75_000
    assert cost_utoken(75_000, 120_000) == 9_000_000
    # floors, never rounds up against the payer
    assert energy_wh(1, DEFAULT_SLOT_MS) == 0
    assert cost_utoken(999, 1) == 0


def test_parse_valid_orders() -> None:
    offer = parse_offer(OFFER, offer_id="o1", seller="alice")
    assert offer.power_w == 300_000 and not offer.green
    assert offer_from_dict(offer.to_dict()) == offer
    bid = parse_bid(BID, bid_id="b1", buyer="bob")
    assert bid_from_dict(bid.to_dict()) == bid
    # 300 kW x 30 min x 0.15 token/kWh = 22.5 tokens
    assert bid.max_cost_utoken() == 22_500_000
    assert slots_of(bid.start_ms, bid.end_ms, DEFAULT_SLOT_MS) == [T0, T0 + DEFAULT_SLOT_MS]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("power_w", 0, "power_w must be in"),
        ("power_w", 1.5, "power_w must be an integer"),
        ("power_w", True, "power_w must be an integer"),
        ("price_utoken_per_kwh", -1, "price_utoken_per_kwh must be in"),
        ("end_ms", T0, "must be after start_ms"),
        ("start_ms", T0 + 1, "aligned"),
        ("node", "2", "node must be an integer"),
    ],
)
def test_bad_offer_fields_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(OrderError, match=message):
        parse_offer({**OFFER, field: value}, offer_id="o", seller="s")


def test_missing_field_and_bad_green() -> None:
    with pytest.raises(OrderError, match="missing field 'max_price_utoken_per_kwh'"):
        parse_bid(
            {k: v for k, v in BID.items() if k != "max_price_utoken_per_kwh"}, bid_id="b", buyer="x"
        )
    with pytest.raises(OrderError, match="green"):
        parse_offer({**OFFER, "green": 1}, offer_id="o", seller="s")


@given(st.integers(0, 10**10), st.integers(0, 10**8), st.integers(0, 10**12))
def test_arithmetic_is_floor_of_exact(power_w: int, duration_ms: int, price: int) -> None:
    e = energy_wh(power_w, duration_ms)
    assert e * 3_600_000 <= power_w * duration_ms < (e + 1) * 3_600_000
    c = cost_utoken(e, price)
    assert c * 1000 <= e * price < (c + 1) * 1000
