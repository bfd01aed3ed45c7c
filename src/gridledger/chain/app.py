"""The ledger application: the ABCI-shaped state machine over the contract registry.

Every transaction passes the same gate, in this order (each failure has its own result code,
``chain/codes.py``): canonical form and size, chain id, known type, Ed25519 signature, sender is
a member, member active, role (or grant) allows the type, sequence number is exactly the next one,
payload valid. Then the type's contract executes. A gate failure changes nothing; an execution
failure changes nothing but consumes the sequence number (as in Cosmos/Ethereum, so the sender's
later transactions stay valid).

``check_tx`` runs the same gate and execution against a *check state*: committed state plus the
effects of transactions already admitted to the mempool since the last commit, so the next
expected sequence number counts pending transactions, and a second transfer that would overdraw
is refused at admission. After ``commit`` the check state is reset; the mempool re-checks what it
still holds (:class:`gridledger.chain.mempool.Mempool` does this).

Thread safety: one lock serialises every call that reads or changes state; signature checks (the
expensive, pure part) run before taking it and are cached by transaction id.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedSet

from gridledger.chain import codes, encoding
from gridledger.chain.abci import (
    AppInfo,
    BaseApplication,
    BlockLimits,
    CheckTxResult,
    Event,
    ExecTxResult,
    FinalizeBlockResult,
    ProposalInfo,
    QueryResult,
    Validator,
)
from gridledger.chain.block import results_hash
from gridledger.chain.contracts import Context, ContractError, Registry, State, build_registry
from gridledger.chain.contracts.base import Overlay, scannable
from gridledger.chain.contracts.membership import Member, member_key, new_member
from gridledger.chain.contracts.roles import may_send
from gridledger.chain.contracts.tokens import DENOMS, balance_key, mint
from gridledger.chain.contracts.validators import VALIDATORS_KEY
from gridledger.chain.genesis import Genesis, parse_genesis
from gridledger.chain.merkle import EMPTY_ROOT
from gridledger.chain.statetree import StateTree
from gridledger.chain.store import Store
from gridledger.chain.tx import Tx, TxError, decode_tx, tx_id

# results a tx can get without consuming its sequence number: the same bytes could pass the
# gate again later, so such a committed tx is recorded in state (gate_failed_key)
_GATE_CODES = (
    codes.MALFORMED,
    codes.BAD_SIGNATURE,
    codes.WRONG_CHAIN,
    codes.BAD_SEQUENCE,
    codes.NOT_MEMBER,
    codes.ROLE_NOT_ALLOWED,
    codes.UNKNOWN_TYPE,
    codes.INVALID_PAYLOAD,
    codes.TOO_LARGE,
    codes.DUPLICATE,
    codes.MEMBER_INACTIVE,
)
_SIG_CACHE_MAX = 200_000  # txids: ~20 MB at most
_PRECHECK_CACHE_MAX = 50_000  # decoded txs: bounded memory; a miss only costs a re-decode
_MEMBER_CACHE_MAX = 20_000  # parsed membership records: a miss only costs a JSON parse
_UNCOMMITTED_MAX = 400_000  # txids known not to be committed: ~50 MB at most; a miss is a query


def seq_key(pub_hex: str) -> str:
    """The next sequence number a sender's transaction must carry (replay protection)."""
    return f"seq/{pub_hex}"


def gate_failed_key(txid_hex: str) -> str:
    """A committed transaction that failed the gate without using its sequence number.

    Its bytes could pass the gate later (the sender becomes a member, is reinstated, gets the
    role, or its sequence number catches up), so the chain records it, under the app hash, and
    a block that carries it again is invalid. With the sequence numbers this makes "a
    transaction id is committed at most once" a rule on state alone: a node restored from a
    state snapshot (without the transaction index of older blocks) judges blocks exactly as a
    node that replayed from genesis. Honest mempools never admit such transactions; only a
    proposer can put them in a block, at most ``max_block_txs`` per block.
    """
    return f"txgate/{txid_hex}"


class AppError(RuntimeError):
    """The application was driven out of order (a consensus bug, not bad input)."""


@dataclass
class _Pending:
    height: int
    time_ms: int
    txs: list[bytes]
    txids: list[bytes]
    overlay: Overlay
    results: list[ExecTxResult]
    app_hash: bytes
    results_hash: bytes


