"""S1, the ADMM aggregator of seed 001 (Algorithm 1), as a deterministic contract.

A scheduling *round* runs the consensus ADMM of :mod:`gridledger.grid.admm` with the aggregator
step on chain, in the fixed-point integers of :mod:`gridledger.market.aggregation` (1e-9 units):

1. ``admm.open`` (DSO): the feeder's tree (``parent``), the agent key of every node, ρ, α,
   tolerances, the iteration limit, the per-iteration timeout (block time) and the price warm
   start ``price0`` (ξ on P copies); the round waits for its initial ``z``;
2. ``admm.seed`` (DSO): rows of the initial ``z`` (chunks; the round opens iteration 1 when every
   row is in);
3. ``admm.submit`` (each node's agent, signed by the key the round names for that node): the
   node's local copies ``x̃_i`` for the current iteration, its net injection (W) and its local
   balance dual (utoken/kWh).  When the last node's copies arrive, the contract averages
   (eq. 16), updates the duals (eq. 17) and the residuals (eqs. 18–19), and either opens the next
   iteration or stores the schedule (``z``, every node's injection and DLMP) and stops;
4. ``admm.timeout`` (anyone): once block time passes an open iteration's deadline, the round
   stops with status ``timed_out`` and the list of nodes that did not submit.

Every input is in a transaction, so anyone can re-run the rounds from the chain's records
(:func:`replay`) and must get the same integers as the state.

State (prefix ``admm/``): ``admm/<round>/config``, ``/state`` (iteration, status, ρ, deadline,
who submitted, residual history), ``/z``, ``/xi`` (every node's duals), ``/x/<node>`` (current
iteration), ``/schedule`` once finished.
"""

from __future__ import annotations

import re
from typing import Any

from gridledger.chain import codes
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    PayloadError,
    TxType,
    req_int,
    req_key,
    req_str,
    require_fields,
)
from gridledger.chain.keys import ROLES
from gridledger.market.aggregation import (
    RoundParams,
    aggregate,
    children_of,
    initial_xi,
    node_rows,
)

MAX_NODES = 512
MAX_HORIZON = 168
MAX_ABS = 10**15  # 1e6 pu in 1e-9 units: far beyond any feeder
ROUND_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
PARAM_FIELDS = ("rho", "alpha_num", "alpha_den", "eps_pri", "eps_dual", "max_iter", "mu", "tau")


def round_key(round_id: str, *parts: object) -> str:
    """``admm/<round>/<part>``: config, state, z, xi, x/<node>, schedule."""
    return "/".join(["admm", round_id, *(str(p) for p in parts)])


_key = round_key


def _round_id(p: dict[str, Any]) -> str:
    rid = req_str(p, "round", 32)
    if not ROUND_RE.match(rid):
        raise PayloadError("round must match [a-z0-9][a-z0-9_-]{0,31}")
    return rid


def _ints(v: Any, name: str, length: int, lo: int = -MAX_ABS, hi: int = MAX_ABS) -> list[int]:
    if not isinstance(v, list) or len(v) != length:
        raise PayloadError(f"{name} must be a list of {length} integers")
    for i, a in enumerate(v):
        if not isinstance(a, int) or isinstance(a, bool) or not lo <= a <= hi:
            raise PayloadError(f"{name}[{i}] must be an integer in [{lo}, {hi}]")
    return v


def _int_list(p: dict[str, Any], name: str, length: int) -> list[int]:
    return _ints(p.get(name), name, length)


def _matrix(p: dict[str, Any], name: str, horizon: int) -> list[list[int]]:
    v = p.get(name)
    if not isinstance(v, list) or not v:
        raise PayloadError(f"{name} must be a non-empty list of rows")
    for i, row in enumerate(v):
        _ints(row, f"{name}[{i}]", horizon)
    return v


