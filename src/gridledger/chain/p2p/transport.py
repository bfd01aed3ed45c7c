"""Authenticated asyncio TCP links between validators, carrying length-prefixed binary frames.

Handshake (both sides at once, then each verifies the other):

1. ``hello``  = magic, SHA-256(chain id), own Ed25519 public key, 32 random bytes (nonce);
2. ``proof``  = signature over (domain tag, chain hash, the *peer's* nonce, own key, peer key).

A peer proves possession of its key by signing a fresh nonce chosen by us, so a recorded
handshake cannot be replayed; only keys in ``allowed`` are accepted. Traffic is not encrypted
(the consortium's links are loopback or a private network here; see docs/consensus.md).

After the handshake every frame is ``u32 length | u8 kind | payload``. To avoid duplicate links
between two validators, only the peer with the greater public key dials; the other accepts.
Outgoing frames to a peer whose socket buffer is already large are dropped, not queued without
bound: consensus recovers lost messages by re-gossip, and a SIGSTOPped peer must not make us
run out of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nacl.signing import SigningKey

from ..consensus.tendermint.types import verify_sig
from .faults import FaultControl

log = logging.getLogger(__name__)

MAGIC = b"GLP1"
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_WRITE_BUFFER_BYTES = 32 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 5.0
_HELLO = struct.Struct(">4s32s32s32s")
_FRAME_HEAD = struct.Struct(">IB")


class HandshakeError(ConnectionError):
    """The peer failed authentication or spoke another protocol or chain."""


@dataclass(frozen=True)
class PeerAddress:
    pub_key: bytes
    host: str
    port: int


Handler = Callable[[bytes, int, bytes], Awaitable[None] | None]


class Peer:
    def __init__(self, pub_key: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.pub_key = pub_key
        self.reader = reader
        self.writer = writer
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_out = 0

    def send(self, kind: int, payload: bytes) -> bool:
        if self.writer.is_closing():
            return False
        if self.writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            self.dropped_out += 1
            return False
        self.writer.write(_FRAME_HEAD.pack(len(payload) + 1, kind) + payload)
        self.frames_out += 1
        return True


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
        self.peers: dict[bytes, Peer] = {}
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
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
        return self.listen_port

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for p in list(self.peers.values()):
            p.writer.close()
        self.peers.clear()

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # --- sending ----------------------------------------------------------------------------
    def _blocked(self, pub_key: bytes) -> bool:
        return self.faults is not None and self.faults.blocks(pub_key)

    def send(self, pub_key: bytes, kind: int, payload: bytes) -> bool:
        peer = self.peers.get(pub_key)
        if peer is None or self._blocked(pub_key):
            return False
        return peer.send(kind, payload)

    def broadcast(self, kind: int, payload: bytes, exclude: bytes | None = None) -> None:
        frame_payload = payload
        for pk, peer in list(self.peers.items()):
            if pk != exclude and not self._blocked(pk):
                peer.send(kind, frame_payload)

    def connected(self) -> list[bytes]:
        return [pk for pk in self.peers if not self._blocked(pk)]

    # --- connections ------------------------------------------------------------------------
    async def _dial_loop(self, pk: bytes) -> None:
        addr = self.peer_addrs[pk]
        while not self._closed:
            if pk not in self.peers:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(addr.host, addr.port), HANDSHAKE_TIMEOUT_S
                    )
                except (OSError, TimeoutError):
                    await asyncio.sleep(self.redial_s)
                    continue
                await self._run_link(reader, writer, expected=pk)
            await asyncio.sleep(self.redial_s)

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        # asyncio's server logs a cancelled connection task as an error; at shutdown every
        # link is cancelled on purpose, so end quietly instead.
        with contextlib.suppress(asyncio.CancelledError):
            await self._run_link(reader, writer, expected=None)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, expected: bytes | None
    ) -> bytes:
        nonce = os.urandom(32)
        writer.write(_HELLO.pack(MAGIC, self.chain_hash, self.pub_key, nonce))
        await writer.drain()
        hello = await reader.readexactly(_HELLO.size)
        magic, chain_hash, peer_pk, peer_nonce = _HELLO.unpack(hello)
        if magic != MAGIC:
            raise HandshakeError("peer does not speak the gridledger p2p protocol")
        if chain_hash != self.chain_hash:
            raise HandshakeError("peer is on another chain")
        if peer_pk not in self.allowed or peer_pk == self.pub_key:
            raise HandshakeError(f"peer key {peer_pk.hex()[:16]} is not allowed")
        if expected is not None and peer_pk != expected:
            raise HandshakeError("peer key differs from the configured one")
        tag = b"gridledger/p2p/v1" + self.chain_hash
        writer.write(self.key.sign(tag + peer_nonce + self.pub_key + peer_pk).signature)
        await writer.drain()
        proof = await reader.readexactly(64)
        if not verify_sig(peer_pk, tag + nonce + peer_pk + self.pub_key, proof):
            raise HandshakeError("peer's handshake signature is invalid")
        return peer_pk

    async def _run_link(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, expected: bytes | None
    ) -> None:
        try:
            pk = await asyncio.wait_for(
                self._handshake(reader, writer, expected), HANDSHAKE_TIMEOUT_S
            )
        except (HandshakeError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.info("handshake failed: %s", exc)
            writer.close()
            return
        old = self.peers.get(pk)
        if old is not None:  # the peer restarted and reconnected: the new link wins
            old.writer.close()
        peer = Peer(pk, reader, writer)
        self.peers[pk] = peer
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY
        try:
            # Read whatever has arrived and cut every complete frame out of it: one await per
            # batch of segments instead of two per frame (votes are ~150-byte frames).
            buf = bytearray()
            head_size = _FRAME_HEAD.size
            while True:
                chunk = await reader.read(1 << 18)
                if not chunk:
                    raise asyncio.IncompleteReadError(bytes(buf), None)
                buf += chunk
                off = 0
                while len(buf) - off >= head_size:
                    length, kind = _FRAME_HEAD.unpack_from(buf, off)
                    if not 1 <= length <= MAX_FRAME_BYTES:
                        raise HandshakeError(f"frame length {length} out of range")
                    end = off + 4 + length
                    if len(buf) < end:
                        break
                    payload = bytes(buf[off + head_size : end])
                    off = end
                    peer.frames_in += 1
                    if self._blocked(pk):
                        continue
                    res = self.handler(pk, kind, payload)
                    if res is not None:
                        await res
                if off:
                    del buf[:off]
        except (asyncio.IncompleteReadError, OSError, HandshakeError) as exc:
            log.info("link to %s closed: %s", pk.hex()[:16], exc)
        finally:
            if self.peers.get(pk) is peer:
                del self.peers[pk]
            writer.close()
