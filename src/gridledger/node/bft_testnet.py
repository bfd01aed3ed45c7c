"""A local BFT test network: N validator (and F follower) processes on loopback ports.

:func:`init_testnet` writes keys, one shared genesis and per-node configs under a home folder;
:class:`Testnet` starts and stops the processes (each a separate OS process running
``python -m gridledger.node.bft``), injects faults (SIGKILL, SIGSTOP/SIGCONT, partitions through
each node's fault-control file) and checks the invariant that every node holds the same block
hash at every height. :func:`start_testnet` is the one call the demo needs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair, save_key
from gridledger.chain.p2p.faults import write_faults

DEFAULT_TIMEOUTS = {
    "propose_s": 1.0,
    "propose_delta_s": 0.5,
    "prevote_s": 0.5,
    "prevote_delta_s": 0.25,
    "precommit_s": 0.5,
    "precommit_delta_s": 0.25,
    "commit_s": 0.2,
}
# Short timeouts for fault-injection tests on a shared 2-core machine.
FAST_TIMEOUTS = {
    "propose_s": 0.6,
    "propose_delta_s": 0.3,
    "prevote_s": 0.3,
    "prevote_delta_s": 0.15,
    "precommit_s": 0.3,
    "precommit_delta_s": 0.15,
    "commit_s": 0.1,
}
EVIDENCE_CONTRACT = "gridledger.chain.contracts.evidence"


class TestnetError(RuntimeError):
    """The test network is missing, misconfigured, or did not reach the expected state."""

    __test__ = False  # not a pytest test class


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` ports that are free now, chosen *below* the kernel's ephemeral range.

    Ports handed out by ``bind(0)`` come from the ephemeral range, which every outgoing
    connection on the machine also draws from: between writing the config and starting the node
    such a port may become some connection's source port, and the node could not listen. Random
    ports under the range avoid that race (and other tests' servers on port 0).
    """
    lo_eph, _ = _ephemeral_range()
    lo, hi = 20000, max(20000 + 4 * n, lo_eph - 1)
    rng = random.SystemRandom()
    ports: list[int] = []
    socks = []
    try:
        while len(ports) < n:
            port = rng.randint(lo, hi)
            if port in ports:
                continue
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def init_testnet(
    home: str | Path,
    n: int,
    *,
    chain_id: str = "gridledger-testnet",
    members: list[dict[str, Any]] | None = None,
    balances: list[dict[str, Any]] | None = None,
    contracts: list[str] | None = None,
    params: dict[str, Any] | None = None,
    powers: list[int] | None = None,
    timeouts: dict[str, float] | None = None,
    status_interval_s: float = 0.5,
    stuck_after_s: float = 1.0,
    byzantine: dict[int, list[str]] | None = None,
    store_sync: str = "FULL",
    max_block_txs: int = 5000,
    empty_block_interval_s: float = 1.0,
    host: str = "127.0.0.1",
    followers: int = 0,
    candidates: int = 0,
    genesis_time_ms: int | None = None,
    sim_clock: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write an N-validator network under ``home``; return its description (also testnet.json).

    ``members``/``balances`` are added to the genesis (a DSO is created if none is given, since
    the ledger requires one); validators become members with role ``validator``. ``followers``
    adds that many follower nodes (``node{n}``, ...: no validator power, never sign; listed in
    every validator's ``allow`` list and peers, and peering with every validator).
    ``candidates`` adds validator nodes without power (after the followers): members with role
    ``validator`` that the committee can vote in (``validator.propose``); every node knows their
    address, but they are let in only while their key holds power.
    ``genesis_time_ms`` (default: now) with ``sim_clock`` ({"start_ms", "anchor_wall_ms",
    "speedup"}, the same in every node's config) runs the network on simulated time.
    """
    if not 1 <= n <= 100:
        raise TestnetError(f"--validators must be between 1 and 100, got {n}")
    if not 0 <= followers <= 20:
        raise TestnetError(f"--followers must be between 0 and 20, got {followers}")
    if not 0 <= candidates <= 20:
        raise TestnetError(f"candidates must be between 0 and 20, got {candidates}")
    home = Path(home)
    if (home / "testnet.json").exists():
        raise TestnetError(f"{home} already holds a testnet; remove it or choose another --home")
    home.mkdir(parents=True, exist_ok=True)
    powers = powers or [1] * n
    if len(powers) != n:
        raise TestnetError("one power per validator expected")
    keys = [KeyPair.generate() for _ in range(n)]
    members = list(members or [])
    if not any(m.get("role") == "dso" for m in members):
        dso = KeyPair.generate()
        save_key(home / "dso_key.json", dso, "dso")
        members.append({"name": "dso", "pub_key": dso.pub_hex, "role": "dso"})
    spares = [KeyPair.generate() for _ in range(candidates)]
    for i, k in enumerate(keys):
        members.append({"name": f"node{i}", "pub_key": k.pub_hex, "role": "validator"})
    for i, k in enumerate(spares):
        name = f"node{n + followers + i}"
        members.append({"name": name, "pub_key": k.pub_hex, "role": "validator"})
    contracts = list(contracts or [])
    if EVIDENCE_CONTRACT not in contracts:
        contracts.append(EVIDENCE_CONTRACT)
    genesis = make_genesis(
        chain_id,
        int(time.time() * 1000) - 1000 if genesis_time_ms is None else genesis_time_ms,
        [(k.pub_hex, p) for k, p in zip(keys, powers, strict=True)],
        members,
        balances,
        contracts,
        params,
    )
    keys += [KeyPair.generate() for _ in range(followers)]  # node keys only: no power
    keys += spares
    ports = free_ports(2 * len(keys), host)
    nodes = []
    for i, k in enumerate(keys):
        nodes.append(
            {
                "name": f"node{i}",
                "role": "follower" if n <= i < n + followers else "validator",
                "home": str(home / f"node{i}"),
                "pub_key": k.pub_hex,
                "p2p": [host, ports[2 * i]],
                "api": [host, ports[2 * i + 1]],
            }
        )
    follower_nodes = [o for o in nodes if o["role"] == "follower"]
    for i, (k, node) in enumerate(zip(keys, nodes, strict=True)):
        d = Path(node["home"])
        d.mkdir(parents=True, exist_ok=True)
        save_key(d / "key.json", k, node["role"])
        (d / "genesis.json").write_bytes(genesis + b"\n")
        is_validator = node["role"] == "validator"
        cfg = {
            "name": node["name"],
            "role": node["role"],
            "chain_id": chain_id,
            "listen": node["p2p"],
            "api": node["api"],
            # validators peer with everyone, followers with the validators
            "peers": [
                {
                    "name": o["name"],
                    "pub_key": o["pub_key"],
                    "host": o["p2p"][0],
                    "port": o["p2p"][1],
                }
                for o in nodes
                if o is not node and (is_validator or o["role"] == "validator")
            ],
            "allow": [
                {"name": o["name"], "pub_key": o["pub_key"]} for o in follower_nodes if is_validator
            ],
            "timeouts": timeouts or DEFAULT_TIMEOUTS,
            "status_interval_s": status_interval_s,
            "stuck_after_s": stuck_after_s,
            "byzantine": (byzantine or {}).get(i, []) if is_validator else [],
            "faults_file": "faults.json",
            "store_sync": store_sync,
            "max_block_txs": max_block_txs,
            "empty_block_interval_s": empty_block_interval_s,
        }
        if sim_clock is not None:
            cfg["sim_clock"] = sim_clock
        (d / "config.json").write_text(json.dumps(cfg, indent=2))
    desc = {"chain_id": chain_id, "nodes": nodes}
    (home / "testnet.json").write_text(json.dumps(desc, indent=2))
    return desc


@dataclass
class NodeHandle:
    index: int
    name: str
    home: Path
    pub_key: bytes
    api_url: str
    proc: subprocess.Popen | None = None


class Testnet:
    """Control of the validator processes of a network written by :func:`init_testnet`."""

    __test__ = False  # not a pytest test class

    def __init__(self, home: str | Path):
        self.home = Path(home)
        path = self.home / "testnet.json"
        if not path.exists():
            raise TestnetError(f"no testnet at {self.home} (run `gridledger testnet init`)")
        desc = json.loads(path.read_text())
        self.chain_id = desc["chain_id"]
        self.nodes = [
            NodeHandle(
                i,
                n["name"],
                Path(n["home"]),
                bytes.fromhex(n["pub_key"]),
                f"http://{n['api'][0]}:{n['api'][1]}",
            )
            for i, n in enumerate(desc["nodes"])
        ]
        self._http = httpx.Client(timeout=5.0)

    @property
    def api_urls(self) -> list[str]:
        return [n.api_url for n in self.nodes]

    # --- processes --------------------------------------------------------------------------
    def start(self, indices: list[int] | None = None) -> None:
        for i in indices if indices is not None else range(len(self.nodes)):
            node = self.nodes[i]
            if node.proc is not None and node.proc.poll() is None:
                continue
            logf = open(node.home / "node.log", "ab")  # noqa: SIM115 - owned by the child
            cmd = [sys.executable, "-m", "gridledger.node.bft", "--home", str(node.home)]
            if os.environ.get("GRIDLEDGER_BFT_PROFILE"):  # diagnosis: cProfile per node
                cmd += ["--profile", str(node.home / "profile.out")]
                if os.environ.get("GRIDLEDGER_BFT_PROFILE_CLOCK"):  # wall (default) or cpu
                    cmd += ["--profile-clock", os.environ["GRIDLEDGER_BFT_PROFILE_CLOCK"]]
            if os.environ.get("GRIDLEDGER_BFT_LOG_LEVEL"):  # diagnosis: more detail in node.log
                cmd += ["--log-level", os.environ["GRIDLEDGER_BFT_LOG_LEVEL"]]
            node.proc = subprocess.Popen(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            logf.close()
            (node.home / "launcher.pid").write_text(str(node.proc.pid))

    def _pid(self, i: int) -> int | None:
        node = self.nodes[i]
        if node.proc is not None:
            return node.proc.pid if node.proc.poll() is None else None
        f = node.home / "launcher.pid"
        if not f.exists():
            return None
        pid = int(f.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def _signal(self, i: int, sig: int) -> None:
        pid = self._pid(i)
        if pid is None:
            raise TestnetError(f"{self.nodes[i].name} is not running")
        os.kill(pid, sig)

    def kill(self, i: int) -> None:
        self._signal(i, signal.SIGKILL)
        self._reap(i)

    def pause(self, i: int) -> None:
        self._signal(i, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self._signal(i, signal.SIGCONT)

    def stop(self, indices: list[int] | None = None, timeout_s: float = 5.0) -> None:
        idx = list(indices if indices is not None else range(len(self.nodes)))
        for i in idx:
            pid = self._pid(i)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout_s
        for i in idx:
            while self._pid(i) is not None and time.monotonic() < deadline:
                self._reap(i)
                time.sleep(0.05)
            if self._pid(i) is not None:
                self.kill(i)
            self._reap(i)

    def _reap(self, i: int) -> None:
        node = self.nodes[i]
        if node.proc is not None:
            try:
                node.proc.wait(timeout=0.01 if node.proc.poll() is None else None)
            except subprocess.TimeoutExpired:
                return

    def close(self) -> None:
        self.stop()
        self._http.close()

    # --- faults -------------------------------------------------------------------------------
    def partition(self, groups: list[list[int]]) -> None:
        """Drop all traffic between nodes of different groups (each node's control file)."""
        group_of = {i: g for g, members in enumerate(groups) for i in members}
        for node in self.nodes:
            g = group_of.get(node.index)
            drop = [o.pub_key for o in self.nodes if o is not node and group_of.get(o.index) != g]
            write_faults(node.home / "faults.json", drop)

    def heal(self) -> None:
        for node in self.nodes:
            write_faults(node.home / "faults.json", [])

    # --- observation --------------------------------------------------------------------------
    def status(self, i: int) -> dict[str, Any] | None:
        try:
            r = self._http.get(self.nodes[i].api_url + "/status")
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def heights(self, indices: list[int] | None = None) -> dict[int, int]:
        out = {}
        for i in indices if indices is not None else range(len(self.nodes)):
            st = self.status(i)
            if st is not None:
                out[i] = st["height"]
        return out

    def wait_height(
        self, height: int, indices: list[int] | None = None, timeout_s: float = 60.0
    ) -> dict[int, int]:
        idx = list(indices if indices is not None else range(len(self.nodes)))
        deadline = time.monotonic() + timeout_s
        hs: dict[int, int] = {}
        while time.monotonic() < deadline:
            hs = self.heights(idx)
            if len(hs) == len(idx) and min(hs.values()) >= height:
                return hs
            for i in idx:
                proc = self.nodes[i].proc
                if proc is not None and proc.poll() is not None:
                    log = (self.nodes[i].home / "node.log").read_text(errors="replace")
                    raise TestnetError(
                        f"{self.nodes[i].name} exited with status {proc.returncode}: {log[-2000:]}"
                    )
            time.sleep(0.1)
        raise TestnetError(f"nodes {idx} did not reach height {height} in {timeout_s}s: {hs}")

    def hashes(self, i: int) -> dict[int, str]:
        r = self._http.get(self.nodes[i].api_url + "/hashes")
        r.raise_for_status()
        return {int(h): v for h, v in r.json()["hashes"].items()}

    def check_agreement(self, indices: list[int] | None = None) -> int:
        """Every node holds the same block hash at every height; return the common height."""
        idx = list(indices if indices is not None else range(len(self.nodes)))
        per_node = {i: self.hashes(i) for i in idx}
        heights = set().union(*per_node.values())
        for h in sorted(heights):
            seen = {i: hs[h] for i, hs in per_node.items() if h in hs}
            if len(set(seen.values())) != 1:
                raise TestnetError(f"fork at height {h}: {seen}")
        return min(max(hs) if hs else 0 for hs in per_node.values())


def start_testnet(
    home: str | Path, n: int = 4, wait_height: int = 1, timeout_s: float = 60.0, **init_kwargs
) -> Testnet:
    """Initialise (if needed) and start an N-validator network; returns it once it commits.

    ``net.api_urls`` are the nodes' HTTP APIs; ``net.close()`` stops every process.
    """
    home = Path(home)
    if not (home / "testnet.json").exists():
        init_testnet(home, n, **init_kwargs)
    net = Testnet(home)
    net.start()
    try:
        net.wait_height(wait_height, timeout_s=timeout_s)
    except TestnetError:
        net.close()
        raise
    return net
