"""`gridledger demo` end to end: exit status, report, chain contents, audit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
        total = sum(int(v) for k, v in state.items() if k.startswith(f"bal/{d}/"))
        assert total == int(state[f"supply/{d}"])
    # every settled slot names its certificate and two readings
    done = [decode(v) for k, v in state.items() if k.startswith("settle/done/")]
    assert len(done) >= 12
    assert all(d["certificate"] and len(d["readings"]) == 2 for d in done)
    # CASE 1 rows of Table III: three intervals, the last with three trades
    report = text.split("auditing the chain")[1]
    case1 = report.split("CASE 1")[1].split("CASE 2")[0]
    assert case1.count("tr3") == 2 and case1.count("t3–t4") == 1


def test_demo_refuses_a_used_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").write_text("something")
    assert main(["demo", "--home", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert not (tmp_path / "genesis.json").exists()
