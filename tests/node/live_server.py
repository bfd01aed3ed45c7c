"""A real node behind a real uvicorn server on 127.0.0.1 (in this process, in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from gridledger.node.api import ApiSettings, create_api
from gridledger.node.home import NodeConfig, init_home
from gridledger.node.http_server import uvicorn_config
from gridledger.node.node import Node


@contextmanager
def live_node(
    tmp: Path, settings: ApiSettings | None = None, **server_kw: Any
) -> Iterator[tuple[Node, str]]:
    """Yield (node, base URL); ``server_kw`` goes to :func:`uvicorn_config`."""
    home = tmp / "home"
    init_home(home, "live-test", block_interval_ms=50)
    cfg = NodeConfig.load(home)
    cfg.eager, cfg.synchronous = True, "NORMAL"
    node = Node(home, cfg)
    node.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(create_api(node, settings), **server_kw))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    scheme = "https" if "tls_cert" in server_kw else "http"
    try:
        yield node, f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        node.stop()
