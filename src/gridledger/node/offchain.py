"""Off-chain store for personal data (seed 004, GDPR): content-addressed, owned, erasable.

Detailed meter data lives here; the chain holds only its SHA-256 (``detail_hash`` of a meter
reading). Every record has an owner, the data subject (a prosumer; a meter's data belongs to
the prosumer it is bound to), and the roles the subject lets read it (e.g. the DSO). Only the
subject erases. Erasing removes the data and leaves a tombstone (hash, subject, erasure time):
the chain still verifies, anyone asking learns the data was erased rather than never stored,
and the same bytes cannot be posted again for that subject. Each subject has a quota of bytes
(live data) and records (live and tombstones), so no member can fill the node's disk.

Erased bytes must not linger in the files: ``secure_delete`` makes SQLite overwrite freed
content with zeros, a WAL checkpoint moves that into the database file and empties the WAL
(work bounded by the WAL's size, not the store's), and ``incremental_vacuum`` hands back a
bounded number of free pages per erasure instead of rewriting the whole store (``VACUUM``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MAX_BLOB_BYTES = 4 * 1024 * 1024
DEFAULT_QUOTA_BYTES = 64 * 1024 * 1024
DEFAULT_QUOTA_RECORDS = 10_000
# free pages given back to the file system per erasure (4 KiB pages: 4 MiB, one largest blob)
VACUUM_PAGES_PER_ERASE = 1024
# records stored before records had owners: their subject is unknown, so the DSO (which ran
# the store) reads and erases them
LEGACY_OWNER = ""


class OffchainError(ValueError):
    """Base of the store's errors; each subclass maps to one HTTP status in the API."""


class BlobTooLarge(OffchainError):
    """The record is larger than ``MAX_BLOB_BYTES``."""


class QuotaExceeded(OffchainError):
    """Storing the record would take its subject over the byte or record quota."""


class RecordNotFound(OffchainError):
    """No record with this hash is stored."""


class RecordForbidden(OffchainError):
    """Records with this hash exist but the requester may not read or erase them."""


class RecordErased(OffchainError):
    """The record was erased (reading it, erasing it again or posting the bytes again)."""

    def __init__(self, message: str, erased_ms: int) -> None:
        super().__init__(message)
        self.erased_ms = erased_ms


@dataclass(frozen=True)
class Usage:
    bytes: int
    records: int


