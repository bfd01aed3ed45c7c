"""Demand response rules in integers: like days, baselines, verified reductions, incentive pay.

Pure functions, shared by the on-chain contract (``chain/contracts/dr.py``) and by anyone who
re-derives an event's trace.  Times are block-time ms since the epoch (UTC); DR slots are one
hour (CAISO computes its baselines hourly); energies are Wh; money is utoken.

Baseline methods (``METHODS``):

* ``mean``: for each event slot, the mean (floor) of the member's consumption in the same slot
  of the last ``n_days`` like days;
* ``caiso_10in10``: the same over the last 10 like days, then the same-day adjustment: the
  ratio of the member's actual consumption in the three hours [start − 4 h, start − 1 h) of the
  event day to its baseline for those hours, capped to 1 ± ``cap_ppm``, multiplies every slot.

A *like day* has the event day's type (weekday Monday–Friday, or weekend; public holidays are
not modelled) and lies strictly **before the day of the announcement**, at most
``LOOKBACK_DAYS`` before the event; it counts only when the member has a reading for every slot
the method needs on that day.  Days are taken newest first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gridledger.market.settlement import allocate_pro_rata

DAY_MS = 86_400_000
SLOT_MS = 3_600_000
PPM = 1_000_000
WH_PER_KWH = 1000
METHODS = ("mean", "caiso_10in10")
CAISO_DAYS = 10
MAX_BASELINE_DAYS = 10
LOOKBACK_DAYS = 45  # CAISO's 10-in-10 looks back at most 45 days
ADJUSTMENT_HOURS = (4, 1)  # the adjustment window is [start - 4 h, start - 1 h)
MAX_ADJUSTMENT_CAP_PPM = 400_000

# (slot start ms) -> the member's metered consumption in Wh, or None when it cannot be used
Readings = Callable[[int], "int | None"]


def day_of(ms: int) -> int:
    return ms // DAY_MS


def is_weekday(day: int) -> bool:
    """1970-01-01 (day 0) was a Thursday: with Monday = 0 it is weekday number 3."""
    return (day + 3) % 7 < 5


def like_days(event_start_ms: int, announced_ms: int) -> list[int]:
    """Candidate baseline days, newest first: the event day's type, before the announcement's
    day, within ``LOOKBACK_DAYS`` of the event day."""
    event_day, cutoff = day_of(event_start_ms), day_of(announced_ms)
    weekday = is_weekday(event_day)
    first = event_day - LOOKBACK_DAYS
    return [d for d in range(cutoff - 1, first - 1, -1) if is_weekday(d) == weekday]


def adjustment_slots(event_start_ms: int) -> list[int]:
    before, after = ADJUSTMENT_HOURS
    return [event_start_ms - h * SLOT_MS for h in range(before, after, -1)]


def event_slots(event_start_ms: int, n_slots: int) -> list[int]:
    return [event_start_ms + k * SLOT_MS for k in range(n_slots)]


@dataclass(frozen=True)
class Baseline:
    days: list[int]  # the like days used (day numbers since the epoch), newest first
    raw_wh: list[int]  # per event slot, before any adjustment
    adjustment_ppm: int  # PPM = none
    baseline_wh: list[int]  # per event slot, what reductions are measured against
    adjustment: dict[str, int] = field(default_factory=dict)  # actual/baseline Wh of the window


def _mean(values: Sequence[int]) -> int:
    return sum(values) // len(values) if values else 0


def baseline(
    method: str,
    history: Readings,
    same_day: Readings,
    event_start_ms: int,
    n_slots: int,
    announced_ms: int,
    n_days: int,
    cap_ppm: int = 200_000,
) -> Baseline:
    """The member's baseline for an event (see the module docstring).  ``history`` gives the
    readings that may serve a baseline day (the contract passes only those recorded on chain
    before the announcement); ``same_day`` the event day's readings for the adjustment."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline method {method!r}; expected one of {METHODS}")
    slots = event_slots(event_start_ms, n_slots)
    adj = adjustment_slots(event_start_ms) if method == "caiso_10in10" else []
    offsets = [s - day_of(event_start_ms) * DAY_MS for s in slots + adj]
    want = CAISO_DAYS if method == "caiso_10in10" else n_days
    days: list[int] = []
    rows: list[list[int]] = []
    for d in like_days(event_start_ms, announced_ms):
        if len(days) == want:
            break
        row = [history(d * DAY_MS + off) for off in offsets]
        if all(v is not None for v in row):
            days.append(d)
            rows.append([int(v) for v in row if v is not None])
    raw = [_mean([r[k] for r in rows]) for k in range(len(slots))]
    if method == "mean" or not rows:
        return Baseline(days, raw, PPM, list(raw))
    window_base = sum(_mean([r[k] for r in rows]) for k in range(len(slots), len(offsets)))
    actual = [same_day(s) for s in adj]
    factor = PPM
    info: dict[str, int] = {"window_baseline_wh": window_base}
    if all(v is not None for v in actual) and window_base > 0:
        window_actual = sum(int(v) for v in actual if v is not None)
        info["window_actual_wh"] = window_actual
        factor = min(max(window_actual * PPM // window_base, PPM - cap_ppm), PPM + cap_ppm)
    return Baseline(days, raw, factor, [v * factor // PPM for v in raw], info)


def verified_reduction_wh(baseline_wh: Sequence[int], metered_wh: Sequence[int | None]) -> int:
    """max(0, Σ baseline − Σ metered) over the event; 0 unless every event slot was metered
    (an unmetered slot cannot be verified).  Summed over the event, not slot by slot, so that
    consuming more in one slot cancels a reduction in another."""
    if any(m is None for m in metered_wh):
        return 0
    return max(0, sum(baseline_wh) - sum(int(m) for m in metered_wh if m is not None))


def incentive_pay(
    reductions_wh: Sequence[int], utoken_per_kwh: int, budget_utoken: int
) -> tuple[list[int], int]:
    """Pay per member (incentive × reduction, floor) and what goes back to the opener; when
    the sum exceeds the budget, the budget is split pro rata to what each earned (exactly, by
    largest remainder)."""
    owed = [r * utoken_per_kwh // WH_PER_KWH for r in reductions_wh]
    pays = allocate_pro_rata(budget_utoken, owed) if sum(owed) > budget_utoken else owed
    return pays, budget_utoken - sum(pays)
