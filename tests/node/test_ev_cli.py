"""`gridledger ev` against a real node process: authorise, open, read, stop, status, sessions,
and the refusals (units that do not convert exactly, an incomplete V2G window, a second stop)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_process import start_node

from gridledger.chain.keys import KeyPair, load_key, save_key
from gridledger.cli import main
from gridledger.node.client import LedgerClient, Signer
from gridledger.node.home import init_home

pytestmark = pytest.mark.xdist_group("ledger-node-procs")
H = 3_600_000


def test_ev_commands_against_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    init_home(home, "ev-cli", contracts=["gridledger.chain.contracts.ev"])
    driver, cp, meter = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    for name, key, role in (
        ("driver", driver, "prosumer"),
        ("cp", cp, "charge_point"),
        ("meter", meter, "meter"),
    ):
        save_key(tmp_path / f"{name}.json", key, role)
    dso_key = load_key(home / "keys" / "dso.json")[0]
    proc, url = start_node(home, "--eager")
    try:
        with LedgerClient(url) as client:
            dso = Signer(client, dso_key)
            for tx_type, payload in (
                ("member.register", {"pub_key": driver.pub_hex, "role": "prosumer", "bus": 3}),
                ("member.register", {"pub_key": cp.pub_hex, "role": "charge_point", "bus": 5}),
                (
                    "member.bind_meter",
                    {"meter": meter.pub_hex, "prosumer": cp.pub_hex, "rating_w": 22_000},
                ),
                ("token.mint", {"amount": 50_000_000, "denom": "utoken", "to": driver.pub_hex}),
            ):
                res = dso.send(tx_type, payload, wait=True)
                assert res["code"] == 0, res
        node = ["--node", url]
        as_driver = ["--key", str(tmp_path / "driver.json"), *node]
        as_cp = ["--key", str(tmp_path / "cp.json"), *node]
        now = int(time.time() * 1000)  # solo consensus keeps block time on the wall clock
        authorise = ["ev", "authorise", "--charge-point", cp.pub_hex, "--expires", str(now + H)]
        authorise += ["--max-kwh", "40", *as_driver]
        assert main([*authorise, "--max-price", "0.3000001"]) == 2
        assert "--max-price" in capsys.readouterr().err
        assert main([*authorise, "--max-price", "0.3", "--v2g-battery-kwh", "60"]) == 2
        assert "V2G needs all of" in capsys.readouterr().err
        assert main([*authorise, "--max-price", "0.3", "--json"]) == 0
        session = json.loads(capsys.readouterr().out)["txid"]
        opening = ["ev", "open", session, "--meter", meter.pub_hex, *as_cp]
        # the typed payload's checks run before signing and name the field
        assert main(["ev", "open", "not-a-session", "--meter", meter.pub_hex, "--price", "1",
                     *as_cp]) == 2  # fmt: skip
        assert "session must be a 32-byte hash" in capsys.readouterr().err
        assert main([*opening, "--price", "0.31"]) == 1
        assert "above the authorised" in capsys.readouterr().out
        assert main([*opening, "--price", "0.25"]) == 0
        capsys.readouterr()
        assert main(["ev", "sessions", cp.pub_hex, "--json", *node]) == 0
        opened = json.loads(capsys.readouterr().out)[session]
        assert opened["status"] == "open" and opened["price_utoken_per_kwh"] == 250_000
        time.sleep(2.2)  # a reading covers an interval that has ended in block time
        with LedgerClient(url) as client:  # and --eager cuts a block only when a tx waits
            tick = {"amount": 1, "denom": "utoken", "to": cp.pub_hex}
            assert Signer(client, dso_key).send("token.mint", tick, wait=True)["code"] == 0
        read = ["ev", "read", session, "--start", str(opened["opened_ms"]), "--seconds", "2"]
        read += ["--key", str(tmp_path / "meter.json"), *node]
        # the 22 kW meter sees at most 22_000 × 2 / 3600 = 12 Wh in 2 s
        assert main([*read, "--import-kwh", "0.0125"]) == 2  # not a whole Wh
        assert main([*read, "--import-kwh", "0.001", "--seconds", "0"]) == 2
        assert "duration_s must be in [1, 86400]" in capsys.readouterr().err
        assert main([*read, "--import-kwh", "0.013"]) == 1
        assert "rated 22000 W" in capsys.readouterr().out
        assert main([*read, "--import-kwh", "0.012"]) == 0
        capsys.readouterr()
        assert main(["ev", "stop", session, *as_cp]) == 0
        capsys.readouterr()
        assert main(["ev", "stop", session, *as_cp]) == 1
        assert "closed, not open" in capsys.readouterr().out
        assert main(["ev", "status", session, "--json", *node]) == 0
        closed = json.loads(capsys.readouterr().out)
        # 12 Wh at 250_000 utoken/kWh = 3_000 utoken; the rest of 12_000_000 comes back
        assert (closed["status"], closed["delivered_wh"]) == ("closed", 12)
        assert (closed["paid_utoken"], closed["refund_utoken"]) == (3_000, 11_997_000)
        assert main(["ev", "status", session, *node]) == 0
        assert "paid 0.003000 tokens, refunded 11.997000" in capsys.readouterr().out
        assert main(["ev", "sessions", driver.pub_hex, *node]) == 0
        assert "no active EV session" in capsys.readouterr().out
        assert main(["ev", "status", "00" * 32, *node]) == 2
        with LedgerClient(url) as client:
            assert client.account(driver.pub_hex)["balances"]["utoken"] == 50_000_000 - 3_000
    finally:
        proc.terminate()
        proc.wait(timeout=30)
