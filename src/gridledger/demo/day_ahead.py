"""The demo's day-ahead DER schedule (seed 001): one ADMM round with the aggregator as a
contract (S1), then billing of the metered day at the round's DLMPs (S2), on the demo's chain.

The feeder is case33bw with seed 001's DER placement (33 nodes, one agent each, as in the
paper). The vendor registers each node's agent as a prosumer and binds a meter to it; the DSO
funds them and opens the round; every agent (`agents/der_agent.py`, the same class the agent
processes of `gridledger schedule --on-chain` run) solves its eq. 15 at the chain's z and ξ and
submits its signed copies; the contract averages, moves the duals and opens the next iteration
until the iteration limit. The chain's block time then moves past the scheduled day and every
meter posts its 24 hourly readings, each seeded up to 1 % off the schedule (8 % for every eighth
node); S2 pays or charges each at the node's DLMP and penalizes deviations beyond 2 kWh.

Embedded chain only: its block time is the demo's to move, so a day passes in a moment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gridledger.agents.client import ChainClient, must
from gridledger.agents.der_agent import DerAgent, open_round
from gridledger.chain.contracts.aggregator import round_key
from gridledger.chain.contracts.billing import bill_key
from gridledger.chain.keys import KeyPair, load_key, save_key

Progress = Callable[[str], None]
FEEDER = "case33bw"
FEEDER_NODES = 33
ROUND = "day-ahead"
MAX_ITER = 40  # case33bw per node: the schedule as run is within 0.1 % from iteration ≈ 27
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
FUNDS_UTOKEN = 1_000_000_000  # 1,000 tokens per node for the day's energy (≈ 300 at most)
POOL_UTOKEN = 10_000_000_000  # the DSO's pool pays the exporters
TOLERANCE_WH = 2_000  # 2 kWh in an hour: nodes here draw ≈ 50–600 kW
PENALTY_UTOKEN_PER_KWH = 100_000  # 0.10 token per kWh beyond the tolerance
DEVIATION_PPM = 10_000  # meters read up to ±1 % off the schedule ...
SLOPPY_DEVIATION_PPM = 80_000  # ... and every eighth node's up to ±8 % (it gets penalized)


def plan_day_ahead(home: Path, market_end_ms: int, n_nodes: int) -> dict[str, Any]:
    """Keys of the feeder's agents and meters, and the scheduled day: the first whole UTC day
    after the market phases."""
    keys = {}
    for i in range(n_nodes):
        for name, role in ((f"der-{i}", "prosumer"), (f"meter-der-{i}", "meter")):
            rel = f"keys/feeder/{name}.json"
            save_key(home / rel, KeyPair.generate(), role)
            keys[name] = rel
    return {
        "feeder": FEEDER,
        "round": ROUND,
        "max_iter": MAX_ITER,
        "day_start_ms": market_end_ms - market_end_ms % DAY_MS + DAY_MS,
        "keys": keys,
    }


def _key(plan: dict[str, Any], name: str) -> KeyPair:
    return load_key(Path(plan["home"]) / plan["day_ahead"]["keys"][name])[0]


def run_day_ahead(
    chain: Any, plan: dict[str, Any], dso: KeyPair, vendor: KeyPair, progress: Progress
) -> None:
    """Register, schedule on chain, meter and bill; ``chain`` is the embedded LocalChain."""
    from gridledger.grid.admm import default_options
    from gridledger.grid.feeders import load_feeder

    spec = plan["day_ahead"]
    feeder = load_feeder(spec["feeder"])
    n = feeder.n_nodes
    if len(spec["keys"]) != 2 * n:
        raise ValueError(f"the plan has keys for {len(spec['keys']) // 2} nodes, {feeder.name} {n}")
    agents = [_key(plan, f"der-{i}") for i in range(n)]
    meters = [_key(plan, f"meter-der-{i}") for i in range(n)]

    def produce() -> Any:
        return chain.produce(chain.now_ms + 1000)

    progress(f"== Day-ahead DER schedule (seed 001): {feeder.name}, {n} agents, ADMM on chain")
    _register(chain, dso, vendor, agents, meters, produce)
    options = replace(default_options(spec["max_iter"], workers=1), eps_pri=1e-9, eps_dual=1e-9)
    open_round(chain, dso, feeder, spec["round"], [a.pub_hex for a in agents], options)
    produce()
    ders = [DerAgent(feeder, i, agents[i], spec["round"]) for i in range(n)]
    shown = 0
    while not all(d.done for d in ders):
        submitted = sum(d.step(chain) for d in ders)
        produce()
        st = chain.state(round_key(spec["round"], "state"))
        done = len(st["history"])
        if done != shown and (done % 10 == 0 or st["status"] != "collecting"):
            shown = done
            k, r, s = st["history"][-1][:3]
            progress(f"  S1 iteration {k}: primal residual {r / 1e9:.3g} pu, dual {s / 1e9:.3g}")
        if not submitted and st["status"] == "collecting":
            raise RuntimeError(f"ADMM round stalled at iteration {st['k']}: {st.get('missing')}")
    _bill(chain, plan, dso, agents, meters, produce, progress)


def _register(
    chain: ChainClient,
    dso: KeyPair,
    vendor: KeyPair,
    agents: list[KeyPair],
    meters: list[KeyPair],
    produce: Callable[[], Any],
) -> None:
    for i, a in enumerate(agents):
        payload = {"pub_key": a.pub_hex, "role": "prosumer", "bus": i, "name": f"der-{i}"}
        must(chain.submit(vendor, "member.register", payload), f"register der-{i}")
    produce()
    for a, m in zip(agents, meters, strict=True):
        must(chain.submit(vendor, "member.bind_meter", {"meter": m.pub_hex, "prosumer": a.pub_hex}),
             "bind meter")  # fmt: skip
        mint = {"to": a.pub_hex, "denom": "utoken", "amount": FUNDS_UTOKEN}
        must(chain.submit(dso, "token.mint", mint), "fund a DER agent")
    pool = {"to": dso.pub_hex, "denom": "utoken", "amount": POOL_UTOKEN}
    must(chain.submit(dso, "token.mint", pool), "fund the DSO's pool")
    produce()


def _bill(
    chain: Any,
    plan: dict[str, Any],
    dso: KeyPair,
    agents: list[KeyPair],
    meters: list[KeyPair],
    produce: Callable[[], Any],
    progress: Progress,
) -> None:
    spec = plan["day_ahead"]
    rid, start = spec["round"], spec["day_start_ms"]
    payload = {
        "accounts": [a.pub_hex for a in agents],
        "meters": [m.pub_hex for m in meters],
        "penalty_utoken_per_kwh": PENALTY_UTOKEN_PER_KWH,
        "round": rid,
        "start_ms": start,
        "tolerance_wh": TOLERANCE_WH,
    }
    must(chain.submit(dso, "billing.open", payload), "billing.open")
    # the day runs; each meter reads every hour once it has ended
    chain.produce(max(chain.now_ms + 1000, start + DAY_MS + 60_000))
    schedule = chain.state(round_key(rid, "schedule"))
    rng = np.random.default_rng(7)
    for node, meter in enumerate(meters):
        spread = SLOPPY_DEVIATION_PPM if node % 8 == 7 else DEVIATION_PPM
        for hour, scheduled_wh in enumerate(schedule["p_w"][node]):
            off = rng.uniform(-spread, spread) / 1e6
            reading = {
                "duration_s": 3600,
                "net_wh": round(scheduled_wh * (1 + off)),
                "node": node,
                "round": rid,
                "start_ms": start + hour * HOUR_MS,
            }
            must(chain.submit(meter, "billing.reading", reading), f"reading {node}/{hour}")
        produce()
    progress(f"  S2 billed {len(meters) * 24} metered hours at the round's DLMPs")


def summarize(plan: dict[str, Any], chain: Any) -> dict[str, Any] | None:
    """The round and the bill as the chain holds them, with the schedule costed from the
    chain's integers and set against the centralized optimum (solved here)."""
    from gridledger.agents.admm_chain import evaluate_chain_schedule
    from gridledger.grid.distflow import solve_central
    from gridledger.grid.feeders import load_feeder

    spec = plan.get("day_ahead")
    if spec is None:
        return None
    rid = spec["round"]
    state = chain.state(round_key(rid, "state"))
    schedule = chain.state(round_key(rid, "schedule"))
    if state is None or schedule is None:
        return None
    feeder = load_feeder(spec["feeder"])
    central = solve_central(feeder)
    local_usd, ran = evaluate_chain_schedule(feeder, schedule)
    bills = [
        chain.state(bill_key(rid, node, hour))
        for node in range(feeder.n_nodes)
        for hour in range(feeder.horizon_h)
    ]
    bills = [b for b in bills if b is not None]
    dlmp = np.array(schedule["dlmp_utoken_per_kwh"]) / 1000.0  # utoken/kWh -> $/MWh
    last = state["history"][-1]
    return {
        "feeder": feeder.name,
        "agents": feeder.n_nodes,
        "iterations": len(state["history"]),
        "status": state["status"],
        "primal_residual_pu": last[1] / 1e9,
        "central_usd": central.objective_usd,
        "run_usd": ran.cost_usd,
        "gap_pct": 100 * (ran.cost_usd - central.objective_usd) / central.objective_usd,
        "admm_gap_pct": 100 * (local_usd - central.objective_usd) / central.objective_usd,
        "feasible": ran.feasible,
        "dlmp_min": float(dlmp.min()),
        "dlmp_max": float(dlmp.max()),
        "readings": len(bills),
        "paid_utoken": sum(b["energy_utoken"] for b in bills if b["energy_utoken"] > 0),
        "charged_utoken": -sum(b["energy_utoken"] for b in bills if b["energy_utoken"] < 0),
        "penalty_utoken": sum(b["penalty_utoken"] for b in bills),
        "penalized": sum(1 for b in bills if b["penalty_utoken"] > 0),
    }


def render(s: dict[str, Any] | None) -> list[str]:
    if s is None:
        return []
    return [
        "",
        f"Day-ahead DER schedule (seed 001): {s['feeder']}, {s['agents']} agents, the aggregator "
        f"on chain (S1): {s['iterations']} iterations ({s['status']}), primal residual "
        f"{s['primal_residual_pu']:.3g} pu",
        f"  schedule as run: {s['run_usd']:.2f} $ against the centralized optimum "
        f"{s['central_usd']:.2f} $ (gap {s['gap_pct']:.3f} %, "
        f"{'feasible' if s['feasible'] else 'NOT feasible'}); the agents' cost sum "
        f"{s['admm_gap_pct']:+.3f} %",
        f"  DLMPs {s['dlmp_min']:.2f}–{s['dlmp_max']:.2f} $/MWh; billing (S2): "
        f"{s['readings']} metered hours, paid {s['paid_utoken'] / 1e6:,.2f} and charged "
        f"{s['charged_utoken'] / 1e6:,.2f} tokens at the DLMPs, penalties "
        f"{s['penalty_utoken'] / 1e6:,.2f} tokens on {s['penalized']} hours off by more than "
        f"{TOLERANCE_WH} Wh",
    ]