# --- admm.open ---------------------------------------------------------------------------------
def _v_open(p: dict[str, Any]) -> None:
    require_fields(
        p,
        ["adaptive", "agents", "horizon", "parent", "price0", "round", "timeout_ms", *PARAM_FIELDS],
    )
    _round_id(p)
    horizon = req_int(p, "horizon", 1, MAX_HORIZON)
    parent = p.get("parent")
    if not isinstance(parent, list) or not 2 <= len(parent) <= MAX_NODES:
        raise PayloadError(f"parent must list 2..{MAX_NODES} nodes")
    n = len(parent)
    if parent[0] != -1:
        raise PayloadError("parent[0] must be -1 (node 0 is the root)")
    for i in range(1, n):
        if not isinstance(parent[i], int) or isinstance(parent[i], bool):
            raise PayloadError(f"parent[{i}] must be an integer")
        if not 0 <= parent[i] < i:
            # parents numbered before children: a tree, no cycle, checkable in one pass
            raise PayloadError(f"parent[{i}] = {parent[i]} must be a node before {i}")
    agents = p.get("agents")
    if not isinstance(agents, list) or len(agents) != n:
        raise PayloadError(f"agents must list one key per node ({n})")
    for i in range(n):
        req_key({f"agents[{i}]": agents[i]}, f"agents[{i}]")
    _int_list(p, "price0", horizon)
    req_int(p, "rho", 1, MAX_ABS)
    den = req_int(p, "alpha_den", 1, 10**6)
    req_int(p, "alpha_num", 1, 2 * den - 1)
    req_int(p, "eps_pri", 1, MAX_ABS)
    req_int(p, "eps_dual", 1, MAX_ABS)
    req_int(p, "max_iter", 1, 100_000)
    req_int(p, "mu", 1, 10**6)
    req_int(p, "tau", 2, 10**6)
    req_int(p, "adaptive", 0, 1)
    req_int(p, "timeout_ms", 1, 86_400_000)


def _params(cfg: dict[str, Any]) -> RoundParams:
    return RoundParams(
        parent=tuple(cfg["parent"]),
        horizon=cfg["horizon"],
        rho=cfg["rho"],
        alpha_num=cfg["alpha_num"],
        alpha_den=cfg["alpha_den"],
        eps_pri=cfg["eps_pri"],
        eps_dual=cfg["eps_dual"],
        max_iter=cfg["max_iter"],
        adaptive=bool(cfg["adaptive"]),
        mu=cfg["mu"],
        tau=cfg["tau"],
    )


def _x_open(ctx: Context, p: dict[str, Any]) -> None:
    rid = p["round"]
    if ctx.state.get(_key(rid, "config")) is not None:
        raise ContractError(codes.ALREADY_EXISTS, f"round {rid} already exists")
    cfg = {**p, "opener": ctx.sender}
    ctx.state.set(_key(rid, "config"), cfg)
    params = _params(cfg)
    # all nodes' duals under one key: agents on one machine read them in one request
    ctx.state.set(_key(rid, "xi"), initial_xi(params, p["price0"]))
    ctx.state.set(
        _key(rid, "state"),
        {
            "deadline_ms": 0,
            "history": [],
            "k": 0,
            "missing": [],
            "rho": p["rho"],
            "seeded": 0,
            "status": "seeding",
            "submitted": [],
        },
    )
    ctx.state.set(_key(rid, "z"), [None] * params.n_global)
    ctx.emit("admm.open", round=rid, nodes=params.n_nodes, horizon=params.horizon)


# --- admm.seed ---------------------------------------------------------------------------------
def _v_seed(p: dict[str, Any]) -> None:
    require_fields(p, ["round", "row0", "rows"])
    _round_id(p)
    req_int(p, "row0", 0, 3 * MAX_NODES)
    if not isinstance(p["rows"], list) or not p["rows"]:
        raise PayloadError("rows must be a non-empty list")


def _x_seed(ctx: Context, p: dict[str, Any]) -> None:
    rid = p["round"]
    cfg = _config(ctx, rid)
    if ctx.sender != cfg["opener"]:
        raise ContractError(codes.UNAUTHORIZED, f"only the opener of round {rid} seeds z")
    st = ctx.state.get(_key(rid, "state"))
    if st["status"] != "seeding":
        raise ContractError(codes.INVALID_PAYLOAD, f"round {rid} is {st['status']}, not seeding")
    z = ctx.state.get(_key(rid, "z"))
    rows = _matrix(p, "rows", cfg["horizon"])
    if p["row0"] + len(rows) > len(z):
        raise ContractError(codes.INVALID_PAYLOAD, f"rows beyond the {len(z)} rows of z")
    for i, row in enumerate(rows):
        if z[p["row0"] + i] is not None:
            raise ContractError(codes.ALREADY_EXISTS, f"row {p['row0'] + i} of z already seeded")
        z[p["row0"] + i] = row
    st["seeded"] += len(rows)
    if st["seeded"] == len(z):
        st.update(status="collecting", k=1, deadline_ms=ctx.time_ms + cfg["timeout_ms"])
        ctx.emit("admm.iteration", round=rid, k=1, deadline_ms=st["deadline_ms"])
    ctx.state.set(_key(rid, "z"), z)
    ctx.state.set(_key(rid, "state"), st)


