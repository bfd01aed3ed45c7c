"""Demand response on chain (seed 004: DR events, baselines, verified reductions, incentives).

* ``dr.open`` (dso; gridledger has no aggregator role): announces an event — an interval of
  whole one-hour slots in block time, the requested reduction (W), the incentive (utoken per kWh
  reduced), the eligible members, the baseline method (``market/dr.py``) and the DSO's
  certificate (the digest of a power flow before and after, and the loading of the line the
  event is called for, which must go from above to within its rating).  The budget is escrowed
  from the DSO at once: no event can pay more than it.  The block time of ``dr.open`` is the
  *announcement*: only readings recorded on chain before it, of days before its day, serve a
  baseline.
* ``dr.enrol`` (prosumer): an eligible member joins before the event starts, once, and not
  if it is enrolled in another event sharing an hour (a reduction is paid once).
* ``dr.reading`` (meter): a ``meter.reading`` of one whole hour slot (executed by the metering
  contract first: the meter's own key, intervals never overlap or go back), kept per member and
  slot with the block time it was recorded at.  ``meter.reading`` keeps only a meter's running
  totals, so it cannot serve a baseline.  A reading of a slot inside an event is refused unless
  the member is enrolled in that event and the event is not settled yet.
* ``dr.settle`` (the event's opener, once the event has ended): for each enrolled member its
  baseline, metered consumption, verified reduction max(0, Σ baseline − Σ metered) and pay
  (incentive × reduction, pro rata to the budget if over it); the rest of the budget goes back
  to the opener; the whole trace is recorded (``dr/trace/<event>``) so anyone can re-derive it.

State keys are built by the functions below (one home for each key format).
"""

from __future__ import annotations

import hashlib
from typing import Any, TypedDict

from gridledger.chain import codes
from gridledger.chain.contracts import metering, tokens
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    PayloadError,
    TxType,
    req_hash,
    req_int,
    req_key,
    req_str,
    require_fields,
)
from gridledger.chain.contracts.membership import member_key
from gridledger.market import dr as rules

# Escrowed budgets sit on an account nobody holds a key for (as the market's escrow does).
ESCROW = hashlib.sha256(b"gridledger/dr/escrow").hexdigest()
MAX_MEMBERS = 32  # eligible members per event
MAX_EVENT_SLOTS = 8  # an event lasts at most 8 hours
MAX_EVENTS_PER_SLOT = 8  # events whose interval covers one slot
MAX_INCENTIVE_UTOKEN_PER_KWH = 10**12
READING = next(t for t in metering.CONTRACT.tx_types if t.name == "meter.reading")


def event_key(event_id: str) -> str:
    return f"dr/event/{event_id}"


class DrCertificate(TypedDict):
    """The DSO's evidence that a line is overloaded without the event and within its rating
    with it (``dr.open``'s ``certificate``)."""

    digest: str
    line: str
    loading_before_ppm: int
    loading_after_ppm: int


class DrEvent(TypedDict):
    """A DR event in state (``dr/event/<id>``): the ``dr.open`` payload with its defaults filled
    in, written at opening, enrolled into, then settled (this contract); read by the demo and
    ``gridledger dr``."""

    budget_utoken: int
    certificate: DrCertificate
    eligible: list[str]  # member keys, sorted
    incentive_utoken_per_kwh: int
    method: str  # rules.METHODS
    n_slots: int
    requested_w: int
    start_ms: int
    adjustment_cap_ppm: int
    baseline_days: int
    announced_ms: int  # block time of the opening: readings before it make the baseline
    enrolled: list[str]
    opener: str
    status: str  # open | settled


def trace_key(event_id: str) -> str:
    return f"dr/trace/{event_id}"


def reading_key(member: str, slot_ms: int) -> str:
    return f"dr/reading/{member}/{slot_ms}"


def slot_events_key(slot_ms: int) -> str:
    return f"dr/slot/{slot_ms}"


