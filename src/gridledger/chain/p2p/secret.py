"""Station-to-station handshake and sealed records for peer links (as CometBFT SecretConnection).

Why this design and not Noise: the only Noise library on PyPI (``noiseprotocol``) is unmaintained
and pulls in ``cryptography``; the station-to-station pattern that CometBFT uses needs only what
the project already depends on (PyNaCl: X25519, ChaCha20-Poly1305, Ed25519) and is short enough
to read in full. The key schedule is HKDF (RFC 5869) over HMAC-SHA256 from the standard library.

Handshake (both sides run the same steps at once):

1. ``hello`` = magic | SHA-256(chain id) | a fresh X25519 ephemeral public key (68 bytes, clear).
2. Both compute the X25519 shared secret of their ephemeral key and the peer's. Equal ephemeral
   keys (a reflected hello) and an all-zero secret (a low-order point) are refused.
3. ``transcript`` = SHA-256(tag | chain hash | lower ephemeral | higher ephemeral). HKDF with the
   shared secret as input key material and the transcript as salt gives the key for records sent
   by the side holding the lower ephemeral, the key for the other direction, and a 32-byte
   ``challenge``. The side holding the lower ephemeral sends with the first key.
4. Each side sends, as the first sealed record, its Ed25519 public key and its signature over
   (tag | challenge), and verifies the peer's: the signature binds the static key to this one
   session (both ephemerals, the chain, the shared secret), so it cannot be reflected back,
   relayed into another session, or replayed. Static keys travel encrypted, so a passive
   observer does not learn who talks to whom.

Records after the handshake: ``u32 length | u8 kind`` in clear (so the receiver can refuse an
oversize frame before buffering it) followed by ChaCha20-Poly1305(payload) with that 5-byte head
as associated data, so the length and kind are authenticated too. The 96-bit nonce is a
per-direction counter (4 zero bytes | 64-bit little-endian counter); a reordered, replayed,
dropped or altered record fails to open and ends the link.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import struct

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from ..consensus.tendermint.types import verify_sig

MAGIC = b"GLP2"
PROTOCOL_TAG = b"gridledger/p2p/v2"
HELLO = struct.Struct(">4s32s32s")
RECORD_HEAD = struct.Struct(">IB")
TAG_BYTES = 16
AUTH_KIND = 0xFF  # record kind of the handshake's authentication message
AUTH_BYTES = 32 + 64  # static Ed25519 public key | signature
_NONCE_PAD = bytes(4)
_MAX_COUNTER = 2**64 - 1


class HandshakeError(ConnectionError):
    """The peer failed authentication or spoke another protocol or chain."""


class RecordError(ConnectionError):
    """A sealed record failed to open (tampered, reordered or replayed): the link must end."""


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF; hand-written (6 lines on stdlib hmac) so that PyNaCl stays the only
    crypto dependency."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


class SecretSession:
    """The two directional ChaCha20-Poly1305 keys of one link and their nonce counters."""

    __slots__ = ("_recv_key", "_recv_n", "_send_key", "_send_n")

    def __init__(self, send_key: bytes, recv_key: bytes):
        self._send_key, self._recv_key = send_key, recv_key
        self._send_n = 0
        self._recv_n = 0

    def seal(self, kind: int, payload: bytes) -> bytes:
        """One record: clear head, then the sealed payload with the head as associated data."""
        if self._send_n >= _MAX_COUNTER:
            raise RecordError("send nonce counter exhausted")
        head = RECORD_HEAD.pack(len(payload), kind)
        nonce = _NONCE_PAD + self._send_n.to_bytes(8, "little")
        self._send_n += 1
        return head + crypto_aead_chacha20poly1305_ietf_encrypt(
            payload, head, nonce, self._send_key
        )

    def open(self, head: bytes, sealed: bytes) -> bytes:
        if self._recv_n >= _MAX_COUNTER:
            raise RecordError("receive nonce counter exhausted")
        if len(sealed) < TAG_BYTES:  # PyNaCl raises a bare ValueError on these
            raise RecordError(f"sealed record of {len(sealed)} bytes is shorter than its tag")
        nonce = _NONCE_PAD + self._recv_n.to_bytes(8, "little")
        try:
            payload = crypto_aead_chacha20poly1305_ietf_decrypt(sealed, head, nonce, self._recv_key)
        except CryptoError as exc:
            raise RecordError("record failed authentication (tampered or out of order)") from exc
        self._recv_n += 1
        return payload


def derive(
    chain_hash: bytes, own_eph_secret: bytes, own_eph: bytes, peer_eph: bytes
) -> tuple[SecretSession, bytes]:
    """Session keys and the challenge both sides sign; raises HandshakeError on a bad ephemeral."""
    if peer_eph == own_eph:
        raise HandshakeError("peer sent our own ephemeral key back (reflection)")
    try:
        shared = crypto_scalarmult(own_eph_secret, peer_eph)
    except CryptoError as exc:  # libsodium refuses low-order points (all-zero result)
        raise HandshakeError("peer's ephemeral key is a low-order point") from exc
    if shared == bytes(32):
        raise HandshakeError("peer's ephemeral key is a low-order point")
    lo, hi = sorted((own_eph, peer_eph))
    transcript = hashlib.sha256(PROTOCOL_TAG + chain_hash + lo + hi).digest()
    okm = hkdf_sha256(shared, transcript, PROTOCOL_TAG + b" keys and challenge", 96)
    key_lo, key_hi, challenge = okm[:32], okm[32:64], okm[64:]
    session = SecretSession(key_lo, key_hi) if own_eph == lo else SecretSession(key_hi, key_lo)
    return session, challenge


def auth_message(key: SigningKey, challenge: bytes) -> bytes:
    return bytes(key.verify_key) + key.sign(PROTOCOL_TAG + b" auth" + challenge).signature


def check_auth(message: bytes, challenge: bytes) -> bytes:
    """The peer's static key if ``message`` signs this session's challenge; else HandshakeError."""
    if len(message) != AUTH_BYTES:
        raise HandshakeError(f"authentication message of {len(message)} bytes")
    peer_pk, sig = message[:32], message[32:]
    if not verify_sig(peer_pk, PROTOCOL_TAG + b" auth" + challenge, sig):
        raise HandshakeError("peer's handshake signature is invalid")
    return peer_pk


async def read_record(
    reader: asyncio.StreamReader, session: SecretSession, max_payload: int
) -> tuple[int, bytes]:
    """Read and open one record of at most ``max_payload`` bytes (used during the handshake)."""
    head = await reader.readexactly(RECORD_HEAD.size)
    length, kind = RECORD_HEAD.unpack(head)
    if length > max_payload:
        raise HandshakeError(f"record of {length} bytes exceeds {max_payload}")
    sealed = await reader.readexactly(length + TAG_BYTES)
    return kind, session.open(head, sealed)


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    chain_hash: bytes,
    key: SigningKey,
) -> tuple[bytes, SecretSession]:
    """Run the handshake; returns the peer's authenticated static key and the session.

    The caller decides whether that key may connect (allow-list, expected key, existing link).
    """
    eph = PrivateKey.generate()
    eph_secret = bytes(eph)
    own_eph = crypto_scalarmult_base(eph_secret)
    writer.write(HELLO.pack(MAGIC, chain_hash, own_eph))
    await writer.drain()
    magic, peer_chain, peer_eph = HELLO.unpack(await reader.readexactly(HELLO.size))
    if magic != MAGIC:
        raise HandshakeError("peer does not speak the gridledger p2p protocol")
    if peer_chain != chain_hash:
        raise HandshakeError("peer is on another chain")
    session, challenge = derive(chain_hash, eph_secret, own_eph, peer_eph)
    writer.write(session.seal(AUTH_KIND, auth_message(key, challenge)))
    await writer.drain()
    kind, message = await read_record(reader, session, AUTH_BYTES)
    if kind != AUTH_KIND:
        raise HandshakeError(f"expected the authentication record, got kind {kind}")
    return check_auth(message, challenge), session
