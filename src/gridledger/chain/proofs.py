"""Proofs that can be checked offline: a transaction (and its result) in a block, a state value.

A transaction proof carries the transaction, its audit path in the tree its type belongs to, the
block header and its commit; when the next block exists, also the result's audit path and the
next header (whose ``last_results_hash`` commits to the result and whose ``prev_block_hash`` links
to the block). :func:`verify_proof` needs nothing but the proof and, to anchor it, a trusted block
hash or the validator set (e.g. from the genesis).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gridledger.chain import encoding, merkle
from gridledger.chain.abci import Validator
from gridledger.chain.block import TREES, Commit, Header, result_leaf, split_trees
from gridledger.chain.statetree import StateProof
from gridledger.chain.store import Store, TxRecord
from gridledger.chain.tx import TxError, decode_tx

if TYPE_CHECKING:
    from gridledger.chain.app import LedgerApp


class ProofError(LookupError):
    """No such transaction or key."""


def classifier(genesis_raw: bytes) -> Callable[[bytes], str]:
    """Tx -> Merkle tree name from the genesis' contract list alone (no state needed)."""
    from gridledger.chain.contracts import build_registry
    from gridledger.chain.genesis import parse_genesis

    types = build_registry(parse_genesis(genesis_raw).contracts).types

    def classify(raw: bytes) -> str:
        try:
            t = types.get(decode_tx(raw, max_bytes=len(raw)).type)
        except TxError:
            return "other"
        return t.tree if t else "other"

    return classify


def tx_proof(store: Store, txid: bytes, classify: Callable[[bytes], str]) -> dict[str, Any]:
    rec = store.get_tx(txid)
    if rec is None:
        raise ProofError(f"transaction {txid.hex()} is not committed")
    sb = store.get_block(rec.height)
    if sb is None:
        raise ProofError(f"block {rec.height} of transaction {txid.hex()} is not stored")
    block = sb.block()
    raw = block.txs[rec.index]
    tree = classify(raw)
    leaves = split_trees(block.txs, classify)[tree]
    idx = leaves.index(raw)
    proof: dict[str, Any] = {
        "commit": sb.commit().to_json(),
        "header": block.header.to_json(),
        "index": idx,
        "kind": "tx",
        "path": [p.hex() for p in merkle.audit_path([merkle.leaf_hash(x) for x in leaves], idx)],
        "tree": tree,
        "tree_size": len(leaves),
        "tx": raw.hex(),
    }
    nxt = store.get_block(rec.height + 1)
    if nxt is not None:
        results = [(r.code, r.log) for r in _results(store, block.txs)]
        hashes = [merkle.leaf_hash(result_leaf(c, lg)) for c, lg in results]
        proof["result"] = {
            "code": rec.code,
            "index": rec.index,
            "log": rec.log,
            "next_header": nxt.block().header.to_json(),
            "path": [p.hex() for p in merkle.audit_path(hashes, rec.index)],
            "size": len(results),
        }
    return proof


def _results(store: Store, txs: Sequence[bytes]) -> list[TxRecord]:
    from gridledger.chain.tx import tx_id

    out: list[TxRecord] = []
    for raw in txs:
        rec = store.get_tx(tx_id(raw))
        if rec is None:
            raise ProofError(f"transaction {tx_id(raw).hex()} of a stored block has no result")
        out.append(rec)
    return out


def verify_proof(
    proof: dict[str, Any],
    trusted_block_hash: bytes | None = None,
    validators: Sequence[Validator] | None = None,
) -> tuple[bool, str]:
    """(True, summary) when the proof holds; (False, what is wrong) otherwise."""
    try:
        if proof.get("kind") == "state":
            return _verify_state(proof, trusted_block_hash)
        if proof.get("kind") != "tx":
            return False, "unknown proof kind"
        header = Header.from_json(proof["header"])
        raw = bytes.fromhex(proof["tx"])
        tx = decode_tx(raw, max_bytes=len(raw))
        if proof["tree"] not in TREES:
            return False, "unknown tree"
        got = merkle.root_from_path(
            merkle.leaf_hash(raw),
            proof["index"],
            proof["tree_size"],
            [bytes.fromhex(p) for p in proof["path"]],
        )
        if got is None or got != header.root_of(proof["tree"]):
            return False, f"transaction is not in the header's {proof['tree']} tree"
        if not tx.signature_ok():
            return False, "transaction signature does not verify"
        block_hash = header.hash()
        if trusted_block_hash is not None and block_hash != trusted_block_hash:
            return False, "header is not the trusted block"
        if validators is not None:
            problem = Commit.from_json(proof["commit"]).check(
                header.chain_id, validators, block_hash, header.height
            )
            if problem is not None:
                return False, f"commit: {problem}"
        msg = f"tx {tx.id.hex()} ({tx.type}) is in block {header.height} {block_hash.hex()}"
        if "result" in proof:
            r = proof["result"]
            nh = Header.from_json(r["next_header"])
            if nh.prev_block_hash != block_hash:
                return False, "next header does not link to the block"
            got = merkle.root_from_path(
                merkle.leaf_hash(result_leaf(r["code"], r["log"])),
                r["index"],
                r["size"],
                [bytes.fromhex(p) for p in r["path"]],
            )
            if got != nh.last_results_hash:
                return False, "result is not committed by the next header"
            msg += f"; result code {r['code']}"
        return True, msg
    except (KeyError, TypeError, ValueError, TxError) as exc:
        return False, f"malformed proof: {exc}"


def state_proof(store: Store, app: LedgerApp, key: str) -> dict[str, Any]:
    q = app.query(f"state/{key}", prove=True)
    proof: dict[str, Any] = {
        "height": q.height,
        "key": key,
        "kind": "state",
        "proof": encoding.decode(q.proof),
        "state_root": app.app_hash.hex(),
        "value": q.value.hex() if q.code == 0 else None,
    }
    nxt = store.get_block(q.height + 1)
    if nxt is not None:
        proof["header"] = nxt.block().header.to_json()
    return proof


def _verify_state(proof: dict[str, Any], trusted_block_hash: bytes | None) -> tuple[bool, str]:
    sp = StateProof.from_json(proof["proof"])
    if sp.key != proof["key"].encode():
        return False, "proof is for another key"
    value = None if proof["value"] is None else bytes.fromhex(proof["value"])
    root = bytes.fromhex(proof["state_root"])
    problem = sp.check(value, root)
    if problem is not None:
        return False, problem
    anchored = ""
    if "header" in proof:
        h = Header.from_json(proof["header"])
        if h.app_hash != root or h.height != proof["height"] + 1:
            return False, "header does not commit to this state root"
        if trusted_block_hash is not None and h.hash() != trusted_block_hash:
            return False, "header is not the trusted block"
        anchored = f", committed by header {h.height}"
    elif trusted_block_hash is not None:
        return False, "no header in the proof to compare with the trusted block"
    what = "absent" if value is None else "present"
    return True, f"key {proof['key']!r} {what} in state after height {proof['height']}{anchored}"