def _get_event(ctx: Context, event_id: str) -> DrEvent:
    ev: DrEvent | None = ctx.state.get(event_key(event_id))
    if ev is None:
        raise ContractError(codes.NOT_FOUND, f"no DR event {event_id[:16]}…")
    return ev


# --- dr.open ------------------------------------------------------------------------------------
def _v_open(p: dict[str, Any]) -> None:
    require_fields(
        p,
        [
            "budget_utoken",
            "certificate",
            "eligible",
            "incentive_utoken_per_kwh",
            "method",
            "n_slots",
            "requested_w",
            "start_ms",
        ],
        ["adjustment_cap_ppm", "baseline_days"],
    )
    start = req_int(p, "start_ms", 0)
    if start % rules.SLOT_MS:
        raise PayloadError(f"start_ms must be a whole hour ({rules.SLOT_MS} ms), got {start}")
    req_int(p, "n_slots", 1, MAX_EVENT_SLOTS)
    req_int(p, "requested_w", 1, metering.MAX_METER_RATING_W)
    req_int(p, "incentive_utoken_per_kwh", 1, MAX_INCENTIVE_UTOKEN_PER_KWH)
    req_int(p, "budget_utoken", 1, tokens.MAX_AMOUNT)
    method = req_str(p, "method", choices=rules.METHODS)
    if method == "mean":
        req_int(p, "baseline_days", 1, rules.MAX_BASELINE_DAYS)
        if "adjustment_cap_ppm" in p:
            raise PayloadError("adjustment_cap_ppm applies only to the caiso_10in10 method")
    else:
        if p.get("baseline_days", rules.CAISO_DAYS) != rules.CAISO_DAYS:
            raise PayloadError(f"caiso_10in10 uses {rules.CAISO_DAYS} baseline days")
        req_int(p, "adjustment_cap_ppm", 0, rules.MAX_ADJUSTMENT_CAP_PPM)
    eligible = p["eligible"]
    if not isinstance(eligible, list) or not 1 <= len(eligible) <= MAX_MEMBERS:
        raise PayloadError(f"eligible must be a list of 1 to {MAX_MEMBERS} member keys")
    for i, k in enumerate(eligible):
        req_key({"eligible": k}, "eligible")
        if i and k <= eligible[i - 1]:
            raise PayloadError("eligible must be sorted and without duplicates")
    cert = p["certificate"]
    if not isinstance(cert, dict):
        raise PayloadError("certificate must be an object")
    require_fields(cert, ["digest", "line", "loading_after_ppm", "loading_before_ppm"])
    req_hash(cert, "digest")
    req_str(cert, "line", 64)
    before = req_int(cert, "loading_before_ppm", 0, 100 * rules.PPM)
    after = req_int(cert, "loading_after_ppm", 0, 100 * rules.PPM)
    if not (before > rules.PPM >= after):
        raise PayloadError(
            f"the certificate must show line {cert['line']!r} over its rating without the event "
            f"and within it with the event (loading {before} ppm -> {after} ppm)"
        )


def _x_open(ctx: Context, p: dict[str, Any]) -> None:
    start, n = p["start_ms"], p["n_slots"]
    if start <= ctx.time_ms:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"the event starts at {start}, not after block time {ctx.time_ms}",
        )
    for k in p["eligible"]:
        m = ctx.state.get(member_key(k))
        if m is None or m["role"] != "prosumer" or m["status"] != "active":
            raise ContractError(codes.NOT_FOUND, f"eligible {k[:16]}… is not an active prosumer")
    event_id = ctx.txid
    for slot in rules.event_slots(start, n):
        ids = ctx.state.get(slot_events_key(slot)) or []
        if len(ids) >= MAX_EVENTS_PER_SLOT:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"slot {slot} is already in {MAX_EVENTS_PER_SLOT} DR events",
            )
        ctx.state.set(slot_events_key(slot), [*ids, event_id])
    tokens.debit(ctx, "utoken", ctx.sender, p["budget_utoken"])
    tokens.credit(ctx, "utoken", ESCROW, p["budget_utoken"])
    # the payload's fields (the validator allows no others) and the defaults: stored with
    # sorted keys, so listing them here writes the same bytes as spreading the payload
    event: DrEvent = {
        "budget_utoken": p["budget_utoken"],
        "certificate": p["certificate"],
        "eligible": p["eligible"],
        "incentive_utoken_per_kwh": p["incentive_utoken_per_kwh"],
        "method": p["method"],
        "n_slots": p["n_slots"],
        "requested_w": p["requested_w"],
        "start_ms": p["start_ms"],
        "adjustment_cap_ppm": p.get("adjustment_cap_ppm", 0),
        "baseline_days": p.get("baseline_days", rules.CAISO_DAYS),
        "announced_ms": ctx.time_ms,
        "enrolled": [],
        "opener": ctx.sender,
        "status": "open",
    }
    ctx.state.set(event_key(event_id), event)
    ctx.emit(
        "dr.opened",
        event=event_id,
        start_ms=start,
        end_ms=start + n * rules.SLOT_MS,
        requested_w=p["requested_w"],
        budget=p["budget_utoken"],
        certificate=p["certificate"]["digest"],
    )


