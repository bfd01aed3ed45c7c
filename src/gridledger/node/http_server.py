"""uvicorn, configured to bound what a client can hold: request read deadline, TLS.

uvicorn closes idle keep-alive connections, but a connection that sends half a request (or
nothing) is held forever: 1,000 such connections were all still open after 21 s. Neither
uvicorn nor h11 has a deadline for receiving a request, so :func:`deadline_protocol` adds one
to uvicorn's own h11 protocol: from a request's first byte (or the connection's opening) its
headers and body must arrive within ``timeout_s``, or the connection is closed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# their side has not finished sending the request
_RECEIVING = (h11.IDLE, h11.SEND_BODY)


def deadline_protocol(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for receiving each request."""

    class DeadlineH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.conn.their_state in _RECEIVING and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._arm()
            super().data_received(data)
            if self.conn.their_state not in _RECEIVING:
                self._disarm()  # the request is in: the app has it

        def on_response_complete(self) -> None:
            self._disarm()  # idle now: uvicorn's keep-alive timeout takes over
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineH11Protocol


def uvicorn_config(
    app: Any,
    *,
    request_timeout_s: float = 10.0,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    **kw: Any,
) -> uvicorn.Config:
    """The node's uvicorn configuration (TLS when both ``tls_cert`` and ``tls_key`` are given)."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both a certificate and a key file")
    tls: dict[str, Any] = {}
    if tls_cert is not None and tls_key is not None:
        for what, p in (("certificate", tls_cert), ("key", tls_key)):
            if not Path(p).is_file():
                raise ValueError(f"TLS {what} file {p} does not exist")
        tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)}
    return uvicorn.Config(
        app,
        http=deadline_protocol(request_timeout_s),
        log_level="warning",
        access_log=False,
        lifespan="off",
        **tls,
        **kw,
    )
