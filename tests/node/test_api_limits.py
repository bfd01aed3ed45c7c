"""What a client can hold or break on a live node: half-sent requests, event streams, huge
bodies, out-of-range numbers and non-JSON numbers (each a reproduced attack)."""

import socket
import time

import httpx
import pytest
from live_server import live_node

from gridledger.chain.keys import KeyPair, load_key
from gridledger.node.api import ApiSettings
from gridledger.node.client import LedgerClient, Signer
from gridledger.node.offchain import MAX_BLOB_BYTES
from gridledger.node.request_auth import sign_headers


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(30)  # a bound: a held connection fails the test instead of hanging it
    return s


def _response(s: socket.socket) -> bytes:
    """One HTTP response (headers and a Content-Length body) read off the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_sent_requests_are_dropped(tmp_path):
    with live_node(tmp_path, request_timeout_s=1.0) as (_node, url):
        socks = []
        for i in range(50):
            s = _connect(url)
            if i % 3 == 0:
                s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # headers never end
            elif i % 3 == 1:  # body never ends
                s.sendall(b"POST /txs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            socks.append(s)  # i % 3 == 2: connects and says nothing
        assert all(_closed_by_server(s) for s in socks)
        for s in socks:
            s.close()
        # a request that trickles in under the deadline still gets its answer, and the
        # keep-alive connection stays usable
        s = _connect(url)
        s.sendall(b"GET /status HTTP/1.1\r\n")
        time.sleep(0.3)
        s.sendall(b"Host: x\r\n\r\n")
        assert _response(s).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(s).startswith(b"HTTP/1.1 200")
        s.close()


def test_a_large_body_is_refused_without_being_read(tmp_path):
    with live_node(tmp_path) as (node, url):
        member = KeyPair.generate()
        with LedgerClient(url) as c:
            dso = Signer(c, load_key(node.home / "keys" / "dso.json")[0])
            dso.send("member.register", {"pub_key": member.pub_hex, "role": "ict"}, wait=True)

        headers = sign_headers(member, "live-test", "POST", b"/offchain", b"")
        s = _connect(url)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        # chunked, so no Content-Length gives the size away: the node must count
        start = "POST /offchain HTTP/1.1\r\nHost: x\r\n"
        s.sendall(f"{start}{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"%x\r\n" % 65536 + b"\0" * 65536 + b"\r\n"
        sent = 0
        while sent <= MAX_BLOB_BYTES + 65536:  # a bit past the limit, then stop sending
            s.sendall(chunk)
            sent += 65536
        answer = _response(s)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"limit" in answer
        s.close()
        # a declared Content-Length over the limit is refused before any of the body arrives
        s = _connect(url)
        s.sendall(
            f"POST /offchain HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {200 * 2**20}"
            "\r\n\r\n".encode()
        )
        assert _response(s).startswith(b"HTTP/1.1 413")
        s.close()
        # the same for every route (16 MiB), with the API's error body
        s = _connect(url)
        s.sendall(b"POST /txs/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n")
        answer = _response(s)
        assert answer.startswith(b"HTTP/1.1 413") and b'"detail":"a body of 209715200' in answer
        s.close()
        with httpx.Client(base_url=url) as http:
            chunks = (b" " * 2**20 for _ in range(17))  # no Content-Length: counted as it comes
            json_type = {"content-type": "application/json"}
            r = http.post("/txs/batch", content=chunks, headers=json_type)
            assert r.status_code == 413 and "passed the limit" in r.json()["detail"]


def test_event_streams_are_capped_and_slots_come_back(tmp_path):
    settings = ApiSettings(max_event_streams=2)
    with live_node(tmp_path, settings=settings) as (_, url), httpx.Client(base_url=url) as http:
        # keep the context managers: dropping one closes its stream
        first_cm, second_cm = http.stream("GET", "/events"), http.stream("GET", "/events")
        first, second = first_cm.__enter__(), second_cm.__enter__()
        assert (first.status_code, second.status_code) == (200, 200)
        assert first.headers["content-type"].startswith("text/event-stream")
        third = http.get("/events")
        assert third.status_code == 503 and "2 event streams" in third.json()["detail"]
        first_cm.__exit__(None, None, None)
        deadline = time.monotonic() + 30
        while True:  # the server notices the disconnect and frees the slot
            with http.stream("GET", "/events") as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the closed stream's slot never came back"
            time.sleep(0.1)
        second_cm.__exit__(None, None, None)


@pytest.mark.parametrize(
    "path", ["/blocks/9223372036854775808", "/blocks/99999999999999999999999999", "/blocks/-1"]
)
def test_out_of_range_heights_are_client_errors(tmp_path, path):
    with live_node(tmp_path) as (_node, url), httpx.Client(base_url=url) as http:
        r = http.get(path)
        assert r.status_code in (404, 422), r.text
        assert r.json()["detail"] and r.json()["errors"] == [] if r.status_code == 404 else True
        assert "height" in r.text


@pytest.mark.parametrize("body", ['{"tx": NaN}', '{"tx": Infinity}', '{"tx": -Infinity}'])
def test_non_json_numbers_are_a_400(tmp_path, body):
    with live_node(tmp_path) as (_node, url), httpx.Client(base_url=url) as http:
        for path in ("/txs", "/txs/batch"):
            r = http.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert "not a JSON value" in r.json()["detail"]