# --- dr.enrol -----------------------------------------------------------------------------------
def _v_event(p: dict[str, Any]) -> None:
    require_fields(p, ["event"])
    req_hash(p, "event")


def _x_enrol(ctx: Context, p: dict[str, Any]) -> None:
    ev = _get_event(ctx, p["event"])
    if ev["status"] != "open" or ctx.time_ms >= ev["start_ms"]:
        raise ContractError(
            codes.INVALID_PAYLOAD, "enrolment is closed: the event has started or is settled"
        )
    if ctx.sender not in ev["eligible"]:
        raise ContractError(codes.UNAUTHORIZED, "the sender is not eligible for this event")
    if ctx.sender in ev["enrolled"]:
        raise ContractError(codes.ALREADY_EXISTS, "already enrolled in this event")
    # one reduction is paid once: no enrolment in two events that share an hour
    for slot in rules.event_slots(ev["start_ms"], ev["n_slots"]):
        for other in ctx.state.get(slot_events_key(slot)) or []:
            if other != p["event"] and ctx.sender in _get_event(ctx, other)["enrolled"]:
                raise ContractError(
                    codes.ALREADY_EXISTS,
                    f"already enrolled in DR event {other[:16]}…, which shares the hour {slot}",
                )
    ev["enrolled"].append(ctx.sender)
    ctx.state.set(event_key(p["event"]), ev)
    ctx.emit("dr.enrolled", event=p["event"], member=ctx.sender)


# --- dr.reading ---------------------------------------------------------------------------------
def _v_reading(p: dict[str, Any]) -> None:
    READING.validate(p)
    if 1000 * p["duration_s"] != rules.SLOT_MS or p["start_ms"] % rules.SLOT_MS:
        raise PayloadError("a DR reading covers exactly one whole hour (duration_s 3600)")


def _x_reading(ctx: Context, p: dict[str, Any]) -> None:
    READING.execute(ctx, p)  # the metering rules, unchanged
    member = metering.meter_prosumer(ctx)  # READING checked it; this names its type
    start = p["start_ms"]
    if start + rules.SLOT_MS > ctx.time_ms:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"the slot [{start}, {start + rules.SLOT_MS}) has not ended at block time "
            f"{ctx.time_ms}",
        )
    key = reading_key(member, start)
    if ctx.state.get(key) is not None:
        raise ContractError(codes.ALREADY_EXISTS, f"member already metered for slot {start}")
    for event_id in ctx.state.get(slot_events_key(start)) or []:
        ev = _get_event(ctx, event_id)
        if ev["status"] != "open":
            raise ContractError(
                codes.INVALID_PAYLOAD, f"DR event {event_id[:16]}… covering this slot is settled"
            )
        if member not in ev["enrolled"]:
            raise ContractError(
                codes.UNAUTHORIZED,
                f"member {member[:16]}… is not enrolled in DR event {event_id[:16]}… "
                "covering this slot",
            )
    ctx.state.set(
        key,
        {
            "export_wh": p["export_wh"],
            "import_wh": p["import_wh"],
            "recorded_ms": ctx.time_ms,
            "tx": ctx.txid,
        },
    )
    ctx.emit("dr.reading", member=member, slot=start, import_wh=p["import_wh"])


