"""`gridledger demo` end to end: exit status, report, chain contents, audit."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gridledger.chain.contracts.aggregator import round_key
from gridledger.chain.contracts.billing import bill_prefix
from gridledger.chain.contracts.settlement import DONE_PREFIX
from gridledger.chain.contracts.tokens import balance_prefix, supply_key
from gridledger.chain.encoding import decode
from gridledger.chain.store import Store
from gridledger.chain.verify import verify_chain
from gridledger.cli import main


@pytest.mark.xdist_group("demo")
def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    assert main(["demo", "--home", str(home), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # progress was shown while it worked, then the report
    assert re.search(r"\[\s*\d+\.\ds\] == CASE 1", text)
    assert "Audit (gridledger verify): PASSED" in text
    for title in ("CASE 1", "CASE 2", "Seller selection"):
        assert title in text
    html = (out / "demo.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # voltage profiles of the three grids
    # the chain itself, independently of the report
    assert verify_chain(home / "data" / "chain.db").ok
    store = Store(home / "data" / "chain.db")
    try:
        state = {bytes(k).decode(): bytes(v) for k, v in store.state_items(writer=True)}
    finally:
        store.close()
    matches = {k: decode(v) for k, v in state.items() if k.startswith("market/match/")}
    statuses = sorted(m["status"] for m in matches.values())
    # six seed-000 trades delivered and settled; the seed-002 buyers got network-aware sellers
    assert statuses.count("settled") >= 6
    assert all(m["certificate"] for m in matches.values())
    for d in ("utoken", "ewh"):
        total = sum(int(v) for k, v in state.items() if k.startswith(balance_prefix(d)))
        assert total == int(state[supply_key(d)])
    # every settled slot names its certificate and two readings
    done = [decode(v) for k, v in state.items() if k.startswith(DONE_PREFIX)]
    assert len(done) >= 12
    assert all(d["certificate"] and len(d["readings"]) == 2 for d in done)
    # CASE 1 rows of Table III: three intervals, the last with three trades
    report = text.split("auditing the chain")[1]
    case1 = report.split("CASE 1")[1].split("CASE 2")[0]
    assert case1.count("tr3") == 2 and case1.count("t3–t4") == 1
    # the day-ahead DER schedule: S1 ran its 40 iterations, the schedule as run is within
    # 0.1 % of the centralized optimum (solved independently here), S2 billed every hour
    day = decode(state[round_key("day-ahead", "state")])
    assert day["status"] == "max_iter" and len(day["history"]) == 40
    from gridledger.agents.admm_chain import evaluate_chain_schedule
    from gridledger.grid.distflow import solve_central
    from gridledger.grid.feeders import case33bw

    feeder = case33bw()
    _, ran = evaluate_chain_schedule(feeder, decode(state[round_key("day-ahead", "schedule")]))
    optimum = solve_central(feeder).objective_usd
    assert ran.feasible and 0 <= ran.cost_usd - optimum <= 1e-3 * optimum
    bills = [decode(v) for k, v in state.items() if k.startswith(bill_prefix("day-ahead"))]
    bills = [b for b in bills if "net_utoken" in b]
    assert len(bills) == 33 * 24 and any(b["penalty_utoken"] > 0 for b in bills)
    assert re.search(r"Day-ahead DER schedule .*: 40 iterations \(max_iter\)", report)
    assert re.search(r"schedule as run: .* \(gap 0\.0\d\d %, feasible\)", report)
    # the demand response event: paid from its escrowed budget, its trace re-derived from state
    from gridledger.chain.contracts import dr

    traces = [decode(v) for k, v in state.items() if k.startswith("dr/trace/")]
    assert len(traces) == 1
    trace = traces[0]
    event = decode(state[dr.event_key(trace["event"])])
    for row in trace["members"]:
        again = dr.member_trace(
            lambda k: decode(state[k]) if k in state else None, event, row["member"]
        )
        assert again == {k: row[k] for k in again}
        assert len(row["baseline_days"]) == 10 and row["reduction_wh"] > 0
    assert sum(r["pay_utoken"] for r in trace["members"]) == trace["paid_utoken"] > 0
    assert trace["paid_utoken"] + trace["refund_utoken"] == event["budget_utoken"]
    assert int(state.get(f"bal/utoken/{dr.ESCROW}", b"0")) == 0
    assert re.search(r"Demand response .*: line 1-5 of microgrid9 at 107\.0 %", report)
    verified = re.search(r"with the verified reductions (\d+\.\d) %", report)
    assert verified and float(verified[1]) <= 100.0


def test_demo_refuses_a_used_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").write_text("something")
    assert main(["demo", "--home", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert not (tmp_path / "genesis.json").exists()


def _settled_case1(db: Path) -> list[str]:
    store = Store(db)
    try:
        state = {bytes(k).decode(): bytes(v) for k, v in store.state_items(writer=True)}
    finally:
        store.close()
    return sorted(decode(v)["status"] for k, v in state.items() if k.startswith("market/match/"))


@pytest.mark.slow
@pytest.mark.xdist_group("demo-processes")
def test_demo_with_node_and_agent_processes(tmp_path: Path, capsys) -> None:
    """A node process and three agent processes that use it only through its HTTP API."""
    home = tmp_path / "home"
    args = [
        "demo",
        "--home",
        str(home),
        "--out",
        str(tmp_path / "out"),
        "--processes",
        "--slot-s",
        "4",
        "--phases",
        "case1",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    pids = re.findall(r"agent process (\d+): (dso|meters|prosumers)", text)
    assert {role for _, role in pids} == {"dso", "meters", "prosumers"}
    assert len({pid for pid, _ in pids}) == 3 and str(os.getpid()) not in text
    assert (home / "logs" / "node.log").exists()
    assert verify_chain(home / "data" / "chain.db").ok
    assert _settled_case1(home / "data" / "chain.db") == ["settled"] * 3


@pytest.mark.slow
@pytest.mark.xdist_group("demo-processes")
def test_demo_on_a_four_validator_bft_testnet(tmp_path: Path, capsys) -> None:
    home = tmp_path / "home"
    args = [
        "demo",
        "--home",
        str(home),
        "--out",
        str(tmp_path / "out"),
        "--validators",
        "4",
        "--slot-s",
        "6",
        "--phases",
        "case1",
    ]
    assert main(args) == 0
    assert "BFT testnet of 4 validator processes" in capsys.readouterr().out
    dbs = [home / "testnet" / f"node{i}" / "data" / "chain.db" for i in range(4)]
    assert all(verify_chain(db).ok for db in dbs)
    assert _settled_case1(dbs[0]) == ["settled"] * 3
