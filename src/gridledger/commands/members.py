"""``gridledger members import``: register a community's members from a CSV file.

The CSV has the columns ``name, role, bus, element`` (``bus`` or ``element`` per row: a grid
element's name — a load, a static generator, a generator — whose bus the member is connected
to) and optionally ``pub_key`` (the member's public key, hex).  Rows without a key get a fresh
key pair written to ``--keys-out DIR/<name>.json`` for the member's device.  Every row is
checked against the grid first; one bad row (unknown element or bus, unknown role, a name or key
twice, a malformed key) refuses the whole file and nothing is posted.  The registrations are
signed with ``--key`` (a vendor's or the DSO's key).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Any

from gridledger.chain.keys import ROLES as KEY_ROLES
from gridledger.commands.errors import CliError

# what a registration may create (the DSO and meters come from genesis and member.bind_meter)
ROLES = tuple(r for r in KEY_ROLES if r not in ("dso", "meter"))
_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")


def register(sub: Any) -> None:
    members = sub.add_parser("members", help="community members")
    msub = members.add_subparsers(dest="members_command", metavar="SUBCOMMAND", required=True)
    imp = msub.add_parser("import", help="register members from a CSV (name, role, bus/element)")
    imp.add_argument("csv", type=Path, metavar="CSV")
    imp.add_argument("--key", type=Path, required=True, help="the vendor's (or DSO's) key file")
    imp.add_argument("--node", required=True, help="the node's API URL")
    imp.add_argument("--grid", required=True, help="the grid the buses and elements belong to")
    imp.add_argument("--keys-out", type=Path, help="where new members' key files go")
    imp.add_argument("--json", action="store_true", help="machine-readable output")
    imp.set_defaults(handler=_import)


def read_members(path: Path, grid: Any, keys_out: Path | None) -> list[dict[str, Any]]:
    """Checked rows ``{name, role, bus, pub_key | None}``; raises CliError naming the line."""
    if not path.is_file():
        raise CliError(f"no members file {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        if not {"name", "role"} <= set(header) or not ({"bus", "element"} & set(header)):
            raise CliError(f"{path}: columns must be name, role, bus and/or element (pub_key)")
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    buses = {int(b) for b in grid.bus.index}
    element_bus = {str(n): int(b) for frame in (grid.load, grid.gen)
                   for n, b in zip(frame["name"], frame.bus, strict=True)}  # fmt: skip
    out, names, keys = [], set(), set()
    for line, r in enumerate(rows, start=2):
        where = f"{path}:{line}"
        name, role = r.get("name", ""), r.get("role", "")
        if not name or name in names:
            raise CliError(f"{where}: member name {name!r} is empty or used twice")
        if role not in ROLES:
            raise CliError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        bus_text, element = r.get("bus", ""), r.get("element", "")
        if element:
            if element not in element_bus:
                raise CliError(f"{where}: {element!r} is not an element of {grid.name}")
            bus = element_bus[element]
        elif bus_text:
            if not bus_text.lstrip("-").isdigit() or int(bus_text) not in buses:
                raise CliError(f"{where}: bus {bus_text!r} is not a bus of {grid.name}")
            bus = int(bus_text)
        else:
            raise CliError(f"{where}: {name} needs a bus or an element")
        pub = r.get("pub_key", "") or None
        if pub is not None and (not _HEX_KEY.match(pub) or pub in keys):
            raise CliError(f"{where}: pub_key must be 64 lowercase hex digits, once per file")
        if pub is None and keys_out is None:
            raise CliError(f"{where}: {name} has no pub_key; give --keys-out to create one")
        names.add(name)
        keys.add(pub)
        out.append({"name": name, "role": role, "bus": bus, "pub_key": pub})
    if not out:
        raise CliError(f"{path}: no members")
    return out


def _import(args: argparse.Namespace) -> int:
    from gridledger.agents.runner import HttpChain
    from gridledger.chain.keys import KeyFileError, KeyPair, load_key, save_key
    from gridledger.grid.cases import load_case
    from gridledger.grid.network import NetworkError

    try:
        signer, _ = load_key(args.key)
        grid = load_case(args.grid)
    except (KeyFileError, NetworkError) as exc:
        raise CliError(str(exc)) from exc
    rows = read_members(args.csv, grid, args.keys_out)
    client = HttpChain(args.node)
    done = []
    try:
        for r in rows:
            if r["pub_key"] is None:
                pair = KeyPair.generate()
                save_key(args.keys_out / f"{r['name']}.json", pair, r["role"])
                r["pub_key"] = pair.pub_hex
            payload = {"pub_key": r["pub_key"], "role": r["role"], "name": r["name"],
                       "bus": r["bus"]}  # fmt: skip
            res = client.submit(signer, "member.register", payload)
            if not res.ok:
                raise CliError(f"{r['name']}: registration refused: {res.log}")
            done.append({**r, "tx": res.txid})
    finally:
        client.close()
    if args.json:
        print(json.dumps(done))
    else:
        for r in done:
            print(f"registered {r['name']:<20} {r['role']:<10} bus {r['bus']:<6} {r['pub_key']}")
    return 0
