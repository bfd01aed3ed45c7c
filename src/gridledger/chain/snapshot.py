"""State snapshots for state sync: a canonical chunked format, a manifest, and the files on disk.

A snapshot of height ``h`` is the whole state after block ``h``, every (key, value) pair in
byte order of the key, cut into chunks of about ``chunk_bytes``; a chunk is the
``u32 length | item`` list (``chain/wire.py``) of ``key, value, key, value, ...``. Two nodes
with the same state at ``h`` produce the same chunks, so the same chunk hashes and manifest.

The manifest names the height, the format, the chain, the app hash (the state root after
``h``, which the header of ``h + 1`` carries), the SHA-256 of each chunk, and the engine's
validator sets of ``h`` and ``h + 1`` with their proposer priorities (``consensus``): a node
that restores the state needs them to follow the proposer rotation, and priorities are under no
hash (the syncing node checks the members and powers against the light-client-verified
headers; docs/consensus.md says what a lying peer can still do with priorities).

A restoring node checks each chunk against its hash as it arrives (:func:`check_chunk`), then
rebuilds the state and its root from all chunks (:func:`rebuild`): keys must be strictly
increasing across the whole snapshot, and the root must be the manifest's app hash, which the
node compared with a light-client-verified header before fetching anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridledger.chain import encoding
from gridledger.chain.statetree import StateTree
from gridledger.chain.wire import WireError, decode_length_prefixed, encode_length_prefixed

FORMAT = 1
DEFAULT_CHUNK_BYTES = 1024 * 1024
# The wire bound of a chunk: a chunk holds items up to ``chunk_bytes`` and then at most one
# more, and no state value comes near this (transactions are at most 32 KiB; records are
# built from them). A state with a larger item cannot be snapshotted (SnapshotError).
MAX_CHUNK_BYTES = 4 * 1024 * 1024
MAX_CHUNKS = 4096  # 16 GiB of state at the largest chunks: the manifest's bound
MAX_MANIFEST_BYTES = 64 * 1024 + MAX_CHUNKS * 70  # json fields + a hex hash per chunk
MAX_VALIDATORS = 1000
# A snapshot's height h must leave h + 1 (the header a syncing node verifies) a block height:
# heights are at most 2^63 - 1 everywhere (the API, the u64 wire fields).
MAX_HEIGHT = 2**63 - 2


class SnapshotError(ValueError):
    """A snapshot, manifest or chunk that is malformed or does not verify (says why)."""


@dataclass(frozen=True)
class Manifest:
    height: int
    format: int
    chain_id: str
    app_hash: bytes
    chunk_hashes: tuple[bytes, ...]
    consensus: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "app_hash": self.app_hash.hex(),
            "chain_id": self.chain_id,
            "chunk_hashes": [h.hex() for h in self.chunk_hashes],
            "consensus": self.consensus,
            "format": self.format,
            "height": self.height,
        }

    def encode(self) -> bytes:
        return encoding.encode(self.to_json())

    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @staticmethod
    def decode(raw: bytes) -> Manifest:
        """Parse a manifest from a peer; any departure from the format is a SnapshotError."""
        if len(raw) > MAX_MANIFEST_BYTES:
            raise SnapshotError(f"manifest of {len(raw)} bytes exceeds {MAX_MANIFEST_BYTES}")
        try:
            d = encoding.decode(raw)
            if not isinstance(d, dict) or set(d) != {
                "app_hash",
                "chain_id",
                "chunk_hashes",
                "consensus",
                "format",
                "height",
            }:
                raise SnapshotError("manifest fields are not the format's")
            hashes = d["chunk_hashes"]
            if not isinstance(hashes, list) or not 1 <= len(hashes) <= MAX_CHUNKS:
                raise SnapshotError(f"a manifest lists 1..{MAX_CHUNKS} chunk hashes")
            m = Manifest(
                height=d["height"],
                format=d["format"],
                chain_id=d["chain_id"],
                app_hash=encoding.hex_bytes(d["app_hash"], "app_hash", 32),
                chunk_hashes=tuple(encoding.hex_bytes(h, "chunk hash", 32) for h in hashes),
                consensus=d["consensus"],
            )
        except encoding.EncodingError as exc:
            raise SnapshotError(f"manifest does not decode: {exc}") from exc
        # type(), not isinstance: JSON true is a bool, and a bool is an int equal to 1 in Python
        if type(m.height) is not int or not 1 <= m.height <= MAX_HEIGHT:
            raise SnapshotError(f"manifest height must be an integer in 1..{MAX_HEIGHT}")
        if type(m.format) is not int or m.format != FORMAT:
            raise SnapshotError(f"unknown snapshot format {m.format!r}")
        if not isinstance(m.chain_id, str) or not isinstance(m.consensus, dict):
            raise SnapshotError("manifest chain_id or consensus has the wrong type")
        return m


def encode_chunks(
    items: Iterable[tuple[bytes, bytes]], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[bytes]:
    """Cut ``items`` (sorted by key) into chunks of about ``chunk_bytes`` (at least one chunk)."""
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise SnapshotError(f"chunk_bytes must be in 1..{MAX_CHUNK_BYTES}")
    chunks: list[bytes] = []
    cur: list[bytes] = []
    size = 0
    last: bytes | None = None
    for k, v in items:
        if last is not None and k <= last:
            raise SnapshotError("snapshot items are not in strictly increasing key order")
        last = k
        item = 8 + len(k) + len(v)
        if item > MAX_CHUNK_BYTES // 2:
            raise SnapshotError(f"state item {k[:40]!r} of {item} bytes is too large to chunk")
        if cur and size + item > chunk_bytes:
            chunks.append(encode_length_prefixed(cur))
            cur, size = [], 0
        cur += [k, v]
        size += item
    chunks.append(encode_length_prefixed(cur))
    return chunks


def chunk_hash(chunk: bytes) -> bytes:
    return hashlib.sha256(chunk).digest()


def check_chunk(manifest: Manifest, index: int, chunk: bytes) -> None:
    """Raise SnapshotError unless ``chunk`` is chunk ``index`` of ``manifest``."""
    if not 0 <= index < len(manifest.chunk_hashes):
        raise SnapshotError(f"chunk index {index} outside 0..{len(manifest.chunk_hashes) - 1}")
    if len(chunk) > MAX_CHUNK_BYTES:
        raise SnapshotError(f"chunk of {len(chunk)} bytes exceeds {MAX_CHUNK_BYTES}")
    if chunk_hash(chunk) != manifest.chunk_hashes[index]:
        raise SnapshotError(f"chunk {index} does not match its hash in the manifest")


def rebuild(manifest: Manifest, chunks: list[bytes]) -> dict[bytes, bytes]:
    """The state the chunks hold, after checking every chunk, the key order and the root."""
    if len(chunks) != len(manifest.chunk_hashes):
        raise SnapshotError(f"{len(chunks)} chunks for a manifest of {len(manifest.chunk_hashes)}")
    state: dict[bytes, bytes] = {}
    tree = StateTree()
    last: bytes | None = None
    for i, chunk in enumerate(chunks):
        check_chunk(manifest, i, chunk)
        try:
            items = decode_length_prefixed(chunk, "state item", f"chunk {i}")
        except WireError as exc:
            raise SnapshotError(str(exc)) from exc
        if len(items) % 2:
            raise SnapshotError(f"chunk {i} holds a key without its value")
        for j in range(0, len(items), 2):
            k, v = items[j], items[j + 1]
            if last is not None and k <= last:
                raise SnapshotError(f"chunk {i}: keys are not strictly increasing")
            last = k
            state[k] = v
            tree.set(k, v)
    if tree.root() != manifest.app_hash:
        raise SnapshotError("the rebuilt state root is not the manifest's app hash")
    return state


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SnapshotStore:
    """The snapshots a node keeps: ``<dir>/<height>/manifest.json`` and ``chunk-<i>`` files.

    A snapshot directory is complete once its manifest exists (written last), so a crash while
    writing leaves at most an incomplete directory, which is ignored and pruned.
    """

    def __init__(self, directory: Path | str, keep: int = 2):
        if keep < 1:
            raise SnapshotError("a node that takes snapshots keeps at least one")
        self.dir = Path(directory)
        self.keep = keep
        self._manifests: dict[int, Manifest] = {}
        # created by the first snapshot kept: a node that never takes or restores one has none
        for sub in self.dir.iterdir() if self.dir.is_dir() else ():
            path = sub / "manifest.json"
            if sub.is_dir() and sub.name.isdigit() and path.exists():
                try:
                    self._manifests[int(sub.name)] = Manifest.decode(path.read_bytes())
                except (SnapshotError, OSError):
                    continue  # a damaged snapshot is not offered; the next prune removes it

    def manifests(self) -> list[Manifest]:
        """Kept snapshots, newest first."""
        return [self._manifests[h] for h in sorted(self._manifests, reverse=True)]

    def get(self, height: int) -> Manifest | None:
        return self._manifests.get(height)

    def save(self, manifest: Manifest, chunks: list[bytes]) -> None:
        """Keep a snapshot (own or received), then prune to the ``keep`` newest."""
        if len(chunks) != len(manifest.chunk_hashes):
            raise SnapshotError("chunks and manifest disagree")
        sub = self.dir / str(manifest.height)
        if sub.exists():
            shutil.rmtree(sub)
        sub.mkdir(parents=True)
        for i, c in enumerate(chunks):
            _write_atomic(sub / f"chunk-{i}", c)
        _write_atomic(sub / "manifest.json", manifest.encode())
        self._manifests[manifest.height] = manifest
        self.prune()

    def take(
        self,
        height: int,
        chain_id: str,
        app_hash: bytes,
        items: Iterable[tuple[bytes, bytes]],
        consensus: dict[str, Any],
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> Manifest:
        chunks = encode_chunks(items, chunk_bytes)
        m = Manifest(height, FORMAT, chain_id, app_hash, tuple(map(chunk_hash, chunks)), consensus)
        self.save(m, chunks)
        return m

    def chunk(self, height: int, index: int) -> bytes | None:
        m = self._manifests.get(height)
        if m is None or not 0 <= index < len(m.chunk_hashes):
            return None
        try:
            return (self.dir / str(height) / f"chunk-{index}").read_bytes()
        except OSError:
            return None

    def chunks(self, height: int) -> list[bytes]:
        m = self._manifests[height]
        out = []
        for i in range(len(m.chunk_hashes)):
            chunk = self.chunk(height, i)
            if chunk is None:
                raise SnapshotError(f"snapshot {height} is missing chunk files")
            out.append(chunk)
        return out

    def prune(self) -> None:
        for h in sorted(self._manifests, reverse=True)[self.keep :]:
            del self._manifests[h]
        for sub in self.dir.iterdir():
            if sub.is_dir() and (not sub.name.isdigit() or int(sub.name) not in self._manifests):
                shutil.rmtree(sub, ignore_errors=True)


def consensus_json(valsets: dict[int, Any], pending: dict[int, Any]) -> dict[str, Any]:
    """The engine's ``consensus_state.json`` document for a snapshot (strings as keys)."""
    doc: dict[str, Any] = json.loads(
        json.dumps(
            {
                "valsets": {str(h): s for h, s in valsets.items()},
                "pending": {str(h): u for h, u in pending.items()},
            }
        )
    )
    return doc


__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "FORMAT",
    "MAX_CHUNK_BYTES",
    "MAX_HEIGHT",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "SnapshotError",
    "SnapshotStore",
    "check_chunk",
    "chunk_hash",
    "consensus_json",
    "encode_chunks",
    "rebuild",
]
