"""The DSO as a long-running service: follow a node, certify every pending match.

``gridledger dso serve --home DIR --node URL --grid GRID --config dso.yaml`` runs
:func:`serve`: it reads the node's ``/events`` stream (server-sent events, one per committed
block), reconnecting with ``since=<last height>`` whenever the stream breaks (a node restart),
and at every block lets :class:`~gridledger.agents.dso_agent.DsoAgent` certify the pending
matches, one per block (the next sees the previous one's approval on chain).

Restart safety comes from where the state lives:

* which matches still need a certificate is the chain's own pending list — a match leaves it
  when its certificate commits, so a restarted service neither misses one nor certifies one
  twice (a certificate posted twice is refused by the market contract);
* the optimized set-points of every interval, which ΔQ is measured against, are in
  ``HOME/documents/setpoints.json`` (written atomically), the certificate documents beside them;
* ``HOME/status.json`` (written atomically after each block with work) is what
  ``gridledger dso status`` shows: certified and refused matches with reasons, the matches
  waiting, and the seconds each certificate took.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gridledger.agents.dso_agent import DsoAgent, GridPhase
from gridledger.agents.dso_config import load_dso_config
from gridledger.agents.runner import HttpChain
from gridledger.chain.contracts.market import PARAMS, PENDING
from gridledger.chain.keys import KeyPair

STATUS_FILE = "status.json"
RECONNECT_S = 0.5


@dataclass
class DsoService:
    home: Path
    key: KeyPair
    agent: DsoAgent
    certified: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def create(cls, home: Path, key: KeyPair, grid: str, config: Path, slot_ms: int) -> DsoService:
        evaluator, accounts = load_dso_config(config, grid)
        agent = DsoAgent(key, [GridPhase(0, evaluator, accounts)], slot_ms, home / "documents")
        service = cls(home, key, agent)
        service.certified = read_status(home).get("certificates", {})
        return service

    def on_block(self, client: Any) -> int:
        """Certify what is pending (one match per block); record the outcome."""
        t0 = time.perf_counter()
        before = len(self.agent.log)
        posted = self.agent.step(client)
        seconds = time.perf_counter() - t0
        for entry in self.agent.log[before:]:
            if "match" in entry:
                self.certified[entry["match"]] = {
                    "verdict": entry["verdict"],
                    "reasons": entry["reasons"],
                    "seconds": round(seconds, 3),
                    "height": client.height(),
                }
        if posted or len(self.agent.log) > before:
            self.write_status(client)
        return posted

    def write_status(self, client: Any) -> None:
        pending = [m for m in client.state(PENDING) or [] if m not in self.certified]
        doc = {"certificates": self.certified, "waiting": pending, "height": client.height()}
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.home / (STATUS_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.home / STATUS_FILE)


def read_status(home: Path) -> dict[str, Any]:
    path = Path(home) / STATUS_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def block_events(url: str, since: int, timeout_s: float = 30.0):
    """Heights of committed blocks from the node's ``/events`` stream, from ``since`` on."""
    with (
        httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(timeout_s, read=None)) as h,
        h.stream("GET", "/events", params={"since": since}) as resp,
    ):
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("id: "):
                yield int(line[4:])


def serve(
    home: Path,
    node_url: str,
    grid: str,
    config: Path,
    key: KeyPair,
    stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = print,
) -> None:
    """Follow the node until ``stop()``; survive node restarts by reconnecting."""
    client = _connect(node_url, stop, log)
    if client is None:
        return
    slot_ms = int((client.state(PARAMS) or {}).get("slot_ms", 900_000))
    service = DsoService.create(home, key, grid, config, slot_ms)
    service.agent.warm_up()
    log(f"dso: following {node_url} on {grid} ({slot_ms // 1000} s slots)")
    last = client.height()
    service.on_block(client)
    while not stop():
        try:
            for height in block_events(node_url, last):
                last = height
                service.on_block(client)
                if stop():
                    return
        except (httpx.HTTPError, OSError) as exc:
            log(f"dso: node stream lost ({type(exc).__name__}); reconnecting")
            time.sleep(RECONNECT_S)
            fresh = _connect(node_url, stop, log)
            if fresh is None:
                return
            client = fresh
        except Exception as exc:  # a refused tx or a failed solve: report, go on with the next
            log(f"dso: {type(exc).__name__}: {exc}")
            time.sleep(RECONNECT_S)


def _connect(url: str, stop: Callable[[], bool], log: Callable[[str], None]) -> HttpChain | None:
    while not stop():
        try:
            return HttpChain(url)
        except (httpx.HTTPError, OSError):
            log(f"dso: node {url} not reachable; retrying")
            time.sleep(RECONNECT_S)
    return None