# --- dr.settle ----------------------------------------------------------------------------------
def member_trace(ctx_state_get: Any, ev: DrEvent, member: str) -> dict[str, Any]:
    """One member's baseline, metered energy and verified reduction for an event, from state
    (``ctx_state_get(key)``): the contract's computation, usable by anyone holding the state."""

    def recorded(slot: int) -> dict[str, Any] | None:
        r: dict[str, Any] | None = ctx_state_get(reading_key(member, slot))
        return r

    def history(slot: int) -> int | None:
        r = recorded(slot)
        return r["import_wh"] if r is not None and r["recorded_ms"] < ev["announced_ms"] else None

    def same_day(slot: int) -> int | None:
        r = recorded(slot)
        return None if r is None else r["import_wh"]

    b = rules.baseline(
        ev["method"],
        history,
        same_day,
        ev["start_ms"],
        ev["n_slots"],
        ev["announced_ms"],
        ev["baseline_days"],
        ev["adjustment_cap_ppm"],
    )
    metered = [same_day(s) for s in rules.event_slots(ev["start_ms"], ev["n_slots"])]
    return {
        "member": member,
        "baseline_days": b.days,
        "raw_baseline_wh": b.raw_wh,
        "adjustment_ppm": b.adjustment_ppm,
        "adjustment": b.adjustment,
        "baseline_wh": b.baseline_wh,
        "metered_wh": metered,
        "reduction_wh": rules.verified_reduction_wh(b.baseline_wh, metered),
    }


def _x_settle(ctx: Context, p: dict[str, Any]) -> None:
    ev = _get_event(ctx, p["event"])
    if ctx.sender != ev["opener"]:
        raise ContractError(codes.UNAUTHORIZED, "only the event's opener settles it")
    if ev["status"] != "open":
        raise ContractError(codes.ALREADY_EXISTS, "the event is already settled")
    end = ev["start_ms"] + ev["n_slots"] * rules.SLOT_MS
    if ctx.time_ms < end:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"the event ends at {end}, after block time {ctx.time_ms}"
        )
    rows = [member_trace(ctx.state.get, ev, m) for m in ev["enrolled"]]
    pays, refund = rules.incentive_pay(
        [r["reduction_wh"] for r in rows], ev["incentive_utoken_per_kwh"], ev["budget_utoken"]
    )
    tokens.debit(ctx, "utoken", ESCROW, ev["budget_utoken"])
    for row, pay in zip(rows, pays, strict=True):
        row["pay_utoken"] = pay
        tokens.credit(ctx, "utoken", row["member"], pay)
        ctx.emit("dr.paid", event=p["event"], member=row["member"], amount=pay)
    tokens.credit(ctx, "utoken", ev["opener"], refund)
    ev["status"] = "settled"
    ctx.state.set(event_key(p["event"]), ev)
    ctx.state.set(
        trace_key(p["event"]),
        {
            "event": p["event"],
            "settled_ms": ctx.time_ms,
            "members": rows,
            "paid_utoken": sum(pays),
            "refund_utoken": refund,
            "reduction_wh": sum(r["reduction_wh"] for r in rows),
        },
    )
    ctx.emit(
        "dr.settled",
        event=p["event"],
        paid=sum(pays),
        refund=refund,
        reduction_wh=sum(r["reduction_wh"] for r in rows),
    )


DSO_ONLY = frozenset({"dso"})

CONTRACT = Contract(
    "dr",
    (
        TxType("dr.open", DSO_ONLY, _v_open, _x_open, max_payload_bytes=8192),
        TxType("dr.enrol", frozenset({"prosumer"}), _v_event, _x_enrol),
        TxType("dr.reading", frozenset({"meter"}), _v_reading, _x_reading),
        TxType("dr.settle", DSO_ONLY, _v_event, _x_settle),
    ),
)
