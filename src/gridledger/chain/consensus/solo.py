"""Single-validator ("solo") consensus, in process: the node's own key decides every block.

Drives an application through the same calls and order as the BFT engine
(prepare_proposal -> process_proposal -> finalize_block -> store.stage_block -> commit), so the
application cannot tell the difference: both see it only through the
:class:`~gridledger.chain.abci.Application` protocol. Blocks are cut every ``block_interval_ms``,
or, in eager mode, as soon as transactions are waiting (tests, benchmarks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gridledger.chain.abci import Application, ExecTxResult, ProposalInfo
from gridledger.chain.block import Block, Commit, genesis_hash, make_header
from gridledger.chain.keys import KeyPair
from gridledger.chain.mempool import Mempool
from gridledger.chain.store import Store


class SoloError(RuntimeError):
    """The node's key cannot decide blocks for this chain."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SoloEngine:
    def __init__(
        self,
        app: Application,
        store: Store,
        mempool: Mempool,
        key: KeyPair,
        block_interval_ms: int = 1000,
        eager: bool = False,
        create_empty: bool = False,
        max_block_txs: int | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.app, self.store, self.mempool, self.key = app, store, mempool, key
        self.block_interval_ms = block_interval_ms
        self.eager = eager
        self.create_empty = create_empty
        limits = app.block_limits()
        self.max_block_txs = max_block_txs or limits.max_txs
        self.max_block_bytes = limits.max_bytes
        self.clock_ms = clock_ms
        self.listeners: list[Callable[[Block, list[ExecTxResult]], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._check_power()

    def _check_power(self) -> None:
        # re-checked every height: a validator-set vote can take the decision away from us
        height = self.app.info().last_block_height + 1
        vals = {v.pub_key: v.power for v in self.app.validators_for(height)}
        if vals.get(self.key.pub_key, 0) * 3 <= 2 * sum(vals.values()):
            raise SoloError("the node key does not hold more than 2/3 of the voting power")

    def produce_block(self, allow_empty: bool | None = None) -> Block | None:
        """Decide and commit one block from the mempool; None when there is nothing to do."""
        app = self.app
        with self.mempool.lock:
            txs = self.mempool.reap(self.max_block_bytes, self.max_block_txs)
            if not txs and not (self.create_empty if allow_empty is None else allow_empty):
                return None
            self._check_power()
            last = app.info()
            height = last.last_block_height + 1
            time_ms = max(self.clock_ms(), last.last_block_time_ms + 1)
            info = ProposalInfo(height, time_ms, self.key.pub_key, self._prev_block_hash())
            txs = app.prepare_proposal(txs, self.max_block_bytes, info)
            with app.exclusive():
                problem = app.proposal_problem(txs, info)
                if problem is not None:
                    raise SoloError(f"own proposal rejected: {problem}")
                header = make_header(
                    last.chain_id,
                    height,
                    time_ms,
                    info.prev_block_hash,
                    self.key.pub_key,
                    txs,
                    app.classify_tx,
                    last.last_block_app_hash,
                    last.last_results_hash,
                    app.validators_for(height),
                    app.validators_for(height + 1),
                )
                result = app.finalize_block(txs, info)
                block = Block(header, tuple(txs))
                commit = Commit.sign(last.chain_id, height, 0, block.hash(), [self.key])
                self.store.stage_block(block, commit)
                app.commit()
            self.mempool.update(txs)
        for fn in list(self.listeners):
            fn(block, list(result.tx_results))
        return block

    def _prev_block_hash(self) -> bytes:
        """The last block's hash; block 1's is the genesis document's hash."""
        prev = self.store.meta("last_block_hash", None, writer=True)
        if prev:
            return bytes.fromhex(prev)
        return genesis_hash(bytes.fromhex(self.store.meta("genesis", writer=True)))

    def _linger(self, quiet_s: float = 0.005, max_s: float = 0.1) -> None:
        """Eager mode: let a burst of submissions finish (or fill a block) before cutting, so a
        steady stream is not committed one tiny block (and one fsync) at a time."""
        deadline = time.monotonic() + max_s
        n = len(self.mempool)
        while n < self.max_block_txs and time.monotonic() < deadline:
            time.sleep(quiet_s)
            m = len(self.mempool)
            if m == n:
                return
            n = m

    def _run(self) -> None:
        try:
            next_due = time.monotonic() + self.block_interval_ms / 1000
            while not self._stop.is_set():
                if self.eager:
                    if self.mempool.wait(0.05):
                        self._linger()
                        self.produce_block()
                    continue
                delay = next_due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                    continue
                next_due += self.block_interval_ms / 1000
                self.produce_block()
        except BaseException as exc:  # surfaced to the node, which stops serving
            self.error = exc
            raise

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="solo-consensus", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
