"""Blocks: header, body (transactions) and commit (validator signatures), and their hashes.

The header follows CometBFT's execution model: block ``h`` carries the state root (``app_hash``)
and the results hash of block ``h-1``, because a block's own effects are only known once it is
decided and executed. Transactions are committed to by four RFC 6962 trees (seed 000 §II.B):
active-power records, loss records, reactive-power records and everything else; which tree a
transaction belongs to is declared by its contract (``classify`` below).

:class:`Commit` is the one commit class of the project: the Tendermint engine gathers it from its
precommit votes and gossips its binary form (:meth:`Commit.to_wire`), the store keeps its
canonical JSON (:meth:`Commit.encode`), light clients and proofs check it. Sign bytes, the
validator-set hash and the length-prefixed list come from :mod:`gridledger.chain.wire`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gridledger.chain import encoding, merkle
from gridledger.chain.abci import Validator
from gridledger.chain.keys import KeyPair, verify
from gridledger.chain.wire import (
    PRECOMMIT,
    VOTE_WIRE,
    WireError,
    decode_length_prefixed,
    encode_length_prefixed,
    precommit_sign_bytes,
    validator_set_hash,
)

TREES = ("active", "loss", "reactive", "other")
HEADER_DOMAIN = b"gridledger/header/v1\x00"
RESULT_DOMAIN = b"gridledger/result/v1\x00"
HEADER_VERSION = 2  # 2: next_validators_hash
# The binary (block-sync) form of a commit: head, then each precommit in the vote wire layout.
_COMMIT_WIRE_HEAD = struct.Struct(">QI32sH")
_COMMIT_WIRE_VOTE = VOTE_WIRE


class BlockError(ValueError):
    """A block, header or commit that does not decode or does not hold together."""


def hash_header_bytes(header_bytes: bytes) -> bytes:
    return hashlib.sha256(HEADER_DOMAIN + header_bytes).digest()


def genesis_hash(genesis_bytes: bytes) -> bytes:
    """The ``prev_block_hash`` of block 1: ties the chain to its genesis document."""
    return hashlib.sha256(b"gridledger/genesis/v1\x00" + genesis_bytes).digest()


def result_leaf(code: int, log: str) -> bytes:
    return RESULT_DOMAIN + encoding.encode_trusted({"code": code, "log": log})


# Leaf hashes of results by (code, log): most results of a block are the same few, above all
# (0, ""), and each was encoded to JSON and hashed again (profiled: ~7 % of finalize_block).
# Bounded: logs can be unique; when full it is cleared, a miss costs one encode and hash.
_RESULT_LEAF_HASHES: dict[tuple[int, str], bytes] = {}
_RESULT_LEAF_HASHES_MAX = 4096


def results_hash(results: Sequence[tuple[int, str]]) -> bytes:
    memo = _RESULT_LEAF_HASHES
    hashes = []
    for result in results:
        h = memo.get(result)
        if h is None:
            h = merkle.leaf_hash(result_leaf(*result))
            if len(memo) >= _RESULT_LEAF_HASHES_MAX:
                memo.clear()
            memo[result] = h
        hashes.append(h)
    return merkle.root_of_hashes(hashes)


@dataclass(frozen=True)
class TxRoots:
    active: bytes = merkle.EMPTY_ROOT
    loss: bytes = merkle.EMPTY_ROOT
    reactive: bytes = merkle.EMPTY_ROOT
    other: bytes = merkle.EMPTY_ROOT


def split_trees(txs: Sequence[bytes], classify: Callable[[bytes], str]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {t: [] for t in TREES}
    for raw in txs:
        tree = classify(raw)
        out[tree if tree in out else "other"].append(raw)
    return out


def compute_tx_roots(txs: Sequence[bytes], classify: Callable[[bytes], str]) -> TxRoots:
    trees = split_trees(txs, classify)
    return TxRoots(**{t: merkle.root(trees[t]) for t in TREES})


@dataclass(frozen=True)
class Header:
    chain_id: str
    height: int
    time_ms: int
    prev_block_hash: bytes
    proposer: bytes
    num_txs: int
    tx_roots: TxRoots
    app_hash: bytes  # state root after block height-1 (after genesis for height 1)
    last_results_hash: bytes  # results of block height-1
    validators_hash: bytes  # the set that signs this block
    next_validators_hash: bytes  # the set that signs the next block (light clients follow it)
    version: int = HEADER_VERSION

    def to_json(self) -> dict[str, Any]:
        r = self.tx_roots
        return {
            "active_root": r.active.hex(),
            "app_hash": self.app_hash.hex(),
            "chain_id": self.chain_id,
            "height": self.height,
            "last_results_hash": self.last_results_hash.hex(),
            "loss_root": r.loss.hex(),
            "next_validators_hash": self.next_validators_hash.hex(),
            "num_txs": self.num_txs,
            "other_root": r.other.hex(),
            "prev_block_hash": self.prev_block_hash.hex(),
            "proposer": self.proposer.hex(),
            "reactive_root": r.reactive.hex(),
            "time_ms": self.time_ms,
            "validators_hash": self.validators_hash.hex(),
            "version": self.version,
        }

    def encode(self) -> bytes:
        return encoding.encode(self.to_json())

    def hash(self) -> bytes:
        return hash_header_bytes(self.encode())

    def root_of(self, tree: str) -> bytes:
        root: bytes = getattr(self.tx_roots, tree)
        return root

    @staticmethod
    def from_json(d: Any) -> Header:
        keys = [
            "active_root",
            "app_hash",
            "chain_id",
            "height",
            "last_results_hash",
            "loss_root",
            "next_validators_hash",
            "num_txs",
            "other_root",
            "prev_block_hash",
            "proposer",
            "reactive_root",
            "time_ms",
            "validators_hash",
            "version",
        ]
        if not isinstance(d, dict) or sorted(d) != keys:
            raise BlockError(f"header must have the fields {keys}")
        try:
            h32 = {
                k: encoding.hex_bytes(d[k], k, 32) for k in keys if k.endswith(("_root", "hash"))
            }
            proposer = encoding.hex_bytes(d["proposer"], "proposer", 32)
        except encoding.EncodingError as exc:
            raise BlockError(str(exc)) from exc
        for k in ("height", "num_txs", "time_ms", "version"):
            if not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] < 0:
                raise BlockError(f"header field {k} must be a non-negative integer")
        if not isinstance(d["chain_id"], str):
            raise BlockError("header chain_id must be a string")
        return Header(
            d["chain_id"],
            d["height"],
            d["time_ms"],
            h32["prev_block_hash"],
            proposer,
            d["num_txs"],
            TxRoots(h32["active_root"], h32["loss_root"], h32["reactive_root"], h32["other_root"]),
            h32["app_hash"],
            h32["last_results_hash"],
            h32["validators_hash"],
            h32["next_validators_hash"],
            d["version"],
        )

    @staticmethod
    def decode(data: bytes) -> Header:
        try:
            return Header.from_json(encoding.decode(data))
        except encoding.EncodingError as exc:
            raise BlockError(f"header: {exc}") from exc


@dataclass(frozen=True, slots=True)
class CommitSig:
    validator: bytes
    signature: bytes


@dataclass(frozen=True)
class Commit:
    """Precommit signatures of validators for ``block_hash`` at (height, round)."""

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[CommitSig, ...] = field(default_factory=tuple)

    @property
    def block_id(self) -> bytes:
        """The engine's name for the block hash (the id of the value it decided)."""
        return self.block_hash

    @staticmethod
    def from_precommits(
        height: int, round_: int, block_hash: bytes, votes: Iterable[Any]
    ) -> Commit:
        """From the engine's precommit votes; each must be a precommit for this block."""
        sigs = []
        for v in votes:
            if (int(v.type), v.height, v.round, v.block_id) != (
                PRECOMMIT,
                height,
                round_,
                block_hash,
            ):
                raise BlockError("commit holds a vote that is not a precommit for its block")
            sigs.append(CommitSig(v.validator, v.signature))
        return Commit(height, round_, block_hash, tuple(sigs))

    def to_wire(self) -> bytes:
        """The binary form the engine gossips in block sync (~140 bytes per signature)."""
        head = _COMMIT_WIRE_HEAD.pack(
            self.height, self.round, self.block_hash, len(self.signatures)
        )
        return head + b"".join(
            _COMMIT_WIRE_VOTE.pack(
                PRECOMMIT, self.height, self.round, 1, self.block_hash, s.validator, s.signature
            )
            for s in self.signatures
        )

    @staticmethod
    def from_wire(data: bytes) -> Commit:
        hs, vs = _COMMIT_WIRE_HEAD.size, _COMMIT_WIRE_VOTE.size
        if len(data) < hs:
            raise BlockError("commit shorter than its header")
        height, rnd, block_hash, n = _COMMIT_WIRE_HEAD.unpack_from(data)
        if len(data) != hs + n * vs:
            raise BlockError("commit length does not match its vote count")
        sigs = []
        for i in range(n):
            vtype, vh, vr, has_block, bid, validator, sig = _COMMIT_WIRE_VOTE.unpack_from(
                data, hs + i * vs
            )
            if (vtype, vh, vr, has_block, bid) != (PRECOMMIT, height, rnd, 1, block_hash):
                raise BlockError("commit holds a vote that is not a precommit for its block")
            sigs.append(CommitSig(validator, sig))
        return Commit(height, rnd, block_hash, tuple(sigs))

    def to_json(self) -> dict[str, Any]:
        return {
            "block_hash": self.block_hash.hex(),
            "height": self.height,
            "round": self.round,
            "signatures": [
                {"signature": s.signature.hex(), "validator": s.validator.hex()}
                for s in self.signatures
            ],
        }

    def encode(self) -> bytes:
        return encoding.encode(self.to_json())

    @staticmethod
    def decode(data: bytes) -> Commit:
        try:
            return Commit.from_json(encoding.decode(data))
        except encoding.EncodingError as exc:
            raise BlockError(f"commit: {exc}") from exc

    @staticmethod
    def from_json(d: Any) -> Commit:
        try:
            if not isinstance(d, dict) or sorted(d) != [
                "block_hash",
                "height",
                "round",
                "signatures",
            ]:
                raise BlockError("commit must have block_hash, height, round, signatures")
            sigs = tuple(
                CommitSig(
                    encoding.hex_bytes(s["validator"], "validator", 32),
                    encoding.hex_bytes(s["signature"], "signature", 64),
                )
                for s in d["signatures"]
            )
            return Commit(
                d["height"], d["round"], encoding.hex_bytes(d["block_hash"], "block_hash", 32), sigs
            )
        except (encoding.EncodingError, KeyError, TypeError) as exc:
            raise BlockError(f"commit: {exc}") from exc

    @staticmethod
    def sign(
        chain_id: str, height: int, round_: int, block_hash: bytes, keys: Iterable[KeyPair]
    ) -> Commit:
        msg = precommit_sign_bytes(chain_id, height, round_, block_hash)
        return Commit(
            height, round_, block_hash, tuple(CommitSig(k.pub_key, k.sign(msg)) for k in keys)
        )

    def check(
        self, chain_id: str, validators: Sequence[Validator], block_hash: bytes, height: int
    ) -> str | None:
        """None when more than 2/3 of the voting power validly signed; else what is wrong."""
        if self.height != height or self.block_hash != block_hash:
            return f"commit is for height {self.height} block {self.block_hash.hex()[:16]}"
        power = {v.pub_key: v.power for v in validators}
        total = sum(power.values())
        msg = precommit_sign_bytes(chain_id, height, self.round, block_hash)
        signed = 0
        seen: set[bytes] = set()
        for s in self.signatures:
            if s.validator not in power:
                return f"commit signed by non-validator {s.validator.hex()[:16]}"
            if s.validator in seen:
                return f"validator {s.validator.hex()[:16]} signed the commit twice"
            if not verify(s.validator, msg, s.signature):
                return f"bad commit signature from validator {s.validator.hex()[:16]}"
            seen.add(s.validator)
            signed += power[s.validator]
        if 3 * signed <= 2 * total:
            return f"commit carries {signed} of {total} voting power (needs > 2/3)"
        return None


