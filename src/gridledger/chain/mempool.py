"""The mempool: transactions admitted by ``check_tx``, in arrival order, waiting for a block.

Admission and block production are serialised by :attr:`Mempool.lock` so that the app's check
state (which counts pending sequence numbers) always describes exactly the pending list. After a
block commits, :meth:`update` drops the committed transactions and re-checks the rest against the
new state, evicting those that no longer pass (e.g. a transfer whose funds were spent).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from gridledger.chain import codes
from gridledger.chain.abci import Application, CheckTxResult
from gridledger.chain.tx import tx_id


class Mempool:
    def __init__(
        self, app: Application, max_txs: int = 200_000, max_bytes: int = 256 * 1024 * 1024
    ) -> None:
        self.app = app
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.lock = threading.RLock()
        self._txs: OrderedDict[bytes, bytes] = OrderedDict()  # txid -> raw
        self._bytes = 0
        self._arrived = threading.Condition(self.lock)

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, txid: object) -> bool:
        return txid in self._txs

    def add(self, raw: bytes) -> CheckTxResult:
        raw = bytes(raw)
        txid = tx_id(raw)
        # the signature check is pure and costly: do it before queueing behind block production
        precheck = getattr(self.app, "_precheck", None)
        if precheck is not None:
            parsed, code, log = precheck(raw)
            if code != codes.OK:
                return CheckTxResult(
                    code, log, parsed.sender if parsed else b"", parsed.seq if parsed else 0
                )
        with self.lock:
            if txid in self._txs:
                return CheckTxResult(codes.DUPLICATE, "transaction is already in the mempool")
            if len(self._txs) >= self.max_txs or self._bytes + len(raw) > self.max_bytes:
                return CheckTxResult(codes.MEMPOOL_FULL, "mempool is full, retry later")
            res = self.app.check_tx(raw)
            if res.ok:
                self._txs[txid] = raw
                self._bytes += len(raw)
                self._arrived.notify_all()
            return res

    def reap(self, max_bytes: int, max_txs: int) -> list[bytes]:
        with self.lock:
            out: list[bytes] = []
            size = 0
            for raw in self._txs.values():
                if len(out) >= max_txs or size + len(raw) > max_bytes:
                    break
                out.append(raw)
                size += len(raw)
            return out

    def wait(self, timeout_s: float) -> bool:
        """Block until at least one transaction is pending (or the timeout passes)."""
        with self.lock:
            if self._txs:
                return True
            self._arrived.wait(timeout_s)
            return bool(self._txs)

    def update(self, committed: list[bytes]) -> list[bytes]:
        """Remove committed txs, re-check the rest in order; return the evicted ones."""
        with self.lock:
            for raw in committed:
                if self._txs.pop(tx_id(raw), None) is not None:
                    self._bytes -= len(raw)
            evicted = []
            for txid, raw in list(self._txs.items()):
                if not self.app.check_tx(raw).ok:
                    del self._txs[txid]
                    self._bytes -= len(raw)
                    evicted.append(raw)
            return evicted
