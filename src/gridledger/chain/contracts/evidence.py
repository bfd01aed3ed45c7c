"""Evidence of validator equivocation, committed on chain (``evidence.submit``).

A validator node that sees two conflicting signed votes of one validator for one (height, round,
step), or two different signed proposals of one proposer for one (height, round), gossips them
and submits them in this transaction. The contract re-verifies both
signatures against the chain id (deterministic: Ed25519 verification has one answer), checks the
accused holds (or held, if already jailed) validator power and the evidence is recent, records
it once and jails the validator through the committee contract (``validators.jail``: power 0
from two heights on, with the reason and the evidence hash recorded under ``jail/<pubkey>``).
Re-admitting it takes a committee vote; the DSO may also suspend the member (``member.suspend``).

State: ``evidence/<sha256 hex>`` -> {"at_height", "height", "reporter", "round", "step",
"validator"}; ``misbehavior/<pubkey hex>`` -> number of distinct equivocations recorded.
Load it by naming ``gridledger.chain.contracts.evidence`` in the genesis ``contracts`` list.
"""

from __future__ import annotations

from typing import Any

from gridledger.chain import codes
from gridledger.chain.consensus.tendermint.evidence import (
    MAX_EVIDENCE_AGE_HEIGHTS,
    Evidence,
    decode_evidence,
)
from gridledger.chain.consensus.tendermint.types import ConsensusError
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    PayloadError,
    TxType,
    require_fields,
)
from gridledger.chain.contracts.membership import member_key
from gridledger.chain.contracts.validators import current_powers, jail

MAX_EVIDENCE_HEX = 2048


def _decode(p: dict[str, Any]) -> Evidence:
    raw = p.get("evidence")
    if not isinstance(raw, str) or len(raw) > MAX_EVIDENCE_HEX:
        raise PayloadError(f"evidence must be a hex string of at most {MAX_EVIDENCE_HEX} chars")
    try:
        return decode_evidence(bytes.fromhex(raw))
    except (ValueError, ConsensusError) as exc:
        raise PayloadError(f"evidence does not decode: {exc}") from exc


def _v_submit(p: dict[str, Any]) -> None:
    require_fields(p, ["evidence"])
    ev = _decode(p)
    try:
        ev.check_conflict()
    except ConsensusError as exc:
        raise PayloadError(str(exc)) from exc


def _x_submit(ctx: Context, p: dict[str, Any]) -> None:
    ev = _decode(p)
    if ev.height > ctx.height or ctx.height - ev.height > MAX_EVIDENCE_AGE_HEIGHTS:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"evidence height {ev.height} is in the future or too old"
        )
    accused = ev.validator.hex()
    member = ctx.state.get(member_key(accused))
    if member is None or member["role"] != "validator":
        raise ContractError(codes.NOT_FOUND, "the accused key is not a validator member")
    if accused not in current_powers(ctx) and ctx.state.get(f"jail/{accused}") is None:
        raise ContractError(codes.NOT_FOUND, "the accused key holds no validator power")
    if not ev.signatures_valid(ctx.chain_id):
        raise ContractError(codes.BAD_SIGNATURE, "an evidence message is not validly signed")
    key = f"evidence/{ev.hash().hex()}"
    if ctx.state.get(key) is not None:
        raise ContractError(codes.ALREADY_EXISTS, "this evidence is already recorded")
    ctx.state.set(
        key,
        {
            "at_height": ctx.height,
            "height": ev.height,
            "reporter": ctx.sender,
            "round": ev.round,
            "step": ev.step,
            "validator": accused,
        },
    )
    count_key = f"misbehavior/{accused}"
    ctx.state.set_int(count_key, ctx.state.get_int(count_key) + 1)
    ctx.emit(
        "validator.equivocation",
        validator=accused,
        height=ev.height,
        round=ev.round,
        kind=ev.kind,
        evidence=ev.hash().hex(),
    )
    jail(ctx, accused, f"duplicate {ev.kind} at height {ev.height}", ev.hash().hex())


CONTRACT = Contract(
    "evidence",
    (TxType("evidence.submit", frozenset({"validator"}), _v_submit, _x_submit),),
)