# --- admm.submit -------------------------------------------------------------------------------
def _v_submit(p: dict[str, Any]) -> None:
    require_fields(p, ["dlmp_utoken_per_kwh", "k", "node", "p_w", "round", "x"])
    _round_id(p)
    req_int(p, "k", 1, 100_000)
    req_int(p, "node", 0, MAX_NODES - 1)
    if not isinstance(p["x"], list) or not isinstance(p["p_w"], list):
        raise PayloadError("x must be a list of rows and p_w a list")


def _config(ctx: Context, rid: str) -> dict[str, Any]:
    cfg: dict[str, Any] | None = ctx.state.get(_key(rid, "config"))
    if cfg is None:
        raise ContractError(codes.NOT_FOUND, f"no ADMM round {rid}")
    return cfg


def _x_submit(ctx: Context, p: dict[str, Any]) -> None:
    rid, node, k = p["round"], p["node"], p["k"]
    cfg = _config(ctx, rid)
    st = ctx.state.get(_key(rid, "state"))
    n, horizon = len(cfg["parent"]), cfg["horizon"]
    if st["status"] != "collecting":
        raise ContractError(
            codes.INVALID_PAYLOAD, f"round {rid} is {st['status']}; it takes no submissions"
        )
    if node >= n:
        raise ContractError(codes.INVALID_PAYLOAD, f"node {node} not in round {rid} (0..{n - 1})")
    if ctx.sender != cfg["agents"][node]:
        raise ContractError(
            codes.UNAUTHORIZED,
            f"copies of node {node} signed by {ctx.sender[:16]}…, which is not node {node}'s agent",
        )
    if k != st["k"]:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"submission for iteration {k}; round {rid} is at {st['k']}"
        )
    if ctx.time_ms > st["deadline_ms"]:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"iteration {k} of round {rid} closed at {st['deadline_ms']} (block time "
            f"{ctx.time_ms}); post admm.timeout",
        )
    if node in st["submitted"]:
        raise ContractError(codes.ALREADY_EXISTS, f"node {node} already submitted iteration {k}")
    n_rows = len(node_rows(cfg["parent"], node))
    x = _matrix(p, "x", horizon)
    if len(x) != n_rows:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"node {node} has {n_rows} coupling rows (P, Q, v, v_parent, children), got {len(x)}",
        )
    _int_list(p, "p_w", horizon)
    _int_list(p, "dlmp_utoken_per_kwh", horizon)
    ctx.state.set(
        _key(rid, "x", node), {"dlmp": p["dlmp_utoken_per_kwh"], "k": k, "p_w": p["p_w"], "x": x}
    )
    st["submitted"] = sorted([*st["submitted"], node])
    if len(st["submitted"]) == n:
        _aggregate(ctx, rid, cfg, st)
    ctx.state.set(_key(rid, "state"), st)


def _aggregate(ctx: Context, rid: str, cfg: dict[str, Any], st: dict[str, Any]) -> None:
    params = _params(cfg)
    n = params.n_nodes
    subs = [ctx.state.get(_key(rid, "x", i)) for i in range(n)]
    xi = ctx.state.get(_key(rid, "xi"))
    z = ctx.state.get(_key(rid, "z"))
    res = aggregate(params, st["k"], z, xi, [s["x"] for s in subs], st["rho"])
    ctx.state.set(_key(rid, "z"), res.z)
    ctx.state.set(_key(rid, "xi"), res.xi)
    st["history"].append([st["k"], res.primal, res.dual, st["rho"]])
    ctx.emit("admm.aggregated", round=rid, k=st["k"], primal=res.primal, dual=res.dual)
    if res.status == "collecting":
        st.update(
            k=st["k"] + 1,
            rho=res.rho_next,
            submitted=[],
            deadline_ms=ctx.time_ms + cfg["timeout_ms"],
        )
        return
    st.update(status=res.status, submitted=[])
    ctx.state.set(
        _key(rid, "schedule"),
        {
            "dlmp_utoken_per_kwh": [s["dlmp"] for s in subs],
            "iterations": st["k"],
            "p_w": [s["p_w"] for s in subs],
            "primal": res.primal,
            "dual": res.dual,
            "status": res.status,
            "z": res.z,
        },
    )
    ctx.emit("admm.schedule", round=rid, status=res.status, iterations=st["k"])


