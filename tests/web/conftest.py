"""A live chain for the browser tests: a real node process (solo consensus on the wall clock,
5-second market slots), the demo's parties registered and funded, and the demo's DSO agent and
two meters stepping in a thread over HTTP. The browser is the system's Chromium."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("GRIDLEDGER_CHROMIUM", "/usr/bin/chromium")
SLOT_MS = 5000
TIMEZONE = "Europe/Amsterdam"  # not UTC, so that local time -> UTC is really exercised


def chromium_or_skip(collecting: bool = False) -> str:
    """The system Chromium's path. Missing: each browser test fails under CI=true (the rest of
    the suite still runs); otherwise one skip line for the whole module (at collection)."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path:
        return path
    msg = f"browser tests need Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        if collecting:
            return ""
        pytest.fail(msg + ": missing under CI=true", pytrace=False)
    pytest.skip(msg + ": not installed, browser tests skipped", allow_module_level=True)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    # pytest-playwright's browser, but the system Chromium (Playwright's download is not used)
    return {
        **browser_type_launch_args,
        "executable_path": chromium_or_skip(),
        "args": ["--no-sandbox"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_context_args,
        "timezone_id": TIMEZONE,
        "locale": "en-US",
        "viewport": {"width": 1280, "height": 800},
    }


class LiveChain:
    def __init__(self, home: Path) -> None:
        from gridledger.agents.meter_sim import MeterSim
        from gridledger.agents.runner import HttpChain
        from gridledger.demo.plan import agents_for_role, key_of, make_plan
        from gridledger.demo.run import genesis_of, setup
        from gridledger.demo.scenario import PHASES
        from gridledger.node.home import NodeConfig
        from gridledger.node.process import start_node_process

        now = time.time_ns() // 1_000_000
        self.home = home
        phase = next(p for p in PHASES if p.key == "case1")  # the 9-bus microgrid
        plan = make_plan(home, now - now % SLOT_MS, SLOT_MS, phases=(phase,))
        self.plan = plan
        (home / "data").mkdir(exist_ok=True)
        (home / "genesis.json").write_bytes(genesis_of(plan) + b"\n")
        NodeConfig(
            plan["chain_id"],
            api="127.0.0.1:0",
            block_interval_ms=250,
            synchronous="NORMAL",
            validator_key=plan["keys"]["validator"],
        ).save(home)
        self.node = start_node_process(
            home,
            command=[sys.executable, "-m", "gridledger.demo.node_proc"],
            log_path=home / "node.log",
        )
        self.url = self.node.url
        self.client = HttpChain(self.url)
        setup(self.client, plan, lambda: time.sleep(0.1), lambda _msg: None)
        self.key = lambda name: key_of(plan, name)
        first = self.client.time_ms() - self.client.time_ms() % SLOT_MS
        dso = agents_for_role(plan, "dso")
        for a in dso:
            a.warm_up()
        meters = [
            MeterSim(
                name,
                key_of(plan, f"meter-{name}"),
                key_of(plan, name).pub_hex,
                first_slot_ms=first,
                last_slot_ms=first + 3_600_000,
                slot_ms=SLOT_MS,
            )
            for name in ("DG2", "L5")
        ]
        self.agents = [*dso, *meters]
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from gridledger.agents.runner import HttpChain

        client = HttpChain(self.url)  # its own connection: httpx clients are not shared
        last = -1
        while not self._stop.is_set():
            h = client.height()
            if h != last:
                last = h
                for a in self.agents:
                    try:
                        a.step(client)
                    except Exception as exc:  # reported by the tests that wait on the agents
                        self.errors.append(f"{type(a).__name__}: {exc}")
            time.sleep(0.1)
        client.close()

    def state(self, key: str) -> Any:
        return self.client.state(key)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()
        self.node.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    chromium_or_skip()  # fail under CI before starting a chain for nothing
    chain = LiveChain(tmp_path_factory.mktemp("webchain"))
    yield chain
    chain.close()
