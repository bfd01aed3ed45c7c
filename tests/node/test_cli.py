"""The ledger commands in process (gridledger.cli.main), on a home built by `node init`."""

import json
import os
import sqlite3
import stat

import pytest

from gridledger.chain.keys import load_key
from gridledger.chain.tx import make_tx
from gridledger.cli import main
from gridledger.node.home import NodeConfig
from gridledger.node.node import Node


@pytest.fixture
def home(tmp_path, capsys):
    h = tmp_path / "n1"
    assert main(["node", "init", "--home", str(h), "--chain-id", "cli-1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["keys"]) == {"validator", "dso", "vendor", "ict"}
    return h


def fill(home, n_blocks=3):
    cfg = NodeConfig.load(home)
    cfg.synchronous = "NORMAL"
    node = Node(home, cfg)
    dso = load_key(home / "keys" / "dso.json")[0]
    vendor = load_key(home / "keys" / "vendor.json")[0]
    txids = []
    for i in range(n_blocks):
        raw = make_tx(
            dso,
            "cli-1",
            i,
            "token.transfer",
            {"amount": 1000 + i, "denom": "utoken", "to": vendor.pub_hex},
        ).raw
        assert node.submit(raw)["code"] == 0
        node.engine.produce_block()
        txids.append(node.store.get_block(i + 1).block().txs[0])
    node.stop()
    return txids


def test_init_refuses_to_overwrite(home, capsys):
    assert main(["node", "init", "--home", str(home), "--chain-id", "cli-1"]) == 2
    assert "already holds a genesis" in capsys.readouterr().err


def test_encrypted_init_and_keys_new(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PW", "s3cret")
    h = tmp_path / "n2"
    assert (
        main(["node", "init", "--home", str(h), "--chain-id", "c", "--passphrase-env", "PW"]) == 0
    )
    with pytest.raises(Exception, match="passphrase is needed"):
        load_key(h / "keys" / "dso.json")
    assert load_key(h / "keys" / "dso.json", "s3cret")[1] == "dso"
    assert load_key(h / "keys" / "validator.json")[1] == "validator"  # unattended node key
    out = tmp_path / "alice.json"
    assert main(["keys", "new", "--out", str(out), "--role", "prosumer"]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert main(["keys", "new", "--out", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_verify_prove_and_verify_proof(home, capsys, tmp_path):
    from gridledger.chain.tx import tx_id

    raws = fill(home)
    capsys.readouterr()
    assert main(["verify", "--home", str(home), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    txid = tx_id(raws[1]).hex()
    proof_file = tmp_path / "p.json"
    assert main(["prove", txid, "--home", str(home), "--out", str(proof_file)]) == 0
    assert main(["verify-proof", str(proof_file), "--genesis", str(home / "genesis.json")]) == 0
    assert capsys.readouterr().out.startswith("OK: tx " + txid)
    p = json.loads(proof_file.read_text())
    p["tx"] = p["tx"].replace(b'"amount":1001'.hex(), b'"amount":1009'.hex())
    proof_file.write_text(json.dumps(p))
    assert main(["verify-proof", str(proof_file)]) == 1
    assert "INVALID" in capsys.readouterr().out
    # corrupt block 2's body in the store: verify fails and names block 2
    conn = sqlite3.connect(home / "data" / "chain.db")
    body = conn.execute("SELECT txs FROM blocks WHERE height=2").fetchone()[0]
    conn.execute(
        "UPDATE blocks SET txs=? WHERE height=2",
        (body.replace(b'"amount":1001', b'"amount":1002'),),
    )
    conn.commit()
    conn.close()
    assert main(["verify", "--home", str(home)]) == 1
    assert capsys.readouterr().out.startswith("FAILED at block 2")


def test_bad_user_input_is_a_clear_error(home, capsys):
    key = str(home / "keys" / "dso.json")
    assert (
        main(
            ["tx", "token.transfer", '{"amount":1.5}', "--key", key, "--node", "http://127.0.0.1:9"]
        )
        == 2
    )
    assert "floats are not allowed" in capsys.readouterr().err
    assert (
        main(["tx", "token.transfer", '{"amount":1}', "--key", key, "--node", "http://127.0.0.1:9"])
        == 2
    )
    assert "cannot reach the node" in capsys.readouterr().err
    assert main(["prove", "abc", "--home", str(home)]) == 2
    assert main(["verify", "--home", str(home / "nope")]) == 2


def test_one_node_per_home(home):
    cfg = NodeConfig.load(home)
    node = Node(home, cfg)
    try:
        with pytest.raises(Exception, match="already running"):
            Node(home, cfg)
    finally:
        node.stop()
    Node(home, cfg).stop()  # released on stop


def test_contract_plugged_in_through_the_genesis(tmp_path, capsys):
    h = tmp_path / "n3"
    assert (
        main(
            [
                "node",
                "init",
                "--home",
                str(h),
                "--chain-id",
                "plug",
                "--contract",
                "ledger_demo_contract",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "node",
                "init",
                "--home",
                str(tmp_path / "n4"),
                "--chain-id",
                "plug",
                "--contract",
                "no_such_contract_module",
            ]
        )
        == 2
    )
    assert "cannot import contract module" in capsys.readouterr().err
    cfg = NodeConfig.load(h)
    cfg.synchronous = "NORMAL"
    node = Node(h, cfg)
    try:
        vendor = load_key(h / "keys" / "vendor.json")[0]
        dso = load_key(h / "keys" / "dso.json")[0]
        ok = make_tx(vendor, "plug", 0, "demo.note", {"value": 7}).raw
        assert node.submit(ok)["code"] == 0
        assert (
            node.submit(make_tx(dso, "plug", 0, "demo.note", {"value": 7}).raw)["code_name"]
            == "ROLE_NOT_ALLOWED"
        )
        assert (
            node.submit(make_tx(vendor, "plug", 1, "demo.note", {"value": 700}).raw)["code_name"]
            == "INVALID_PAYLOAD"
        )
        block = node.engine.produce_block()
        assert node.app.classify_tx(ok) == "reactive"
        assert block.header.tx_roots.reactive != block.header.tx_roots.other
        assert node.state(f"demo/{vendor.pub_hex}", prove=False)["value"] is not None
        assert node.state("demo/config", prove=False)["value"] is not None
    finally:
        node.stop()
    capsys.readouterr()
    assert main(["verify", "--home", str(h), "--json"]) == 0
