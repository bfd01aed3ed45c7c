"""EV session rules (market/ev.py) by hand, and a session scheduled by the day-ahead ADMM."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gridledger.chain.contracts import ev as contract
from gridledger.grid.admm import AdmmOptions, solve_admm
from gridledger.grid.der import KW_PER_PU
from gridledger.grid.distflow import solve_central
from gridledger.grid.feeders import case33bw, head
from gridledger.market import ev

H = 3_600_000
DAY0 = 1_767_571_200_000  # 2026-01-05T00:00Z, the horizon's hour 0
WINDOW = ev.SocWindow(
    battery_wh=60_000, arrival_wh=30_000, soc_min_wh=20_000, soc_max_wh=54_000,
    max_discharge_wh=15_000,
)  # fmt: skip


def test_payments_by_hand() -> None:
    # 10_333 Wh at 250_000 utoken/kWh = 2_583_250 utoken; escrow 40 kWh at 300_000 = 12_000_000
    escrow = ev.escrow_utoken(40_000, 300_000)
    assert escrow == 12_000_000
    pay = ev.session_pay(10_333, 250_000, escrow)
    assert pay == ev.SessionPay(2_583_250, 9_416_750, 0, 0)
    # floored: 1 Wh at 999 utoken/kWh is 0.999 utoken, the driver pays 0
    assert ev.session_pay(1, 999, 1).driver_pays == 0
    # V2G: 15 kWh at 150_000 = 2_250_000, the whole escrow of the charge point
    v2g = ev.session_pay(5_000, 250_000, escrow, 15_000, 150_000, 2_250_000)
    assert (v2g.driver_pays, v2g.v2g_pay, v2g.v2g_refund) == (1_250_000, 2_250_000, 0)
    # never more than the escrow, whatever the record says
    assert ev.session_pay(10**6, 10**6, 5).driver_pays == 5


def test_reading_bounds() -> None:
    ev.check_reading(40_000, None, 40_000, 0, 0)
    with pytest.raises(ev.SessionRuleError, match="exceeds the authorised 40000 Wh"):
        ev.check_reading(40_000, None, 40_001, 0, 0)
    with pytest.raises(ev.SessionRuleError, match="no authorised V2G"):
        ev.check_reading(40_000, None, 0, 1, 1)
    ev.check_reading(40_000, WINDOW, 0, 10_000, 10_000)  # 30_000 - 10_000 = the floor
    with pytest.raises(ev.SessionRuleError, match="below the authorised 20000 Wh"):
        ev.check_reading(40_000, WINDOW, 0, 10_001, 1)
    # below the floor but only charging in this reading: allowed (the car climbs back)
    ev.check_reading(40_000, replace(WINDOW, arrival_wh=5_000), 1_000, 0, 0)
    with pytest.raises(ev.SessionRuleError, match="above the authorised 54000 Wh"):
        ev.check_reading(40_000, WINDOW, 24_001, 0, 0)
    with pytest.raises(ev.SessionRuleError, match="exceeds the authorised 15000 Wh"):
        ev.check_reading(40_000, WINDOW, 20_000, 15_001, 1)


def test_shapable_load_hours_by_hand() -> None:
    # plugged in at 17:20, deadline 07:40 next day, horizon from 00:00 of 24 h: hours 18..23
    plugged, deadline = DAY0 + 17 * H + 20 * 60_000, DAY0 + 31 * H + 40 * 60_000
    load = ev.shapable_load(30_000, 11_000, plugged, deadline, DAY0, 24)
    assert (load.start_hour, load.end_hour) == (18, 24)
    assert (load.energy_kwh, load.power_kw_min, load.power_kw_max) == (30.0, 0.0, 11.0)
    # 11 kW for 2 whole hours is 22 kWh: 30 kWh cannot be delivered
    with pytest.raises(ev.SessionRuleError, match="cannot be delivered"):
        ev.shapable_load(30_000, 11_000, DAY0 + 20 * H, DAY0 + 22 * H, DAY0, 24)
    with pytest.raises(ev.SessionRuleError, match="no whole hour"):
        ev.shapable_load(1_000, 11_000, DAY0 + 20 * H + 1, DAY0 + 21 * H, DAY0, 24)


def test_an_open_session_is_scheduled_by_the_day_ahead_admm() -> None:
    """A session plugged in at 14:30 with 40 kWh authorised and a deadline at 21:00 becomes the
    shapable load of feeder node 3 (replacing the one it had): the centralized SOCP and the ADMM
    agree on the optimum, and the EV's schedule delivers 40 kWh in hours 15..20 at <= 11 kW."""
    session = {
        "status": "open",
        "max_energy_wh": 40_000,
        "delivered_wh": 0,
        "rating_w": 11_000,
        "opened_ms": DAY0 + 14 * H + 30 * 60_000,
        "expiry_ms": DAY0 + 21 * H,
    }
    load = contract.shapable_load(session, DAY0, 24)
    assert (load.start_hour, load.end_hour, load.energy_kwh) == (15, 21, 40.0)
    feeder = head(case33bw(), 4)
    ders = list(feeder.ders)
    ders[3] = replace(ders[3], shapable=load)
    feeder = replace(feeder, ders=tuple(ders)).validate()
    central = solve_central(feeder)
    row = central.model.shp_nodes.index(3)
    ev_kw = central.model.shapable.value[row] * KW_PER_PU
    assert abs(ev_kw.sum() - 40.0) < 1e-5
    assert np.all(np.abs(ev_kw[:15]) < 1e-6) and np.all(np.abs(ev_kw[21:]) < 1e-6)
    assert ev_kw.max() <= 11.0 + 1e-6
    options = AdmmOptions(
        rho=50.0, over_relaxation=1.6, adaptive=False, eps_pri=1e-4, eps_dual=1e-4, max_iter=300
    )
    admm = solve_admm(feeder, options)
    assert admm.converged
    assert abs(admm.objective_usd - central.objective_usd) / central.objective_usd < 1e-4
    with pytest.raises(ev.SessionRuleError, match="only an open session"):
        contract.shapable_load({**session, "status": "closed"}, DAY0, 24)
