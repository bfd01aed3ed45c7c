"""Prosumer agents of seed 003's VPP: the primal step (eq. 4) against the VPP contract.

Each :class:`VppAgent` holds one prosumer's private data and model.  While an iteration is open
it reads the auxiliary trades ``p'`` and duals ``λ`` (Func C, a state read), solves its primal
problem and submits its trades (Func B); the contract does the dual step (Func A).  When the
round converges it accepts the round's bills, naming as the most it will pay what it owes by
its own reckoning (its own last trades at the round's clearing prices); the contract escrows the
bills, which are never above that.  Days run as one round each; the battery's
end energy of one day starts the next.

As a process (``python -m gridledger.agents.vpp_agent --node URL ...``) one agent process holds
one or more prosumers' keys, talks to a node only through its HTTP API, reads ``p'`` and ``λ``
once per iteration and submits its prosumers' trades in one batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gridledger.agents.client import AgentError, ChainClient, must
from gridledger.chain.contracts.vpp import TERMINAL, vpp_key
from gridledger.chain.keys import KeyPair
from gridledger.grid.vpp import Prosumer, ProsumerProfile, VppPrices, ancillary_price
from gridledger.market.vpp_rules import SCALE, UTOKEN_PER_USD, pair_bills


def price_cap_utoken_per_kwh(prices: VppPrices) -> int:
    """α + β: one more kWh from the grid in an hour costs at most that (it raises the day's peak
    by at most 1 kW), so no prosumer values a kWh above it and the cap binds only on a price the
    ADMM has not settled."""
    return round((prices.grid_usd_per_kwh + prices.peak_usd_per_kw_day) * UTOKEN_PER_USD)


def round_payload(
    round_id: str,
    prosumers: list[str],
    connection_kw: list[float],
    rho: float = 0.5,
    eps_kwh: float = 1e-6,
    max_iter: int = 1000,
    horizon: int = 24,
    timeout_ms: int = 60_000,
    prices: VppPrices | None = None,
) -> dict[str, Any]:
    """The ``vpp.open`` payload (ρ, ε, bounds and prices in the contract's integer units; the
    price cap is :func:`price_cap_utoken_per_kwh`)."""
    prices = prices or VppPrices()
    return {
        "eps": round(eps_kwh * SCALE),
        "horizon": horizon,
        "max_iter": max_iter,
        "max_price_utoken_per_kwh": price_cap_utoken_per_kwh(prices),
        "p_max": [round(c * SCALE) for c in connection_kw],
        "price_utoken_per_kwh": round(prices.p2p_usd_per_kwh * UTOKEN_PER_USD),
        "prosumers": prosumers,
        "rho": round(rho * SCALE),
        "round": round_id,
        "timeout_ms": timeout_ms,
    }


def open_vpp_round(
    client: ChainClient,
    operator: KeyPair,
    round_id: str,
    prosumers: list[str],
    rho: float = 0.5,
    eps_kwh: float = 1e-6,
    max_iter: int = 1000,
    horizon: int = 24,
    timeout_ms: int = 60_000,
    connection_kw: list[float] | None = None,
    prices: VppPrices | None = None,
) -> None:
    bounds = connection_kw or [ProsumerProfile.connection_kw] * len(prosumers)
    payload = round_payload(
        round_id, prosumers, bounds, rho, eps_kwh, max_iter, horizon, timeout_ms, prices
    )
    must(client.submit(operator, "vpp.open", payload), "vpp.open")


class VppAgent:
    """One prosumer over the days of the period, one round per day."""

    def __init__(
        self,
        profiles: list[ProsumerProfile],
        u: int,
        key: KeyPair,
        round_id: str = "",
        day: int = 0,
        prices: VppPrices | None = None,
    ) -> None:
        self.u, self.key = u, key
        self.profile = profiles[u]
        self.n = len(profiles)
        self.others = [v for v in range(self.n) if v != u]
        self.model = Prosumer(u, self.n, prices or VppPrices())
        self.as_price = ancillary_price(self.profile.solar_kw.shape[0])
        self.b0 = self.profile.battery_initial_kwh
        self.start_day(round_id, day)

    def start_day(self, round_id: str, day: int) -> None:
        self.round_id, self.day = round_id, day
        self.model.set_day(self.profile, day, self.b0, self.as_price)
        self.done_k = 0
        self.done = False
        self.accepted = False
        self.last_rows: list[list[int]] | None = None

    def end_day(self) -> None:
        """Carry the battery's end energy (of the last primal solve) to the next day."""
        self.b0 = float(np.clip(self.model.b.value[-1], 0, self.profile.battery_kwh))

    def due(self, st: dict[str, Any] | None) -> bool:
        """Is an iteration open that this prosumer has not submitted to yet?"""
        if st is None:
            return False
        if st["status"] in ("max_iter", "timed_out", "settled"):
            self.done = True
            return False
        return (
            st["status"] == "collecting" and st["k"] > self.done_k and self.u not in st["submitted"]
        )

    def submission(
        self, st: dict[str, Any], cfg: dict[str, Any], aux: list, lam: list
    ) -> dict[str, Any]:
        """Solve eq. 4 at the chain's ``p'`` and ``λ``; the ``vpp.submit`` payload."""
        a = np.array([aux[self.u][v] for v in self.others], dtype=float) / SCALE
        m = np.array([lam[self.u][v] for v in self.others], dtype=float) / SCALE
        p = self.model.solve(a, m, cfg["rho"] / SCALE)
        bound = cfg["p_max"][self.u]
        rows = [[max(-bound, min(bound, round(v * SCALE))) for v in row] for row in p]
        self.last_rows = rows
        self.done_k = st["k"]
        return {"k": st["k"], "p": rows, "round": self.round_id, "u": self.u}

    def acceptance(self, cfg: dict[str, Any], aux: list, lam: list) -> dict[str, Any]:
        """Accept the round, naming as the most this prosumer will pay what it owes by its own
        word: its own last trades at the round's prices (the contract also caps each trade by the
        seller's word, so its bills are never above this)."""
        if self.last_rows is None:
            raise AgentError(f"prosumer {self.u} has no trades of its own in round {self.round_id}")
        own: list[Any] = [None] * self.n
        own[self.u] = self.last_rows
        bills = pair_bills(
            aux, lam, own, cfg["price_utoken_per_kwh"], cfg["max_price_utoken_per_kwh"]
        )
        self.accepted = True
        return {"max_pay_utoken": sum(bills[self.u]), "round": self.round_id, "u": self.u}

    def step(self, client: ChainClient) -> bool:
        """One poll against an in-process chain: submit or accept if due; True if it sent."""
        rid = self.round_id
        st = client.state(vpp_key(rid, "state"))
        if st is not None and st["status"] == "converged" and not self.accepted:
            cfg = client.state(vpp_key(rid, "config"))
            payload = self.acceptance(
                cfg, client.state(vpp_key(rid, "aux")), client.state(vpp_key(rid, "lam"))
            )
            out = client.submit(self.key, "vpp.accept", payload)
            if not out.ok:
                raise AgentError(f"prosumer {self.u} acceptance: {out.log}")
            return True
        if st is not None and st["status"] in TERMINAL and st["status"] != "converged":
            self.done = True
        if not self.due(st):
            return False
        cfg = client.state(vpp_key(rid, "config"))
        payload = self.submission(
            st, cfg, client.state(vpp_key(rid, "aux")), client.state(vpp_key(rid, "lam"))
        )
        out = client.submit(self.key, "vpp.submit", payload)
        if not out.ok:
            raise AgentError(f"prosumer {self.u} iteration {st['k']}: {out.log}")
        return True


