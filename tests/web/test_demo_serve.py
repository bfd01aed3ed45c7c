"""`gridledger demo --serve`: the demo ends by printing the web app's URL and serves the demo
chain (node API and app) until interrupted; without --serve it ends on its own (test_demo.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


@pytest.mark.xdist_group("demo")
def test_demo_serve_prints_the_url_and_serves_until_interrupted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "gridledger.cli", "demo", "--no-schedule", "--phases", "case1"]
    cmd += [
        "--quiet",
        "--home",
        str(home),
        "--out",
        str(tmp_path / "out"),
        "--serve",
        "127.0.0.1:0",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        url, seen = None, []
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"demo ended before serving: {''.join(seen[-20:])}"
            seen.append(line)
            if line.startswith("web app on the demo chain: "):
                url = line.split(": ", 1)[1].split()[0]
        assert url, "no URL printed"
        for _ in range(100):  # the node binds right after printing
            try:
                page = httpx.get(url, timeout=2)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert page.status_code == 200 and "<title>gridledger</title>" in page.text
        status = httpx.get(url + "status").json()
        assert status["chain_id"] == "gridledger-demo" and status["height"] > 0
        matches = httpx.get(url + "web/state", params={"prefix": "market/match/"}).json()
        assert {m["value"]["status"] for m in matches["items"]} >= {"settled"}
        assert proc.poll() is None  # still serving
        # Ctrl-C ends it even while a browser listens to the event stream
        with httpx.stream("GET", url + "events", timeout=httpx.Timeout(5, read=60)) as events:
            next(events.iter_lines())  # connected
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0  # the demo's own status: audit passed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
