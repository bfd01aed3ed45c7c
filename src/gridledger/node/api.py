"""HTTP API of a node (FastAPI; schema at ``/openapi.json``). Reference: docs/api.md."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from gridledger.chain import codes
from gridledger.chain.proofs import ProofError
from gridledger.chain.tx import MAX_TX_BYTES
from gridledger.node.api_web import mount_web_app, web_router
from gridledger.node.node import Node
from gridledger.node.offchain import OffchainError

_HEX = re.compile(r"^[0-9a-f]*$")
MAX_BATCH = 5000


def _hex32(value: str, what: str) -> bytes:
    if len(value) != 64 or not _HEX.match(value):
        raise HTTPException(422, f"{what} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


class TxIn(BaseModel):
    tx: str = Field(
        description="the signed transaction's wire bytes, lowercase hex",
        max_length=2 * MAX_TX_BYTES,
    )

    @field_validator("tx")
    @classmethod
    def _hex(cls, v: str) -> str:
        if len(v) % 2 or not _HEX.match(v):
            raise ValueError("tx must be an even-length lowercase hex string")
        return v


class TxBatchIn(BaseModel):
    txs: list[TxIn] = Field(max_length=MAX_BATCH)


class SubmitResult(BaseModel):
    txid: str
    code: int
    code_name: str
    log: str


class BatchResult(BaseModel):
    results: list[SubmitResult]


class OffchainPut(BaseModel):
    hash: str


def create_api(node: Node) -> FastAPI:
    api = FastAPI(
        title="gridledger node",
        version="1",
        description="Submit signed transactions, follow them, read blocks, state and "
        "proofs, stream new blocks (SSE), keep personal data off chain.",
    )

    @api.get("/status")
    def status() -> dict[str, Any]:
        return node.status()

    @api.post(
        "/txs",
        response_model=SubmitResult,
        status_code=202,
        responses={400: {"model": SubmitResult, "description": "rejected by check_tx"}},
    )
    def submit(body: TxIn) -> Any:
        res = node.submit(bytes.fromhex(body.tx))
        if res["code"] != codes.OK:
            return JSONResponse(res, status_code=400)
        return res

    @api.post("/txs/batch", response_model=BatchResult)
    def submit_batch(body: TxBatchIn) -> Any:
        return {"results": [node.submit(bytes.fromhex(t.tx)) for t in body.txs]}

    @api.get("/txs/{txid}")
    def tx_status(txid: str) -> dict[str, Any]:
        st = node.tx_status(_hex32(txid, "txid"))
        if st is None:
            raise HTTPException(404, f"transaction {txid} is neither pending nor committed")
        return st

    @api.get("/blocks/latest")
    def latest_block() -> dict[str, Any]:
        b = node.block(None)
        if b is None:
            raise HTTPException(404, "no block yet")
        return b

    @api.get("/blocks/{height}")
    def block(height: int) -> dict[str, Any]:
        b = node.block(height)
        if b is None:
            raise HTTPException(404, f"no block at height {height}")
        return b

    @api.get("/accounts/{pub_key}")
    def account(pub_key: str) -> dict[str, Any]:
        _hex32(pub_key, "pub_key")
        return node.account(pub_key)

    @api.get("/state/{key:path}")
    def state(key: str, prove: bool = False) -> dict[str, Any]:
        return node.state(key, prove)

    @api.get("/proofs/tx/{txid}")
    def proof(txid: str) -> dict[str, Any]:
        try:
            return node.tx_proof(_hex32(txid, "txid"))
        except ProofError as exc:
            raise HTTPException(404, str(exc)) from exc

    @api.get("/events")
    async def events(request: Request, since: int | None = None) -> StreamingResponse:
        """Server-sent events: one ``block`` event per committed block, with tx results."""
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
                    await asyncio.sleep(0.05)

        return StreamingResponse(gen(), media_type="text/event-stream")

    @api.post("/offchain", response_model=OffchainPut, status_code=201)
    async def offchain_put(request: Request) -> Any:
        try:
            h = node.offchain.put(await request.body())
        except OffchainError as exc:
            raise HTTPException(413, str(exc)) from exc
        return {"hash": h.hex()}

    @api.get("/offchain/{h}")
    def offchain_get(h: str) -> Response:
        try:
            return Response(
                node.offchain.get(_hex32(h, "hash")), media_type="application/octet-stream"
            )
        except OffchainError as exc:
            raise HTTPException(410 if "erased" in str(exc) else 404, str(exc)) from exc

    @api.delete("/offchain/{h}")
    def offchain_erase(h: str) -> dict[str, Any]:
        try:
            node.offchain.erase(_hex32(h, "hash"))
        except OffchainError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"erased": h}

    api.include_router(web_router(node))  # read-only endpoints of the web app (api_web.py)
    mount_web_app(api)  # the web app at /
    return api
