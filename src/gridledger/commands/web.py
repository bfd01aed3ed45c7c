"""``gridledger web --node URL``: the web app served beside a remote node (node/web_proxy.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web",
        help="serve the web app (prosumer, market, DSO, scheduling, explorer) for a remote node",
        description="Serve the single-page web app and forward its API calls to a node "
        "(same-origin proxy: the node needs no CORS policy). Keys stay in the browser.",
    )
    p.add_argument("--node", required=True, help="the node's API URL, e.g. http://127.0.0.1:26657")
    p.add_argument(
        "--listen", default="127.0.0.1:8080", help="HOST:PORT to serve on (default 127.0.0.1:8080)"
    )
    p.set_defaults(handler=_web)


def _web(args: argparse.Namespace) -> int:
    import httpx
    import uvicorn

    from gridledger.commands.errors import CliError
    from gridledger.node.server import parse_hostport
    from gridledger.node.web_proxy import create_proxy

    try:
        host, port = parse_hostport(args.listen)
    except ValueError as exc:
        raise CliError(f"--listen: {exc}") from exc
    if not args.node.startswith(("http://", "https://")):
        raise CliError(f"--node must be an http(s) URL, got {args.node!r}")
    try:
        chain = httpx.get(args.node.rstrip("/") + "/status", timeout=5).json()["chain_id"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise CliError(f"no gridledger node answers at {args.node}: {exc}") from exc
    print(f"web app for {chain} ({args.node}): http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    # open event streams never end by themselves: stop waiting for them after 3 s at Ctrl-C
    uvicorn.run(
        create_proxy(args.node),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=3,
    )
    return 0
