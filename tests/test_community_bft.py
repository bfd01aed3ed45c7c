"""``gridledger community --validators 4``: 20 prosumers trade two 15-minute slots on four real
BFT validator processes running a simulated clock.  The report's invariants are re-checked
from the validators' own databases: every node's store replays from genesis (``verify``) and
all four hold the same block at every height they share."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from gridledger.chain.contracts.market import ESCROW
from gridledger.chain.store import Store
from gridledger.chain.verify import verify_chain
from gridledger.cli import main
from gridledger.demo.localchain import LocalChain

GRID = "simbench:1-LV-rural1--0-sw"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    home = tmp_path_factory.mktemp("community-bft") / "home"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["community", "--grid", GRID, "--prosumers", "20", "--hours", "0.5",
                     "--validators", "4", "--speedup", "100", "--home", str(home),
                     "--json"])  # fmt: skip
    assert code == 0, out.getvalue()[-2000:]
    return json.loads(out.getvalue()), home


@pytest.mark.xdist_group("community-bft")
def test_four_validators_agree_and_every_invariant_holds(run: tuple[dict, Path]) -> None:
    r, home = run
    assert r["prosumers"] == 20 and r["slots"] == 2 and len(r["per_slot"]) == 2
    assert all(r["invariants"].values()), r["invariant_details"]
    assert "validators_same_app_hash" in r["invariants"]
    v = r["validators"]
    assert v["count"] == 4 and len(set(v["app_hashes"])) == 1 and len(v["app_hashes"]) == 4
    assert v["peak_rss_mb"] > 0
    assert sum(s["trades"] for s in r["per_slot"]) > 0  # at 10:00 in June the PV sells

    nodes = sorted((home / "testnet").glob("node*"))
    assert len(nodes) == 4
    # independently of the report: each node's database replays from genesis, and the four
    # hold the same block hash at every height they all have
    per_node = []
    for d in nodes:
        assert verify_chain(d / "data" / "chain.db").ok, d
        store = Store(d / "data" / "chain.db")
        try:
            per_node.append({sb.block().header.height: sb.block().hash()
                             for sb in store.iter_blocks()})  # fmt: skip
        finally:
            store.close()
    common = set.intersection(*(set(h) for h in per_node))
    assert len(common) >= v["height"] - 1
    for h in common:
        assert len({hs[h] for hs in per_node}) == 1, h
    # money on node 0: only genesis funded the prosumers, the escrow is empty
    genesis = (nodes[0] / "genesis.json").read_bytes().rstrip(b"\n")
    chain = LocalChain(nodes[0], genesis, None, 0)
    try:
        assert chain.state_int("supply/utoken") == 20 * 200_000_000
        assert chain.balance("utoken", ESCROW) == 0
        matches = [chain.state(k) for k in chain.keys_with_prefix("market/match/")]
        assert matches and all(m["status"] in ("settled", "rejected") for m in matches)
    finally:
        chain.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--validators", "0"], "--validators"),
        (["--validators", "8"], "--validators"),
        (["--validators", "4", "--speedup", "0.5"], "--speedup"),
        (["--validators", "4", "--speedup", "nan"], "--speedup"),
    ],
)
def test_bad_validator_options_are_refused_and_change_nothing(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    base = ["community", "--grid", GRID, "--prosumers", "5", "--hours", "1"]
    assert main([*base, *args, "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "gridledger: error:" in err and message in err
    assert not home.exists()


def test_sim_clock_config_is_read_and_a_bad_speedup_refused(tmp_path: Path) -> None:
    from gridledger.node.bft import BftNodeConfig, ConfigError
    from gridledger.node.bft_testnet import init_testnet

    sim = {"start_ms": 1_813_536_000_000, "anchor_wall_ms": 1_700_000_000_000, "speedup": 60}
    init_testnet(tmp_path / "ok", 1, genesis_time_ms=1_813_535_999_000, sim_clock=sim)
    cfg = BftNodeConfig.load(tmp_path / "ok" / "node0")
    assert cfg.sim_clock == {**sim, "speedup": 60.0}
    init_testnet(tmp_path / "bad", 1, sim_clock={**sim, "speedup": 0.5})
    with pytest.raises(ConfigError, match=r"sim_clock\.speedup"):
        BftNodeConfig.load(tmp_path / "bad" / "node0")
