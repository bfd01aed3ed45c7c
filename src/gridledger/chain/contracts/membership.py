"""Membership and dynamic permissions (seed 000 §II.B white list; seed 004 §3.2).

The genesis names the DSO, the vendors and the validators. Vendors register prosumers (with the bus
they are connected to), the DSO also charge points (EV chargers, with their bus); meters are
bound to exactly one prosumer or charge point (a meter's "prosumer" field) and its bus.
Permissions are per transaction type: a member may send a type when its role allows it or it
was granted, unless that permission was revoked (which types can be granted, and by whom, is
the table in :mod:`gridledger.chain.contracts.roles`: never an operator's, a validator's or a
meter's type); a suspended member can send nothing until reinstated; a revoked member never
again. The DSO governs everyone; a vendor governs the prosumers it registered and their meters.

State: ``member/<pubkey hex>`` -> {"bus", "grants", "denied", "name", "prosumer", "role",
"since", "status", "vendor"}, and a meter's optional "rating_w" (W, bounds its readings).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from gridledger.chain import codes

# module imports: metering imports tokens, which imports this module (for member_key)
from gridledger.chain.contracts import metering
from gridledger.chain.contracts import roles as roles_table
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    Execute,
    PayloadError,
    TxType,
    req_int,
    req_key,
    req_str,
    require_fields,
)
from gridledger.chain.keys import ROLES

MAX_BUS = 100_000
# the roles a meter can be bound to: each sits at a bus (a charge point is an EV charger)
METERED_ROLES = ("prosumer", "charge_point")


MEMBER_PREFIX = "member/"


def member_key(pub_hex: str) -> str:
    """State key of a member's record (role, status, bus, vendor, meter)."""
    return MEMBER_PREFIX + pub_hex


class Member(TypedDict):
    """A member's record in state (``member/<pubkey hex>``), as every contract reads it."""

    bus: int | None
    denied: list[str]
    grants: list[str]
    name: str
    prosumer: str | None  # a meter's prosumer
    role: str
    since: int  # height
    status: str  # active | suspended | revoked
    vendor: str | None  # the vendor that registered a prosumer
    rating_w: NotRequired[int]  # a meter's rating: bounds its readings


def new_member(
    role: str,
    height: int,
    name: str = "",
    bus: int | None = None,
    vendor: str | None = None,
    prosumer: str | None = None,
) -> Member:
    return {
        "bus": bus,
        "denied": [],
        "grants": [],
        "name": name,
        "prosumer": prosumer,
        "role": role,
        "since": height,
        "status": "active",
        "vendor": vendor,
    }


def get_member(ctx: Context, pub_hex: str) -> Member:
    m: Member | None = ctx.state.get(member_key(pub_hex))
    if m is None:
        raise ContractError(codes.NOT_FOUND, f"{pub_hex[:16]}… is not a member")
    return m


def _governs(ctx: Context, target: Member) -> None:
    """The sender may change ``target``: the DSO always; a vendor for its own prosumers/meters."""
    role = ctx.sender_member["role"]
    if role == "dso":
        if target["role"] == "dso":
            raise ContractError(codes.UNAUTHORIZED, "the DSO's own membership cannot be changed")
        return
    owner = target.get("vendor")
    prosumer = target.get("prosumer")
    if target["role"] == "meter" and prosumer:
        owner = ctx.state.get(member_key(prosumer)).get("vendor")
    if role == "vendor" and owner == ctx.sender:
        return
    raise ContractError(codes.UNAUTHORIZED, "only the DSO or the member's own vendor may do this")


# --- member.register -----------------------------------------------------------------------------
def _v_register(p: dict[str, Any]) -> None:
    require_fields(p, ["pub_key", "role"], ["bus", "name"])
    req_key(p, "pub_key")
    req_str(p, "role", choices=[r for r in ROLES if r not in ("dso", "meter")])
    req_str(p, "name", 64) if "name" in p else None
    if "bus" in p:
        req_int(p, "bus", 0, MAX_BUS)
    if p["role"] in METERED_ROLES and "bus" not in p:
        raise PayloadError(f"a {p['role']} must be registered with its bus")


def _x_register(ctx: Context, p: dict[str, Any]) -> None:
    if ctx.sender_member["role"] == "vendor" and p["role"] != "prosumer":
        raise ContractError(codes.UNAUTHORIZED, "a vendor may register prosumers only")
    if ctx.state.get(member_key(p["pub_key"])) is not None:
        raise ContractError(codes.ALREADY_EXISTS, f"{p['pub_key'][:16]}… is already a member")
    vendor = ctx.sender if ctx.sender_member["role"] == "vendor" else None
    ctx.state.set(
        member_key(p["pub_key"]),
        new_member(p["role"], ctx.height, p.get("name", ""), p.get("bus"), vendor),
    )
    ctx.emit("member.registered", member=p["pub_key"], role=p["role"], bus=p.get("bus"))


