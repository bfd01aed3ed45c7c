"""The market contract: signed offers and bids, matching, and the DSO's certificates.

Transaction types (payload fields in integers; see docs/market.md):

* ``market.offer`` (prosumer, vendor): node, power_w, regulation_var, price_utoken_per_kwh,
  start_ms, end_ms, green, and optionally profile_w (one W per slot of the window, peak equal
  to power_w; see market/orders.py).  Matched at once against resting bids.
* ``market.bid`` (prosumer, vendor): node, power_w, max_price_utoken_per_kwh, start_ms, end_ms,
  optionally profile_w.
  The bid's maximum cost is escrowed from the buyer's ``utoken`` balance (a bid above the balance
  fails and changes nothing); it pays the buyer's side of settlement and the rest comes back
  when the bid is done.
* ``market.cancel`` (owner): withdraws an open order; matches already made stand.
* ``market.ranking`` (dso): the DSO's seller ranking per buyer bus (seed 002 Table 5).
* ``market.losses`` (dso, loss tree): loss shares of the trades running from ``from_ms`` on
  (seed 000 eq. 5); re-issued whenever a new trade changes them.  A share is at most
  ``MAX_LOSS_SHARE_PPM`` of its trade's power, and once a match is approved only the DSO
  member that certified it may change its share.
* ``market.reactive`` (dso, reactive tree): set-points of the regulator nodes for a pending
  match and their remuneration per slot (seed 000 eqs. 7–8), and the positions of the on-load
  tap changers the DSO moves, if any (``taps``); fixed once the match is certified.
* ``market.certificate`` (dso, active tree): approves or rejects one pending match, bound to
  its exact content by ``match_digest``; approval needs the match's loss share and reactive
  record first, names the reactive record by ``reactive_digest`` and must arrive before
  delivery starts.  Approval escrows the most the buyer can owe beyond the energy itself
  (every slot's reactive pay plus its loss charge at the cap): the buyer's side of settlement
  is paid from escrow only, never from its free balance.  A rejection records the reasons,
  gives the power back to the book and lets the bid look for another seller.

Matches and orders are in ``market/…`` state keys, built by the key functions below (the one
place they are spelled; agents and reports use them too).  The order book is one record per open
order plus ordered index keys (market_book.py), so a market transaction touches only the orders
it reads or changes.  An order must end within the DSO's horizon and span at most a number of
slots, and each member's open orders are capped (``horizon_ms``, ``max_window_slots``,
``max_open_orders`` in the market parameters).
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any, NotRequired, TypedDict

from gridledger.chain import codes, encoding
from gridledger.chain.contracts import tokens
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    Execute,
    PayloadError,
    TxType,
    req_hash,
    req_int,
    req_key,
    req_str,
    require_fields,
)
from gridledger.chain.contracts.market_book import (
    DEFAULT_HORIZON_MS,
    DEFAULT_MAX_OPEN_ORDERS,
    DEFAULT_MAX_WINDOW_SLOTS,
    MAX_WINDOW_SLOTS,
    SEQ,
    ChainBook,
)

# the order book's keys, re-exported so that this module is the one place readers import from
from gridledger.chain.contracts.market_book import NEXT_MATCH as NEXT_MATCH
from gridledger.chain.contracts.market_book import band_key as band_key
from gridledger.chain.contracts.market_book import match_id as match_id
from gridledger.chain.contracts.market_book import open_count_key as open_count_key
from gridledger.chain.contracts.market_book import order_key as order_key
from gridledger.chain.contracts.membership import METERED_ROLES
from gridledger.chain.genesis import GenesisDoc
from gridledger.market.matching import (
    PRICING_RULES,
    MarketParams,
    Match,
    ranking_from_rows,
)
from gridledger.market.orders import (
    DEFAULT_SLOT_MS,
    MAX_POWER_W,
    PPM,
    OrderError,
    cost_utoken,
    energy_wh,
    parse_bid,
    parse_offer,
    power_at,
    scheduled_energy_wh,
)
from gridledger.market.settlement import SettlementParams

# Escrowed money sits on an account nobody holds a key for (sha256 of a fixed label), so the
# supply is unchanged and the token contract's rules (never negative) still apply to it.
ESCROW = hashlib.sha256(b"gridledger/market/escrow").hexdigest()
TRADERS = frozenset({"prosumer", "vendor"})
DSO_ONLY = frozenset({"dso"})
MAX_ROWS = 256
MAX_REASONS = 16

PARAMS = "market/params"
PENDING = "market/pending"
RANKING = "market/ranking"


# --- state helpers (shared with the settlement contract) ----------------------------------------
class MarketConfig(TypedDict):
    """The market's parameters in state (``market/params``): read by the market and settlement
    contracts and by the DSO's agents; set at genesis, changed by ``market.configure``."""

    slot_ms: int
    pricing: str  # pay_as_bid | pay_as_clear
    loss_buyer_share_ppm: int
    penalty_ppm: int
    tolerance_ppm: int
    # read with their defaults: a state may hold parameters written before these existed
    horizon_ms: NotRequired[int]
    max_window_slots: NotRequired[int]
    max_open_orders: NotRequired[int]


