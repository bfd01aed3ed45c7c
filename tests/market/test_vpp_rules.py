"""The VPP's integer rules by hand: clearing prices, bills capped by both sides' word, escrow."""

from __future__ import annotations

import numpy as np

from gridledger.market.vpp_rules import (
    SCALE,
    clearing_price,
    pair_bills,
    pair_residual,
    settle_bills,
)


def test_clearing_price_is_pi_minus_lambda_clipped():
    # λ in 1e-9 $/kWh: −0.25 $/kWh raises 120 000 utoken/kWh to 370 000
    assert clearing_price(-250_000_000, 120_000, 700_000) == 370_000
    assert clearing_price(-250_000_000, 120_000, 200_000) == 200_000  # the cap
    assert clearing_price(500_000_000, 120_000, 700_000) == 0  # never negative
    # λ/1000 rounds half up (towards +∞): −1.5 → −1, −1.501 → −2
    assert clearing_price(-1_500, 120_000, 700_000) == 120_001
    assert clearing_price(-1_501, 120_000, 700_000) == 120_002


def test_bills_take_the_smallest_agreed_quantity():
    # three prosumers, two hours; 0 buys from 1 (hour 0) and from 2 (hour 1)
    kwh = SCALE
    aux = [
        [[0, 0], [kwh, 0], [0, 2 * kwh]],
        [[-kwh, 0], [0, 0], [0, 0]],
        [[0, -2 * kwh], [0, 0], [0, 0]],
    ]
    lam = [[[0, 0]] * 3 for _ in range(3)]
    own = [
        [[kwh // 2, 0], [0, 2 * kwh]],  # 0 asked for only 0.5 kWh from 1
        [[-kwh, 0], [0, 0]],  # 1 offered 1 kWh to 0
        [[0, -3 * kwh // 2], [0, 0]],  # 2 offered only 1.5 kWh to 0 in hour 1
    ]
    bills = pair_bills(aux, lam, own, 120_000, 700_000)
    assert bills == [[0, 60_000, 180_000], [0, 0, 0], [0, 0, 0]]
    # an agent bounding its own bill knows only its own word
    mine = pair_bills(aux, lam, [own[0], None, None], 120_000, 700_000)
    assert mine[0] == [0, 60_000, 240_000]
    # one utoken per 1e9: 1 nano-kWh at 999 utoken/kWh rounds down to nothing
    tiny = pair_bills([[[0], [1]], [[-1], [0]]], [[[0]] * 2] * 2, [None, None], 999, 999)
    assert tiny == [[0, 0], [0, 0]]


def test_settlement_caps_by_escrow_and_acceptance():
    bills = [[0, 60, 40], [0, 0, 10], [0, 0, 0]]
    paid, refund = settle_bills(bills, [50, 100, 0], [True, True, True])
    assert paid == [[0, 30, 20], [0, 0, 10], [0, 0, 0]] and refund == [0, 90, 0]
    # 2 never accepted: nothing to or from it; 0 pays 1 in full and keeps the rest
    paid, refund = settle_bills(bills, [100, 100, 0], [True, True, False])
    assert paid == [[0, 60, 0], [0, 0, 0], [0, 0, 0]] and refund == [40, 100, 0]
    assert sum(map(sum, paid)) + sum(refund) == 200  # nothing made or lost


def test_seed_residual_sums_the_pair_norms():
    p = np.zeros((2, 2, 2), dtype=object)
    aux = np.zeros((2, 2, 2), dtype=object)
    aux[0, 1] = [3, 4]  # ‖·‖ = 5
    aux[1, 0] = [-6, -8]  # ‖·‖ = 10
    assert pair_residual(aux, p) == 15
