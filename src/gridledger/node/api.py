"""HTTP API of a node (FastAPI; schema at ``/openapi.json``). Reference: docs/api.md.

The schema states every constraint, status code and error body (:mod:`api_errors`), so that
generated clients and fuzzers (schemathesis, in the tests) find nothing undeclared. Personal
data (``/offchain``) needs requests signed by a member (:mod:`request_auth`); with
``read_auth`` every read does. The path ``/`` is left free for a web app.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from gridledger.chain import codes, encoding
from gridledger.chain.keys import ROLES
from gridledger.chain.proofs import ProofError
from gridledger.chain.tx import MAX_TX_BYTES
from gridledger.node import api_errors
from gridledger.node.api_errors import ErrorBody, responses
from gridledger.node.api_web import mount_web_app, web_router
from gridledger.node.offchain import MAX_BLOB_BYTES, BlobTooLarge
from gridledger.node.request_auth import (
    AuthError,
    RequestVerifier,
    SignedHeaders,
    body_sha256,
    parse_headers,
)
from gridledger.node.service import NodeService

HEX64 = r"^[0-9a-f]{64}$"
MAX_BATCH = 5000
# any request body (a batch of 5,000 typical transactions is about 3 MB of hex)
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024
# heights are stored as SQLite integers: nothing lies above this
MAX_HEIGHT = 2**63 - 1
READER_ROLES = "|".join(ROLES)


@dataclass(frozen=True)
class ApiSettings:
    """Limits and access rules of one node's API (from the node's configuration)."""

    read_auth: bool = False  # reads need a request signed by an active member
    max_event_streams: int = 64  # concurrent /events streams; more get 503
    event_poll_s: float = 0.05


class TxIn(BaseModel):
    tx: str = Field(
        description="the signed transaction's wire bytes, lowercase hex",
        max_length=2 * MAX_TX_BYTES,
        pattern=r"^([0-9a-f]{2})*$",
    )


class TxBatchIn(BaseModel):
    txs: list[TxIn] = Field(max_length=MAX_BATCH)


class SubmitResult(BaseModel):
    txid: str = Field(pattern=HEX64)
    code: int
    code_name: str
    log: str


class BatchResult(BaseModel):
    results: list[SubmitResult]


class OffchainPut(BaseModel):
    hash: str = Field(pattern=HEX64, description="SHA-256 of the stored bytes")


class OffchainErased(BaseModel):
    erased: str = Field(pattern=HEX64)


Hex64Path = Annotated[str, Path(pattern=HEX64, description="64 lowercase hex characters")]


class EventStream(StreamingResponse):
    """``text/event-stream`` that hands back its stream slot however the stream ends."""

    media_type = "text/event-stream"

    def __init__(self, content: Any, release: Any = None, status_code: int = 200) -> None:
        super().__init__(content, status_code=status_code, media_type=self.media_type)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._release is not None:
                self._release()


def _target(request: Request) -> bytes:
    """The raw path and query exactly as the client sent (what the client signed)."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    return path + b"?" + query if query else path


def _member(node: Any, pub_hex: str) -> dict[str, Any]:
    """The signer's membership record; it must be an active member (403 otherwise)."""
    doc = encoding.decode(node.app.query(f"account/{pub_hex}").value)
    member = doc.get("member")
    if member is None or member.get("status") != "active":
        raise AuthError(f"{pub_hex[:16]}… is not an active member of this chain", status=403)
    return member


def _authenticate(
    node: Any, verifier: RequestVerifier, signed: SignedHeaders, request: Request, body: bytes
) -> dict[str, Any]:
    """Signature first (so a stranger learns nothing about who is a member), then membership,
    then replay (so only members' nonces are remembered). Returns the membership record."""
    verifier.verify(signed, request.method, _target(request), body_sha256(body))
    member = _member(node, signed.pub_hex)
    verifier.accept_once(signed)
    return member


def signing_headers(
    # typed ``str`` with a None default: optional in the schema but never ``null``
    x_gridledger_key: Annotated[
        str,  # noqa: RUF013
        Header(pattern=HEX64, description="the member's Ed25519 public key"),
    ] = None,  # type: ignore[assignment]
    x_gridledger_time: Annotated[
        str,  # noqa: RUF013
        Header(pattern=r"^[0-9]{1,16}$", description="signing time, ms"),
    ] = None,  # type: ignore[assignment]
    x_gridledger_nonce: Annotated[
        str,  # noqa: RUF013
        Header(pattern=r"^[0-9a-f]{32}$", description="16 random bytes, hex"),
    ] = None,  # type: ignore[assignment]
    x_gridledger_signature: Annotated[
        str,  # noqa: RUF013
        Header(pattern=r"^[0-9a-f]{128}$", description="Ed25519 over the canonical request"),
    ] = None,  # type: ignore[assignment]
) -> SignedHeaders:
    """Declares the signing headers in the schema; see ``gridledger.node.request_auth``."""
    return parse_headers(
        {
            k: v
            for k, v in (
                ("x-gridledger-key", x_gridledger_key),
                ("x-gridledger-time", x_gridledger_time),
                ("x-gridledger-nonce", x_gridledger_nonce),
                ("x-gridledger-signature", x_gridledger_signature),
            )
            if v is not None
        }
    )