# --- member.bind_meter ---------------------------------------------------------------------------
def _v_bind(p: dict[str, Any]) -> None:
    require_fields(p, ["meter", "prosumer"], ["rating_w"])
    if "rating_w" in p:
        req_int(p, "rating_w", 1, metering.MAX_METER_RATING_W)
    req_key(p, "meter")
    req_key(p, "prosumer")
    if p["meter"] == p["prosumer"]:
        raise PayloadError("a meter needs its own key, not the prosumer's")


def _x_bind(ctx: Context, p: dict[str, Any]) -> None:
    prosumer = get_member(ctx, p["prosumer"])
    if prosumer["role"] not in METERED_ROLES:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"meters are bound to {' or '.join(METERED_ROLES)} members only"
        )
    _governs(ctx, prosumer)
    if ctx.state.get(member_key(p["meter"])) is not None:
        raise ContractError(codes.ALREADY_EXISTS, f"{p['meter'][:16]}… is already a member")
    meter = new_member("meter", ctx.height, "", prosumer["bus"], None, p["prosumer"])
    if "rating_w" in p:
        meter["rating_w"] = p["rating_w"]  # readings are bounded by it (metering contract)
    ctx.state.set(member_key(p["meter"]), meter)
    ctx.emit("member.meter_bound", meter=p["meter"], prosumer=p["prosumer"], bus=prosumer["bus"])


# --- permissions and status ----------------------------------------------------------------------
def _v_perm(p: dict[str, Any]) -> None:
    require_fields(p, ["member", "permission"])
    req_key(p, "member")
    req_str(p, "permission", 64)


def _set_permissions(ctx: Context, pub: str, m: Member, grants: set[str], denied: set[str]) -> None:
    for name, perms in (("grants", grants), ("denied", denied)):
        if len(perms) > roles_table.MAX_PERMISSIONS:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"a member holds at most {roles_table.MAX_PERMISSIONS} {name}; "
                f"{pub[:16]}… would hold {len(perms)}",
            )
    m["grants"], m["denied"] = sorted(grants), sorted(denied)
    ctx.state.set(member_key(pub), m)


def _x_grant(ctx: Context, p: dict[str, Any]) -> None:
    m = get_member(ctx, p["member"])
    _governs(ctx, m)
    # the grant table (roles.GRANTABLE_BY): prosumer-level types only, never an operator's
    roles_table.check_grant(ctx.tx_types, ctx.sender_member, p["permission"])
    perm = p["permission"]
    _set_permissions(ctx, p["member"], m, set(m["grants"]) | {perm}, set(m["denied"]) - {perm})
    ctx.emit("member.granted", member=p["member"], permission=perm)


def _x_revoke_perm(ctx: Context, p: dict[str, Any]) -> None:
    m = get_member(ctx, p["member"])
    _governs(ctx, m)
    perm = p["permission"]
    if perm not in ctx.tx_types:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"permission {perm!r} is not a registered transaction type"
        )
    _set_permissions(ctx, p["member"], m, set(m["grants"]) - {perm}, set(m["denied"]) | {perm})
    ctx.emit("member.permission_revoked", member=p["member"], permission=perm)


def _v_member(p: dict[str, Any]) -> None:
    require_fields(p, ["member"])
    req_key(p, "member")


def _status_change(new_status: str, allowed_from: tuple[str, ...]) -> Execute:
    def run(ctx: Context, p: dict[str, Any]) -> None:
        m = get_member(ctx, p["member"])
        _governs(ctx, m)
        if m["status"] not in allowed_from:
            raise ContractError(
                codes.INVALID_PAYLOAD, f"member is {m['status']}; cannot become {new_status}"
            )
        m["status"] = new_status
        ctx.state.set(member_key(p["member"]), m)
        ctx.emit(f"member.{new_status}", member=p["member"])

    return run


GOVERNORS = frozenset({"dso", "vendor"})

CONTRACT = Contract(
    "membership",
    (
        TxType("member.register", GOVERNORS, _v_register, _x_register),
        TxType("member.bind_meter", GOVERNORS, _v_bind, _x_bind),
        TxType("member.grant", GOVERNORS, _v_perm, _x_grant),
        TxType("member.revoke_permission", GOVERNORS, _v_perm, _x_revoke_perm),
        TxType("member.suspend", GOVERNORS, _v_member, _status_change("suspended", ("active",))),
        TxType("member.reinstate", GOVERNORS, _v_member, _status_change("active", ("suspended",))),
        TxType(
            "member.revoke",
            GOVERNORS,
            _v_member,
            _status_change("revoked", ("active", "suspended")),
        ),
    ),
)
