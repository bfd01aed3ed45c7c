"""Real processes: `gridledger node start` as a subprocess, the HTTP client, SSE, SIGKILL."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gridledger.chain.keys import load_key
from gridledger.node.client import LedgerClient, Signer
from gridledger.node.home import init_home

pytestmark = pytest.mark.xdist_group("ledger-node-procs")
GRIDLEDGER = [sys.executable, "-m", "gridledger.cli"]


def start_node(home: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    (home / "node.addr").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [*GRIDLEDGER, "node", "start", "--home", str(home), "--api", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
        if proc.poll() is not None:
            raise AssertionError(f"node exited: {proc.stdout.read()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("node did not start in 60 s")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GRIDLEDGER, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    init_home(h, "proc-test")
    return h


def test_node_serves_client_and_streams_blocks(home):
    proc, url = start_node(home, "--eager")
    try:
        dso_key = load_key(home / "keys" / "dso.json")[0]
        vendor = load_key(home / "keys" / "vendor.json")[0].pub_hex
        got: list[dict] = []

        def listen():
            with LedgerClient(url) as c:
                for ev in c.events(since=0, timeout_s=20):
                    got.append(ev)
                    if any(t["code"] == 0 for t in ev["txs"]):
                        return

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        with LedgerClient(url) as c:
            st = Signer(c, dso_key).send(
                "token.transfer", {"amount": 3, "denom": "utoken", "to": vendor}, wait=True
            )
        t.join(20)
        assert st["code"] == 0
        assert any(tx["txid"] == st["tx"]["id"] for ev in got for tx in ev["txs"])
        # the CLI talks to the same node
        r = cli("query", "account", vendor, "--home", str(home))
        assert r.returncode == 0 and '"utoken": 3' in r.stdout
        r = cli(
            "tx",
            "token.mint",
            f'{{"amount":1,"denom":"utoken","to":"{vendor}"}}',
            "--key",
            str(home / "keys" / "vendor.json"),
            "--home",
            str(home),
        )
        assert r.returncode == 1 and "ROLE_NOT_ALLOWED" in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    r = cli("verify", "--home", str(home))
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
    txid = st["tx"]["id"]
    r = cli("prove", txid, "--home", str(home), "--out", str(home / "proof.json"))
    assert r.returncode == 0, r.stderr
    r = cli("verify-proof", str(home / "proof.json"), "--genesis", str(home / "genesis.json"))
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout


def crash_rounds(home: Path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    dso_key = load_key(home / "keys" / "dso.json")[0]
    ict = load_key(home / "keys" / "ict.json")[0].pub_hex
    committed: dict[str, tuple[int, int]] = {}
    total = 0
    for _ in range(rounds):
        proc, url = start_node(home, "--eager")
        stop = threading.Event()

        def load(url=url, stop=stop):
            with LedgerClient(url, timeout_s=5) as c:
                signer = Signer(c, dso_key)
                while not stop.is_set():
                    raws = [
                        signer.sign("token.transfer", {"amount": 1, "denom": "utoken", "to": ict})
                        for _ in range(20)
                    ]
                    try:
                        res = c.submit_batch(raws)
                        for r in res:
                            if r["code"] != 0:
                                signer.seq = c.account(dso_key.pub_hex)["next_seq"]
                                break
                        for r in res:
                            st = c.tx(r["txid"]) if r["code"] == 0 else None
                            if st and st["status"] == "committed":
                                committed[r["txid"]] = (st["height"], st["index"])
                    except Exception:
                        return  # the node died under us

        t = threading.Thread(target=load, daemon=True)
        t.start()
        time.sleep(rng.uniform(0.3, 2.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        t.join(10)
        total = len(committed)
    proc, url = start_node(home)
    try:
        with LedgerClient(url) as c:
            for txid, (h, i) in committed.items():
                st = c.tx(txid)
                assert st is not None and st["status"] == "committed", txid
                assert (st["height"], st["index"]) == (h, i)
            bal = c.account(ict)["balances"]["utoken"]
            assert bal >= total  # every reported-committed transfer is there (and maybe more)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    r = cli("verify", "--home", str(home), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert total > 0


def test_sigkill_loses_nothing_reported_committed(home):
    crash_rounds(home, rounds=2, seed=1)


@pytest.mark.slow
def test_sigkill_many_times(home):
    crash_rounds(home, rounds=6, seed=2)
