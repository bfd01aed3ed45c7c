"""``gridledger dr``: demand response events (docs/demand_response.md).

``certify`` runs the DSO's power flows off chain; ``open``, ``enrol``, ``read``, ``settle`` sign
and submit the ``dr.*`` transactions to a node; ``status`` prints an event and its trace.
Quantities are in human units (kW, kWh, tokens) and converted to the chain's integers exactly
(W, Wh, utoken): a value that does not convert exactly is refused, never rounded.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from decimal import Decimal, DecimalException, Inexact, localcontext
from pathlib import Path
from typing import Any

from gridledger.commands.errors import CliError

MAX_DIGITS = 40  # the chain's own bound on an integer (chain/encoding.py MAX_INT_DIGITS)


def exact_int(text: str, scale: int, what: str) -> int:
    """``text`` (a decimal number) × ``scale`` as an integer, or a CliError naming ``what``."""
    try:
        with localcontext() as ctx:  # exact or refused: never rounded to 28 digits silently
            ctx.prec, ctx.traps[Inexact] = 2 * MAX_DIGITS + 20, True
            value = Decimal(text) * scale
    except DecimalException as exc:  # also Overflow (1e999999999) and Inexact
        raise CliError(f"{what}: {text!r} is not a number") from exc
    # Infinity raised OverflowError in int(); a huge exponent (1e999999999) would build an
    # integer of gigabytes before the chain's 40-digit bound could refuse it
    if not value.is_finite() or value.adjusted() >= MAX_DIGITS:
        raise CliError(f"{what}: {text} is not a finite number below 10^{MAX_DIGITS}")
    if value != value.to_integral_value() or value < 0:
        raise CliError(f"{what}: {text} is not a whole non-negative number of 1/{scale} units")
    return int(value)


def time_ms(text: str, flag: str = "--start") -> int:
    """Milliseconds since the epoch, or an ISO 8601 time with its zone (e.g. 2026-01-19T18:00Z)."""
    if text.isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CliError(f"{flag}: {text!r} is neither ms nor an ISO 8601 time") from exc
    if t.tzinfo is None:
        raise CliError(f"{flag}: {text!r} has no time zone (add Z for UTC)")
    return int(t.timestamp()) * 1000 + t.microsecond // 1000


def _send(args: argparse.Namespace, tx_type: str, payload: dict[str, Any]) -> int:
    from gridledger.chain.keys import KeyFileError, load_key
    from gridledger.commands.ledger import _node_url, _passphrase
    from gridledger.node.client import ClientError, LedgerClient, Signer

    try:
        key, _ = load_key(args.key, _passphrase(args))
    except KeyFileError as exc:
        raise CliError(str(exc)) from exc
    try:
        with LedgerClient(_node_url(args)) as client:
            res = Signer(client, key).send(tx_type, payload, wait=True)
    except (ClientError, TimeoutError) as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot reach the node: {exc}") from exc
    ok = res.get("code", 0) == 0 and res.get("result", {}).get("code", 0) == 0
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        log = res.get("log") or res.get("result", {}).get("log", "")
        print(f"{tx_type} {res.get('txid', '')}: {'committed' if ok else 'refused'} {log}".strip())
    return 0 if ok else 1


def _certify(args: argparse.Namespace) -> int:
    from gridledger.agents.dr_agent import NoReliefError, peak_operating_point, relief_certificate
    from gridledger.grid.cases import load_case

    reductions = {}
    for item in args.reduce:
        bus, _, kw = item.partition(":")
        if not bus.isdigit() or not kw:
            raise CliError(f"--reduce {item!r}: expected BUS:KW, e.g. 5:358.792")
        reductions[int(bus)] = exact_int(kw, 1000, f"--reduce {item}")
    scale = exact_int(args.load_scale, 1_000_000, "--load-scale")
    dg = exact_int(args.dg_output, 1_000_000, "--dg-output")
    try:
        net = peak_operating_point(load_case(args.case), scale, dg)
        cert, doc = relief_certificate(net, args.line, reductions)
    except (NoReliefError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if args.out:
        Path(args.out).write_text(json.dumps({"certificate": cert, "document": doc}, indent=1))
    if args.json:
        print(json.dumps({"certificate": cert, "document": doc}, sort_keys=True))
    else:
        print(
            f"line {cert['line']} of {args.case}: {cert['loading_before_ppm'] / 1e4:.2f} % without "
            f"the event, {cert['loading_after_ppm'] / 1e4:.2f} % with it\n"
            f"certificate digest {cert['digest']}"
        )
    return 0


def _open(args: argparse.Namespace) -> int:
    try:
        cert = json.loads(Path(args.certificate).read_text())["certificate"]
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(
            f"--certificate {args.certificate}: not a `gridledger dr certify --out` file ({exc})"
        ) from exc
    payload: dict[str, Any] = {
        "start_ms": time_ms(args.start),
        "n_slots": args.hours,
        "requested_w": exact_int(args.request_kw, 1000, "--request-kw"),
        "incentive_utoken_per_kwh": exact_int(args.incentive, 1_000_000, "--incentive"),
        "budget_utoken": exact_int(args.budget, 1_000_000, "--budget"),
        "eligible": sorted(set(args.eligible)),
        "method": args.method,
        "certificate": cert,
    }
    if args.method == "mean":
        payload["baseline_days"] = args.days
    else:
        payload["adjustment_cap_ppm"] = exact_int(args.cap_pct, 10_000, "--cap-pct")
    return _send(args, "dr.open", payload)


def _enrol(args: argparse.Namespace) -> int:
    return _send(args, "dr.enrol", {"event": args.event})


def _settle(args: argparse.Namespace) -> int:
    return _send(args, "dr.settle", {"event": args.event})


def _read(args: argparse.Namespace) -> int:
    from gridledger.chain.keys import KeyFileError, load_key
    from gridledger.commands.ledger import _passphrase

    try:
        meter = load_key(args.key, _passphrase(args))[0].pub_hex
    except KeyFileError as exc:
        raise CliError(str(exc)) from exc
    payload = {
        "meter": meter,
        "start_ms": time_ms(args.start),
        "duration_s": 3600,
        "import_wh": exact_int(args.import_kwh, 1000, "--import-kwh"),
        "export_wh": exact_int(args.export_kwh, 1000, "--export-kwh"),
    }
    return _send(args, "dr.reading", payload)


def _status(args: argparse.Namespace) -> int:
    from gridledger.chain import encoding
    from gridledger.chain.contracts.dr import event_key, trace_key
    from gridledger.commands.ledger import _node_url
    from gridledger.node.client import ClientError, LedgerClient

    def value(client: LedgerClient, key: str) -> Any:
        raw = client.state(key).get("value")  # canonical JSON bytes, hex
        return None if raw is None else encoding.decode(bytes.fromhex(raw))

    try:
        with LedgerClient(_node_url(args)) as client:
            ev, trace = value(client, event_key(args.event)), value(client, trace_key(args.event))
    except ClientError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot reach the node: {exc}") from exc
    if ev is None:
        raise CliError(f"no DR event {args.event}")
    if args.json:
        print(json.dumps({"event": ev, "trace": trace}, sort_keys=True))
        return 0
    start = datetime.fromtimestamp(ev["start_ms"] / 1000, UTC).isoformat()
    print(
        f"event {args.event[:16]}… ({ev['status']}): {ev['n_slots']} h from {start}, "
        f"{ev['requested_w'] / 1000:g} kW requested, {ev['incentive_utoken_per_kwh'] / 1e6:g} "
        f"token/kWh, budget {ev['budget_utoken'] / 1e6:,.6f} tokens, {ev['method']}; "
        f"{len(ev['enrolled'])} of {len(ev['eligible'])} eligible enrolled; line "
        f"{ev['certificate']['line']} {ev['certificate']['loading_before_ppm'] / 1e4:.2f} % -> "
        f"{ev['certificate']['loading_after_ppm'] / 1e4:.2f} %"
    )
    for row in (trace or {}).get("members", []):
        print(
            f"  {row['member'][:16]}…: baseline {sum(row['baseline_wh']) / 1000:g} kWh over "
            f"{len(row['baseline_days'])} days, metered "
            f"{sum(m or 0 for m in row['metered_wh']) / 1000:g} kWh, reduction "
            f"{row['reduction_wh'] / 1000:g} kWh, paid {row['pay_utoken'] / 1e6:,.6f} tokens"
        )
    return 0


def _node_args(p: argparse.ArgumentParser, key: bool = True) -> None:
    if key:
        p.add_argument("--key", required=True, help="the sender's key file")
        p.add_argument("--passphrase-env")
    p.add_argument("--node", help="node API URL (default: --home's node.addr)")
    p.add_argument("--home")
    p.add_argument("--json", action="store_true")


def register(sub: argparse._SubParsersAction) -> None:
    dr = sub.add_parser("dr", help="demand response events: certify, open, enrol, read, settle")
    dsub = dr.add_subparsers(dest="dr_command", metavar="ACTION", required=True)

    p = dsub.add_parser("certify", help="the DSO's power flows before and after an event")
    p.add_argument("--case", default="microgrid9", help="network (gridledger cases)")
    p.add_argument("--line", required=True, help="the branch the event relieves, e.g. 1-5")
    p.add_argument("--load-scale", default="1", help="every load × this (e.g. 2.4)")
    p.add_argument("--dg-output", default="1", help="non-slack generators' P × this (e.g. 0)")
    p.add_argument("--reduce", action="append", default=[], metavar="BUS:KW", required=True)
    p.add_argument("--out", help="write certificate and document (for `dr open`)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_certify)

    p = dsub.add_parser("open", help="announce an event (DSO); escrows the budget")
    p.add_argument("--start", required=True, help="a whole UTC hour: ms or ISO 8601")
    p.add_argument("--hours", type=int, default=1)
    p.add_argument("--request-kw", required=True)
    p.add_argument("--incentive", required=True, help="tokens per kWh reduced")
    p.add_argument("--budget", required=True, help="tokens, escrowed at once")
    p.add_argument("--eligible", nargs="+", required=True, metavar="PUBKEY")
    p.add_argument("--method", choices=("caiso_10in10", "mean"), default="caiso_10in10")
    p.add_argument("--days", type=int, default=10, help="like days (mean)")
    p.add_argument("--cap-pct", default="20", help="same-day adjustment cap (caiso_10in10)")
    p.add_argument("--certificate", required=True, help="file from `dr certify --out`")
    _node_args(p)
    p.set_defaults(handler=_open)

    for name, handler, what in (
        ("enrol", _enrol, "join an event (eligible prosumer)"),
        ("settle", _settle, "pay the verified reductions (the event's opener)"),
    ):
        p = dsub.add_parser(name, help=what)
        p.add_argument("event", help="the event id (the dr.open transaction id)")
        _node_args(p)
        p.set_defaults(handler=handler)

    p = dsub.add_parser("read", help="a meter's hourly reading (the meter's key)")
    p.add_argument("--start", required=True, help="the hour: ms or ISO 8601")
    p.add_argument("--import-kwh", required=True)
    p.add_argument("--export-kwh", default="0")
    _node_args(p)
    p.set_defaults(handler=_read)

    p = dsub.add_parser("status", help="an event and, once settled, its trace")
    p.add_argument("event")
    _node_args(p, key=False)
    p.set_defaults(handler=_status)
