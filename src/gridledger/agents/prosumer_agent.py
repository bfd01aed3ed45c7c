"""Prosumer agent: posts the offers and bids of its profile when their time comes.

A profile is a list of :class:`OrderSpec` (seed 000 Fig. 8a for offers: window, available
active power, regulation capacity, price).  The agent posts each order once, at the first block
time at or after ``post_at_ms``, and remembers the transaction id (the order's id on chain).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gridledger.agents.client import ChainClient
from gridledger.chain.keys import KeyPair


@dataclass(frozen=True)
class OrderSpec:
    kind: str  # "offer" | "bid"
    power_w: int
    price_utoken_per_kwh: int  # offer price, or a bid's maximum price
    start_ms: int
    end_ms: int
    post_at_ms: int = 0
    regulation_var: int = 0
    green: bool = False
    label: str = ""
    profile_w: tuple[int, ...] | None = None  # W per slot of the window; power_w is its peak

    def payload(self, node: int) -> dict[str, Any]:
        window: dict[str, Any] = {
            "node": node,
            "power_w": self.power_w,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }
        if self.profile_w is not None:
            window["profile_w"] = list(self.profile_w)
        if self.kind == "offer":
            return {
                **window,
                "price_utoken_per_kwh": self.price_utoken_per_kwh,
                "regulation_var": self.regulation_var,
                "green": self.green,
            }
        if self.kind == "bid":
            return {**window, "max_price_utoken_per_kwh": self.price_utoken_per_kwh}
        raise ValueError(f"order kind must be offer or bid, got {self.kind!r}")


@dataclass
class ProsumerAgent:
    name: str
    key: KeyPair
    node: int
    profile: list[OrderSpec]
    posted: dict[int, str] = field(default_factory=dict)  # profile index -> order (tx) id
    refused: dict[int, str] = field(default_factory=dict)  # profile index -> the node's reason

    def step(self, client: ChainClient) -> list[str]:
        """Post every order that is due; return their ids."""
        now = client.time_ms()
        out = []
        for i, spec in enumerate(self.profile):
            if i in self.posted or i in self.refused or spec.post_at_ms > now:
                continue
            res = client.submit(self.key, f"market.{spec.kind}", spec.payload(self.node))
            if not res.ok:  # an order is posted once: a refusal is final, and reported
                self.refused[i] = f"{self.name}: {spec.kind} {spec.label}: {res.log}"
                continue
            self.posted[i] = res.txid
            out.append(res.txid)
        return out

    @property
    def done(self) -> bool:
        return len(self.posted) + len(self.refused) == len(self.profile)
