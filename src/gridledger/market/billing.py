"""Billing rules of seed 001's contract S2 (Algorithm 1), in integers.

For one node and one hour of a stored schedule:

* the metered net energy ``metered_wh`` (export > 0, import < 0) is settled at the node's DLMP:
  ``energy_utoken = metered_wh · dlmp_utoken_per_kwh / 1000`` — positive: the node is paid,
  negative: it is charged;
* the deviation from the schedule beyond a tolerance is penalized:
  ``penalty_utoken = max(0, |metered_wh − scheduled_wh| − tolerance_wh) · penalty_utoken_per_kwh
  / 1000``;
* the node's net is ``energy_utoken − penalty_utoken``.

Units: energy in Wh, prices in utoken per kWh (1 token = 10⁶ utoken; with 1 token = 1 $, a DLMP
of 60 $/MWh is 60 000 utoken/kWh).  Divisions round half away from zero (symmetric, so paying
and charging the same energy give opposite amounts).
"""

from __future__ import annotations

from dataclasses import dataclass

MS_PER_HOUR = 3_600_000


class BillingError(ValueError):
    """A reading that cannot be billed against the schedule; the message says why."""


def div_round_sym(a: int, b: int) -> int:
    """a / b rounded half away from zero (b > 0)."""
    q = (2 * abs(a) + b) // (2 * b)
    return q if a >= 0 else -q


@dataclass(frozen=True)
class HourBill:
    hour: int
    scheduled_wh: int
    metered_wh: int
    deviation_wh: int
    energy_utoken: int  # > 0: paid to the node
    penalty_utoken: int  # ≥ 0: charged to the node
    net_utoken: int


def reading_hour(start_ms: int, duration_s: int, schedule_start_ms: int, horizon_h: int) -> int:
    """The schedule hour a reading covers; it must be exactly one hour of the horizon."""
    if duration_s != 3600:
        raise BillingError(f"a reading must cover one hour (3600 s), got {duration_s} s")
    offset = start_ms - schedule_start_ms
    if offset % MS_PER_HOUR:
        raise BillingError(f"reading starts at {start_ms}, not on an hour of the schedule")
    hour = offset // MS_PER_HOUR
    if not 0 <= hour < horizon_h:
        raise BillingError(
            f"reading for hour {hour} is outside the schedule's horizon (hours 0..{horizon_h - 1}"
            f" from {schedule_start_ms})"
        )
    return hour


def bill_hour(
    hour: int,
    scheduled_wh: int,
    metered_wh: int,
    dlmp_utoken_per_kwh: int,
    tolerance_wh: int,
    penalty_utoken_per_kwh: int,
) -> HourBill:
    if tolerance_wh < 0 or penalty_utoken_per_kwh < 0:
        raise BillingError("tolerance and penalty rate must be non-negative")
    deviation = metered_wh - scheduled_wh
    energy = div_round_sym(metered_wh * dlmp_utoken_per_kwh, 1000)
    excess = max(0, abs(deviation) - tolerance_wh)
    penalty = div_round_sym(excess * penalty_utoken_per_kwh, 1000)
    return HourBill(hour, scheduled_wh, metered_wh, deviation, energy, penalty, energy - penalty)
