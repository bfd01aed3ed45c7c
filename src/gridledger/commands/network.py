"""``gridledger testnet init|up|down`` and ``gridledger status``: a local BFT network."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gridledger.commands.errors import CliError


def _testnet(home: str):
    from gridledger.node.bft_testnet import Testnet, TestnetError

    try:
        return Testnet(home)
    except TestnetError as exc:
        raise CliError(str(exc)) from exc


def _init(args: argparse.Namespace) -> int:
    from gridledger.node.bft_testnet import FAST_TIMEOUTS, TestnetError, init_testnet

    try:
        desc = init_testnet(
            args.home,
            args.validators,
            chain_id=args.chain_id,
            timeouts=FAST_TIMEOUTS if args.fast else None,
            empty_block_interval_s=0.2 if args.fast else 1.0,
            followers=args.followers,
        )
    except TestnetError as exc:
        raise CliError(str(exc)) from exc
    for n in desc["nodes"]:
        print(
            f"{n['name']} ({n['role']}): p2p {n['p2p'][0]}:{n['p2p'][1]}  api http://"
            f"{n['api'][0]}:{n['api'][1]}  home {n['home']}"
        )
    return 0


def _up(args: argparse.Namespace) -> int:
    from gridledger.node.bft_testnet import TestnetError

    net = _testnet(args.home)
    net.start()
    try:
        net.wait_height(1, timeout_s=args.wait_s)
    except TestnetError as exc:
        raise CliError(f"{exc}; see node.log in each node's home") from exc
    for n, url in zip(net.nodes, net.api_urls, strict=True):
        print(f"{n.name}: {url}")
    return 0


def _down(args: argparse.Namespace) -> int:
    net = _testnet(args.home)
    net.stop()
    print(f"stopped {len(net.nodes)} nodes")
    return 0


def _status_doc(home: Path) -> dict[str, Any]:
    import httpx

    cfg_path = home / "config.json"
    if not cfg_path.exists():
        raise CliError(f"{home} is not a node home (no config.json)")
    try:
        api = json.loads(cfg_path.read_text())["api"]
    except (ValueError, KeyError) as exc:
        raise CliError(f"{cfg_path}: no api address ({exc})") from exc
    url = f"http://{api[0]}:{api[1]}/status"
    try:
        r = httpx.get(url, timeout=5.0)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise CliError(f"node at {url} is not answering: {exc}") from exc
    return r.json()


def _status(args: argparse.Namespace) -> int:
    doc = _status_doc(Path(args.home))
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    cs = doc.get("consensus", {})
    print(f"node        {doc.get('node', '?')}  (chain {doc['chain_id']})")
    print(f"role        {doc.get('role', 'validator')}")
    print(f"height      {doc['height']}  (consensus at {cs.get('height')}/{cs.get('round')})")
    print(f"last block  {doc.get('last_block_hash') or '-'}")
    print(f"peers       {', '.join(doc.get('peers', [])) or '-'}")
    print(f"mempool     {doc.get('mempool', 0)}")
    print("validators")
    for v in doc["validators"]:
        print(f"  {v['pub_key']}  power {v['power']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tn = sub.add_parser("testnet", help="a local BFT network of validator processes")
    tsub = tn.add_subparsers(dest="testnet_command", metavar="ACTION", required=True)
    p = tsub.add_parser("init", help="write keys, genesis and configs for N validators")
    p.add_argument("--validators", type=int, default=4)
    p.add_argument(
        "--followers", type=int, default=0, help="non-validator nodes that sync and serve the API"
    )
    p.add_argument("--home", required=True)
    p.add_argument("--chain-id", default="gridledger-testnet")
    p.add_argument("--fast", action="store_true", help="short timeouts (tests)")
    p.set_defaults(handler=_init)
    p = tsub.add_parser("up", help="start every validator (separate OS processes)")
    p.add_argument("--home", required=True)
    p.add_argument("--wait-s", type=float, default=60.0, help="wait for the first block")
    p.set_defaults(handler=_up)
    p = tsub.add_parser("down", help="stop every validator")
    p.add_argument("--home", required=True)
    p.set_defaults(handler=_down)

    p = sub.add_parser("status", help="height, last block, peers and validators of a node")
    p.add_argument("--home", required=True, help="the node's home directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_status)
