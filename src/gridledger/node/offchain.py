"""Off-chain store for personal data (seed 004, GDPR): content-addressed, erasable.

Detailed meter data lives here; the chain holds only its SHA-256 (``detail_hash`` of a meter
reading). Erasing a record removes the data and leaves a tombstone (hash, erasure time), so the
chain still verifies and anyone asking learns the data was erased rather than never stored.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

MAX_BLOB_BYTES = 4 * 1024 * 1024


class OffchainError(ValueError):
    """Too large, unknown, or erased."""


class OffchainStore:
    def __init__(self, path: Path | str) -> None:
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS blobs (hash BLOB PRIMARY KEY, data BLOB, "
            "erased_ms INTEGER) WITHOUT ROWID"
        )
        self._lock = threading.Lock()

    def put(self, data: bytes) -> bytes:
        if len(data) > MAX_BLOB_BYTES:
            raise OffchainError(f"{len(data)} bytes exceeds the limit of {MAX_BLOB_BYTES}")
        h = hashlib.sha256(data).digest()
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?, NULL)", (h, data))
        return h

    def get(self, h: bytes) -> bytes:
        with self._lock:
            row = self._conn.execute(
                "SELECT data, erased_ms FROM blobs WHERE hash=?", (h,)
            ).fetchone()
        if row is None:
            raise OffchainError(f"no off-chain record {h.hex()}")
        if row[1] is not None:
            raise OffchainError(f"off-chain record {h.hex()} was erased at {row[1]} ms")
        return bytes(row[0])

    def erase(self, h: bytes) -> None:
        with self._lock:
            cur = self._conn.execute(
                "UPDATE blobs SET data=NULL, erased_ms=? WHERE hash=? AND erased_ms IS NULL",
                (time.time_ns() // 10**6, h),
            )
        if cur.rowcount == 0:
            raise OffchainError(f"no off-chain record {h.hex()} to erase")
        # rewrite freed pages so the erased bytes do not linger in the file
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.execute("VACUUM")

    def close(self) -> None:
        self._conn.close()
