"""``gridledger ev``: EV charging sessions (docs/ev_charging.md).

``authorise`` (the driver), ``open`` and ``stop`` (the charge point), ``read`` (its meter) and
``expire`` sign and submit the ``ev.*`` transactions to a node; ``status`` prints one session,
``sessions`` a member's active sessions.  Quantities are in human units (kWh, tokens, tokens per
kWh) and converted to the chain's integers exactly (Wh, utoken, utoken/kWh): a value that does
not convert exactly is refused, never rounded.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from gridledger.commands.dr import _node_args, _send, exact_int, time_ms
from gridledger.commands.errors import CliError

WH, UTOKEN = 1000, 1_000_000  # per kWh, per token

V2G_FLAGS = (
    ("battery_wh", "--v2g-battery-kwh", "the battery's capacity"),
    ("arrival_wh", "--v2g-arrival-kwh", "energy in the battery on arrival"),
    ("soc_min_wh", "--v2g-min-kwh", "V2G never takes the battery below this"),
    ("soc_max_wh", "--v2g-max-kwh", "charging never takes the battery above this"),
    ("max_discharge_wh", "--v2g-discharge-kwh", "the most V2G may discharge"),
)


def _submit(args: argparse.Namespace, tx_type: str, payload: Any) -> int:
    """Check ``payload`` (a typed payload of chain/contracts/ev.py) as the chain will, then
    sign and send it: a payload the chain would refuse is named here, before signing."""
    from gridledger.chain.contracts.base import PayloadError

    raw = payload.to_payload()
    try:
        type(payload).from_payload(raw)
    except PayloadError as exc:
        raise CliError(f"{tx_type}: {exc.log}") from exc
    return _send(args, tx_type, raw)


def _authorise(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.ev import Authorise, V2g

    v2g = None
    given = [flag for field, flag, _ in V2G_FLAGS if getattr(args, field) is not None]
    if given:
        if len(given) < len(V2G_FLAGS) or args.v2g_min_price is None:
            raise CliError(
                "V2G needs all of " + ", ".join(f for _, f, _ in V2G_FLAGS) + ", --v2g-min-price"
            )
        v2g = V2g(
            **{field: exact_int(getattr(args, field), WH, flag) for field, flag, _ in V2G_FLAGS},
            min_price_utoken_per_kwh=exact_int(args.v2g_min_price, UTOKEN, "--v2g-min-price"),
        )
    elif args.v2g_min_price is not None:
        raise CliError("--v2g-min-price without the V2G window (--v2g-battery-kwh, ...)")
    auth = Authorise(
        args.charge_point,
        exact_int(args.max_kwh, WH, "--max-kwh"),
        exact_int(args.max_price, UTOKEN, "--max-price"),
        time_ms(args.expires, "--expires"),
        v2g,
    )
    return _submit(args, "ev.authorise", auth)


def _open(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.ev import Open

    v2g_price = None
    if args.v2g_price is not None:
        v2g_price = exact_int(args.v2g_price, UTOKEN, "--v2g-price")
    opening = Open(args.session, args.meter, exact_int(args.price, UTOKEN, "--price"), v2g_price)
    return _submit(args, "ev.open", opening)


def _read(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.ev import Reading
    from gridledger.chain.keys import KeyFileError, load_key
    from gridledger.commands.ledger import _passphrase

    try:
        meter = load_key(args.key, _passphrase(args))[0].pub_hex
    except KeyFileError as exc:
        raise CliError(str(exc)) from exc
    reading = Reading(
        args.session,
        meter,
        time_ms(args.start),
        args.seconds,
        exact_int(args.import_kwh, WH, "--import-kwh"),
        exact_int(args.export_kwh, WH, "--export-kwh"),
    )
    return _submit(args, "ev.reading", reading)


def _stop(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.ev import Stop

    return _submit(args, "ev.stop", Stop(args.session, args.rec))


def _expire(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.ev import Expire

    return _submit(args, "ev.expire", Expire(args.session))


def _read_state(args: argparse.Namespace, keys: list[str]) -> list[Any]:
    from gridledger.chain import encoding
    from gridledger.commands.ledger import _node_url
    from gridledger.node.client import ClientError, LedgerClient

    try:
        with LedgerClient(_node_url(args)) as client:
            raws = [client.state(k).get("value") for k in keys]  # canonical JSON, hex
    except ClientError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot reach the node: {exc}") from exc
    return [None if raw is None else encoding.decode(bytes.fromhex(raw)) for raw in raws]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(sid: str, s: dict[str, Any]) -> str:
    """One session in human units."""
    line = (
        f"session {sid[:16]}… ({s['status']}): driver {s['driver'][:16]}…, charge point "
        f"{s['charge_point'][:16]}…, up to {s['max_energy_wh'] / WH:g} kWh at "
        f"{s['max_price_utoken_per_kwh'] / UTOKEN:g} token/kWh until {_iso(s['expiry_ms'])}"
    )
    if "price_utoken_per_kwh" in s:
        line += (
            f"; {s['price_utoken_per_kwh'] / UTOKEN:g} token/kWh agreed, "
            f"{s['delivered_wh'] / WH:g} kWh delivered"
        )
        if s.get("v2g_price_utoken_per_kwh") is not None:
            line += (
                f", {s['discharged_wh'] / WH:g} kWh discharged (V2G at "
                f"{s['v2g_price_utoken_per_kwh'] / UTOKEN:g} token/kWh)"
            )
    if s["status"] in ("closed", "expired"):
        line += (
            f"; paid {s['paid_utoken'] / UTOKEN:,.6f} tokens, refunded "
            f"{s['refund_utoken'] / UTOKEN:,.6f}, V2G paid {s['v2g_paid_utoken'] / UTOKEN:,.6f}"
        )
        if "green_rec" in s:
            line += f"; green: REC {s['green_rec'][:16]}… retired for the driver"
    else:
        line += f"; escrow {s['escrow_utoken'] / UTOKEN:,.6f} tokens"
    return line


def _status(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.ev import session_key

    (s,) = _read_state(args, [session_key(args.session)])
    if s is None:
        raise CliError(f"no EV session {args.session}")
    print(json.dumps(s, sort_keys=True) if args.json else describe(args.session, s))
    return 0


def _sessions(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.ev import active_key, session_key

    (ids,) = _read_state(args, [active_key(args.member)])
    ids = ids or []
    records = _read_state(args, [session_key(i) for i in ids]) if ids else []
    if args.json:
        print(json.dumps(dict(zip(ids, records, strict=True)), sort_keys=True))
        return 0
    if not ids:
        print(f"{args.member[:16]}… has no active EV session")
    for sid, s in zip(ids, records, strict=True):
        print(describe(sid, s))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    evp = sub.add_parser("ev", help="EV charging sessions: authorise, open, read, stop, status")
    esub = evp.add_subparsers(dest="ev_command", metavar="ACTION", required=True)

    p = esub.add_parser("authorise", help="the driver authorises a session; escrows its cap")
    p.add_argument("--charge-point", required=True, metavar="PUBKEY")
    p.add_argument("--max-kwh", required=True, help="the most energy the session may deliver")
    p.add_argument("--max-price", required=True, help="the highest price, tokens per kWh")
    p.add_argument("--expires", required=True, help="block time: ms or ISO 8601 (≤ 48 h ahead)")
    for field, flag, what in V2G_FLAGS:
        p.add_argument(flag, dest=field, help=f"V2G: {what} (kWh)")
    p.add_argument("--v2g-min-price", help="V2G: the lowest price, tokens per kWh")
    _node_args(p)
    p.set_defaults(handler=_authorise)

    p = esub.add_parser("open", help="the charge point starts the session on its meter")
    p.add_argument("session", help="the session id (the ev.authorise transaction id)")
    p.add_argument("--meter", required=True, metavar="PUBKEY")
    p.add_argument("--price", required=True, help="tokens per kWh (≤ the driver's maximum)")
    p.add_argument("--v2g-price", help="offer V2G at this price, tokens per kWh (escrowed)")
    _node_args(p)
    p.set_defaults(handler=_open)

    p = esub.add_parser("read", help="the charge point meter's reading (the meter's key)")
    p.add_argument("session")
    p.add_argument("--start", required=True, help="ms or ISO 8601")
    p.add_argument("--seconds", type=int, default=900, help="the interval's length")
    p.add_argument("--import-kwh", required=True, help="energy into the car")
    p.add_argument("--export-kwh", default="0", help="energy out of the car (V2G)")
    _node_args(p)
    p.set_defaults(handler=_read)

    p = esub.add_parser("stop", help="the charge point closes and settles the session")
    p.add_argument("session")
    p.add_argument("--rec", help="a certificate it owns: the delivered Wh retire for the driver")
    _node_args(p)
    p.set_defaults(handler=_stop)

    p = esub.add_parser("expire", help="after the expiry: settle what was metered, free escrow")
    p.add_argument("session")
    _node_args(p)
    p.set_defaults(handler=_expire)

    p = esub.add_parser("status", help="one session")
    p.add_argument("session")
    _node_args(p, key=False)
    p.set_defaults(handler=_status)

    p = esub.add_parser("sessions", help="a member's active sessions (driver or charge point)")
    p.add_argument("member", metavar="PUBKEY")
    _node_args(p, key=False)
    p.set_defaults(handler=_sessions)
