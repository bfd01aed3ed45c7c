"""Settlement arithmetic of one slot of one trade, and its invariants."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridledger.market.orders import OrderError, cost_utoken
from gridledger.market.settlement import (
    SettlementParams,
    Transfer,
    allocate_pro_rata,
    pay_capped,
    reactive_for_slot,
    settle_slot,
)

SLOT = 900_000


def test_hand_computed_slot() -> None:
    # tr1 of seed 000: 300 kW for one 15-minute slot = 75 kWh at 0.12 token/kWh
    s = settle_slot(
        scheduled_wh=75_000,
        injected_wh=74_000,  # 1.3 % short: inside the 5 % tolerance
        consumed_wh=80_000,  # 6.7 % over: 1 250 Wh beyond tolerance
        price_utoken_per_kwh=120_000,
        loss_w=5_367,  # Table III, CASE 1, t1-t2 with R-OPF: 5.367 kW
        slot_ms=SLOT,
        reactive_utoken=[(2, 5_000)],
    )
    assert s.delivered_wh == 74_000
    assert s.loss_wh == 1_341  # 5 367 W x 0.25 h = 1 341.75 Wh, floored
    assert s.transfers == (
        Transfer("buyer", "seller", 8_880_000, "energy"),
        Transfer("buyer", "dso", 160_920, "loss"),
        Transfer("buyer", "regulator:2", 5_000, "reactive"),
        Transfer("buyer", "dso", 30_000, "penalty"),  # 1 250 Wh x 120 000 x 20 % / 1000
    )


def test_loss_split_and_zero_amounts_dropped() -> None:
    s = settle_slot(
        scheduled_wh=1_000,
        injected_wh=1_000,
        consumed_wh=1_000,
        price_utoken_per_kwh=1_000,
        loss_w=4_000,
        slot_ms=SLOT,
        params=SettlementParams(loss_buyer_share_ppm=250_000),
    )
    # 1 000 Wh of loss at 1 000 utoken/kWh = 1 000 utoken: 250 buyer, 750 seller
    assert [(t.payer, t.amount_utoken, t.kind) for t in s.transfers] == [
        ("buyer", 1_000, "energy"),
        ("buyer", 250, "loss"),
        ("seller", 750, "loss"),
    ]
    # a trade that reduces losses is charged nothing
    s2 = settle_slot(
        scheduled_wh=0,
        injected_wh=0,
        consumed_wh=0,
        price_utoken_per_kwh=9,
        loss_w=-500,
        slot_ms=SLOT,
    )
    assert s2.transfers == () and s2.loss_wh == 0


def test_bad_inputs_named() -> None:
    with pytest.raises(OrderError, match="injected_wh must be a non-negative integer"):
        settle_slot(
            scheduled_wh=1,
            injected_wh=-1,
            consumed_wh=1,
            price_utoken_per_kwh=1,
            loss_w=0,
            slot_ms=SLOT,
        )
    with pytest.raises(OrderError, match="reactive remuneration for node 3 is negative"):
        settle_slot(
            scheduled_wh=1,
            injected_wh=1,
            consumed_wh=1,
            price_utoken_per_kwh=1,
            loss_w=0,
            slot_ms=SLOT,
            reactive_utoken=[(3, -1)],
        )
    with pytest.raises(OrderError, match="loss_buyer_share_ppm"):
        SettlementParams(loss_buyer_share_ppm=1_000_001)
    with pytest.raises(ValueError, match="non-negative"):
        allocate_pro_rata(-1, [1])


def test_reactive_rate_per_slot() -> None:
    assert reactive_for_slot(4_000_001, SLOT) == 1_000_000  # a quarter hour, floored


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**9), min_size=1, max_size=12))
def test_pro_rata_is_exact_and_fair(total: int, weights: list[int]) -> None:
    shares = allocate_pro_rata(total, weights)
    wsum = sum(weights)
    if wsum == 0:
        assert shares == [0] * len(weights)
        return
    assert sum(shares) == total
    for share, w in zip(shares, weights, strict=True):
        exact = Fraction(total * w, wsum)
        assert exact - 1 < share < exact + 1


slot_inputs = st.fixed_dictionaries(
    {
        "scheduled_wh": st.integers(0, 10**8),
        "injected_wh": st.integers(0, 10**8),
        "consumed_wh": st.integers(0, 10**8),
        "price_utoken_per_kwh": st.integers(0, 10**9),
        "loss_w": st.integers(-(10**6), 10**7),
        "reactive_utoken": st.lists(
            st.tuples(st.integers(1, 9), st.integers(0, 10**9)), max_size=3
        ),
    }
)


@settings(max_examples=300)
@given(slot_inputs, st.integers(0, 10**6))
def test_slot_invariants(inputs: dict, buyer_share_ppm: int) -> None:
    params = SettlementParams(loss_buyer_share_ppm=buyer_share_ppm)
    s = settle_slot(**inputs, slot_ms=SLOT, params=params)
    assert all(t.amount_utoken > 0 for t in s.transfers)
    assert all(t.payer in ("buyer", "seller") and t.payer != t.payee for t in s.transfers)
    energy = [t for t in s.transfers if t.kind == "energy"]
    # the seller is never paid for more than was scheduled, injected or consumed
    assert sum(t.amount_utoken for t in energy) == cost_utoken(
        s.delivered_wh, inputs["price_utoken_per_kwh"]
    )
    assert s.delivered_wh <= min(
        inputs["scheduled_wh"], inputs["injected_wh"], inputs["consumed_wh"]
    )
    loss = sum(t.amount_utoken for t in s.transfers if t.kind == "loss")
    assert loss == cost_utoken(s.loss_wh, inputs["price_utoken_per_kwh"])


@settings(max_examples=200)
@given(st.lists(st.tuples(slot_inputs, st.integers(0, 10**9), st.integers(0, 10**9)), max_size=10))
def test_capped_payments_conserve_money_and_never_overdraw(runs: list) -> None:
    """Executing settlements with pay_capped: balances stay >= 0, money only moves."""
    for inputs, buyer_funds, seller_funds in runs:
        balances = {"buyer": buyer_funds, "seller": seller_funds}
        total = sum(balances.values())
        s = settle_slot(**inputs, slot_ms=SLOT)
        for t in s.transfers:
            paid, short = pay_capped(balances.get(t.payer, 0), t.amount_utoken)
            assert paid + short == t.amount_utoken and paid >= 0 and short >= 0
            balances[t.payer] -= paid
            balances[t.payee] = balances.get(t.payee, 0) + paid
            assert min(balances.values()) >= 0
        assert sum(balances.values()) == total
