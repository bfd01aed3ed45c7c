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
    serve.add_argument(
        "--sample-s",
        type=int,
        help="the profile's rows are samples of this many seconds (dividing the slot), not "
        "slots: each reading is the sum of its slot's samples, and its detail keeps them",
    )
    serve.add_argument(
        "--detail",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="store each reading's detail off chain (owned by the meter's prosumer) and put "
        "only its hash on chain (default: on)",
    )
    serve.add_argument(
        "--detail-readers",
        default="dso",
        help="comma-separated roles the prosumers let read the detail ('' for none; default dso)",
    )
    serve.set_defaults(handler=_serve)

    detail = msub.add_parser(
        "detail",
        help="read a reading's off-chain detail and check it against the hash on chain",
        description=(
            "Prints the detail of meter reading READING_TX, read with KEY (the prosumer the "
            "meter is bound to, or a role it granted, e.g. the DSO), once its bytes hash to the "
            "reading's detail_hash and it describes that reading. With --erase, KEY (the "
            "prosumer) erases the detail instead: the hash stays on chain, the bytes go."
        ),
    )
    detail.add_argument("reading_tx", metavar="READING_TX")
    detail.add_argument("--node", required=True, help="the node's API URL")
    detail.add_argument("--key", type=Path, required=True, help="the reader's key file")
    what = detail.add_mutually_exclusive_group()
    what.add_argument("--erase", action="store_true", help="erase it (the prosumer only)")
    what.add_argument(
        "--grant",
        metavar="ROLES",
        help="set the roles that may read it, comma-separated, '' for none (the prosumer only)",
    )
    detail.set_defaults(handler=_detail)


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
            sample_ms = None if args.sample_s is None else args.sample_s * 1000
            if args.profiles == "grid":
                profile = _grid_profile(args, slot_ms)
            else:
                profile = read_profile(args.profile, slot_ms, sample_ms)
            meters = []
            for name, values in profile.kwh.items():
                key, _ = load_key(args.keys / f"{name}.json")
                meters.append(ProfileMeter(name, key, profile.starts_ms, values, slot_ms))
                if sample_ms:
                    meters[-1].samples_kwh = profile.samples_kwh[name]
                    meters[-1].sample_ms = sample_ms
        except (ProfileError, KeyFileError) as exc:
            raise CliError(str(exc)) from exc
        if args.detail:
            from gridledger.agents.meter_detail import NodeDetailStore

            store = NodeDetailStore(args.node, client.chain_id, _roles(args.detail_readers))
            for m in meters:
                m.detail = store
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


def _roles(text: str) -> tuple[str, ...]:
    from gridledger.chain.keys import ROLES

    roles = tuple(sorted({r.strip() for r in text.split(",") if r.strip()}))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise CliError(f"--detail-readers: unknown role(s) {unknown}; roles are {sorted(ROLES)}")
    return roles


def _detail(args: argparse.Namespace) -> int:
    import json

    import httpx

    from gridledger.agents.meter_detail import DetailError, check_detail, reading_payload
    from gridledger.chain.keys import KeyFileError, load_key
    from gridledger.node.client import ClientError, LedgerClient

    try:
        key, _ = load_key(args.key)
    except KeyFileError as exc:
        raise CliError(str(exc)) from exc
    try:
        with LedgerClient(args.node, key=key) as node:
            payload = reading_payload(node.tx(args.reading_tx), args.reading_tx)
            h = payload["detail_hash"]
            if args.erase:
                node.offchain_erase(h)
                print(json.dumps({"reading": args.reading_tx, "detail_hash": h, "erased": True}))
                return 0
            data = node.offchain_get(h)
            doc = check_detail(payload, data)
            if args.grant is not None:
                roles = _roles(args.grant)
                member = node.account(payload["meter"]).get("member") or {}
                if member.get("prosumer") != key.pub_hex:
                    raise CliError("only the prosumer the meter is bound to grants its detail")
                node.offchain_put(data, readers=roles)  # the subject's put sets the readers
    except DetailError as exc:
        raise CliError(str(exc)) from exc
    except ClientError as exc:
        raise CliError(f"detail of reading {args.reading_tx}: {exc}") from exc
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the node: {exc}") from exc
    out = {"reading": args.reading_tx, "detail_hash": h, "verified": True, "detail": doc}
    print(json.dumps(out, sort_keys=True))
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