class MatchRecord(TypedDict):
    """A match in state (``market/match/<id>``): written when orders match, certified by the
    DSO (market contract), then settled slot by slot (settlement contract)."""

    match: dict[str, Any]  # Match.to_dict()
    digest: str  # match_digest(match): what a certificate is bound to
    status: str  # pending | approved | rejected | settled
    reasons: list[str]
    certificate: str  # id of the certifying transaction ("" until certified)
    matched_ms: int
    # set by the certificate
    dso: NotRequired[str]
    document_digest: NotRequired[str]
    reactive_digest: NotRequired[str]
    extras_escrow_utoken: NotRequired[int]
    # set by settlement
    slots_settled: NotRequired[int]


def params(ctx: Context) -> MarketConfig:
    p: MarketConfig | None = ctx.state.get(PARAMS)
    if p is None:
        p = default_params()
    return p


def default_params() -> MarketConfig:
    s = SettlementParams()
    return {
        "slot_ms": DEFAULT_SLOT_MS,
        "pricing": "pay_as_bid",
        "loss_buyer_share_ppm": s.loss_buyer_share_ppm,
        "penalty_ppm": s.penalty_ppm,
        "tolerance_ppm": s.tolerance_ppm,
        "horizon_ms": DEFAULT_HORIZON_MS,
        "max_window_slots": DEFAULT_MAX_WINDOW_SLOTS,
        "max_open_orders": DEFAULT_MAX_OPEN_ORDERS,
    }


def market_params(ctx: Context) -> MarketParams:
    p = params(ctx)
    return MarketParams(slot_ms=p["slot_ms"], pricing=p["pricing"])


def load_book(ctx: Context) -> ChainBook:
    """The order book: a view over the state (each order is its own record; nothing to save)."""
    window = params(ctx).get("max_window_slots", DEFAULT_MAX_WINDOW_SLOTS)
    return ChainBook(ctx.state, market_params(ctx), window)


# --- state keys (the one home of their spelling; settlement, agents and reports use these) ------
def match_key(match_id: str) -> str:
    return f"market/match/{match_id}"


def slot_matches_key(slot_start_ms: int) -> str:
    """The approved matches delivering in a slot, in certification order."""
    return f"market/slot/{slot_start_ms}"


def loss_record_key(from_ms: int) -> str:
    """The DSO's latest ``market.losses`` record for the trades running from ``from_ms``."""
    return f"market/lossrec/{from_ms}"


def match_count(state_value: Any) -> int:
    """How many matches exist (ids ``match_id(0) .. match_id(n - 1)``), from the raw value of
    :data:`NEXT_MATCH` as any state reader returns it (None before the first match)."""
    return int(state_value or 0)


def get_match(ctx: Context, match_id: str) -> MatchRecord:
    rec: MatchRecord | None = ctx.state.get(match_key(match_id))
    if rec is None:
        raise ContractError(codes.NOT_FOUND, f"no match {match_id}")
    return rec


def match_digest(match: dict[str, Any]) -> str:
    """What a certificate is bound to: the hash of the match's canonical encoding."""
    return hashlib.sha256(b"gridledger/match/v1\x00" + encoding.encode(match)).hexdigest()


def bid_key(bid_id: str) -> str:
    return f"market/bid/{bid_id}"


class BidEscrow(TypedDict):
    """A bid's escrow in state (``market/bid/<id>``): written when the bid is posted (market
    contract), drawn on by settlement, released once nothing more can be charged."""

    buyer: str
    escrow_utoken: int  # what is left of the bid's maximum cost, held by ESCROW
    matches: list[str]  # ids of the bid's matches, in the order they were made


def ranking(ctx: Context) -> dict[int, Any]:
    return ranking_from_rows(ctx.state.get(RANKING) or [])


def _record_matches(ctx: Context, book: ChainBook, matches: list[Match]) -> None:
    pending = ctx.state.get(PENDING) or []
    for m in matches:
        d = m.to_dict()
        record: MatchRecord = {
            "match": d,
            "digest": match_digest(d),
            "status": "pending",
            "reasons": [],
            "certificate": "",
            "matched_ms": ctx.time_ms,
        }
        ctx.state.set(match_key(m.match_id), record)
        bid: BidEscrow = ctx.state.get(bid_key(m.bid_id))
        bid["matches"].append(m.match_id)
        ctx.state.set(bid_key(m.bid_id), bid)
        pending.append(m.match_id)
        ctx.emit(
            "market.matched",
            match=m.match_id,
            offer=m.offer_id,
            bid=m.bid_id,
            power_w=m.power_w,
            price=m.price_utoken_per_kwh,
        )
    ctx.state.set(PENDING, pending)


