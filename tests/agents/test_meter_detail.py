"""Meter detail off chain, only its hash on chain: ``meter serve`` stores each reading's detail
for the prosumer the meter is bound to, ``meter detail`` reads it back and checks it against
the chain, and the prosumer erases it with the chain left valid.

Against a real node process (as ``test_meter_profile.py``'s ``meter serve`` test): the prosumers
pv and house with their meters, the DSO, and a stranger whose key is no member. Each attack is
performed: a stranger, another prosumer, the meter itself and an ungranted DSO reading; a meter
storing detail in another meter's name; a meter widening a grant its prosumer narrowed; anyone
but the prosumer erasing; re-posting erased bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

import pytest

from gridledger.agents.meter_detail import (
    DETAIL_KIND,
    DetailError,
    check_detail,
    detail_bytes,
    detail_doc,
)
from gridledger.agents.runner import HttpChain
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair, save_key
from gridledger.cli import main
from gridledger.node.client import ClientError, LedgerClient
from gridledger.node.home import NodeConfig

CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]
SLOT_MS = 2000
READING = {"meter": "ab" * 32, "start_ms": 4000, "duration_s": 2, "export_wh": 0,
           "import_wh": 500}  # fmt: skip


def _with_hash(doc: dict) -> tuple[dict, bytes]:
    data = detail_bytes(doc)
    return {**READING, "detail_hash": sha256(data).hexdigest()}, data


def test_a_detail_is_checked_against_the_reading_it_claims() -> None:
    doc = detail_doc(READING, "house12", [200, 300], 1)
    payload, data = _with_hash(doc)
    assert check_detail(payload, data) == doc
    assert doc["kind"] == DETAIL_KIND and doc["reading"]["import_wh"] == 500
    other = {**payload, "start_ms": 6000}
    with pytest.raises(DetailError, match="another reading: its start_ms is 4000"):
        check_detail(other, data)
    with pytest.raises(DetailError, match="the chain says"):
        check_detail(payload, data + b" ")
    for bad, message in [
        ({**doc, "samples_wh": [200, 301]}, "do not add up"),
        ({**doc, "kind": "x"}, "not a gridledger.meter.detail/1"),
        ({**doc, "reading": {**doc["reading"], "meter": "cd" * 32}}, "its meter is 'cdcd"),
    ]:
        p, d = _with_hash(bad)
        with pytest.raises(DetailError, match=message):
            check_detail(p, d)
    noncanonical = json.dumps(doc).encode()  # with spaces: not the bytes the meter stores
    with pytest.raises(DetailError, match="not a canonical document"):
        check_detail({**READING, "detail_hash": sha256(noncanonical).hexdigest()}, noncanonical)
    with pytest.raises(DetailError, match="samples sum to 499 Wh, the reading nets 500"):
        detail_doc(READING, "house12", [499], 2)
    with pytest.raises(DetailError, match="3 samples of 1 s do not cover 2 s"):
        detail_doc(READING, "house12", [100, 200, 200], 1)


def _key(name: str) -> KeyPair:
    return KeyPair.from_seed(name.encode().ljust(32, b"\0"))


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.xdist_group("node-process")
def test_meter_detail_off_chain_owned_by_the_prosumer(tmp_path, capsys) -> None:
    val, dso = KeyPair.generate(), _key("dso")
    pv, house, wind = _key("pv"), _key("house"), _key("wind")
    meters = {"pv14": _key("m-pv"), "house12": _key("m-house"), "wind3": _key("m-wind")}
    home = tmp_path / "node"
    save_key(home / "keys" / "validator.json", val, "validator")
    members = [{"pub_key": dso.pub_hex, "role": "dso", "name": "DSO"}] + [
        {"pub_key": k.pub_hex, "role": "prosumer", "name": n, "bus": b}
        for n, k, b in (("pv", pv, 14), ("house", house, 12), ("wind", wind, 3))
    ]
    genesis = make_genesis("meter-detail", time.time_ns() // 10**6, [(val.pub_hex, 1)], members,
                           [], CONTRACTS)  # fmt: skip
    (home / "genesis.json").write_bytes(genesis + b"\n")
    NodeConfig("meter-detail", api="127.0.0.1:0", block_interval_ms=100,
               synchronous="NORMAL").save(home)  # fmt: skip
    keyfiles = tmp_path / "who"
    for name, k in (("pv", pv), ("house", house), ("dso", dso), ("stranger", KeyPair.generate()),
                    ("m-pv", meters["pv14"])):  # fmt: skip
        save_key(keyfiles / f"{name}.json", k)
    node = subprocess.Popen(
        [sys.executable, "-m", "gridledger.demo.node_proc", "--home", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (home / "node.addr").exists():
            assert node.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = (home / "node.addr").read_text().strip()
        chain = HttpChain(url)
        api = LedgerClient(url, chain_id=chain.chain_id)
        try:
            _run(tmp_path, capsys, url, chain, api, meters, keyfiles, pv, house)
        finally:
            api.close()
            chain.close()
    finally:
        node.terminate()
        node.wait(timeout=30)
    # the chain verifies with the detail erased: its hash is on chain, its bytes are gone
    assert main(["verify", "--home", str(home)]) == 0
    erased = capsys.readouterr()
    assert "erased" not in erased.err
    files = [home / "data" / "offchain.db", home / "data" / "offchain.db-wal"]
    stored = b"".join(f.read_bytes() for f in files if f.exists())
    assert b'"samples_wh":[-400,-600]' not in stored  # pv's first slot, erased
    assert b'"samples_wh":[200,300]' in stored  # pv's second slot, kept


def _run(tmp_path: Path, capsys, url, chain, api, meters, keyfiles, pv, house) -> None:
    dso = _key("dso")
    # committed before `meter serve` reads the slot length and the bindings (submit only
    # admits: under load the block may come later than the next command)
    sent = [chain.submit(dso, "market.configure", {"slot_ms": SLOT_MS})]
    for name, prosumer in (("pv14", pv), ("house12", house), ("wind3", _key("wind"))):
        bind = {"meter": meters[name].pub_hex, "prosumer": prosumer.pub_hex}
        sent.append(chain.submit(dso, "member.bind_meter", bind))
    assert all(out.ok and chain.wait_committed(out.txid).ok for out in sent)
    first = (chain.time_ms() // SLOT_MS + 2) * SLOT_MS

    def serve(name: str, values: list[float], *flags: str, row_ms: int = SLOT_MS) -> None:
        keys = tmp_path / f"keys-{name}"
        save_key(keys / f"{name}.json", meters[name], "meter")
        csv = tmp_path / f"{name}.csv"
        rows = "".join(f"{_stamp(first + row_ms * i)},{v}\n" for i, v in enumerate(values))
        csv.write_text(f"timestamp,{name}\n{rows}")
        argv = ["meter", "serve", "--node", url, "--profile", str(csv), "--keys", str(keys)]
        assert main([*argv, *flags]) == 0

    # 1 s samples in 2 s slots; by default the detail is on and the DSO may read it
    serve("pv14", [-0.4, -0.6, 0.2, 0.3], "--sample-s", "1", row_ms=1000)
    serve("house12", [0.25, 0.75], "--detail-readers", "")  # the DSO not granted
    serve("wind3", [-2], "--no-detail")
    # wind erased its next slot's detail in advance: the reading still goes, without a hash
    wind, wind_meter = _key("wind"), meters["wind3"].pub_hex
    ahead = {"meter": wind_meter, "start_ms": first + SLOT_MS, "duration_s": 2,
             "export_wh": 3000, "import_wh": 0}  # fmt: skip
    ahead_bytes = detail_bytes(detail_doc(ahead, "wind3", [-3000], 2))
    api.as_member(wind).offchain_erase(api.as_member(wind).offchain_put(ahead_bytes, ()))
    serve("wind3", [-2, -3])
    # bad flags are refused, naming what is wrong
    bad_flags = [(["--sample-s", "1", "--detail-readers", "dso,boss"], "unknown role(s) ['boss']"),
                 (["--sample-s", "3"], "do not divide the 2000 ms slot")]  # fmt: skip
    for flags, message in bad_flags:
        argv = ["meter", "serve", "--node", url, "--profile", str(tmp_path / "pv14.csv"),
                "--keys", str(tmp_path / "keys-pv14"), *flags]  # fmt: skip
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and message in err, err
    time.sleep(0.3)  # the last reading's block
    readings = _readings(api)
    by_meter = {name: [r for r in readings if r[1]["meter"] == k.pub_hex]
                for name, k in meters.items()}  # fmt: skip
    assert [len(by_meter[n]) for n in ("pv14", "house12", "wind3")] == [2, 2, 2]
    # on chain: totals and the hash only
    pv_tx, pv_reading = by_meter["pv14"][0]
    assert set(pv_reading) == {"meter", "start_ms", "duration_s", "export_wh", "import_wh",
                               "detail_hash"}  # fmt: skip
    assert [r for _, r in by_meter["wind3"] if "detail_hash" in r] == []
    assert by_meter["wind3"][1][1]["export_wh"] == 3000
    assert chain.state(f"meter/{meters['pv14'].pub_hex}")["export_wh"] == 1000

    def detail(tx: str, who: str, *flags: str) -> tuple[int, str, str]:
        return _cli(capsys, "meter", "detail", tx, "--node", url,
                    "--key", str(keyfiles / f"{who}.json"), *flags)  # fmt: skip

    # the subject and the granted DSO read it, and it checks against the chain
    for who in ("pv", "dso"):
        code, out, err = detail(pv_tx, who)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["verified"] and doc["detail_hash"] == pv_reading["detail_hash"]
        assert doc["detail"]["samples_wh"] == [-400, -600]
        assert doc["detail"]["sample_s"] == 1
        assert doc["detail"]["meter_name"] == "pv14"
        assert doc["detail"]["reading"]["meter"] == meters["pv14"].pub_hex
    # nobody else: a stranger, another prosumer, the meter that wrote it
    code, _, err = detail(pv_tx, "stranger")
    assert code == 2 and "not an active member" in err
    for who in ("house", "m-pv"):
        code, _, err = detail(pv_tx, who)
        assert code == 2 and "HTTP 403" in err, who
    # house granted nobody: the DSO reads only once house grants it, and no longer once revoked
    house_tx, house_reading = by_meter["house12"][1]
    assert detail(house_tx, "dso")[0] == 2
    code, out, _ = detail(house_tx, "house", "--grant", "dso")
    assert code == 0 and json.loads(out)["detail"]["samples_wh"] == [750]
    assert detail(house_tx, "dso")[0] == 0
    code, _, err = detail(house_tx, "dso", "--grant", "dso,vendor")
    assert code == 2 and "only the prosumer" in err
    assert detail(house_tx, "house", "--grant", "")[0] == 0
    assert detail(house_tx, "dso")[0] == 2
    # the meter re-storing the bytes cannot widen what its prosumer narrowed
    house_bytes = api.as_member(house).offchain_get(house_reading["detail_hash"])
    api.as_member(meters["house12"]).offchain_put(house_bytes, readers=("dso",))
    assert detail(house_tx, "dso")[0] == 2
    # a meter cannot store detail for another member's meter: what it stores belongs to its own
    # prosumer, so pv cannot even see a "pv" detail the house meter wrote ...
    forged = detail_doc({**pv_reading, "import_wh": 9000, "export_wh": 0}, "pv14", [9000], 2)
    h = api.as_member(meters["house12"]).offchain_put(detail_bytes(forged), readers=("dso",))
    with pytest.raises(ClientError) as denied:
        api.as_member(pv).offchain_get(h)
    assert denied.value.status == 403
    # ... and a reading citing pv's detail does not pass for it: the detail names pv's meter
    pv_bytes = api.as_member(pv).offchain_get(pv_reading["detail_hash"])
    end = first + 2 * SLOT_MS
    stolen = chain.submit(meters["house12"], "settlement.reading",
                          {"meter": meters["house12"].pub_hex, "start_ms": end, "duration_s": 2,
                           "export_wh": 1000, "import_wh": 0,
                           "detail_hash": sha256(pv_bytes).hexdigest()})  # fmt: skip
    assert chain.wait_committed(stolen.txid).ok
    code, _, err = detail(stolen.txid, "dso")
    assert code == 2 and "detail is for another reading: its meter is" in err
    # only the subject erases: not its meter, not the DSO
    for who in ("m-pv", "dso"):
        code, _, err = detail(pv_tx, who, "--erase")
        assert code == 2 and "HTTP 403" in err, who
    code, out, _ = detail(pv_tx, "pv", "--erase")
    assert code == 0 and json.loads(out)["erased"]
    for who in ("pv", "dso"):
        code, _, err = detail(pv_tx, who)
        assert code == 2 and "HTTP 410" in err, who
    # the tombstone refuses the same bytes from the meter; the hash stays on chain
    with pytest.raises(ClientError) as gone:
        api.as_member(meters["pv14"]).offchain_put(pv_bytes, readers=("dso",))
    assert gone.value.status == 410
    assert api.tx(pv_tx)["tx"]["payload"]["detail_hash"] == sha256(pv_bytes).hexdigest()
    # a reading without detail, and a transaction that is no reading
    code, _, err = detail(by_meter["wind3"][0][0], "dso")
    assert code == 2 and "carries no detail_hash" in err
    code, _, err = detail("00" * 32, "dso")
    assert code == 2 and "unknown to the node" in err


def _readings(api: LedgerClient) -> list[tuple[str, dict]]:
    """(txid, payload) of every committed meter reading, in chain order."""
    out = []
    for height in range(1, api.block()["header"]["height"] + 1):
        for txid in api.block(height)["txs"]:
            st = api.tx(txid)
            if st["tx"]["type"] == "settlement.reading":
                out.append((txid, st["tx"]["payload"]))
    return out
