"""State sync over the P2P links: snapshots offered by peers, chunks fetched and verified.

Shaped like CometBFT's state sync. A new node (validator or follower) that trusts one header
(``trust_height``, ``trust_hash``, from an operator or a block explorer it trusts):

1. asks its peers which snapshots they keep (``K_SNAPSHOTS_REQ`` -> ``K_SNAPSHOTS``: manifests);
2. for the newest snapshot height ``h`` at or above the trusted height, light-client-verifies
   the header of ``h + 1`` from the trusted header (``K_LIGHT_REQ`` -> ``K_LIGHT``: header,
   commit, validator set; :class:`~.light.LightClient`), and the header of ``h`` by its hash,
   which the header of ``h + 1`` names;
3. refuses a manifest whose app hash is not the app hash of the verified header ``h + 1``
   (the state root after ``h``), and the peers that offered it;
4. fetches the chunks (``K_CHUNK_REQ`` -> ``K_CHUNK``), a few at a time from the peers that
   offered the snapshot, checks each against its hash in the manifest, and on a bad chunk drops
   that peer from the sync and fetches the chunk from another;
5. rebuilds the state and checks its root once more (:func:`gridledger.chain.snapshot.rebuild`).

The node then restores its store from the result and block-syncs from ``h + 1``; it never
replays from genesis. Serving is :class:`SnapshotServer`: every request kind is rate-limited per
peer (a token bucket), so a peer cannot make a node read and send chunks without bound.

Frames are bounded per kind (:func:`frame_limits`), checked by the transport on the record head
before the payload is read; every decoder here raises :class:`StateSyncError` (a ``ValueError``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gridledger.chain.abci import Validator
from gridledger.chain.block import BlockError, Commit, Header, validator_set_hash
from gridledger.chain.snapshot import (
    MAX_CHUNK_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_VALIDATORS,
    Manifest,
    SnapshotError,
    SnapshotStore,
    check_chunk,
    rebuild,
)
from gridledger.chain.wire import WireError, decode_length_prefixed, encode_length_prefixed

from .light import LightClient, LightClientError, TrustedState

log = logging.getLogger(__name__)

K_SNAPSHOTS_REQ, K_SNAPSHOTS, K_CHUNK_REQ, K_CHUNK, K_LIGHT_REQ, K_LIGHT = 7, 8, 9, 10, 11, 12
REQUEST_KINDS = frozenset({K_SNAPSHOTS_REQ, K_CHUNK_REQ, K_LIGHT_REQ})
RESPONSE_KINDS = frozenset({K_SNAPSHOTS, K_CHUNK, K_LIGHT})
MAX_OFFERED = 4  # manifests in one K_SNAPSHOTS frame (a node keeps a few)
MAX_HEADER_BYTES = 64 * 1024
_CHUNK_ID = struct.Struct(">QII")  # height, format, index
_HEIGHT = struct.Struct(">Q")
_VALIDATOR = struct.Struct(">32sQ")


class StateSyncError(ValueError):
    """A state-sync frame that does not decode, or a sync that cannot complete (says why)."""


class SnapshotTooLarge(StateSyncError):
    """A snapshot whose chunks exceed the syncing node's ``max_snapshot_bytes``."""


def frame_limits(commit_bytes: int) -> dict[int, int]:
    """Largest payload per state-sync frame kind (the reactor adds these to its table)."""
    return {
        K_SNAPSHOTS_REQ: 0,
        K_SNAPSHOTS: MAX_OFFERED * (4 + MAX_MANIFEST_BYTES),
        K_CHUNK_REQ: _CHUNK_ID.size,
        K_CHUNK: _CHUNK_ID.size + MAX_CHUNK_BYTES,
        K_LIGHT_REQ: _HEIGHT.size,
        K_LIGHT: _HEIGHT.size
        + 12
        + MAX_HEADER_BYTES
        + commit_bytes
        + MAX_VALIDATORS * _VALIDATOR.size,
    }


# --- messages ---------------------------------------------------------------------------------
def encode_offer(manifests: list[Manifest]) -> bytes:
    return encode_length_prefixed([m.encode() for m in manifests[:MAX_OFFERED]])


