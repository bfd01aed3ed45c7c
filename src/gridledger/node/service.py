"""What the HTTP API needs of a node (:class:`NodeService`) and the reads every node shares.

``node/api.py`` serves any :class:`NodeService`: the solo :class:`~gridledger.node.node.Node`
and the BFT :class:`~gridledger.node.bft.BftNode` both are one. The read calls (a transaction's
status, a block, an account, a state key, a transaction's proof) only need the store, the
application and the mempool, so they live once in :class:`LedgerReads`, which both nodes extend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from gridledger.chain import codes, encoding
from gridledger.chain.app import LedgerApp
from gridledger.chain.mempool import Mempool
from gridledger.chain.proofs import state_proof, tx_proof
from gridledger.chain.store import Store
from gridledger.chain.tx import TxError, decode_tx, tx_id

if TYPE_CHECKING:
    from gridledger.node.node import EventFeed
    from gridledger.node.offchain import OffchainStore


class NodeService(Protocol):
    """The node as the API sees it (in the spirit of ABCI: the API knows nothing else)."""

    app: LedgerApp  # chain id and ``query`` (membership checks of signed requests)
    feed: EventFeed  # committed blocks, for event streams
    offchain: OffchainStore  # personal data kept off chain

    def submit(self, raw: bytes) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def tx_status(self, txid: bytes) -> dict[str, Any] | None: ...

    def block(self, height: int | None) -> dict[str, Any] | None: ...

    def account(self, pub_hex: str) -> dict[str, Any]: ...

    def state(self, key: str, prove: bool) -> dict[str, Any]: ...

    def tx_proof(self, txid: bytes) -> dict[str, Any]: ...


class LedgerReads:
    """The read calls of :class:`NodeService`, over a node's store, application and mempool."""

    store: Store
    app: LedgerApp
    mempool: Mempool

    def tx_status(self, txid: bytes) -> dict[str, Any] | None:
        rec = self.store.get_tx(txid)
        if rec is not None:
            raw = self.store.get_block(rec.height).block().txs[rec.index]
            return {
                "code": rec.code,
                "code_name": codes.NAMES.get(rec.code, "?"),
                "events": rec.events,
                "height": rec.height,
                "index": rec.index,
                "log": rec.log,
                "status": "committed",
                "tx": _tx_json(raw),
                "txid": txid.hex(),
            }
        if txid in self.mempool:
            return {"status": "pending", "txid": txid.hex()}
        return None

    def block(self, height: int | None) -> dict[str, Any] | None:
        h = self.store.height() if height is None else height
        sb = self.store.get_block(h)
        if sb is None:
            return None
        b = sb.block()
        return {
            "commit": sb.commit().to_json(),
            "hash": sb.hash.hex(),
            "header": b.header.to_json(),
            "txs": [tx_id(t).hex() for t in b.txs],
        }

    def account(self, pub_hex: str) -> dict[str, Any]:
        doc = encoding.decode(self.app.query(f"account/{pub_hex}").value)
        doc["next_seq"] = self.app.next_seq(pub_hex)
        return doc

    def state(self, key: str, prove: bool) -> dict[str, Any]:
        if prove:
            return state_proof(self.store, self.app, key)
        q = self.app.query(f"state/{key}")
        return {
            "height": q.height,
            "key": key,
            "value": q.value.hex() if q.code == codes.OK else None,
        }

    def tx_proof(self, txid: bytes) -> dict[str, Any]:
        return tx_proof(self.store, txid, self.app.classify_tx)


def _tx_json(raw: bytes) -> dict[str, Any]:
    try:
        return decode_tx(raw, max_bytes=len(raw)).to_json()
    except TxError as exc:
        return {"error": str(exc), "raw": raw.hex()}
