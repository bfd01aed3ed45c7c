"""Continuous double auction that forms purchase-offer couples ("matches"), network-aware.

Rules (deterministic; every tie broken by arrival order):

* An offer can serve a bid when its window covers the bid's window, its price is at most the
  bid's maximum, seller and buyer differ, the pair was not rejected before, and the offer still
  has power left in every slot of the bid's window.  A bid may be filled by several offers
  (partial fills); each fill is one match for the whole bid window.
* Power profiles (an order's ``profile_w``, one power per slot).  When neither order carries a
  profile and the bid's remainder is the same in every slot, a fill is one constant power: the
  smallest of the bid's remainder and the offer's remainder in each slot of the bid's window
  (exactly the rule before profiles).  Otherwise the fill is per slot: in each slot of the
  bid's window the smaller of the two remainders in that slot; the match carries that vector
  (``profile_w``, its peak as ``power_w``; a vector equal in every slot is stored as a constant
  match), and a fill that is zero in every slot is no match.  ChainBook implements profiles; this
  in-memory reference implements the constant rule only.
* A bid whose delivery has started (``start_ms <= now_ms``) is no longer matched; orders leave
  the book at the end of their window (expiry) or when their owner cancels them.
* Network-aware choice (seed 002 §6, Table 5): when the DSO has published a ranking for the
  buyer's bus, sellers whose trade would overload a line are never chosen, ranked sellers come
  first in order of increasing losses, then unranked ones; price and arrival order break ties.
  Without a ranking: price first, then arrival.
* Pricing: ``pay_as_bid`` (discriminatory) prices each match at the quote of the order that was
  resting in the book; ``pay_as_clear`` (uniform) settles every match of a slot at the slot's
  clearing price = the highest offer price matched in that slot.  To keep that price acceptable
  to every buyer of the slot, a pair is only matched while the slot's highest matched offer
  price stays at or below its lowest matched bid price (the band below).
* Work per order: one incoming order makes at most ``MAX_MATCHES_PER_ORDER`` matches; what is
  left of it rests in the book for later orders to match.  So an order that crosses thousands
  of tiny resting orders does bounded work and writes bounded state in its transaction.

All quantities are integers (W, utoken/kWh, ms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gridledger.market.orders import (
    DEFAULT_SLOT_MS,
    MAX_WINDOW_MS,
    Bid,
    Offer,
    OrderError,
    bid_from_dict,
    offer_from_dict,
    slots_of,
)

PAY_AS_BID = "pay_as_bid"
PAY_AS_CLEAR = "pay_as_clear"
PRICING_RULES = (PAY_AS_BID, PAY_AS_CLEAR)
# matches one incoming order may make (the rest of it rests in the book): bounds the work and
# the state writes of one market transaction (docs/ledger.md, bounds table)
MAX_MATCHES_PER_ORDER = 1024


@dataclass(frozen=True)
class MarketParams:
    slot_ms: int = DEFAULT_SLOT_MS
    pricing: str = PAY_AS_BID

    def __post_init__(self) -> None:
        if self.pricing not in PRICING_RULES:
            raise OrderError(f"pricing must be one of {PRICING_RULES}, got {self.pricing!r}")
        if not isinstance(self.slot_ms, int) or self.slot_ms <= 0:
            raise OrderError(f"slot_ms must be a positive integer, got {self.slot_ms!r}")


@dataclass(frozen=True)
class SellerRank:
    """One row of the DSO's ranking for a buyer bus (seed 002 Table 5), in integers."""

    seller_node: int
    loss_increase_ppm: int  # relative increase of total losses, parts per million (may be < 0)
    overloads: bool


# buyer bus -> ranked seller buses
Ranking = Mapping[int, Sequence[SellerRank]]


