"""The demo's node process: the solo node of ``node/`` with empty blocks on.

Market time is block time, and with the wall clock as the block clock an idle chain would stop
time (the solo engine cuts no empty block by default): meters could never see their slot end.
So the demo's node cuts a block every interval, empty or not, like Tendermint's
``create_empty_blocks``.  Everything else is ``gridledger node start``.

``python -m gridledger.demo.node_proc --home HOME [--api HOST:PORT]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from gridledger.node.node import Node
    from gridledger.node.server import serve

    p = argparse.ArgumentParser(prog="python -m gridledger.demo.node_proc")
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--api", default="127.0.0.1:0")
    args = p.parse_args(argv)
    node = Node(args.home)
    node.engine.create_empty = True
    serve(node, args.api)
    return 0


if __name__ == "__main__":
    sys.exit(main())
