"""The settlement contract (seed 001's billing contract S2; seed 004 §3.4 energy tokens).

* ``settlement.reading`` (meter): the same payload as ``meter.reading`` and executed by the
  metering contract first (signature must be the named meter's, intervals never overlap or go back,
  exported Wh minted as ``ewh`` to the meter's prosumer, imported Wh burned up to its balance).
  Then, for a reading covering exactly one market slot that has ended in block time, the reading is
  recorded for settlement, green generation earns renewable-energy certificates (one per MWh,
  issued as ONE record per reading that carries all the reading's whole MWh, in the ``rec/<id>``
  form of the certificates contract so they can be transferred and retired there: a reading writes
  O(1) state keys whatever it exports), and every approved trade of that slot whose two parties
  have both been metered is settled: delivered energy paid buyer -> seller at the agreed price, the
  loss share charged, the regulator nodes paid, deviations penalized (market/settlement.py), the
  delivered ``ewh`` moved from seller to buyer and burned against the buyer's unbacked consumption.
  Each settlement record names its match, certificate and readings.  A trade with a power
  profile is scheduled, and its loss share capped, at its power in that slot.
* ``settlement.green`` (dso, vendor): declares a prosumer's generation renewable (or not).

Payments never overdraw and never exceed what was escrowed: the buyer's side is paid from the
bid's escrow and the extras escrowed when the match was approved, never from its free balance;
the seller's side (its loss part, its penalty) from its balance; what cannot be paid is
recorded as a shortfall.  Money only moves (supply changes only by mint/burn).
"""

from __future__ import annotations

import hashlib
from typing import Any

from gridledger.chain import codes
from gridledger.chain.contracts import metering, tokens
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    PayloadError,
    TxType,
    req_key,
    require_fields,
)
from gridledger.chain.contracts.certificates import rec_key
from gridledger.chain.contracts.market import (
    ESCROW,
    BidEscrow,
    MatchRecord,
    bid_key,
    get_match,
    housekeeping,
    load_book,
    loss_cap_w,
    loss_w_at,
    match_key,
    params,
    reactive_key,
    release_escrow_if_done,
    slot_matches_key,
)
from gridledger.chain.contracts.membership import member_key
from gridledger.market.orders import energy_wh, power_at
from gridledger.market.recs import REC_WH, recs_for_green
from gridledger.market.settlement import (
    BUYER,
    DSO,
    REGULATOR_PREFIX,
    SELLER,
    SettlementParams,
    allocate_pro_rata,
    pay_capped,
    settle_slot,
)

READING = next(t for t in metering.CONTRACT.tx_types if t.name == "meter.reading")


def reading_key(prosumer: str, slot_ms: int) -> str:
    return f"settle/reading/{prosumer}/{slot_ms}"


DONE_PREFIX = "settle/done/"


def done_key(match_id: str, slot_ms: int) -> str:
    return f"{DONE_PREFIX}{match_id}/{slot_ms}"


def green_key(prosumer: str) -> str:
    """Whether the DSO declared a prosumer's generation renewable (it then earns RECs)."""
    return f"settle/green/{prosumer}"


def rec_carry_key(prosumer: str) -> str:
    return f"settle/rec_carry/{prosumer}"


def rec_count_key(prosumer: str) -> str:
    return f"settle/rec_count/{prosumer}"


def party_trades_key(slot_ms: int, party: str) -> str:
    """A party's approved trades delivering in a slot: ``[[match id, role, scheduled Wh], ...]``
    in the slot's certification order (written once, at the slot's first reading)."""
    return f"settle/party/{slot_ms}/{party}"


def slot_indexed_key(slot_ms: int) -> str:
    return f"settle/indexed/{slot_ms}"


def rec_id(prosumer: str, serial: int) -> str:
    return hashlib.sha256(f"gridledger/rec/v1\x00{prosumer}\x00{serial}".encode()).hexdigest()


