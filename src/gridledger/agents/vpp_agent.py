"""Prosumer agents of seed 003's VPP: the primal step (eq. 4) against the VPP contract.

Each :class:`VppAgent` holds one prosumer's private data and model; at every new block it reads
the round's state, and when an iteration is open it reads the auxiliary trades ``p'`` and duals
``λ`` (Func C, a state read), solves its primal problem and submits its trades (Func B).  The
contract does the dual step (Func A).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gridledger.agents.client import AgentError, ChainClient, must
from gridledger.chain.keys import KeyPair
from gridledger.grid.vpp import Prosumer, ProsumerProfile, VppPrices, ancillary_price
from gridledger.market.vpp_rules import SCALE

TERMINAL = ("converged", "max_iter", "timed_out")


def open_vpp_round(
    client: ChainClient,
    operator: KeyPair,
    round_id: str,
    prosumers: list[str],
    rho: float = 0.5,
    eps_kwh: float = 1e-3,
    max_iter: int = 300,
    horizon: int = 24,
    timeout_ms: int = 60_000,
) -> None:
    payload = {
        "eps": round(eps_kwh * SCALE),
        "horizon": horizon,
        "max_iter": max_iter,
        "prosumers": prosumers,
        "rho": round(rho * SCALE),
        "round": round_id,
        "timeout_ms": timeout_ms,
    }
    must(client.submit(operator, "vpp.open", payload), "vpp.open")


class VppAgent:
    def __init__(
        self,
        profiles: list[ProsumerProfile],
        u: int,
        key: KeyPair,
        round_id: str,
        day: int = 0,
        b0_kwh: float | None = None,
        prices: VppPrices | None = None,
    ) -> None:
        self.u, self.key, self.round_id = u, key, round_id
        self.n = len(profiles)
        self.others = [v for v in range(self.n) if v != u]
        self.model = Prosumer(u, self.n, prices or VppPrices())
        hours = profiles[u].solar_kw.shape[0]
        b0 = profiles[u].battery_initial_kwh if b0_kwh is None else b0_kwh
        self.model.set_day(profiles[u], day, b0, ancillary_price(hours))
        self.done_k = 0
        self.done = False

    def step(self, client: ChainClient) -> bool:
        rid = self.round_id
        st = client.state(f"vpp/{rid}/state")
        if st is None:
            return False
        if st["status"] in TERMINAL:
            self.done = True
            return False
        if st["status"] != "collecting" or st["k"] <= self.done_k or self.u in st["submitted"]:
            return False
        cfg = client.state(f"vpp/{rid}/config")
        aux = np.array(client.state(f"vpp/{rid}/aux"), dtype=float) / SCALE
        lam = np.array(client.state(f"vpp/{rid}/lam"), dtype=float) / SCALE
        p = self.model.solve(aux[self.u, self.others], lam[self.u, self.others], cfg["rho"] / SCALE)
        payload: dict[str, Any] = {
            "k": st["k"],
            "p": [[round(v * SCALE) for v in row] for row in p],
            "round": rid,
            "u": self.u,
        }
        out = client.submit(self.key, "vpp.submit", payload)
        if not out.ok:
            raise AgentError(f"prosumer {self.u} iteration {st['k']}: {out.log}")
        self.done_k = st["k"]
        return True
