"""Wire primitives shared by the ledger and the consensus engine: one home for each.

- the signed bytes of a vote (prevote or precommit) and of a precommit for a block, which the
  Tendermint engine signs and the ledger's :class:`~gridledger.chain.commit.Commit` verifies;
- the validator-set hash a header carries and the engine's ``ValidatorSet`` reports;
- the ``u32 length | item`` list used for block bodies, transaction gossip and binary batches.

Everything here is fixed-layout binary (``struct``): a domain tag and the chain id open every
signed message, so a signature for one chain or message kind can never be replayed as another.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from typing import Protocol

PREVOTE = 2
PRECOMMIT = 3
VOTE_DOMAIN = b"gridledger/vote/v1"
VALSET_DOMAIN = b"gridledger/valset/v1"
VOTE_HEAD = struct.Struct(">BQiB")  # type, height, round, has_block
# A signed vote on the wire: type, height, round, has_block, block id, validator, signature.
VOTE_WIRE = struct.Struct(">BQiB32s32s64s")
_LENGTH = struct.Struct(">I")


class WireError(ValueError):
    """Bytes that do not decode as the primitive they claim to be."""


class PoweredKey(Protocol):
    """What the validator-set hash needs of a member: its key and its voting power."""

    @property
    def pub_key(self) -> bytes: ...

    @property
    def power(self) -> int: ...


def chain_prefix(tag: bytes, chain_id: str) -> bytes:
    """``tag | u8 len | chain id``: the opening of every signed consensus message."""
    cid = chain_id.encode()
    if len(cid) > 255:
        raise WireError(f"chain id longer than 255 bytes: {chain_id!r}")
    return tag + bytes([len(cid)]) + cid


def vote_sign_bytes(
    chain_id: str, vote_type: int, height: int, round_: int, block_id: bytes | None
) -> bytes:
    """The bytes a validator signs for a vote; ``block_id`` None is a vote for nil."""
    return (
        chain_prefix(VOTE_DOMAIN, chain_id)
        + VOTE_HEAD.pack(vote_type, height, round_, block_id is not None)
        + (block_id or b"")
    )


def precommit_sign_bytes(chain_id: str, height: int, round_: int, block_hash: bytes) -> bytes:
    """The bytes of a precommit for ``block_hash``: what a commit's signatures cover."""
    return vote_sign_bytes(chain_id, PRECOMMIT, height, round_, block_hash)


def validator_order_key(pub_key: bytes, power: int) -> tuple[int, bytes]:
    """Canonical member order: power descending, then address (first 20 bytes of sha256(key))."""
    return (-power, hashlib.sha256(pub_key).digest()[:20])


def validator_set_hash(validators: Iterable[PoweredKey]) -> bytes:
    """Hash of members and powers in canonical order (proposer priorities excluded)."""
    vals = sorted(validators, key=lambda v: validator_order_key(v.pub_key, v.power))
    h = hashlib.sha256(VALSET_DOMAIN)
    for v in vals:
        h.update(v.pub_key + struct.pack(">Q", v.power))
    return h.digest()


def encode_length_prefixed(items: Sequence[bytes]) -> bytes:
    """``u32 length | item`` repeated."""
    return b"".join(_LENGTH.pack(len(t)) + t for t in items)


def decode_length_prefixed(data: bytes, what: str = "item", container: str = "list") -> list[bytes]:
    """Inverse of :func:`encode_length_prefixed`; a truncated list raises :class:`WireError`."""
    out, i, n = [], 0, len(data)
    while i < n:
        if i + 4 > n:
            raise WireError(f"truncated {what} length prefix in the {container}")
        (ln,) = _LENGTH.unpack_from(data, i)
        if i + 4 + ln > n:
            raise WireError(f"{what} length runs past the end of the {container}")
        out.append(bytes(data[i + 4 : i + 4 + ln]))
        i += 4 + ln
    return out


__all__ = [
    "PRECOMMIT",
    "PREVOTE",
    "VOTE_HEAD",
    "VOTE_WIRE",
    "WireError",
    "chain_prefix",
    "decode_length_prefixed",
    "encode_length_prefixed",
    "precommit_sign_bytes",
    "validator_order_key",
    "validator_set_hash",
    "vote_sign_bytes",
]
