"""What the API's hardening costs and buys, each against a reference measured in the same run.

- Erasing personal data: the store's erase (tombstone, zeroed pages, WAL checkpoint, bounded
  incremental vacuum) against the former erase, which rewrote the whole store (VACUUM) each
  time, on identical stores of ``--store-mb`` MiB.
- Half-sent requests: ``--conns`` connections that send half a request's headers to a node's
  API (uvicorn in this process) with the request deadline (``--deadline-s``), against the
  same with uvicorn's own protocol: how many are dropped, and when.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from gridledger.node.http_server import uvicorn_config
from gridledger.node.offchain import MAX_BLOB_BYTES, OffchainStore


def erase_costs(store_mb: int, erases: int, tmp: Path) -> dict[str, float]:
    path = tmp / "offchain.db"
    n = max(erases, store_mb * 2**20 // MAX_BLOB_BYTES)
    store = OffchainStore(path, quota_bytes=2**40, quota_records=10**6)
    hashes = [store.put(os.urandom(MAX_BLOB_BYTES), f"subject{i}") for i in range(n)]
    store.close()
    shutil.copy(path, tmp / "reference.db")
    store = OffchainStore(path, quota_bytes=2**40, quota_records=10**6)
    new = []
    for i in range(erases):
        t = time.perf_counter()
        store.erase(hashes[i], f"subject{i}")
        new.append(time.perf_counter() - t)
    store.close()
    # the former erase: clear the row, then checkpoint and VACUUM the whole file
    conn = sqlite3.connect(tmp / "reference.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    old = []
    for i in range(erases):
        t = time.perf_counter()
        conn.execute(
            "UPDATE records SET data=NULL, erased_ms=1 WHERE hash=? AND owner=?",
            (hashes[i], f"subject{i}"),
        )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        old.append(time.perf_counter() - t)
    conn.close()
    new.sort()
    old.sort()
    return {
        "store_mib": n * MAX_BLOB_BYTES / 2**20,
        "erase_ms_median": 1000 * new[len(new) // 2],
        "erase_ms_max": 1000 * new[-1],
        "vacuum_erase_ms_median": 1000 * old[len(old) // 2],
        "speedup": old[len(old) // 2] / new[len(new) // 2],
    }


def half_sent(conns: int, deadline_s: float, with_deadline: bool) -> dict[str, float]:
    app = FastAPI()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    if with_deadline:
        config = uvicorn_config(app, request_timeout_s=deadline_s)
    else:
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = sock.getsockname()[1]
    clients = []
    t0 = time.monotonic()
    for _ in range(conns):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        c.setblocking(False)
        clients.append(c)
    open_ = set(range(conns))
    last_close = 0.0
    wait_until = t0 + 3 * deadline_s + 5
    while open_ and time.monotonic() < wait_until:
        for i in list(open_):
            try:
                if clients[i].recv(1) == b"":
                    open_.discard(i)
                    last_close = time.monotonic() - t0
            except BlockingIOError:
                pass
            except ConnectionResetError:
                open_.discard(i)
                last_close = time.monotonic() - t0
        time.sleep(0.05)
    for c in clients:
        c.close()
    server.should_exit = True
    thread.join(10)
    return {
        "dropped": conns - len(open_),
        "held": len(open_),
        "all_dropped_after_s": last_close if not open_ else None,
        "watched_s": time.monotonic() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store-mb", type=int, default=128)
    p.add_argument("--erases", type=int, default=7)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--deadline-s", type=float, default=2.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        erase = erase_costs(args.store_mb, args.erases, Path(d))
    print(
        f"erase in a {erase['store_mib']:.0f} MiB store: {erase['erase_ms_median']:.1f} ms "
        f"(max {erase['erase_ms_max']:.1f}) vs {erase['vacuum_erase_ms_median']:.0f} ms with "
        f"a whole-store VACUUM: {erase['speedup']:.0f}x",
        file=sys.stderr,
    )
    timed = half_sent(args.conns, args.deadline_s, True)
    plain = half_sent(args.conns, args.deadline_s, False)
    print(
        f"{args.conns} half-sent requests, deadline {args.deadline_s:g} s: {timed['dropped']} "
        f"dropped, the last after {timed['all_dropped_after_s'] or 0:.1f} s; uvicorn alone: "
        f"{plain['held']} still held after {plain['watched_s']:.1f} s",
        file=sys.stderr,
    )
    print(json.dumps({"erase": erase, "half_sent": {"deadline": timed, "uvicorn": plain}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
