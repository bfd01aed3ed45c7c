"""One error body for every error the node's API returns, and the handlers that produce it.

Every 4xx/5xx answer is ``{"detail": message, "errors": [{loc, msg, type}]}``: ``errors`` lists
the offending fields of a request-shape error and is empty otherwise. A body that is not JSON
at all (including ``NaN`` and ``Infinity``, which RFC 8259 excludes) is a 400; a JSON body or
parameter of the wrong shape is a 422. The rejected input is never echoed back (it may hold
personal data, and a non-finite float cannot even be rendered as JSON).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from gridledger.node import offchain
from gridledger.node.request_auth import AuthError


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: e.g. ['body', 'tx'] or ['path', 'height']")
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: str = Field(description="what is wrong, in words")
    errors: list[FieldError] = Field(
        default_factory=list, description="the offending fields of a malformed request"
    )


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "errors": []}, status_code=status, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring :class:`ErrorBody` for these statuses."""
    words = {
        400: "malformed request (not JSON, or rejected)",
        401: "unsigned, badly signed, stale or replayed request",
        403: "the signer may not do this",
        404: "not found",
        410: "erased",
        413: "too large, or over the member's quota",
        422: "a parameter or field of the wrong shape",
        429: "too many signed requests from this key",
        503: "too many concurrent streams",
    }
    return {s: {"model": ErrorBody, "description": words[s]} for s in statuses}


OFFCHAIN_STATUS: dict[type[offchain.OffchainError], int] = {
    offchain.BlobTooLarge: 413,
    offchain.QuotaExceeded: 413,
    offchain.RecordNotFound: 404,
    offchain.RecordForbidden: 403,
    offchain.RecordErased: 410,
}


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):

            def reject(constant: str) -> Any:
                raise json.JSONDecodeError(f"{constant} is not a JSON value", "", 0)

            self._json = json.loads(await self.body(), parse_constant=reject)
        return self._json


class StrictJsonRoute(APIRoute):
    """Routes whose JSON bodies refuse ``NaN``/``Infinity`` (Python's json accepts them)."""

    def get_route_handler(self):  # type: ignore[no-untyped-def]
        handler = super().get_route_handler()

        async def strict(request: Request):  # type: ignore[no-untyped-def]
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict


class BodySizeLimit:
    """Refuse request bodies past ``limit`` bytes with the API's error body (413): a declared
    ``Content-Length`` before any of the body is read, a body without one as soon as the bytes
    received pass the limit. (Starlette's own limit answers in plain text.)"""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = error_response(
                    413, f"a body of {int(value)} bytes passes the limit of {self.limit}"
                )
                await response(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise StarletteHTTPException(
                    413, f"the body passed the limit of {self.limit} bytes"
                )
            return message

        await self.app(scope, counting_receive, send)


def _allowed_methods(api: FastAPI, scope: Any) -> set[str]:
    allowed: set[str] = set()
    for route in api.router.routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(scope)[0] != Match.NONE and route.include_in_schema:
            allowed |= set(methods)
    return allowed or {"GET"}


def install(api: FastAPI, max_body_bytes: int) -> None:
    """Route class, body limit and exception handlers; call before adding routes."""
    api.router.route_class = StrictJsonRoute
    api.add_middleware(BodySizeLimit, limit=max_body_bytes)

    @api.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
                "msg": str(e.get("ctx", {}).get("error", e.get("msg", "")))
                if e.get("type") == "json_invalid"
                else str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        malformed = any(e["type"] == "json_invalid" for e in errors)
        what = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        detail = f"body is not valid JSON: {what}" if malformed else f"invalid request: {what}"
        return JSONResponse(
            {"detail": detail, "errors": errors}, status_code=400 if malformed else 422
        )

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route matching the path; a path served by
            # several routes (GET and DELETE /offchain/{h}) allows all of their methods
            headers["Allow"] = ", ".join(sorted(_allowed_methods(api, request.scope)))
        return error_response(exc.status_code, str(exc.detail), headers)

    @api.exception_handler(offchain.OffchainError)
    async def _offchain(_request: Request, exc: offchain.OffchainError) -> JSONResponse:
        return error_response(OFFCHAIN_STATUS.get(type(exc), 400), str(exc))

    @api.exception_handler(AuthError)
    async def _auth(_request: Request, exc: AuthError) -> JSONResponse:
        return error_response(exc.status, str(exc))
