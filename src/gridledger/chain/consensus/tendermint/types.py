"""Consensus messages (proposal, prevote, precommit) and their canonical signed bytes.

Wire and sign encodings are fixed-layout binary (``struct``), so a vote is ~140 bytes and its
encoding is unambiguous: the signed bytes carry a domain tag and the chain id, so a signature for
one chain, message kind or step can never be replayed as another.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from gridledger.chain import wire
from gridledger.chain.block import Commit

__all__ = [
    "Commit",  # the one commit class lives in chain/block.py; importable here for the engine
    "ConsensusError",
    "Proposal",
    "Step",
    "Vote",
    "VoteType",
    "proposal_sign_bytes",
    "verify_sig",
    "vote_sign_bytes",
]

BLOCK_ID_LEN = 32
PUB_KEY_LEN = 32
SIG_LEN = 64
MAX_ROUND = 2**31 - 1


class ConsensusError(ValueError):
    """A malformed or invalidly signed consensus message."""


class Step(IntEnum):
    """Steps of a round; the order matters (the double-sign guard compares them)."""

    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


class VoteType(IntEnum):
    PREVOTE = 2
    PRECOMMIT = 3


def _chain_prefix(tag: bytes, chain_id: str) -> bytes:
    try:
        return wire.chain_prefix(tag, chain_id)
    except wire.WireError as exc:
        raise ConsensusError(str(exc)) from exc


_VOTE_WIRE = wire.VOTE_WIRE


@dataclass(frozen=True, slots=True)
class Vote:
    """A prevote or precommit; ``block_id`` None is a vote for nil."""

    type: VoteType
    height: int
    round: int
    block_id: bytes | None
    validator: bytes  # Ed25519 public key
    signature: bytes = b""

    def sign_bytes(self, chain_id: str) -> bytes:
        return vote_sign_bytes(chain_id, self.type, self.height, self.round, self.block_id)

    def encode(self) -> bytes:
        return _VOTE_WIRE.pack(
            int(self.type),
            self.height,
            self.round,
            self.block_id is not None,
            self.block_id or bytes(BLOCK_ID_LEN),
            self.validator,
            self.signature,
        )

    @staticmethod
    def decode(data: bytes) -> Vote:
        if len(data) != _VOTE_WIRE.size:
            raise ConsensusError(f"vote must be {_VOTE_WIRE.size} bytes, got {len(data)}")
        vtype, height, rnd, has_block, block_id, validator, sig = _VOTE_WIRE.unpack(data)
        if vtype not in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            raise ConsensusError(f"unknown vote type {vtype}")
        if rnd < 0 or has_block not in (0, 1):
            raise ConsensusError("vote round must be >= 0 and has_block 0 or 1")
        if not has_block and block_id != bytes(BLOCK_ID_LEN):
            # one wire form per vote: a nil vote's block id field must be zero
            raise ConsensusError("nil vote carries a non-zero block id")
        return Vote(VoteType(vtype), height, rnd, block_id if has_block else None, validator, sig)

    def verify(self, chain_id: str) -> bool:
        return verify_sig(self.validator, self.sign_bytes(chain_id), self.signature)

    def same_slot(self, other: Vote) -> bool:
        return (self.type, self.height, self.round, self.validator) == (
            other.type,
            other.height,
            other.round,
            other.validator,
        )


def vote_sign_bytes(
    chain_id: str, vtype: VoteType, height: int, rnd: int, block_id: bytes | None
) -> bytes:
    try:
        return wire.vote_sign_bytes(chain_id, int(vtype), height, rnd, block_id)
    except wire.WireError as exc:
        raise ConsensusError(str(exc)) from exc


_PROP_HEAD = struct.Struct(">Qii32s")
_PROP_WIRE = struct.Struct(">Qii32s32s64sI")


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposer's block for (height, round); ``pol_round`` is its proof-of-lock round or -1."""

    height: int
    round: int
    pol_round: int
    block_id: bytes
    block: bytes
    proposer: bytes
    signature: bytes = b""

    def sign_bytes(self, chain_id: str) -> bytes:
        return proposal_sign_bytes(chain_id, self.height, self.round, self.pol_round, self.block_id)

    def encode(self) -> bytes:
        return (
            _PROP_WIRE.pack(
                self.height,
                self.round,
                self.pol_round,
                self.block_id,
                self.proposer,
                self.signature,
                len(self.block),
            )
            + self.block
        )

    @staticmethod
    def decode(data: bytes) -> Proposal:
        n = _PROP_WIRE.size
        if len(data) < n:
            raise ConsensusError(f"proposal shorter than its {n}-byte header")
        height, rnd, pol, block_id, proposer, sig, blen = _PROP_WIRE.unpack_from(data)
        if len(data) != n + blen:
            raise ConsensusError("proposal block length does not match the frame")
        if rnd < 0 or not -1 <= pol < rnd:
            raise ConsensusError(f"proposal needs round >= 0 and -1 <= pol_round < round: {pol}")
        return Proposal(height, rnd, pol, block_id, bytes(data[n:]), proposer, sig)

    def verify(self, chain_id: str) -> bool:
        return verify_sig(self.proposer, self.sign_bytes(chain_id), self.signature)


def proposal_sign_bytes(
    chain_id: str, height: int, rnd: int, pol_round: int, block_id: bytes
) -> bytes:
    return _chain_prefix(b"gridledger/proposal/v1", chain_id) + _PROP_HEAD.pack(
        height, rnd, pol_round, block_id
    )


def verify_sig(pub_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(pub_key) != PUB_KEY_LEN or len(signature) != SIG_LEN:
        return False
    try:
        VerifyKey(pub_key).verify(message, signature)
    except (BadSignatureError, ValueError):
        return False
    return True
