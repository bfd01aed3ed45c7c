"""Authenticated, encrypted asyncio TCP links between validators, carrying bounded frames.

Each link starts with the station-to-station handshake of :mod:`.secret` (X25519 ephemerals,
Ed25519 signatures over a challenge derived from both ephemerals, the chain and the shared
secret; ChaCha20-Poly1305 records after it). This module decides who may hold a link:

* the peer's authenticated key must be in ``allowed`` (the validator set plus configured
  followers; the node replaces it with :meth:`Transport.set_allowed` when the set changes,
  which also closes links of keys that left it) and not our own; a configured peer that is not
  allowed is not dialled; when we dialed, it must be the key configured for that address;
* only the peer with the greater public key dials; an inbound link from a peer that *we* are
  to dial is refused, so a stranger relaying two inbound connections cannot join the two;
* an existing authenticated link is never replaced by a newcomer while it is alive (it received
  something within ``stale_after_s``; every link carries a keepalive each ``keepalive_s``), so
  a stranger cannot kick a real link, while a peer that restarted behind a lost FIN still gets
  back in once the old link has gone silent; a link silent for ``dead_after_s`` is closed (the
  dialer then redials);
* at most ``MAX_PENDING_HANDSHAKES`` unauthenticated connections are held at once, each for at
  most ``HANDSHAKE_TIMEOUT_S``.

Frames are bounded by kind: ``frame_limits`` maps each kind to its largest payload (the reactor
sets the table; votes are a few hundred bytes, blocks are bounded by the maximum block size).
The bound is checked on the clear record head, before the payload is buffered. An unknown kind,
an oversize frame, a record that fails authentication, or a frame the handler cannot decode
(``struct.error``, ``ValueError``) ends that one link with a log line; the node keeps running
and the dialer redials. Outgoing frames to a peer whose socket buffer is already large are
dropped, not queued without bound: consensus recovers lost messages by re-gossip, and a
SIGSTOPped peer must not make us run out of memory. Frames sent in one event-loop turn to a
peer go out in one write (one system call for a proposal's worth of votes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from .faults import FaultControl
from .secret import (
    AUTH_KIND,
    RECORD_HEAD,
    TAG_BYTES,
    HandshakeError,
    RecordError,
    SecretSession,
    handshake,
)

log = logging.getLogger(__name__)

KEEPALIVE_KIND = 0  # transport-level, never handed to the handler
RESERVED_KINDS = frozenset({KEEPALIVE_KIND, AUTH_KIND})
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024  # per kind, when no table is given (tests)
MAX_WRITE_BUFFER_BYTES = 32 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 5.0
MAX_PENDING_HANDSHAKES = 32
# Exceptions a frame decoder raises on malformed input (the node's own decoders raise
# ValueError subclasses; ``struct`` raises struct.error).
DECODE_ERRORS = (struct.error, ValueError, IndexError)

__all__ = [
    "KEEPALIVE_KIND",
    "FrameError",
    "HandshakeError",
    "Peer",
    "PeerAddress",
    "Transport",
]


class FrameError(ConnectionError):
    """A frame of an unknown kind, over its kind's bound, or one that does not decode."""


@dataclass(frozen=True)
class PeerAddress:
    pub_key: bytes
    host: str
    port: int


Handler = Callable[[bytes, int, bytes], Awaitable[None] | None]


class Peer:
    """One authenticated link: its session keys, the writer and counters."""

    def __init__(self, pub_key: bytes, writer: asyncio.StreamWriter, session: SecretSession):
        self.pub_key = pub_key
        self.writer = writer
        self.session = session
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_out = 0
        self.last_recv = self.last_send = time.monotonic()
        self._out: list[bytes] = []

    def send(self, kind: int, payload: bytes) -> bool:
        if self.writer.is_closing():
            return False
        if self.writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            self.dropped_out += 1
            return False
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(self.session.seal(kind, payload))
        self.frames_out += 1
        return True

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.writer.is_closing():
            self.writer.write(out[0] if len(out) == 1 else b"".join(out))
            self.last_send = time.monotonic()

    def alive(self, now: float, stale_after_s: float) -> bool:
        return not self.writer.is_closing() and now - self.last_recv < stale_after_s

    def close(self) -> None:
        self.writer.close()