@dataclass(frozen=True)
class Match:
    """A purchase-offer couple: power from one offer to one bid over the bid's window."""

    match_id: str
    offer_id: str
    bid_id: str
    seller: str
    buyer: str
    seller_node: int
    buyer_node: int
    power_w: int
    price_utoken_per_kwh: int  # pay-as-bid price; under pay-as-clear the slot price applies
    start_ms: int
    end_ms: int
    green: bool
    pricing: str
    profile_w: tuple[int, ...] | None = None  # W per slot of the window; power_w is its peak

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.profile_w is None:
            del d["profile_w"]  # a constant match is encoded as before profiles existed
        else:
            d["profile_w"] = list(self.profile_w)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Match:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k != "profile_w"}
        profile = data.get("profile_w")
        return cls(**fields, profile_w=None if profile is None else tuple(profile))

    @classmethod
    def between(
        cls,
        match_id: str,
        offer: Offer,
        bid: Bid,
        power_w: int | Sequence[int],
        price: int,
        pricing: str,
    ) -> Match:
        """The match of ``power_w`` (constant, or one W per slot of the bid's window) from
        ``offer`` to ``bid`` over the bid's window (one definition for the reference book and
        the chain's book).  A per-slot vector equal in every slot is a constant match."""
        profile = None
        if not isinstance(power_w, int):
            if len(set(power_w)) > 1:
                profile = tuple(power_w)
            power_w = max(power_w)
        return cls(
            match_id=match_id,
            offer_id=offer.offer_id,
            bid_id=bid.bid_id,
            seller=offer.seller,
            buyer=bid.buyer,
            seller_node=offer.node,
            buyer_node=bid.node,
            power_w=power_w,
            price_utoken_per_kwh=price,
            start_ms=bid.start_ms,
            end_ms=bid.end_ms,
            green=offer.green,
            pricing=pricing,
            profile_w=profile,
        )