class OffchainStore:
    def __init__(
        self,
        path: Path | str,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        quota_records: int = DEFAULT_QUOTA_RECORDS,
    ) -> None:
        self.quota_bytes = quota_bytes
        self.quota_records = quota_records
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        # auto_vacuum must be chosen before the first table exists (a new store)
        self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA secure_delete=ON")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS records (hash BLOB NOT NULL, owner TEXT NOT NULL, "
            "readers TEXT NOT NULL, size INTEGER NOT NULL, created_ms INTEGER NOT NULL, "
            "erased_ms INTEGER, data BLOB, UNIQUE (hash, owner))"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS usage (owner TEXT PRIMARY KEY, bytes INTEGER NOT NULL, "
            "records INTEGER NOT NULL) WITHOUT ROWID"
        )
        self._migrate_unowned()
        self._lock = threading.Lock()

    def _migrate_unowned(self) -> None:
        """Move a store of the former layout (``blobs``: hash, data, erased_ms) into ``records``
        under :data:`LEGACY_OWNER`, readable by the DSO."""
        old = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='blobs'"
        ).fetchone()
        if old is None:
            return
        now = time.time_ns() // 10**6
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute(
            "INSERT OR IGNORE INTO records SELECT hash, ?, 'dso', COALESCE(length(data), 0), ?, "
            "erased_ms, data FROM blobs",
            (LEGACY_OWNER, now),
        )
        self._conn.execute("DROP TABLE blobs")
        self._conn.execute("COMMIT")

    def usage(self, owner: str) -> Usage:
        with self._lock:
            row = self._conn.execute(
                "SELECT bytes, records FROM usage WHERE owner=?", (owner,)
            ).fetchone()
        return Usage(*row) if row else Usage(0, 0)

    def put(
        self, data: bytes, owner: str, readers: tuple[str, ...] = (), regrant: bool = True
    ) -> bytes:
        """Store ``data`` for subject ``owner``, readable also by members of ``readers`` roles.
        Storing bytes already stored changes who may read them only with ``regrant`` (the
        subject itself); a meter writing for its subject stores, but cannot widen a grant."""
        if len(data) > MAX_BLOB_BYTES:
            raise BlobTooLarge(f"{len(data)} bytes exceeds the limit of {MAX_BLOB_BYTES}")
        h = hashlib.sha256(data).digest()
        now = time.time_ns() // 10**6
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT erased_ms FROM records WHERE hash=? AND owner=?", (h, owner)
                ).fetchone()
                if row is not None and row[0] is not None:
                    raise RecordErased(
                        f"off-chain record {h.hex()} was erased at {row[0]} ms by its subject "
                        "and may not be stored again",
                        row[0],
                    )
                if row is not None and not regrant:
                    pass  # already stored, and only the subject changes who reads it
                elif row is not None:  # already stored: only the readers may change
                    self._conn.execute(
                        "UPDATE records SET readers=? WHERE hash=? AND owner=?",
                        (",".join(readers), h, owner),
                    )
                else:
                    self._admit(owner, len(data))
                    self._conn.execute(
                        "INSERT INTO records VALUES (?, ?, ?, ?, ?, NULL, ?)",
                        (h, owner, ",".join(readers), len(data), now, data),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return h

    def _admit(self, owner: str, size: int) -> None:
        row = self._conn.execute(
            "SELECT bytes, records FROM usage WHERE owner=?", (owner,)
        ).fetchone()
        used = Usage(*row) if row else Usage(0, 0)
        if used.records + 1 > self.quota_records:
            raise QuotaExceeded(
                f"subject {owner[:16]}… already holds {used.records} records (erased ones "
                f"included); the quota is {self.quota_records}"
            )
        if used.bytes + size > self.quota_bytes:
            raise QuotaExceeded(
                f"subject {owner[:16]}… stores {used.bytes} bytes; {size} more would pass "
                f"the quota of {self.quota_bytes}"
            )
        self._conn.execute(
            "INSERT INTO usage VALUES (?, ?, 1) ON CONFLICT (owner) DO UPDATE SET "
            "bytes = bytes + excluded.bytes, records = records + 1",
            (owner, size),
        )

    def get(self, h: bytes, reader: str, reader_role: str | None) -> bytes:
        """The data, if ``reader`` is its subject or holds a role the subject let read it."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT owner, readers, erased_ms, data FROM records WHERE hash=?", (h,)
            ).fetchall()
        if not rows:
            raise RecordNotFound(f"no off-chain record {h.hex()}")
        mine = [
            r for r in rows if r[0] == reader or (reader_role and reader_role in r[1].split(","))
        ]
        if not mine:
            raise RecordForbidden(
                f"off-chain record {h.hex()} is readable only by its subject and the roles "
                "the subject granted"
            )
        for _owner, _readers, erased_ms, data in mine:
            if erased_ms is None:
                return bytes(data)
        last = max(r[2] for r in mine)
        raise RecordErased(f"off-chain record {h.hex()} was erased at {last} ms", last)

    def erase(self, h: bytes, owner: str, legacy: bool = False) -> None:
        """Erase subject ``owner``'s record: data gone, tombstone kept. With ``legacy`` (the
        DSO), a record stored before records had owners is erased when ``owner`` has none."""
        now = time.time_ns() // 10**6
        with self._lock:
            row = self._conn.execute(
                "SELECT erased_ms, size FROM records WHERE hash=? AND owner=?", (h, owner)
            ).fetchone()
            if row is None and legacy:
                owner = LEGACY_OWNER
                row = self._conn.execute(
                    "SELECT erased_ms, size FROM records WHERE hash=? AND owner=?", (h, owner)
                ).fetchone()
            if row is None:
                exists = self._conn.execute(
                    "SELECT 1 FROM records WHERE hash=? LIMIT 1", (h,)
                ).fetchone()
                if exists:
                    raise RecordForbidden(
                        f"only the data subject may erase off-chain record {h.hex()}"
                    )
                raise RecordNotFound(f"no off-chain record {h.hex()} to erase")
            if row[0] is not None:
                raise RecordErased(f"off-chain record {h.hex()} was already erased", row[0])
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "UPDATE records SET data=NULL, erased_ms=? WHERE hash=? AND owner=?",
                (now, h, owner),
            )
            self._conn.execute("UPDATE usage SET bytes = bytes - ? WHERE owner=?", (row[1], owner))
            self._conn.execute("COMMIT")
            # the zeroed pages reach the database file and the WAL holding the old bytes is
            # emptied; both cost what the WAL holds, not what the store holds
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES_PER_ERASE})")

    def close(self) -> None:
        self._conn.close()
