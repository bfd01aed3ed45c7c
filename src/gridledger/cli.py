"""The ``gridledger`` command: a thin dispatcher over the per-area modules in ``commands/``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from gridledger.commands.errors import CliError

# Each module registers its own sub-commands; a missing module is a packaging error, not a
# reason to hide the others.
COMMAND_MODULES = (
    "gridledger.commands.physics",  # cases, pf
    "gridledger.commands.certify",  # ropf, validate
    "gridledger.commands.ledger",  # node, tx, query, verify, prove
    "gridledger.commands.network",  # testnet, status
    "gridledger.commands.schedule",  # schedule
    "gridledger.commands.market",  # demo
    "gridledger.commands.web",  # web (the web app beside a remote node)
    "gridledger.commands.dso",  # dso serve, dso status
    "gridledger.commands.meter",  # meter serve
    "gridledger.commands.prosumer",  # offer, bid, orders, cancel, balance, certificate
    "gridledger.commands.members",  # members import
    "gridledger.commands.dr",  # dr
    "gridledger.commands.ev",  # ev (charging sessions)
    "gridledger.commands.community",  # community (prosumers of a real grid, a day of trading)
    "gridledger.commands.vpp",  # vpp (seed 003: P2P trading by ADMM, off or on chain)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridledger",
        description="Network-aware energy trading on a permissioned blockchain.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        # No try/except: a missing command module is a packaging error and must say so.
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except CliError as exc:
        print(f"gridledger: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `gridledger pf case118 --json | head`): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
