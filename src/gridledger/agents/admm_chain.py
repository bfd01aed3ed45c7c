"""Run one ADMM scheduling round on a real chain: node process(es), agent processes, the DSO.

* ``validators == 1``: a solo node (``gridledger node start --eager``) in its own OS process;
* ``validators > 1``: the BFT test network of :mod:`gridledger.node.bft_testnet`.

The agents run as separate OS processes (``python -m gridledger.agents.der_agent``), each with
the keys of some nodes, and talk to the chain only through a node's HTTP API.  The DSO opens the
round and seeds the warm start through the same API, then waits for the stored schedule.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gridledger.agents.agent_procs import wait_ready
from gridledger.agents.der_agent import (
    TERMINAL,
    W_PER_PU,
    admm_genesis,
    node_key_path,
    open_round,
)
from gridledger.chain.contracts.aggregator import round_key
from gridledger.chain.keys import KeyPair, save_key
from gridledger.grid.admm import AdmmOptions, tree_clusters
from gridledger.grid.dispatch import Dispatch, dispatch, generator_cost_usd
from gridledger.grid.feeders import Feeder
from gridledger.market.aggregation import SCALE

AGGREGATOR = "gridledger.chain.contracts.aggregator"
BILLING = "gridledger.chain.contracts.billing"


class OnChainError(RuntimeError):
    """The chain or the agents did not run the round (the message says which and why)."""


@dataclass
class OnChainRun:
    status: str
    iterations: int
    seconds: float
    schedule: dict[str, Any] | None
    state: dict[str, Any]
    home: Path


def evaluate_chain_schedule(feeder: Feeder, schedule: dict[str, Any]) -> tuple[float, Dispatch]:
    """(sum of the local costs, the schedule as the feeder would run it) of a schedule stored by
    S1, from its integers alone: anyone can check what the chain's schedule is worth.

    The chain holds injections, not device costs, so this needs the feeders of seed 001 §VI:
    the only costed device is the root's generator, beside the root's fixed load and solar."""
    root = feeder.ders[0]
    others = (root.battery, root.shapable, root.deferrable)
    if (
        root.generator is None
        or any(d is not None for d in others)
        or any(d.generator is not None for d in feeder.ders[1:])
    ):
        raise OnChainError(
            f"{feeder.name}: costing a schedule from the chain needs the generator at the root "
            "as the only costed device, beside the root's fixed load and solar"
        )
    p_mw = np.array(schedule["p_w"], dtype=float) / W_PER_PU
    g_mw = p_mw[0] + (np.array(root.load_kw) - np.array(root.solar_kw)) / 1000.0
    local_usd = generator_cost_usd(root.generator, g_mw)
    root_v = np.array(schedule["z"][2 * (feeder.n_nodes - 1)], dtype=float) / SCALE
    return local_usd, dispatch(feeder, p_mw, g_mw, local_usd, root_v)


def _start_solo(
    home: Path, chain_id: str, dso: KeyPair, agents: list[KeyPair]
) -> tuple[str, Callable[[], None]]:
    from gridledger.node.home import NodeConfig
    from gridledger.node.process import NodeStartError, start_node_process

    validator = KeyPair.generate()
    (home / "data").mkdir(parents=True, exist_ok=True)
    save_key(home / "keys" / "validator.json", validator, "validator")
    genesis = admm_genesis(chain_id, dso, validator, agents, int(time.time() * 1000) - 1000)
    (home / "genesis.json").write_bytes(genesis + b"\n")
    NodeConfig(chain_id, block_interval_ms=20, eager=True, synchronous="NORMAL").save(home)
    try:
        node = start_node_process(home, extra_args=["--eager"], log_path=home / "node.log")
    except NodeStartError as exc:
        raise OnChainError(f"the solo node did not start: {exc}") from exc
    return node.url, node.stop


def _start_bft(
    home: Path, n: int, dso: KeyPair, agents: list[KeyPair]
) -> tuple[str, Callable[[], None]]:
    from gridledger.node.bft_testnet import FAST_TIMEOUTS, TestnetError, start_testnet

    members = [{"name": "dso", "pub_key": dso.pub_hex, "role": "dso"}] + [
        {"bus": i, "name": f"der-{i}", "pub_key": k.pub_hex, "role": "prosumer"}
        for i, k in enumerate(agents)
    ]
    try:
        net = start_testnet(
            home / "testnet",
            n,
            members=members,
            contracts=[AGGREGATOR, BILLING],
            balances=[{"account": dso.pub_hex, "amount": 10**12, "denom": "utoken"}],
            timeouts=FAST_TIMEOUTS,
        )
    except TestnetError as exc:
        raise OnChainError(f"the {n}-validator test network did not start: {exc}") from exc
    return net.api_urls[0], net.close


def run_on_chain(
    feeder: Feeder,
    options: AdmmOptions,
    home: Path,
    validators: int = 1,
    agent_processes: int = 2,
    round_id: str = "day-ahead",
    timeout_ms: int = 600_000,
    deadline_s: float = 1800.0,
) -> OnChainRun:
    from gridledger.agents.der_agent import AgentHttp

    home.mkdir(parents=True, exist_ok=True)
    dso = KeyPair.generate()
    # fresh keys, saved where the agent processes load them (never derived from the round id:
    # anyone could re-derive those and sign for a node)
    keys = [KeyPair.generate() for _ in range(feeder.n_nodes)]
    for i, k in enumerate(keys):
        save_key(node_key_path(home, i), k, "prosumer")
    if validators == 1:
        url, stop = _start_solo(home / "solo", "gridledger-admm", dso, keys)
    else:
        url, stop = _start_bft(home, validators, dso, keys)
    procs: list[subprocess.Popen] = []
    try:
        client = AgentHttp(url)
        n_proc = max(1, min(agent_processes, feeder.n_nodes))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if options.clusters:
            groups = tree_clusters(feeder, options.clusters)
            n_proc = min(n_proc, len(groups))
            specs = [
                [
                    "--clusters",
                    "--nodes",
                    ";".join(",".join(map(str, g)) for g in groups[p::n_proc]),
                ]
                for p in range(n_proc)
            ]
        else:
            specs = [
                ["--nodes", ",".join(str(i) for i in range(p, feeder.n_nodes, n_proc))]
                for p in range(n_proc)
            ]
        for p in range(n_proc):
            log = open(home / f"agents-{p}.log", "w")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gridledger.agents.der_agent",
                        "--node",
                        url,
                        "--home",
                        str(home),
                        "--feeder",
                        feeder.name,
                        "--round",
                        round_id,
                        *specs[p],
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        # agents build their models first, so the timing below is the round alone
        if not wait_ready(home, procs):
            raise OnChainError(f"agent processes did not start; logs in {home}")
        started = time.monotonic()
        open_round(client, dso, feeder, round_id, [k.pub_hex for k in keys], options, timeout_ms)
        deadline = time.monotonic() + deadline_s
        while True:
            state = client.state(round_key(round_id, "state"))
            if state is not None and state["status"] in TERMINAL:
                break
            dead = [p for p in procs if p.poll() not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise OnChainError(
                    f"round {round_id} stuck at {state and state['status']} iteration "
                    f"{state and state['k']}; agent logs in {home}"
                )
            time.sleep(0.05)
        seconds = time.monotonic() - started
        schedule = client.state(round_key(round_id, "schedule"))
        client.close()
        return OnChainRun(state["status"], len(state["history"]), seconds, schedule, state, home)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        stop()
