"""Run seed 003's VPP on a real chain: a solo node process, prosumer agent processes, the
operator (DSO) opening one round per day and settling it.

The node is ``gridledger node start --eager`` in its own OS process; the prosumers run as
``python -m gridledger.agents.vpp_agent`` processes with only the node's HTTP address and their
own keys.  The operator opens day d's round when day d − 1's is settled (the batteries carry
over), waits for every prosumer to accept the bills, and posts ``vpp.settle``.  At the end the
node is stopped and the committed state read back: the supply of every denomination must equal
the sum of the balances, and the VPP's escrow must be empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gridledger.agents.agent_procs import wait_ready
from gridledger.agents.der_agent import AgentHttp, admm_genesis
from gridledger.agents.vpp_agent import load_profiles, open_vpp_round, prosumer_key_path
from gridledger.chain.contracts.tokens import DENOMS, balance_prefix, supply_key
from gridledger.chain.contracts.vpp import ESCROW, vpp_key
from gridledger.chain.keys import KeyPair, save_key
from gridledger.grid.vpp import HOURS_PER_DAY, VppPrices
from gridledger.market.vpp_rules import SCALE

PROSUMER_UTOKEN = 10**9  # each prosumer starts with 1000 tokens


class VppChainError(RuntimeError):
    """The node or the agents did not run the rounds (the message says which and why)."""


@dataclass
class VppChainDay:
    round_id: str
    status: str
    iterations: int
    residual_kwh: float
    seconds: float
    trades_kwh: np.ndarray  # n × n × 24: p'_uv as the chain stored it
    paid_utoken: int
    settlement: dict[str, Any]


@dataclass
class VppChainRun:
    days: list[VppChainDay] = field(default_factory=list)
    invariants: dict[str, Any] = field(default_factory=dict)
    home: Path | None = None

    @property
    def iterations(self) -> int:
        return sum(d.iterations for d in self.days)

    @property
    def paid_utoken(self) -> int:
        return sum(d.paid_utoken for d in self.days)

    def net_p2p_kwh(self) -> np.ndarray:
        """Per prosumer and hour: bought (> 0) minus sold (< 0), as :class:`VppResult` gives."""
        return np.concatenate([d.trades_kwh.sum(axis=1) for d in self.days], axis=1)


def _start_node(home: Path, dso: KeyPair, keys: list[KeyPair]) -> tuple[str, Any, bytes]:
    from gridledger.node.home import NodeConfig
    from gridledger.node.process import NodeStartError, start_node_process

    validator = KeyPair.generate()
    (home / "data").mkdir(parents=True, exist_ok=True)
    save_key(home / "keys" / "validator.json", validator, "validator")
    genesis = admm_genesis(
        "gridledger-vpp", dso, validator, keys, int(time.time() * 1000) - 1000,
        agent_utoken=PROSUMER_UTOKEN,
    )  # fmt: skip
    (home / "genesis.json").write_bytes(genesis + b"\n")
    NodeConfig("gridledger-vpp", block_interval_ms=20, eager=True, synchronous="NORMAL").save(home)
    try:
        node = start_node_process(home, extra_args=["--eager"], log_path=home / "node.log")
    except NodeStartError as exc:
        raise VppChainError(f"the solo node did not start: {exc}") from exc
    return node.url, node, genesis


def check_supply(home: Path, genesis: bytes) -> dict[str, Any]:
    """Read the committed state of a stopped node: supply against the sum of balances."""
    from gridledger.demo.localchain import LocalChain

    chain = LocalChain(home, genesis, None, 0)
    try:
        out: dict[str, Any] = {}
        ok = True
        for denom in DENOMS:
            balances = [chain.state_int(k) for k in chain.keys_with_prefix(balance_prefix(denom))]
            supply = chain.state_int(supply_key(denom))
            out[f"supply_{denom}"] = supply
            out[f"sum_of_balances_{denom}"] = sum(balances)
            ok &= supply == sum(balances) and min(balances, default=0) >= 0
        out["escrow_left_utoken"] = chain.balance("utoken", ESCROW)
        out["supply_invariant"] = bool(ok)
        return out
    finally:
        chain.close()


def _wait(client: AgentHttp, key: str, done: Any, procs: list, what: str, deadline: float) -> Any:
    while True:
        value = client.state(key)
        if done(value):
            return value
        dead = [p.args[-1] for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise VppChainError(f"{what}: stuck at {value and value.get('status')}")
        time.sleep(0.02)


def run_vpp_on_chain(
    profile_spec: str,
    home: Path,
    rho: float = 0.5,
    eps_kwh: float = 1e-6,
    max_iter: int = 1000,
    agent_processes: int = 2,
    prices: VppPrices | None = None,
    timeout_ms: int = 120_000,
    deadline_s: float = 3600.0,
) -> VppChainRun:
    """Every day of ``profile_spec`` (see :func:`load_profiles`) as one settled round."""
    profiles = load_profiles(profile_spec)
    n = len(profiles)
    days = profiles[0].solar_kw.shape[0] // HOURS_PER_DAY
    home.mkdir(parents=True, exist_ok=True)
    dso = KeyPair.generate()
    keys = [KeyPair.generate() for _ in range(n)]  # fresh, saved for the agent processes only
    for u, k in enumerate(keys):
        save_key(prosumer_key_path(home, u), k, "prosumer")
    url, node, genesis = _start_node(home / "node", dso, keys)
    rounds = [f"day-{d}" for d in range(days)]
    procs: list[subprocess.Popen] = []
    run = VppChainRun(home=home)
    try:
        client = AgentHttp(url)
        n_proc = max(1, min(agent_processes, n))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for p in range(n_proc):
            log = open(home / f"agents-{p}.log", "w")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gridledger.agents.vpp_agent", "--node", url,
                     "--home", str(home), "--profiles", profile_spec,
                     "--rounds", ",".join(rounds),
                     "--prosumers", ",".join(str(u) for u in range(p, n, n_proc))],
                    stdout=log, stderr=subprocess.STDOUT, env=env,
                )
            )  # fmt: skip
        if not wait_ready(home, procs):
            raise VppChainError(f"agent processes did not start; logs in {home}")
        deadline = time.monotonic() + deadline_s
        for rid in rounds:
            started = time.monotonic()
            open_vpp_round(
                client, dso, rid, [k.pub_hex for k in keys], rho, eps_kwh, max_iter,
                HOURS_PER_DAY, timeout_ms, [p.connection_kw for p in profiles], prices,
            )  # fmt: skip
            st = _wait(
                client, vpp_key(rid, "state"),
                lambda s: s is not None and s["status"] != "collecting", procs,
                f"round {rid}; agent logs in {home}", deadline,
            )  # fmt: skip
            seconds = time.monotonic() - started
            settlement: dict[str, Any] = {}
            if st["status"] == "converged":
                for u in range(n):
                    _wait(
                        client, vpp_key(rid, f"accept/{u}"), lambda a: a is not None, procs,
                        f"acceptance of prosumer {u} in {rid}", deadline,
                    )  # fmt: skip
                res = client.submit(dso, "vpp.settle", {"round": rid})
                if not res.ok:
                    raise VppChainError(f"vpp.settle {rid}: {res.log}")
                settlement = _wait(
                    client, vpp_key(rid, "settlement"), lambda s: s is not None, procs,
                    f"settlement of {rid}", deadline,
                )  # fmt: skip
            else:
                raise VppChainError(
                    f"round {rid} ended {st['status']} at iteration {st['k']} "
                    f"(residual {st['history'][-1][1] / SCALE if st['history'] else None} kWh)"
                )
            aux = np.array(client.state(vpp_key(rid, "aux")), dtype=float) / SCALE
            run.days.append(
                VppChainDay(
                    rid, "settled", len(st["history"]), st["history"][-1][1] / SCALE, seconds,
                    aux, settlement["paid_utoken"], settlement,
                )
            )  # fmt: skip
        for p in procs:
            p.wait(60)
        client.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        node.stop()
    run.invariants = check_supply(home / "node", genesis)
    return run