class Transport:
    """Listens, dials configured peers, authenticates them and dispatches frames."""

    def __init__(
        self,
        chain_id: str,
        key: SigningKey,
        listen_host: str,
        listen_port: int,
        peers: list[PeerAddress],
        allowed: set[bytes],
        handler: Handler,
        faults: FaultControl | None = None,
        redial_s: float = 0.5,
        frame_limits: Mapping[int, int] | None = None,
        keepalive_s: float = 0.5,
        stale_after_s: float = 3.0,
        dead_after_s: float = 10.0,
    ):
        self.chain_hash = hashlib.sha256(chain_id.encode()).digest()
        self.key = key
        self.pub_key = bytes(key.verify_key)
        self.listen_host, self.listen_port = listen_host, listen_port
        self.peer_addrs = {p.pub_key: p for p in peers if p.pub_key != self.pub_key}
        self.allowed = set(allowed)
        self.handler = handler
        self.faults = faults
        self.redial_s = redial_s
        self.frame_limits = frame_limits
        self.keepalive_s, self.stale_after_s = keepalive_s, stale_after_s
        self.dead_after_s = dead_after_s
        self.peers: dict[bytes, Peer] = {}
        self.refused_links = 0
        self.dropped_links = 0
        self._pending_handshakes = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._on_accept, self.listen_host, self.listen_port
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        for pk in self.peer_addrs:
            if self.pub_key > pk:
                self._spawn(self._dial_loop(pk))
        if self.faults is not None:
            self._spawn(self.faults.watch())
        self._spawn(self._keepalive_loop())
        return self.listen_port

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for p in list(self.peers.values()):
            p.close()
        self.peers.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # --- sending ----------------------------------------------------------------------------
    def max_payload(self, kind: int) -> int | None:
        """The largest payload a frame of ``kind`` may carry; None for a kind we do not take."""
        if kind in RESERVED_KINDS:
            return 0 if kind == KEEPALIVE_KIND else None
        if self.frame_limits is None:
            return DEFAULT_MAX_FRAME_BYTES
        return self.frame_limits.get(kind)

    def _blocked(self, pub_key: bytes) -> bool:
        return self.faults is not None and self.faults.blocks(pub_key)

    def _sendable(self, kind: int, payload: bytes) -> bool:
        limit = self.max_payload(kind)
        if kind == KEEPALIVE_KIND or limit is None or len(payload) > limit:
            # The peer would end the link over it: a bug on our side, not something to send.
            log.error(
                "not sending a frame of kind %d and %d bytes (limit %s)", kind, len(payload), limit
            )
            return False
        return True

    def send(self, pub_key: bytes, kind: int, payload: bytes) -> bool:
        peer = self.peers.get(pub_key)
        if peer is None or self._blocked(pub_key) or not self._sendable(kind, payload):
            return False
        return peer.send(kind, payload)

    def broadcast(self, kind: int, payload: bytes, exclude: bytes | None = None) -> None:
        if not self._sendable(kind, payload):
            return
        for pk, peer in list(self.peers.items()):
            if pk != exclude and not self._blocked(pk):
                peer.send(kind, payload)

    def connected(self) -> list[bytes]:
        return [pk for pk in self.peers if not self._blocked(pk)]

    def set_allowed(self, allowed: set[bytes]) -> list[bytes]:
        """Replace the allow-list while running; close links of keys no longer on it.

        The node calls this when the validator set changes, so a validator voted in is let in,
        and one voted out or jailed is cut off, from the height its power takes effect, without
        a restart. Returns the keys whose links were closed.
        """
        self.allowed = set(allowed)
        cut = [pk for pk in self.peers if pk not in self.allowed]
        for pk in cut:
            log.warning("closing the link to %s: no longer allowed", pk.hex()[:16])
            self.peers[pk].close()
        return cut

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            now = time.monotonic()
            for peer in list(self.peers.values()):
                if now - peer.last_recv > self.dead_after_s:
                    # half-open (the peer died or the path is cut): close it so the dialer
                    # redials instead of waiting for TCP to give up
                    log.warning("closing the link to %s: silent", peer.pub_key.hex()[:16])
                    peer.close()
                elif now - peer.last_send >= self.keepalive_s:
                    peer.send(KEEPALIVE_KIND, b"")

    # --- connections ------------------------------------------------------------------------
    async def _dial_loop(self, pk: bytes) -> None:
        addr = self.peer_addrs[pk]
        while not self._closed:
            if pk not in self.peers and pk in self.allowed:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(addr.host, addr.port), HANDSHAKE_TIMEOUT_S
                    )
                except (OSError, TimeoutError):
                    await asyncio.sleep(self.redial_s)
                    continue
                await self._run_link(reader, writer, expected=pk)
            await asyncio.sleep(self.redial_s)

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio's server logs a cancelled connection task as an error; at shutdown every
        # link is cancelled on purpose, so end quietly instead.
        with contextlib.suppress(asyncio.CancelledError):
            await self._run_link(reader, writer, expected=None)

    def _admission(self, pk: bytes, expected: bytes | None) -> str | None:
        """Why the authenticated key ``pk`` may not hold a link now; None if it may."""
        if pk == self.pub_key:
            return "peer presented our own key"
        if pk not in self.allowed:
            return f"peer key {pk.hex()[:16]} is not allowed"
        if expected is not None and pk != expected:
            return "peer key differs from the configured one"
        if expected is None and pk in self.peer_addrs and self.pub_key > pk:
            return f"inbound link from {pk.hex()[:16]}, which we dial ourselves"
        old = self.peers.get(pk)
        if old is not None and old.alive(time.monotonic(), self.stale_after_s):
            return f"an authenticated link to {pk.hex()[:16]} is already live"
        return None

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, expected: bytes | None
    ) -> tuple[bytes, SecretSession] | None:
        if self._pending_handshakes >= MAX_PENDING_HANDSHAKES:
            log.info("refusing a connection: %d handshakes pending", self._pending_handshakes)
            return None
        self._pending_handshakes += 1
        try:
            pk, session = await asyncio.wait_for(
                handshake(reader, writer, self.chain_hash, self.key), HANDSHAKE_TIMEOUT_S
            )
        except (
            HandshakeError,
            RecordError,
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
        ) as exc:
            log.info("handshake failed: %s", exc)
            return None
        finally:
            self._pending_handshakes -= 1
        reason = self._admission(pk, expected)
        if reason is not None:
            self.refused_links += 1
            log.warning("refused link: %s", reason)
            return None
        return pk, session

    async def _run_link(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, expected: bytes | None
    ) -> None:
        authenticated = await self._authenticate(reader, writer, expected)
        if authenticated is None:
            writer.close()
            return
        pk, session = authenticated
        old = self.peers.get(pk)
        if old is not None:  # silent for stale_after_s: the peer restarted behind a lost FIN
            old.close()
        peer = Peer(pk, writer, session)
        self.peers[pk] = peer
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY
        try:
            await self._read_frames(reader, peer)
        except (FrameError, RecordError) as exc:  # before OSError: both are ConnectionErrors
            self.dropped_links += 1
            log.warning("dropped the link to %s: %s", pk.hex()[:16], exc)
        except (asyncio.IncompleteReadError, OSError) as exc:
            log.info("link to %s closed: %s", pk.hex()[:16], exc)
        except Exception:  # a bug handling one frame must not stop the dial loop or the node
            self.dropped_links += 1
            log.exception("dropped the link to %s after an unexpected error", pk.hex()[:16])
        finally:
            if self.peers.get(pk) is peer:
                del self.peers[pk]
            writer.close()

    async def _read_frames(self, reader: asyncio.StreamReader, peer: Peer) -> None:
        # Read whatever has arrived and cut every complete record out of it: one await per
        # batch of segments instead of two per frame (votes are ~150-byte frames).
        pk, session = peer.pub_key, peer.session
        buf = bytearray()
        head_size = RECORD_HEAD.size
        while True:
            chunk = await reader.read(1 << 18)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), None)
            buf += chunk
            peer.last_recv = time.monotonic()
            off = 0
            while len(buf) - off >= head_size:
                length, kind = RECORD_HEAD.unpack_from(buf, off)
                limit = self.max_payload(kind)
                if limit is None:
                    raise FrameError(f"unknown frame kind {kind}")
                if length > limit:
                    raise FrameError(f"frame kind {kind} of {length} bytes exceeds {limit}")
                end = off + head_size + length + TAG_BYTES
                if len(buf) < end:
                    break
                payload = session.open(
                    bytes(buf[off : off + head_size]), bytes(buf[off + head_size : end])
                )
                off = end
                peer.frames_in += 1
                if kind == KEEPALIVE_KIND or self._blocked(pk):
                    continue
                try:
                    res = self.handler(pk, kind, payload)
                    if res is not None:
                        await res
                except DECODE_ERRORS as exc:
                    raise FrameError(f"undecodable frame of kind {kind}: {exc!r}") from exc
            if off:
                del buf[:off]
