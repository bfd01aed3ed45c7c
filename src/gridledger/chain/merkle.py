"""RFC 6962 / RFC 9162 Merkle trees over SHA-256: leaves 0x00||data, inner nodes 0x01||l||r.

The tree is built bottom-up, pairing neighbours and promoting a lone last node unchanged; this
gives exactly RFC 6962's left-balanced tree (split at the largest power of two below n), which a
test checks against the recursive definition. Audit paths are verified with RFC 9162 §2.1.3.2.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

EMPTY_ROOT = sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """Root over already leaf-hashed entries."""
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        nxt = [
            sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def root(leaves: Sequence[bytes]) -> bytes:
    return root_of_hashes([sha256(b"\x00" + d).digest() for d in leaves])


def audit_path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root (RFC 9162 inclusion proof)."""
    if not 0 <= index < len(hashes):
        raise IndexError(f"leaf {index} outside a tree of {len(hashes)}")
    path: list[bytes] = []
    level = list(hashes)
    i = index
    while len(level) > 1:
        if i % 2:
            path.append(level[i - 1])
        elif i + 1 < len(level):
            path.append(level[i + 1])
        nxt = [
            sha256(b"\x01" + level[j] + level[j + 1]).digest() for j in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        i //= 2
    return path


def root_from_path(leaf_h: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root implied by an audit path, or None if the path has the wrong shape."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf_h
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    data: bytes, index: int, size: int, path: Sequence[bytes], root_h: bytes
) -> bool:
    return root_from_path(leaf_hash(data), index, size, path) == root_h
