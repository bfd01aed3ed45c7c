"""The web app beside a remote node (``gridledger web --node URL``): the app's files, and every
other request forwarded to the node.

A same-origin reverse proxy rather than CORS on the node: the node's API needs no cross-origin
policy (no new attack surface on it: a page on another site still cannot drive a user's node),
the app uses the same relative URLs whether the node serves it or this proxy does, and the
server-sent event stream is passed through byte for byte. The proxy holds no key and adds no
endpoint: what the browser can do through it, it could do against the node directly.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from gridledger.node.api_web import mount_web_app

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
}
MAX_BODY = 4 * 1024 * 1024  # > the node's largest request (a batch of 5,000 txs is refused there)


def create_proxy(node_url: str, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """``transport`` lets tests put an in-process node behind the proxy."""
    app = FastAPI(title="gridledger web app", docs_url=None, redoc_url=None, openapi_url=None)
    # no read timeout: the event stream stays open for as long as the browser listens
    timeout = httpx.Timeout(30, read=None)
    upstream = httpx.AsyncClient(
        base_url=node_url.rstrip("/"), timeout=timeout, transport=transport
    )
    mount_web_app(app)

    @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
    async def forward(path: str, request: Request) -> Any:
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY:
            return Response(f"request body over {MAX_BODY} bytes", status_code=413)
        body = bytearray()
        async for chunk in request.stream():  # also capped when the length was not declared
            body += chunk
            if len(body) > MAX_BODY:
                return Response(f"request body over {MAX_BODY} bytes", status_code=413)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        req = upstream.build_request(
            request.method,
            f"/{path}",
            params=request.query_params,
            content=bytes(body),
            headers=headers,
        )
        try:
            resp = await upstream.send(req, stream=True)
        except httpx.HTTPError as exc:
            return Response(
                f'{{"detail": "node {node_url} unreachable: {type(exc).__name__}"}}',
                status_code=502,
                media_type="application/json",
            )
        out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
        return StreamingResponse(
            resp.aiter_raw(),
            status_code=resp.status_code,
            headers=out_headers,
            background=BackgroundTask(resp.aclose),
        )

    return app
