"""The HTTP API in process (FastAPI TestClient) over a real node with eager solo consensus."""

import time
import warnings
from hashlib import sha256

import pytest

from gridledger.chain.contracts.tokens import balance_key
from gridledger.chain.keys import load_key
from gridledger.chain.proofs import verify_proof
from gridledger.chain.tx import make_tx
from gridledger.chain.verify import verify_chain
from gridledger.node.api import create_api
from gridledger.node.client import LedgerClient, Signer
from gridledger.node.home import NodeConfig, init_home
from gridledger.node.node import Node


@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    pubs = init_home(home, "api-test", block_interval_ms=50)
    cfg = NodeConfig.load(home)
    cfg.eager, cfg.synchronous = True, "NORMAL"
    node = Node(home, cfg)
    node.start()
    with warnings.catch_warnings():  # starlette's notice about its httpx backend
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    http = TestClient(create_api(node), base_url="http://node")
    client = LedgerClient("http://node", http=http)
    keys = {n: load_key(home / "keys" / f"{n}.json")[0] for n in ("dso", "vendor", "ict")}
    yield node, client, keys, pubs
    node.stop()


def test_submit_follow_and_read(env):
    node, client, keys, pubs = env
    dso = Signer(client, keys["dso"])
    res = dso.send("token.transfer", {"amount": 7, "denom": "utoken", "to": pubs["vendor"]})
    assert res["code"] == 0, res
    st = client.wait_tx(res["txid"], timeout_s=10)
    assert st["status"] == "committed" and st["code"] == 0
    assert st["tx"]["payload"]["amount"] == 7
    assert client.account(pubs["vendor"])["balances"]["utoken"] == 7
    blk = client.block(st["height"])
    assert res["txid"] in blk["txs"] and blk["header"]["height"] == st["height"]
    assert client.status()["height"] >= st["height"]
    # a state proof and a tx proof from the API check offline
    sp = client.state(balance_key("utoken", pubs["vendor"]), prove=True)
    assert verify_proof(sp)[0] and int(bytes.fromhex(sp["value"])) == 7
    ok, msg = verify_proof(client.tx_proof(res["txid"]), validators=node.app.validators())
    assert ok, msg


def test_rejections_are_explained_and_change_nothing(env):
    _node, client, keys, pubs = env
    before = client.status()
    res = client.submit(b"\x01" * 100)
    assert (res["code_name"], "malformed" in res["log"]) == ("MALFORMED", True)
    bad_sig = bytearray(
        make_tx(
            keys["dso"],
            "api-test",
            0,
            "token.transfer",
            {"amount": 1, "denom": "utoken", "to": pubs["vendor"]},
        ).raw
    )
    bad_sig[-3] ^= 0xFF
    assert client.submit(bytes(bad_sig))["code_name"] == "BAD_SIGNATURE"
    over = make_tx(
        keys["vendor"],
        "api-test",
        0,
        "token.transfer",
        {"amount": 1, "denom": "utoken", "to": pubs["dso"]},
    ).raw
    assert client.submit(over)["code_name"] == "INSUFFICIENT_FUNDS"
    r = client.http.post("/txs", json={"tx": "zz"})
    assert r.status_code == 422
    assert client.http.get("/txs/" + "0" * 64).status_code == 404
    assert client.http.get("/txs/nothex").status_code == 422
    after = client.status()
    assert (after["height"], after["app_hash"]) == (before["height"], before["app_hash"])


def test_batch_submit(env):
    _node, client, keys, pubs = env
    dso = Signer(client, keys["dso"])
    raws = [
        dso.sign("token.transfer", {"amount": i + 1, "denom": "utoken", "to": pubs["ict"]})
        for i in range(50)
    ]
    results = client.submit_batch(raws)
    assert all(r["code"] == 0 for r in results)
    client.wait_tx(results[-1]["txid"], timeout_s=10)
    assert client.account(pubs["ict"])["balances"]["utoken"] == sum(range(1, 51))


def test_offchain_detail_can_be_erased_and_chain_stays_valid(env):
    node, client, keys, _pubs = env
    vendor, dso = Signer(client, keys["vendor"]), Signer(client, keys["dso"])
    from gridledger.chain.keys import KeyPair

    prosumer, meter = KeyPair.generate(), KeyPair.generate()
    assert (
        vendor.send(
            "member.register",
            {"bus": 4, "pub_key": prosumer.pub_hex, "role": "prosumer"},
            wait=True,
        )["code"]
        == 0
    )
    assert (
        vendor.send(
            "member.bind_meter", {"meter": meter.pub_hex, "prosumer": prosumer.pub_hex}, wait=True
        )["code"]
        == 0
    )
    detail = b'{"minute_wh":[5,6,7,5,4]} personal data of the household'
    # the meter posts its prosumer's detail (signed); the prosumer is the data subject
    h = client.as_member(meter).offchain_put(detail)
    assert h == sha256(detail).hexdigest()
    ms = Signer(client, meter)
    st = ms.send(
        "meter.reading",
        {
            "detail_hash": h,
            "duration_s": 300,
            "export_wh": 27,
            "import_wh": 0,
            "meter": meter.pub_hex,
            "start_ms": 0,
        },
        wait=True,
    )
    assert st["code"] == 0 and client.account(prosumer.pub_hex)["balances"]["ewh"] == 27
    subject = client.as_member(prosumer)
    assert subject.offchain_get(h) == detail
    subject.offchain_erase(h)
    r = subject.http.get(f"/offchain/{h}", auth=subject.auth)
    assert r.status_code == 410 and "erased" in r.json()["detail"]
    for f in ("offchain.db", "offchain.db-wal"):
        path = node.home / "data" / f
        raw = path.read_bytes() if path.exists() else b""
        assert b"personal data of the household" not in raw, f
    del dso
    assert verify_chain(node.store.path).ok


def test_openapi_schema_lists_the_endpoints(env):
    _, client, _, _ = env
    paths = client.http.get("/openapi.json").json()["paths"]
    for p in (
        "/txs",
        "/txs/batch",
        "/txs/{txid}",
        "/blocks/{height}",
        "/state/{key}",
        "/proofs/tx/{txid}",
        "/events",
        "/offchain",
    ):
        assert p in paths


def test_verify_a_live_node_while_it_commits(env):
    import threading

    from gridledger.chain.verify import verify_chain

    node, client, keys, pubs = env
    dso = Signer(client, keys["dso"])
    stop = threading.Event()

    def load():
        while not stop.is_set():
            raws = [
                dso.sign("token.transfer", {"amount": 1, "denom": "utoken", "to": pubs["ict"]})
                for _ in range(20)
            ]
            client.submit_batch(raws)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    reports = []
    try:
        # verify over and over while blocks land (at least 3 times, and until one saw txs:
        # on a busy machine the first verifications may run before the first block commits)
        deadline = time.monotonic() + 60
        while len(reports) < 3 or reports[-1].txs == 0:
            rep = verify_chain(node.store.path)
            assert rep.ok, rep
            reports.append(rep)
            time.sleep(0.05)  # the node commits in this process's threads: let it run
            assert time.monotonic() < deadline, f"no block committed under load: {reports[-1]}"
    finally:
        stop.set()
        t.join(30)
    heights = [r.height for r in reports]
    assert heights == sorted(heights) and reports[-1].txs > 0


def test_oversized_request_is_refused_before_parsing(env):
    _, client, _, _ = env
    r = client.http.post("/txs", json={"tx": "00" * 40_000})
    assert r.status_code == 422 and "at most" in r.text