def _drop_pending(ctx: Context, match_id: str) -> None:
    pending = ctx.state.get(PENDING) or []
    ctx.state.set(PENDING, [m for m in pending if m != match_id])


def release_escrow_if_done(ctx: Context, book: ChainBook, bid_id: str) -> None:
    """Give the buyer back what is left of a bid's escrow once nothing more can be charged:
    the bid cannot be matched any more and each of its matches is rejected or fully settled."""
    bid: BidEscrow | None = ctx.state.get(bid_key(bid_id))
    if bid is None or bid["escrow_utoken"] == 0:
        return
    order = book.get_order(bid_id)
    if order is not None and order["left_w"] > 0:
        return
    for mid in bid["matches"]:
        if ctx.state.get(match_key(mid))["status"] not in ("rejected", "settled"):
            return
    amount = bid["escrow_utoken"]
    tokens.debit(ctx, "utoken", ESCROW, amount)
    tokens.credit(ctx, "utoken", bid["buyer"], amount)
    bid["escrow_utoken"] = 0
    ctx.state.set(bid_key(bid_id), bid)
    ctx.emit("market.escrow_released", bid=bid_id, buyer=bid["buyer"], amount=amount)


def housekeeping(ctx: Context, book: ChainBook, owner: str | None = None) -> None:
    """Expire orders whose window has ended (block time; a bounded number per transaction, and
    all of ``owner``'s) and release idle escrow."""
    gone = book.expire(ctx.time_ms)
    if owner is not None:
        gone += book.expire_owner(owner, ctx.time_ms)
    for oid in gone:
        ctx.emit("market.expired", order=oid)
        if ctx.state.get(bid_key(oid)) is not None:
            release_escrow_if_done(ctx, book, oid)


def _admit_order(ctx: Context, book: ChainBook, start_ms: int, end_ms: int) -> None:
    """The limits a member's new order must respect: the DSO's horizon (how far ahead, so an
    order leaves the book in bounded time), the longest window (so the search for its
    counterparts and its per-slot records stay bounded) and the cap on open orders (so a member
    cannot flood the book; its own ended orders are swept first)."""
    horizon = params(ctx).get("horizon_ms", DEFAULT_HORIZON_MS)
    if end_ms - ctx.time_ms > horizon:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"window ends at {end_ms}, more than the market horizon of {horizon} ms "
            f"after the block time {ctx.time_ms}",
        )
    if end_ms - start_ms > book.max_window_ms:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"window of {(end_ms - start_ms) // book.params.slot_ms} slots is longer than the "
            f"market's max_window_slots of {book.max_window_ms // book.params.slot_ms}",
        )
    cap = params(ctx).get("max_open_orders", DEFAULT_MAX_OPEN_ORDERS)
    if book.open_orders(ctx.sender) >= cap:
        raise ContractError(
            codes.LIMIT_REACHED,
            f"{cap} open orders already (the market's per-member cap): cancel one or wait "
            "for one to end",
        )


def _order(fn: Execute) -> Execute:
    """Wrap order rule errors as invalid payloads, so they are reported with their message."""

    def run(ctx: Context, p: dict[str, Any]) -> None:
        try:
            fn(ctx, p)
        except OrderError as exc:
            raise ContractError(codes.INVALID_PAYLOAD, str(exc)) from exc

    return run


# --- genesis and market.configure ---------------------------------------------------------------
def _genesis(ctx: Context, doc: GenesisDoc) -> None:
    ctx.state.set(PARAMS, default_params())


def _v_configure(p: dict[str, Any]) -> None:
    require_fields(p, [], list(default_params()))
    if "slot_ms" in p:
        # whole seconds: meter readings cover a slot in integer seconds (duration_s)
        req_int(p, "slot_ms", 1_000, 86_400_000)
        if p["slot_ms"] % 1000:
            raise PayloadError(f"slot_ms must be a whole number of seconds, got {p['slot_ms']}")
    if "pricing" in p:
        req_str(p, "pricing", choices=PRICING_RULES)
    for name in ("loss_buyer_share_ppm", "tolerance_ppm"):
        if name in p:
            req_int(p, name, 0, 1_000_000)
    if "penalty_ppm" in p:
        req_int(p, "penalty_ppm", 0, 10_000_000)
    if "horizon_ms" in p:
        req_int(p, "horizon_ms", 1_000, 366 * 86_400_000)
    if "max_window_slots" in p:
        req_int(p, "max_window_slots", 1, MAX_WINDOW_SLOTS)
    if "max_open_orders" in p:
        req_int(p, "max_open_orders", 1, 100_000)