# --- settlement.reading ---------------------------------------------------------------------------
def _x_reading(ctx: Context, p: dict[str, Any]) -> None:
    prosumer = ctx.sender_member.get("prosumer") or ""
    ewh_before = tokens.balance(ctx, "ewh", prosumer) if prosumer else 0
    READING.execute(ctx, p)  # the metering rules, unchanged
    slot = params(ctx)["slot_ms"]
    start, dur_ms = p["start_ms"], 1000 * p["duration_s"]
    if dur_ms != slot or start % slot:
        return  # not a market-slot reading: metered, but nothing to settle
    if start + slot > ctx.time_ms:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"the slot [{start}, {start + slot}) has not ended at block time {ctx.time_ms}",
        )
    key = reading_key(prosumer, start)
    if ctx.state.get(key) is not None:
        raise ContractError(
            codes.ALREADY_EXISTS,
            f"prosumer {prosumer[:16]}… is already metered for the slot starting {start}",
        )
    minted = p["export_wh"] if ctx.params.get("meter_tokens", True) else 0
    burned = ewh_before + minted - tokens.balance(ctx, "ewh", prosumer)
    ctx.state.set(
        key,
        {
            "tx": ctx.txid,
            "meter": p["meter"],
            "export_wh": p["export_wh"],
            "import_wh": p["import_wh"],
            "unbacked_wh": p["import_wh"] - burned,
        },
    )
    _issue_recs(ctx, prosumer, start, start + slot, p["export_wh"])
    book = load_book(ctx)
    housekeeping(ctx, book)
    _index_slot(ctx, start, slot)
    for mid, _, _ in ctx.state.get(party_trades_key(start, prosumer)) or []:
        rec = ctx.state.get(match_key(mid))
        m = rec["match"]
        if rec["status"] != "approved":
            continue
        if ctx.state.get(done_key(mid, start)) is not None:
            continue
        other = m["buyer"] if prosumer == m["seller"] else m["seller"]
        if ctx.state.get(reading_key(other, start)) is not None:
            _settle(ctx, book, mid, start)


def _index_slot(ctx: Context, start: int, slot: int) -> None:
    """At a slot's first reading (the slot has ended, so its approved trades are final:
    approvals come before delivery), index them by party, so each reading and settlement reads
    its own party's trades, not every trade of the slot (a community's slot has hundreds)."""
    if ctx.state.get(slot_indexed_key(start)) is not None:
        return
    by_party: dict[str, list[list[Any]]] = {}
    for mid in ctx.state.get(slot_matches_key(start)) or []:
        rec = ctx.state.get(match_key(mid))
        if rec["status"] not in ("approved", "settled"):
            continue
        m = rec["match"]
        wh = energy_wh(power_at(m, start, slot), slot)
        by_party.setdefault(m["seller"], []).append([mid, "seller", wh])
        if m["buyer"] != m["seller"]:
            by_party.setdefault(m["buyer"], []).append([mid, "buyer", wh])
    if not by_party:
        return  # nothing traded: nothing to index, and the next reading's scan is empty too
    # at most two keys per approved trade of the slot: bounded by what the DSO approved, not by
    # anything the meter sends, and written once per slot
    for party, trades in by_party.items():
        ctx.state.set(party_trades_key(start, party), trades)
    ctx.state.set(slot_indexed_key(start), True)


def _issue_recs(ctx: Context, prosumer: str, start: int, end: int, export_wh: int) -> None:
    if not export_wh or not ctx.state.get(green_key(prosumer)):
        return
    carry_key, count_key = rec_carry_key(prosumer), rec_count_key(prosumer)
    n, carry = recs_for_green(ctx.state.get_int(carry_key), export_wh)
    ctx.state.set_int(carry_key, carry)
    if n == 0:
        return
    # One record for the reading's n certificates (n MWh), not n records: the state a reading
    # writes does not grow with the energy it reports (docs/ledger.md, "Bounds").
    serial = ctx.state.get_int(count_key)
    rid = rec_id(prosumer, serial)
    ctx.state.set(
        rec_key(rid),
        {
            "bus": ctx.sender_member.get("bus"),
            "end_ms": end,
            "energy_wh": n * REC_WH,
            "owner": prosumer,
            "start_ms": start,
            "status": "active",
        },
    )
    ctx.emit("rec.issued", id=rid, owner=prosumer, energy_wh=n * REC_WH, reading=ctx.txid)
    ctx.state.set_int(count_key, serial + 1)