def encode_txs(txs: Sequence[bytes]) -> bytes:
    return encode_length_prefixed(txs)


def decode_txs(data: bytes) -> list[bytes]:
    try:
        return decode_length_prefixed(data, "transaction", "block body")
    except WireError as exc:
        raise BlockError(str(exc)) from exc


@dataclass(frozen=True)
class Block:
    header: Header
    txs: tuple[bytes, ...]

    def hash(self) -> bytes:
        return self.header.hash()

    def check_body(self, classify: Callable[[bytes], str]) -> str | None:
        """None when the body matches the header's count and Merkle roots; else what differs."""
        if self.header.num_txs != len(self.txs):
            return f"header says {self.header.num_txs} txs, body has {len(self.txs)}"
        roots = compute_tx_roots(self.txs, classify)
        for t in TREES:
            if getattr(roots, t) != self.header.root_of(t):
                return f"{t} Merkle root does not match the transactions"
        return None


def make_header(
    chain_id: str,
    height: int,
    time_ms: int,
    prev_block_hash: bytes,
    proposer: bytes,
    txs: Sequence[bytes],
    classify: Callable[[bytes], str],
    app_hash: bytes,
    last_results_hash: bytes,
    validators: Sequence[Validator],
    next_validators: Sequence[Validator],
) -> Header:
    return Header(
        chain_id,
        height,
        time_ms,
        prev_block_hash,
        proposer,
        len(txs),
        compute_tx_roots(txs, classify),
        app_hash,
        last_results_hash,
        validator_set_hash(validators),
        validator_set_hash(next_validators),
    )


__all__ = [
    "Block",
    "BlockError",
    "Commit",
    "CommitSig",
    "Header",
    "TxRoots",
    "compute_tx_roots",
    "genesis_hash",
    "make_header",
    "precommit_sign_bytes",
    "results_hash",
    "validator_set_hash",
]
