"""An embedded single-validator chain with a clock the caller controls.

The solo consensus engine, the ledger application, the mempool and the SQLite store, wired as a
node wires them, but blocks are cut on request at a block time the caller chooses.  Market time
(15-minute slots) can then run faster than the wall clock, which is what lets the demo deliver
an hour of trades in seconds; everything on chain still sees block time only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridledger.chain import codes, encoding
from gridledger.chain.abci import ExecTxResult
from gridledger.chain.app import LedgerApp
from gridledger.chain.block import Block
from gridledger.chain.consensus.solo import SoloEngine
from gridledger.chain.contracts.tokens import balance_key
from gridledger.chain.keys import KeyPair
from gridledger.chain.mempool import Mempool
from gridledger.chain.store import Store
from gridledger.chain.tx import make_tx, tx_id


@dataclass(frozen=True)
class TxOutcome:
    """Where a transaction ended: refused at the mempool gate, or executed in a block."""

    txid: str
    code: int
    log: str
    height: int = 0  # 0 while not in a block (or refused)
    events: tuple = ()

    @property
    def ok(self) -> bool:
        return self.code == codes.OK


class LocalChain:
    def __init__(
        self,
        home: Path | str,
        genesis: bytes,
        validator_key: KeyPair | None,
        start_ms: int,
        db_path: Path | None = None,
    ) -> None:
        self.home = Path(home)
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        # the node home layout (node/home.py), so `gridledger verify --home` finds the chain
        genesis_file = self.home / "genesis.json"
        if not genesis_file.exists():
            genesis_file.write_bytes(genesis + b"\n")
        self.store = Store(db_path or self.home / "data" / "chain.db", synchronous="NORMAL")
        self.app = LedgerApp(self.store)
        self.app.init_chain(genesis)
        self.mempool = Mempool(self.app)
        self.now_ms = max(start_ms, self.app.last_time_ms + 1)
        self._waiting: dict[str, TxOutcome] = {}
        self.outcomes: dict[str, TxOutcome] = {}
        # a chain written earlier (by a node process) is read back for reports
        self.blocks: list[Block] = [sb.block() for sb in self.store.iter_blocks()]
        self._last_results: list[ExecTxResult] = []
        self.engine: SoloEngine | None = None
        if validator_key is not None:  # without a key: read only
            self.engine = SoloEngine(
                self.app, self.store, self.mempool, validator_key, clock_ms=lambda: self.now_ms
            )
            self.engine.listeners.append(self._on_block)

    def _on_block(self, block: Block, results: list[ExecTxResult]) -> None:
        self._last_results = results

    @property
    def chain_id(self) -> str:
        return self.app.chain_id

    def submit(self, key: KeyPair, tx_type: str, payload: dict[str, Any]) -> TxOutcome:
        """Sign with the sender's next sequence number and offer the tx to the mempool."""
        tx = make_tx(key, self.chain_id, self.app.next_seq(key.pub_hex), tx_type, payload)
        res = self.mempool.add(tx.raw)
        out = TxOutcome(tx.id.hex(), res.code, res.log)
        if res.ok:
            self._waiting[out.txid] = out
        else:
            self.outcomes[out.txid] = out
        return out

    def produce(self, time_ms: int | None = None, allow_empty: bool = True) -> Block | None:
        """Cut one block at ``time_ms`` (default: one ms after the last block)."""
        if time_ms is not None:
            self.now_ms = max(time_ms, self.app.last_time_ms + 1)
        if self.engine is None:
            raise RuntimeError("this chain was opened read-only (no validator key)")
        block = self.engine.produce_block(allow_empty=allow_empty)
        if block is None:
            return None
        self.blocks.append(block)
        for raw, res in zip(block.txs, self._last_results, strict=True):
            txid = _txid(raw)
            self.outcomes[txid] = TxOutcome(
                txid, res.code, res.log, block.header.height, tuple(res.events)
            )
            self._waiting.pop(txid, None)
        return block

    def result(self, txid: str) -> TxOutcome:
        return self.outcomes.get(txid) or self._waiting[txid]

    def state(self, key: str) -> Any:
        raw = self.app._committed.get(key.encode())  # read-only view of committed state
        return None if raw is None else encoding.decode(raw)

    def state_int(self, key: str) -> int:
        raw = self.app._committed.get(key.encode())
        return 0 if raw is None else int(raw)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """Committed state keys under a prefix, sorted (for reports and audits)."""
        p = prefix.encode()
        return sorted(k.decode() for k in self.app._committed if k.startswith(p))

    def balance(self, denom: str, pub_hex: str) -> int:
        return self.state_int(balance_key(denom, pub_hex))

    def time_ms(self) -> int:
        """Block time of the last committed block (the only clock contracts and agents share)."""
        return self.app.last_time_ms

    def height(self) -> int:
        return self.app.height

    def close(self) -> None:
        self.store.close()


def _txid(raw: bytes) -> str:
    return tx_id(raw).hex()