def _share(ctx: Context, slot_start: int, mid: str, party: str, role: str, metered: int) -> int:
    """This match's part of a party's metered energy: pro rata to the schedules of all the
    party's approved trades in the slot (in the slot's deterministic order)."""
    ids, weights = [], []
    for other, other_role, wh in ctx.state.get(party_trades_key(slot_start, party)) or []:
        if other_role == role:
            ids.append(other)
            weights.append(wh)
    return allocate_pro_rata(metered, weights)[ids.index(mid)]


def _settle(ctx: Context, book: Any, mid: str, slot_start: int) -> None:
    rec = get_match(ctx, mid)
    m = rec["match"]
    prm = params(ctx)
    slot = prm["slot_ms"]
    seller_reading = ctx.state.get(reading_key(m["seller"], slot_start))
    buyer_reading = ctx.state.get(reading_key(m["buyer"], slot_start))
    injected = _share(ctx, slot_start, mid, m["seller"], "seller", seller_reading["export_wh"])
    consumed = _share(ctx, slot_start, mid, m["buyer"], "buyer", buyer_reading["import_wh"])
    if m["pricing"] == "pay_as_clear":
        price = book.clearing_price(slot_start)
    else:
        price = m["price_utoken_per_kwh"]
    reactive = ctx.state.get(reactive_key(mid))["setpoints"]
    accounts = {BUYER: m["buyer"], SELLER: m["seller"], DSO: rec["dso"]}
    for sp in reactive:
        accounts[f"{REGULATOR_PREFIX}{sp['node']}"] = sp["account"]
    power_w = power_at(m, slot_start, slot)  # the slot's entry of a profiled trade
    # a loss step stays in force until the next one: never charge more than this slot's cap
    loss_w = min(loss_w_at(ctx, mid, slot_start), loss_cap_w(m, power_w))
    result = settle_slot(
        scheduled_wh=energy_wh(power_w, slot),
        injected_wh=injected,
        consumed_wh=consumed,
        price_utoken_per_kwh=price,
        loss_w=loss_w,
        slot_ms=slot,
        reactive_utoken=[(sp["node"], sp["utoken_per_slot"]) for sp in reactive],
        params=SettlementParams(
            prm["loss_buyer_share_ppm"], prm["penalty_ppm"], prm["tolerance_ppm"]
        ),
    )
    bid: BidEscrow = ctx.state.get(bid_key(m["bid_id"]))
    paid_rows = []
    for t in result.transfers:
        payer, payee = accounts[t.payer], accounts[t.payee]
        if t.payer == BUYER:
            paid = _from_buyer_escrow(bid, rec, t.kind, t.amount_utoken)
            short = t.amount_utoken - paid
            tokens.debit(ctx, "utoken", ESCROW, paid)
        else:
            paid, short = pay_capped(tokens.balance(ctx, "utoken", payer), t.amount_utoken)
            tokens.debit(ctx, "utoken", payer, paid)
        tokens.credit(ctx, "utoken", payee, paid)
        paid_rows.append(
            {"kind": t.kind, "payer": payer, "payee": payee, "amount": paid, "shortfall": short}
        )
        ctx.emit(
            "settlement.payment",
            match=mid,
            slot=slot_start,
            kind=t.kind,
            payer=payer,
            payee=payee,
            amount=paid,
            shortfall=short,
            certificate=rec["certificate"],
        )
    ctx.state.set(bid_key(m["bid_id"]), bid)
    # energy tokens: the delivered Wh go from seller to buyer and back the buyer's consumption
    moved = min(result.delivered_wh, tokens.balance(ctx, "ewh", m["seller"]))
    tokens.debit(ctx, "ewh", m["seller"], moved)
    tokens.credit(ctx, "ewh", m["buyer"], moved)
    burn = min(moved, buyer_reading["unbacked_wh"])
    tokens.burn(ctx, "ewh", m["buyer"], burn)
    buyer_reading["unbacked_wh"] -= burn
    ctx.state.set(reading_key(m["buyer"], slot_start), buyer_reading)
    ctx.state.set(
        done_key(mid, slot_start),
        {
            "match": mid,
            "certificate": rec["certificate"],
            "slot_start_ms": slot_start,
            "readings": [seller_reading["tx"], buyer_reading["tx"]],
            "scheduled_wh": result.scheduled_wh,
            "injected_wh": injected,
            "consumed_wh": consumed,
            "delivered_wh": result.delivered_wh,
            "loss_wh": result.loss_wh,
            "price": price,
            "payments": paid_rows,
            "ewh_moved": moved,
            "ewh_burned": burn,
        },
    )
    ctx.emit("settlement.settled", match=mid, slot=slot_start, delivered_wh=result.delivered_wh)
    rec["slots_settled"] = rec.get("slots_settled", 0) + 1
    if rec["slots_settled"] == (m["end_ms"] - m["start_ms"]) // slot:
        rec["status"] = "settled"
        extras = rec.get("extras_escrow_utoken", 0)
        if extras:
            tokens.debit(ctx, "utoken", ESCROW, extras)
            tokens.credit(ctx, "utoken", m["buyer"], extras)
            rec["extras_escrow_utoken"] = 0
            ctx.emit("market.escrow_released", match=mid, buyer=m["buyer"], amount=extras)
    ctx.state.set(match_key(mid), rec)
    if rec["status"] == "settled":
        release_escrow_if_done(ctx, book, m["bid_id"])


