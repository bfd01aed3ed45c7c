"""S2, the billing contract of seed 001 (Algorithm 1): meter readings against the ADMM schedule.

1. ``billing.open`` (DSO): bind a finished ADMM round's schedule (``admm/<round>/schedule``) to a
   start time (its hour 0, block-time milliseconds), each node's meter key and token account, a
   deviation tolerance (Wh) and a penalty rate (utoken/kWh).
2. ``billing.reading`` (a meter, signed by the key bound to that node): the node's metered net
   energy for one hour of the schedule.  The contract checks the hour lies in the schedule's
   horizon, bills it with :func:`gridledger.market.billing.bill_hour` (metered energy at the
   node's DLMP, minus the deviation penalty) and moves the tokens between the node's account
   and the DSO's (the pool that paid the substation).  Each node-hour is billed once.

State (prefix ``bill/``): ``bill/<round>/config``, ``bill/<round>/<node>/<hour>`` (the bill).
"""

from __future__ import annotations

from typing import Any

from gridledger.chain import codes
from gridledger.chain.contracts import tokens
from gridledger.chain.contracts.aggregator import ROUND_RE, round_key
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
from gridledger.market.billing import BillingError, bill_hour, reading_hour

MAX_WH = 10**12


def config_key(round_id: str) -> str:
    """The billing terms of an ADMM round (meters, accounts, tolerance, penalty, pool)."""
    return f"bill/{round_id}/config"


def bill_prefix(round_id: str) -> str:
    return f"bill/{round_id}/"


def bill_key(round_id: str, node: int, hour: int) -> str:
    """One node's bill for one hour of the round's schedule."""
    return f"{bill_prefix(round_id)}{node}/{hour}"


def _round(p: dict[str, Any]) -> str:
    rid = req_str(p, "round", 32)
    if not ROUND_RE.match(rid):
        raise PayloadError("round must match [a-z0-9][a-z0-9_-]{0,31}")
    return rid


def _keys(p: dict[str, Any], name: str) -> list[str]:
    v = p.get(name)
    if not isinstance(v, list) or not v:
        raise PayloadError(f"{name} must be a non-empty list of keys")
    for i, k in enumerate(v):
        req_key({f"{name}[{i}]": k}, f"{name}[{i}]")
    return v


def _v_open(p: dict[str, Any]) -> None:
    require_fields(
        p, ["accounts", "meters", "penalty_utoken_per_kwh", "round", "start_ms", "tolerance_wh"]
    )
    _round(p)
    req_int(p, "start_ms", 0)
    req_int(p, "tolerance_wh", 0, MAX_WH)
    req_int(p, "penalty_utoken_per_kwh", 0, 10**12)
    if len(_keys(p, "meters")) != len(_keys(p, "accounts")):
        raise PayloadError("meters and accounts must list one key per node each")


def _x_open(ctx: Context, p: dict[str, Any]) -> None:
    rid = p["round"]
    schedule = ctx.state.get(round_key(rid, "schedule"))
    if schedule is None:
        raise ContractError(codes.NOT_FOUND, f"ADMM round {rid} has no stored schedule")
    if len(p["meters"]) != len(schedule["p_w"]):
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"{len(p['meters'])} meters for a schedule of {len(schedule['p_w'])} nodes",
        )
    if ctx.state.get(config_key(rid)) is not None:
        raise ContractError(codes.ALREADY_EXISTS, f"billing of round {rid} is already open")
    ctx.state.set(config_key(rid), {**p, "pool": ctx.sender})
    ctx.emit("billing.open", round=rid, start_ms=p["start_ms"])


def _v_reading(p: dict[str, Any]) -> None:
    require_fields(p, ["duration_s", "net_wh", "node", "round", "start_ms"])
    _round(p)
    req_int(p, "node", 0, 100_000)
    req_int(p, "start_ms", 0)
    req_int(p, "duration_s", 1, 86_400)
    req_int(p, "net_wh", -MAX_WH, MAX_WH)


def _x_reading(ctx: Context, p: dict[str, Any]) -> None:
    rid, node = p["round"], p["node"]
    cfg = ctx.state.get(config_key(rid))
    if cfg is None:
        raise ContractError(codes.NOT_FOUND, f"billing of round {rid} is not open")
    if node >= len(cfg["meters"]):
        raise ContractError(codes.INVALID_PAYLOAD, f"node {node} not in round {rid}")
    if ctx.sender != cfg["meters"][node]:
        raise ContractError(
            codes.UNAUTHORIZED,
            f"reading for node {node} signed by {ctx.sender[:16]}…, which is not its meter",
        )
    schedule = ctx.state.get(round_key(rid, "schedule"))
    horizon = len(schedule["p_w"][node])
    try:
        hour = reading_hour(p["start_ms"], p["duration_s"], cfg["start_ms"], horizon)
    except BillingError as exc:
        raise ContractError(codes.INVALID_PAYLOAD, str(exc)) from exc
    key = bill_key(rid, node, hour)
    if ctx.state.get(key) is not None:
        raise ContractError(codes.ALREADY_EXISTS, f"node {node} hour {hour} is already billed")
    bill = bill_hour(
        hour,
        schedule["p_w"][node][hour],  # W held for one hour = Wh
        p["net_wh"],
        schedule["dlmp_utoken_per_kwh"][node][hour],
        cfg["tolerance_wh"],
        cfg["penalty_utoken_per_kwh"],
    )
    account, pool = cfg["accounts"][node], cfg["pool"]
    if bill.net_utoken > 0:
        tokens.debit(ctx, "utoken", pool, bill.net_utoken)
        tokens.credit(ctx, "utoken", account, bill.net_utoken)
    elif bill.net_utoken < 0:
        tokens.debit(ctx, "utoken", account, -bill.net_utoken)
        tokens.credit(ctx, "utoken", pool, -bill.net_utoken)
    ctx.state.set(
        key,
        {
            "deviation_wh": bill.deviation_wh,
            "energy_utoken": bill.energy_utoken,
            "metered_wh": bill.metered_wh,
            "net_utoken": bill.net_utoken,
            "penalty_utoken": bill.penalty_utoken,
            "scheduled_wh": bill.scheduled_wh,
        },
    )
    ctx.emit(
        "billing.bill", round=rid, node=node, hour=hour, net_utoken=bill.net_utoken,
        penalty_utoken=bill.penalty_utoken,
    )  # fmt: skip


CONTRACT = Contract(
    "billing",
    (
        TxType("billing.open", frozenset({"dso"}), _v_open, _x_open, max_payload_bytes=64 * 1024),
        TxType("billing.reading", frozenset({"meter"}), _v_reading, _x_reading, tree="active"),
    ),
)
