"""Seed 003's VPP contract: the dual step of the P2P trading ADMM (its Func A, B and C) and the
payment of the trades it agrees.

* ``vpp.open`` (the DSO, the VPP operator): a round — the prosumers' keys, horizon, ρ, ε,
  iteration limit, per-iteration timeout, each prosumer's power bound, the P2P price and its cap;
* ``vpp.submit`` (prosumer u of the round, signed by its key; Func B): u's trades ``p_uv`` with
  every other prosumer for the open iteration k; the last one in runs the dual step (Func A);
* ``vpp.timeout`` (any member): closes an iteration whose deadline (block time) passed;
* ``vpp.accept`` (prosumer u of a converged round): u accepts the round's bills, naming the most
  it will pay (``max_pay_utoken``); refused if its bills come to more, else they are escrowed
  from its balance;
* ``vpp.settle`` (any member; once, after every prosumer accepted or the acceptance deadline
  passed): pays the bills from escrow and refunds the rest.

Func C is a state read: ``vpp/<round>/aux`` and ``vpp/<round>/lam`` (n × n × T, 1e-9 units).

Bounds (an attacker's view).  Work per transaction is O(n²·T) at most, with n·n·T ≤
:data:`MAX_CELLS`; state per round is fixed by n and T (one row set per prosumer, overwritten each
iteration) plus one history entry per iteration, at most ``max_iter`` ≤ :data:`MAX_ITER`.  A
submission is refused (changing nothing) when it is for another iteration (a replay of an old one
included), from a key that is not prosumer u's, a second one in the same iteration, after the
deadline, of the wrong shape, or with any trade or hourly net trade beyond u's power bound.
Money: a bill is at most the agreed quantity (the smallest of ``p'_uv``, the buyer's own
``p_uv`` and the seller's own ``−p_vu``) times the clearing price clipped to the operator's cap,
a buyer's bills are escrowed in full when it accepts (it names the most it will pay, and is
refused if they come to more), so a seller who accepted is paid in full by every buyer who
did; settlement runs once; tokens only move between
balances and the contract's escrow account, so the supply never changes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from gridledger.chain import codes
from gridledger.chain.contracts import tokens
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
from gridledger.market.vpp_rules import dual_step_fixed, pair_bills, settle_bills

MAX_PROSUMERS = 64
MAX_ABS = 10**15
MAX_CELLS = 100_000  # n·n·T: bounds the dual step's work and a round's state
MAX_ITER = 10_000
MAX_PRICE = 10**9  # utoken/kWh (1000 $/kWh)
ESCROW = hashlib.sha256(b"gridledger/vpp/escrow").hexdigest()
TERMINAL = ("converged", "max_iter", "timed_out", "settled")


def vpp_key(round_id: str, part: str) -> str:
    """State key of a round: ``config``, ``state``, ``aux``, ``lam``, ``p/<u>``, ``bills``,
    ``accept/<u>``, ``settlement``."""
    return f"vpp/{round_id}/{part}"


def _round(p: dict[str, Any]) -> str:
    rid = req_str(p, "round", 32)
    if not ROUND_RE.match(rid):
        raise PayloadError("round must match [a-z0-9][a-z0-9_-]{0,31}")
    return rid


def _v_open(p: dict[str, Any]) -> None:
    require_fields(
        p,
        ["eps", "horizon", "max_iter", "max_price_utoken_per_kwh", "p_max",
         "price_utoken_per_kwh", "prosumers", "rho", "round", "timeout_ms"],
    )  # fmt: skip
    _round(p)
    h = req_int(p, "horizon", 1, 168)
    req_int(p, "rho", 1, MAX_ABS)
    req_int(p, "eps", 1, MAX_ABS)
    req_int(p, "max_iter", 1, MAX_ITER)
    req_int(p, "timeout_ms", 1, 86_400_000)
    cap = req_int(p, "max_price_utoken_per_kwh", 0, MAX_PRICE)
    req_int(p, "price_utoken_per_kwh", 0, cap)
    keys = p.get("prosumers")
    if not isinstance(keys, list) or not 2 <= len(keys) <= MAX_PROSUMERS:
        raise PayloadError(f"prosumers must list 2..{MAX_PROSUMERS} keys")
    if len(keys) * len(keys) * h > MAX_CELLS:
        raise PayloadError(f"prosumers² × horizon must be ≤ {MAX_CELLS}")
    for i, k in enumerate(keys):
        req_key({f"prosumers[{i}]": k}, f"prosumers[{i}]")
    if len(set(keys)) != len(keys):
        raise PayloadError("a key is listed for two prosumers")
    bounds = p.get("p_max")
    if not isinstance(bounds, list) or len(bounds) != len(keys):
        raise PayloadError("p_max must list one power bound per prosumer")
    for i in range(len(bounds)):
        req_int({f"p_max[{i}]": bounds[i]}, f"p_max[{i}]", 1, MAX_ABS)


def _x_open(ctx: Context, p: dict[str, Any]) -> None:
    rid = p["round"]
    if ctx.state.get(vpp_key(rid, "config")) is not None:
        raise ContractError(codes.ALREADY_EXISTS, f"VPP round {rid} already exists")
    n, h = len(p["prosumers"]), p["horizon"]
    zeros = [[[0] * h for _ in range(n)] for _ in range(n)]
    ctx.state.set(vpp_key(rid, "config"), p)
    ctx.state.set(vpp_key(rid, "aux"), zeros)
    ctx.state.set(vpp_key(rid, "lam"), zeros)
    ctx.state.set(
        vpp_key(rid, "state"),
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
    req_int(p, "k", 1, MAX_ITER)
    req_int(p, "u", 0, MAX_PROSUMERS - 1)
    if not isinstance(p["p"], list):
        raise PayloadError("p must be a list of rows, one per other prosumer")


def _config(ctx: Context, rid: str) -> dict[str, Any]:
    cfg = ctx.state.get(vpp_key(rid, "config"))
    if cfg is None:
        raise ContractError(codes.NOT_FOUND, f"no VPP round {rid}")
    config: dict[str, Any] = cfg
    return config


def _require_prosumer(ctx: Context, cfg: dict[str, Any], u: int, what: str) -> None:
    if u >= len(cfg["prosumers"]) or ctx.sender != cfg["prosumers"][u]:
        raise ContractError(
            codes.UNAUTHORIZED, f"{what} of prosumer {u} signed by {ctx.sender[:16]}…, not its key"
        )


def _check_rows(rows: Any, n: int, h: int, bound: int, u: int) -> None:
    ok = (
        isinstance(rows, list)
        and len(rows) == n - 1
        and all(
            isinstance(r, list)
            and len(r) == h
            and all(isinstance(a, int) and not isinstance(a, bool) for a in r)
            for r in rows
        )
    )
    if not ok:
        raise ContractError(codes.INVALID_PAYLOAD, f"p must be {n - 1} rows of {h} integers")
    for v, r in enumerate(rows):
        for t, a in enumerate(r):
            if abs(a) > bound:
                raise ContractError(
                    codes.INVALID_PAYLOAD,
                    f"prosumer {u}: trade {a} with row {v} at hour {t} is beyond its power bound "
                    f"±{bound}",
                )
    for t in range(h):
        net = sum(r[t] for r in rows)
        if abs(net) > bound:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"prosumer {u}: net trade {net} at hour {t} is beyond its power bound ±{bound}",
            )


def _x_submit(ctx: Context, p: dict[str, Any]) -> None:
    rid, u, k = p["round"], p["u"], p["k"]
    cfg = _config(ctx, rid)
    st = ctx.state.get(vpp_key(rid, "state"))
    n, h = len(cfg["prosumers"]), cfg["horizon"]
    if st["status"] != "collecting":
        raise ContractError(codes.INVALID_PAYLOAD, f"VPP round {rid} is {st['status']}")
    _require_prosumer(ctx, cfg, u, "trades")
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
    _check_rows(rows, n, h, cfg["p_max"][u], u)
    ctx.state.set(vpp_key(rid, f"p/{u}"), rows)
    st["submitted"] = sorted([*st["submitted"], u])
    if len(st["submitted"]) == n:
        _dual_step(ctx, rid, cfg, st, k)
    ctx.state.set(vpp_key(rid, "state"), st)


def _dual_step(ctx: Context, rid: str, cfg: dict[str, Any], st: dict[str, Any], k: int) -> None:
    """Func A: the auxiliary trades, duals and residual; at convergence, the bills."""
    n, h = len(cfg["prosumers"]), cfg["horizon"]
    own = [ctx.state.get(vpp_key(rid, f"p/{v}")) for v in range(n)]
    trades = np.zeros((n, n, h), dtype=object)
    for v in range(n):
        trades[v, [w for w in range(n) if w != v]] = np.array(own[v], dtype=object)
    aux = np.array(ctx.state.get(vpp_key(rid, "aux")), dtype=object)
    lam = np.array(ctx.state.get(vpp_key(rid, "lam")), dtype=object)
    aux, lam, residual = dual_step_fixed(trades, aux, lam, cfg["rho"])
    aux_rows, lam_rows = aux.tolist(), lam.tolist()
    ctx.state.set(vpp_key(rid, "aux"), aux_rows)
    ctx.state.set(vpp_key(rid, "lam"), lam_rows)
    st["history"].append([k, residual])
    if residual <= cfg["eps"]:
        bills = pair_bills(
            aux_rows, lam_rows, own, cfg["price_utoken_per_kwh"], cfg["max_price_utoken_per_kwh"]
        )
        ctx.state.set(vpp_key(rid, "bills"), bills)
        st.update(
            status="converged", submitted=[], accept_deadline_ms=ctx.time_ms + cfg["timeout_ms"]
        )
    elif k >= cfg["max_iter"]:
        st.update(status="max_iter", submitted=[])
    else:
        st.update(k=k + 1, submitted=[], deadline_ms=ctx.time_ms + cfg["timeout_ms"])
    ctx.emit("vpp.dual_step", round=rid, k=k, residual=residual)


def _v_timeout(p: dict[str, Any]) -> None:
    require_fields(p, ["round"])
    _round(p)


def _x_timeout(ctx: Context, p: dict[str, Any]) -> None:
    rid = p["round"]
    cfg = _config(ctx, rid)
    st = ctx.state.get(vpp_key(rid, "state"))
    if st["status"] != "collecting" or ctx.time_ms <= st["deadline_ms"]:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"VPP round {rid} is {st['status']} until {st['deadline_ms']}"
        )
    missing = [u for u in range(len(cfg["prosumers"])) if u not in st["submitted"]]
    st.update(status="timed_out", missing=missing)
    ctx.state.set(vpp_key(rid, "state"), st)
    ctx.emit("vpp.timed_out", round=rid, k=st["k"], missing=",".join(map(str, missing)))


def _v_accept(p: dict[str, Any]) -> None:
    require_fields(p, ["max_pay_utoken", "round", "u"])
    _round(p)
    req_int(p, "u", 0, MAX_PROSUMERS - 1)
    req_int(p, "max_pay_utoken", 0, tokens.MAX_AMOUNT)


def _x_accept(ctx: Context, p: dict[str, Any]) -> None:
    rid, u, amount = p["round"], p["u"], p["max_pay_utoken"]
    cfg = _config(ctx, rid)
    _require_prosumer(ctx, cfg, u, "acceptance")
    st = ctx.state.get(vpp_key(rid, "state"))
    if st["status"] != "converged":
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"VPP round {rid} is {st['status']}: only a converged round's bills can be accepted",
        )
    if ctx.time_ms > st["accept_deadline_ms"]:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"acceptance of round {rid} closed at {st['accept_deadline_ms']}"
        )
    if ctx.state.get(vpp_key(rid, f"accept/{u}")) is not None:
        raise ContractError(codes.ALREADY_EXISTS, f"prosumer {u} already accepted round {rid}")
    owed = sum(ctx.state.get(vpp_key(rid, "bills"))[u])
    if owed > amount:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"prosumer {u} owes {owed} utoken in round {rid}, more than max_pay_utoken {amount}",
        )
    if owed:
        tokens.debit(ctx, "utoken", ctx.sender, owed)
        tokens.credit(ctx, "utoken", ESCROW, owed)
    ctx.state.set(vpp_key(rid, f"accept/{u}"), {"escrow_utoken": owed, "max_pay_utoken": amount})
    ctx.emit("vpp.accepted", round=rid, u=u, escrow=owed)


def _v_settle(p: dict[str, Any]) -> None:
    require_fields(p, ["round"])
    _round(p)


def _x_settle(ctx: Context, p: dict[str, Any]) -> None:
    rid = p["round"]
    cfg = _config(ctx, rid)
    st = ctx.state.get(vpp_key(rid, "state"))
    if st["status"] != "converged":
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"VPP round {rid} is {st['status']}: only a converged round is settled",
        )
    keys = cfg["prosumers"]
    n = len(keys)
    accepts = [ctx.state.get(vpp_key(rid, f"accept/{u}")) for u in range(n)]
    accepted = [a is not None for a in accepts]
    if not all(accepted) and ctx.time_ms <= st["accept_deadline_ms"]:
        waiting = [u for u in range(n) if not accepted[u]]
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"round {rid}: prosumers {waiting} have not accepted; settle after "
            f"{st['accept_deadline_ms']}",
        )
    escrow = [a["escrow_utoken"] if a is not None else 0 for a in accepts]
    paid, refund = settle_bills(ctx.state.get(vpp_key(rid, "bills")), escrow, accepted)
    tokens.debit(ctx, "utoken", ESCROW, sum(escrow))
    for u in range(n):
        received = sum(paid[v][u] for v in range(n))
        if received + refund[u]:
            tokens.credit(ctx, "utoken", keys[u], received + refund[u])
    total = sum(map(sum, paid))
    ctx.state.set(
        vpp_key(rid, "settlement"),
        {"accepted": accepted, "paid": paid, "paid_utoken": total, "refund": refund},
    )
    st["status"] = "settled"
    ctx.state.set(vpp_key(rid, "state"), st)
    ctx.emit("vpp.settled", round=rid, paid=total)


CONTRACT = Contract(
    "vpp",
    (
        TxType("vpp.open", frozenset({"dso"}), _v_open, _x_open, max_payload_bytes=16 * 1024),
        TxType(
            "vpp.submit", frozenset({"prosumer"}), _v_submit, _x_submit,
            max_payload_bytes=64 * 1024,
        ),
        TxType("vpp.timeout", ANY_MEMBER, _v_timeout, _x_timeout),
        TxType("vpp.accept", frozenset({"prosumer"}), _v_accept, _x_accept),
        TxType("vpp.settle", ANY_MEMBER, _v_settle, _x_settle),
    ),
)  # fmt: skip
