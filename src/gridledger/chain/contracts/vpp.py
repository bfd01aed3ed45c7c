"""Seed 003's VPP contract: the dual step of the P2P trading ADMM (its Func A, B and C).

* ``vpp.open`` (DSO, the VPP operator): the prosumers' keys, horizon, ρ, tolerance, iteration
  limit and per-iteration timeout;
* ``vpp.submit`` (prosumer u, signed by its key; Func B): u's trades ``p_uv`` with every other
  prosumer for iteration k.  When all have submitted, the contract runs the dual step
  (:func:`gridledger.market.vpp_rules.dual_step_fixed`: auxiliary trades ``p'``, duals ``λ``,
  residual ``‖p' − p‖``) and opens the next iteration or stops (``converged`` / ``max_iter``);
* Func C is a state read: ``vpp/<round>/aux`` and ``vpp/<round>/lam`` (n × n × T, 1e-9 units);
* ``vpp.timeout`` (anyone) closes an iteration whose deadline (block time) passed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gridledger.chain import codes
from gridledger.chain.contracts.aggregator import ANY_MEMBER, ROUND_RE
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
from gridledger.market.vpp_rules import dual_step_fixed

MAX_PROSUMERS = 64
MAX_ABS = 10**15


def _round(p: dict[str, Any]) -> str:
    rid = req_str(p, "round", 32)
    if not ROUND_RE.match(rid):
        raise PayloadError("round must match [a-z0-9][a-z0-9_-]{0,31}")
    return rid


def _v_open(p: dict[str, Any]) -> None:
    require_fields(p, ["eps", "horizon", "max_iter", "prosumers", "rho", "round", "timeout_ms"])
    _round(p)
    req_int(p, "horizon", 1, 168)
    req_int(p, "rho", 1, MAX_ABS)
    req_int(p, "eps", 1, MAX_ABS)
    req_int(p, "max_iter", 1, 100_000)
    req_int(p, "timeout_ms", 1, 86_400_000)
    keys = p.get("prosumers")
    if not isinstance(keys, list) or not 2 <= len(keys) <= MAX_PROSUMERS:
        raise PayloadError(f"prosumers must list 2..{MAX_PROSUMERS} keys")
    for i, k in enumerate(keys):
        req_key({f"prosumers[{i}]": k}, f"prosumers[{i}]")


def _x_open(ctx: Context, p: dict[str, Any]) -> None:
    rid = p["round"]
    if ctx.state.get(f"vpp/{rid}/config") is not None:
        raise ContractError(codes.ALREADY_EXISTS, f"VPP round {rid} already exists")
    n, h = len(p["prosumers"]), p["horizon"]
    zeros = [[[0] * h for _ in range(n)] for _ in range(n)]
    ctx.state.set(f"vpp/{rid}/config", p)
    ctx.state.set(f"vpp/{rid}/aux", zeros)
    ctx.state.set(f"vpp/{rid}/lam", zeros)
    ctx.state.set(
        f"vpp/{rid}/state",
        {
            "deadline_ms": ctx.time_ms + p["timeout_ms"],
            "history": [],
            "k": 1,
            "missing": [],
            "status": "collecting",
            "submitted": [],
        },
    )
    ctx.emit("vpp.open", round=rid, prosumers=n)


def _v_submit(p: dict[str, Any]) -> None:
    require_fields(p, ["k", "p", "round", "u"])
    _round(p)
    req_int(p, "k", 1, 100_000)
    req_int(p, "u", 0, MAX_PROSUMERS - 1)
    if not isinstance(p["p"], list):
        raise PayloadError("p must be a list of rows, one per other prosumer")


def _x_submit(ctx: Context, p: dict[str, Any]) -> None:
    rid, u, k = p["round"], p["u"], p["k"]
    cfg = ctx.state.get(f"vpp/{rid}/config")
    if cfg is None:
        raise ContractError(codes.NOT_FOUND, f"no VPP round {rid}")
    st = ctx.state.get(f"vpp/{rid}/state")
    n, h = len(cfg["prosumers"]), cfg["horizon"]
    if st["status"] != "collecting":
        raise ContractError(codes.INVALID_PAYLOAD, f"VPP round {rid} is {st['status']}")
    if u >= n or ctx.sender != cfg["prosumers"][u]:
        raise ContractError(
            codes.UNAUTHORIZED, f"trades of prosumer {u} signed by {ctx.sender[:16]}…, not its key"
        )
    if k != st["k"]:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"submission for iteration {k}; round {rid} is at {st['k']}"
        )
    if ctx.time_ms > st["deadline_ms"]:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"iteration {k} of round {rid} closed at {st['deadline_ms']}"
        )
    if u in st["submitted"]:
        raise ContractError(codes.ALREADY_EXISTS, f"prosumer {u} already submitted iteration {k}")
    rows = p["p"]
    ok = len(rows) == n - 1 and all(
        isinstance(r, list)
        and len(r) == h
        and all(isinstance(a, int) and not isinstance(a, bool) and abs(a) <= MAX_ABS for a in r)
        for r in rows
    )
    if not ok:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"p must be {n - 1} rows of {h} integers (|p| ≤ {MAX_ABS})"
        )
    ctx.state.set(f"vpp/{rid}/p/{u}", rows)
    st["submitted"] = sorted([*st["submitted"], u])
    if len(st["submitted"]) == n:
        trades = np.zeros((n, n, h), dtype=object)
        for v in range(n):
            others = [w for w in range(n) if w != v]
            trades[v, others] = np.array(ctx.state.get(f"vpp/{rid}/p/{v}"), dtype=object)
        aux = np.array(ctx.state.get(f"vpp/{rid}/aux"), dtype=object)
        lam = np.array(ctx.state.get(f"vpp/{rid}/lam"), dtype=object)
        aux, lam, residual = dual_step_fixed(trades, aux, lam, cfg["rho"])
        ctx.state.set(f"vpp/{rid}/aux", aux.tolist())
        ctx.state.set(f"vpp/{rid}/lam", lam.tolist())
        st["history"].append([k, residual])
        if residual <= cfg["eps"]:
            st.update(status="converged", submitted=[])
        elif k >= cfg["max_iter"]:
            st.update(status="max_iter", submitted=[])
        else:
            st.update(k=k + 1, submitted=[], deadline_ms=ctx.time_ms + cfg["timeout_ms"])
        ctx.emit("vpp.dual_step", round=rid, k=k, residual=residual)
    ctx.state.set(f"vpp/{rid}/state", st)


def _v_timeout(p: dict[str, Any]) -> None:
    require_fields(p, ["round"])
    _round(p)


def _x_timeout(ctx: Context, p: dict[str, Any]) -> None:
    rid = p["round"]
    cfg = ctx.state.get(f"vpp/{rid}/config")
    if cfg is None:
        raise ContractError(codes.NOT_FOUND, f"no VPP round {rid}")
    st = ctx.state.get(f"vpp/{rid}/state")
    if st["status"] != "collecting" or ctx.time_ms <= st["deadline_ms"]:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"VPP round {rid} is {st['status']} until {st['deadline_ms']}"
        )
    missing = [u for u in range(len(cfg["prosumers"])) if u not in st["submitted"]]
    st.update(status="timed_out", missing=missing)
    ctx.state.set(f"vpp/{rid}/state", st)
    ctx.emit("vpp.timed_out", round=rid, k=st["k"], missing=",".join(map(str, missing)))


CONTRACT = Contract(
    "vpp",
    (
        TxType("vpp.open", frozenset({"dso"}), _v_open, _x_open, max_payload_bytes=16 * 1024),
        TxType(
            "vpp.submit", frozenset({"prosumer"}), _v_submit, _x_submit,
            max_payload_bytes=64 * 1024,
        ),
        TxType("vpp.timeout", ANY_MEMBER, _v_timeout, _x_timeout),
    ),
)  # fmt: skip
