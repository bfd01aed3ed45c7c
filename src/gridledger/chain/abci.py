"""The one interface between the state machine (contracts) and consensus, shaped like ABCI 2.0.

Consensus engines (the in-process solo engine, the Tendermint engine) drive an
:class:`Application` and know nothing of transaction types or contracts; the application knows
nothing of votes, rounds or peers.  Calls for one height come in this order::

    prepare_proposal (proposer only) -> process_proposal (every validator)
    -> finalize_block -> commit

``check_tx`` may be called at any time (mempool admission) and must not change committed state.
Times are block times in integer milliseconds since the Unix epoch (UTC), agreed by consensus.

Beyond ABCI's calls, the :class:`Application` protocol names what the engines need to build and
judge ledger blocks (which Merkle tree a transaction belongs to, the validator set of a height,
the block limits, a stateless admission check, which transactions are already committed), so
an engine never reaches into an application's attributes. :class:`BaseApplication` gives the
neutral defaults of the extra calls, as CometBFT's ``BaseApplication`` does for ABCI's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

OK = 0


@dataclass(frozen=True)
class Validator:
    """A validator as consensus sees it: Ed25519 public key (32 bytes) and voting power."""

    pub_key: bytes
    power: int


@dataclass(frozen=True)
class AppInfo:
    last_block_height: int
    last_block_app_hash: bytes
    chain_id: str = ""
    last_results_hash: bytes = b""  # results of the last committed block (the next header's)
    last_block_time_ms: int = 0  # the next block's time must be after this


@dataclass(frozen=True)
class BlockLimits:
    """Consensus parameters a proposer must respect (a larger block is rejected)."""

    max_bytes: int = 8 << 20
    max_txs: int = 20_000


@dataclass(frozen=True)
class CheckTxResult:
    code: int
    log: str = ""
    sender: bytes = b""
    sequence: int = 0

    @property
    def ok(self) -> bool:
        return self.code == OK


@dataclass(frozen=True)
class ProposalInfo:
    """What consensus tells the application about a block being proposed or finalized."""

    height: int
    time_ms: int
    proposer: bytes  # validator public key
    prev_block_hash: bytes
    misbehavior: tuple[bytes, ...] = ()  # encoded evidence of equivocation


@dataclass(frozen=True)
class Event:
    type: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecTxResult:
    code: int
    log: str = ""
    events: tuple[Event, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == OK


@dataclass(frozen=True)
class FinalizeBlockResult:
    tx_results: tuple[ExecTxResult, ...]
    validator_updates: tuple[Validator, ...]  # power 0 removes a validator
    app_hash: bytes  # state root after this block
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class QueryResult:
    code: int
    value: bytes = b""
    proof: bytes = b""
    height: int = 0
    log: str = ""


@runtime_checkable
class Application(Protocol):
    def info(self) -> AppInfo: ...

    def init_chain(self, genesis: bytes) -> bytes:
        """Load the genesis document (canonical bytes); return the initial app hash."""
        ...

    def check_tx(self, tx: bytes) -> CheckTxResult: ...

    def prepare_proposal(self, txs: list[bytes], max_bytes: int, info: ProposalInfo) -> list[bytes]:
        """Order and filter the mempool's transactions for a block this node proposes."""
        ...

    def process_proposal(self, txs: list[bytes], info: ProposalInfo) -> bool:
        """Accept or reject a proposed block's transactions (deterministic)."""
        ...

    def finalize_block(self, txs: list[bytes], info: ProposalInfo) -> FinalizeBlockResult:
        """Execute a decided block against a pending state; nothing is durable until commit."""
        ...

    def commit(self) -> None:
        """Make the state of the last finalized block durable (atomically with the block).

        The ledger app writes the block too: consensus first hands it the decided block and its
        commit with ``Store.stage_block(block, commit)`` (see docs/ledger.md).
        """
        ...

    def query(
        self, path: str, data: bytes = b"", height: int = 0, prove: bool = False
    ) -> QueryResult: ...

    # --- beyond ABCI: what the ledger's engines need ------------------------------------------
    def proposal_problem(self, txs: list[bytes], info: ProposalInfo) -> str | None:
        """Why a proposal is invalid (None: valid); ``process_proposal`` is ``is None`` of it."""
        ...

    def classify_tx(self, raw: bytes) -> str:
        """The Merkle tree of the header a transaction is committed in (``block.TREES``)."""
        ...

    def precheck_tx(self, raw: bytes) -> CheckTxResult:
        """The stateless part of ``check_tx`` (form, size, chain id, signature); may be cached."""
        ...

    def committed_among(self, txids: set[bytes]) -> set[bytes]:
        """Which of these transaction ids are already in a committed block."""
        ...

    def replays_among(self, txs: list[bytes]) -> set[bytes]:
        """Ids of these transactions that no block may carry any more (they repeat a committed
        one, judged on the committed state): an engine drops them from its pools."""
        ...

    def validators_for(self, height: int) -> list[Validator]:
        """The validator set that signs block ``height``."""
        ...

    def block_limits(self) -> BlockLimits: ...

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Hold off other callers while one block is judged, executed and committed."""
        ...


class BaseApplication:
    """Neutral defaults for the calls beyond ABCI; an application overrides what it has."""

    def process_proposal(self, txs: list[bytes], info: ProposalInfo) -> bool:
        return self.proposal_problem(txs, info) is None

    def proposal_problem(self, txs: list[bytes], info: ProposalInfo) -> str | None:
        return None

    def classify_tx(self, raw: bytes) -> str:
        return "other"

    def precheck_tx(self, raw: bytes) -> CheckTxResult:
        return CheckTxResult(OK)

    def committed_among(self, txids: set[bytes]) -> set[bytes]:
        return set()

    def replays_among(self, txs: list[bytes]) -> set[bytes]:
        return set()

    def block_limits(self) -> BlockLimits:
        return BlockLimits()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        yield
