"""``gridledger offer|bid --profile`` and ``--profile-csv``: kW per slot to whole W per slot,
bad profiles named before anything is signed, and ``orders`` showing the profile (against a
real node process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gridledger.agents.runner import HttpChain
from gridledger.chain.contracts.market import match_key
from gridledger.chain.keys import save_key
from gridledger.cli import main
from gridledger.commands.errors import CliError
from gridledger.commands.prosumer import parse_profile_kw, read_profile_csv

from .test_dso_service import SLOT, _stamp, world  # noqa: F401 (fixture)


def test_profile_values_become_whole_watts() -> None:
    assert parse_profile_kw(["0", "1.5", "3", "3", "1.5", "0"], "--profile") == [
        0,
        1_500,
        3_000,
        3_000,
        1_500,
        0,
    ]
    assert parse_profile_kw([" 0.0004", "2"], "--profile") == [0, 2_000]  # 0.4 W rounds to 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["1", "x"], r"entry 2 \('x'\) is not a number of kW"),
        (["1", "-2"], "entry 2 must be a finite kW >= 0, got -2"),
        (["nan"], "entry 1 must be a finite kW >= 0"),
        (["0", "0"], "at least one slot above 0 kW"),
    ],
)
def test_bad_profile_values_are_named(values, message) -> None:
    with pytest.raises(CliError, match=message):
        parse_profile_kw(values, "--profile")


def test_profile_csv_with_a_header_and_time_column(tmp_path: Path) -> None:
    path = tmp_path / "pv.csv"
    path.write_text("time,kw\n12:00,0\n12:15,2.5\n\n12:30,1\n")
    assert read_profile_csv(path) == [0, 2_500, 1_000]
    with pytest.raises(CliError, match="cannot read"):
        read_profile_csv(tmp_path / "missing.csv")


@pytest.mark.xdist_group("node-process")
def test_offer_with_a_profile_and_orders_shows_it(world, tmp_path, capsys) -> None:  # noqa: F811
    url, keys, _dso_home, _grid, _config = world
    files = {}
    for name in ("PV14", "R11"):
        files[name] = tmp_path / f"{name}.json"
        save_key(files[name], keys[name], "prosumer")
    chain = HttpChain(url)
    start = (chain.time_ms() // SLOT + 2) * SLOT
    window = ["--from", _stamp(start), "--to", _stamp(start + 3 * SLOT)]

    def cli(*argv: str) -> dict:
        assert main([*argv, "--node", url, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    # one value per slot: a window of 3 slots refuses 2 values, and nothing is posted
    assert main(["offer", "--key", str(files["PV14"]), "--node", url, "--profile", "1,2",
                 "--price", "0.1", *window]) == 2  # fmt: skip
    assert "2 values for a window of 3 market slots of 15 min" in capsys.readouterr().err
    assert cli("orders") == []
    offer = cli("offer", "--key", str(files["PV14"]), "--profile", "1,4.5,2", "--price", "0.1",
                *window)  # fmt: skip
    assert offer["kw"] == 4.5 and offer["profile_kw"] == [1, 4.5, 2]
    csv_file = tmp_path / "load.csv"
    csv_file.write_text("kw\n3\n3\n3\n")
    cli("bid", "--key", str(files["R11"]), "--profile-csv", str(csv_file), "--price", "0.12",
        *window)  # fmt: skip
    rows = {r["kind"]: r for r in cli("orders")}  # both still have power in some slot
    assert rows["offer"]["order"] == offer["order"]
    assert rows["offer"]["profile_kw"] == [1, 4.5, 2] and rows["bid"]["profile_kw"] == [3, 3, 3]
    assert main(["orders", "--node", url]) == 0
    assert "1,4.5,2" in capsys.readouterr().out
    cert = cli("certificate", "m0")  # the match, with its kW per slot
    assert cert["kw"] == 3 and cert["profile_kw"] == [1, 3, 2]
    assert main(["certificate", "m0", "--node", url]) == 0
    assert "profile 1,3,2 kW bus 14 -> 12" in capsys.readouterr().out
    try:
        # per slot min(1, 3), min(4.5, 3), min(2, 3) kW
        assert chain.state(match_key("m0"))["match"]["profile_w"] == [1_000, 3_000, 2_000]
    finally:
        chain.close()
