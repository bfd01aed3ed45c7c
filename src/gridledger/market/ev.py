"""EV charging sessions in integers: escrow, payment, V2G pay, the SoC window, the ADMM load.

Pure functions, shared by the on-chain contract (``chain/contracts/ev.py``) and by anyone who
re-derives a session's settlement from its record.  Energies are Wh, prices utoken per kWh,
money utoken, times block-time ms since the epoch.

* The driver escrows ``cost(max_energy_wh, max_price)``; it pays ``cost(delivered_wh, price)``
  with ``delivered_wh <= max_energy_wh`` and ``price <= max_price``, so the payment never
  exceeds the escrow (``cost`` is floored and monotone in both arguments).
* V2G: the charge point escrows ``cost(max_discharge_wh, v2g_price)`` and pays the driver
  ``cost(discharged_wh, v2g_price)`` with ``discharged_wh <= max_discharge_wh``.
* The battery's energy during a session is ``arrival_wh + delivered_wh - discharged_wh``; it
  never exceeds ``soc_max_wh``, and a reading that discharges must leave it at or above
  ``soc_min_wh`` (the driver's authorised SoC window).
"""

from __future__ import annotations

from dataclasses import dataclass

from gridledger.grid.der import ShapableLoad
from gridledger.market.orders import MS_PER_HOUR, cost_utoken


class SessionRuleError(ValueError):
    """A reading or a schedule that breaks the session's authorisation; the message says how."""


@dataclass(frozen=True)
class SocWindow:
    """The driver's battery as authorised for V2G (all Wh)."""

    battery_wh: int
    arrival_wh: int
    soc_min_wh: int
    soc_max_wh: int
    max_discharge_wh: int


@dataclass(frozen=True)
class SessionPay:
    """Who gets what when a session closes (utoken)."""

    driver_pays: int  # to the charge point, out of the driver's escrow
    driver_refund: int  # the rest of the driver's escrow, back to the driver
    v2g_pay: int  # to the driver, out of the charge point's V2G escrow
    v2g_refund: int  # the rest of that escrow, back to the charge point


def escrow_utoken(energy_wh: int, price_utoken_per_kwh: int) -> int:
    """What a cap of ``energy_wh`` at ``price`` escrows (the largest payment it allows)."""
    return cost_utoken(energy_wh, price_utoken_per_kwh)


def battery_wh_after(window: SocWindow, delivered_wh: int, discharged_wh: int) -> int:
    return window.arrival_wh + delivered_wh - discharged_wh


def check_reading(
    max_energy_wh: int,
    window: SocWindow | None,
    delivered_wh: int,
    discharged_wh: int,
    discharge_in_reading_wh: int,
) -> None:
    """Raise :class:`SessionRuleError` unless the session's totals after a reading stay within
    the authorisation (``delivered_wh``, ``discharged_wh``: totals including the reading)."""
    if delivered_wh > max_energy_wh:
        raise SessionRuleError(
            f"delivered energy {delivered_wh} Wh exceeds the authorised {max_energy_wh} Wh"
        )
    if window is None:
        if discharged_wh:
            raise SessionRuleError("the session has no authorised V2G: it cannot discharge")
        return
    if discharged_wh > window.max_discharge_wh:
        raise SessionRuleError(
            f"discharged energy {discharged_wh} Wh exceeds the authorised "
            f"{window.max_discharge_wh} Wh"
        )
    level = battery_wh_after(window, delivered_wh, discharged_wh)
    if level > window.soc_max_wh:
        raise SessionRuleError(
            f"the battery would hold {level} Wh, above the authorised {window.soc_max_wh} Wh"
        )
    if discharge_in_reading_wh and level < window.soc_min_wh:
        raise SessionRuleError(
            f"discharging leaves the battery at {level} Wh, below the authorised "
            f"{window.soc_min_wh} Wh"
        )


def session_pay(
    delivered_wh: int,
    price_utoken_per_kwh: int,
    escrow: int,
    discharged_wh: int = 0,
    v2g_price_utoken_per_kwh: int = 0,
    v2g_escrow: int = 0,
) -> SessionPay:
    """The closing payments; each is capped by the escrow it comes out of (never overdrawn)."""
    pays = min(cost_utoken(delivered_wh, price_utoken_per_kwh), escrow)
    v2g = min(cost_utoken(discharged_wh, v2g_price_utoken_per_kwh), v2g_escrow)
    return SessionPay(pays, escrow - pays, v2g, v2g_escrow - v2g)


def shapable_load(
    energy_wh: int,
    rating_w: int,
    plugged_ms: int,
    deadline_ms: int,
    horizon_start_ms: int,
    horizon_hours: int,
) -> ShapableLoad:
    """The day-ahead ADMM's shapable load (seed 001 eq. 8) for a session: ``energy_wh`` within
    the whole hours between plug-in (rounded up) and the deadline (rounded down), at most the
    charge point meter's rating.  Raise :class:`SessionRuleError` when that is impossible."""
    start = -(-(plugged_ms - horizon_start_ms) // MS_PER_HOUR)
    end = min((deadline_ms - horizon_start_ms) // MS_PER_HOUR, horizon_hours)
    start = max(start, 0)
    if end <= start:
        raise SessionRuleError(
            f"the session has no whole hour of the horizon between plug-in and deadline "
            f"(hours {start} to {end})"
        )
    if energy_wh > rating_w * (end - start):  # W × h = Wh
        raise SessionRuleError(
            f"{energy_wh} Wh cannot be delivered at {rating_w} W in {end - start} h"
        )
    return ShapableLoad(
        energy_kwh=energy_wh / 1000,
        power_kw_min=0.0,
        power_kw_max=rating_w / 1000,
        start_hour=start,
        end_hour=end,
    )
