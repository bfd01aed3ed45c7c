"""Run the demo market end to end on an embedded single-validator chain.

The chain's block time is driven forward in 5-minute steps of market time; at each step every
agent (prosumers, meters, DSO) looks at the chain and posts what is due, and blocks are cut
until nobody has anything more to say.  The agents run in this process, in turn, and reach the
chain only through the :class:`~gridledger.agents.client.ChainClient` calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridledger.agents.client import must
from gridledger.agents.dso_agent import DsoAgent, GridPhase, RankingSpec
from gridledger.agents.meter_sim import MeterSim
from gridledger.agents.prosumer_agent import OrderSpec, ProsumerAgent
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair, save_key
from gridledger.demo.localchain import LocalChain
from gridledger.demo.scenario import MIN_MS, PARTIES, SLOT_MS, Party, Timeline

CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]
STEP_MS = 5 * MIN_MS


@dataclass
class DemoWorld:
    """Everything the report needs: the chain, the actors and their keys."""

    home: Path
    chain: LocalChain
    timeline: Timeline
    keys: dict[str, KeyPair]
    parties: dict[str, Party]
    prosumers: dict[str, ProsumerAgent]
    meters: dict[str, MeterSim]
    dso: DsoAgent
    regulators: dict[str, dict[int, str]]  # phase -> bus -> party paid for reactive support
    order_labels: dict[str, tuple[str, str]] = field(default_factory=dict)  # txid -> phase, label
    seconds: dict[str, float] = field(default_factory=dict)


def _key(home: Path, name: str, role: str) -> KeyPair:
    k = KeyPair.generate()
    save_key(home / "keys" / f"{name}.json", k, role)
    return k


def build_world(
    home: Path,
    evaluator_factory: Callable[[str], Any],
    start_ms: int,
    progress: Callable[[str], None],
) -> DemoWorld:
    timeline = Timeline(start_ms)
    keys = {
        n: _key(home, n, r)
        for n, r in (("validator", "validator"), ("dso", "dso"), ("vendor", "vendor"))
    }
    parties = {p.name: p for p in PARTIES}
    for p in PARTIES:
        keys[p.name] = _key(home, p.name, "prosumer")
        keys[f"meter-{p.name}"] = _key(home, f"meter-{p.name}", "meter")
    members = [
        {"pub_key": keys["dso"].pub_hex, "role": "dso", "name": "DSO"},
        {"pub_key": keys["vendor"].pub_hex, "role": "vendor", "name": "vendor"},
    ]
    genesis = make_genesis(
        "gridledger-demo",
        timeline.genesis_ms,
        [(keys["validator"].pub_hex, 10)],
        members,
        [],
        CONTRACTS,
    )
    chain = LocalChain(home, genesis, keys["validator"], timeline.genesis_ms)
    progress(f"chain {chain.chain_id} at {home} (1 validator, contracts: market, settlement)")

    # the vendor whitelists its users, binds their meters; the DSO funds them and declares
    # which generation is renewable
    for p in PARTIES:
        must(
            chain.submit(
                keys["vendor"],
                "member.register",
                {"pub_key": keys[p.name].pub_hex, "role": "prosumer", "bus": p.bus, "name": p.name},
            ),
            f"register {p.name}",
        )
    chain.produce(timeline.genesis_ms + MIN_MS)
    for p in PARTIES:
        must(
            chain.submit(
                keys["vendor"],
                "member.bind_meter",
                {"meter": keys[f"meter-{p.name}"].pub_hex, "prosumer": keys[p.name].pub_hex},
            ),
            f"bind meter of {p.name}",
        )
        must(
            chain.submit(
                keys["dso"],
                "token.mint",
                {"to": keys[p.name].pub_hex, "denom": "utoken", "amount": p.funds_utoken},
            ),
            f"fund {p.name}",
        )
        if p.green:
            must(
                chain.submit(
                    keys["dso"],
                    "settlement.green",
                    {"prosumer": keys[p.name].pub_hex, "green": True},
                ),
                f"declare {p.name} green",
            )
    chain.produce(timeline.genesis_ms + 2 * MIN_MS)
    progress(
        f"registered {len(PARTIES)} prosumers and their meters; funded; height {chain.height()}"
    )

    prosumers: dict[str, ProsumerAgent] = {}
    grid_phases: list[GridPhase] = []
    rankings: list[RankingSpec] = []
    regulators: dict[str, dict[int, str]] = {}
    for i, ph in enumerate(timeline.phases):
        t1 = timeline.t1(i)
        ev = evaluator_factory(ph.scenario_name)
        regulators[ph.key] = ph.regulators(ev.regulator_buses)
        grid_phases.append(
            GridPhase(
                t1 - 30 * MIN_MS if i else 0,
                ev,
                {b: keys[n].pub_hex for b, n in regulators[ph.key].items()},
            )
        )
        for o in ph.orders():
            start, end = t1 + o.start_slot * SLOT_MS, t1 + o.end_slot * SLOT_MS
            spec = OrderSpec(
                o.kind,
                round(o.power_kw * 1000),
                o.price_utoken_per_kwh,
                start,
                end,
                post_at_ms=start - o.post_min_before_start * MIN_MS,
                green=parties[o.party].green,
                label=f"{ph.key}:{o.label}",
            )
            agent = prosumers.setdefault(
                o.party, ProsumerAgent(o.party, keys[o.party], parties[o.party].bus, [])
            )
            agent.profile.append(spec)
        for req in ph.scenario.ranking:
            at = t1 + ph.slot_of(req.at_ms) * SLOT_MS
            rankings.append(
                RankingSpec(
                    at - 15 * MIN_MS,
                    at,
                    req.buyer_bus,
                    req.power_kw,
                    tuple(int(c.split()[1]) for c in req.candidates),
                )
            )
    meters = {
        p.name: MeterSim(
            p.name,
            keys[f"meter-{p.name}"],
            keys[p.name].pub_hex,
            first_slot_ms=timeline.t1(0),
            last_slot_ms=timeline.end_ms,
            slot_ms=SLOT_MS,
            deviation_ppm=p.deviation_ppm,
            seed=k,
        )
        for k, p in enumerate(PARTIES)
    }
    dso = DsoAgent(keys["dso"], grid_phases, SLOT_MS, home / "dso" / "certificates", rankings)
    return DemoWorld(home, chain, timeline, keys, parties, prosumers, meters, dso, regulators)


def run_market(world: DemoWorld, progress: Callable[[str], None]) -> None:
    chain, tl = world.chain, world.timeline
    t = tl.t1(0) - 50 * MIN_MS
    phase_idx = -1
    while t <= tl.end_ms:
        idx = max([0] + [i for i in range(len(tl.phases)) if t >= tl.t1(i) - 45 * MIN_MS])
        if idx != phase_idx:
            phase_idx = idx
            progress(f"== {tl.phases[idx].title}")
        chain.produce(t)
        for _ in range(8):  # until quiet: each round may trigger the next (match -> certify)
            n = 0
            for agent in world.prosumers.values():
                n += len(agent.step(chain))
            n += world.dso.step(chain)
            for meter in world.meters.values():
                n += meter.step(chain)
            if n == 0:
                break
            block = chain.produce(chain.now_ms + 1000)
            _report_block(world, block, progress)
        t += STEP_MS


def trade_recs(world: DemoWorld, progress: Callable[[str], None]) -> None:
    """Green certificates are transferable and retirable: each green seller hands one REC to
    the buyer it served most, who retires it (claims the green energy)."""
    from gridledger.chain.contracts.settlement import rec_id

    chain = world.chain
    n = (chain.state("market/book") or {}).get("next_match", 0)
    served: dict[str, dict[str, int]] = {}
    for i in range(n):
        rec = chain.state(f"market/match/m{i}")
        if rec["status"] == "settled" and rec["match"]["green"]:
            m = rec["match"]
            served.setdefault(m["seller"], {}).setdefault(m["buyer"], 0)
            served[m["seller"]][m["buyer"]] += m["power_w"]
    names = {k.pub_hex: name for name, k in world.keys.items()}
    retire = []
    for seller, buyers in served.items():
        rid = rec_id(seller, 0)
        if chain.state(f"rec/{rid}") is None:
            continue
        buyer = max(buyers, key=lambda b: (buyers[b], b))
        must(
            chain.submit(world.keys[names[seller]], "rec.transfer", {"id": rid, "to": buyer}),
            "REC transfer",
        )
        retire.append((buyer, rid))
        progress(f"  {names[seller]} transfers REC {rid[:12]}… to {names[buyer]}")
    chain.produce(chain.now_ms + 1000)
    for buyer, rid in retire:
        must(chain.submit(world.keys[names[buyer]], "rec.retire", {"id": rid}), "REC retire")
        progress(f"  {names[buyer]} retires REC {rid[:12]}…")
    chain.produce(chain.now_ms + 1000)


def _report_block(world: DemoWorld, block: Any, progress: Callable[[str], None]) -> None:
    if block is None:
        return
    for raw in block.txs:
        from gridledger.chain.tx import tx_id

        out = world.chain.result(tx_id(raw).hex())
        for ev in out.events:
            a = ev.attributes
            if ev.type == "market.matched":
                progress(
                    f"  h{block.header.height} matched {a['match']}: "
                    f"{int(a['power_w']) / 1000:g} kW at {int(a['price']) / 1e6:g} token/kWh"
                )
            elif ev.type == "market.certified":
                why = f" ({a['reasons']})" if a.get("reasons") else ""
                progress(f"  h{block.header.height} certificate {a['match']}: {a['verdict']}{why}")
            elif ev.type == "settlement.settled":
                progress(
                    f"  h{block.header.height} settled {a['match']} slot "
                    f"{_clock(world, int(a['slot']))}: {int(a['delivered_wh']) / 1000:g} kWh"
                )
        if not out.ok:
            progress(f"  h{block.header.height} tx refused: {out.log}")


def _clock(world: DemoWorld, t_ms: int) -> str:
    for i in reversed(range(len(world.timeline.phases))):
        t1 = world.timeline.t1(i)
        if t_ms >= t1 - world.timeline.phase_ms // 2:
            k = (t_ms - t1) // SLOT_MS
            return f"t{k + 1}-t{k + 2}"
    return str(t_ms)


def run_demo(
    home: Path,
    evaluator_factory: Callable[[str], Any],
    progress: Callable[[str], None],
    start_ms: int | None = None,
) -> DemoWorld:
    t0 = time.perf_counter()
    if start_ms is None:
        # market time starts at the next whole hour of today (UTC); only its shape matters
        now = time.time_ns() // 1_000_000
        start_ms = now - now % (3_600_000) + 3_600_000
    world = build_world(home, evaluator_factory, start_ms, progress)
    world.seconds["setup"] = time.perf_counter() - t0
    run_market(world, progress)
    trade_recs(world, progress)
    world.seconds["market"] = time.perf_counter() - t0 - world.seconds["setup"]
    return world
