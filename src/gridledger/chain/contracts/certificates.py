"""Renewable energy certificates (seed 004 §2.2): issued by the DSO, transferred, retired.

A certificate's id is the id of the transaction that issued it. Only its owner may transfer or
retire it; a retired certificate can do neither again (no double counting of green energy).
One record may carry many MWh (settlement issues one record per green reading), so a transfer
or retirement may name ``energy_wh``, a part of the record: that part becomes a new record whose
id is the id of that transaction (with ``parent``, the record it came from), and the rest stays
where it was.  Either way a transaction writes at most two records.
State: ``rec/<id>`` -> {"bus", "end_ms", "energy_wh", "owner", "start_ms", "status"[, "parent"]}.
"""

from __future__ import annotations

from typing import Any

from gridledger.chain import codes
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    PayloadError,
    TxType,
    req_hash,
    req_int,
    req_key,
    require_fields,
)
from gridledger.chain.contracts.membership import member_key

REC_PREFIX = "rec/"


def rec_key(rec_id: str) -> str:
    """A renewable-energy certificate record (owner, energy, status)."""
    return REC_PREFIX + rec_id


def _v_issue(p: dict[str, Any]) -> None:
    require_fields(p, ["end_ms", "energy_wh", "owner", "start_ms"], ["bus", "reading"])
    req_key(p, "owner")
    req_int(p, "energy_wh", 1, 10**12)
    req_int(p, "start_ms", 0)
    req_int(p, "end_ms", 0)
    if p["end_ms"] <= p["start_ms"]:
        raise PayloadError("end_ms must be after start_ms")
    if "bus" in p:
        req_int(p, "bus", 0, 100_000)
    if "reading" in p:
        req_hash(p, "reading")


def _x_issue(ctx: Context, p: dict[str, Any]) -> None:
    if ctx.state.get_raw(member_key(p["owner"]).encode()) is None:
        raise ContractError(codes.NOT_FOUND, f"owner {p['owner'][:16]}… is not a member")
    ctx.state.set(
        rec_key(ctx.txid),
        {
            "bus": p.get("bus"),
            "end_ms": p["end_ms"],
            "energy_wh": p["energy_wh"],
            "owner": p["owner"],
            "start_ms": p["start_ms"],
            "status": "active",
        },
    )
    ctx.emit("rec.issued", id=ctx.txid, owner=p["owner"], energy_wh=p["energy_wh"])


def _owned(ctx: Context, rec_id: str) -> dict[str, Any]:
    rec: dict[str, Any] | None = ctx.state.get(rec_key(rec_id))
    if rec is None:
        raise ContractError(codes.NOT_FOUND, f"no certificate {rec_id[:16]}…")
    if rec["owner"] != ctx.sender:
        raise ContractError(codes.UNAUTHORIZED, "only the certificate's owner may do this")
    if rec["status"] != "active":
        raise ContractError(codes.INVALID_PAYLOAD, "the certificate is already retired")
    return rec


def _part(ctx: Context, p: dict[str, Any], rec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The record the transaction acts on: the whole of ``rec`` or, when ``energy_wh`` names a
    smaller part, that part split off as a new record ``rec/<txid>`` (the rest stays)."""
    part_wh = p.get("energy_wh", rec["energy_wh"])
    if part_wh > rec["energy_wh"]:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"energy_wh {part_wh} is more than the certificate's {rec['energy_wh']} Wh",
        )
    if part_wh == rec["energy_wh"]:
        return p["id"], rec
    ctx.state.set(rec_key(p["id"]), {**rec, "energy_wh": rec["energy_wh"] - part_wh})
    return ctx.txid, {**rec, "energy_wh": part_wh, "parent": p["id"]}


def _v_transfer(p: dict[str, Any]) -> None:
    require_fields(p, ["id", "to"], ["energy_wh"])
    req_hash(p, "id")
    req_key(p, "to")
    if "energy_wh" in p:
        req_int(p, "energy_wh", 1, 10**12)


def _x_transfer(ctx: Context, p: dict[str, Any]) -> None:
    rec = _owned(ctx, p["id"])
    if ctx.state.get_raw(member_key(p["to"]).encode()) is None:
        raise ContractError(codes.NOT_FOUND, f"recipient {p['to'][:16]}… is not a member")
    rid, part = _part(ctx, p, rec)
    part["owner"] = p["to"]
    ctx.state.set(rec_key(rid), part)
    ctx.emit("rec.transferred", id=rid, to=p["to"], energy_wh=part["energy_wh"])


def _v_retire(p: dict[str, Any]) -> None:
    require_fields(p, ["id"], ["energy_wh"])
    req_hash(p, "id")
    if "energy_wh" in p:
        req_int(p, "energy_wh", 1, 10**12)


def _x_retire(ctx: Context, p: dict[str, Any]) -> None:
    rec = _owned(ctx, p["id"])
    rid, part = _part(ctx, p, rec)
    part["status"] = "retired"
    ctx.state.set(rec_key(rid), part)
    ctx.emit("rec.retired", id=rid, owner=ctx.sender, energy_wh=part["energy_wh"])


OWNERS = frozenset({"prosumer", "vendor", "dso", "ict"})

CONTRACT = Contract(
    "certificates",
    (
        TxType("rec.issue", frozenset({"dso"}), _v_issue, _x_issue),
        TxType("rec.transfer", OWNERS, _v_transfer, _x_transfer),
        TxType("rec.retire", OWNERS, _v_retire, _x_retire),
    ),
)


def retire_part(ctx: Context, rec_id: str, energy_wh: int, beneficiary: str) -> str:
    """Retire ``energy_wh`` of a certificate the sender owns in ``beneficiary``'s name (another
    contract's act, e.g. an EV session's green energy); returns the retired record's id."""
    rec = _owned(ctx, rec_id)
    rid, part = _part(ctx, {"id": rec_id, "energy_wh": energy_wh}, rec)
    part.update(status="retired", owner=beneficiary)
    ctx.state.set(rec_key(rid), part)
    ctx.emit("rec.retired", id=rid, owner=beneficiary, energy_wh=energy_wh)
    return rid
