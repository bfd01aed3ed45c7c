"""A running solo node: store, application, mempool, consensus, off-chain store, event feed.

The node object is transport-free; ``node/api.py`` puts HTTP in front of it and the CLI runs
both. Everything here is safe to call from API threads.
"""

from __future__ import annotations

import fcntl
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridledger.chain import codes
from gridledger.chain.abci import ExecTxResult
from gridledger.chain.app import LedgerApp
from gridledger.chain.block import Block
from gridledger.chain.consensus.solo import SoloEngine
from gridledger.chain.keys import load_key
from gridledger.chain.mempool import Mempool
from gridledger.chain.store import Store
from gridledger.chain.tx import tx_id
from gridledger.node.home import HomeError, NodeConfig, read_genesis
from gridledger.node.offchain import OffchainStore
from gridledger.node.service import LedgerReads


@dataclass(frozen=True)
class BlockEvent:
    height: int
    hash: str
    time_ms: int
    txs: list[dict[str, Any]]


class EventFeed:
    """The last few hundred committed blocks' summaries, for streaming clients."""

    def __init__(self, keep: int = 512) -> None:
        self._items: deque[BlockEvent] = deque(maxlen=keep)
        self._cond = threading.Condition()
        self.height = 0

    def publish(self, block: Block, results: list[ExecTxResult]) -> None:
        ev = BlockEvent(
            block.header.height,
            block.hash().hex(),
            block.header.time_ms,
            [
                {
                    "code": r.code,
                    "events": [{"attributes": e.attributes, "type": e.type} for e in r.events],
                    "log": r.log,
                    "txid": tx_id(raw).hex(),
                }
                for raw, r in zip(block.txs, results, strict=True)
            ],
        )
        with self._cond:
            self._items.append(ev)
            self.height = ev.height
            self._cond.notify_all()

    def since(self, height: int) -> list[BlockEvent]:
        with self._cond:
            return [e for e in self._items if e.height > height]


class Node(LedgerReads):
    """A solo node; it serves the API as a :class:`~gridledger.node.service.NodeService`."""

    def __init__(self, home: Path, config: NodeConfig | None = None) -> None:
        self.home = Path(home)
        self.config = config or NodeConfig.load(self.home)
        (self.home / "data").mkdir(exist_ok=True)
        # two node processes on one database would each decide blocks: a fork. The OS releases
        # the lock when the process dies, even by SIGKILL.
        self._lock_file = open(self.home / "data" / "node.lock", "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            raise HomeError(f"another node is already running on {self.home}") from exc
        self.store = Store(self.home / "data" / "chain.db", synchronous=self.config.synchronous)
        self.app = LedgerApp(self.store)
        if self.app.genesis is None:
            self.app.init_chain(read_genesis(self.home))
        key, _ = load_key(self.home / self.config.validator_key)
        self.mempool = Mempool(self.app)
        self.engine = SoloEngine(
            self.app,
            self.store,
            self.mempool,
            key,
            block_interval_ms=self.config.block_interval_ms,
            eager=self.config.eager,
        )
        self.feed = EventFeed()
        self.feed.height = self.app.height
        self.engine.listeners.append(self.feed.publish)
        self.offchain = OffchainStore(
            self.home / "data" / "offchain.db",
            quota_bytes=self.config.offchain_quota_bytes,
            quota_records=self.config.offchain_quota_records,
        )

    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        self.engine.stop()
        self.store.close()
        self.offchain.close()
        self._lock_file.close()

    # --- transactions -----------------------------------------------------------------------
    def submit(self, raw: bytes) -> dict[str, Any]:
        res = self.mempool.add(raw)
        return {
            "code": res.code,
            "code_name": codes.NAMES.get(res.code, "?"),
            "log": res.log,
            "txid": tx_id(raw).hex(),
        }

    # --- reads ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self.store.read_snapshot():  # height, root and hash of the same block
            meta = {k: self.store.meta(k) for k in ("app_hash", "last_block_hash", "last_time_ms")}
            h = self.store.height()
        return {
            "chain_id": self.app.chain_id,
            "height": h,
            "mempool": len(self.mempool),
            "validators": [
                {"power": v.power, "pub_key": v.pub_key.hex()} for v in self.app.validators()
            ],
            **meta,
        }
