import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridledger.chain import merkle


def rfc6962(leaves):
    """The recursive definition of RFC 6962 §2.1, as an independent reference."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962(leaves[:k]) + rfc6962(leaves[k:])).digest()


@given(st.lists(st.binary(max_size=8), max_size=40))
def test_root_matches_rfc6962(leaves):
    assert merkle.root(leaves) == rfc6962(leaves)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 13, 32, 33])
def test_every_audit_path_verifies_and_tampering_fails(n):
    leaves = [f"leaf{i}".encode() for i in range(n)]
    hashes = [merkle.leaf_hash(x) for x in leaves]
    root = merkle.root(leaves)
    for i in range(n):
        path = merkle.audit_path(hashes, i)
        assert merkle.verify_inclusion(leaves[i], i, n, path, root)
        assert not merkle.verify_inclusion(b"other", i, n, path, root)
        if n > 1:
            assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, path, root)
        if path:
            bad = [bytes(32), *path[1:]]
            assert not merkle.verify_inclusion(leaves[i], i, n, bad, root)


def test_leaf_and_node_domains_differ():
    # a 64-byte leaf equal to two child hashes must not collide with the inner node
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.root([a + b]) != merkle.root([b"a", b"b"])
