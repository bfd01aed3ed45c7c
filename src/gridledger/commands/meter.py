"""``gridledger meter serve``: post each meter's signed readings per slot from a CSV profile."""

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
        help="post each meter's reading once its slot has ended, from a CSV profile",
        description=(
            "PROFILE: a CSV with a 'timestamp' column (slot start, ISO 8601 UTC) and one column "
            "per meter (net kWh per slot: positive imported, negative exported), named like the "
            "meter's key file KEYS/<name>.json. Resumes from the chain after a restart; exits "
            "when every reading of the profile is on chain."
        ),
    )
    serve.add_argument("--node", required=True, help="the node's API URL")
    serve.add_argument("--profile", type=Path, required=True)
    serve.add_argument("--keys", type=Path, required=True, help="directory of meter key files")
    serve.add_argument("--poll-s", type=float, default=0.2)
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from gridledger.agents.meter_profile import ProfileError, ProfileMeter, read_profile
    from gridledger.agents.runner import HttpChain
    from gridledger.chain.contracts.market import PARAMS
    from gridledger.chain.keys import KeyFileError, load_key

    client = HttpChain(args.node)
    try:
        slot_ms = int((client.state(PARAMS) or {}).get("slot_ms", 900_000))
        try:
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
