"""Run the demo market end to end, on an embedded chain or with a node and agent processes.

* ``run_embedded``: the embedded single-validator chain (``LocalChain``) with block time driven
  forward in steps of a third of a slot (5 minutes of market time); at each step every agent
  looks at the chain and posts what is due, and blocks are cut until nobody has more to say.
  The agents run in this process, in turn, and reach the chain only through the
  :class:`~gridledger.agents.client.ChainClient` calls.
* ``run_processes``: a real node process (``gridledger node start``, solo consensus on the wall
  clock) and three agent processes (``demo/agents_proc.py``: DSO, meters, prosumers) that use the
  node only through its HTTP API.  Market slots are a few seconds long so that the demo fits in
  a couple of minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gridledger.agents.client import ChainClient, must
from gridledger.chain.contracts.certificates import rec_key
from gridledger.chain.contracts.market import NEXT_MATCH, match_count, match_id, match_key
from gridledger.chain.contracts.membership import member_key
from gridledger.chain.genesis import make_genesis
from gridledger.demo.localchain import LocalChain
from gridledger.demo.plan import agents_for_role, key_of, make_plan, save_plan, shift_plan
from gridledger.market.orders import DEFAULT_SLOT_MS

Progress = Callable[[str], None]


def genesis_of(plan: dict[str, Any]) -> bytes:
    members = [
        {"pub_key": key_of(plan, "dso").pub_hex, "role": "dso", "name": "DSO"},
        {"pub_key": key_of(plan, "vendor").pub_hex, "role": "vendor", "name": "vendor"},
    ]
    return make_genesis(
        plan["chain_id"],
        plan["start_ms"],
        [(key_of(plan, "validator").pub_hex, 10)],
        members,
        [],
        plan["contracts"],
    )


WAIT_TIMEOUT_S = 30.0


def _wait_until(
    what: str,
    done: Callable[[], bool],
    produce: Callable[[], None],
    timeout_s: float = WAIT_TIMEOUT_S,
) -> None:
    """Produce blocks (or wait for them) until ``done()``; a clear error after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not on chain after {timeout_s} s")
        produce()


def _wait_for(
    client: ChainClient, key: str, produce: Callable[[], None], timeout_s: float = WAIT_TIMEOUT_S
) -> None:
    _wait_until(key, lambda: client.state(key) is not None, produce, timeout_s)


def setup(
    client: ChainClient, plan: dict[str, Any], produce: Callable[[], None], progress: Progress
) -> None:
    """The vendor whitelists the prosumers and binds their meters; the DSO sets the market slot,
    funds the parties and declares which generation is renewable."""
    vendor, dso = key_of(plan, "vendor"), key_of(plan, "dso")
    if plan["slot_ms"] != DEFAULT_SLOT_MS:
        must(client.submit(dso, "market.configure", {"slot_ms": plan["slot_ms"]}), "slot length")
    for p in plan["parties"]:
        must(
            client.submit(
                vendor,
                "member.register",
                {
                    "pub_key": key_of(plan, p["name"]).pub_hex,
                    "role": "prosumer",
                    "bus": p["bus"],
                    "name": p["name"],
                },
            ),
            f"register {p['name']}",
        )
    _wait_for(client, member_key(key_of(plan, plan["parties"][-1]["name"]).pub_hex), produce)
    for p in plan["parties"]:
        pub = key_of(plan, p["name"]).pub_hex
        must(
            client.submit(
                vendor,
                "member.bind_meter",
                {"meter": key_of(plan, f"meter-{p['name']}").pub_hex, "prosumer": pub},
            ),
            f"bind meter of {p['name']}",
        )
        must(
            client.submit(
                dso, "token.mint", {"to": pub, "denom": "utoken", "amount": p["funds_utoken"]}
            ),
            f"fund {p['name']}",
        )
        if p["green"]:
            must(
                client.submit(dso, "settlement.green", {"prosumer": pub, "green": True}),
                f"declare {p['name']} green",
            )
    last = plan["parties"][-1]
    _wait_for(client, member_key(key_of(plan, "meter-" + last["name"]).pub_hex), produce)
    progress(f"registered {len(plan['parties'])} prosumers and their meters; funded")


