"""A meter reading's consumption detail: personal data kept off chain, only its hash on chain.

Each reading a meter posts (``settlement.reading``) totals one slot. The detail behind it — the
samples inside the slot and the meter's metadata — says when a household is at home, so it is
personal data (seed 004, GDPR): the meter stores it in the node's off-chain store
(``POST /offchain``) and the reading carries only ``detail_hash``, the SHA-256 of the stored
bytes. Those bytes are the canonical encoding (``chain/encoding.py``) of :func:`detail_doc`, so
the same reading always gives the same bytes and the same hash: a meter service restarted
between storing the detail and posting the reading stores the same record again, not a second.

Ownership (enforced by the node, ``node/api.py``): the data subject is the prosumer the meter
is bound to on chain (``member.bind_meter``), never the meter, and never a subject the meter
names. The meter's key only writes on the subject's behalf: it cannot read or erase, and it
cannot widen the readers the subject chose for a record already stored. The roles in
``readers`` (by default the DSO) may read; the subject reads, re-grants and erases.

:func:`check_detail` is what a reader runs: the bytes hash to the reading's ``detail_hash``, and
the document describes that very reading (its meter, window and energies), so a detail a meter
stored for another reading cannot pass for this one.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gridledger.chain import encoding
from gridledger.chain.keys import KeyPair
from gridledger.node.client import LedgerClient

DETAIL_KIND = "gridledger.meter.detail/1"
READING_TYPES = ("settlement.reading", "meter.reading")
# the reading's fields the detail repeats, so that a detail names the reading it belongs to
BOUND_FIELDS = ("meter", "start_ms", "duration_s", "export_wh", "import_wh")


class DetailError(ValueError):
    """A detail that does not belong to its reading, or a reading without one."""


def detail_doc(
    reading: dict[str, Any], name: str, samples_wh: list[int], sample_s: int
) -> dict[str, Any]:
    """The detail of ``reading`` (a reading payload): its net samples in Wh (positive imported),
    one per ``sample_s`` seconds of the slot, and the meter's name in the operator's files."""
    if reading["duration_s"] % sample_s or len(samples_wh) != reading["duration_s"] // sample_s:
        raise DetailError(
            f"{len(samples_wh)} samples of {sample_s} s do not cover {reading['duration_s']} s"
        )
    if sum(samples_wh) != reading["import_wh"] - reading["export_wh"]:
        raise DetailError(
            f"samples sum to {sum(samples_wh)} Wh, the reading nets "
            f"{reading['import_wh'] - reading['export_wh']} Wh"
        )
    return {
        "kind": DETAIL_KIND,
        "meter_name": name,
        "reading": {f: reading[f] for f in BOUND_FIELDS},
        "sample_s": sample_s,
        "samples_wh": list(samples_wh),
    }


def detail_bytes(doc: dict[str, Any]) -> bytes:
    return encoding.encode(doc)


def detail_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reading_payload(tx_status: dict[str, Any] | None, txid: str) -> dict[str, Any]:
    """The payload of a committed, accepted meter reading that carries a ``detail_hash``."""
    if tx_status is None:
        raise DetailError(f"transaction {txid} is unknown to the node")
    if tx_status.get("status") != "committed":
        raise DetailError(f"transaction {txid} is not committed yet")
    tx = tx_status.get("tx") or {}
    if tx.get("type") not in READING_TYPES:
        raise DetailError(f"transaction {txid} is a {tx.get('type')!r}, not a meter reading")
    if tx_status.get("code") != 0:
        raise DetailError(f"reading {txid} was refused by the chain: {tx_status.get('log')}")
    payload = tx["payload"]
    if "detail_hash" not in payload:
        raise DetailError(f"reading {txid} carries no detail_hash: its meter stored no detail")
    return payload


def check_detail(payload: dict[str, Any], data: bytes) -> dict[str, Any]:
    """The detail document, once ``data`` is shown to be the detail of reading ``payload``."""
    got = detail_hash(data)
    if got != payload["detail_hash"]:
        raise DetailError(
            f"the node returned bytes hashing to {got}, the chain says {payload['detail_hash']}"
        )
    try:
        doc = encoding.decode(data)
    except encoding.EncodingError as exc:
        raise DetailError(f"the detail is not a canonical document: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != DETAIL_KIND:
        raise DetailError(f"the detail is not a {DETAIL_KIND} document")
    bound = doc.get("reading") or {}
    for f in BOUND_FIELDS:
        if bound.get(f) != payload[f]:
            raise DetailError(
                f"the detail is for another reading: its {f} is {bound.get(f)!r}, "
                f"the reading's is {payload[f]!r}"
            )
    samples = doc.get("samples_wh")
    if (
        not isinstance(samples, list)
        or not all(type(s) is int for s in samples)
        or sum(samples) != payload["import_wh"] - payload["export_wh"]
    ):
        raise DetailError("the detail's samples do not add up to the reading's net energy")
    return doc


class NodeDetailStore:
    """Stores details in a node's ``/offchain``, signed by each meter's key."""

    def __init__(self, url: str, chain_id: str, readers: tuple[str, ...] = ("dso",)) -> None:
        self._client = LedgerClient(url, chain_id=chain_id)
        self.readers = readers

    def put(self, meter: KeyPair, data: bytes) -> str:
        return self._client.as_member(meter).offchain_put(data, readers=self.readers)

    def close(self) -> None:
        self._client.close()