def _x_configure(ctx: Context, p: dict[str, Any]) -> None:
    """The DSO sets the market rules before trading opens; they are frozen afterwards so that
    no trade is ever settled under rules it was not made under."""
    if ctx.state.get_int(SEQ) > 0:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            "market parameters are frozen once the first order has been posted",
        )
    ctx.state.set(PARAMS, {**params(ctx), **p})
    ctx.emit("market.configured", **p)


# --- market.offer / market.bid / market.cancel ---------------------------------------------------
OFFER_FIELDS = ["end_ms", "node", "power_w", "price_utoken_per_kwh", "regulation_var", "start_ms"]
BID_FIELDS = ["end_ms", "max_price_utoken_per_kwh", "node", "power_w", "start_ms"]


def _v_offer(p: dict[str, Any]) -> None:
    require_fields(p, OFFER_FIELDS, ["green", "profile_w"])
    try:
        # the slot alignment and the profile's length are checked in execute, where the
        # chain's slot length is known
        parse_offer(p, offer_id="-", seller="-", slot_ms=None)
    except OrderError as exc:
        raise PayloadError(str(exc)) from exc


def _own_bus(ctx: Context, node: int) -> None:
    bus, role = ctx.sender_member.get("bus"), ctx.sender_member["role"]
    # a charge point granted market.bid buys its chargers' energy at its own bus only
    if role in METERED_ROLES and bus != node:
        raise ContractError(codes.UNAUTHORIZED, f"a {role} at bus {bus} cannot trade at {node}")


@_order
def _x_offer(ctx: Context, p: dict[str, Any]) -> None:
    _own_bus(ctx, p["node"])
    book = load_book(ctx)
    housekeeping(ctx, book, ctx.sender)
    offer = parse_offer(p, offer_id=ctx.txid, seller=ctx.sender, slot_ms=book.params.slot_ms)
    _admit_order(ctx, book, offer.start_ms, offer.end_ms)
    matches = book.add_offer(offer, ctx.time_ms, ranking(ctx))
    ctx.emit("market.offer", id=ctx.txid, seller=ctx.sender, node=offer.node, power_w=offer.power_w)
    _record_matches(ctx, book, matches)


def _v_bid(p: dict[str, Any]) -> None:
    require_fields(p, BID_FIELDS, ["profile_w"])
    try:
        parse_bid(p, bid_id="-", buyer="-", slot_ms=None)
    except OrderError as exc:
        raise PayloadError(str(exc)) from exc


@_order
def _x_bid(ctx: Context, p: dict[str, Any]) -> None:
    _own_bus(ctx, p["node"])
    book = load_book(ctx)
    housekeeping(ctx, book, ctx.sender)
    bid = parse_bid(p, bid_id=ctx.txid, buyer=ctx.sender, slot_ms=book.params.slot_ms)
    _admit_order(ctx, book, bid.start_ms, bid.end_ms)
    escrow = bid.max_cost_utoken(book.params.slot_ms)
    have = tokens.balance(ctx, "utoken", ctx.sender)
    if have < escrow:
        raise ContractError(
            codes.INSUFFICIENT_FUNDS,
            f"bid needs {escrow} utoken in escrow "
            f"(power x window x max price); balance is {have} utoken",
        )
    tokens.debit(ctx, "utoken", ctx.sender, escrow)
    tokens.credit(ctx, "utoken", ESCROW, escrow)
    record: BidEscrow = {"buyer": ctx.sender, "escrow_utoken": escrow, "matches": []}
    ctx.state.set(bid_key(bid.bid_id), record)
    matches = book.add_bid(bid, ctx.time_ms, ranking(ctx))
    ctx.emit(
        "market.bid",
        id=ctx.txid,
        buyer=ctx.sender,
        node=bid.node,
        power_w=bid.power_w,
        escrow=escrow,
    )
    _record_matches(ctx, book, matches)


def _v_cancel(p: dict[str, Any]) -> None:
    require_fields(p, ["order"])
    req_hash(p, "order")


@_order
def _x_cancel(ctx: Context, p: dict[str, Any]) -> None:
    book = load_book(ctx)
    housekeeping(ctx, book)
    if book.get_order(p["order"]) is None:
        raise ContractError(codes.NOT_FOUND, f"no open order {p['order'][:16]}…")
    book.cancel(p["order"], ctx.sender)
    ctx.emit("market.cancelled", order=p["order"])
    if ctx.state.get(bid_key(p["order"])) is not None:
        release_escrow_if_done(ctx, book, p["order"])


