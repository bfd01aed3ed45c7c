"""The DR rules alone (market/dr.py): edge cases the contract tests do not reach."""

from __future__ import annotations

import pytest

from gridledger.market import dr as rules

DAY, H = rules.DAY_MS, rules.SLOT_MS
MONDAY = 1_767_571_200_000  # 2026-01-05T00:00Z
EVENT = MONDAY + 14 * DAY + 17 * H  # Monday two weeks later, 17 h


def _flat(wh: int):
    return lambda _slot: wh


def test_caiso_without_a_full_adjustment_window_is_unadjusted() -> None:
    # every history slot reads 1000 Wh; on the event day only 2 of the 3 window hours exist
    same_day = {EVENT - 4 * H: 5000, EVENT - 3 * H: 5000}
    b = rules.baseline("caiso_10in10", _flat(1000), same_day.get, EVENT, 2, EVENT - 9 * H, 10)
    assert b.adjustment_ppm == rules.PPM and b.baseline_wh == [1000, 1000]
    assert len(b.days) == 10 and b.adjustment == {"window_baseline_wh": 3000}


def test_a_low_window_is_capped_from_below() -> None:
    # window 3 x 100 = 300 against a baseline of 3000: 0.1, capped at 1 - 0.2 = 0.8
    b = rules.baseline("caiso_10in10", _flat(1000), _flat(100), EVENT, 1, EVENT - 9 * H, 10)
    assert b.adjustment_ppm == 800_000 and b.baseline_wh == [800]


def test_days_missing_a_reading_are_skipped_and_the_mean_floors() -> None:
    # day offsets 13 (Sunday) and 12 are weekend; 11 lacks its reading; 10, 9, 8 count
    values = {MONDAY + 10 * DAY + 17 * H: 10, MONDAY + 9 * DAY + 17 * H: 11}
    values[MONDAY + 8 * DAY + 17 * H] = 11
    b = rules.baseline("mean", values.get, lambda _s: None, EVENT, 1, EVENT - 9 * H, 3)
    assert [d - MONDAY // DAY for d in b.days] == [10, 9, 8]
    assert b.baseline_wh == [32 // 3] == [10]


def test_reduction_needs_every_event_hour_and_never_goes_negative() -> None:
    assert rules.verified_reduction_wh([100, 100], [50, None]) == 0
    assert rules.verified_reduction_wh([100, 100], [50, 200]) == 0  # 200 - 250 < 0
    assert rules.verified_reduction_wh([100, 100], [150, 20]) == 30  # summed, not per hour


def test_pay_within_and_over_budget() -> None:
    assert rules.incentive_pay([783], 500_000, 10**6) == ([391_500], 608_500)
    pays, refund = rules.incentive_pay([1806, 104], 10**6, 10**6)
    assert pays == [945_550, 54_450] and refund == 0
    with pytest.raises(ValueError, match="unknown baseline method"):
        rules.baseline("median", _flat(1), _flat(1), EVENT, 1, EVENT - H, 1)
