"""The demo's demand response event (``chain/contracts/dr.py``): an evening peak on the seed-000
microgrid overloads line 1-5, and the DSO calls the two prosumers on that feeder to cut.

The operating point is stated, not measured: every load at 2.4 × seed 000 Table II and the DGs
(PV) at 0 — line 1-5 then carries 107 % of its 130 A rating (``gridledger dr certify`` prints the
power flow).  The members are L5 (bus 5) and DG3 (bus 3, its bus load), both fed through 1-5.

Their meters report one reading per hour on the ten weekdays before the event (the hour of the
event and the three hours of the same-day adjustment window), all recorded before the
announcement; then the DSO announces, on the event day at 08:00, a one-hour event 18-19 h with
the CAISO 10-in-10 baseline (adjustment capped at ±20 %), escrows the budget and puts its
certificate's digest on chain (power flow before and after the requested 500 kW, split over the
two members in proportion to their load).  Both enrol, cut (L5 by 380 kW, DG3 by 120 kW),
their meters report, the DSO settles, and the report re-runs the power flow with the
*verified* reductions.  Embedded chain only (its block time is the demo's to move).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gridledger.agents.client import must
from gridledger.agents.dr_agent import (
    peak_operating_point,
    relief_certificate,
    split_request,
    with_reductions,
)
from gridledger.chain.contracts import dr
from gridledger.grid.cases import load_case
from gridledger.grid.powerflow import run_pf
from gridledger.market import dr as rules

Progress = Callable[[str], None]
CASE = "microgrid9"
LINE = "1-5"
PEAK_LOAD_PPM = 2_400_000
MEMBERS = ("DG3", "L5")  # the prosumers at buses 3 and 5, behind line 1-5
EVENT_HOUR = 18
REQUESTED_W = 500_000
CUT_W = {"L5": 380_000, "DG3": 120_000}  # what each member actually sheds
INCENTIVE_UTOKEN_PER_KWH = 2_000_000  # 2 tokens per kWh reduced
BUDGET_UTOKEN = 1_200_000_000
CAP_PPM = 200_000


def _peak_net() -> Any:
    return peak_operating_point(load_case(CASE), PEAK_LOAD_PPM)


def _peak_load_w(net: Any, bus: int) -> int:
    return round(float(net.load.loc[net.load["bus"] == bus, "p_mw"].sum()) * 1e6)


def _hour_wh(base_w: int, k: int, hour: int) -> int:
    """The hourly consumption on the k-th of the eleven weekdays (the event day is k = 10): the
    peak load in the event hour, 85 % in the afternoon, ±2 % from day to day (the same whatever
    the calendar date, so the demo's figures are too)."""
    level = base_w if hour == EVENT_HOUR else base_w * 85 // 100
    return level * (100 + (k * 7 + hour) % 5 - 2) // 100


def run_dr(chain: Any, plan: dict[str, Any], progress: Progress) -> None:
    from gridledger.demo.plan import key_of, party

    dso = key_of(plan, "dso")
    net = _peak_net()
    members = {name: party(plan, name) for name in MEMBERS}
    base_w = {name: _peak_load_w(net, p["bus"]) for name, p in members.items()}
    pubs = {name: key_of(plan, name).pub_hex for name in MEMBERS}
    first = rules.day_of(chain.time_ms()) + 1
    days = [d for d in range(first, first + 28) if rules.is_weekday(d)][:11]
    history, event_day = days[:10], days[10]
    start = event_day * rules.DAY_MS + EVENT_HOUR * rules.SLOT_MS
    hours = [*range(EVENT_HOUR - 4, EVENT_HOUR - 1), EVENT_HOUR]
    progress(
        f"== Demand response: line {LINE} of {CASE} at an evening peak; "
        f"{len(history)} weekdays of hourly readings for {', '.join(MEMBERS)}"
    )

    def produce(t: int) -> None:
        chain.produce(t)

    def reading(name: str, slot_ms: int, wh: int) -> None:
        meter = key_of(plan, f"meter-{name}")
        payload = {"meter": meter.pub_hex, "start_ms": slot_ms, "duration_s": 3600}
        payload |= {"import_wh": wh, "export_wh": 0}
        must(chain.submit(meter, "dr.reading", payload), f"DR reading of {name}")

    produce(history[-1] * rules.DAY_MS + 23 * rules.SLOT_MS)
    for name in MEMBERS:
        for k, d in enumerate(history):
            for h in hours:
                reading(name, d * rules.DAY_MS + h * rules.SLOT_MS, _hour_wh(base_w[name], k, h))
    produce(chain.now_ms + 1000)
    # the announcement: the DSO's certificate, then the event with the budget escrowed
    announce = event_day * rules.DAY_MS + 8 * rules.SLOT_MS
    produce(announce)
    split = split_request(REQUESTED_W, {str(members[n]["bus"]): base_w[n] for n in MEMBERS})
    cert, doc = relief_certificate(net, LINE, {int(b): w for b, w in split.items()})
    must(
        chain.submit(
            dso, "token.mint", {"to": dso.pub_hex, "denom": "utoken", "amount": BUDGET_UTOKEN}
        ),
        "DR budget",
    )
    produce(announce + 1000)
    opened = must(
        chain.submit(
            dso,
            "dr.open",
            {
                "start_ms": start,
                "n_slots": 1,
                "requested_w": REQUESTED_W,
                "incentive_utoken_per_kwh": INCENTIVE_UTOKEN_PER_KWH,
                "budget_utoken": BUDGET_UTOKEN,
                "eligible": sorted(pubs.values()),
                "method": "caiso_10in10",
                "baseline_days": rules.CAISO_DAYS,
                "adjustment_cap_ppm": CAP_PPM,
                "certificate": cert,
            },
        ),
        "DR event",
    )
    event = opened.txid
    out = Path(plan["home"]) / "dso" / "dr" / f"{event}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    produce(announce + 2000)
    progress(
        f"  DSO opens event {event[:12]}…: {REQUESTED_W / 1000:g} kW on {LINE} "
        f"({cert['loading_before_ppm'] / 1e4:.1f} % -> {cert['loading_after_ppm'] / 1e4:.1f} % "
        f"in its power flow), budget {BUDGET_UTOKEN / 1e6:,.0f} tokens escrowed"
    )
    for name in MEMBERS:
        must(chain.submit(key_of(plan, name), "dr.enrol", {"event": event}), f"{name} enrols")
    produce(announce + 3000)
    produce(start + rules.SLOT_MS)
    for name in MEMBERS:
        for h in hours:
            wh = _hour_wh(base_w[name], len(history), h)
            reading(
                name,
                event_day * rules.DAY_MS + h * rules.SLOT_MS,
                wh - CUT_W[name] * (h == EVENT_HOUR),
            )
    produce(chain.now_ms + 1000)
    must(chain.submit(dso, "dr.settle", {"event": event}), "DR settlement")
    produce(chain.now_ms + 1000)
    trace = chain.state(dr.trace_key(event))
    progress(
        f"  settled: {trace['reduction_wh'] / 1000:,.1f} kWh verified, "
        f"{trace['paid_utoken'] / 1e6:,.2f} tokens paid, {trace['refund_utoken'] / 1e6:,.2f} back"
    )
    plan["dr"] = {"event": event, "members": pubs, "certificate_doc": str(out)}


def summarize(plan: dict[str, Any], chain: Any) -> dict[str, Any] | None:
    """The event, its trace and the line's loading with the verified reductions."""
    spec = plan.get("dr")
    if spec is None:
        return None
    ev = chain.state(dr.event_key(spec["event"]))
    trace = chain.state(dr.trace_key(spec["event"]))
    if ev is None or trace is None:
        return None
    names = {pub: name for name, pub in spec["members"].items()}
    net = _peak_net()
    buses = {
        pub: next(p["bus"] for p in plan["parties"] if p["name"] == n) for pub, n in names.items()
    }
    # an hour's verified Wh is that hour's mean reduction in W
    verified = {buses[r["member"]]: r["reduction_wh"] for r in trace["members"]}
    line = [str(n).split(" ")[0] for n in net.branch["name"]].index(ev["certificate"]["line"])
    ex_post = run_pf(with_reductions(net, verified), regulator_control="q").loading_pct[line]
    return {
        "event": spec["event"],
        "line": ev["certificate"]["line"],
        "case": CASE,
        "method": ev["method"],
        "requested_w": ev["requested_w"],
        "loading_before_pct": ev["certificate"]["loading_before_ppm"] / 1e4,
        "loading_planned_pct": ev["certificate"]["loading_after_ppm"] / 1e4,
        "loading_verified_pct": float(ex_post),
        "certificate": ev["certificate"]["digest"],
        "members": [
            {
                "name": names[r["member"]],
                "days": len(r["baseline_days"]),
                "adjustment_ppm": r["adjustment_ppm"],
                "baseline_wh": sum(r["baseline_wh"]),
                "metered_wh": sum(m or 0 for m in r["metered_wh"]),
                "reduction_wh": r["reduction_wh"],
                "pay_utoken": r["pay_utoken"],
            }
            for r in trace["members"]
        ],
        "paid_utoken": trace["paid_utoken"],
        "refund_utoken": trace["refund_utoken"],
        "budget_utoken": ev["budget_utoken"],
    }


def render(s: dict[str, Any] | None) -> list[str]:
    if s is None:
        return []
    lines = [
        "",
        f"Demand response (dr contract): line {s['line']} of {s['case']} at "
        f"{s['loading_before_pct']:.1f} %; event {s['event'][:12]}… asks "
        f"{s['requested_w'] / 1000:g} kW ({s['method']}), certificate {s['certificate'][:12]}… "
        f"plans {s['loading_planned_pct']:.1f} %; with the verified reductions "
        f"{s['loading_verified_pct']:.1f} %",
    ]
    for m in s["members"]:
        lines.append(
            f"  {m['name']}: baseline {m['baseline_wh'] / 1000:,.1f} kWh ({m['days']} days, "
            f"adjustment {m['adjustment_ppm'] / 1e4:.1f} %), metered "
            f"{m['metered_wh'] / 1000:,.1f} kWh, reduction {m['reduction_wh'] / 1000:,.1f} kWh, "
            f"paid {m['pay_utoken'] / 1e6:,.2f} tokens"
        )
    lines.append(
        f"  paid {s['paid_utoken'] / 1e6:,.2f} of the {s['budget_utoken'] / 1e6:,.2f}-token "
        f"budget; {s['refund_utoken'] / 1e6:,.2f} back to the DSO"
    )
    return lines
