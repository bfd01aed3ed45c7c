"""`gridledger dr` against a real node process: certify, open, enrol, read, status, and the
refusals (bad units, double enrolment, settling an event that has not ended)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gridledger.chain.keys import KeyPair, load_key, save_key
from gridledger.cli import main
from gridledger.node.client import LedgerClient, Signer
from gridledger.node.home import init_home

pytestmark = pytest.mark.xdist_group("ledger-node-procs")
H = 3_600_000


def _start_node(home: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gridledger.cli",
            "node",
            "start",
            "--home",
            str(home),
            "--api",
            "127.0.0.1:0",
            "--eager",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        addr = home / "node.addr"
        if addr.exists():
            url = addr.read_text().strip()
            try:
                with LedgerClient(url) as c:
                    c.status()
                return proc, url
            except Exception:
                pass
        assert proc.poll() is None, "the node exited"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("node did not start in 60 s")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def test_dr_commands_against_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    init_home(home, "dr-cli", contracts=["gridledger.chain.contracts.dr"])
    alice, meter = KeyPair.generate(), KeyPair.generate()
    save_key(tmp_path / "alice.json", alice, "prosumer")
    save_key(tmp_path / "meter.json", meter, "meter")
    proc, url = _start_node(home)
    try:
        with LedgerClient(url) as client:
            vendor = Signer(client, load_key(home / "keys" / "vendor.json")[0])
            assert (
                vendor.send(
                    "member.register",
                    {"pub_key": alice.pub_hex, "role": "prosumer", "bus": 5},
                    wait=True,
                )["code"]
                == 0
            )
            assert (
                vendor.send(
                    "member.bind_meter",
                    {"meter": meter.pub_hex, "prosumer": alice.pub_hex},
                    wait=True,
                )["code"]
                == 0
            )
        now = int(time.time() * 1000)  # solo consensus keeps block time on the wall clock
        node = ["--node", url]
        cert = tmp_path / "cert.json"
        peak = ["--line", "1-5", "--load-scale", "2.4", "--dg-output", "0"]
        assert main(["dr", "certify", *peak, "--reduce", "5:400", "--out", str(cert)]) == 0
        assert "certificate digest" in capsys.readouterr().out
        assert main(["dr", "certify", *peak, "--reduce", "5:10"]) == 2
        assert "certified only when" in capsys.readouterr().err
        start = now - now % H + 3 * H
        opening = [
            "dr",
            "open",
            "--start",
            _iso(start),
            "--request-kw",
            "400",
            "--incentive",
            "2",
            "--eligible",
            alice.pub_hex,
            "--method",
            "mean",
            "--days",
            "3",
            "--certificate",
            str(cert),
            "--key",
            str(home / "keys" / "dso.json"),
            *node,
        ]
        assert main([*opening, "--budget", "1.0000001"]) == 2
        assert "--budget" in capsys.readouterr().err
        assert main([*opening, "--budget", "100", "--json"]) == 0
        event = json.loads(capsys.readouterr().out)["txid"]
        enrol = ["dr", "enrol", event, "--key", str(tmp_path / "alice.json"), *node]
        assert main(enrol) == 0
        capsys.readouterr()
        assert main(enrol) == 1
        assert "already enrolled" in capsys.readouterr().out
        last_hour = now - now % H - H
        read = [
            "dr",
            "read",
            "--key",
            str(tmp_path / "meter.json"),
            "--start",
            str(last_hour),
            *node,
        ]
        assert main([*read, "--import-kwh", "1.0005"]) == 2
        assert main([*read, "--import-kwh", "1.5"]) == 0
        capsys.readouterr()
        assert main(["dr", "settle", event, "--key", str(home / "keys" / "dso.json"), *node]) == 1
        assert "ends at" in capsys.readouterr().out
        assert main(["dr", "status", event, "--json", *node]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["event"]["enrolled"] == [alice.pub_hex]
        assert doc["event"]["budget_utoken"] == 100_000_000
        assert doc["event"]["requested_w"] == 400_000 and doc["trace"] is None
        assert main(["dr", "status", event, *node]) == 0
        assert "1 of 1 eligible enrolled" in capsys.readouterr().out
        assert main(["dr", "status", "00" * 32, *node]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)