def _from_buyer_escrow(bid: BidEscrow, rec: MatchRecord, kind: str, amount: int) -> int:
    """Take up to ``amount`` from what the buyer escrowed (the bid's escrow, made when it was
    posted, and the match's extras, made at approval) and return what was taken; the rest is
    a shortfall.  The buyer's free balance is never touched, so no record can charge a buyer
    more than it escrowed.  Loss and reactive pay come from the match's extras first, energy
    and penalties from the bid's escrow first, so one match's extras do not eat the escrow
    another match of the same bid needs for its energy."""
    extras = rec.get("extras_escrow_utoken", 0)
    escrow: int = bid.get("escrow_utoken", 0)
    if kind in ("loss", "reactive"):
        from_extras = min(extras, amount)
        from_escrow = min(escrow, amount - from_extras)
    else:
        from_escrow = min(escrow, amount)
        from_extras = min(extras, amount - from_escrow)
    rec["extras_escrow_utoken"] = extras - from_extras
    bid["escrow_utoken"] = escrow - from_escrow
    return from_extras + from_escrow


# --- settlement.green -----------------------------------------------------------------------------
def _v_green(p: dict[str, Any]) -> None:
    require_fields(p, ["green", "prosumer"])
    req_key(p, "prosumer")
    if not isinstance(p["green"], bool):
        raise PayloadError("green must be true or false")


def _x_green(ctx: Context, p: dict[str, Any]) -> None:
    m = ctx.state.get(member_key(p["prosumer"]))
    if m is None or m["role"] != "prosumer":
        raise ContractError(codes.NOT_FOUND, f"{p['prosumer'][:16]}… is not a prosumer")
    if ctx.sender_member["role"] == "vendor" and m.get("vendor") != ctx.sender:
        raise ContractError(codes.UNAUTHORIZED, "a vendor may declare only its own prosumers")
    ctx.state.set(green_key(p["prosumer"]), p["green"])
    ctx.emit("settlement.green", prosumer=p["prosumer"], green=p["green"])


CONTRACT = Contract(
    "settlement",
    (
        TxType("settlement.reading", frozenset({"meter"}), READING.validate, _x_reading),
        TxType("settlement.green", frozenset({"dso", "vendor"}), _v_green, _x_green),
    ),
)
