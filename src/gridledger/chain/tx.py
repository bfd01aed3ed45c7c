"""Signed transactions: canonical body, Ed25519 signature, id = SHA-256 of the signed bytes.

Wire form: ``body || signature`` where ``body`` is the canonical JSON object::

    {"chain_id": str, "payload": {...}, "sender": hex(32-byte key), "seq": int, "type": str}

and ``signature`` is the 64-byte Ed25519 signature of ``TX_DOMAIN || body``. The signature has a
fixed length, so splitting is unambiguous; the id hashes the whole wire form (docs/encoding.md).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from gridledger.chain import encoding
from gridledger.chain.keys import SIG_LEN, KeyPair, verify

TX_DOMAIN = b"gridledger/tx/v1\x00"
MAX_TX_BYTES = 32 * 1024
MAX_SEQ = 2**63 - 1
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_BODY_KEYS = ("chain_id", "payload", "sender", "seq", "type")


class TxError(ValueError):
    """Bytes that are not a well-formed transaction."""


@dataclass(frozen=True, slots=True)
class Tx:
    chain_id: str
    sender: bytes
    seq: int
    type: str
    payload: dict[str, Any]
    signature: bytes
    raw: bytes  # the wire bytes this was decoded from (or encoded to)
    # SHA-256 of ``raw``, computed once at decode: the id is looked up several times per
    # execution path (signature cache, context, indexes) and was re-hashed each time (profiled)
    id: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", tx_id(self.raw))

    @property
    def body(self) -> bytes:
        return self.raw[:-SIG_LEN]

    @property
    def sign_bytes(self) -> bytes:
        return TX_DOMAIN + self.body

    def signature_ok(self) -> bool:
        return verify(self.sender, self.sign_bytes, self.signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "id": self.id.hex(),
            "payload": self.payload,
            "sender": self.sender.hex(),
            "seq": self.seq,
            "signature": self.signature.hex(),
            "type": self.type,
        }


# Ids of recently seen wire bytes. A node hashes each transaction's bytes at admission, gossip,
# decode, execution, commit, mempool update and event publishing (profiled: 6-7 SHA-256 per
# transaction per node, ~2.5 % of a loaded validator's busy time); a dict lookup on the same
# bytes is ~10x cheaper. Keyed by the exact bytes, so a hit is the digest of those very bytes.
# Bounded in entries and in the bytes it keeps alive (only small transactions, the common case,
# are kept; the cache is cleared when full): a miss only costs the hash again.
_IDS: dict[bytes, bytes] = {}
_IDS_MAX = 20_000
_IDS_MAX_TX_BYTES = 1024  # at most ~20 MB of wire bytes kept alive, whatever is submitted


def tx_id(raw: bytes) -> bytes:
    """SHA-256 of the wire bytes (the transaction id)."""
    if type(raw) is not bytes or len(raw) > _IDS_MAX_TX_BYTES:  # (bytearray: mutable)
        return hashlib.sha256(raw).digest()
    txid = _IDS.get(raw)
    if txid is None:
        txid = hashlib.sha256(raw).digest()
        if len(_IDS) >= _IDS_MAX:
            _IDS.clear()
        _IDS[raw] = txid
    return txid


def make_tx(key: KeyPair, chain_id: str, seq: int, tx_type: str, payload: dict[str, Any]) -> Tx:
    """Build and sign a transaction (the payload is checked for canonical encodability)."""
    body = encoding.encode(
        {
            "chain_id": chain_id,
            "payload": payload,
            "sender": key.pub_hex,
            "seq": seq,
            "type": tx_type,
        }
    )
    sig = key.sign(TX_DOMAIN + body)
    return decode_tx(body + sig, max_bytes=len(body) + SIG_LEN)


def decode_tx(raw: bytes, max_bytes: int = MAX_TX_BYTES) -> Tx:
    """Parse wire bytes; checks form only (canonical, fields, sizes), not the signature."""
    if type(raw) is not bytes:  # a copy only for bytearray/memoryview (bytes are immutable)
        raw = bytes(raw)
    if len(raw) > max_bytes:
        raise TxError(f"transaction of {len(raw)} bytes exceeds the limit of {max_bytes}")
    if len(raw) <= SIG_LEN + 2:
        raise TxError(f"transaction of {len(raw)} bytes is too short to hold a body and signature")
    body_bytes, sig = raw[:-SIG_LEN], raw[-SIG_LEN:]
    try:
        body = encoding.decode(body_bytes)
    except encoding.EncodingError as exc:
        raise TxError(f"malformed transaction body: {exc}") from exc
    if not isinstance(body, dict) or tuple(body) != _BODY_KEYS:
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise TxError(
            f"transaction body must have exactly the fields {list(_BODY_KEYS)}, got {got}"
        )
    chain_id, payload, sender_hex = body["chain_id"], body["payload"], body["sender"]
    seq, tx_type = body["seq"], body["type"]
    if not isinstance(chain_id, str) or not chain_id:
        raise TxError("chain_id must be a non-empty string")
    if not isinstance(payload, dict):
        raise TxError("payload must be an object")
    try:
        sender = encoding.hex_bytes(sender_hex, "sender", 32)
    except encoding.EncodingError as exc:
        raise TxError(str(exc)) from exc
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise TxError(f"seq must be an integer in [0, 2^63), got {seq!r}")
    if not isinstance(tx_type, str) or not _TYPE_RE.match(tx_type):
        raise TxError(f"type must look like 'contract.action', got {tx_type!r}")
    return Tx(chain_id, sender, seq, tx_type, payload, sig, raw)
