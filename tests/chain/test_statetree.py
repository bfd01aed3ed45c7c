import random
from hashlib import sha256

from gridledger.chain import merkle
from gridledger.chain.statetree import N_BUCKETS, StateTree, bucket_of, entry_hash


def reference_root(kv: dict[bytes, bytes]) -> bytes:
    """Rebuild from scratch with the documented construction."""
    buckets = [[] for _ in range(N_BUCKETS)]
    for k in sorted(kv):
        buckets[bucket_of(k)].append(entry_hash(k, sha256(kv[k]).digest()))
    return merkle.root([merkle.root_of_hashes(b) for b in buckets])


def test_incremental_root_equals_rebuild_and_proofs_hold():
    rng = random.Random(7)
    tree, kv = StateTree(), {}
    for _step in range(5):
        for _ in range(300):
            k = f"bal/utoken/{rng.randrange(800)}".encode()
            if rng.random() < 0.2 and k in kv:
                del kv[k]
                tree.delete(k)
            else:
                kv[k] = str(rng.randrange(10**6)).encode()
                tree.set(k, kv[k])
        root = tree.root()
        assert root == reference_root(kv)
        for k in list(kv)[:20]:
            proof = tree.proof(k)
            assert proof.check(kv[k], root) is None
            assert proof.check(kv[k] + b"0", root) == "value does not match the committed leaf"
            assert proof.check(None, root) == "key is present, proof claimed absence"
        absent = b"no/such/key"
        proof = tree.proof(absent)
        assert proof.check(None, root) is None
        assert proof.check(b"1", root) == "key is absent from its bucket"
        assert proof.check(None, bytes(32)) == "proof does not lead to the state root"


def test_proof_with_dropped_entry_fails():
    tree = StateTree()
    keys = [f"k{i}".encode() for i in range(20000)]
    for k in keys:
        tree.set(k, b"v")
    root = tree.root()
    proof = next(p for p in map(tree.proof, keys) if len(p.entries) > 1)
    k = proof.key
    # hiding a neighbour changes the bucket root: absence cannot be faked by omission
    other = next(e for e in proof.entries if e[0] != k)
    forged = type(proof)(
        proof.key, proof.bucket, tuple(e for e in proof.entries if e != other), proof.top_path
    )
    assert forged.check(b"v", root) == "proof does not lead to the state root"
