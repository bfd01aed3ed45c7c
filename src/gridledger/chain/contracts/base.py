"""The contract machinery: transaction types, the execution context and the registry.

A contract module declares :class:`TxType` entries: the type name (``contract.action``), the roles
allowed to send it, a payload validator (pure: raises :class:`PayloadError`), the Merkle tree its
records go to, and ``execute(ctx, payload)``: deterministic Python over integers that reads and
writes state through ``ctx`` and raises :class:`ContractError` to fail (its writes are then
discarded; the sender's sequence number is still consumed). No clock but ``ctx.time_ms`` (block
time), no I/O, no randomness, no floats.
"""

from __future__ import annotations

import heapq
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sortedcontainers import SortedSet

from gridledger.chain import codes, encoding
from gridledger.chain.abci import Event, Validator

if TYPE_CHECKING:
    from gridledger.chain.contracts.membership import Member
    from gridledger.chain.genesis import GenesisDoc


class ContractError(Exception):
    """A transaction that fails a contract rule; recorded with ``code`` and ``log``."""

    def __init__(self, code: int, log: str) -> None:
        super().__init__(log)
        self.code = code
        self.log = log


class PayloadError(ContractError):
    def __init__(self, log: str) -> None:
        super().__init__(codes.INVALID_PAYLOAD, log)


class RegistryError(ValueError):
    """Two contracts declare the same type, or a contract module cannot be loaded."""


# execute(ctx, payload): a transaction type's state transition
Execute = Callable[["Context", dict[str, Any]], None]


@dataclass(frozen=True)
class TxType:
    name: str
    roles: frozenset[str]
    validate: Callable[[dict[str, Any]], None]
    execute: Execute
    tree: str = "other"  # active | loss | reactive | other
    max_payload_bytes: int = 4096


@dataclass
class Contract:
    name: str
    tx_types: tuple[TxType, ...]
    # genesis(ctx, genesis_doc): seeds state from the genesis document (optional)
    genesis: Callable[[Context, GenesisDoc], None] | None = None


# Keys under these prefixes are also kept in sorted order (committed state, block overlay), so a
# contract can walk them in key order with State.scan: an index whose keys are its entries.  Only
# these keys pay for it (an O(log n) sorted-set insert or removal per write and ~100 bytes of RAM
# per key); everything else is a plain dict entry.
SCANNABLE_PREFIXES: tuple[bytes, ...] = (b"market/ix/",)


def scannable(key: bytes) -> bool:
    return key.startswith(SCANNABLE_PREFIXES)


class Overlay(dict[bytes, bytes | None]):
    """Pending writes of a block (or of the mempool's check state), key -> value or None for a
    deletion, with the scannable keys among them kept sorted."""

    __slots__ = ("ordered",)

    def __init__(self) -> None:
        super().__init__()
        self.ordered: SortedSet[bytes] = SortedSet()


class State:
    """Read/write view: tx journal -> block overlay -> committed state (bytes keyed by str).

    ``base_ordered`` is the sorted set of the committed state's scannable keys (kept by the
    application); with it and an :class:`Overlay`, :meth:`scan` walks a key range in order."""

    __slots__ = ("_base", "_base_ordered", "_journal", "_overlay")

    def __init__(
        self,
        base: Mapping[bytes, bytes],
        overlay: dict[bytes, bytes | None],
        base_ordered: SortedSet[bytes] | None = None,
    ) -> None:
        self._base = base
        self._overlay = overlay
        self._base_ordered = base_ordered
        self._journal: dict[bytes, bytes | None] = {}

    def get_raw(self, key: bytes) -> bytes | None:
        j = self._journal
        if key in j:
            return j[key]
        o = self._overlay
        if key in o:
            return o[key]
        return self._base.get(key)

    def get(self, key: str) -> Any:
        raw = self.get_raw(key.encode())
        return None if raw is None else encoding.decode_trusted(raw)

    def get_int(self, key: str) -> int:
        raw = self.get_raw(key.encode())
        return 0 if raw is None else int(raw)

    def set(self, key: str, value: Any) -> None:
        self._journal[key.encode()] = encoding.encode(value)

    def set_int(self, key: str, value: int) -> None:
        self._journal[key.encode()] = str(int(value)).encode()

    def delete(self, key: str) -> None:
        self._journal[key.encode()] = None

    def scan(self, lo: str, hi: str) -> Iterator[str]:
        """The present keys ``k`` with ``lo <= k < hi`` (byte order), lazily, in order.

        Both bounds must lie under one of :data:`SCANNABLE_PREFIXES`.  Cost: O(log n) to start
        (a bisection in the committed and in the block's sorted keys, plus a pass over this
        transaction's own writes), then O(1) per key yielded: a caller that stops early pays
        only for what it read.  Keys written by this transaction after the scan started are not
        seen; keys it deleted are skipped."""
        blo, bhi = lo.encode(), hi.encode()
        if not (scannable(blo) and scannable(bhi)):
            raise ValueError(f"scan range [{lo!r}, {hi!r}) is not under a scannable prefix")
        sources: list[Iterable[bytes]] = []
        if self._base_ordered is not None:
            sources.append(self._base_ordered.irange(blo, bhi, inclusive=(True, False)))
        elif self._base:
            raise ValueError("this state view has no sorted keys for its committed state")
        ordered = getattr(self._overlay, "ordered", None)
        if ordered is not None:
            sources.append(ordered.irange(blo, bhi, inclusive=(True, False)))
        else:
            sources.append(sorted(k for k in self._overlay if blo <= k < bhi))
        sources.append(sorted(k for k in self._journal if blo <= k < bhi))
        last = None
        for k in heapq.merge(*sources):
            if k == last:
                continue
            last = k
            if self.get_raw(k) is not None:
                yield k.decode()

    def commit_tx(self) -> None:
        ordered = getattr(self._overlay, "ordered", None)
        if ordered is not None:
            for k in self._journal:
                if k.startswith(SCANNABLE_PREFIXES):
                    ordered.add(k)
        self._overlay.update(self._journal)
        self._journal = {}

    def discard_tx(self) -> None:
        self._journal = {}