def trade_recs(
    client: ChainClient, plan: dict[str, Any], produce: Callable[[], None], progress: Progress
) -> None:
    """Green certificates are transferable and retirable: each green seller hands one REC
    (1 MWh, split off its first certificate record) to the buyer it served most, who retires
    it (claims the green energy)."""
    from gridledger.chain.contracts.settlement import rec_id
    from gridledger.market.recs import REC_WH

    names = {key_of(plan, p["name"]).pub_hex: p["name"] for p in plan["parties"]}
    n = match_count(client.state(NEXT_MATCH))
    served: dict[str, dict[str, int]] = {}
    for i in range(n):
        rec = client.state(match_key(match_id(i)))
        if rec["status"] == "settled" and rec["match"]["green"]:
            m = rec["match"]
            served.setdefault(m["seller"], {}).setdefault(m["buyer"], 0)
            served[m["seller"]][m["buyer"]] += m["power_w"]
    retire = []
    for seller, buyers in sorted(served.items()):
        rid = rec_id(seller, 0)
        first = client.state(rec_key(rid))
        if first is None:
            continue
        buyer = max(buyers, key=lambda b: (buyers[b], b))
        sent = must(
            client.submit(
                key_of(plan, names[seller]),
                "rec.transfer",
                {"id": rid, "to": buyer, "energy_wh": REC_WH},
            ),
            "REC transfer",
        )
        if first["energy_wh"] > REC_WH:
            rid = sent.txid  # the MWh handed over is a record of its own
        retire.append((buyer, rid))
        progress(f"  {names[seller]} transfers REC {rid[:12]}… to {names[buyer]}")
    for buyer, rid in retire:
        _wait_for_owner(client, rid, buyer, produce)
        must(client.submit(key_of(plan, names[buyer]), "rec.retire", {"id": rid}), "REC retire")
        progress(f"  {names[buyer]} retires REC {rid[:12]}…")
    for _, rid in retire:
        _wait_for_rec(client, rid, "status", "retired", produce)


def _wait_for_owner(client: ChainClient, rid: str, owner: str, produce: Callable[[], None]) -> None:
    _wait_for_rec(client, rid, "owner", owner, produce)


def _wait_for_rec(
    client: ChainClient,
    rid: str,
    field: str,
    value: str,
    produce: Callable[[], None],
    timeout_s: float = WAIT_TIMEOUT_S,
) -> None:
    """Until certificate ``rid`` has ``field == value`` (its transfer or retirement committed)."""
    _wait_until(
        f"REC {rid[:12]}… with {field} {value[:16]}",
        lambda: (client.state(rec_key(rid)) or {}).get(field) == value,
        produce,
        timeout_s,
    )


# --- embedded --------------------------------------------------------------------------------
def run_embedded(
    home: Path,
    progress: Progress,
    method: str | None = None,
    start_ms: int | None = None,
    phases: tuple[Any, ...] | None = None,
    day_ahead: bool = True,
    demand_response: bool = True,
) -> tuple[dict[str, Any], LocalChain]:
    if start_ms is None:
        # market time starts at the next whole hour (UTC); only its shape matters
        now = time.time_ns() // 1_000_000
        start_ms = now - now % 3_600_000 + 3_600_000
    from gridledger.demo.scenario import PHASES

    plan = make_plan(home, start_ms, DEFAULT_SLOT_MS, method, phases or PHASES, day_ahead=day_ahead)
    chain = LocalChain(home, genesis_of(plan), key_of(plan, "validator"), plan["start_ms"])
    progress(
        f"chain {chain.chain_id} at {home} (embedded, 1 validator; contracts: market, "
        "settlement, aggregator, billing, dr)"
    )
    slot = plan["slot_ms"]

    def produce() -> None:
        chain.produce(chain.now_ms + 1000)

    setup(chain, plan, produce, progress)
    agents = [
        *agents_for_role(plan, "prosumers"),
        *agents_for_role(plan, "dso"),
        *agents_for_role(plan, "meters"),
    ]
    t = plan["phases"][0]["t1_ms"] - slot * 10 // 3
    shown = -1
    while t <= plan["end_ms"]:
        idx = max([0] + [i for i, ph in enumerate(plan["phases"]) if t >= ph["t1_ms"] - 3 * slot])
        if idx != shown:
            shown = idx
            progress(f"== {plan['phases'][idx]['title']}")
        chain.produce(t)
        for _ in range(8):  # until quiet: each round may trigger the next (match -> certify)
            n = 0
            for agent in agents:
                res = agent.step(chain)
                n += len(res) if isinstance(res, list) else res
            if n == 0:
                break
            block = chain.produce(chain.now_ms + 1000)
            report_block(chain, plan, block, progress)
        t += slot // 3
    trade_recs(chain, plan, produce, progress)
    if day_ahead:
        from gridledger.demo.day_ahead import run_day_ahead

        run_day_ahead(chain, plan, key_of(plan, "dso"), key_of(plan, "vendor"), progress)
    if demand_response:
        from gridledger.demo.dr_phase import run_dr

        run_dr(chain, plan, progress)
    return plan, chain


