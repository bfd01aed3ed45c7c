"""S2 billing rules (seed 001 Algorithm 1), hand-computed."""

from __future__ import annotations

import pytest

from gridledger.market.billing import BillingError, bill_hour, div_round_sym, reading_hour

T0 = 1_700_000_000_000
HOUR_MS = 3_600_000


def test_export_paid_at_dlmp_minus_deviation_penalty():
    # 1.2 kWh exported at 60 $/MWh = 60 000 utoken/kWh -> 72 000 utoken; scheduled 1.0 kWh,
    # 100 Wh tolerance: 100 Wh over at 20 000 utoken/kWh -> 2 000 utoken penalty
    bill = bill_hour(5, 1000, 1200, 60_000, 100, 20_000)
    assert (bill.energy_utoken, bill.penalty_utoken, bill.net_utoken) == (72_000, 2_000, 70_000)
    assert bill.deviation_wh == 200


def test_import_charged_and_within_tolerance_free():
    bill = bill_hour(0, -500, -520, 45_000, 50, 20_000)
    assert bill.energy_utoken == -23_400  # 0.52 kWh × 45 000
    assert bill.penalty_utoken == 0
    assert bill.net_utoken == -23_400


def test_penalty_both_ways_and_symmetric_rounding():
    short = bill_hour(1, 1000, 0, 60_000, 0, 10_000)
    assert short.penalty_utoken == 10_000 and short.net_utoken == -10_000
    assert div_round_sym(3, 2) == 2 and div_round_sym(-3, 2) == -2
    paid = bill_hour(2, 1, 1, 1_500, 0, 0).energy_utoken
    charged = bill_hour(2, -1, -1, 1_500, 0, 0).energy_utoken
    assert paid == 2 and charged == -2  # 1.5 utoken rounds away from zero both ways


def test_reading_hours():
    assert reading_hour(T0 + 5 * HOUR_MS, 3600, T0, 24) == 5
    with pytest.raises(BillingError, match=r"hour 24 is outside the schedule's horizon"):
        reading_hour(T0 + 24 * HOUR_MS, 3600, T0, 24)
    with pytest.raises(BillingError, match=r"hour -1 is outside"):
        reading_hour(T0 - HOUR_MS, 3600, T0, 24)
    with pytest.raises(BillingError, match="not on an hour"):
        reading_hour(T0 + 1000, 3600, T0, 24)
    with pytest.raises(BillingError, match="one hour"):
        reading_hour(T0, 900, T0, 24)
    with pytest.raises(BillingError, match="non-negative"):
        bill_hour(0, 0, 0, 1, -1, 0)