@dataclass
class Context:
    """What a contract sees while executing one transaction."""

    state: State
    chain_id: str
    height: int
    time_ms: int
    sender: str = ""  # hex public key
    member: Member | None = None  # sender's membership record
    txid: str = ""
    tx_type: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    validator_updates: list[Validator] = field(default_factory=list)
    # the chain's registry (name -> type): what member.grant checks a permission against
    tx_types: Mapping[str, TxType] = field(default_factory=dict)
    # False for admission checks (check_tx and the mempool's re-check), whose events nobody
    # reads: only a block's execution records them. No contract reads ``events``.
    record_events: bool = True

    @property
    def sender_member(self) -> Member:
        """The sender's membership record: a transaction always has one (the application admits
        only members' transactions); only the genesis context has none."""
        if self.member is None:
            raise ContractError(codes.NOT_MEMBER, "this context has no sender")
        return self.member

    def emit(self, type_: str, **attributes: Any) -> None:
        if self.record_events:
            self.events.append(Event(type_, {k: str(v) for k, v in sorted(attributes.items())}))


class Registry:
    """Tx type name -> :class:`TxType`, built from contracts in a fixed (genesis) order."""

    def __init__(self, contracts: Iterable[Contract] = ()) -> None:
        self.contracts: list[Contract] = []
        self.types: dict[str, TxType] = {}
        for c in contracts:
            self.register(c)

    def register(self, contract: Contract) -> None:
        for t in contract.tx_types:
            if t.name in self.types:
                raise RegistryError(f"tx type {t.name} declared twice (by {contract.name})")
            if t.tree not in ("active", "loss", "reactive", "other"):
                raise RegistryError(f"tx type {t.name}: unknown Merkle tree {t.tree!r}")
        for t in contract.tx_types:
            self.types[t.name] = t
        self.contracts.append(contract)


def load_contract(spec: str) -> Contract:
    """``"package.module"`` (exposing ``CONTRACT``) or ``"package.module:attr"``."""
    mod_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import contract module {mod_name}: {exc}") from exc
    obj = getattr(module, attr or "CONTRACT", None)
    if callable(obj) and not isinstance(obj, Contract):
        obj = obj()
    if not isinstance(obj, Contract):
        raise RegistryError(f"{spec} is not a Contract")
    return obj


# --- payload validation helpers (each names the field that is wrong) ---------------------------
def require_fields(
    p: dict[str, Any], required: Iterable[str], optional: Iterable[str] = ()
) -> None:
    req, opt = set(required), set(optional)
    missing = req - p.keys()
    if missing:
        raise PayloadError(f"payload is missing {sorted(missing)}")
    extra = p.keys() - req - opt
    if extra:
        raise PayloadError(f"payload has unknown fields {sorted(extra)}")


def req_int(p: dict[str, Any], name: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    v = p.get(name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise PayloadError(f"{name} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise PayloadError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def req_key(p: dict[str, Any], name: str) -> str:
    v = p.get(name)
    try:
        encoding.hex_bytes(v, name, 32)
    except encoding.EncodingError as exc:
        raise PayloadError(f"{name} must be a 32-byte public key in lowercase hex") from exc
    return cast(str, v)  # hex_bytes accepts only a str


def req_hash(p: dict[str, Any], name: str) -> str:
    v = p.get(name)
    try:
        encoding.hex_bytes(v, name, 32)
    except encoding.EncodingError as exc:
        raise PayloadError(f"{name} must be a 32-byte hash in lowercase hex") from exc
    return cast(str, v)  # hex_bytes accepts only a str


def req_str(p: dict[str, Any], name: str, max_len: int = 128, choices: Iterable[str] = ()) -> str:
    v = p.get(name)
    if not isinstance(v, str) or len(v) > max_len:
        raise PayloadError(f"{name} must be a string of at most {max_len} characters")
    ch = tuple(choices)
    if ch and v not in ch:
        raise PayloadError(f"{name} must be one of {list(ch)}, got {v!r}")
    return v
