"""Python client of a node's HTTP API (httpx), with a signer that tracks sequence numbers."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx

from gridledger.chain.keys import KeyPair
from gridledger.chain.tx import make_tx
from gridledger.node.request_auth import sign_headers


class ClientError(RuntimeError):
    """The node answered with an error (the message is the node's)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class MemberAuth(httpx.Auth):
    """Signs every request with a member's key (see ``gridledger.node.request_auth``)."""

    requires_request_body = True

    def __init__(self, key: KeyPair, chain_id: str) -> None:
        self.key = key
        self.chain_id = chain_id

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers.update(
            sign_headers(
                self.key, self.chain_id, request.method, request.url.raw_path, request.content
            )
        )
        yield request


class LedgerClient:
    """Client of one node. With ``key`` (a member's), requests are signed: needed for personal
    data (``offchain_*``) and, on a node with ``read_auth``, for every read; pass ``chain_id``
    then (it is read from ``/status`` otherwise, which needs no signature only when reads are
    open). ``verify`` is httpx's: a CA bundle path for a node with a self-signed certificate.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 30.0,
        http: httpx.Client | None = None,
        key: KeyPair | None = None,
        chain_id: str | None = None,
        verify: str | bool | ssl.SSLContext = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # ``http`` lets tests pass FastAPI's in-process TestClient (an httpx.Client)
        if isinstance(verify, str):  # a CA bundle (a node's self-signed certificate)
            verify = ssl.create_default_context(cafile=verify)
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout_s, verify=verify)
        self.key = key
        self._chain_id = chain_id
        self._auth: MemberAuth | None = None
        if key is not None and chain_id is not None:
            self._auth = MemberAuth(key, chain_id)

    def as_member(self, key: KeyPair) -> LedgerClient:
        """A client on the same connection that signs as ``key`` (closing one closes both)."""
        return LedgerClient(self.base_url, http=self.http, key=key, chain_id=self.chain_id)

    @property
    def chain_id(self) -> str:
        if self._chain_id is None:
            self._chain_id = self._json(self.http.get("/status"))["chain_id"]
        return self._chain_id

    @property
    def auth(self) -> MemberAuth | None:
        if self.key is None:
            return None
        if self._auth is None:
            self._auth = MemberAuth(self.key, self.chain_id)
        return self._auth

    def _get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, auth=self.auth or httpx.USE_CLIENT_DEFAULT, **kw)

    def _member_auth(self) -> MemberAuth:
        auth = self.auth
        if auth is None:
            raise ValueError("personal data needs a signed request: create the client with key=")
        return auth

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, resp: httpx.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 400 and not (resp.status_code == 400 and "code" in body):
            raise ClientError(
                resp.status_code, body.get("detail", body) if isinstance(body, dict) else body
            )
        return body

    def status(self) -> dict[str, Any]:
        return self._json(self._get("/status"))

    def submit(self, raw: bytes) -> dict[str, Any]:
        """Submit one transaction; returns {txid, code, code_name, log} (code 0 = admitted)."""
        return self._json(self.http.post("/txs", json={"tx": raw.hex()}))

    def submit_batch(self, raws: list[bytes]) -> list[dict[str, Any]]:
        body = {"txs": [{"tx": r.hex()} for r in raws]}
        return self._json(self.http.post("/txs/batch", json=body))["results"]

    def tx(self, txid: str) -> dict[str, Any] | None:
        resp = self._get(f"/txs/{txid}")
        if resp.status_code == 404:
            return None
        return self._json(resp)

    def wait_tx(self, txid: str, timeout_s: float = 30.0, poll_s: float = 0.05) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.tx(txid)
            if st is not None and st["status"] == "committed":
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"transaction {txid} not committed after {timeout_s} s "
                    f"(status: {st and st['status']})"
                )
            time.sleep(poll_s)

    def block(self, height: int | None = None) -> dict[str, Any]:
        return self._json(self._get("/blocks/latest" if height is None else f"/blocks/{height}"))

    def account(self, pub_hex: str) -> dict[str, Any]:
        return self._json(self._get(f"/accounts/{pub_hex}"))

    def state(self, key: str, prove: bool = False) -> dict[str, Any]:
        return self._json(self._get(f"/state/{key}", params={"prove": prove}))

    def tx_proof(self, txid: str) -> dict[str, Any]:
        return self._json(self._get(f"/proofs/tx/{txid}"))

    def offchain_put(self, data: bytes, readers: tuple[str, ...] = ("dso",)) -> str:
        """Store personal data (signed by this client's key, the subject or its meter) that
        members of the ``readers`` roles may read too; returns its SHA-256 hex."""
        resp = self.http.post(
            "/offchain",
            content=data,
            params={"readers": ",".join(readers)},
            headers={"content-type": "application/octet-stream"},
            auth=self._member_auth(),
        )
        return self._json(resp)["hash"]

    def offchain_get(self, h: str) -> bytes:
        resp = self.http.get(f"/offchain/{h}", auth=self._member_auth())
        if resp.status_code >= 400:
            self._json(resp)
        return resp.content

    def offchain_erase(self, h: str) -> None:
        """Erase this client's key's own record (the subject's right to be forgotten)."""
        self._json(self.http.delete(f"/offchain/{h}", auth=self._member_auth()))

    def events(
        self, since: int | None = None, timeout_s: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield committed-block events (server-sent events) as they arrive."""
        params = {} if since is None else {"since": since}
        with self.http.stream(
            "GET",
            "/events",
            params=params,
            auth=self.auth or httpx.USE_CLIENT_DEFAULT,
            timeout=httpx.Timeout(timeout_s or 30.0, read=timeout_s),
        ) as resp:
            data: list[str] = []
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    data.append(line[6:])
                elif line == "" and data:
                    yield json.loads("\n".join(data))
                    data = []


class Signer:
    """Signs and submits transactions for one key, numbering them from the node's next_seq."""

    def __init__(self, client: LedgerClient, key: KeyPair, chain_id: str | None = None) -> None:
        self.client = client
        self.key = key
        self.chain_id = chain_id or client.status()["chain_id"]
        self.seq = client.account(key.pub_hex)["next_seq"]

    def sign(self, tx_type: str, payload: dict[str, Any]) -> bytes:
        raw = make_tx(self.key, self.chain_id, self.seq, tx_type, payload).raw
        self.seq += 1
        return raw

    def send(self, tx_type: str, payload: dict[str, Any], wait: bool = False) -> dict[str, Any]:
        raw = self.sign(tx_type, payload)
        res = self.client.submit(raw)
        if res["code"] != 0:
            self.seq -= 1
            return res
        return self.client.wait_tx(res["txid"]) if wait else res