# --- admm.timeout ------------------------------------------------------------------------------
def _v_timeout(p: dict[str, Any]) -> None:
    require_fields(p, ["round"])
    _round_id(p)


def _x_timeout(ctx: Context, p: dict[str, Any]) -> None:
    rid = p["round"]
    cfg = _config(ctx, rid)
    st = ctx.state.get(_key(rid, "state"))
    if st["status"] != "collecting":
        raise ContractError(codes.INVALID_PAYLOAD, f"round {rid} is {st['status']}, not open")
    if ctx.time_ms <= st["deadline_ms"]:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"iteration {st['k']} of round {rid} is open until {st['deadline_ms']} "
            f"(block time {ctx.time_ms})",
        )
    missing = [i for i in range(len(cfg["parent"])) if i not in st["submitted"]]
    st.update(status="timed_out", missing=missing)
    ctx.state.set(_key(rid, "state"), st)
    ctx.emit("admm.timed_out", round=rid, k=st["k"], missing=",".join(map(str, missing)))


ANY_MEMBER = frozenset(ROLES)
CONTRACT = Contract(
    "aggregator",
    (
        TxType("admm.open", frozenset({"dso"}), _v_open, _x_open, max_payload_bytes=64 * 1024),
        TxType("admm.seed", frozenset({"dso"}), _v_seed, _x_seed, max_payload_bytes=64 * 1024),
        TxType(
            "admm.submit",
            frozenset({"prosumer", "dso"}),
            _v_submit,
            _x_submit,
            max_payload_bytes=64 * 1024,
        ),
        TxType("admm.timeout", ANY_MEMBER, _v_timeout, _x_timeout),
    ),
)


def replay(records: list[tuple[str, str, dict[str, Any], int]]) -> dict[str, dict[str, Any]]:
    """Re-run every round from the chain's successful ``admm.*`` records, in block order.

    ``records`` are ``(tx_type, sender_hex, payload, block_time_ms)``.  Returns, per round, the
    recomputed ``z``, residual history and schedule, for comparison with the contract's state.
    """
    rounds: dict[str, dict[str, Any]] = {}
    for tx_type, _sender, p, _time_ms in records:
        rid = p["round"]
        if tx_type == "admm.open":
            params = _params(p)
            rounds[rid] = {
                "params": params,
                "z": [None] * params.n_global,
                "xi": initial_xi(params, p["price0"]),
                "x": {},
                "k": 1,
                "rho": p["rho"],
                "history": [],
                "schedule": None,
            }
        elif tx_type == "admm.seed":
            r = rounds[rid]
            for i, row in enumerate(p["rows"]):
                r["z"][p["row0"] + i] = row
        elif tx_type == "admm.submit":
            r = rounds[rid]
            r["x"][p["node"]] = p
            params = r["params"]
            if len(r["x"]) == params.n_nodes:
                subs = [r["x"][i] for i in range(params.n_nodes)]
                res = aggregate(params, r["k"], r["z"], r["xi"], [s["x"] for s in subs], r["rho"])
                r["history"].append([r["k"], res.primal, res.dual, r["rho"]])
                r["z"], r["xi"], r["x"] = res.z, res.xi, {}
                if res.status == "collecting":
                    r["k"] += 1
                    r["rho"] = res.rho_next
                else:
                    r["schedule"] = {
                        "dlmp_utoken_per_kwh": [s["dlmp_utoken_per_kwh"] for s in subs],
                        "p_w": [s["p_w"] for s in subs],
                        "status": res.status,
                        "z": res.z,
                    }
    return rounds


def chain_records(store: Any) -> list[tuple[str, str, dict[str, Any], int]]:
    """The successful ``admm.*`` transactions of a node's store in block order, for
    :func:`replay`."""
    from gridledger.chain.tx import decode_tx

    out = []
    for stored in store.iter_blocks():
        block = stored.block()
        for raw in block.txs:
            tx = decode_tx(raw)
            if not tx.type.startswith("admm."):
                continue
            record = store.get_tx(tx.id)
            if record is not None and record.code == codes.OK:
                out.append((tx.type, tx.sender.hex(), tx.payload, block.header.time_ms))
    return out


__all__ = ["CONTRACT", "chain_records", "children_of", "replay", "round_key"]
