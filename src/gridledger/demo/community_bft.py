"""The community's chain on N BFT validator processes (``gridledger community --validators N``).

The validators are ``node/bft_testnet.py``'s processes on loopback, run on a simulated clock
(the node config's ``sim_clock``: every validator reads ``start_ms + (wall - anchor) * speedup``
from the one wall clock of the machine, so they agree on time as real validators do, and their
block time and lead check use it).  The driver talks to them over HTTP only
(:class:`~gridledger.agents.runner.HttpChain`): each sender's transactions go to one node
(round-robin over senders, so every node's mempool and gossip carry load), state is read from
node 0.  Where :class:`~gridledger.demo.localchain.LocalChain` cuts a block at a chosen time,
this chain waits for the validators' clock to reach it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gridledger.agents.runner import HttpChain, HttpOutcome
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain
from gridledger.node.bft_testnet import Testnet, TestnetError, init_testnet

WAIT_S = 600.0  # how long any one wait on the validators may take before the run fails


class BftCommunityChain:
    def __init__(
        self,
        home: Path,
        validators: int,
        chain_id: str,
        genesis_time_ms: int,
        speedup: float,
        members: list[dict[str, Any]],
        balances: list[dict[str, Any]],
        contracts: list[str],
    ) -> None:
        self.home = home / "testnet"
        sim = {"start_ms": genesis_time_ms + 1000, "anchor_wall_ms": int(time.time() * 1000),
               "speedup": float(speedup)}  # fmt: skip
        init_testnet(self.home, validators, chain_id=chain_id, members=members,
                     balances=balances, contracts=contracts, genesis_time_ms=genesis_time_ms,
                     sim_clock=sim, store_sync="NORMAL", empty_block_interval_s=0.5)  # fmt: skip
        self.net = Testnet(self.home)
        self.net.start()
        try:
            self.net.wait_height(1, timeout_s=120.0)
            self.nodes = [HttpChain(url, timeout_s=60.0) for url in self.net.api_urls]
        except (TestnetError, OSError):
            self.net.close()
            raise
        self.reader = self.nodes[0]
        self._node_of: dict[str, HttpChain] = {}
        self.node0_home = self.net.nodes[0].home

    # --- the ChainClient protocol (agents/client.py) --------------------------------------
    def submit(self, key: KeyPair, tx_type: str, payload: dict[str, Any]) -> HttpOutcome:
        node = self._node_of.get(key.pub_hex)
        if node is None:
            node = self._node_of[key.pub_hex] = self.nodes[len(self._node_of) % len(self.nodes)]
        return node.submit(key, tx_type, payload)

    def state(self, key: str) -> Any:
        return self.reader.state(key)

    def state_int(self, key: str) -> int:
        v = self.reader.state(key)
        return 0 if v is None else int(v)

    def time_ms(self) -> int:
        return self.reader.time_ms()

    def height(self) -> int:
        return self.reader.height()

    # --- what the driver does with LocalChain's produce/drain --------------------------------
    def produce(self, time_ms: int | None = None) -> None:
        """Wait for a block at or after ``time_ms`` (default: the next block)."""
        target = self.time_ms() + 1 if time_ms is None else time_ms
        self._until(lambda: self.time_ms() >= target, f"block time {target}")

    def drain(self) -> None:
        """Wait until every admitted transaction is in a block that node 0 has committed."""

        def empty() -> bool:
            sts = [n.status() for n in self.nodes]
            if any(s["mempool"] or s["peer_pool"] for s in sts):
                return False
            top = max(int(s["height"]) for s in sts)
            self._until(lambda: self.height() >= top, f"node 0 at height {top}")
            return True

        self._until(empty, "empty mempools")

    def _until(self, ok: Any, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not ok():
            if time.monotonic() > deadline:
                raise TestnetError(f"the validators did not reach {what} in {WAIT_S:g} s")
            for node in self.net.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise TestnetError(f"{node.name} exited ({node.proc.returncode})")
            time.sleep(0.02)

    # --- the end of the run ------------------------------------------------------------------
    def agreement(self, tries: int = 200) -> dict[str, Any]:
        """The app hash of every node read at one height (retried until all stand at the same
        height between two blocks), and the common height of equal block hashes."""
        common = self.net.check_agreement()
        peak_mb = max(_peak_rss_mb(n.proc.pid) for n in self.net.nodes if n.proc is not None)
        for _ in range(tries):
            sts = [n.status() for n in self.nodes]
            heights = {int(s["height"]) for s in sts}
            if len(heights) == 1:
                hashes = [s["app_hash"] for s in sts]
                return {"height": heights.pop(), "app_hashes": hashes,
                        "same_app_hash": len(set(hashes)) == 1,
                        "same_block_hashes_to_height": common,
                        "peak_rss_mb": peak_mb}  # fmt: skip
            time.sleep(0.05)
        raise TestnetError(f"the nodes never stood at one height in {tries} reads")

    def stop_and_open_node0(self) -> LocalChain:
        """Stop every validator; node 0's store, opened read-only for the invariant checks."""
        for n in self.nodes:
            n.close()
        self.net.close()
        genesis = (self.node0_home / "genesis.json").read_bytes().rstrip(b"\n")
        return LocalChain(self.node0_home, genesis, None, 0)

    def close(self) -> None:
        for n in self.nodes:
            n.close()
        self.net.close()


def _peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (Linux ``VmHWM``); 0 where /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
