"""``gridledger community`` on a SimBench LV grid: 20 prosumers (more than the grid's 13 loads,
so some share a load) trade for an hour; the report's invariants are re-checked from the chain's
own database, independently of the code that reported them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gridledger.chain.contracts.market import ESCROW
from gridledger.chain.verify import verify_chain
from gridledger.cli import main
from gridledger.demo.localchain import LocalChain

GRID = "simbench:1-LV-rural1--0-sw"  # 15 buses, 13 loads, 4 PV units


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    home = tmp_path_factory.mktemp("community") / "home"
    html = home.parent / "report.html"
    import contextlib
    import io

    out = io.StringIO()
    # an interval's loss shares are split over several market.losses records when it holds
    # more trades than one record carries (128); a small split makes this run exercise it
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as mp:
        mp.setattr("gridledger.agents.dso_agent.LOSS_SHARES_PER_TX", 3)
        code = main(["community", "--grid", GRID, "--prosumers", "20", "--hours", "1",
                     "--home", str(home), "--json", "--html", str(html)])  # fmt: skip
    assert code == 0, out.getvalue()[-2000:]
    return json.loads(out.getvalue()), home, html


def _chain(home: Path) -> LocalChain:
    genesis = (home / "genesis.json").read_bytes().rstrip(b"\n")
    return LocalChain(home, genesis, None, 0)


def test_json_fields_and_invariants(run: tuple[dict, Path, Path]) -> None:
    r, _, html = run
    assert r["prosumers"] == 20 and r["buses"] == 15 and r["slots"] == 4
    assert r["wall_s"] > 0
    assert set(r["invariants"]) == {
        "supply_equals_sum_of_balances",
        "no_negative_balance",
        "escrow_returned_or_spent",
        "every_match_certified_or_refused_with_reason",
        "verify_passes",
    }
    assert all(r["invariants"].values()), r["invariant_details"]
    assert len(r["per_slot"]) == 4
    row = r["per_slot"][0]
    fields = {"trades", "p2p_kwh", "grid_kwh", "loss_kw_before_ropf", "loss_kw_after_ropf",
              "vm_min_pu", "vm_max_pu", "most_loaded_line", "refusals"}  # fmt: skip
    fields |= {"token_flows_utoken", "orders_refused"}
    assert set(fields) <= set(row)
    assert sum(s["trades"] for s in r["per_slot"]) > 0  # at 10:00 in June the PV sells
    assert "data:image/png;base64," in html.read_text()


def test_invariants_hold_in_the_chain_itself(run: tuple[dict, Path, Path]) -> None:
    r, home, _ = run
    chain = _chain(home)
    try:
        for denom in ("utoken", "ewh"):
            balances = [chain.state_int(k) for k in chain.keys_with_prefix(f"bal/{denom}/")]
            assert sum(balances) == chain.state_int(f"supply/{denom}")
            assert min(balances) >= 0
        # money: only genesis funded the prosumers (200 token each); nothing minted since
        assert chain.state_int("supply/utoken") == 20 * 200_000_000
        assert chain.balance("utoken", ESCROW) == 0
        matches = [chain.state(k) for k in chain.keys_with_prefix("market/match/")]
        assert matches and all(m["status"] in ("settled", "rejected") for m in matches)
        assert all(m["reasons"] for m in matches if m["status"] == "rejected")
        # per interval: the matches of one slot share one certificate document
        by_doc = Counter(m["document_digest"] for m in matches if m["status"] == "settled")
        assert max(by_doc.values()) > 3  # more trades than one loss record carried here
        # and each of them has its own loss share from the split records
        for m in matches:
            if m["status"] == "settled":
                steps = chain.state(f"market/losses/{m['match']['match_id']}")
                assert steps and steps[0][0] == m["match"]["start_ms"]
        # the report's P2P energy is what settlement recorded as delivered, slot by slot
        delivered: Counter[int] = Counter()
        for k in chain.keys_with_prefix("settle/done/"):
            d = chain.state(k)
            delivered[d["slot_start_ms"]] += d["delivered_wh"]
        starts = sorted(delivered)
        slot_of = {s: (s - starts[0]) // 900_000 for s in starts}
        for s, wh in delivered.items():
            assert r["per_slot"][slot_of[s]]["p2p_kwh"] == pytest.approx(wh / 1000)
        # 20 prosumers on 13 loads: some buses carry two prosumers
        buses = Counter(
            chain.state(k)["bus"]
            for k in chain.keys_with_prefix("member/")
            if chain.state(k)["role"] == "prosumer"
        )
        assert sum(buses.values()) == 20 and max(buses.values()) >= 2
    finally:
        chain.close()
    assert verify_chain(home / "data" / "chain.db").ok


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "simbench:no-such-grid", "--prosumers", "5", "--hours", "1"], "no-such-grid"),
        (["--grid", "nonsense-case", "--prosumers", "5", "--hours", "1"], "unknown case"),
        (["--grid", GRID, "--prosumers", "0", "--hours", "1"], "--prosumers"),
        (["--grid", GRID, "--prosumers", "5", "--hours", "0"], "--hours"),
        (["--grid", GRID, "--prosumers", "5", "--hours", "49"], "--hours"),
        (["--grid", GRID, "--prosumers", "5", "--hours", "0.1"], "--hours"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["community", *args, "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "gridledger: error:" in err and message in err
    assert not home.exists()
