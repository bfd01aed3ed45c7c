"""Signed HTTP requests: how a member proves who sends a request to a node's API.

One home for the protocol (the client signs with :func:`sign_headers`, the server checks with
:class:`RequestVerifier`). The member signs, with its Ed25519 key, the canonical request::

    gridledger-request-v1 \\n chain id \\n METHOD \\n raw path?query \\n time ms \\n nonce \\n
    sha256(body) hex

and sends the key, time, nonce and signature in the ``X-Gridledger-*`` headers. The chain id
stops a request signed for one chain being used on another; the time must lie within
``WINDOW_MS`` of the node's clock, and a (key, nonce) pair is accepted once within that window,
so a captured request cannot be replayed. A body is bound by its hash, the query by the path.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass

from gridledger.chain.keys import KeyPair, verify

WINDOW_MS = 30_000
# a member may sign this many requests per window; bounds the replay cache (members x this)
MAX_REQUESTS_PER_WINDOW = 5_000

KEY_HEADER = "x-gridledger-key"
TIME_HEADER = "x-gridledger-time"
NONCE_HEADER = "x-gridledger-nonce"
SIGNATURE_HEADER = "x-gridledger-signature"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")


class AuthError(Exception):
    """A request that is unsigned, badly signed, stale or replayed (HTTP 401), or rate-limited."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


def canonical_request(
    chain_id: str, method: str, target: bytes, time_ms: int, nonce: str, body_sha256: str
) -> bytes:
    """The bytes a member signs: ``target`` is the raw path with its ``?query`` as sent."""
    return b"\n".join(
        [
            b"gridledger-request-v1",
            chain_id.encode(),
            method.upper().encode(),
            target,
            str(time_ms).encode(),
            nonce.encode(),
            body_sha256.encode(),
        ]
    )


def sign_headers(
    key: KeyPair,
    chain_id: str,
    method: str,
    target: bytes,
    body: bytes,
    time_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that sign one request (a fresh random nonce unless given)."""
    t = time.time_ns() // 10**6 if time_ms is None else time_ms
    n = os.urandom(16).hex() if nonce is None else nonce
    msg = canonical_request(chain_id, method, target, t, n, hashlib.sha256(body).hexdigest())
    return {
        KEY_HEADER: key.pub_hex,
        TIME_HEADER: str(t),
        NONCE_HEADER: n,
        SIGNATURE_HEADER: key.sign(msg).hex(),
    }


@dataclass(frozen=True)
class SignedHeaders:
    pub_hex: str
    time_ms: int
    nonce: str
    signature: bytes


def parse_headers(headers: dict[str, str] | object) -> SignedHeaders:
    """The four signing headers, checked for shape; :class:`AuthError` names what is wrong."""
    get = headers.get  # type: ignore[attr-defined]
    pub, t, nonce, sig = (get(h) for h in (KEY_HEADER, TIME_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
    if pub is None or t is None or nonce is None or sig is None:
        raise AuthError(
            "this request must be signed by a member: send the X-Gridledger-Key, "
            "X-Gridledger-Time, X-Gridledger-Nonce and X-Gridledger-Signature headers"
        )
    if not _HEX64.match(pub):
        raise AuthError("X-Gridledger-Key must be 64 lowercase hex characters")
    if not (t.isdigit() and len(t) <= 16):
        raise AuthError("X-Gridledger-Time must be a time in milliseconds since the epoch")
    if not _HEX32.match(nonce):
        raise AuthError("X-Gridledger-Nonce must be 32 lowercase hex characters")
    if not _HEX128.match(sig):
        raise AuthError("X-Gridledger-Signature must be 128 lowercase hex characters")
    return SignedHeaders(pub, int(t), nonce, bytes.fromhex(sig))


class RequestVerifier:
    """Checks time window, signature and replay of signed requests for one chain."""

    def __init__(self, chain_id: str, window_ms: int = WINDOW_MS) -> None:
        self.chain_id = chain_id
        self.window_ms = window_ms
        self._seen: dict[str, dict[str, int]] = {}  # pub -> nonce -> expiry ms
        self._lock = threading.Lock()

    def check_time(self, signed: SignedHeaders) -> None:
        now = time.time_ns() // 10**6
        if abs(now - signed.time_ms) > self.window_ms:
            raise AuthError(
                f"request time {signed.time_ms} ms is more than {self.window_ms} ms from the "
                f"node's clock ({now} ms): sign it afresh"
            )

    def verify(self, signed: SignedHeaders, method: str, target: bytes, body_sha256: str) -> None:
        """Check the time and the signature; :class:`AuthError` otherwise."""
        self.check_time(signed)
        msg = canonical_request(
            self.chain_id, method, target, signed.time_ms, signed.nonce, body_sha256
        )
        if not verify(bytes.fromhex(signed.pub_hex), msg, signed.signature):
            raise AuthError(
                "bad request signature (it must cover this chain id, method, path and query, "
                "time, nonce and body hash)"
            )

    def accept_once(self, signed: SignedHeaders) -> None:
        """Accept a verified request from a member once (call after checking membership, so
        that only members' nonces are remembered); :class:`AuthError` on a replay."""
        now = time.time_ns() // 10**6
        with self._lock:
            seen = self._seen.setdefault(signed.pub_hex, {})
            for n in [n for n, exp in seen.items() if exp < now]:
                del seen[n]
            if signed.nonce in seen:
                raise AuthError("replayed request: this nonce was already used")
            if len(seen) >= MAX_REQUESTS_PER_WINDOW:
                raise AuthError(
                    f"more than {MAX_REQUESTS_PER_WINDOW} signed requests from this key within "
                    f"{self.window_ms} ms; slow down",
                    status=429,
                )
            seen[signed.nonce] = signed.time_ms + 2 * self.window_ms


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
