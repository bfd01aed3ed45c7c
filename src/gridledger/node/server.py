"""Run a node with its HTTP API until SIGINT/SIGTERM (``gridledger node start``)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn

from gridledger.node.api import ApiSettings, create_api
from gridledger.node.http_server import uvicorn_config
from gridledger.node.node import Node


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def serve(node: Node, api: str) -> None:
    host, port = parse_hostport(api)
    # bind ourselves so that port 0 works and the real address is known before serving
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it (Linux): without it, a response written in two parts
    # waits for the client's delayed ACK (~40 ms per request, measured)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    cfg = node.config
    tls = bool(cfg.tls_cert and cfg.tls_key)
    addr = f"{'https' if tls else 'http'}://{host}:{sock.getsockname()[1]}"
    app = create_api(
        node, ApiSettings(read_auth=cfg.read_auth, max_event_streams=cfg.max_event_streams)
    )
    config = uvicorn_config(
        app,
        request_timeout_s=cfg.request_timeout_ms / 1000,
        tls_cert=node.home / cfg.tls_cert if cfg.tls_cert else None,
        tls_key=node.home / cfg.tls_key if cfg.tls_key else None,
    )
    server = uvicorn.Server(config)
    node.start()

    def watch() -> None:
        # a consensus failure (e.g. disk full) stops the process, so that a supervisor restarts
        # it from the last durable height instead of serving a chain that no longer grows
        while not server.should_exit:
            if node.engine.error is not None:
                server.should_exit = True
                return
            time.sleep(0.2)

    threading.Thread(target=watch, name="engine-watch", daemon=True).start()
    addr_file = Path(node.home) / "node.addr"
    addr_file.write_text(f"{addr}\n")
    print(
        f"gridledger node {node.app.chain_id} at height {node.app.height}: API on {addr}",
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        node.stop()
        addr_file.unlink(missing_ok=True)
        if node.engine.error is not None:
            print(f"consensus stopped: {node.engine.error!r}", file=sys.stderr)
            sys.exit(1)
