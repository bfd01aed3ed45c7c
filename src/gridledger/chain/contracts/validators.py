"""Validator set changes by vote of the current validators (> 2/3 of voting power).

``validator.propose`` opens (or votes for) a change ``{pub_key, power}`` (power 0 removes); each
current validator votes with the same transaction; when the voters hold more than 2/3 of the
power, the change is applied and returned to consensus as a validator update (it signs from two
heights later, ``LedgerApp.validators_for``). A new validator must already be a member with
role ``validator``.

Jailing: :func:`jail` sets a validator's power to 0 without a vote when the chain holds proof
that it misbehaved (``evidence.submit`` calls it for duplicate votes or proposals); like any
change it signs no more from two heights after the block. Re-admitting it takes a committee
vote (``validator.propose`` with power > 0).

State: ``chain/validators`` -> [{"power", "pub_key"}], ``valvote/<pub>/<power>`` -> [voters],
``jail/<pub>`` -> {"at_height", "evidence", "from_height", "power", "reason"}.
"""

from __future__ import annotations

from typing import Any

from gridledger.chain import codes
from gridledger.chain.abci import Validator
from gridledger.chain.consensus.tendermint.ledger import UPDATE_DELAY_HEIGHTS
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    TxType,
    req_int,
    req_key,
    require_fields,
)
from gridledger.chain.contracts.membership import member_key

VALIDATORS_KEY = "chain/validators"


def current_powers(ctx: Context) -> dict[str, int]:
    return {v["pub_key"]: v["power"] for v in ctx.state.get(VALIDATORS_KEY)}


def _set_powers(ctx: Context, vals: dict[str, int]) -> None:
    ctx.state.set(VALIDATORS_KEY, [{"power": w, "pub_key": k} for k, w in sorted(vals.items())])


def jail(ctx: Context, pub_hex: str, reason: str, evidence_hash: str) -> bool:
    """Set ``pub_hex``'s power to 0 for proven misbehaviour; False if it holds no power now.

    The last validator is never jailed (the chain could not go on): that case is recorded with
    ``power`` 0 and no change, so the evidence still stands for governance.
    """
    vals = current_powers(ctx)
    power = vals.get(pub_hex, 0)
    if power == 0:
        return False
    removed = len(vals) > 1
    if removed:
        del vals[pub_hex]
        _set_powers(ctx, vals)
        ctx.validator_updates.append(Validator(bytes.fromhex(pub_hex), 0))
    ctx.state.set(
        f"jail/{pub_hex}",
        {
            "at_height": ctx.height,
            "evidence": evidence_hash,
            "from_height": ctx.height + UPDATE_DELAY_HEIGHTS,
            "power": power if removed else 0,
            "reason": reason,
        },
    )
    if removed:
        ctx.emit("validator.jailed", pub_key=pub_hex, reason=reason, evidence=evidence_hash)
        ctx.emit("validator.updated", pub_key=pub_hex, power=0)
    return removed


def _v_propose(p: dict[str, Any]) -> None:
    require_fields(p, ["power", "pub_key"])
    req_key(p, "pub_key")
    req_int(p, "power", 0, 2**40)


def _x_propose(ctx: Context, p: dict[str, Any]) -> None:
    vals = current_powers(ctx)
    if ctx.sender not in vals:
        raise ContractError(codes.UNAUTHORIZED, "only current validators vote on the set")
    if p["power"] == 0 and p["pub_key"] not in vals:
        raise ContractError(codes.NOT_FOUND, "the key to remove is not a validator")
    if p["power"] > 0:
        m = ctx.state.get(member_key(p["pub_key"]))
        if m is None or m["role"] != "validator" or m["status"] != "active":
            raise ContractError(
                codes.NOT_FOUND, "a new validator must be an active member with role validator"
            )
    key = f"valvote/{p['pub_key']}/{p['power']}"
    voters = set(ctx.state.get(key) or [])
    voters.add(ctx.sender)
    total = sum(vals.values())
    voted = sum(vals[v] for v in voters if v in vals)
    if 3 * voted > 2 * total:
        if p["power"] == 0:
            vals.pop(p["pub_key"], None)
            if not vals:
                raise ContractError(codes.INVALID_PAYLOAD, "cannot remove the last validator")
        else:
            vals[p["pub_key"]] = p["power"]
        _set_powers(ctx, vals)
        ctx.state.delete(key)
        ctx.validator_updates.append(Validator(bytes.fromhex(p["pub_key"]), p["power"]))
        ctx.emit("validator.updated", pub_key=p["pub_key"], power=p["power"])
    else:
        ctx.state.set(key, sorted(voters))
        ctx.emit(
            "validator.vote",
            pub_key=p["pub_key"],
            power=p["power"],
            voted_power=voted,
            total_power=total,
        )


CONTRACT = Contract(
    "validators",
    (TxType("validator.propose", frozenset({"validator"}), _v_propose, _x_propose),),
)
