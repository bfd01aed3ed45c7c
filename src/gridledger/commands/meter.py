"""``gridledger meter serve``: post each meter's signed readings per slot, from a CSV profile or
from the grid's own profiles."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from gridledger.commands.errors import CliError


def register(sub: Any) -> None:
    meter = sub.add_parser("meter", help="meter services: post signed readings")
    msub = meter.add_subparsers(dest="meter_command", metavar="SUBCOMMAND", required=True)
    serve = msub.add_parser(
        "serve",
        help="post each meter's reading once its slot has ended, from a CSV or the grid's profiles",
        description=(
            "PROFILE: a CSV with a 'timestamp' column (slot start, ISO 8601 UTC) and one column "
            "per meter (net kWh per slot: positive imported, negative exported), named like the "
            "meter's key file KEYS/<name>.json. Or --profiles grid --grid GRID --from TIME: "
            "every key file KEYS/<name>.json names a load (imports) or generator (exports) of "
            "GRID, read from the grid's profiles (SimBench's for simbench:<code>, the shipped "
            "SCE-56 shapes otherwise; the same as `gridledger community`). Resumes from the "
            "chain after a restart; exits when every reading of the profile is on chain."
        ),
    )
    serve.add_argument("--node", required=True, help="the node's API URL")
    serve.add_argument("--profile", type=Path, default=None, help="CSV profile")
    serve.add_argument(
        "--profiles",
        choices=("csv", "grid"),
        default="csv",
        help="csv: read --profile; grid: the grid's own element profiles (needs --grid, --from)",
    )
    serve.add_argument("--grid", default=None, help="with --profiles grid: a case name or file")
    serve.add_argument(
        "--from",
        dest="start",
        default=None,
        metavar="TIME",
        help="with --profiles grid: the first slot's start, ISO 8601 UTC (e.g. 2026-06-01T00:00Z)",
    )
    serve.add_argument(
        "--slots", type=int, default=None, help="with --profiles grid: how many (default: a day)"
    )
    serve.add_argument("--keys", type=Path, required=True, help="directory of meter key files")
    serve.add_argument("--poll-s", type=float, default=0.2)
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from gridledger.agents.meter_profile import ProfileError, ProfileMeter, read_profile
    from gridledger.agents.runner import HttpChain
    from gridledger.chain.contracts.market import PARAMS
    from gridledger.chain.keys import KeyFileError, load_key

    if args.profiles == "csv" and args.profile is None:
        raise CliError("--profile CSV is required (or --profiles grid --grid GRID --from TIME)")
    if args.profiles == "grid" and (args.profile is not None or not args.grid or not args.start):
        raise CliError("--profiles grid needs --grid and --from, and no --profile")
    if args.slots is not None and args.slots < 1:
        raise CliError(f"--slots must be >= 1, got {args.slots}")
    client = HttpChain(args.node)
    try:
        slot_ms = int((client.state(PARAMS) or {}).get("slot_ms", 900_000))
        try:
            if args.profiles == "grid":
                profile = _grid_profile(args, slot_ms)
            else:
                profile = read_profile(args.profile, slot_ms)
            meters = []
            for name, values in profile.kwh.items():
                key, _ = load_key(args.keys / f"{name}.json")
                meters.append(ProfileMeter(name, key, profile.starts_ms, values, slot_ms))
        except (ProfileError, KeyFileError) as exc:
            raise CliError(str(exc)) from exc
        last = -1
        while not all(m.done(client) for m in meters):
            height = client.height()
            if height != last:
                last = height
                for m in meters:
                    try:
                        m.step(client)
                    except Exception as exc:  # one meter's refusal does not stop the others
                        print(f"meter {m.name}: {exc}", file=sys.stderr, flush=True)
            time.sleep(args.poll_s)
    finally:
        client.close()
    return 0


def _grid_profile(args: argparse.Namespace, slot_ms: int) -> Any:
    """The meters' readings from the grid's profiles: one meter per key file in --keys."""
    from gridledger.agents.meter_profile import ProfileError, utc_ms
    from gridledger.demo.community_profiles import meter_profile
    from gridledger.grid.cases import load_case
    from gridledger.grid.network import NetworkError

    names = sorted(p.stem for p in Path(args.keys).glob("*.json"))
    if not names:
        raise ProfileError(f"no meter key files (*.json) in {args.keys}")
    try:
        net = load_case(args.grid)
    except (NetworkError, ValueError) as exc:
        raise ProfileError(f"--grid {args.grid}: {exc}") from exc
    start = utc_ms(args.start, "--from")
    slots = args.slots if args.slots is not None else 86_400_000 // slot_ms
    return meter_profile(args.grid, net, names, start, slots, slot_ms)
