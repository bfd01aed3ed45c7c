"""Utility tokens (seed 004 §3.4): minted, transferred and burned; balances never negative.

Denominations: ``utoken`` (money, micro-units) and ``ewh`` (energy credit, Wh: minted on metered
injection, burned on metered consumption). Other contracts move tokens with :func:`credit` and
:func:`debit`, which enforce the same rules. Two transfers that together overdraw an account in
one block are executed in block order: the first succeeds, the second fails with
INSUFFICIENT_FUNDS and changes nothing.

State: ``bal/<denom>/<pubkey hex>`` -> int, ``supply/<denom>`` -> int.
"""

from __future__ import annotations

from typing import Any

from gridledger.chain import codes

# a module import: membership imports metering, which imports this module
from gridledger.chain.contracts import membership
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

DENOMS = ("utoken", "ewh")
MAX_AMOUNT = 2**62


def balance_prefix(denom: str) -> str:
    """Prefix of every balance of ``denom`` (a scan over it sums to the supply)."""
    return f"bal/{denom}/"


def balance_key(denom: str, pub_hex: str) -> str:
    return balance_prefix(denom) + pub_hex


def supply_key(denom: str) -> str:
    return f"supply/{denom}"


def balance(ctx: Context, denom: str, pub_hex: str) -> int:
    return ctx.state.get_int(balance_key(denom, pub_hex))


def credit(ctx: Context, denom: str, pub_hex: str, amount: int) -> None:
    if amount < 0:
        raise ContractError(codes.INVALID_PAYLOAD, "cannot credit a negative amount")
    k = balance_key(denom, pub_hex)
    ctx.state.set_int(k, ctx.state.get_int(k) + amount)


def debit(ctx: Context, denom: str, pub_hex: str, amount: int) -> None:
    if amount < 0:
        raise ContractError(codes.INVALID_PAYLOAD, "cannot debit a negative amount")
    k = balance_key(denom, pub_hex)
    have = ctx.state.get_int(k)
    if have < amount:
        raise ContractError(
            codes.INSUFFICIENT_FUNDS, f"balance {have} {denom} is less than {amount} {denom}"
        )
    ctx.state.set_int(k, have - amount)


def mint(ctx: Context, denom: str, pub_hex: str, amount: int) -> None:
    credit(ctx, denom, pub_hex, amount)
    ctx.state.set_int(supply_key(denom), ctx.state.get_int(supply_key(denom)) + amount)


def burn(ctx: Context, denom: str, pub_hex: str, amount: int) -> None:
    debit(ctx, denom, pub_hex, amount)
    ctx.state.set_int(supply_key(denom), ctx.state.get_int(supply_key(denom)) - amount)


def _v_amount(p: dict[str, Any]) -> None:
    req_str(p, "denom", choices=DENOMS)
    req_int(p, "amount", 1, MAX_AMOUNT)


def _v_to(p: dict[str, Any]) -> None:
    require_fields(p, ["amount", "denom", "to"])
    _v_amount(p)
    req_key(p, "to")


def _v_burn(p: dict[str, Any]) -> None:
    require_fields(p, ["amount", "denom"])
    _v_amount(p)


def _require_member(ctx: Context, pub_hex: str) -> None:
    if ctx.state.get_raw(membership.member_key(pub_hex).encode()) is None:
        raise ContractError(codes.NOT_FOUND, f"recipient {pub_hex[:16]}… is not a member")


def _x_mint(ctx: Context, p: dict[str, Any]) -> None:
    _require_member(ctx, p["to"])
    mint(ctx, p["denom"], p["to"], p["amount"])
    ctx.emit("token.minted", to=p["to"], denom=p["denom"], amount=p["amount"])


def _x_transfer(ctx: Context, p: dict[str, Any]) -> None:
    if p["to"] == ctx.sender:
        raise PayloadError("a transfer to oneself is not allowed")
    _require_member(ctx, p["to"])
    debit(ctx, p["denom"], ctx.sender, p["amount"])
    credit(ctx, p["denom"], p["to"], p["amount"])
    ctx.emit(
        "token.transferred", sender=ctx.sender, to=p["to"], denom=p["denom"], amount=p["amount"]
    )


def _x_burn(ctx: Context, p: dict[str, Any]) -> None:
    burn(ctx, p["denom"], ctx.sender, p["amount"])
    ctx.emit("token.burned", owner=ctx.sender, denom=p["denom"], amount=p["amount"])


HOLDERS = frozenset({"prosumer", "vendor", "dso", "ict"})

CONTRACT = Contract(
    "tokens",
    (
        # DSO-only (issue 10): new money is the DSO's act alone, not the ICT operator's.
        TxType("token.mint", frozenset({"dso"}), _v_to, _x_mint),
        TxType("token.transfer", HOLDERS, _v_to, _x_transfer),
        TxType("token.burn", HOLDERS, _v_burn, _x_burn),
    ),
)
