"""DER agents for on-chain ADMM (seed 001 Algorithm 1, P_i) and the round's opener.

A :class:`DerAgent` owns one node: it knows only its own devices (through the public feeder
model of its node) and talks to the chain through a
:class:`~gridledger.agents.client.ChainClient` (in process, or a node's HTTP API — so agents can
run on other machines).  At each new block it reads the round's state; when an iteration is open
and it has not yet submitted, it reads ``z`` and its own duals ξ, solves its local problem
(eq. 15) and submits its signed copies, net injection and local DLMP.

``python -m gridledger.agents.der_agent --node URL --home HOME --feeder sce56 --round R
--nodes 0,2,4`` runs the agents of some nodes as one OS process (keys in
``HOME/keys/node-<i>.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gridledger.agents.client import AgentError, ChainClient, must
from gridledger.chain.contracts.aggregator import round_key
from gridledger.chain.keys import KeyPair
from gridledger.grid.admm import AdmmOptions, initial_z, root_price_estimate
from gridledger.grid.conic_subproblem import ConicLocalModel
from gridledger.grid.feeders import Feeder
from gridledger.grid.zlayout import ZLayout
from gridledger.market.aggregation import SCALE, node_rows

W_PER_PU = 1_000_000  # 1 MVA base
UTOKEN_PER_KWH_PER_USD_PER_MWH = 1000  # 1 token = 1 $, 1e6 utoken; /1000 kWh per MWh
SEED_ROWS_PER_TX = 40
TERMINAL = ("converged", "max_iter", "timed_out")


def round_payload(
    feeder: Feeder, round_id: str, agents: list[str], options: AdmmOptions, timeout_ms: int
) -> dict[str, Any]:
    """The ``admm.open`` payload for ``options`` (ρ, α, ε, μ, τ in the contract's units)."""
    off_chain_only = {
        "anderson": options.anderson != 0,
        "rho_per_entry": options.rho_per_entry,
        "v_weight": options.v_weight != 1.0,
    }
    used = sorted(k for k, on in off_chain_only.items() if on)
    if used:
        raise ValueError(f"the aggregator contract does not implement {used}; run them off chain")
    alpha_den = 1000
    price = None
    if options.price_warm_start:
        price = root_price_estimate(feeder, initial_z(feeder), options.flat_price)
    return {
        "adaptive": int(options.adaptive),
        "agents": agents,
        "alpha_den": alpha_den,
        "alpha_num": round(options.over_relaxation * alpha_den),
        "eps_dual": round(options.eps_dual * SCALE),
        "eps_pri": round(options.eps_pri * SCALE),
        "horizon": feeder.horizon_h,
        "max_iter": options.max_iter,
        "mu": round(options.balance_mu),
        "parent": [int(p) for p in feeder.parent],
        "price0": [round(p * SCALE) for p in price]
        if price is not None
        else [0] * feeder.horizon_h,
        "rho": round(options.rho * SCALE),
        "round": round_id,
        "tau": round(options.balance_tau),
        "timeout_ms": timeout_ms,
    }


def open_round(
    client: ChainClient,
    dso: KeyPair,
    feeder: Feeder,
    round_id: str,
    agents: list[str],
    options: AdmmOptions,
    timeout_ms: int = 60_000,
) -> None:
    """Post ``admm.open`` and the warm-start ``z`` (``admm.seed`` chunks)."""
    payload = round_payload(feeder, round_id, agents, options, timeout_ms)
    must(client.submit(dso, "admm.open", payload), "admm.open")
    z0 = initial_z(feeder) if options.warm_start else None
    if z0 is None:
        z0 = ZLayout(feeder.n_nodes).flat(feeder.horizon_h)
    fixed = [[round(v * SCALE) for v in row] for row in z0]
    for row0 in range(0, len(fixed), SEED_ROWS_PER_TX):
        chunk = fixed[row0 : row0 + SEED_ROWS_PER_TX]
        must(client.submit(dso, "admm.seed", {"round": round_id, "row0": row0, "rows": chunk}),
             "admm.seed")  # fmt: skip


class DerAgent:
    """P_i of Algorithm 1 for one node."""

    def __init__(self, feeder: Feeder, node: int, key: KeyPair, round_id: str) -> None:
        self.node = node
        self.key = key
        self.round_id = round_id
        self.model = ConicLocalModel(feeder, [node])
        self.rows = node_rows([int(p) for p in feeder.parent], node)
        self.done_k = 0
        self.done = False
        self.status = ""
        self.solve_s = 0.0

    def warm_up(self) -> None:
        shape = (len(self.rows), self.model.feeder.horizon_h)
        self.model.solve_admm(np.ones(shape), np.zeros(shape), 1.0)

    def due(self, state: dict[str, Any] | None) -> bool:
        """Is an iteration open that this node has not submitted to yet?"""
        if state is None:
            return False
        self.status = state["status"]
        if state["status"] in TERMINAL:
            self.done = True
            return False
        return (
            state["status"] == "collecting"
            and state["k"] > self.done_k
            and self.node not in state["submitted"]
        )

    def local_step(self, state: dict[str, Any], z: list, xi_all: list) -> dict[str, Any]:
        """Solve eq. 15 at the chain's ``z`` and this node's ξ; the ``admm.submit`` payload."""
        z_tilde = np.array([z[r] for r in self.rows], dtype=float) / SCALE
        xi = np.array(xi_all[self.node], dtype=float) / SCALE
        started = time.perf_counter()
        x = self.model.solve_admm(z_tilde, xi, state["rho"] / SCALE)
        self.solve_s += time.perf_counter() - started
        self.done_k = state["k"]
        return {
            "dlmp_utoken_per_kwh": [
                round(v * UTOKEN_PER_KWH_PER_USD_PER_MWH) for v in self.model.dlmp_usd_per_mwh()[0]
            ],
            "k": state["k"],
            "node": self.node,
            "p_w": [round(v * W_PER_PU) for v in self.model.injections_mw()[0]],
            "round": self.round_id,
            "x": [[round(v * SCALE) for v in row] for row in x],
        }

    def step(self, client: ChainClient) -> bool:
        """Submit for the open iteration if due; True when something was submitted."""
        rid = self.round_id
        st = client.state(round_key(rid, "state"))
        if not self.due(st):
            if st is not None and self.node in st["submitted"]:
                self.done_k = st["k"]
            return False
        payload = self.local_step(
            st, client.state(round_key(rid, "z")), client.state(round_key(rid, "xi"))
        )
        out = client.submit(self.key, "admm.submit", payload)
        if not out.ok:
            raise AgentError(f"node {self.node} iteration {st['k']}: {out.log}")
        return True


class ClusterAgent:
    """The agent of a connected group of nodes (one owner of several nodes, seed 001 §VII):
    it solves their joint problem, in which its own copies of the group's internal lines agree,
    and submits every node's copies signed with that node's key."""

    def __init__(
        self, feeder: Feeder, nodes: list[int], keys: dict[int, KeyPair], round_id: str
    ) -> None:
        self.nodes = sorted(nodes)
        self.keys = keys
        self.round_id = round_id
        self.model = ConicLocalModel(feeder, self.nodes, merge_internal=True)
        parent = [int(p) for p in feeder.parent]
        layout = self.model.layout
        # model row -> (node, position among that node's rows of node_rows)
        self.where = [
            (int(o), node_rows(parent, int(o)).index(int(zr)))
            for zr, o in zip(layout.z_rows, layout.owner, strict=True)
        ]
        self.n_rows = {i: len(node_rows(parent, i)) for i in self.nodes}
        self.done_k = 0
        self.done = False

    def warm_up(self) -> None:
        shape = (len(self.where), self.model.feeder.horizon_h)
        self.model.solve_admm(np.ones(shape), np.zeros(shape), 1.0)

    def due(self, state: dict[str, Any] | None) -> bool:
        if state is None:
            return False
        if state["status"] in TERMINAL:
            self.done = True
            return False
        return state["status"] == "collecting" and state["k"] > self.done_k

    def local_steps(
        self, state: dict[str, Any], z: list, xi_all: list
    ) -> list[tuple[KeyPair, str, dict[str, Any]]]:
        z_tilde = np.array([z[r] for r in self.model.layout.z_rows], dtype=float) / SCALE
        xi = np.array([xi_all[o][pos] for o, pos in self.where], dtype=float) / SCALE
        x = self.model.solve_admm(z_tilde, xi, state["rho"] / SCALE)
        self.done_k = state["k"]
        rows: dict[int, list] = {i: [None] * self.n_rows[i] for i in self.nodes}
        for (o, pos), row in zip(self.where, x, strict=True):
            rows[o][pos] = [round(v * SCALE) for v in row]
        dlmp = self.model.dlmp_usd_per_mwh()
        p_mw = self.model.injections_mw()
        out = []
        for j, node in enumerate(self.nodes):
            if node in state["submitted"]:
                continue
            payload = {
                "dlmp_utoken_per_kwh": [round(v * UTOKEN_PER_KWH_PER_USD_PER_MWH) for v in dlmp[j]],
                "k": state["k"],
                "node": node,
                "p_w": [round(v * W_PER_PU) for v in p_mw[j]],
                "round": self.round_id,
                "x": rows[node],
            }
            out.append((self.keys[node], "admm.submit", payload))
        return out


class AgentHttp:
    """The few calls a process of agents needs from a node's HTTP API (solo or BFT): state
    reads and one batched submission per iteration for all its keys."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)
        status = self.http.get("/status").raise_for_status().json()
        self.chain_id = status["chain_id"]
        self.seq: dict[str, int] = {}

    def state(self, key: str) -> Any:
        from gridledger.chain import encoding

        resp = self.http.get(f"/state/{key}")
        if resp.status_code == 404:
            return None
        value = resp.raise_for_status().json().get("value")
        if value is None:
            return None
        try:
            raw = bytes.fromhex(value)
        except ValueError:  # a node that answers with the canonical JSON itself
            raw = value.encode()
        return encoding.decode(raw)

    def _next_seq(self, pub: str) -> int:
        if pub not in self.seq:
            acct = self.http.get(f"/accounts/{pub}").raise_for_status().json()
            self.seq[pub] = int(acct["next_seq"])
        return self.seq[pub]

    def submit_many(self, items: list[tuple[KeyPair, str, dict[str, Any]]]) -> list[dict]:
        from gridledger.chain.tx import make_tx

        raws = [
            make_tx(key, self.chain_id, self._next_seq(key.pub_hex), t, p).raw.hex()
            for key, t, p in items
        ]
        body = {"txs": [{"tx": r} for r in raws]}  # the same API on solo and BFT nodes
        results = self.http.post("/txs/batch", json=body).raise_for_status().json()["results"]
        for (key, _, _), res in zip(items, results, strict=True):
            if res["code"] == 0:
                self.seq[key.pub_hex] += 1
            else:
                self.seq.pop(key.pub_hex, None)
        return results

    def submit(self, key: KeyPair, tx_type: str, payload: dict[str, Any]) -> Any:
        from types import SimpleNamespace

        res = self.submit_many([(key, tx_type, payload)])[0]
        return SimpleNamespace(
            txid=res.get("txid", ""), code=res["code"], log=res.get("log", ""), ok=res["code"] == 0
        )

    def close(self) -> None:
        self.http.close()


def node_key_path(home: Path, node: int) -> Path:
    return home / "keys" / f"node-{node}.json"


def main(argv: list[str] | None = None) -> int:
    from gridledger.chain.keys import load_key
    from gridledger.grid.feeders import load_feeder

    p = argparse.ArgumentParser(prog="python -m gridledger.agents.der_agent")
    p.add_argument("--node", required=True, help="the node's API URL")
    p.add_argument("--home", required=True, type=Path, help="directory with keys/node-<i>.json")
    p.add_argument("--feeder", required=True)
    p.add_argument("--round", required=True)
    p.add_argument("--nodes", required=True, help="comma-separated node indices")
    p.add_argument(
        "--clusters", action="store_true", help="--nodes lists connected groups, split by ';'"
    )
    p.add_argument("--deadline-s", type=float, default=3600.0)
    args = p.parse_args(argv)
    feeder = load_feeder(args.feeder)
    client = AgentHttp(args.node)
    if args.clusters:
        groups = [[int(i) for i in g.split(",")] for g in args.nodes.split(";")]
        agents: list[Any] = [
            ClusterAgent(
                feeder, g, {i: load_key(node_key_path(args.home, i))[0] for i in g}, args.round
            )
            for g in groups
        ]
    else:
        agents = [
            DerAgent(feeder, int(i), load_key(node_key_path(args.home, int(i)))[0], args.round)
            for i in args.nodes.split(",")
        ]
    for agent in agents:  # compile each DPP problem now, not inside the first iteration
        agent.warm_up()
    print(f"ready: nodes {args.nodes}", flush=True)
    t_end = time.monotonic() + args.deadline_s
    key_state = round_key(args.round, "state")
    while time.monotonic() < t_end:
        state = client.state(key_state)
        due = [a for a in agents if a.due(state)]
        if all(a.done for a in agents):
            return 0
        if not due:
            time.sleep(0.005)
            continue
        # one read of z and of the duals per process and iteration, one batched submission
        z = client.state(round_key(args.round, "z"))
        xi_all = client.state(round_key(args.round, "xi"))
        items = []
        for a in due:
            if isinstance(a, ClusterAgent):
                items += a.local_steps(state, z, xi_all)
            else:
                items.append((a.key, "admm.submit", a.local_step(state, z, xi_all)))
        for (_, _, payload), res in zip(items, client.submit_many(items), strict=True):
            if res["code"] != 0:
                node = payload["node"]
                print(f"node {node} iteration {state['k']}: {res.get('log')}", file=sys.stderr)
                for a in due:
                    a.done_k = 0  # retry at the next poll
    print(f"agents {args.nodes}: deadline passed", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())


def agent_keys(round_id: str, n_nodes: int) -> list[KeyPair]:
    """Deterministic per-node keys for demos and tests (never for real members)."""
    import hashlib

    return [
        KeyPair.from_seed(hashlib.sha256(f"gridledger/admm/{round_id}/{i}".encode()).digest())
        for i in range(n_nodes)
    ]


def admm_genesis(
    chain_id: str,
    dso: KeyPair,
    validator: KeyPair,
    agents: list[KeyPair],
    time_ms: int,
    meters: list[KeyPair] = (),
    agent_utoken: int = 0,
) -> bytes:
    """A chain whose members are the DSO, one prosumer key per node (and optionally one meter
    key per node), with S1 (aggregator), S2 (billing) and the VPP contract loaded."""
    from gridledger.chain.genesis import make_genesis

    members = [{"bus": None, "name": "dso", "pub_key": dso.pub_hex, "role": "dso"}]
    members += [
        {"bus": i, "name": f"der-{i}", "pub_key": k.pub_hex, "role": "prosumer"}
        for i, k in enumerate(agents)
    ]
    members += [
        {"bus": i, "name": f"meter-{i}", "pub_key": k.pub_hex, "role": "meter"}
        for i, k in enumerate(meters)
    ]
    balances = [{"account": dso.pub_hex, "amount": 10**12, "denom": "utoken"}]
    if agent_utoken:
        balances += [
            {"account": k.pub_hex, "amount": agent_utoken, "denom": "utoken"} for k in agents
        ]
    return make_genesis(
        chain_id,
        time_ms,
        [(validator.pub_hex, 10)],
        members,
        balances,
        contracts=[
            "gridledger.chain.contracts.aggregator",
            "gridledger.chain.contracts.billing",
            "gridledger.chain.contracts.vpp",
        ],
    )
