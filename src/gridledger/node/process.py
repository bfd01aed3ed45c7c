"""Run a node as a separate OS process and find its API (benchmarks, demos, on-chain ADMM).

A node started with ``--api 127.0.0.1:0`` writes the address it bound to ``HOME/node.addr``; the
caller waits for that file rather than guessing a port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

SOLO_NODE_COMMAND = (sys.executable, "-m", "gridledger.cli", "node", "start")


class NodeStartError(RuntimeError):
    """The node process exited or did not publish its API address in time."""


class NodeProcess:
    """A running node process and its API URL; ``stop()`` (or ``with``) ends it."""

    def __init__(self, proc: subprocess.Popen, url: str, log: IO[str] | None) -> None:
        self.proc = proc
        self.url = url
        self._log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_node_process(
    home: Path,
    *,
    command: Sequence[str] = SOLO_NODE_COMMAND,
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    timeout_s: float = 60.0,
) -> NodeProcess:
    """Start ``command --home HOME --api 127.0.0.1:0 *extra_args`` and wait for its address.

    Output goes to ``log_path`` (default: discarded).  Raises :class:`NodeStartError`, naming
    the log, when the process dies or publishes no address within ``timeout_s``.
    """
    addr_file = home / "node.addr"
    addr_file.unlink(missing_ok=True)  # a stale address from an earlier run would mislead us
    log = log_path.open("w") if log_path is not None else None
    proc = subprocess.Popen(
        [*command, "--home", str(home), "--api", "127.0.0.1:0", *extra_args],
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + timeout_s
    while not addr_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            running = proc.poll() is None
            NodeProcess(proc, "", log).stop()
            where = f"; see {log_path}" if log_path is not None else ""
            why = f"published no API address in {timeout_s:g} s" if running else "exited"
            raise NodeStartError(f"node at {home} {why} (exit code {proc.returncode}){where}")
        time.sleep(0.05)
    return NodeProcess(proc, addr_file.read_text().strip(), log)
