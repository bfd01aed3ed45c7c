"""The demo as plain data: keys, parties, every order with its block times, rankings, meters.

A plan is written to ``HOME/demo/plan.json`` so that agents running as separate processes
(``demo/agents_proc.py``) rebuild exactly the same actors from it.  Times are block times in ms;
every offset is a fraction of the market slot (15 minutes in the embedded demo, a few seconds
when the chain runs on the wall clock): bids are posted 2/3 of a slot before their start (ten
minutes of fifteen), the seller-selection offers 8/3 slots before, rankings one slot before the
bid they serve, and each phase starts four slots after the previous one ends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gridledger.agents.dso_agent import DsoAgent, GridPhase, RankingSpec
from gridledger.agents.meter_sim import MeterSim
from gridledger.agents.prosumer_agent import OrderSpec, ProsumerAgent
from gridledger.chain.keys import KeyPair, load_key, save_key
from gridledger.demo.scenario import PARTIES, PHASES, Phase

CONTRACTS = [
    "gridledger.chain.contracts.market",
    "gridledger.chain.contracts.settlement",
    "gridledger.chain.contracts.aggregator",  # S1, the day-ahead schedule (demo/day_ahead.py)
    "gridledger.chain.contracts.billing",  # S2
    "gridledger.chain.contracts.dr",  # demand response (demo/dr_phase.py)
]
PHASE_SLOTS = 5  # up to three trading slots, one for the last readings, one spare
LEAD_SLOTS = 4
MIN_LEAD_MS = 5_000


def _key(home: Path, name: str, role: str) -> str:
    rel = f"keys/{name}.json"
    save_key(home / rel, KeyPair.generate(), role)
    return rel


def make_plan(
    home: Path,
    start_ms: int,
    slot_ms: int,
    method: str | None = None,
    phases: tuple[Phase, ...] = PHASES,
    evaluators: dict[str, Any] | None = None,
    day_ahead: bool = False,
) -> dict[str, Any]:
    """Create the keys under ``home`` and describe the whole demo; ``evaluators`` (scenario name
    -> evaluator) tells which buses regulate on each grid; ``day_ahead`` adds the day-ahead
    DER schedule after the market (demo/day_ahead.py)."""
    from gridledger.agents.evaluator import make_evaluator

    keys = {
        n: _key(home, n, r)
        for n, r in (("validator", "validator"), ("dso", "dso"), ("vendor", "vendor"))
    }
    for p in PARTIES:
        keys[p.name] = _key(home, p.name, "prosumer")
        keys[f"meter-{p.name}"] = _key(home, f"meter-{p.name}", "meter")
    lead = LEAD_SLOTS * slot_ms
    # how long before a trade starts its bid, the ranking it needs and the selection offers are
    # posted: 10, 5 and 25 minutes of a 15-minute slot; on a wall-clock chain with slots of a
    # few seconds, at least 5, 2 and 2 s so that the DSO can certify before delivery
    bid_lead = max(slot_ms * 2 // 3, MIN_LEAD_MS)
    ranking_lead = max(slot_ms // 3, MIN_LEAD_MS * 2 // 5)
    offer_lead = max(slot_ms * 5 // 3, MIN_LEAD_MS * 2 // 5)
    t1s = [start_ms + lead + i * PHASE_SLOTS * slot_ms for i in range(len(phases))]
    plan_phases, orders, rankings = [], [], []
    for i, (ph, t1) in enumerate(zip(phases, t1s, strict=True)):
        ev = (evaluators or {}).get(ph.scenario_name) or make_evaluator(ph.scenario_name, method)
        plan_phases.append(
            {
                "key": ph.key,
                "title": ph.title,
                "scenario": ph.scenario_name,
                "case": ph.case,
                "t1_ms": t1,
                "n_slots": ph.n_slots,
                "ranking": bool(ph.scenario.ranking),
                "from_ms": t1 - 2 * slot_ms if i else 0,
                "regulators": {str(b): n for b, n in ph.regulators(ev.regulator_buses).items()},
            }
        )
        for o in ph.orders():
            start, end = t1 + o.start_slot * slot_ms, t1 + o.end_slot * slot_ms
            before = bid_lead + (ranking_lead + offer_lead if o.post_min_before_start == 40 else 0)
            orders.append(
                {
                    "party": o.party,
                    "kind": o.kind,
                    "power_w": round(o.power_kw * 1000),
                    "price": o.price_utoken_per_kwh,
                    "start_ms": start,
                    "end_ms": end,
                    "post_at_ms": start - before,
                    "label": f"{ph.key}:{o.label}",
                }
            )
        for req in ph.scenario.ranking:
            at = t1 + ph.slot_of(req.at_ms) * slot_ms
            post = at - bid_lead - ranking_lead
            rankings.append(
                {
                    "post_at_ms": post,
                    "at_ms": at,
                    "buyer_bus": req.buyer_bus,
                    "power_kw": req.power_kw,
                    "sellers": [int(c.split()[1]) for c in req.candidates],
                }
            )
    end_ms = start_ms + lead + len(phases) * PHASE_SLOTS * slot_ms
    plan = {
        "chain_id": "gridledger-demo",
        "start_ms": start_ms,
        "slot_ms": slot_ms,
        "end_ms": end_ms,
        "method": method,
        "contracts": CONTRACTS,
        "keys": keys,
        "home": str(home),
        "phases": plan_phases,
        "orders": orders,
        "rankings": rankings,
        "parties": [
            {
                "name": p.name,
                "bus": p.bus,
                "funds_utoken": p.funds_utoken,
                "green": p.green,
                "deviation_ppm": p.deviation_ppm,
            }
            for p in PARTIES
        ],
    }
    if day_ahead:
        from gridledger.demo.day_ahead import FEEDER_NODES, plan_day_ahead

        plan["day_ahead"] = plan_day_ahead(home, end_ms, FEEDER_NODES)
    save_plan(plan)
    return plan


def shift_plan(plan: dict[str, Any], delta_ms: int) -> dict[str, Any]:
    """The same plan ``delta_ms`` later: every block time in it moves, nothing else (keys,
    parties, powers, prices).  The demo with processes schedules its day once every agent
    process is ready, so that the DSO's cold start (imports, grid loading, first solves) is
    not taken from the time it has to certify before delivery."""
    if delta_ms < 0 or delta_ms % plan["slot_ms"]:
        raise ValueError(f"a plan moves by whole market slots forward, not {delta_ms} ms")
    if "day_ahead" in plan:
        raise ValueError("a plan with a day-ahead schedule cannot be moved")

    def moved(rec: dict[str, Any], *fields: str) -> dict[str, Any]:
        return {**rec, **{f: rec[f] + delta_ms for f in fields}}

    return {
        **moved(plan, "start_ms", "end_ms"),
        # the first phase is in force from 0 (always), the later ones from a block time
        "phases": [
            {**moved(ph, "t1_ms"), "from_ms": ph["from_ms"] + delta_ms if ph["from_ms"] else 0}
            for ph in plan["phases"]
        ],
        "orders": [moved(o, "start_ms", "end_ms", "post_at_ms") for o in plan["orders"]],
        "rankings": [moved(r, "post_at_ms", "at_ms") for r in plan["rankings"]],
    }


def save_plan(plan: dict[str, Any]) -> Path:
    """Write ``HOME/demo/plan.json`` atomically (agent processes read it)."""
    path = Path(plan["home"]) / "demo" / "plan.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan, indent=1))
    tmp.replace(path)
    return path


def load_plan(path: Path | str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def key_of(plan: dict[str, Any], name: str) -> KeyPair:
    return load_key(Path(plan["home"]) / plan["keys"][name])[0]


def party(plan: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in plan["parties"] if p["name"] == name)


def agents_for_role(
    plan: dict[str, Any], role: str, evaluators: dict[str, Any] | None = None
) -> list[Any]:
    """The agents of one role, exactly as the plan describes them."""
    if role == "prosumers":
        agents: dict[str, ProsumerAgent] = {}
        for o in plan["orders"]:
            p = party(plan, o["party"])
            spec = OrderSpec(
                o["kind"],
                o["power_w"],
                o["price"],
                o["start_ms"],
                o["end_ms"],
                post_at_ms=o["post_at_ms"],
                green=p["green"],
                label=o["label"],
            )
            agents.setdefault(
                p["name"], ProsumerAgent(p["name"], key_of(plan, p["name"]), p["bus"], [])
            ).profile.append(spec)
        return list(agents.values())
    if role == "meters":
        first = plan["phases"][0]["t1_ms"]
        return [
            MeterSim(
                p["name"],
                key_of(plan, f"meter-{p['name']}"),
                key_of(plan, p["name"]).pub_hex,
                first_slot_ms=first,
                last_slot_ms=plan["end_ms"],
                slot_ms=plan["slot_ms"],
                deviation_ppm=p["deviation_ppm"],
                seed=i,
            )
            for i, p in enumerate(plan["parties"])
        ]
    if role == "dso":
        from gridledger.agents.evaluator import make_evaluator

        phases = []
        for ph in plan["phases"]:
            ev = (evaluators or {}).get(ph["scenario"]) or make_evaluator(
                ph["scenario"], plan["method"]
            )
            phases.append(
                GridPhase(
                    ph["from_ms"],
                    ev,
                    {int(b): key_of(plan, n).pub_hex for b, n in ph["regulators"].items()},
                )
            )
        rankings = [
            RankingSpec(
                r["post_at_ms"], r["at_ms"], r["buyer_bus"], r["power_kw"], tuple(r["sellers"])
            )
            for r in plan["rankings"]
        ]
        return [
            DsoAgent(
                key_of(plan, "dso"),
                phases,
                plan["slot_ms"],
                Path(plan["home"]) / "dso" / "certificates",
                rankings,
            )
        ]
    raise ValueError(f"unknown role {role!r}; expected dso, meters or prosumers")