class LedgerApp(BaseApplication):
    """The ledger's state machine: an :class:`~gridledger.chain.abci.Application`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.RLock()
        self._committed: dict[bytes, bytes] = {}
        # the committed scannable keys in order, for State.scan (contracts' ordered indices)
        self._ordered: SortedSet[bytes] = SortedSet()
        self._tree = StateTree()
        self._sig_ok: set[bytes] = set()
        # stateless gate results by wire bytes: a tx is decoded and verified once, not at each
        # of admission, proposal, validation and execution (profiled: 6 decodes per tx before)
        self._prechecked: dict[bytes, tuple[Tx | None, int, str]] = {}
        # payload validation is pure (contracts/base.py): its verdict per txid, so a tx is
        # validated once, not at each of admission, re-check and execution
        self._payload_log: dict[bytes, str | None] = {}
        self._members: dict[bytes, Member] = {}  # stored record bytes -> parsed
        # txids a query found not committed. A txid only becomes committed through commit(),
        # which drops it from here, so a hit is exact; it spares the SQLite index lookup that
        # admission, proposal, validation and execution each made for every tx (profiled:
        # ~20 µs per lookup, 2-4 per tx per node)
        self._uncommitted: dict[bytes, None] = {}
        # txid -> (its sender's sequence key, its sequence number), for the prechecked txs:
        # committed_among answers from it without the store when it can (bounded with
        # _prechecked; a miss only means a store lookup)
        self._seq_of: dict[bytes, tuple[bytes, int]] = {}
        # validator sets after the last two heights: block h is signed by the set after h-2
        self._sets_after: dict[int, list[dict[str, Any]]] = {}
        self._check_overlay = Overlay()
        self._pending: _Pending | None = None
        self.genesis: Genesis | None = None
        self.registry: Registry = build_registry()
        self.params: dict[str, Any] = {}
        self.height = 0
        self.app_hash = b""
        self.last_results_hash = EMPTY_ROOT
        self.last_time_ms = 0
        raw = store.meta("genesis", None, writer=True)
        if raw is not None:
            self._load(bytes.fromhex(raw))

    # --- loading -------------------------------------------------------------------------------
    def _load(self, genesis_raw: bytes) -> None:
        self.genesis = parse_genesis(genesis_raw)
        self.registry = build_registry(self.genesis.contracts)
        self.params = self.genesis.params
        self._prechecked.clear()  # results depend on the chain id and registry just loaded
        self._payload_log.clear()
        self._uncommitted.clear()
        self._seq_of.clear()
        recent = self.store.meta("valsets_recent", None, writer=True) or {}
        self._sets_after = {int(h): v for h, v in recent.items()}
        for k, v in self.store.state_items(writer=True):
            k, v = bytes(k), bytes(v)
            self._committed[k] = v
            self._tree.set(k, v)
            if scannable(k):
                self._ordered.add(k)
        self.height = self.store.height(writer=True)
        self.app_hash = bytes.fromhex(self.store.meta("app_hash", writer=True))
        self.last_results_hash = bytes.fromhex(self.store.meta("last_results_hash", writer=True))
        self.last_time_ms = int(self.store.meta("last_time_ms", 0, writer=True))
        if self._tree.root() != self.app_hash:
            raise AppError("stored state does not match the stored state root: database damaged")

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id if self.genesis else ""

    def validators(self) -> list[Validator]:
        """The validator set in the committed state (it signs from two heights on)."""
        raw = self._committed.get(VALIDATORS_KEY.encode())
        if raw is None:
            return []
        return [Validator(bytes.fromhex(v["pub_key"]), v["power"]) for v in encoding.decode(raw)]

    def validators_for(self, height: int) -> list[Validator]:
        """The set that signs block ``height``: the state's set after block ``height - 2``.

        Updates from ``finalize_block(H)`` take effect at ``H + 2``, as in CometBFT and the
        Tendermint engine (``consensus/tendermint/ledger.py``), so every engine and ``verify``
        agree on who signs each height.
        """
        after = max(height - 2, 0)
        vals = self._sets_after.get(after)
        if vals is None:
            raise AppError(
                f"validator set for height {height} is not known at height {self.height}"
            )
        return [Validator(bytes.fromhex(v["pub_key"]), v["power"]) for v in vals]

    def classify_tx(self, raw: bytes) -> str:
        """The Merkle tree a transaction belongs to (declared by its type's contract)."""
        tx = self._precheck(bytes(raw))[0]
        if tx is None:
            return "other"
        t = self.registry.types.get(tx.type)
        return t.tree if t else "other"

    # --- ABCI ----------------------------------------------------------------------------------
    def info(self) -> AppInfo:
        with self.lock:
            return AppInfo(
                self.height,
                self.app_hash,
                self.chain_id,
                self.last_results_hash,
                self.last_time_ms,
            )

    def block_limits(self) -> BlockLimits:
        return BlockLimits(
            self.params.get("max_block_bytes", 8 << 20), self.params.get("max_block_txs", 20_000)
        )

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self.lock:
            yield

    def precheck_tx(self, raw: bytes) -> CheckTxResult:
        parsed, code, log = self._precheck(bytes(raw))
        if parsed is None:
            return CheckTxResult(code, log)
        return CheckTxResult(code, log, parsed.sender, parsed.seq)

    def init_chain(self, genesis: bytes) -> bytes:
        with self.lock:
            if self.genesis is not None:
                if self.genesis.raw != genesis:
                    raise AppError("this database was initialised with a different genesis")
                return bytes.fromhex(self.store.meta("genesis_app_hash", writer=True))
            g = parse_genesis(genesis)
            registry = build_registry(g.contracts)
            overlay = Overlay()
            state = State({}, overlay)
            ctx = Context(state, g.chain_id, 0, g.doc["genesis_time_ms"], params=g.params)
            for m in g.doc["members"]:
                state.set(
                    member_key(m["pub_key"]),
                    new_member(m["role"], 0, m.get("name", ""), m.get("bus")),
                )
            for v in g.doc["validators"]:
                if state.get(member_key(v["pub_key"])) is None:
                    state.set(member_key(v["pub_key"]), new_member("validator", 0, "validator"))
            state.set(
                VALIDATORS_KEY,
                sorted(
                    ({"power": v["power"], "pub_key": v["pub_key"]} for v in g.doc["validators"]),
                    key=lambda v: v["pub_key"],
                ),
            )
            state.set("chain/params", g.params)
            for b in g.doc["balances"]:
                mint(ctx, b["denom"], b["account"], b["amount"])
            for c in registry.contracts:
                if c.genesis is not None:
                    c.genesis(ctx, g.doc)
            state.commit_tx()
            values = {k: v for k, v in overlay.items() if v is not None}
            tree = StateTree()
            for key, value in values.items():
                tree.set(key, value)
            root = tree.root()
            self.store.init_genesis(
                {
                    "app_hash": root.hex(),
                    "chain_id": g.chain_id,
                    "genesis": genesis.hex(),
                    "genesis_app_hash": root.hex(),
                    "height": 0,
                    "last_results_hash": EMPTY_ROOT.hex(),
                    "last_time_ms": g.doc["genesis_time_ms"],
                    "valsets_recent": {"0": encoding.decode(values[VALIDATORS_KEY.encode()])},
                },
                values,
            )
            self._committed, self._tree, self._ordered = {}, StateTree(), SortedSet()
            self._load(genesis)
            return root

    def _sig_verified(self, tx: Tx) -> bool:
        txid = tx.id
        if txid in self._sig_ok:
            return True
        if not tx.signature_ok():
            return False
        if len(self._sig_ok) > _SIG_CACHE_MAX:
            self._sig_ok.clear()
        self._sig_ok.add(txid)
        return True

    def committed_among(self, txids: set[bytes]) -> set[bytes]:
        """The subset of ``txids`` already committed (the store is asked only about unknown ids)."""
        with self.lock:
            known = self._uncommitted
            ask = {t for t in txids if t not in known}
            if not ask:
                return set()
            # Exact without the store: a transaction whose sequence number is not below its
            # sender's committed next one was never committed. A committed result outside
            # _GATE_CODES consumed its number (sequence numbers only grow: only _execute writes
            # them), and a committed gate failure whose number was still unused is recorded in
            # state (gate_failed_key; one below it has a number below the sender's next). Spares
            # the store lookup for gossiped batches (profiled: one SQLite query per batch, ~2 %
            # of a validator's CPU under load).
            committed, seq_of = self._committed, self._seq_of
            for t in list(ask):
                entry = seq_of.get(t)
                if (
                    entry is not None
                    and entry[1] >= int(committed.get(entry[0], b"0"))
                    and gate_failed_key(t.hex()).encode() not in committed
                ):
                    ask.discard(t)
                    known[t] = None
            found = self.store.committed_among(ask) if ask else set()
            for t in ask:
                if t not in found:
                    known[t] = None
            while len(known) > _UNCOMMITTED_MAX:
                del known[next(iter(known))]
            return found

    def tx_committed(self, txid: bytes) -> bool:
        return bool(self.committed_among({txid}))

    def _member_record(self, raw: bytes) -> Member:
        """The parsed membership record, by its exact stored bytes: every execution (admission,
        re-check, block) parsed the sender's record again (profiled: ~1/6 of ``_execute``).
        Keyed by the bytes, so a changed record is a miss, never a stale hit; contracts only
        read ``ctx.member`` (they change a member through ``state.set``, which writes bytes)."""
        hit = self._members.get(raw)
        if hit is None:
            hit = encoding.decode_trusted(raw)
            if len(self._members) >= _MEMBER_CACHE_MAX:
                self._members.clear()
            self._members[raw] = hit
        return hit

    def _payload_problem(self, tx: Tx, ttype: Any) -> str | None:
        hit = self._payload_log.get(tx.id, 0)  # 0: not checked yet (None is "no problem")
        if not isinstance(hit, int):
            return hit
        try:
            ttype.validate(tx.payload)
            log = None
        except ContractError as exc:
            log = f"{tx.type}: {exc.log}"
        if len(self._payload_log) > _PRECHECK_CACHE_MAX:
            self._payload_log.clear()
        self._payload_log[tx.id] = log
        return log

    def _precheck(self, raw: bytes) -> tuple[Tx | None, int, str]:
        """Stateless part of the gate: form, size, chain id, type, signature."""
        hit = self._prechecked.get(raw)
        if hit is not None:
            return hit
        res = self._precheck_uncached(raw)
        if len(self._prechecked) > _PRECHECK_CACHE_MAX:
            self._prechecked.clear()
            self._seq_of.clear()
        self._prechecked[raw] = res
        tx = res[0]
        if tx is not None and res[1] == codes.OK:
            self._seq_of[tx.id] = (seq_key(tx.sender.hex()).encode(), tx.seq)
        return res

    def _precheck_uncached(self, raw: bytes) -> tuple[Tx | None, int, str]:
        limit = self.params.get("max_tx_bytes", 32 * 1024)
        if len(raw) > limit:
            return None, codes.TOO_LARGE, f"transaction of {len(raw)} bytes exceeds {limit}"
        try:
            tx = decode_tx(raw, limit)
        except TxError as exc:
            return None, codes.MALFORMED, str(exc)
        if tx.chain_id != self.chain_id:
            return (
                tx,
                codes.WRONG_CHAIN,
                f"chain id {tx.chain_id!r}, this chain is {self.chain_id!r}",
            )
        ttype = self.registry.types.get(tx.type)
        if ttype is None:
            return tx, codes.UNKNOWN_TYPE, f"unknown transaction type {tx.type!r}"
        if len(raw) > ttype.max_payload_bytes + 1024:
            return tx, codes.TOO_LARGE, f"{tx.type} payload exceeds {ttype.max_payload_bytes} bytes"
        if not self._sig_verified(tx):
            return tx, codes.BAD_SIGNATURE, "signature does not verify for the sender's key"
        return tx, codes.OK, ""

    def _execute(
        self,
        tx: Tx,
        state: State,
        height: int,
        time_ms: int,
        updates: list[Validator] | None = None,
        record_events: bool = True,
    ) -> tuple[int, str, tuple[Event, ...]]:
        """Run one transaction: (code, log, events).

        A failure at the gate (membership, role, sequence, payload) changes nothing; a failure
        in the contract consumes the sequence number and discards the contract's writes.
        """
        sender = tx.sender.hex()
        raw_member = state.get_raw(member_key(sender).encode())
        if raw_member is None:
            return codes.NOT_MEMBER, f"sender {sender[:16]}… is not a registered member", ()
        member = self._member_record(raw_member)
        if member["status"] != "active":
            return codes.MEMBER_INACTIVE, f"sender is {member['status']}", ()
        ttype = self.registry.types[tx.type]
        if not may_send(member, tx.type, ttype.roles):
            return (
                codes.ROLE_NOT_ALLOWED,
                f"role {member['role']} may not send {tx.type}",
                (),
            )
        sender_seq = seq_key(sender)
        expected = state.get_int(sender_seq)
        if tx.seq != expected:
            why = "already used (replay)" if tx.seq < expected else "skips ahead"
            return (
                codes.BAD_SEQUENCE,
                f"expected sequence {expected}, got {tx.seq}: {why}",
                (),
            )
        bad_payload = self._payload_problem(tx, ttype)
        if bad_payload is not None:
            return codes.INVALID_PAYLOAD, bad_payload, ()
        ctx = Context(
            state,
            self.chain_id,
            height,
            time_ms,
            sender,
            member,
            tx.id.hex(),
            tx.type,
            self.params,
            tx_types=self.registry.types,
            record_events=record_events,
        )
        try:
            ttype.execute(ctx, tx.payload)
            code, log = codes.OK, ""
        except ContractError as exc:
            code, log = exc.code, exc.log
        except (MemoryError, RecursionError):
            raise  # depends on the machine, not the input: stop rather than diverge
        except Exception as exc:  # a contract bug: deterministic, recorded, never a node crash
            code, log = codes.INTERNAL, f"contract error {type(exc).__name__}"
        if code != codes.OK:
            state.discard_tx()
            state.set_int(sender_seq, expected + 1)
            return code, log, ()
        state.set_int(sender_seq, expected + 1)
        if updates is not None:
            updates.extend(ctx.validator_updates)
        return codes.OK, "", tuple(ctx.events)

    def check_tx(self, tx: bytes) -> CheckTxResult:
        raw = bytes(tx)
        parsed, code, log = self._precheck(raw)
        if parsed is None or code != codes.OK:
            return CheckTxResult(
                code, log, parsed.sender if parsed else b"", parsed.seq if parsed else 0
            )
        with self.lock:
            if gate_failed_key(parsed.id.hex()).encode() in self._committed:
                return CheckTxResult(
                    codes.DUPLICATE,
                    "transaction is already committed (it failed there)",
                    parsed.sender,
                    parsed.seq,
                )
            state = State(self._committed, self._check_overlay, self._ordered)
            code, log, _ = self._execute(
                parsed, state, self.height + 1, self.last_time_ms, record_events=False
            )
            if code == codes.OK:
                state.commit_tx()
            else:
                state.discard_tx()
                # a replayed committed tx fails the sequence check; name it as what it is (an
                # up-front index lookup per admission cost ~25% of throughput, profiled)
                if code == codes.BAD_SEQUENCE and self.tx_committed(parsed.id):
                    rec = self.store.get_tx(parsed.id, writer=True)
                    code = codes.DUPLICATE
                    at = f" at height {rec.height}" if rec is not None else ""
                    log = f"transaction is already committed{at}"
            return CheckTxResult(code, log, parsed.sender, parsed.seq)

    def prepare_proposal(self, txs: list[bytes], max_bytes: int, info: ProposalInfo) -> list[bytes]:
        limit = min(max_bytes, self.params.get("max_block_bytes", max_bytes))
        max_txs = self.params.get("max_block_txs", 20_000)
        out: list[bytes]
        seen: set[bytes]
        out, size, seen = [], 0, set()
        for raw in txs:
            if len(out) >= max_txs or size + len(raw) > limit:
                break
            parsed, code, _ = self._precheck(raw)
            if parsed is None or code != codes.OK or parsed.id in seen:
                continue
            seen.add(parsed.id)
            out.append(raw)
            size += len(raw)
        # a committed tx in a proposal makes it invalid (process_proposal): leave such out
        with self.lock:
            return [
                raw
                for raw in out
                if (tx := self._precheck(raw)[0]) is not None and self._replay_problem(tx) is None
            ]

    def replays_among(self, txs: list[bytes]) -> set[bytes]:
        """Ids of ``txs`` that repeat a committed transaction (:meth:`_replay_problem`)."""
        out = set()
        with self.lock:
            for raw in txs:
                parsed = self._precheck(bytes(raw))[0]
                if parsed is not None and self._replay_problem(parsed) is not None:
                    out.add(parsed.id)
        return out

    def _replay_problem(self, tx: Tx) -> str | None:
        """Why ``tx`` repeats a committed transaction (None: it does not), judged on the
        committed state alone, never on the transaction index: a transaction that executed used
        its sender's sequence number, one that failed the gate is recorded under
        :func:`gate_failed_key`. So a node restored from a state snapshot judges alike."""
        if gate_failed_key(tx.id.hex()).encode() in self._committed:
            return "it failed the gate in an earlier block"
        used = self._committed.get(seq_key(tx.sender.hex()).encode())
        if used is not None and tx.seq < int(used):
            return f"its sender's sequence number {tx.seq} is used"
        return None

    def process_proposal(self, txs: list[bytes], info: ProposalInfo) -> bool:
        with self.lock:
            return self.proposal_problem(txs, info) is None

    def proposal_problem(self, txs: list[bytes], info: ProposalInfo) -> str | None:
        """Why a proposed block is invalid (None: valid). Bad signatures, malformed or duplicate
        transactions make the whole block invalid; wrong sequence numbers etc. are results."""
        if info.height != self.height + 1:
            return f"proposal for height {info.height}, expected {self.height + 1}"
        if info.time_ms <= self.last_time_ms:
            return f"block time {info.time_ms} is not after {self.last_time_ms}"
        limits = self.block_limits()
        if len(txs) > limits.max_txs:
            return "too many transactions"
        if sum(len(t) for t in txs) > limits.max_bytes:
            return "block too large"
        seen: set[bytes] = set()
        for i, raw in enumerate(txs):
            parsed, code, log = self._precheck(raw)
            if parsed is None or code != codes.OK:
                return f"tx {i}: {log}"
            if parsed.id in seen:
                return f"tx {i}: duplicate transaction"
            seen.add(parsed.id)
            replay = self._replay_problem(parsed)
            if replay is not None:
                return f"block repeats an already committed transaction (tx {i}: {replay})"
        return None

    def finalize_block(self, txs: list[bytes], info: ProposalInfo) -> FinalizeBlockResult:
        with self.lock:
            if info.height != self.height + 1:
                raise AppError(
                    f"finalize_block for height {info.height}, expected {self.height + 1}"
                )
            overlay = Overlay()
            state = State(self._committed, overlay, self._ordered)
            results: list[ExecTxResult] = []
            updates: list[Validator] = []
            txids: list[bytes] = []
            seen: set[bytes] = set()
            for raw in txs:
                raw = bytes(raw)
                txid = tx_id(raw)
                txids.append(txid)
                if txid in seen:
                    results.append(ExecTxResult(codes.DUPLICATE, "duplicate transaction"))
                    continue
                seen.add(txid)
                parsed, code, log = self._precheck(raw)
                if (
                    code == codes.OK
                    and parsed is not None
                    and self._replay_problem(parsed) is not None
                ):
                    # only in a block that process_proposal refuses (a replay makes it invalid)
                    results.append(ExecTxResult(codes.DUPLICATE, "duplicate transaction"))
                    continue
                if parsed is not None and code == codes.OK:
                    code, log, events = self._execute(
                        parsed, state, info.height, info.time_ms, updates
                    )
                    if code in _GATE_CODES and parsed.seq >= state.get_int(
                        seq_key(parsed.sender.hex())
                    ):
                        state.set_int(gate_failed_key(txid.hex()), info.height)
                    state.commit_tx()
                else:
                    events = ()
                results.append(ExecTxResult(code, log, events))
            for k, v in overlay.items():
                if v is None:
                    self._tree.delete(k)
                else:
                    self._tree.set(k, v)
            app_hash = self._tree.root()
            rh = results_hash([(r.code, r.log) for r in results])
            self._pending = _Pending(
                info.height,
                info.time_ms,
                [bytes(t) for t in txs],
                txids,
                overlay,
                results,
                app_hash,
                rh,
            )
            return FinalizeBlockResult(tuple(results), tuple(updates), app_hash)

    def commit(self) -> None:
        with self.lock:
            p = self._pending
            if p is None:
                raise AppError("commit without finalize_block")
            block, commit = self.store.take_staged(p.height)
            if list(block.txs) != p.txs:
                raise AppError("the staged block is not the finalized one")
            rows = [
                (
                    txid,
                    p.height,
                    i,
                    r.code,
                    r.log,
                    encoding.encode_trusted(
                        [{"attributes": e.attributes, "type": e.type} for e in r.events]
                    ),
                )
                for i, (txid, r) in enumerate(zip(p.txids, p.results, strict=True))
            ]
            vals_raw = (
                p.overlay.get(VALIDATORS_KEY.encode()) or self._committed[VALIDATORS_KEY.encode()]
            )
            sets_after = {h: v for h, v in self._sets_after.items() if h == p.height - 1}
            sets_after[p.height] = encoding.decode_trusted(vals_raw)
            self.store.commit_height(
                block,
                commit,
                p.overlay,
                rows,
                {
                    "app_hash": p.app_hash.hex(),
                    "last_block_hash": block.hash().hex(),
                    "last_results_hash": p.results_hash.hex(),
                    "last_time_ms": p.time_ms,
                    "valsets_recent": {str(h): v for h, v in sets_after.items()},
                },
            )
            self._sets_after = sets_after
            for k, v in p.overlay.items():
                if v is None:
                    self._committed.pop(k, None)
                else:
                    self._committed[k] = v
            for k in p.overlay.ordered:
                if k in self._committed:
                    self._ordered.add(k)
                else:
                    self._ordered.discard(k)
            self.height, self.app_hash = p.height, p.app_hash
            self.last_results_hash, self.last_time_ms = p.results_hash, p.time_ms
            self._check_overlay = Overlay()
            for txid, raw in zip(p.txids, p.txs, strict=True):
                self._sig_ok.discard(txid)
                self._prechecked.pop(raw, None)
                self._payload_log.pop(txid, None)
                self._uncommitted.pop(txid, None)
                self._seq_of.pop(txid, None)
            self._pending = None

    def query(
        self, path: str, data: bytes = b"", height: int = 0, prove: bool = False
    ) -> QueryResult:
        with self.lock:
            if height not in (0, self.height):
                return QueryResult(
                    codes.NOT_FOUND,
                    log=f"only the latest state is kept; query height 0 or {self.height}",
                    height=self.height,
                )
            if path.startswith("state/"):
                key = path[len("state/") :].encode()
                value = self._committed.get(key)
                proof = encoding.encode(self._tree.proof(key).to_json()) if prove else b""
                code = codes.OK if value is not None else codes.NOT_FOUND
                return QueryResult(
                    code,
                    value or b"",
                    proof,
                    self.height,
                    "" if value is not None else "no such key",
                )
            if path.startswith("account/"):
                who = path[len("account/") :]
                get = self._committed.get
                member = get(member_key(who).encode())
                doc = {
                    "balances": {d: int(get(balance_key(d, who).encode(), b"0")) for d in DENOMS},
                    "member": None if member is None else encoding.decode(member),
                    "seq": int(get(seq_key(who).encode(), b"0")),
                }
                return QueryResult(codes.OK, encoding.encode(doc), height=self.height)
            if path == "validators":
                return QueryResult(
                    codes.OK,
                    self._committed.get(VALIDATORS_KEY.encode(), b"[]"),
                    height=self.height,
                )
            return QueryResult(codes.UNKNOWN_TYPE, log=f"unknown query path {path!r}")

    def next_seq(self, sender_hex: str) -> int:
        """The next sequence number ``check_tx`` will accept from a sender (pending counted)."""
        with self.lock:
            state = State(self._committed, self._check_overlay, self._ordered)
            return state.get_int(seq_key(sender_hex))

    def snapshot_items(self) -> list[tuple[bytes, bytes]]:
        """The committed state, sorted by key (what a state snapshot holds)."""
        with self.lock:
            return sorted(self._committed.items())

    def state_root_from_disk(self) -> bytes:
        """Recompute the state root from the database (audit)."""
        tree = StateTree()
        for k, v in self.store.state_items(writer=False):
            tree.set(bytes(k), bytes(v))
        return tree.root()
