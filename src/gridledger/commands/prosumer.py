"""Prosumer commands in human units: ``offer``, ``bid``, ``orders``, ``cancel``, ``balance``,
``certificate``.  Power in kW, prices in token/kWh, times ISO 8601 (UTC); a table by default,
``--json`` for scripts.  An order's power is one constant ``--kw``, or a profile of one kW value
per market slot of the window (``--profile 0,1.5,3,3,1.5,0`` or ``--profile-csv FILE``), sent
on chain as whole W per slot.  Every command talks to a node's HTTP API (``--node URL``); the orders
are signed with the member's key file (``--key FILE``) and placed at its own bus.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridledger.commands.errors import CliError

UTOKEN_PER_TOKEN = 1_000_000


def register(sub: Any) -> None:
    for kind, price_help in (("offer", "asking price"), ("bid", "highest price you pay")):
        p = sub.add_parser(kind, help=f"place an {kind} at your bus (kW, token/kWh, UTC times)")
        _common(p, key=True)
        power = p.add_mutually_exclusive_group(required=True)
        power.add_argument("--kw", type=float, help="constant power, kW")
        power.add_argument(
            "--profile", help="power per market slot of the window, kW, comma-separated"
        )
        power.add_argument(
            "--profile-csv",
            type=Path,
            metavar="FILE",
            help="power per slot from a CSV file: one row per slot, kW in the last column",
        )
        p.add_argument("--price", type=float, required=True, help=f"{price_help}, token/kWh")
        p.add_argument("--from", dest="start", required=True, help="window start, ISO 8601 UTC")
        p.add_argument("--to", dest="end", required=True, help="window end, ISO 8601 UTC")
        p.set_defaults(handler=_order, kind=kind)
    orders = sub.add_parser("orders", help="the open offers and bids")
    _common(orders, key=False)
    orders.add_argument("--mine", type=Path, metavar="KEY", help="only the orders of this key")
    orders.set_defaults(handler=_orders)
    cancel = sub.add_parser("cancel", help="cancel one of your open orders")
    _common(cancel, key=True)
    cancel.add_argument("order", metavar="ORDER", help="the order id (its transaction id)")
    cancel.set_defaults(handler=_cancel)
    balance = sub.add_parser("balance", help="your token and energy-token balances")
    _common(balance, key=True)
    balance.set_defaults(handler=_balance)
    cert = sub.add_parser("certificate", help="a match's certificate, set-points and losses")
    _common(cert, key=False)
    cert.add_argument("match", metavar="MATCH")
    cert.set_defaults(handler=_certificate)


def _common(p: argparse.ArgumentParser, key: bool) -> None:
    p.add_argument("--node", required=True, help="the node's API URL")
    if key:
        p.add_argument("--key", type=Path, required=True, help="your key file")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _client(url: str) -> Any:
    import httpx

    from gridledger.agents.runner import HttpChain

    try:
        return HttpChain(url)
    except httpx.HTTPError as exc:
        raise CliError(f"node {url} not reachable: {exc}") from exc


def _key(path: Path) -> Any:
    from gridledger.chain.keys import KeyFileError, load_key

    try:
        return load_key(path)[0]
    except KeyFileError as exc:
        raise CliError(str(exc)) from exc


def _ms(text: str, flag: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"{flag}: {text!r} is not an ISO 8601 time (e.g. 2026-06-01T12:00Z)"
        ) from None
    if dt.utcoffset() is None:
        raise CliError(f"{flag}: {text!r} has no time zone; end it with Z (UTC)")
    return round(dt.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def _committed(client: Any, admitted: Any) -> Any:
    """What the chain decided: a transaction admitted to the mempool can still be refused by
    its contract in the block, so a command reports success only once it is committed."""
    if not admitted.ok:
        return admitted
    try:
        return client.wait_committed(admitted.txid)
    except TimeoutError as exc:
        raise CliError(f"{exc}; it may still be committed later") from exc


def _emit(doc: Any, as_json: bool, lines: list[str]) -> None:
    print(json.dumps(doc) if as_json else "\n".join(lines))


def parse_profile_kw(values: list[str], flag: str) -> list[int]:
    """kW per slot, as typed, to whole W per slot (the chain's unit); names the bad entry."""
    out = []
    for i, text in enumerate(values):
        try:
            kw = float(text)
        except ValueError:
            bad = f"{flag}: entry {i + 1} ({text.strip()!r}) is not a number of kW"
            raise CliError(bad) from None
        if not math.isfinite(kw) or kw < 0:
            raise CliError(f"{flag}: entry {i + 1} must be a finite kW >= 0, got {text.strip()}")
        out.append(round(kw * 1000))
    if not out or max(out) <= 0:
        raise CliError(f"{flag}: the profile needs at least one slot above 0 kW")
    return out


def read_profile_csv(path: Path) -> list[int]:
    """A profile file: one row per slot, kW in the last column; a first row that is not a
    number (a header) and blank rows are skipped."""
    try:
        rows = [r for r in csv.reader(path.read_text().splitlines()) if r and any(r)]
    except OSError as exc:
        raise CliError(f"--profile-csv: cannot read {path}: {exc.strerror}") from None
    if rows:
        try:
            float(rows[0][-1])
        except ValueError:
            rows = rows[1:]
    return parse_profile_kw([r[-1] for r in rows], "--profile-csv")


def _power(args: argparse.Namespace, start: int, end: int, slot_ms: int) -> list[int] | None:
    """The order's profile in W per slot, or None for a constant --kw."""
    if args.kw is not None:
        if not args.kw > 0:
            raise CliError(f"--kw must be positive, got {args.kw}")
        return None
    if args.profile is not None:
        profile, flag = parse_profile_kw(args.profile.split(","), "--profile"), "--profile"
    else:
        profile, flag = read_profile_csv(args.profile_csv), "--profile-csv"
    slots = (end - start) // slot_ms
    if len(profile) != slots:
        raise CliError(
            f"{flag}: {len(profile)} values for a window of {slots} market slots of "
            f"{slot_ms // 60_000} min ({_iso(start)}–{_iso(end)}): give one kW value per slot"
        )
    return profile


def _order(args: argparse.Namespace) -> int:
    from gridledger.agents.prosumer_agent import OrderSpec
    from gridledger.chain.contracts.market import PARAMS, default_params
    from gridledger.chain.contracts.membership import member_key

    if not args.price >= 0:
        raise CliError(f"--price must be >= 0 token/kWh, got {args.price}")
    start, end = _ms(args.start, "--from"), _ms(args.end, "--to")
    if end <= start:
        raise CliError("--to must be after --from")
    key = _key(args.key)
    client = _client(args.node)
    try:
        slot_ms = int((client.state(PARAMS) or default_params())["slot_ms"])
        profile = _power(args, start, end, slot_ms)
        member = client.state(member_key(key.pub_hex))
        if not member or "bus" not in member:
            raise CliError(f"{key.pub_hex[:16]}… is not a prosumer member with a bus")
        power_w = round(args.kw * 1000) if profile is None else max(profile)
        spec = OrderSpec(
            args.kind,
            power_w,
            round(args.price * UTOKEN_PER_TOKEN),
            start,
            end,
            profile_w=None if profile is None else tuple(profile),
        )
        res = _committed(client, client.submit(key, f"market.{args.kind}", spec.payload(
            int(member["bus"]))))  # fmt: skip
    finally:
        client.close()
    if not res.ok:
        raise CliError(f"{args.kind} refused: {res.log}")
    doc = {"order": res.txid, "kind": args.kind, "bus": int(member["bus"]), "kw": power_w / 1000,
           "price_token_per_kwh": args.price, "from": _iso(start), "to": _iso(end)}  # fmt: skip
    power = f"{doc['kw']:g} kW"
    if profile is not None:
        doc["profile_kw"] = [w / 1000 for w in profile]
        power = f"profile {_profile_text(profile)} kW"
    text = (
        f"{args.kind} {res.txid} placed: {power} at bus {doc['bus']}, "
        f"{args.price:g} token/kWh, {doc['from']}–{doc['to']}"
    )
    _emit(doc, args.json, [text])
    return 0


def _orders(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.market_book import ORDER_PREFIX

    mine = _key(args.mine).pub_hex if args.mine else None
    client = _client(args.node)
    try:
        records = [rec for _key_, rec in client.items_with_prefix(ORDER_PREFIX)]
    finally:
        client.close()
    rows = []
    for rec in records:  # one record per open order (chain/contracts/market_book.py)
        kind = "offer" if "offer" in rec else "bid"
        o = rec[kind]
        owner = o["seller"] if kind == "offer" else o["buyer"]
        if mine and owner != mine:
            continue
        price = o["price_utoken_per_kwh"] if kind == "offer" else o["max_price_utoken_per_kwh"]
        profile = o.get("profile_w")
        rows.append({"order": o["offer_id"] if kind == "offer" else o["bid_id"], "kind": kind,
                     "bus": o["node"], "kw": o["power_w"] / 1000,
                     "profile_kw": None if profile is None else [w / 1000 for w in profile],
                     "price_token_per_kwh": price / UTOKEN_PER_TOKEN,
                     "from": _iso(o["start_ms"]), "to": _iso(o["end_ms"])})  # fmt: skip
    lines = [f"{'order':<18}{'kind':<7}{'bus':>5}{'kW':>9}{'token/kWh':>11}  window  profile kW"]
    for r in rows:
        shape = "" if r["profile_kw"] is None else _profile_text(
            [round(1000 * x) for x in r["profile_kw"]])  # fmt: skip
        lines.append(
            f"{r['order'][:16]:<18}{r['kind']:<7}{r['bus']:>5}{r['kw']:>9.3f}"
            f"{r['price_token_per_kwh']:>11.4f}  {r['from']}–{r['to']}  {shape}".rstrip()
        )
    _emit(rows, args.json, lines)
    return 0


def _profile_text(profile_w: list[int], shown: int = 12) -> str:
    """kW per slot as typed (``0,1.5,3``); a long profile is cut after ``shown`` values."""
    text = ",".join(f"{w / 1000:g}" for w in profile_w[:shown])
    return text if len(profile_w) <= shown else f"{text},… ({len(profile_w)} slots)"


def _cancel(args: argparse.Namespace) -> int:
    key = _key(args.key)
    client = _client(args.node)
    try:
        res = _committed(client, client.submit(key, "market.cancel", {"order": args.order}))
    finally:
        client.close()
    if not res.ok:
        raise CliError(f"cancel refused: {res.log}")
    _emit({"cancelled": args.order, "tx": res.txid}, args.json, [f"cancelled {args.order}"])
    return 0


def _balance(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.tokens import balance_key

    key = _key(args.key)
    client = _client(args.node)
    try:
        utoken = client.state(balance_key("utoken", key.pub_hex)) or 0
        ewh = client.state(balance_key("ewh", key.pub_hex)) or 0
    finally:
        client.close()
    doc = {"account": key.pub_hex, "token": utoken / UTOKEN_PER_TOKEN, "utoken": utoken,
           "energy_kwh": ewh / 1000}  # fmt: skip
    _emit(doc, args.json, [f"{key.pub_hex[:16]}…  {doc['token']:.6f} token, "
                           f"{doc['energy_kwh']:.3f} kWh of energy tokens"])  # fmt: skip
    return 0


def _certificate(args: argparse.Namespace) -> int:
    from gridledger.chain.contracts.market import loss_steps_key, match_key, reactive_key

    client = _client(args.node)
    try:
        rec = client.state(match_key(args.match))
        if rec is None:
            raise CliError(f"no match {args.match!r} on chain")
        reactive = client.state(reactive_key(args.match)) or {"setpoints": []}
        losses = client.state(loss_steps_key(args.match)) or []
    finally:
        client.close()
    m = rec["match"]
    doc = {"match": args.match, "status": rec["status"], "kw": m["power_w"] / 1000,
           "seller_bus": m["seller_node"], "buyer_bus": m["buyer_node"],
           "from": _iso(m["start_ms"]), "to": _iso(m["end_ms"]),
           "reasons": rec.get("reasons", []),
           "loss_kw": [{"from": _iso(t), "kw": w / 1000} for t, w in losses],
           "setpoints": [{"bus": s["node"], "q_kvar": s["q_var"] / 1000,
                          "pay_token_per_slot": s["utoken_per_slot"] / UTOKEN_PER_TOKEN}
                         for s in reactive["setpoints"]]}  # fmt: skip
    if reactive.get("taps"):  # the tap changers' positions the DSO set for this trade
        doc["taps"] = {t["branch"]: t["pos"] for t in reactive["taps"]}
    power = f"{doc['kw']:g} kW"
    if m.get("profile_w") is not None:  # a profiled trade: kW per slot, its peak as "kw"
        doc["profile_kw"] = [w / 1000 for w in m["profile_w"]]
        power = f"profile {_profile_text(m['profile_w'])} kW"
    lines = [f"match {args.match}: {doc['status']}  {power} bus {doc['seller_bus']} -> "
             f"{doc['buyer_bus']}, {doc['from']}–{doc['to']}"]  # fmt: skip
    lines += [f"  refused: {r}" for r in doc["reasons"]]
    lines += [f"  loss share from {x['from']}: {x['kw']:.3f} kW" for x in doc["loss_kw"]]
    lines += [f"  regulator bus {s['bus']}: Q {s['q_kvar']:.3f} kvar, "
              f"{s['pay_token_per_slot']:.6f} token/slot" for s in doc["setpoints"]]  # fmt: skip
    lines += [f"  tap changer {b}: position {p}" for b, p in doc.get("taps", {}).items()]
    _emit(doc, args.json, lines)
    return 0
