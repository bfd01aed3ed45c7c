"""start_node_process: a real node subprocess found through node.addr, and a clear failure."""

import sys
from pathlib import Path

import pytest

from gridledger.node.client import LedgerClient
from gridledger.node.home import init_home
from gridledger.node.process import NodeStartError, start_node_process

pytestmark = pytest.mark.xdist_group("ledger-node-procs")


def test_starts_serves_and_stops(tmp_path: Path) -> None:
    home = tmp_path / "n1"
    init_home(home, "process-test")
    (home / "node.addr").write_text("http://127.0.0.1:1\n")  # stale file from an earlier run
    with start_node_process(home, log_path=tmp_path / "node.log") as node:
        assert node.url != "http://127.0.0.1:1"
        with LedgerClient(node.url) as client:
            assert client.status()["chain_id"] == "process-test"
    assert node.proc.poll() is not None


def test_a_node_that_cannot_start_names_its_log(tmp_path: Path) -> None:
    home = tmp_path / "not-initialised"
    home.mkdir()
    log = tmp_path / "node.log"
    with pytest.raises(NodeStartError, match=r"exited.*node\.log"):
        start_node_process(home, log_path=log, timeout_s=30)
    assert log.read_text()  # the node's own error is kept for the reader


def test_a_silent_process_times_out(tmp_path: Path) -> None:
    silent = [sys.executable, "-c", "import time; time.sleep(30)", "--"]
    with pytest.raises(NodeStartError, match="published no API address"):
        start_node_process(tmp_path, command=silent, timeout_s=1)