def report_block(chain: LocalChain, plan: dict[str, Any], block: Any, progress: Progress) -> None:
    if block is None:
        return
    from gridledger.chain.tx import tx_id

    for raw in block.txs:
        out = chain.result(tx_id(raw).hex())
        for ev in out.events:
            a = ev.attributes
            h = block.header.height
            if ev.type == "market.matched":
                progress(
                    f"  h{h} matched {a['match']}: {int(a['power_w']) / 1000:g} kW at "
                    f"{int(a['price']) / 1e6:g} token/kWh"
                )
            elif ev.type == "market.certified":
                why = f" ({a['reasons']})" if a.get("reasons") else ""
                progress(f"  h{h} certificate {a['match']}: {a['verdict']}{why}")
            elif ev.type == "market.ranking":
                progress(f"  h{h} DSO seller ranking published")
            elif ev.type == "settlement.settled":
                progress(
                    f"  h{h} settled {a['match']} slot {slot_label(plan, int(a['slot']))}: "
                    f"{int(a['delivered_wh']) / 1000:g} kWh"
                )
        if not out.ok:
            progress(f"  h{block.header.height} tx refused: {out.log}")


def slot_label(plan: dict[str, Any], t_ms: int) -> str:
    slot = plan["slot_ms"]
    for ph in reversed(plan["phases"]):
        if t_ms >= ph["t1_ms"] - 2 * slot:
            k = (t_ms - ph["t1_ms"]) // slot
            return f"t{k + 1}-t{k + 2}"
    return str(t_ms)


# --- separate processes ----------------------------------------------------------------------
def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _start_solo(home: Path, plan: dict[str, Any], logs: Path) -> tuple[Any, list[str], Path]:
    """A solo node process (empty blocks on); returns (handle, API URLs, its database)."""
    from gridledger.node.home import NodeConfig
    from gridledger.node.process import start_node_process

    genesis = genesis_of(plan)
    (home / "data").mkdir(parents=True, exist_ok=True)
    (home / "genesis.json").write_bytes(genesis + b"\n")
    NodeConfig(
        plan["chain_id"],
        api="127.0.0.1:0",
        block_interval_ms=250,
        synchronous="NORMAL",
        validator_key=plan["keys"]["validator"],
    ).save(home)
    node = start_node_process(
        home,
        command=[sys.executable, "-m", "gridledger.demo.node_proc"],
        log_path=logs / "node.log",
    )
    return node, [node.url], home / "data" / "chain.db"


def _start_bft(home: Path, plan: dict[str, Any], validators: int) -> tuple[Any, list[str], Path]:
    """An N-validator BFT test network (node/bft_testnet.py) with the demo's members and
    contracts in its genesis; returns (handle, API URLs, validator 0's database)."""
    from gridledger.node.bft_testnet import start_testnet

    members = [
        {"pub_key": key_of(plan, "dso").pub_hex, "role": "dso", "name": "DSO"},
        {"pub_key": key_of(plan, "vendor").pub_hex, "role": "vendor", "name": "vendor"},
    ]
    net = start_testnet(
        home / "testnet",
        validators,
        chain_id=plan["chain_id"],
        members=members,
        contracts=plan["contracts"],
        empty_block_interval_s=0.5,
    )
    return net, list(net.api_urls), Path(net.nodes[0].home) / "data" / "chain.db"


READY_TIMEOUT_S = 300.0