# --- market.ranking -------------------------------------------------------------------------------
def _v_ranking(p: dict[str, Any]) -> None:
    require_fields(p, ["rows"])
    rows = p["rows"]
    if not isinstance(rows, list) or len(rows) > MAX_ROWS:
        raise PayloadError(f"rows must be a list of at most {MAX_ROWS} entries")
    for row in rows:
        if not isinstance(row, dict):
            raise PayloadError("each ranking row must be an object")
        require_fields(row, ["buyer_node", "loss_increase_ppm", "overloads", "seller_node"])
        req_int(row, "buyer_node", 0, 10**9)
        req_int(row, "seller_node", 0, 10**9)
        req_int(row, "loss_increase_ppm", -(10**9), 10**9)
        if not isinstance(row["overloads"], bool):
            raise PayloadError("overloads must be true or false")


def _x_ranking(ctx: Context, p: dict[str, Any]) -> None:
    ctx.state.set(RANKING, p["rows"])
    ctx.emit("market.ranking", rows=len(p["rows"]))


# --- market.losses --------------------------------------------------------------------------------
def _v_losses(p: dict[str, Any]) -> None:
    require_fields(p, ["from_ms", "shares", "total_loss_w"], ["total_loss_w_without_ropf"])
    req_int(p, "from_ms", 0)
    req_int(p, "total_loss_w", 0, MAX_POWER_W)
    if "total_loss_w_without_ropf" in p:
        req_int(p, "total_loss_w_without_ropf", 0, MAX_POWER_W)
    shares = p["shares"]
    if not isinstance(shares, list) or not 1 <= len(shares) <= MAX_ROWS:
        raise PayloadError(f"shares must be a list of 1..{MAX_ROWS} entries")
    seen = set()
    for s in shares:
        if not isinstance(s, dict):
            raise PayloadError("each share must be an object")
        require_fields(s, ["loss_w", "match_id"], ["loss_w_without_ropf"])
        req_str(s, "match_id", 32)
        req_int(s, "loss_w", -MAX_POWER_W, MAX_POWER_W)
        if "loss_w_without_ropf" in s:
            req_int(s, "loss_w_without_ropf", -MAX_POWER_W, MAX_POWER_W)
        if s["match_id"] in seen:
            raise PayloadError(f"match {s['match_id']} listed twice")
        seen.add(s["match_id"])


def loss_steps_key(match_id: str) -> str:
    return f"market/losses/{match_id}"


def loss_w_at(ctx: Context, match_id: str, slot_ms: int) -> int:
    """The match's loss share in force for a slot: the latest step starting at or before it."""
    steps = ctx.state.get(loss_steps_key(match_id)) or []
    loss = 0
    for from_ms, loss_w in steps:
        if from_ms <= slot_ms:
            loss = loss_w
    return loss


# A trade's loss share may be at most this part of its power: distribution losses are a few
# percent of the power carried, so a larger share is refused as implausible, and the buyer's
# loss charge, escrowed at approval for this cap, is bounded by it.
MAX_LOSS_SHARE_PPM = 250_000


def loss_cap_w(match: dict[str, Any], power_w: int | None = None) -> int:
    """The largest loss share a match may be charged (see ``MAX_LOSS_SHARE_PPM``): of its
    power in one slot (``power_w``, see ``power_at``), or of its peak."""
    cap_w: int = (match["power_w"] if power_w is None else power_w) * MAX_LOSS_SHARE_PPM // PPM
    return cap_w


def _x_losses(ctx: Context, p: dict[str, Any]) -> None:
    slot = params(ctx)["slot_ms"]
    if p["from_ms"] % slot:
        raise ContractError(codes.INVALID_PAYLOAD, f"from_ms must be aligned to {slot} ms slots")
    for s in p["shares"]:
        rec = get_match(ctx, s["match_id"])
        m = rec["match"]
        if rec["status"] in ("rejected", "settled"):
            raise ContractError(
                codes.INVALID_PAYLOAD, f"match {s['match_id']} is {rec['status']}: no loss share"
            )
        if not m["start_ms"] <= p["from_ms"] < m["end_ms"]:
            raise ContractError(
                codes.INVALID_PAYLOAD, f"match {s['match_id']} is not running at {p['from_ms']}"
            )
        if rec["status"] == "approved" and rec["dso"] != ctx.sender:
            raise ContractError(
                codes.UNAUTHORIZED,
                f"match {s['match_id']} was certified by another DSO member: "
                "only its certifier changes its loss share",
            )
        # a profiled trade's cap is of its power in the slot the share starts in
        power_w = power_at(m, p["from_ms"], slot)
        cap = loss_cap_w(m, power_w)
        if s["loss_w"] > cap:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"loss share {s['loss_w']} W of match {s['match_id']} exceeds the cap of "
                f"{MAX_LOSS_SHARE_PPM} ppm of its {power_w} W ({cap} W)",
            )
        if p["from_ms"] < ctx.time_ms - ctx.time_ms % slot:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                "loss shares cannot be changed for a slot that has already started",
            )
        key = loss_steps_key(s["match_id"])
        steps = [st for st in (ctx.state.get(key) or []) if st[0] != p["from_ms"]]
        steps.append([p["from_ms"], s["loss_w"]])
        ctx.state.set(key, sorted(steps))
    ctx.state.set(loss_record_key(p["from_ms"]), {**p, "tx": ctx.txid})
    ctx.emit(
        "market.losses",
        from_ms=p["from_ms"],
        trades=len(p["shares"]),
        total_loss_w=p["total_loss_w"],
    )


