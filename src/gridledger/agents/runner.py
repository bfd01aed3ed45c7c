"""Agents against a node's HTTP API: :class:`HttpChain` is the
:class:`~gridledger.agents.client.ChainClient` over HTTP, and :func:`run_agents` polls the node
and lets every agent post what is due at each new block. The demo's agent processes
(``python -m gridledger.demo.agents_proc``) are built on these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from gridledger.chain import codes, encoding
from gridledger.chain.keys import KeyPair
from gridledger.chain.tx import make_tx


@dataclass(frozen=True)
class HttpOutcome:
    txid: str
    code: int
    log: str

    @property
    def ok(self) -> bool:
        return self.code == codes.OK


class HttpChain:
    """A node's HTTP API (``node/api.py``, served by solo and BFT validators alike) as a
    :class:`ChainClient`: submit, committed state, block time."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s)
        self.chain_id = self.status()["chain_id"]
        self._seq: dict[str, int] = {}

    def close(self) -> None:
        self.http.close()

    def status(self) -> dict[str, Any]:
        return self.http.get("/status").raise_for_status().json()

    def height(self) -> int:
        return int(self.status()["height"])

    def time_ms(self) -> int:
        return int(self.status()["last_time_ms"] or 0)

    def state(self, key: str) -> Any:
        resp = self.http.get(f"/state/{key}")
        if resp.status_code == 404:
            return None
        value = resp.raise_for_status().json().get("value")
        return None if value is None else encoding.decode(bytes.fromhex(value))

    def wait_committed(self, txid: str, timeout_s: float = 30.0) -> HttpOutcome:
        """The block's verdict on a transaction admitted earlier (a contract may still refuse
        it in the block); TimeoutError when it is not committed within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            resp = self.http.get(f"/txs/{txid}")
            if resp.status_code == 200 and resp.json().get("status") == "committed":
                doc = resp.json()
                return HttpOutcome(txid, int(doc["code"]), doc.get("log", ""))
            time.sleep(0.1)
        raise TimeoutError(f"transaction {txid} not committed after {timeout_s:g} s")

    def items_with_prefix(self, prefix: str, limit: int = 100_000) -> list[tuple[str, Any]]:
        """Committed (key, value) pairs under ``prefix`` in key order, paged through the API's
        read-only listing (``GET /web/state``)."""
        out: list[tuple[str, Any]] = []
        after = ""
        while len(out) < limit:
            params = {"prefix": prefix, "limit": 500, **({"after": after} if after else {})}
            page = self.http.get("/web/state", params=params).raise_for_status().json()
            out += [(item["key"], item["value"]) for item in page["items"]]
            after = page["next"]
            if not after:
                break
        return out[:limit]

    def _next_seq(self, pub: str) -> int:
        if pub not in self._seq:
            acct = self.http.get(f"/accounts/{pub}").raise_for_status().json()
            self._seq[pub] = int(acct["next_seq"])
        return self._seq[pub]

    def submit(self, key: KeyPair, tx_type: str, payload: dict[str, Any]) -> HttpOutcome:
        pub = key.pub_hex
        for _ in range(2):  # a stale sequence number (another process, a restart): resync once
            raw = make_tx(key, self.chain_id, self._next_seq(pub), tx_type, payload).raw
            res = self.http.post("/txs", json={"tx": raw.hex()}).json()
            out = HttpOutcome(res["txid"], res["code"], res.get("log", ""))
            if out.code == codes.BAD_SEQUENCE:
                self._seq.pop(pub, None)
                continue
            if out.ok:
                self._seq[pub] += 1
            return out
        return out


def run_agents(
    client: Any,
    agents: list[Any],
    until_ms: int,
    poll_s: float = 0.05,
    deadline_s: float = 600.0,
    log: Any = None,
) -> None:
    """Step every agent at each new block until block time reaches ``until_ms`` and every agent
    is done (or the wall-clock deadline passes)."""
    t_end = time.monotonic() + deadline_s
    last = -1
    while time.monotonic() < t_end:
        h = client.height()
        if h != last:
            last = h
            for a in agents:
                try:
                    a.step(client)
                except Exception as exc:  # an agent error is reported, the others go on
                    if log is not None:
                        print(f"{type(a).__name__}: {exc}", file=log, flush=True)
            if client.time_ms() >= until_ms and all(getattr(a, "done", True) for a in agents):
                return
        time.sleep(poll_s)
    raise TimeoutError(f"agents not done after {deadline_s} s")