def decode_offer(payload: bytes) -> list[Manifest]:
    try:
        items = decode_length_prefixed(payload, "manifest", "snapshot offer")
    except WireError as exc:
        raise StateSyncError(str(exc)) from exc
    if len(items) > MAX_OFFERED:
        raise StateSyncError(f"an offer lists at most {MAX_OFFERED} snapshots")
    try:
        return [Manifest.decode(m) for m in items]
    except SnapshotError as exc:
        raise StateSyncError(str(exc)) from exc


def encode_chunk_request(height: int, fmt: int, index: int) -> bytes:
    return _CHUNK_ID.pack(height, fmt, index)


def decode_chunk_request(payload: bytes) -> tuple[int, int, int]:
    if len(payload) != _CHUNK_ID.size:
        raise StateSyncError(f"a chunk request is {_CHUNK_ID.size} bytes, got {len(payload)}")
    return _CHUNK_ID.unpack(payload)


def encode_chunk(height: int, fmt: int, index: int, chunk: bytes) -> bytes:
    return _CHUNK_ID.pack(height, fmt, index) + chunk


def decode_chunk(payload: bytes) -> tuple[int, int, int, bytes]:
    if len(payload) < _CHUNK_ID.size:
        raise StateSyncError("chunk frame shorter than its id")
    return (*_CHUNK_ID.unpack_from(payload), bytes(payload[_CHUNK_ID.size :]))


def encode_height(height: int) -> bytes:
    return _HEIGHT.pack(height)


def decode_height(payload: bytes) -> int:
    if len(payload) != _HEIGHT.size:
        raise StateSyncError(f"a height is {_HEIGHT.size} bytes, got {len(payload)}")
    height: int = _HEIGHT.unpack(payload)[0]
    return height


@dataclass(frozen=True)
class LightBlock:
    header: Header
    commit: Commit
    validators: tuple[Validator, ...]

    def encode(self) -> bytes:
        vals = b"".join(_VALIDATOR.pack(v.pub_key, v.power) for v in self.validators)
        return _HEIGHT.pack(self.header.height) + encode_length_prefixed(
            [self.header.encode(), self.commit.to_wire(), vals]
        )

    @staticmethod
    def decode(payload: bytes) -> LightBlock:
        if len(payload) < _HEIGHT.size:
            raise StateSyncError("light block frame shorter than its height")
        try:
            parts = decode_length_prefixed(payload[_HEIGHT.size :], "part", "light block")
            if len(parts) != 3:
                raise StateSyncError("a light block is header, commit and validators")
            head, com, vals = parts
            if len(head) > MAX_HEADER_BYTES:
                raise StateSyncError("light block header too large")
            if len(vals) % _VALIDATOR.size or len(vals) // _VALIDATOR.size > MAX_VALIDATORS:
                raise StateSyncError("light block validator list is malformed")
            validators = tuple(
                Validator(*_VALIDATOR.unpack_from(vals, i))
                for i in range(0, len(vals), _VALIDATOR.size)
            )
            lb = LightBlock(Header.decode(head), Commit.from_wire(com), validators)
        except (WireError, BlockError) as exc:
            raise StateSyncError(f"light block does not decode: {exc}") from exc
        if lb.header.height != _HEIGHT.unpack_from(payload)[0]:
            raise StateSyncError("light block frame height differs from its header")
        return lb


# --- serving ----------------------------------------------------------------------------------
@dataclass
class RequestLimits:
    """Requests a node answers per peer: a token bucket per (peer, kind): ``burst`` at once,
    then ``per_s`` a second. What a peer sends beyond that is dropped and counted."""

    snapshots_per_s: float = 1.0
    snapshots_burst: int = 2
    chunks_per_s: float = 16.0
    chunks_burst: int = 16
    light_per_s: float = 8.0
    light_burst: int = 8

    def bucket(self, kind: int) -> tuple[float, int]:
        return {
            K_SNAPSHOTS_REQ: (self.snapshots_per_s, self.snapshots_burst),
            K_CHUNK_REQ: (self.chunks_per_s, self.chunks_burst),
            K_LIGHT_REQ: (self.light_per_s, self.light_burst),
        }[kind]


