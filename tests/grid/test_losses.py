"""Global-method loss allocation (seed 000 eq. 5)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridledger.grid.losses import LossAllocationError, global_method, loss_increment_kw


def test_eq5_hand_computed():
    # ΔPtot = 17.019 kW, Ltot = 4826.3 + 300 kW (seed 000 CASE 1 load plus trade tr1 of 300 kW).
    a = global_method(17.019, 5126.3, {"tr1": 300.0})
    assert a.by_trade_kw["tr1"] == pytest.approx(17.019 * 300.0 / 5126.3)
    assert a.non_traded_kw == pytest.approx(17.019 * 4826.3 / 5126.3)


def test_two_trades_share_pro_rata():
    a = global_method(10.0, 1000.0, {"a": 100.0, "b": 300.0})
    assert a.by_trade_kw == {"a": pytest.approx(1.0), "b": pytest.approx(3.0)}
    assert a.non_traded_kw == pytest.approx(6.0)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0, 1e4),
    st.lists(st.floats(0, 1e3), min_size=0, max_size=8),
    st.floats(0, 1e4),
)
def test_allocation_sums_exactly(loss, trades, extra_load):
    load = sum(trades) + extra_load
    if load <= 0:
        return
    a = global_method(loss, load, {f"t{i}": p for i, p in enumerate(trades)})
    assert math.isclose(a.total_allocated_kw(), loss, rel_tol=1e-12, abs_tol=1e-9)
    assert all(v >= 0 for v in a.by_trade_kw.values())


@pytest.mark.parametrize(
    ("loss", "load", "trades", "match"),
    [
        (-1.0, 10.0, {}, "total loss"),
        (1.0, 0.0, {}, "total load"),
        (1.0, 10.0, {"x": -2.0}, "trade 'x'"),
        (1.0, 10.0, {"x": float("nan")}, "trade 'x'"),
        (1.0, 10.0, {"x": 8.0, "y": 5.0}, "whole load"),
    ],
)
def test_bad_inputs_are_named(loss, load, trades, match):
    with pytest.raises(LossAllocationError, match=match):
        global_method(loss, load, trades)


def test_increment_is_signed():
    assert loss_increment_kw(15.27, 17.019) == pytest.approx(-1.749)