# --- market.reactive ------------------------------------------------------------------------------
# Tap positions the DSO chose for a match's interval (its R-OPF moves on-load tap changers).
# The contract does not know the grid: it checks the shape (integers, at most MAX_TAPS
# changers, each named once, names in ascending order so the record has one encoding) and a
# generous position bound; that a branch is a tap changer and its position lies within its
# [tap_min, tap_max] is the DSO's check against its grid file (agents/dso_config.py), and
# anyone holding the grid can re-check it with one power flow at the certified set-points.
MAX_TAPS = 16
MAX_TAP_POSITION = 1_000
MAX_TAP_NAME = 64


def _v_taps(taps: Any) -> None:
    if not isinstance(taps, list) or not 1 <= len(taps) <= MAX_TAPS:
        raise PayloadError(f"taps must be a list of 1..{MAX_TAPS} entries")
    names = []
    for tap in taps:
        if not isinstance(tap, dict):
            raise PayloadError("each tap must be an object")
        require_fields(tap, ["branch", "pos"])
        if not req_str(tap, "branch", MAX_TAP_NAME):
            raise PayloadError("a tap's branch name must not be empty")
        req_int(tap, "pos", -MAX_TAP_POSITION, MAX_TAP_POSITION)
        names.append(tap["branch"])
    if any(a >= b for a, b in itertools.pairwise(names)):
        raise PayloadError("taps must name each branch once, in ascending order")


def _v_reactive(p: dict[str, Any]) -> None:
    require_fields(p, ["match_id", "setpoints"], ["taps"])
    if "taps" in p:
        _v_taps(p["taps"])
    req_str(p, "match_id", 32)
    sps = p["setpoints"]
    if not isinstance(sps, list) or len(sps) > MAX_ROWS:
        raise PayloadError(f"setpoints must be a list of at most {MAX_ROWS} entries")
    for sp in sps:
        if not isinstance(sp, dict):
            raise PayloadError("each set-point must be an object")
        require_fields(
            sp, ["account", "delta_pq_w", "delta_q_var", "node", "q_var", "utoken_per_slot"]
        )
        req_key(sp, "account")
        req_int(sp, "node", 0, 10**9)
        req_int(sp, "q_var", -MAX_POWER_W, MAX_POWER_W)
        req_int(sp, "delta_q_var", -MAX_POWER_W, MAX_POWER_W)
        req_int(sp, "delta_pq_w", 0, MAX_POWER_W)
        req_int(sp, "utoken_per_slot", 0, 10**15)
    nodes = [sp["node"] for sp in sps]
    if len(set(nodes)) != len(nodes):
        raise PayloadError("each regulator node may appear once in setpoints")


def reactive_key(match_id: str) -> str:
    return f"market/reactive/{match_id}"


def reactive_digest(
    setpoints: list[dict[str, Any]], taps: list[dict[str, Any]] | None = None
) -> str:
    """What an approval names the match's reactive record by: the hash of its set-points, and
    of its tap positions when it has some (a record without taps hashes as it always did)."""
    if not taps:
        return hashlib.sha256(
            b"gridledger/reactive/v1\x00" + encoding.encode(setpoints)
        ).hexdigest()
    body = encoding.encode({"setpoints": setpoints, "taps": taps})
    return hashlib.sha256(b"gridledger/reactive/v2\x00" + body).hexdigest()


def taps_record(positions: dict[str, int]) -> list[dict[str, Any]]:
    """Tap positions as a reactive record lists them: one entry per branch, names ascending."""
    return [{"branch": b, "pos": int(positions[b])} for b in sorted(positions)]


def document_digest(document: Any) -> str:
    """What a certificate names the DSO's off-chain document by (``document_digest``): SHA-256
    of its canonical encoding, with floats written as 9-significant-digit strings (canonical
    JSON has no floats, and anyone holding the stored file must get the same digest)."""
    return hashlib.sha256(encoding.encode(_fixed_point(document))).hexdigest()


