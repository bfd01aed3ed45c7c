"""The web app's read-only endpoints (node/api_web.py), the app at ``/``, and the same-origin
proxy of ``gridledger web`` (node/web_proxy.py), over a real node in process."""

import warnings

import httpx
import pytest

from gridledger.chain import encoding
from gridledger.chain.keys import load_key
from gridledger.grid.cases import load_case
from gridledger.node.api import create_api
from gridledger.node.api_web import MAX_LIST
from gridledger.node.client import LedgerClient, Signer
from gridledger.node.home import NodeConfig, init_home
from gridledger.node.node import Node
from gridledger.node.web_proxy import MAX_BODY, create_proxy

with warnings.catch_warnings():  # starlette's notice about its httpx backend
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    pubs = init_home(home, "web-test", block_interval_ms=50)
    cfg = NodeConfig.load(home)
    cfg.eager, cfg.synchronous = True, "NORMAL"
    node = Node(home, cfg)
    node.start()
    http = TestClient(create_api(node), base_url="http://node")
    yield node, http, pubs
    node.stop()


def committed(node, prefix: str) -> dict[str, object]:
    """The reference: the application's committed state, filtered here."""
    p = prefix.encode()
    return {
        k.decode(): encoding.decode(v) for k, v in node.app._committed.items() if k.startswith(p)
    }


def test_state_listing_pages_through_a_prefix_in_key_order(env):
    node, http, pubs = env
    got, after = [], ""
    for _ in range(50):
        page = http.get("/web/state", params={"prefix": "member/", "limit": 1, "after": after})
        assert page.status_code == 200, page.text
        body = page.json()
        got += body["items"]
        if body["next"] is None:
            break
        after = body["next"]
    want = committed(node, "member/")
    assert len(want) >= 3  # dso, vendor, ict at least
    assert [i["key"] for i in got] == sorted(want)
    assert {i["key"]: i["value"] for i in got} == want
    # a new block's keys are listed (the sorted key cache follows the height)
    client = LedgerClient("http://node", http=http)
    dso = Signer(client, load_key(node.home / "keys" / "dso.json")[0])
    key = f"bal/utoken/{pubs['vendor']}"
    assert key not in committed(node, "bal/utoken/")
    st = dso.send("token.mint", {"amount": 5, "denom": "utoken", "to": pubs["vendor"]}, wait=True)
    assert st["code"] == 0, st
    listed = http.get("/web/state", params={"prefix": "bal/utoken/"}).json()["items"]
    assert {"key": key, "value": 5} in listed


@pytest.mark.parametrize(
    "params",
    [
        {"prefix": ""},
        {"prefix": "x" * 201},
        {"prefix": "member/", "limit": MAX_LIST + 1},
        {"prefix": "member/", "limit": 0},
    ],
)
def test_state_listing_is_bounded(env, params):
    _node, http, _ = env
    resp = http.get("/web/state", params=params)
    assert resp.status_code == 422, resp.text


def test_grid_topology_of_a_shipped_case_and_nothing_else(env):
    _node, http, _ = env
    g = http.get("/web/grid/microgrid9").json()
    net = load_case("microgrid9")
    assert [b["id"] for b in g["buses"]] == [int(b) for b in net.bus.index]
    assert [(ln["from"], ln["to"]) for ln in g["lines"]] == [
        (int(f), int(t)) for f, t in zip(net.branch.from_bus, net.branch.to_bus, strict=True)
    ]
    assert g["slack_bus"] == 1 and g["geodata"] is None
    # load_case would open files and build any pandapower case: the endpoint will not
    for name in ("x.json", "case.m", "pandapower:case118"):
        resp = http.get(f"/web/grid/{name}")
        assert resp.status_code == 404 and "shipped cases" in resp.json()["detail"], name


def test_certificate_documents_need_a_match_id_and_a_match(env):
    _node, http, _ = env
    assert http.get("/web/certificates/m0;rm").status_code == 422
    resp = http.get("/web/certificates/m7")
    assert resp.status_code == 404 and "no match m7" in resp.json()["detail"]


def test_the_app_is_served_at_root_with_its_vendored_libraries(env):
    _node, http, _ = env
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for src in ("vendor/nacl-fast.min.js", "vendor/uPlot.iife.min.js", "vendor/cytoscape.min.js"):
        assert f"web/static/{src}" in page.text
        assert http.get(f"/web/static/{src}").status_code == 200
        lic = src.split("/")[1].split(".")[0].replace("nacl-fast", "tweetnacl")
        assert http.get(f"/web/static/vendor/{lic}.LICENSE").status_code == 200, lic
    # the API's own routes are not shadowed by the app
    assert http.get("/status").json()["chain_id"] == "web-test"
    assert http.get("/no/such/route").status_code == 404


def test_proxy_serves_the_app_and_forwards_everything_else(env):
    node, _http, _ = env
    transport = httpx.ASGITransport(app=create_api(node))
    proxy = TestClient(create_proxy("http://node", transport=transport))
    assert "<title>gridledger</title>" in proxy.get("/").text
    assert proxy.get("/status").json()["chain_id"] == "web-test"
    refused = proxy.post("/txs", json={"tx": "01" * 100})
    assert refused.status_code == 400 and refused.json()["code_name"] == "MALFORMED"
    assert proxy.post("/txs", json={"tx": "zz"}).status_code == 422  # the node's own check
    members = proxy.get("/web/state", params={"prefix": "member/"}).json()["items"]
    assert {i["key"] for i in members} == set(committed(node, "member/"))
    # bodies beyond the cap are refused by the proxy itself, declared or streamed
    for body in (
        b"x" * (MAX_BODY + 1),
        (b"x" * 1024 * 1024 for _ in range(5)),  # no content-length: chunked
    ):
        resp = proxy.post("/offchain", content=body)
        assert resp.status_code == 413 and "request body over" in resp.text


def test_web_command_refuses_a_url_without_a_node(capsys):
    from gridledger.cli import main

    assert main(["web", "--node", "http://127.0.0.1:9"]) == 2
    assert "no gridledger node answers at http://127.0.0.1:9" in capsys.readouterr().err
    assert main(["web", "--node", "ftp://x"]) == 2
    assert main(["web", "--node", "http://127.0.0.1:9", "--listen", "nohost"]) == 2