def prosumer_key_path(home: Path, u: int) -> Path:
    return home / "keys" / f"prosumer-{u}.json"


def load_profiles(spec: str) -> list[ProsumerProfile]:
    """``gen:N,DAYS,SEED`` (the seeded synthetic profiles) or a CSV path."""
    from gridledger.grid.vpp import generate_profiles, load_profiles_csv

    if spec.startswith("gen:"):
        n, days, seed = (int(x) for x in spec[4:].split(","))
        return generate_profiles(n, days, seed)
    return load_profiles_csv(spec)


def run_rounds(client: Any, agents: list[VppAgent], rounds: list[str], deadline_s: float) -> int:
    """The process loop: every day's round in turn, one read of ``p'`` and ``λ`` and one
    batched submission per iteration for all this process's prosumers."""
    t_end = time.monotonic() + deadline_s
    for day, rid in enumerate(rounds):
        for a in agents:
            a.start_day(rid, day)
        cfg = None
        while True:
            if time.monotonic() > t_end:
                print(f"round {rid}: deadline passed", file=sys.stderr)
                return 1
            st = client.state(vpp_key(rid, "state"))
            if st is None:
                time.sleep(0.01)
                continue
            cfg = cfg or client.state(vpp_key(rid, "config"))
            if st["status"] in ("settled", "max_iter", "timed_out"):
                break
            items: list[tuple[KeyPair, str, dict[str, Any]]] = []
            if st["status"] == "converged":
                pending = [a for a in agents if not a.accepted]
                if pending:
                    aux, lam = client.state(vpp_key(rid, "aux")), client.state(vpp_key(rid, "lam"))
                    items = [(a.key, "vpp.accept", a.acceptance(cfg, aux, lam)) for a in pending]
            else:
                due = [a for a in agents if a.due(st)]
                if due:
                    aux, lam = client.state(vpp_key(rid, "aux")), client.state(vpp_key(rid, "lam"))
                    items = [(a.key, "vpp.submit", a.submission(st, cfg, aux, lam)) for a in due]
            if not items:
                time.sleep(0.005)
                continue
            for (_, t, payload), res in zip(items, client.submit_many(items), strict=True):
                if res["code"] != 0:
                    print(
                        f"prosumer {payload['u']} {t} in {rid}: {res.get('log')}", file=sys.stderr
                    )
                    for a in agents:  # retry at the next poll
                        if a.u == payload["u"]:
                            a.done_k, a.accepted = 0, False
        for a in agents:
            a.end_day()
    return 0


