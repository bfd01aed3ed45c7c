"""``gridledger dso serve`` and ``gridledger dso status``: the DSO as a long-running service."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from gridledger.commands.errors import CliError


def register(sub: Any) -> None:
    dso = sub.add_parser("dso", help="the DSO service: certify every match on a real grid")
    dsub = dso.add_subparsers(dest="dso_command", metavar="SUBCOMMAND", required=True)
    serve = dsub.add_parser(
        "serve",
        help="follow a node and certify every pending match (runs until stopped)",
        description=(
            "Follows NODE's block stream (reconnecting after a node restart) and certifies each "
            "pending match on GRID with the settings of CONFIG (see docs/physics.md). State is "
            "the chain's plus HOME/documents (set-point history) and HOME/status.json."
        ),
    )
    serve.add_argument("--home", type=Path, required=True)
    serve.add_argument("--node", required=True, help="the node's API URL")
    serve.add_argument("--grid", required=True, help="any case load_case accepts")
    serve.add_argument("--config", type=Path, required=True, help="dso.yaml")
    serve.add_argument(
        "--key", type=Path, default=None, help="the DSO's key file (default HOME/keys/dso.json)"
    )
    serve.set_defaults(handler=_serve)
    status = dsub.add_parser("status", help="what the DSO service certified, refused, awaits")
    status.add_argument("--home", type=Path, required=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)


def _serve(args: argparse.Namespace) -> int:
    from gridledger.agents.dso_config import DsoConfigError, load_dso_config
    from gridledger.agents.dso_service import serve
    from gridledger.chain.keys import KeyFileError, load_key

    key_path = args.key or args.home / "keys" / "dso.json"
    try:
        key, _ = load_key(key_path)
        load_dso_config(args.config, args.grid)  # fail fast, before following the node
    except (KeyFileError, DsoConfigError) as exc:
        raise CliError(str(exc)) from exc
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly, state is on disk
        serve(
            args.home, args.node, args.grid, args.config, key,
            stop=lambda: bool(stopping), log=lambda m: print(m, file=sys.stderr, flush=True),
        )  # fmt: skip
    return 0


def _status(args: argparse.Namespace) -> int:
    from gridledger.agents.dso_service import read_status

    doc = read_status(args.home)
    if not doc:
        raise CliError(f"no DSO service status in {args.home} (has 'gridledger dso serve' run?)")
    certs = doc.get("certificates", {})
    seconds = [c["seconds"] for c in certs.values()]
    summary = {
        "approved": sorted(m for m, c in certs.items() if c["verdict"] == "approved"),
        "refused": {
            m: c["reasons"] for m, c in sorted(certs.items()) if c["verdict"] != "approved"
        },
        "waiting": doc.get("waiting", []),
        "seconds_per_certificate": {
            "mean": sum(seconds) / len(seconds) if seconds else None,
            "max": max(seconds) if seconds else None,
        },
        "height": doc.get("height"),
    }
    taps = {m: c["taps"] for m, c in sorted(certs.items()) if c.get("taps")}
    if taps:  # a DSO that moves tap changers: the positions each approval set
        summary["taps"] = taps
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"DSO service at height {summary['height']}")
    print(f"  approved  {len(summary['approved'])}: {', '.join(summary['approved']) or '-'}")
    print(f"  refused   {len(summary['refused'])}")
    for m, reasons in summary["refused"].items():
        print(f"    {m}: {'; '.join(reasons)}")
    for m, positions in taps.items():
        print(f"    {m} taps: " + ", ".join(f"{b} at {p}" for b, p in sorted(positions.items())))
    print(f"  waiting   {len(summary['waiting'])}: {', '.join(summary['waiting']) or '-'}")
    s = summary["seconds_per_certificate"]
    if s["mean"] is not None:
        print(f"  seconds per certificate: mean {s['mean']:.2f}, max {s['max']:.2f}")
    return 0