def _fixed_point(doc: Any) -> Any:
    if isinstance(doc, float):
        return f"{doc:.9g}"
    if isinstance(doc, dict):
        return {str(k): _fixed_point(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [_fixed_point(v) for v in doc]
    return doc


def buyer_extras_utoken(
    match: dict[str, Any], setpoints: list[dict[str, Any]], prm: MarketConfig
) -> int:
    """The most a match's buyer can owe beyond the energy: each slot's reactive pay plus the
    buyer's part of the loss charge at the cap, at the match's price (settlement.py charges
    exactly these per slot, floored, so this bounds them)."""
    slot = prm["slot_ms"]
    slots = (match["end_ms"] - match["start_ms"]) // slot
    reactive = sum(sp["utoken_per_slot"] for sp in setpoints)
    if match.get("profile_w") is not None:  # the loss cap follows each slot's power
        return sum(
            cost_utoken(energy_wh(loss_cap_w(match, w), slot), match["price_utoken_per_kwh"])
            * prm["loss_buyer_share_ppm"]
            // PPM
            + reactive
            for w in match["profile_w"]
        )
    loss_utoken = cost_utoken(energy_wh(loss_cap_w(match), slot), match["price_utoken_per_kwh"])
    per_slot = loss_utoken * prm["loss_buyer_share_ppm"] // PPM
    per_slot += reactive
    extras: int = slots * per_slot
    return extras


def _x_reactive(ctx: Context, p: dict[str, Any]) -> None:
    rec = get_match(ctx, p["match_id"])
    if rec["status"] != "pending":
        raise ContractError(
            codes.INVALID_PAYLOAD, f"match {p['match_id']} is {rec['status']}, not pending"
        )
    for sp in p["setpoints"]:
        if ctx.state.get_raw(f"member/{sp['account']}".encode()) is None:
            raise ContractError(codes.NOT_FOUND, f"regulator {sp['account'][:16]}… is not a member")
    record: dict[str, Any] = {"setpoints": p["setpoints"], "tx": ctx.txid}
    if "taps" in p:  # absent, not empty, without taps: such a record encodes as before
        record["taps"] = p["taps"]
    ctx.state.set(reactive_key(p["match_id"]), record)
    for tap in p.get("taps", []):
        ctx.emit("market.tap", match=p["match_id"], branch=tap["branch"], pos=tap["pos"])
    for sp in p["setpoints"]:
        ctx.emit(
            "market.setpoint",
            match=p["match_id"],
            node=sp["node"],
            q_var=sp["q_var"],
            delta_q_var=sp["delta_q_var"],
            delta_pq_w=sp["delta_pq_w"],
        )


# --- market.certificate ---------------------------------------------------------------------------
# An approval writes one slot index entry per slot of the match. An order spans at most
# MAX_WINDOW_SLOTS slots, so a match does too; the approval checks it again (defence in depth:
# a match recorded under older parameters cannot make an approval write more).
MAX_SLOTS_PER_MATCH = MAX_WINDOW_SLOTS
TRADE_FIELDS = ["destination", "duration_ms", "energy_wh", "power_w", "source", "start_ms"]


def trade_record(m: dict[str, Any], slot_ms: int = DEFAULT_SLOT_MS) -> dict[str, Any]:
    """The active-power record of an approved trade (seed 000 §II.B: source, destination,
    energy, timestamp, duration, power, and the power profile of a profiled trade), as the
    certificate must carry it."""
    record = {
        "source": m["seller"],
        "destination": m["buyer"],
        "power_w": m["power_w"],
        "start_ms": m["start_ms"],
        "duration_ms": m["end_ms"] - m["start_ms"],
        "energy_wh": scheduled_energy_wh(m, slot_ms),
    }
    if m.get("profile_w") is not None:
        record["profile_w"] = m["profile_w"]
    return record


def _v_certificate(p: dict[str, Any]) -> None:
    require_fields(
        p,
        ["match_digest", "match_id", "reasons", "verdict"],
        ["document_digest", "reactive_digest", "trade"],
    )
    if "trade" in p:
        if not isinstance(p["trade"], dict):
            raise PayloadError("trade must be an object")
        require_fields(p["trade"], TRADE_FIELDS, ["profile_w"])
        for f in ("destination", "source"):
            req_key(p["trade"], f)
        for f in ("duration_ms", "energy_wh", "power_w", "start_ms"):
            req_int(p["trade"], f, 0)
        profile = p["trade"].get("profile_w", [])
        if not isinstance(profile, list) or len(profile) > MAX_WINDOW_SLOTS:
            raise PayloadError(f"trade.profile_w must be a list of at most {MAX_WINDOW_SLOTS}")
        if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in profile):
            raise PayloadError("trade.profile_w entries must be integers >= 0 (W)")
    req_str(p, "match_id", 32)
    req_hash(p, "match_digest")
    if "document_digest" in p:
        req_hash(p, "document_digest")
    if "reactive_digest" in p:
        req_hash(p, "reactive_digest")
    req_str(p, "verdict", choices=("approved", "rejected"))
    reasons = p["reasons"]
    if (
        not isinstance(reasons, list)
        or len(reasons) > MAX_REASONS
        or not all(isinstance(r, str) and 0 < len(r) <= 200 for r in reasons)
    ):
        raise PayloadError(f"reasons must be a list of at most {MAX_REASONS} strings (1..200)")
    if p["verdict"] == "rejected" and not reasons:
        raise PayloadError("a rejection must give its reasons")


def _x_certificate(ctx: Context, p: dict[str, Any]) -> None:
    mid = p["match_id"]
    rec = get_match(ctx, mid)
    if rec["status"] != "pending":
        raise ContractError(
            codes.ALREADY_EXISTS,
            f"match {mid} is already {rec['status']}: one certificate per match",
        )
    if p["match_digest"] != rec["digest"]:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"certificate is for different trade terms than match {mid}"
        )
    m = Match.from_dict(rec["match"])
    book = load_book(ctx)
    housekeeping(ctx, book)
    if p["verdict"] == "approved":
        slots = (m.end_ms - m.start_ms) // book.params.slot_ms
        if slots > MAX_SLOTS_PER_MATCH:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"match {mid} spans {slots} slots; an approval covers at most "
                f"{MAX_SLOTS_PER_MATCH} (reject it instead)",
            )
        if ctx.time_ms >= m.start_ms:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"match {mid} starts at {m.start_ms}: an approval must arrive before delivery",
            )
        if ctx.state.get(loss_steps_key(mid)) is None:
            raise ContractError(codes.INVALID_PAYLOAD, f"no loss share recorded for match {mid}")
        reactive = ctx.state.get(reactive_key(mid))
        if reactive is None:
            raise ContractError(codes.INVALID_PAYLOAD, f"no reactive record for match {mid}")
        expected = reactive_digest(reactive["setpoints"], reactive.get("taps"))
        if p.get("reactive_digest") != expected:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"an approval must name the reactive record of match {mid} by its digest "
                f"(reactive_digest {expected})",
            )
        # the approval is the trade's record in the active-power tree: it must state the trade
        if p.get("trade") != trade_record(rec["match"], book.params.slot_ms):
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"an approval must carry the trade record "
                f"of match {mid} (source, destination, energy, start, duration, "
                "power)",
            )
        # the buyer's extras (reactive pay, loss charge at the cap) are escrowed now: what
        # settlement may take from the buyer is capped by escrow, never its free balance
        extras = buyer_extras_utoken(rec["match"], reactive["setpoints"], params(ctx))
        have = tokens.balance(ctx, "utoken", m.buyer)
        if have < extras:
            raise ContractError(
                codes.INSUFFICIENT_FUNDS,
                f"approving match {mid} escrows {extras} utoken from the buyer for reactive pay "
                f"and losses at the cap; the buyer has {have} utoken",
            )
        tokens.debit(ctx, "utoken", m.buyer, extras)
        tokens.credit(ctx, "utoken", ESCROW, extras)
        rec["extras_escrow_utoken"] = extras
        rec["reactive_digest"] = p["reactive_digest"]
        rec["status"] = "approved"
        slot = book.params.slot_ms
        for s in range(m.start_ms, m.end_ms, slot):
            key = slot_matches_key(s)
            ctx.state.set(key, [*(ctx.state.get(key) or []), mid])
    else:
        rec["status"] = "rejected"
        book.release(m)
    rec["reasons"] = p["reasons"]
    rec["certificate"] = ctx.txid
    rec["dso"] = ctx.sender
    rec["document_digest"] = p.get("document_digest", "")
    ctx.state.set(match_key(mid), rec)
    _drop_pending(ctx, mid)
    ctx.emit("market.certified", match=mid, verdict=p["verdict"], reasons="; ".join(p["reasons"]))
    if p["verdict"] == "rejected":
        _record_matches(ctx, book, book.match_bid(m.bid_id, ctx.time_ms, ranking(ctx)))
        release_escrow_if_done(ctx, book, m.bid_id)


CONTRACT = Contract(
    "market",
    (
        TxType("market.configure", DSO_ONLY, _v_configure, _x_configure),
        TxType("market.offer", TRADERS, _v_offer, _x_offer),
        TxType("market.bid", TRADERS, _v_bid, _x_bid),
        TxType("market.cancel", TRADERS, _v_cancel, _x_cancel),
        TxType("market.ranking", DSO_ONLY, _v_ranking, _x_ranking, max_payload_bytes=32 * 1024),
        TxType(
            "market.losses",
            DSO_ONLY,
            _v_losses,
            _x_losses,
            tree="loss",
            max_payload_bytes=16 * 1024,
        ),
        TxType(
            "market.reactive",
            DSO_ONLY,
            _v_reactive,
            _x_reactive,
            tree="reactive",
            max_payload_bytes=16 * 1024,
        ),
        TxType("market.certificate", DSO_ONLY, _v_certificate, _x_certificate, tree="active"),
    ),
    genesis=_genesis,
)