def _start_when_ready(
    plan: dict[str, Any], procs: dict[str, subprocess.Popen], client: Any, logs: Path
) -> dict[str, Any]:
    """Wait until every agent process is ready (``ROLE.ready``), then move the plan so that its
    first slot starts as it would have from a warm start: the time the processes took to start
    is not taken from the DSO's time to certify before delivery.  Returns the moved plan, also
    written to ``plan.json`` for the processes to read."""
    demo_dir = Path(plan["home"]) / "demo"
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = list(procs)
    while waiting:
        for role in list(waiting):
            if (demo_dir / f"{role}.ready").exists():
                waiting.remove(role)
            elif procs[role].poll() is not None:
                raise RuntimeError(f"agent process {role} exited before it was ready; see {logs}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"agent process(es) {waiting} not ready after {READY_TIMEOUT_S} s")
        time.sleep(0.05)
    slot_ms = plan["slot_ms"]
    now = client.time_ms() + 2000
    start_ms = max(plan["start_ms"], now - now % slot_ms + slot_ms)
    moved = shift_plan(plan, start_ms - plan["start_ms"])
    save_plan(moved)
    return moved


def run_processes(
    home: Path,
    progress: Progress,
    method: str | None = None,
    slot_s: int = 6,
    validators: int = 1,
    phases: tuple[Any, ...] | None = None,
) -> tuple[dict[str, Any], LocalChain, Path]:
    """Validator process(es) and three agent processes on the wall clock; returns the plan, the
    chain (read back from a validator's database once everything has stopped) and that
    database's path."""
    from gridledger.agents.runner import HttpChain
    from gridledger.demo.scenario import PHASES

    slot_ms = slot_s * 1000
    now = time.time_ns() // 1_000_000 + 2000 + (8000 if validators > 1 else 0)
    start_ms = now - now % slot_ms + slot_ms  # orders' windows are aligned to slots
    plan = make_plan(home, start_ms, slot_ms, method, phases or PHASES)
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    if validators > 1:
        handle, urls, db = _start_bft(home, plan, validators)
        progress(
            f"BFT testnet of {validators} validator processes: {', '.join(urls)} "
            f"({slot_s} s market slots)"
        )
    else:
        handle, urls, db = _start_solo(home, plan, logs)
        progress(
            f"node process {handle.pid} at {urls[0]} (solo consensus, wall clock, "
            f"{slot_s} s market slots)"
        )
    procs: dict[str, subprocess.Popen] = {}
    try:
        client = HttpChain(urls[0])
        setup(client, plan, lambda: time.sleep(0.1), progress)
        plan_file = home / "demo" / "plan.json"
        go_file = home / "demo" / "go"
        for stale in (
            go_file,
            *(home / "demo" / f"{r}.ready" for r in ("dso", "meters", "prosumers")),
        ):
            stale.unlink(missing_ok=True)  # a home used before must not start this run early
        for i, role in enumerate(("dso", "meters", "prosumers")):
            url = urls[i % len(urls)]  # on a testnet each role talks to its own validator
            deadline = (plan["end_ms"] - client.time_ms()) // 1000 + 120
            procs[role] = _spawn(
                [
                    sys.executable,
                    "-m",
                    "gridledger.demo.agents_proc",
                    "--plan",
                    str(plan_file),
                    "--role",
                    role,
                    "--node",
                    url,
                    "--deadline-s",
                    str(deadline),
                    "--go",
                    str(go_file),
                ],
                logs / f"{role}.log",
            )
            progress(f"agent process {procs[role].pid}: {role} -> {url}")
        plan = _start_when_ready(plan, procs, client, logs)
        go_file.write_text("go\n")
        shown = -1
        while any(p.poll() is None for p in procs.values()):
            t = client.time_ms()
            idx = max(
                [0] + [i for i, ph in enumerate(plan["phases"]) if t >= ph["t1_ms"] - 3 * slot_ms]
            )
            if idx != shown:
                shown = idx
                progress(f"== {plan['phases'][idx]['title']} (height {client.height()})")
            time.sleep(0.5)
        bad = [role for role, p in procs.items() if p.returncode != 0]
        if bad:
            raise RuntimeError(f"agent process(es) {bad} failed; see {logs}")
        trade_recs(client, plan, lambda: time.sleep(0.1), progress)
        client.close()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        if validators > 1:
            handle.close()
        else:
            handle.stop()
    genesis = (db.parent.parent / "genesis.json").read_bytes().rstrip(b"\n")
    chain = LocalChain(db.parent.parent, genesis, None, plan["start_ms"], db_path=db)
    return plan, chain, db
