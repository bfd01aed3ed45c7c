"""The state root: a two-level Merkle tree over all key/value pairs, updated incrementally.

Keys are spread over ``2**BUCKET_BITS`` buckets by the first bits of SHA-256(key). A bucket's root
is the RFC 6962 root over its leaves sorted by key; the state root is the RFC 6962 root over all
bucket roots (a perfect binary tree, so one changed bucket costs ``BUCKET_BITS`` hashes to
propagate). Leaf = ``0x00 || len(key) u32 || key || SHA-256(value)``: a proof reveals value hashes
of a key's bucket neighbours, never their values.

Why this shape: recomputing one sorted tree over the whole state costs O(N) hashes per block
(~100 ms at 100k keys in Python); a 256-deep sparse Merkle tree costs 256 hashes per changed key.
Here a block that changes k keys costs about k * (bucket size + BUCKET_BITS) hashes, and a proof
of presence or absence is simply "the bucket's (key, value-hash) list + the top path"
(bench/ledger.py measures the update cost).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from gridledger.chain import merkle

BUCKET_BITS = 16  # 65,536 buckets: ~1.5 keys each at 100k keys; 16 hashes per path
N_BUCKETS = 1 << BUCKET_BITS
_EMPTY_BUCKET_LEAF = merkle.leaf_hash(merkle.EMPTY_ROOT)


def bucket_of(key: bytes) -> int:
    d = sha256(key).digest()
    return ((d[0] << 8) | d[1]) >> (16 - BUCKET_BITS)


def entry_hash(key: bytes, value_hash: bytes) -> bytes:
    return sha256(b"\x00" + struct.pack(">I", len(key)) + key + value_hash).digest()


class StateTree:
    def __init__(self) -> None:
        self._buckets: list[dict[bytes, bytes]] = [{} for _ in range(N_BUCKETS)]
        # levels[0] are the leaf hashes of bucket roots; levels[-1] == [state root]
        # an empty tree has one hash per level, shared by all its nodes: build it in O(depth)
        self._levels: list[list[bytes]] = []
        empty, width = _EMPTY_BUCKET_LEAF, N_BUCKETS
        while width >= 1:
            self._levels.append([empty] * width)
            empty, width = merkle.node_hash(empty, empty), width // 2
        self._dirty: set[int] = set()

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def set(self, key: bytes, value: bytes) -> None:
        b = bucket_of(key)
        self._buckets[b][key] = entry_hash(key, sha256(value).digest())
        self._dirty.add(b)

    def delete(self, key: bytes) -> None:
        b = bucket_of(key)
        if self._buckets[b].pop(key, None) is not None:
            self._dirty.add(b)

    def _bucket_root(self, b: int) -> bytes:
        entries = self._buckets[b]
        return merkle.root_of_hashes([entries[k] for k in sorted(entries)])

    def root(self) -> bytes:
        if self._dirty:
            dirty = self._dirty
            lvl0 = self._levels[0]
            for b in dirty:
                lvl0[b] = merkle.leaf_hash(self._bucket_root(b))
            idx = dirty
            for depth in range(1, len(self._levels)):
                below, here = self._levels[depth - 1], self._levels[depth]
                idx = {i >> 1 for i in idx}
                for i in idx:
                    here[i] = merkle.node_hash(below[2 * i], below[2 * i + 1])
            self._dirty = set()
        return self._levels[-1][0]

    def proof(self, key: bytes) -> StateProof:
        self.root()
        b = bucket_of(key)
        path, i = [], b
        for depth in range(len(self._levels) - 1):
            path.append(self._levels[depth][i ^ 1])
            i >>= 1
        return StateProof(key, b, tuple(sorted(self._buckets[b].items())), tuple(path))


@dataclass(frozen=True)
class StateProof:
    """Proof of one key's value (or absence) against a state root.

    ``entries`` lists (key, leaf hash) of every key in the bucket; the checker recomputes the
    key's own leaf from the claimed value, so presence, value and absence are all proved.
    """

    key: bytes
    bucket: int
    entries: tuple[tuple[bytes, bytes], ...]
    top_path: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "entries": [[k.hex(), h.hex()] for k, h in self.entries],
            "key": self.key.hex(),
            "top_path": [p.hex() for p in self.top_path],
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> StateProof:
        return StateProof(
            bytes.fromhex(d["key"]),
            int(d["bucket"]),
            tuple((bytes.fromhex(k), bytes.fromhex(h)) for k, h in d["entries"]),
            tuple(bytes.fromhex(p) for p in d["top_path"]),
        )

    def check(self, value: bytes | None, state_root: bytes) -> str | None:
        """None when the proof shows ``key`` -> ``value`` (None: absent) under ``state_root``."""
        if bucket_of(self.key) != self.bucket:
            return "key does not belong to the proof's bucket"
        keys = [k for k, _ in self.entries]
        if keys != sorted(set(keys)):
            return "bucket entries are not sorted and unique"
        if any(bucket_of(k) != self.bucket for k in keys):
            return "bucket entries include a key from another bucket"
        found = dict(self.entries).get(self.key)
        if value is None:
            if found is not None:
                return "key is present, proof claimed absence"
        else:
            if found is None:
                return "key is absent from its bucket"
            if found != entry_hash(self.key, sha256(value).digest()):
                return "value does not match the committed leaf"
        bucket_root = merkle.root_of_hashes([h for _, h in self.entries])
        got = merkle.root_from_path(
            merkle.leaf_hash(bucket_root), self.bucket, N_BUCKETS, self.top_path
        )
        if got != state_root:
            return "proof does not lead to the state root"
        return None
