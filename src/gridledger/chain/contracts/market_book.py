"""The order book in chain state: one record per open order and ordered index keys.

A market transaction reads and writes only the records it changes, so its cost does not grow
with the number of open orders (bench/market.py measures it):

* ``market/order/<id>``: an open order (the offer or bid as posted, its arrival number, what is
  left of it: per slot for an offer, and only for the slots already matched; a bid's
  ``left_w`` is its largest remainder in any slot, and a bid with a power profile, or one
  filled per slot by a profiled offer, also keeps per-slot remainders in ``left``);
* ``market/ix/o/<start>/<price>/<seq>/<id>``: open offers that still have power, by the slot
  their window starts in, cheapest first, then by arrival;
* ``market/ix/b/<start>/<MAX_PRICE - price>/<seq>/<id>``: open bids with power left, by start
  slot, highest price first, then by arrival;
* ``market/ix/os/<start>``, ``market/ix/bs/<start>``: ``[count, latest end]`` of the offers
  (bids) indexed under a start slot, so a search visits only the start slots that hold orders,
  and a bid skips the start slots whose offers all end before it does (the latest end is an
  upper bound: it is reset when the slot empties, not lowered when an order leaves);
* ``market/ix/e/<end>/<seq>/<id>`` and ``market/ix/w/<owner>/<end>/<seq>/<id>``: every open
  order by end of window, globally and per owner (expiry, the per-member cap);
* ``market/open/<owner>``: the owner's number of open orders;
* ``market/band/<slot>``: pay-as-clear's [highest matched offer price, lowest matched bid price]
  of a slot; ``market/seq`` and ``market/next_match``: counters.

Index keys are their own entries (the value is 1): ``State.scan`` walks them in key order.
Numbers are zero-padded to 16 digits so key order is numeric order.

Why offers are indexed by start slot only: an offer serves a bid when its window covers the
bid's, and a window spans at most ``max_window_slots`` slots (a market parameter), so the offers
that can serve a bid are among those starting in ``[bid end - max window, bid start]``: a bid
visits at most that many start slots, whatever the size of the book.  Each order has a fixed
number of index keys whatever its window length.  The rules and the matches are those of the
in-memory reference :class:`gridledger.market.matching.OrderBook` (tests check them against
each other).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any

from gridledger.chain.contracts.base import State
from gridledger.market.matching import (
    MAX_MATCHES_PER_ORDER,
    PAY_AS_CLEAR,
    MarketParams,
    Match,
    Ranking,
    overloads,
)
from gridledger.market.orders import (
    MAX_PRICE_UTOKEN_PER_KWH,
    Bid,
    Offer,
    OrderError,
    bid_from_dict,
    offer_from_dict,
    power_at,
    slots_of,
)

DEFAULT_HORIZON_MS = 48 * 3_600_000  # an order must end within this of the block time
# An order window spans at most max_window_slots slots: it bounds the start slots a bid
# searches (the K of a K-way merge, measured in bench/market.py) and the per-slot remainders an
# offer record can hold.  The DSO may raise it up to MAX_WINDOW_SLOTS.
DEFAULT_MAX_WINDOW_SLOTS = 16  # 4 h of 15-minute slots
MAX_WINDOW_SLOTS = 96  # 24 h of 15-minute slots
DEFAULT_MAX_OPEN_ORDERS = 256  # per member: 48 h of 15-minute offers and bids, with room
MAX_EXPIRE_PER_TX = 64  # expired orders swept by one market transaction (the rest by the next)
# Resting orders one incoming order reads while matching (with MAX_MATCHES_PER_ORDER, the
# matches it makes): without it, orders that cross on price but cannot serve (a shorter window,
# a pair refused before) would each be read by every later order.  The reference book has no
# such cap (it filters before it sorts); a book holding more unservable crossing orders than
# this is beyond what the tests compare.
MAX_ORDERS_READ_PER_ORDER = 4096

SEQ = "market/seq"
NEXT_MATCH = "market/next_match"
IX = "market/ix/"
OFFER_IX = "market/ix/o/"
BID_IX = "market/ix/b/"
OFFER_STARTS = "market/ix/os/"
BID_STARTS = "market/ix/bs/"
END_IX = "market/ix/e/"
OWNER_IX = "market/ix/w/"
_TOP = "\uffff"  # above every ASCII key: the upper bound of a prefix scan


ORDER_PREFIX = "market/order/"


def order_key(order_id: str) -> str:
    return f"{ORDER_PREFIX}{order_id}"


def open_count_key(owner: str) -> str:
    return f"market/open/{owner}"


def band_key(slot_start_ms: int) -> str:
    return f"market/band/{slot_start_ms}"


def match_id(n: int) -> str:
    """The id of the n-th match (0-based); ``market/next_match`` counts them."""
    return f"m{n}"


def _n(x: int) -> str:
    return f"{x:016d}"


class ChainBook:
    """The order book as a view over chain state (no copy: every read and write is a record)."""

    def __init__(self, state: State, params: MarketParams, max_window_slots: int) -> None:
        self.state = state
        self.params = params
        self.max_window_ms = max_window_slots * params.slot_ms

    # -- reading ---------------------------------------------------------------------------

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        rec: dict[str, Any] | None = self.state.get(order_key(order_id))
        return rec

    def _indexed(self, order_id: str) -> dict[str, Any]:
        """The record of an order that an index key names (they are written together)."""
        rec = self.get_order(order_id)
        if rec is None:
            raise RuntimeError(f"an index names order {order_id}, which has no record")
        return rec

    def open_orders(self, owner: str) -> int:
        return self.state.get_int(open_count_key(owner))

    def clearing_price(self, slot_start_ms: int) -> int | None:
        """Uniform price of a slot under pay-as-clear: the highest offer price matched in it."""
        band = self.state.get(band_key(slot_start_ms))
        return None if band is None else band[0]

    # -- orders ----------------------------------------------------------------------------

    def add_offer(self, offer: Offer, now_ms: int, ranking: Ranking | None = None) -> list[Match]:
        """Put an offer in the book and match it against resting bids, highest price first;
        stops at the first bid priced below the offer or once the offer has no power left."""
        seq = self._admit(offer.offer_id, offer.start_ms, now_ms)
        orec = {"offer": offer.to_dict(), "seq": seq, "left": [], "indexed": False}
        self._track(offer.offer_id, offer.seller, offer.end_ms, seq)
        matches: list[Match] = []
        lo = max(offer.start_ms, now_ms + 1)  # a bid whose delivery has started is not matched
        found = self._merged(BID_STARTS, BID_IX, lo, offer.end_ms - 1)
        for _inv, _seq, bid_id in itertools.islice(found, MAX_ORDERS_READ_PER_ORDER):
            if len(matches) >= MAX_MATCHES_PER_ORDER:
                break
            brec = self._indexed(bid_id)
            bid = bid_from_dict(brec["bid"])
            if bid.max_price_utoken_per_kwh < offer.price_utoken_per_kwh:
                break
            if bid.end_ms > offer.end_ms or not self._compatible(offer, bid, brec):
                continue
            if overloads(ranking, bid.node, offer.node):
                continue
            m = self._fill(offer, orec, bid, brec, bid.max_price_utoken_per_kwh)
            if m is not None:
                matches.append(m)
                self._save_bid(bid, brec)
            if self._exhausted(offer, orec):
                break
        self._save_offer(offer, orec)
        return matches

    def add_bid(self, bid: Bid, now_ms: int, ranking: Ranking | None = None) -> list[Match]:
        """Put a bid in the book and match it against resting offers."""
        seq = self._admit(bid.bid_id, bid.start_ms, now_ms)
        brec = {"bid": bid.to_dict(), "seq": seq, "left_w": bid.power_w, "excluded": []}
        brec["indexed"] = False
        if bid.profile_w is not None:
            brec["left"] = []  # per-slot remainders, only the slots below the profile
        self._track(bid.bid_id, bid.buyer, bid.end_ms, seq)
        self._save_bid(bid, brec)
        return self.match_bid(bid.bid_id, now_ms, ranking)

    def match_bid(self, bid_id: str, now_ms: int, ranking: Ranking | None = None) -> list[Match]:
        """Fill what is left of a bid from resting offers, best seller first.

        Without a ranking for the buyer's bus the offers are read cheapest first and the search
        stops when the bid is filled or the next offer is dearer than its maximum.  With one,
        ranked sellers come first whatever their price, so every offer at or below the maximum
        price that covers the bid's start is read, then sorted."""
        brec = self.get_order(bid_id)
        if brec is None:
            return []
        bid = bid_from_dict(brec["bid"])
        if bid.start_ms <= now_ms or brec["left_w"] == 0:
            return []
        ranks = {r.seller_node: r for r in (ranking or {}).get(bid.node, ())}
        found = itertools.islice(
            self._merged(
                OFFER_STARTS, OFFER_IX, bid.end_ms - self.max_window_ms, bid.start_ms, bid.end_ms
            ),
            MAX_ORDERS_READ_PER_ORDER,
        )
        matches: list[Match] = []
        if not ranks:
            for price, _seq, offer_id in found:
                if price > bid.max_price_utoken_per_kwh or brec["left_w"] == 0:
                    break
                if len(matches) >= MAX_MATCHES_PER_ORDER:
                    break
                orec = self._indexed(offer_id)
                offer = offer_from_dict(orec["offer"])
                if offer.end_ms >= bid.end_ms and self._compatible(offer, bid, brec):
                    self._take(offer, orec, bid, brec, matches)
            self._save_bid(bid, brec)
            return matches
        candidates = []
        for price, seq, offer_id in found:
            if price > bid.max_price_utoken_per_kwh:
                break
            orec = self._indexed(offer_id)
            offer = offer_from_dict(orec["offer"])
            r = ranks.get(offer.node)
            if r is not None and r.overloads:
                continue
            if offer.end_ms >= bid.end_ms and self._compatible(offer, bid, brec):
                rank = (0, r.loss_increase_ppm) if r is not None else (1, 0)
                candidates.append(((*rank, price, seq), offer, orec))
        candidates.sort(key=lambda c: c[0])
        for _key, offer, orec in candidates:
            if brec["left_w"] == 0 or len(matches) >= MAX_MATCHES_PER_ORDER:
                break
            self._take(offer, orec, bid, brec, matches)
        self._save_bid(bid, brec)
        return matches

    def cancel(self, order_id: str, owner: str) -> None:
        """Withdraw an open order; only its owner may.  Matches already made stand."""
        rec = self.get_order(order_id)
        if rec is None:
            raise OrderError(f"no open order {order_id}")
        if _owner(rec) != owner:
            raise OrderError(f"order {order_id} belongs to another account")
        self._forget(order_id, rec)

    def expire(self, now_ms: int, limit: int = MAX_EXPIRE_PER_TX) -> list[str]:
        """Drop up to ``limit`` orders whose window has ended, earliest end first; their ids.
        An expired order can never match again (its window is over), so leaving the rest to
        the next transaction changes no match."""
        return self._expire_range(END_IX, now_ms, limit)

    def expire_owner(self, owner: str, now_ms: int) -> list[str]:
        """Drop every ended order of one owner (bounded by the per-member cap)."""
        return self._expire_range(f"{OWNER_IX}{owner}/", now_ms, None)

    def release(self, match: Match) -> None:
        """A rejected match gives its power back to its orders (if still open) and the pair is
        never matched again."""
        orec, brec = self.get_order(match.offer_id), self.get_order(match.bid_id)
        slot_ms = self.params.slot_ms
        given = match.to_dict()
        if orec is not None:
            offer = offer_from_dict(orec["offer"])
            left = dict(orec["left"])
            for s in slots_of(match.start_ms, match.end_ms, slot_ms):
                left[s] = left.get(s, _full(orec["offer"], s, slot_ms)) + power_at(
                    given, s, slot_ms
                )
            orec["left"] = _sparse(left, orec["offer"], slot_ms)
            self._save_offer(offer, orec)
        if brec is not None:
            bid = bid_from_dict(brec["bid"])
            if orec is not None and match.offer_id not in brec["excluded"]:
                brec["excluded"].append(match.offer_id)
            if "left" in brec:
                left = dict(brec["left"])
                for s in slots_of(match.start_ms, match.end_ms, slot_ms):
                    left[s] = left.get(s, _full(brec["bid"], s, slot_ms)) + power_at(
                        given, s, slot_ms
                    )
                brec["left"] = _sparse(left, brec["bid"], slot_ms)
                brec["left_w"] = max(left.values())
            else:
                brec["left_w"] += match.power_w
            self._save_bid(bid, brec)

    # -- internals -------------------------------------------------------------------------

    def _admit(self, order_id: str, start_ms: int, now_ms: int) -> int:
        if self.state.get_raw(order_key(order_id).encode()) is not None:
            raise OrderError(f"order {order_id} already exists")
        if start_ms <= now_ms:
            raise OrderError(f"window starts at {start_ms}, not after the current time {now_ms}")
        seq = self.state.get_int(SEQ)
        self.state.set_int(SEQ, seq + 1)
        return seq

    def _track(self, order_id: str, owner: str, end_ms: int, seq: int) -> None:
        """The keys every open order has: by end (expiry), by owner, and the owner's count."""
        self.state.set_int(f"{END_IX}{_n(end_ms)}/{_n(seq)}/{order_id}", 1)
        self.state.set_int(f"{OWNER_IX}{owner}/{_n(end_ms)}/{_n(seq)}/{order_id}", 1)
        self.state.set_int(open_count_key(owner), self.open_orders(owner) + 1)

    def _forget(self, order_id: str, rec: dict[str, Any]) -> None:
        """Drop every trace of a closed order: its record and all its index keys."""
        owner = _owner(rec)
        end, seq = _order_of(rec).end_ms, rec["seq"]
        self._set_indexed(rec, False)
        self.state.delete(f"{END_IX}{_n(end)}/{_n(seq)}/{order_id}")
        self.state.delete(f"{OWNER_IX}{owner}/{_n(end)}/{_n(seq)}/{order_id}")
        left = self.open_orders(owner) - 1
        if left:
            self.state.set_int(open_count_key(owner), left)
        else:
            self.state.delete(open_count_key(owner))
        self.state.delete(order_key(order_id))

    def _expire_range(self, prefix: str, now_ms: int, limit: int | None) -> list[str]:
        due = []
        for k in self.state.scan(prefix, f"{prefix}{_n(now_ms + 1)}"):
            due.append(k.rsplit("/", 1)[1])
            if limit is not None and len(due) == limit:
                break
        for order_id in due:
            self._forget(order_id, self._indexed(order_id))
        return due

    def _index_key(self, rec: dict[str, Any]) -> tuple[str, str]:
        """(index key, start-count key) of an order."""
        if "offer" in rec:
            o = rec["offer"]
            key = f"{OFFER_IX}{_n(o['start_ms'])}/{_n(o['price_utoken_per_kwh'])}"
            return f"{key}/{_n(rec['seq'])}/{o['offer_id']}", f"{OFFER_STARTS}{_n(o['start_ms'])}"
        b = rec["bid"]
        inv = MAX_PRICE_UTOKEN_PER_KWH - b["max_price_utoken_per_kwh"]
        key = f"{BID_IX}{_n(b['start_ms'])}/{_n(inv)}/{_n(rec['seq'])}/{b['bid_id']}"
        return key, f"{BID_STARTS}{_n(b['start_ms'])}"

    def _set_indexed(self, rec: dict[str, Any], on: bool) -> None:
        """Put an order in (or take it out of) the matching index, keeping the start counts."""
        if rec["indexed"] == on:
            return
        key, count_key = self._index_key(rec)
        count, latest_end = self.state.get(count_key) or (0, 0)
        if on:
            self.state.set_int(key, 1)
            count, latest_end = count + 1, max(latest_end, _order_of(rec).end_ms)
        else:
            self.state.delete(key)
            count -= 1
        if count:
            self.state.set(count_key, [count, latest_end])
        else:
            self.state.delete(count_key)
        rec["indexed"] = on

    def _save_offer(self, offer: Offer, orec: dict[str, Any]) -> None:
        self._set_indexed(orec, not self._exhausted(offer, orec))
        self.state.set(order_key(offer.offer_id), orec)

    def _save_bid(self, bid: Bid, brec: dict[str, Any]) -> None:
        self._set_indexed(brec, brec["left_w"] > 0)
        self.state.set(order_key(bid.bid_id), brec)

    def _exhausted(self, offer: Offer, orec: dict[str, Any]) -> bool:
        slot_ms = self.params.slot_ms
        if offer.profile_w is None:
            n_slots = (offer.end_ms - offer.start_ms) // slot_ms
            return sum(1 for _s, w in orec["left"] if w == 0) == n_slots
        left = dict(orec["left"])
        return all(
            left.get(s, _full(orec["offer"], s, slot_ms)) == 0
            for s in slots_of(offer.start_ms, offer.end_ms, slot_ms)
        )

    def _merged(
        self,
        starts_prefix: str,
        ix_prefix: str,
        lo_start: int,
        hi_start: int,
        ending_by: int | None = None,
    ) -> Iterator[tuple[int, int, str]]:
        """Index entries (price or inverted price, seq, id) of the orders starting in
        [lo_start, hi_start], merged in that order across start slots, lazily; with
        ``ending_by``, start slots whose orders all end before it are skipped."""
        if hi_start < lo_start:
            return iter(())
        starts = []
        for k in self.state.scan(
            f"{starts_prefix}{_n(max(lo_start, 0))}", f"{starts_prefix}{_n(hi_start + 1)}"
        ):
            if ending_by is None or self.state.get(k)[1] >= ending_by:
                starts.append(k[len(starts_prefix) :])
        return heapq.merge(*(self._entries(f"{ix_prefix}{s}/") for s in starts))

    def _entries(self, prefix: str) -> Iterator[tuple[int, int, str]]:
        for k in self.state.scan(prefix, prefix + _TOP):
            price, seq, order_id = k[len(prefix) :].split("/")
            yield int(price), int(seq), order_id

    def _compatible(self, offer: Offer, bid: Bid, brec: dict[str, Any]) -> bool:
        # the reference's OrderBook._compatible, reading the band and excluded pairs from state
        if offer.offer_id in brec["excluded"] or offer.seller == bid.buyer:
            return False
        if offer.price_utoken_per_kwh > bid.max_price_utoken_per_kwh:
            return False
        if not (offer.start_ms <= bid.start_ms and bid.end_ms <= offer.end_ms):
            return False
        if self.params.pricing == PAY_AS_CLEAR:
            ask, cap = offer.price_utoken_per_kwh, bid.max_price_utoken_per_kwh
            for s in slots_of(bid.start_ms, bid.end_ms, self.params.slot_ms):
                hi, lo = self.state.get(band_key(s)) or (ask, cap)
                if max(hi, ask) > min(lo, cap):
                    return False
        return True

    def _take(
        self, offer: Offer, orec: dict[str, Any], bid: Bid, brec: dict[str, Any], out: list[Match]
    ) -> None:
        m = self._fill(offer, orec, bid, brec, offer.price_utoken_per_kwh)
        if m is not None:
            out.append(m)
            self._save_offer(offer, orec)

    def _fill(
        self,
        offer: Offer,
        orec: dict[str, Any],
        bid: Bid,
        brec: dict[str, Any],
        resting_price: int,
    ) -> Match | None:
        slot_ms = self.params.slot_ms
        slots = slots_of(bid.start_ms, bid.end_ms, slot_ms)
        left = dict(orec["left"])
        offer_left = [left.get(s, _full(orec["offer"], s, slot_ms)) for s in slots]
        if offer.profile_w is None and "left" not in brec:
            # both constant: one power for the whole window (the rule before profiles)
            power_w = min([brec["left_w"], *offer_left])
            if power_w <= 0:
                return None
            amounts = [power_w] * len(slots)
            brec["left_w"] -= power_w
        else:
            # a profile on either side: per slot, the smaller of the two remainders
            bid_left = dict(brec.get("left", []))
            wanted = [bid_left.get(s, _full(brec["bid"], s, slot_ms)) for s in slots]
            amounts = [min(a, b) for a, b in zip(offer_left, wanted, strict=True)]
            if max(amounts) <= 0:
                return None
            rest = {s: w - a for s, w, a in zip(slots, wanted, amounts, strict=True)}
            brec["left"] = _sparse(rest, brec["bid"], slot_ms)
            brec["left_w"] = max(rest.values())
        for s, amount in zip(slots, amounts, strict=True):
            left[s] = left.get(s, _full(orec["offer"], s, slot_ms)) - amount
            if amount and self.params.pricing == PAY_AS_CLEAR:
                band = self.state.get(band_key(s)) or [
                    offer.price_utoken_per_kwh,
                    bid.max_price_utoken_per_kwh,
                ]
                band[0] = max(band[0], offer.price_utoken_per_kwh)
                band[1] = min(band[1], bid.max_price_utoken_per_kwh)
                self.state.set(band_key(s), band)
        orec["left"] = _sparse(left, orec["offer"], slot_ms)
        n = self.state.get_int(NEXT_MATCH)
        self.state.set_int(NEXT_MATCH, n + 1)
        power: int | list[int] = amounts[0] if len(set(amounts)) == 1 else amounts
        return Match.between(match_id(n), offer, bid, power, resting_price, self.params.pricing)


def _full(order: dict[str, Any], slot_start_ms: int, slot_ms: int) -> int:
    """An order's power in a slot before any fill: its profile's entry, or its constant power."""
    return power_at(order, slot_start_ms, slot_ms)


def _sparse(left: dict[int, int], order: dict[str, Any], slot_ms: int) -> list[list[int]]:
    """Per-slot remainders worth storing: only the slots that are not at the order's full power
    in that slot (so an order nobody filled stores none, whatever its window)."""
    return [[s, w] for s, w in sorted(left.items()) if w != _full(order, s, slot_ms)]


def _order_of(rec: dict[str, Any]) -> Offer | Bid:
    return offer_from_dict(rec["offer"]) if "offer" in rec else bid_from_dict(rec["bid"])


def _owner(rec: dict[str, Any]) -> str:
    owner: str = rec["offer"]["seller"] if "offer" in rec else rec["bid"]["buyer"]
    return owner
