"""HttpChain against a real node process (the demo's solo node with empty blocks)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridledger.agents.runner import HttpChain, run_agents
from gridledger.chain import codes
from gridledger.chain.contracts.membership import member_key
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair, save_key
from gridledger.node.home import NodeConfig

CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]


@pytest.fixture
def node(tmp_path: Path):
    val, dso, vendor = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    save_key(tmp_path / "keys" / "validator.json", val, "validator")
    members = [
        {"pub_key": dso.pub_hex, "role": "dso", "name": "DSO"},
        {"pub_key": vendor.pub_hex, "role": "vendor", "name": "vendor"},
    ]
    genesis = make_genesis(
        "runner-test", time.time_ns() // 10**6, [(val.pub_hex, 1)], members, [], CONTRACTS
    )
    (tmp_path / "genesis.json").write_bytes(genesis + b"\n")
    NodeConfig("runner-test", api="127.0.0.1:0", block_interval_ms=100, synchronous="NORMAL").save(
        tmp_path
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridledger.demo.node_proc", "--home", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "node.addr").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        yield (tmp_path / "node.addr").read_text().strip(), dso, vendor
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.xdist_group("node-process")
def test_http_chain_submits_reads_and_resyncs(node) -> None:
    url, dso, vendor = node
    a, b = HttpChain(url), HttpChain(url)
    try:
        # empty blocks: block time moves on with nothing to do (meters wait for it)
        t0 = a.time_ms()
        deadline = time.monotonic() + 10
        while a.time_ms() <= t0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert a.state("market/params")["slot_ms"] == 900_000
        assert a.state("market/no-such-key") is None
        pk = KeyPair.generate().pub_hex
        assert b._next_seq(vendor.pub_hex) == 0  # b caches the vendor's sequence number now
        out = a.submit(vendor, "member.register", {"pub_key": pk, "role": "prosumer", "bus": 5})
        assert out.ok and len(out.txid) == 64
        # b's cached number is stale (a used it): refused as a replay, b resyncs and succeeds
        assert b.submit(
            vendor,
            "member.register",
            {"pub_key": KeyPair.generate().pub_hex, "role": "prosumer", "bus": 7},
        ).ok
        refused = a.submit(dso, "market.configure", {"slot_ms": 1500})
        assert refused.code == codes.INVALID_PAYLOAD and "whole number of seconds" in refused.log

        class Waiter:
            done = False

            def step(self, client: HttpChain) -> int:
                self.done = client.state(member_key(pk)) is not None
                return 0

        w = Waiter()
        run_agents(a, [w], until_ms=0, deadline_s=20)
        assert w.done and a.state(member_key(pk))["bus"] == 5
    finally:
        a.close()
        b.close()