class SnapshotServer:
    """Answers state-sync requests from the node's snapshots and stored blocks."""

    def __init__(
        self,
        snapshots: SnapshotStore,
        light_block: Callable[[int], LightBlock | None],
        send: Callable[[bytes, int, bytes], object],
        limits: RequestLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.snapshots, self.light_block, self.send = snapshots, light_block, send
        self.limits = limits or RequestLimits()
        self.clock = clock
        self._tokens: dict[tuple[bytes, int], tuple[float, float]] = {}
        self.served = 0
        self.refused = 0

    def _admit(self, peer: bytes, kind: int) -> bool:
        rate, burst = self.limits.bucket(kind)
        now = self.clock()
        tokens, last = self._tokens.get((peer, kind), (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._tokens[(peer, kind)] = (tokens, now)
            return False
        self._tokens[(peer, kind)] = (tokens - 1.0, now)
        return True

    def on_request(self, peer: bytes, kind: int, payload: bytes) -> None:
        # decode first: a malformed request is the peer's error (the transport ends the link)
        if kind == K_SNAPSHOTS_REQ:
            if payload:
                raise StateSyncError("a snapshot request carries no payload")
        elif kind == K_CHUNK_REQ:
            height, fmt, index = decode_chunk_request(payload)
        elif kind == K_LIGHT_REQ:
            height = decode_height(payload)
        else:
            raise StateSyncError(f"not a state-sync request kind: {kind}")
        if not self._admit(peer, kind):
            self.refused += 1
            return
        self.served += 1
        if kind == K_SNAPSHOTS_REQ:
            self.send(peer, K_SNAPSHOTS, encode_offer(self.snapshots.manifests()))
        elif kind == K_CHUNK_REQ:
            m = self.snapshots.get(height)
            chunk = None if m is None or m.format != fmt else self.snapshots.chunk(height, index)
            # an empty chunk says "not kept (any more)": the syncing node moves on at once
            # instead of waiting out its timeout (a snapshot may be pruned while it is fetched)
            self.send(peer, K_CHUNK, encode_chunk(height, fmt, index, chunk or b""))
        else:
            lb = self.light_block(height)
            if lb is not None:
                self.send(peer, K_LIGHT, lb.encode())


# --- syncing ----------------------------------------------------------------------------------
@dataclass
class StateSyncConfig:
    trust_height: int
    trust_hash: bytes
    discovery_s: float = 1.0  # how long offers are collected before choosing
    request_timeout_s: float = 3.0
    timeout_s: float = 120.0  # give up (the node exits; an operator looks)
    max_in_flight: int = 4  # chunk requests outstanding at once
    # The most snapshot bytes the node holds while it fetches one snapshot. The root can only be
    # checked once every chunk is in, and a manifest's chunk hashes are the offering peer's word,
    # so without this a peer could make the node hold MAX_CHUNKS x MAX_CHUNK_BYTES (16 GiB).
    max_snapshot_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.max_snapshot_bytes < 1:
            raise StateSyncError("state_sync.max_snapshot_bytes must be >= 1")
        if self.trust_height < 1:
            raise StateSyncError("state_sync.trust_height must be >= 1")
        if len(self.trust_hash) != 32:
            raise StateSyncError("state_sync.trust_hash must be 32 bytes (64 hex digits)")


@dataclass
class Restored:
    """A verified snapshot: the state after ``manifest.height`` and the headers around it."""

    manifest: Manifest
    chunks: list[bytes]
    state: dict[bytes, bytes]
    header: Header  # height h (its hash is the next header's prev_block_hash)
    next_header: Header  # height h + 1, light-client verified
    next_validators: tuple[Validator, ...]  # the set that signed h + 1


@dataclass
class SyncStats:
    offers: int = 0
    banned: dict[str, str] = field(default_factory=dict)  # peer hex -> why
    refused_manifests: int = 0
    chunks_fetched: int = 0
    chunks_refetched: int = 0
    bytes_held: int = 0  # verified chunk bytes of the last snapshot fetched


class PeerLinks(Protocol):
    """What the syncer needs of the node's transport."""

    def send(self, peer: bytes, kind: int, payload: bytes) -> bool: ...

    def connected(self) -> Iterable[bytes]: ...


class StateSyncer:
    """The client side: one run per node start, on the node's transport."""

    def __init__(
        self,
        chain_id: str,
        transport: PeerLinks,
        config: StateSyncConfig,
        check_consensus: Callable[[Manifest, Header, Header], str | None] | None = None,
    ):
        self.chain_id, self.transport, self.config = chain_id, transport, config
        self.check_consensus = check_consensus
        self.offers: dict[bytes, list[Manifest]] = {}
        self.banned: set[bytes] = set()
        self.bad_manifests: set[bytes] = set()
        # heights whose header h + 1 no peer served verified: tried after all other offers (an
        # honest snapshot at the chain's tip verifies a block later; a height far in the future
        # never does, and each try waits out every peer's request timeout)
        self.unverified_heights: set[int] = set()
        self.stats = SyncStats()
        self._waiting: dict[tuple[Any, ...], asyncio.Future[Any]] = {}

    # --- inbound ---------------------------------------------------------------------------
    def on_frame(self, peer: bytes, kind: int, payload: bytes) -> None:
        """Responses from peers; requests and consensus traffic wait until the node runs."""
        if kind not in RESPONSE_KINDS or peer in self.banned:
            return
        try:
            if kind == K_SNAPSHOTS:
                offered = [
                    m
                    for m in decode_offer(payload)
                    if m.chain_id == self.chain_id and m.height >= self.config.trust_height
                ]
                self.offers[peer] = offered
                self.stats.offers += 1
                return
            if kind == K_CHUNK:
                height, fmt, index, chunk = decode_chunk(payload)
                self._resolve((peer, "chunk", height, fmt, index), chunk)
                return
            lb = LightBlock.decode(payload)
            self._resolve((peer, "light", lb.header.height), lb)
        except (StateSyncError, ValueError) as exc:
            self._ban(peer, f"undecodable state-sync frame: {exc}")

    def _resolve(self, key: tuple[Any, ...], value: object) -> None:
        fut = self._waiting.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _ban(self, peer: bytes, why: str) -> None:
        if peer not in self.banned:
            log.warning("state sync: dropping peer %s: %s", peer.hex()[:16], why)
            self.banned.add(peer)
            self.stats.banned[peer.hex()] = why
        self.offers.pop(peer, None)
        for key in [k for k in self._waiting if k[0] == peer]:
            fut = self._waiting.pop(key)
            if not fut.done():
                fut.set_result(None)

    async def _request(self, peer: bytes, kind: int, payload: bytes, key: tuple[Any, ...]) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        if not self.transport.send(peer, kind, payload):
            self._waiting.pop(key, None)
            return None
        try:
            return await asyncio.wait_for(fut, self.config.request_timeout_s)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(key, None)

    def _peers(self) -> list[bytes]:
        return [p for p in self.transport.connected() if p not in self.banned]

    # --- light client ----------------------------------------------------------------------
    async def _light(self, height: int, peers: list[bytes]) -> tuple[bytes, LightBlock]:
        for p in peers:
            lb = await self._request(p, K_LIGHT_REQ, encode_height(height), (p, "light", height))
            if lb is not None:
                return p, lb
        raise StateSyncError(f"no peer served the header of height {height}")

    async def verify_headers(self, height: int) -> tuple[Header, Header, tuple[Validator, ...]]:
        """Headers ``height`` and ``height + 1``, the latter verified from the trusted header
        by the light client (a skip, or bisection when the set changed too much)."""
        cfg = self.config
        while True:
            peers = self._peers()
            if not peers:
                raise StateSyncError("no peer left to verify headers with")
            p, tlb = await self._light(cfg.trust_height, peers)
            th = tlb.header
            why = None
            if th.height != cfg.trust_height or th.hash() != cfg.trust_hash:
                why = "its header at the trusted height is not the trusted hash"
            elif validator_set_hash(tlb.validators) != th.validators_hash:
                why = "the validator set it offers is not the trusted header's"
            else:
                why = tlb.commit.check(self.chain_id, tlb.validators, cfg.trust_hash, th.height)
            if why is not None:
                self._ban(p, why)
                continue
            lc = LightClient(self.chain_id, tlb.validators, th.height)
            lc.trusted = TrustedState(
                th.height, tlb.validators, cfg.trust_hash, th.next_validators_hash
            )
            try:
                nxt = await self._verified(lc, height + 1)
            except LightClientError as exc:
                raise StateSyncError(f"header {height + 1} does not verify: {exc}") from exc
            if height == th.height:
                return th, nxt.header, nxt.validators
            for p in self._peers():
                try:
                    _, lb = await self._light(height, [p])
                except StateSyncError:
                    continue  # silent: ask the next peer
                if lb.header.hash() == nxt.header.prev_block_hash:
                    return lb.header, nxt.header, nxt.validators
                self._ban(p, f"its header {height} is not the one header {height + 1} links")
            raise StateSyncError(f"no peer served the header {height} that {height + 1} links")

    async def _verified(self, lc: LightClient, height: int) -> LightBlock:
        """A light block of ``height`` accepted by ``lc``: a skip first, then bisection."""
        for p in self._peers():
            try:
                _, lb = await self._light(height, [p])
            except StateSyncError:
                continue  # silent: ask the next peer
            try:
                lc.verify_header(lb.header, lb.commit, lb.validators)
                return lb
            except LightClientError as exc:
                if "cannot skip" not in str(exc):
                    self._ban(p, f"header {height}: {exc}")
                    continue
            # The set changed too much to skip: bisect, on a copy of the trusted state (a peer
            # that fails half-way must not leave its headers trusted).
            try:
                return await self._bisect(lc, p, lb)
            except LightClientError as exc:
                self._ban(p, str(exc))
            except StateSyncError:
                continue
        raise LightClientError(f"no peer served a header {height} that verifies")

    async def _bisect(self, lc: LightClient, p: bytes, target: LightBlock) -> LightBlock:
        """CometBFT's bisection: when the trusted set cannot vouch for a header, verify the
        header half-way to it first, then try again from there. An honest chain needs
        O(log n) headers; a header no honest set signed fails at most O(log n) headers later,
        adjacent to the last trusted one. (Walking every height instead let one peer with one
        forged header make the node verify every header since the trusted height.)"""
        step_lc = LightClient(self.chain_id, lc.trusted.validators, lc.trusted.height)
        step_lc.trusted = lc.trusted
        pending = [target]
        while pending:
            lb = pending[-1]
            h = lb.header.height
            try:
                step_lc.verify_header(lb.header, lb.commit, lb.validators)
            except LightClientError as exc:
                mid = (step_lc.trusted.height + h) // 2
                if "cannot skip" not in str(exc) or mid == step_lc.trusted.height:
                    raise LightClientError(f"header {h}: {exc}") from exc
                _, mid_lb = await self._light(mid, [p])
                pending.append(mid_lb)
                continue
            pending.pop()
        return target

    # --- snapshots -------------------------------------------------------------------------
    def _candidates(self) -> list[tuple[Manifest, list[bytes]]]:
        """Offered snapshots, newest first, the most widely offered first at one height; those
        at a height whose header did not verify last."""
        by_hash: dict[bytes, tuple[Manifest, list[bytes]]] = {}
        for peer, manifests in self.offers.items():
            if peer in self.banned:
                continue
            for m in manifests:
                mh = m.hash()
                if mh not in self.bad_manifests:
                    by_hash.setdefault(mh, (m, []))[1].append(peer)
        return sorted(
            by_hash.values(),
            key=lambda e: (e[0].height in self.unverified_heights, -e[0].height, -len(e[1])),
        )

    async def fetch_chunks(self, m: Manifest, peers: list[bytes]) -> list[bytes]:
        chunks: list[bytes | None] = [None] * len(m.chunk_hashes)
        gate = asyncio.Semaphore(self.config.max_in_flight)
        keeping = list(peers)  # peers that still keep the snapshot
        held = 0  # bytes of verified chunks held (bounded by max_snapshot_bytes)

        async def one(i: int) -> None:
            nonlocal held
            async with gate:
                for attempt in range(3 * len(peers)):
                    live = [p for p in keeping if p not in self.banned]
                    if not live:
                        raise StateSyncError(f"no peer keeps snapshot {m.height} any more")
                    p = live[(i + attempt) % len(live)]
                    data = await self._request(
                        p,
                        K_CHUNK_REQ,
                        encode_chunk_request(m.height, m.format, i),
                        (p, "chunk", m.height, m.format, i),
                    )
                    if attempt:
                        self.stats.chunks_refetched += 1
                    if data is None:
                        continue  # timed out: ask another peer
                    if not data:  # pruned since it was offered
                        if p in keeping:
                            keeping.remove(p)
                        continue
                    try:
                        check_chunk(m, i, data)
                    except SnapshotError as exc:
                        self._ban(p, str(exc))
                        continue
                    if held + len(data) > self.config.max_snapshot_bytes:
                        raise SnapshotTooLarge(
                            f"snapshot {m.height} holds more than max_snapshot_bytes "
                            f"({self.config.max_snapshot_bytes})"
                        )
                    held += len(data)
                    self.stats.bytes_held = held
                    chunks[i] = data
                    self.stats.chunks_fetched += 1
                    return
                raise StateSyncError(f"chunk {i} could not be fetched")

        try:
            async with asyncio.TaskGroup() as tasks:  # one failure cancels the other fetches
                for i in range(len(chunks)):
                    tasks.create_task(one(i))
        except* StateSyncError as failed:
            raise failed.exceptions[0] from None  # its own type (SnapshotTooLarge says more)
        return [c for c in chunks if c is not None]

    async def run(self) -> Restored:
        deadline = time.monotonic() + self.config.timeout_s
        last_problem = "no snapshot offered yet"
        while time.monotonic() < deadline:
            for p in self._peers():
                self.transport.send(p, K_SNAPSHOTS_REQ, b"")
            await asyncio.sleep(self.config.discovery_s)
            for m, peers in self._candidates():
                try:
                    return await self._try(m, peers)
                except (StateSyncError, SnapshotError) as exc:
                    last_problem = f"snapshot {m.height}: {exc}"
                    log.warning("state sync: %s", last_problem)
        raise StateSyncError(f"state sync timed out: {last_problem}")

    async def _try(self, m: Manifest, peers: list[bytes]) -> Restored:
        try:
            header, nxt, vals = await self.verify_headers(m.height)
        except StateSyncError:
            self.unverified_heights.add(m.height)
            raise
        if m.app_hash != nxt.app_hash:
            self.bad_manifests.add(m.hash())
            self.stats.refused_manifests += 1
            for p in peers:
                self._ban(p, f"offered a snapshot {m.height} whose app hash is not the chain's")
            raise StateSyncError("the manifest's app hash is not the verified header's")
        if self.check_consensus is not None:
            why = self.check_consensus(m, header, nxt)
            if why is not None:
                self.bad_manifests.add(m.hash())
                self.stats.refused_manifests += 1
                for p in peers:
                    self._ban(p, f"snapshot {m.height}: {why}")
                raise StateSyncError(why)
        try:
            chunks = await self.fetch_chunks(m, peers)
        except SnapshotTooLarge:
            # Not tried again in this run. Its peers are not dropped: an honest snapshot larger
            # than this node's budget looks the same (the operator raises the budget).
            self.bad_manifests.add(m.hash())
            self.stats.refused_manifests += 1
            raise
        try:
            state = rebuild(m, chunks)
        except SnapshotError as exc:
            # Every chunk matched the manifest's hashes, so the manifest itself is false (chunk
            # hashes made up under the chain's real app hash): no honest node serves one.
            self.bad_manifests.add(m.hash())
            self.stats.refused_manifests += 1
            for p in peers:
                self._ban(p, f"snapshot {m.height} does not rebuild: {exc}")
            raise
        return Restored(m, chunks, state, header, nxt, vals)


__all__ = [
    "K_CHUNK",
    "K_CHUNK_REQ",
    "K_LIGHT",
    "K_LIGHT_REQ",
    "K_SNAPSHOTS",
    "K_SNAPSHOTS_REQ",
    "LightBlock",
    "RequestLimits",
    "Restored",
    "SnapshotServer",
    "SnapshotTooLarge",
    "StateSyncConfig",
    "StateSyncError",
    "StateSyncer",
    "frame_limits",
]
