"""Test-only fault injection: drop all traffic to and from chosen peers, switchable at run time.

The control file is JSON, ``{"drop": ["<peer public key hex>", ...]}``; it is re-read when its
modification time changes (polled, so a test just rewrites it). A missing file means no faults.
Nodes only watch a control file when their configuration names one (test networks do).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class FaultControl:
    def __init__(self, path: str | Path, poll_s: float = 0.05):
        self.path = Path(path)
        self.poll_s = poll_s
        self.dropped: frozenset[bytes] = frozenset()
        self._mtime: float | None = None
        self.reload()

    def blocks(self, pub_key: bytes) -> bool:
        return pub_key in self.dropped

    def reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self.dropped, self._mtime = frozenset(), None
            return
        if mtime == self._mtime:
            return
        try:
            d = json.loads(self.path.read_text() or "{}")
            self.dropped = frozenset(bytes.fromhex(k) for k in d.get("drop", []))
            self._mtime = mtime
        except (ValueError, OSError) as exc:  # half-written file: try again next poll
            log.warning("ignoring unreadable fault control %s: %s", self.path, exc)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self.reload()


def write_faults(path: str | Path, drop: list[bytes]) -> None:
    """Atomically replace a control file (used by tests and `gridledger testnet partition`)."""
    p = Path(path)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"drop": sorted(k.hex() for k in drop)}))
    os.replace(tmp, p)