@dataclass
class OrderBook:
    """Open orders, what is left of them, and the per-slot price band (pay-as-clear)."""

    params: MarketParams = field(default_factory=MarketParams)
    offers: dict[str, Offer] = field(default_factory=dict)
    bids: dict[str, Bid] = field(default_factory=dict)
    offer_left_w: dict[str, dict[int, int]] = field(default_factory=dict)
    bid_left_w: dict[str, int] = field(default_factory=dict)
    arrival: dict[str, int] = field(default_factory=dict)
    excluded_pairs: set[tuple[str, str]] = field(default_factory=set)
    # slot start -> [highest matched offer price, lowest matched bid price]
    band: dict[int, list[int]] = field(default_factory=dict)
    next_seq: int = 0
    next_match: int = 0

    # -- orders ------------------------------------------------------------------------------

    def _admit(self, order_id: str, start_ms: int, now_ms: int) -> None:
        if order_id in self.arrival:
            raise OrderError(f"order {order_id} already exists")
        if start_ms <= now_ms:
            raise OrderError(f"window starts at {start_ms}, not after the current time {now_ms}")
        self.arrival[order_id] = self.next_seq
        self.next_seq += 1

    def add_offer(self, offer: Offer, now_ms: int, ranking: Ranking | None = None) -> list[Match]:
        """Put an offer in the book and match it against resting bids."""
        self._admit(offer.offer_id, offer.start_ms, now_ms)
        self.offers[offer.offer_id] = offer
        slot_ms = self.params.slot_ms
        self.offer_left_w[offer.offer_id] = {
            s: offer.power_w for s in slots_of(offer.start_ms, offer.end_ms, slot_ms)
        }
        candidates = [
            b
            for b in self.bids.values()
            if b.start_ms > now_ms
            and self.bid_left_w[b.bid_id] > 0
            and self._compatible(offer, b)
            and not overloads(ranking, b.node, offer.node)
        ]
        candidates.sort(key=lambda b: (-b.max_price_utoken_per_kwh, self.arrival[b.bid_id]))
        matches: list[Match] = []
        for bid in candidates:
            if len(matches) >= MAX_MATCHES_PER_ORDER:
                break
            m = self._fill(offer, bid, resting_price=bid.max_price_utoken_per_kwh)
            if m is not None:
                matches.append(m)
        return matches

    def add_bid(self, bid: Bid, now_ms: int, ranking: Ranking | None = None) -> list[Match]:
        """Put a bid in the book and match it against resting offers."""
        self._admit(bid.bid_id, bid.start_ms, now_ms)
        self.bids[bid.bid_id] = bid
        self.bid_left_w[bid.bid_id] = bid.power_w
        return self.match_bid(bid.bid_id, now_ms, ranking)

    def match_bid(self, bid_id: str, now_ms: int, ranking: Ranking | None = None) -> list[Match]:
        """Fill what is left of a bid from resting offers, best seller first."""
        bid = self.bids.get(bid_id)
        if bid is None or bid.start_ms <= now_ms:
            return []
        ranks = {r.seller_node: r for r in (ranking or {}).get(bid.node, ())}
        candidates = [
            o
            for o in self.offers.values()
            if self._compatible(o, bid) and not (o.node in ranks and ranks[o.node].overloads)
        ]

        def key(o: Offer) -> tuple[int, int, int, int]:
            r = ranks.get(o.node)
            rank = (0, r.loss_increase_ppm) if r is not None else (1, 0)
            return (*rank, o.price_utoken_per_kwh, self.arrival[o.offer_id])

        candidates.sort(key=key)
        matches: list[Match] = []
        for offer in candidates:
            if self.bid_left_w[bid_id] == 0 or len(matches) >= MAX_MATCHES_PER_ORDER:
                break
            m = self._fill(offer, bid, resting_price=offer.price_utoken_per_kwh)
            if m is not None:
                matches.append(m)
        return matches

    def cancel(self, order_id: str, owner: str) -> None:
        """Withdraw an open order; only its owner may.  Matches already made stand."""
        if order_id in self.offers:
            if self.offers[order_id].seller != owner:
                raise OrderError(f"order {order_id} belongs to another account")
        elif order_id in self.bids:
            if self.bids[order_id].buyer != owner:
                raise OrderError(f"order {order_id} belongs to another account")
        else:
            raise OrderError(f"no open order {order_id}")
        self._forget(order_id)

    def expire(self, now_ms: int) -> list[str]:
        """Drop orders whose window has ended; return their ids in arrival order."""
        gone = [o.offer_id for o in self.offers.values() if o.end_ms <= now_ms]
        gone += [b.bid_id for b in self.bids.values() if b.end_ms <= now_ms]
        gone.sort(key=lambda i: self.arrival[i])
        for oid in gone:
            self._forget(oid)
        # the band of a finished slot is still needed for its settlement price (readings come
        # after the slot): keep it for as long as an order window may last, then drop it
        for slot in [t for t in self.band if t < now_ms - MAX_WINDOW_MS]:
            del self.band[slot]
        return gone

    def _forget(self, order_id: str) -> None:
        """Drop every trace of a closed order, so the book only ever holds open orders."""
        self.offers.pop(order_id, None)
        self.offer_left_w.pop(order_id, None)
        self.bids.pop(order_id, None)
        self.bid_left_w.pop(order_id, None)
        self.arrival.pop(order_id, None)
        self.excluded_pairs = {p for p in self.excluded_pairs if order_id not in p}

    def release(self, match: Match) -> None:
        """A rejected match gives its power back to its orders (if still open) and the pair is
        never matched again."""
        if match.offer_id in self.offers and match.bid_id in self.bids:
            self.excluded_pairs.add((match.offer_id, match.bid_id))
        left = self.offer_left_w.get(match.offer_id)
        if left is not None:
            for s in slots_of(match.start_ms, match.end_ms, self.params.slot_ms):
                left[s] += match.power_w
        if match.bid_id in self.bid_left_w:
            self.bid_left_w[match.bid_id] += match.power_w

    def clearing_price(self, slot_start_ms: int) -> int | None:
        """Uniform price of a slot under pay-as-clear: the highest offer price matched in it."""
        band = self.band.get(slot_start_ms)
        return None if band is None else band[0]

    # -- internals ---------------------------------------------------------------------------

    def _compatible(self, offer: Offer, bid: Bid) -> bool:
        if (offer.offer_id, bid.bid_id) in self.excluded_pairs:
            return False
        if offer.seller == bid.buyer:
            return False
        if offer.price_utoken_per_kwh > bid.max_price_utoken_per_kwh:
            return False
        if not (offer.start_ms <= bid.start_ms and bid.end_ms <= offer.end_ms):
            return False
        if self.params.pricing == PAY_AS_CLEAR:
            ask, cap = offer.price_utoken_per_kwh, bid.max_price_utoken_per_kwh
            for s in slots_of(bid.start_ms, bid.end_ms, self.params.slot_ms):
                hi, lo = self.band.get(s, (ask, cap))
                if max(hi, ask) > min(lo, cap):
                    return False
        return True

    def _fill(self, offer: Offer, bid: Bid, resting_price: int) -> Match | None:
        slots = slots_of(bid.start_ms, bid.end_ms, self.params.slot_ms)
        left = self.offer_left_w[offer.offer_id]
        power_w = min([self.bid_left_w[bid.bid_id]] + [left[s] for s in slots])
        if power_w <= 0:
            return None
        for s in slots:
            left[s] -= power_w
            if self.params.pricing == PAY_AS_CLEAR:
                band = self.band.setdefault(
                    s, [offer.price_utoken_per_kwh, bid.max_price_utoken_per_kwh]
                )
                band[0] = max(band[0], offer.price_utoken_per_kwh)
                band[1] = min(band[1], bid.max_price_utoken_per_kwh)
        self.bid_left_w[bid.bid_id] -= power_w
        match = Match.between(
            f"m{self.next_match}", offer, bid, power_w, resting_price, self.params.pricing
        )
        self.next_match += 1
        return match

    # -- canonical plain data (for the state store) -----------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": {"slot_ms": self.params.slot_ms, "pricing": self.params.pricing},
            "offers": [o.to_dict() for o in self.offers.values()],
            "bids": [b.to_dict() for b in self.bids.values()],
            "offer_left_w": [
                [oid, [[s, w] for s, w in sorted(left.items())]]
                for oid, left in self.offer_left_w.items()
            ],
            "bid_left_w": [[bid, w] for bid, w in self.bid_left_w.items()],
            "arrival": [[oid, seq] for oid, seq in self.arrival.items()],
            "excluded_pairs": sorted([list(p) for p in self.excluded_pairs]),
            "band": [[s, hi, lo] for s, (hi, lo) in sorted(self.band.items())],
            "next_seq": self.next_seq,
            "next_match": self.next_match,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderBook:
        return cls(
            params=MarketParams(**data["params"]),
            offers={o["offer_id"]: offer_from_dict(o) for o in data["offers"]},
            bids={b["bid_id"]: bid_from_dict(b) for b in data["bids"]},
            offer_left_w={oid: {s: w for s, w in left} for oid, left in data["offer_left_w"]},
            bid_left_w={bid: w for bid, w in data["bid_left_w"]},
            arrival={oid: seq for oid, seq in data["arrival"]},
            excluded_pairs={(a, b) for a, b in data["excluded_pairs"]},
            band={s: [hi, lo] for s, hi, lo in data["band"]},
            next_seq=data["next_seq"],
            next_match=data["next_match"],
        )


def overloads(ranking: Ranking | None, buyer_node: int, seller_node: int) -> bool:
    """Whether the DSO's ranking says a trade from the seller's bus to the buyer's overloads."""
    for r in (ranking or {}).get(buyer_node, ()):
        if r.seller_node == seller_node:
            return r.overloads
    return False


def ranking_from_rows(rows: Sequence[Mapping[str, Any]]) -> dict[int, list[SellerRank]]:
    """Build a ranking from plain rows ``{buyer_node, seller_node, loss_increase_ppm, overloads}``
    (the shape the DSO publishes on chain)."""
    out: dict[int, list[SellerRank]] = {}
    for row in rows:
        out.setdefault(int(row["buyer_node"]), []).append(
            SellerRank(
                int(row["seller_node"]), int(row["loss_increase_ppm"]), bool(row["overloads"])
            )
        )
    return out
