"""`gridledger testnet init|up|down` and `gridledger status`, including the bad paths."""

from __future__ import annotations

import json

import pytest

from gridledger.cli import main

pytestmark = [pytest.mark.xdist_group("bft_faults"), pytest.mark.timeout(120)]


def test_init_up_status_down_with_one_validator(tmp_path, capsys):
    home = tmp_path / "net"
    assert main(["testnet", "init", "--validators", "1", "--home", str(home), "--fast"]) == 0
    desc = json.loads((home / "testnet.json").read_text())
    assert [n["name"] for n in desc["nodes"]] == ["node0"]
    assert all(p[0] == "127.0.0.1" for n in desc["nodes"] for p in (n["p2p"], n["api"]))
    try:
        assert main(["testnet", "up", "--home", str(home)]) == 0
        capsys.readouterr()
        assert main(["status", "--home", str(home / "node0"), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["height"] >= 1 and doc["node"] == "node0"
        assert [v["pub_key"] for v in doc["validators"]] == [desc["nodes"][0]["pub_key"]]
        assert main(["status", "--home", str(home / "node0")]) == 0
        text = capsys.readouterr().out
        assert "height" in text and doc["validators"][0]["pub_key"] in text
    finally:
        assert main(["testnet", "down", "--home", str(home)]) == 0
    assert main(["status", "--home", str(home / "node0")]) == 2
    assert "not answering" in capsys.readouterr().err


def test_bad_inputs_are_refused_with_a_clear_message(tmp_path, capsys):
    assert main(["testnet", "init", "--validators", "0", "--home", str(tmp_path / "a")]) == 2
    assert "between 1 and 100" in capsys.readouterr().err
    assert not (tmp_path / "a" / "testnet.json").exists()
    home = tmp_path / "b"
    assert main(["testnet", "init", "--validators", "2", "--home", str(home)]) == 0
    before = (home / "testnet.json").read_text()
    assert main(["testnet", "init", "--validators", "3", "--home", str(home)]) == 2
    assert "already holds a testnet" in capsys.readouterr().err
    assert (home / "testnet.json").read_text() == before
    assert main(["testnet", "up", "--home", str(tmp_path / "nothing")]) == 2
    assert "no testnet" in capsys.readouterr().err
    assert main(["status", "--home", str(tmp_path)]) == 2
    assert "not a node home" in capsys.readouterr().err


def test_followers_init_and_bad_follower_configs(tmp_path, capsys):
    from gridledger.node.bft import BftNodeConfig, ConfigError

    home = tmp_path / "f"
    args = ["testnet", "init", "--validators", "2", "--followers", "1", "--home", str(home)]
    assert main(args) == 0
    assert "node2 (follower)" in capsys.readouterr().out
    desc = json.loads((home / "testnet.json").read_text())
    follower = desc["nodes"][2]
    assert [n["role"] for n in desc["nodes"]] == ["validator", "validator", "follower"]
    for n in desc["nodes"][:2]:  # validators let the follower in and know where it listens
        cfg = json.loads((home / n["name"] / "config.json").read_text())
        assert cfg["allow"] == [{"name": "node2", "pub_key": follower["pub_key"]}]
        assert follower["pub_key"] in {p["pub_key"] for p in cfg["peers"]}
    fdir = home / "node2"
    cfg = json.loads((fdir / "config.json").read_text())
    assert cfg["role"] == "follower" and cfg["allow"] == []
    assert BftNodeConfig.load(fdir).role == "follower"
    for field, value, words in [
        ("role", "observer", "role must be one of"),
        ("allow", [{"name": "x", "pub_key": "abcd"}], "bad pub_key"),
        ("allow", [{"name": "x"}], "bad pub_key"),
    ]:
        (fdir / "config.json").write_text(json.dumps({**cfg, field: value}))
        with pytest.raises(ConfigError, match=words):
            BftNodeConfig.load(fdir)
    assert main(["testnet", "init", "--followers", "21", "--home", str(tmp_path / "g")]) == 2
    assert "between 0 and 20" in capsys.readouterr().err