def main(argv: list[str] | None = None) -> int:
    from gridledger.agents.der_agent import AgentHttp
    from gridledger.chain.keys import load_key

    p = argparse.ArgumentParser(prog="python -m gridledger.agents.vpp_agent")
    p.add_argument("--node", required=True, help="the node's API URL")
    p.add_argument("--home", required=True, type=Path, help="directory with keys/prosumer-<u>.json")
    p.add_argument("--profiles", required=True, help="gen:N,DAYS,SEED or a CSV path")
    p.add_argument("--prosumers", required=True, help="comma-separated prosumer indices")
    p.add_argument("--rounds", required=True, help="comma-separated round ids, one per day")
    p.add_argument("--deadline-s", type=float, default=3600.0)
    args = p.parse_args(argv)
    profiles = load_profiles(args.profiles)
    client = AgentHttp(args.node)
    agents = [
        VppAgent(profiles, int(u), load_key(prosumer_key_path(args.home, int(u)))[0])
        for u in args.prosumers.split(",")
    ]
    for a in agents:  # compile each DPP problem now, not inside the first iteration
        zeros = np.zeros((a.n - 1, a.model.horizon))
        a.model.solve(zeros, zeros, 1.0)
    print(f"ready: prosumers {args.prosumers}", flush=True)
    return run_rounds(client, agents, args.rounds.split(","), args.deadline_s)


if __name__ == "__main__":
    sys.exit(main())
