"""``gridledger community``: a grid's prosumers trading every 15 minutes (docs/community.md)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gridledger.commands.errors import CliError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "community",
        help="simulate a community of prosumers trading every 15 minutes on a real grid",
        description=(
            "The grid's loads become prosumers with their PV, driven by the grid's profiles "
            "(SimBench's for simbench:<code>) or the shipped data. Each slot they post offers "
            "and bids, the market matches, the DSO certifies per interval, the meters post and "
            "settlement pays, on an embedded chain. Prints one row per slot and the invariants."
        ),
    )
    p.add_argument("--grid", required=True, help="any case load_case accepts, e.g. simbench:<code>")
    p.add_argument("--prosumers", type=int, required=True, help="how many prosumers (>= 1)")
    p.add_argument("--hours", type=float, required=True, help="market hours (0.25 .. 48)")
    p.add_argument("--validators", type=int, default=1, help="validators (1: embedded chain)")
    p.add_argument("--speedup", type=float, default=20.0,
                   help="with --validators > 1: simulated time per wall time of the validators' "
                   "clock")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the strategy and forecasts")
    p.add_argument("--start-hour", type=int, default=10, help="hour of day the run starts (UTC)")
    p.add_argument("--home", type=Path, help="chain home (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--html", type=Path, metavar="FILE", help="write an HTML report with plots")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from gridledger.demo.community import CommunityConfig, CommunityError, run_community
    from gridledger.demo.community_report import text_report, write_html

    cfg = CommunityConfig(
        args.grid,
        args.prosumers,
        args.hours,
        args.validators,
        args.seed,
        args.start_hour,
        speedup=args.speedup,
    )
    try:
        cfg.check()
    except CommunityError as exc:
        raise CliError(str(exc)) from exc
    if args.home is not None and args.home.exists() and any(args.home.iterdir()):
        raise CliError(f"--home {args.home} is not empty; give a new directory")
    home = args.home or Path(tempfile.mkdtemp(prefix="gridledger-community-"))
    quiet = args.json

    def progress(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    try:
        result = run_community(cfg, home, progress)
    except CommunityError as exc:
        raise CliError(str(exc)) from exc
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    if args.html:
        write_html(result, args.html)
    if args.json:
        print(json.dumps(result))
    else:
        print(text_report(result))
        if args.html:
            print(f"report: {args.html}")
    return 0 if all(result["invariants"].values()) else 1