def create_api(node: NodeService, settings: ApiSettings | None = None) -> FastAPI:
    """The API over a solo :class:`~gridledger.node.node.Node` or a BFT validator."""
    settings = settings or ApiSettings()
    verifier = RequestVerifier(node.app.chain_id)

    async def read_guard(request: Request) -> None:
        # /offchain checks its own signatures (with the body); other reads only with read_auth
        if (
            settings.read_auth
            and request.method in ("GET", "HEAD")
            and not request.url.path.startswith("/offchain")
        ):
            _authenticate(node, verifier, parse_headers(request.headers), request, b"")

    api = FastAPI(
        title="gridledger node",
        version="1",
        description="Submit signed transactions, follow them, read blocks, state and "
        "proofs, stream new blocks (SSE), keep personal data off chain.",
        dependencies=[Depends(read_guard)],
    )
    api_errors.install(api, MAX_JSON_BODY_BYTES)
    # every route may answer these (shape errors, and signed reads when read_auth is on)
    common = responses(400, 401, 403, 422, 429) if settings.read_auth else responses(400, 422)

    @api.get("/status", responses=common)
    def status() -> dict[str, Any]:
        return node.status()

    @api.post(
        "/txs",
        response_model=SubmitResult,
        status_code=202,
        responses={
            **responses(413, 422),
            400: {
                "description": "rejected by check_tx (a SubmitResult naming the code), or a "
                "body that is not JSON (an ErrorBody)",
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/SubmitResult"},
                                {"$ref": "#/components/schemas/ErrorBody"},
                            ]
                        }
                    }
                },
            },
        },
    )
    def submit(body: TxIn) -> Any:
        res = node.submit(bytes.fromhex(body.tx))
        if res["code"] != codes.OK:
            return JSONResponse(res, status_code=400)
        return res

    @api.post("/txs/batch", response_model=BatchResult, responses={**responses(400, 413, 422)})
    def submit_batch(body: TxBatchIn) -> Any:
        return {"results": [node.submit(bytes.fromhex(t.tx)) for t in body.txs]}

    @api.api_route(
        "/txs/batch",
        methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"],
        include_in_schema=False,
    )
    def batch_other_methods() -> JSONResponse:
        # without this, GET /txs/batch would reach GET /txs/{txid} and fail its pattern (422)
        return api_errors.error_response(405, "Method Not Allowed", {"Allow": "POST"})

    @api.get("/txs/{txid}", responses={**common, **responses(404)})
    def tx_status(txid: Hex64Path) -> dict[str, Any]:
        st = node.tx_status(bytes.fromhex(txid))
        if st is None:
            raise HTTPException(404, f"transaction {txid} is neither pending nor committed")
        return st

    @api.get("/blocks/latest", responses={**common, **responses(404)})
    def latest_block() -> dict[str, Any]:
        b = node.block(None)
        if b is None:
            raise HTTPException(404, "no block yet")
        return b

    @api.get("/blocks/{height}", responses={**common, **responses(404)})
    def block(height: Annotated[int, Path(ge=0, description="block height")]) -> dict[str, Any]:
        b = node.block(height) if height <= MAX_HEIGHT else None
        if b is None:
            raise HTTPException(404, f"no block at height {height}")
        return b

    @api.get("/accounts/{pub_key}", responses=common)
    def account(pub_key: Hex64Path) -> dict[str, Any]:
        return node.account(pub_key)

    @api.get("/state/{key:path}", responses=common)
    def state(key: str, prove: bool = False) -> dict[str, Any]:
        return node.state(key, prove)

    @api.get("/proofs/tx/{txid}", responses={**common, **responses(404)})
    def proof(txid: Hex64Path) -> dict[str, Any]:
        try:
            return node.tx_proof(bytes.fromhex(txid))
        except ProofError as exc:
            raise HTTPException(404, str(exc)) from exc

    open_streams = [0]

    def release_stream() -> None:
        open_streams[0] -= 1

    @api.get(
        "/events",
        response_class=EventStream,
        responses={
            **common,
            **responses(503),
            200: {
                "description": "server-sent events: `event: block`, `id: height`, "
                "`data: {height, hash, time_ms, txs}` per committed block",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
        },
    )
    async def events(
        request: Request,
        since: Annotated[
            int | None, Query(ge=0, description="stream blocks after this height")
        ] = None,
    ) -> EventStream:
        """Server-sent events: one ``block`` event per committed block, with tx results."""
        if open_streams[0] >= settings.max_event_streams:
            raise HTTPException(
                503, f"{settings.max_event_streams} event streams are open already; retry later"
            )
        open_streams[0] += 1
        start = node.feed.height if since is None else since

        async def gen():
            last = start
            yield ": connected\n\n"
            while not await request.is_disconnected():
                items = node.feed.since(last)
                for ev in items:
                    data = json.dumps(ev.__dict__, separators=(",", ":"))
                    yield f"event: block\nid: {ev.height}\ndata: {data}\n\n"
                    last = ev.height
                if not items:
                    await asyncio.sleep(settings.event_poll_s)

        return EventStream(gen(), release_stream)

    offchain_errors = responses(400, 401, 403, 422, 429)

    @api.post(
        "/offchain",
        response_model=OffchainPut,
        status_code=201,
        responses={**offchain_errors, **responses(410, 413)},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def offchain_put(
        request: Request,
        signed: Annotated[SignedHeaders, Depends(signing_headers)],
        readers: Annotated[
            str,
            Query(
                pattern=rf"^(({READER_ROLES})(,({READER_ROLES}))*)?$",
                description="comma-separated roles the data subject lets read the record",
            ),
        ] = "",
    ) -> Any:
        """Store personal data for its subject: the signer, or the prosumer of a signing meter."""
        verifier.check_time(signed)  # a stale request is refused before its body is read
        data = await _read_capped(request, MAX_BLOB_BYTES)
        member = _authenticate(node, verifier, signed, request, data)
        if member["role"] == "meter":
            if not member.get("prosumer"):
                raise AuthError("this meter is bound to no prosumer", status=403)
            subject = member["prosumer"]
        else:
            subject = signed.pub_hex
        roles = tuple(sorted({r for r in readers.split(",") if r}))
        regrant = member["role"] != "meter"  # a meter stores for its subject, never re-grants
        h = await asyncio.to_thread(node.offchain.put, data, subject, roles, regrant)
        return {"hash": h.hex()}

    @api.get(
        "/offchain/{h}",
        response_class=Response,
        responses={
            **offchain_errors,
            **responses(404, 410),
            200: {
                "description": "the stored bytes",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            },
        },
    )
    def offchain_get(
        request: Request, h: Hex64Path, signed: Annotated[SignedHeaders, Depends(signing_headers)]
    ) -> Response:
        """The record, for its subject or a member of a role the subject granted."""
        member = _authenticate(node, verifier, signed, request, b"")
        data = node.offchain.get(bytes.fromhex(h), signed.pub_hex, member["role"])
        return Response(data, media_type="application/octet-stream")

    @api.delete(
        "/offchain/{h}",
        response_model=OffchainErased,
        responses={**offchain_errors, **responses(404, 410)},
    )
    def offchain_erase(
        request: Request, h: Hex64Path, signed: Annotated[SignedHeaders, Depends(signing_headers)]
    ) -> Any:
        """Erase the signer's own record (right to be forgotten); a tombstone stays."""
        member = _authenticate(node, verifier, signed, request, b"")
        # records stored before they had owners have no subject to ask: the DSO erases those
        node.offchain.erase(bytes.fromhex(h), signed.pub_hex, legacy=member["role"] == "dso")
        return {"erased": h}

    api.include_router(web_router(node))  # read-only endpoints of the web app (api_web.py)
    mount_web_app(api)  # the web app at /
    api.openapi_schema = None
    _declare_error_body(api)
    return api


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit``: never read whole when larger."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BlobTooLarge(f"{declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BlobTooLarge(f"the body passed the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _declare_error_body(api: FastAPI) -> None:
    """Make sure ErrorBody (used in raw ``$ref``s) is in the schema's components."""
    original = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = original()
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            comps.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template=_REF))
            comps.setdefault(
                "FieldError",
                ErrorBody.model_json_schema(ref_template=_REF)["$defs"]["FieldError"],
            )
            comps["ErrorBody"].pop("$defs", None)
            # FastAPI's default 422 entries name HTTPValidationError; ours is ErrorBody
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    resp = op.get("responses", {}).get("422")
                    if resp:
                        resp["content"] = {
                            "application/json": {"schema": {"$ref": f"{_PREFIX}ErrorBody"}}
                        }
            comps.pop("HTTPValidationError", None)
            comps.pop("ValidationError", None)
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


_PREFIX = "#/components/schemas/"
_REF = _PREFIX + "{model}"
