"""Start-up of agent processes: each writes ``ready`` at the head of its log once its model is
built, so the timing of a round that follows is the round alone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_ready(home: Path, procs: list[subprocess.Popen[bytes]], timeout_s: float = 300) -> bool:
    """Wait until every process's ``agents-<i>.log`` in ``home`` starts with ``ready``; False if
    one of them exits first or ``timeout_s`` passes."""
    ready_by = time.monotonic() + timeout_s
    logs = [home / f"agents-{i}.log" for i in range(len(procs))]
    while not all(log.read_text().startswith("ready") for log in logs):
        if time.monotonic() > ready_by or any(p.poll() is not None for p in procs):
            return False
        time.sleep(0.05)
    return True
