"""The state-backed order book with power profiles, on random streams of profiled and constant
offers and bids (hypothesis): power is conserved per slot, every fill respects both orders'
per-slot power, a profiled bid leaves no slot where it and a compatible offer still cross, and
a rejected match gives each slot's power back."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedSet

from gridledger.chain.contracts.base import Overlay, State
from gridledger.chain.contracts.market_book import ChainBook
from gridledger.market.matching import PAY_AS_BID, MarketParams, Match
from gridledger.market.orders import Bid, Offer, power_at, slots_of

SLOT = 900_000
NOW = 10 * SLOT
WINDOW_SLOTS = 4

power = st.integers(0, 4).map(lambda k: k * 1_000)
order = st.tuples(
    st.sampled_from(["offer", "bid"]),
    st.sampled_from(["a", "b", "c"]),  # owner
    st.integers(1, 3),  # start slot after now
    st.integers(1, WINDOW_SLOTS),  # length in slots
    st.lists(power, min_size=WINDOW_SLOTS, max_size=WINDOW_SLOTS),  # profile (cut to length)
    st.booleans(),  # profiled, or constant at the profile's peak
    st.integers(1, 4).map(lambda k: k * 10),  # price
)
stream = st.lists(st.one_of(order, order, order, st.just(("reject",))), min_size=4, max_size=40)


def _full(order: Offer | Bid, s: int) -> int:
    return power_at(order.to_dict(), s, SLOT)


def _left(rec: dict, order: Offer | Bid, s: int) -> int:
    stored = dict(rec.get("left", []))
    if "bid" in rec and "left" not in rec:
        return rec["left_w"]  # a constant bid not filled per slot: one remainder for all
    return stored.get(s, _full(order, s))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=stream)
def test_profiled_fills_conserve_power_slot_by_slot(ops) -> None:
    state = State({}, Overlay(), SortedSet())
    book = ChainBook(state, MarketParams(slot_ms=SLOT, pricing=PAY_AS_BID), WINDOW_SLOTS)
    orders: dict[str, Offer | Bid] = {}
    live: list[Match] = []
    for n, op in enumerate(ops):
        if op[0] == "reject":
            if live:
                book.release(live.pop(0))
            continue
        kind, who, start, length, shape, profiled, price = op
        shape = shape[:length]
        if max(shape) == 0:
            continue
        s, e = NOW + start * SLOT, NOW + (start + length) * SLOT
        profile = tuple(shape) if profiled else None
        oid = f"{kind}{n}"
        if kind == "offer":
            o = Offer(oid, who, 1, max(shape), 0, price, s, e, profile_w=profile)
            orders[oid], made = o, book.add_offer(o, NOW)
        else:
            b = Bid(oid, who, 2, max(shape), price + 10, s, e, profile_w=profile)
            orders[oid], made = b, book.add_bid(b, NOW)
        live += made
        for m in made:
            offer, bid = orders[m.offer_id], orders[m.bid_id]
            assert (m.start_ms, m.end_ms) == (bid.start_ms, bid.end_ms)
            assert offer.price_utoken_per_kwh <= bid.max_price_utoken_per_kwh
            got = [power_at(m.to_dict(), t, SLOT) for t in slots_of(m.start_ms, m.end_ms, SLOT)]
            assert max(got) > 0 and min(got) >= 0 and m.power_w == max(got)
            assert (m.profile_w is None) == (len(set(got)) == 1)
        # conservation: each open order's remainder + what its live matches take = its power
        taken: dict[tuple[str, int], int] = defaultdict(int)
        for m in live:
            for t in slots_of(m.start_ms, m.end_ms, SLOT):
                w = power_at(m.to_dict(), t, SLOT)
                taken[m.offer_id, t] += w
                taken[m.bid_id, t] += w
        for oid, o in orders.items():
            rec = book.get_order(oid)
            if rec is None:
                continue
            for t in slots_of(o.start_ms, o.end_ms, SLOT):
                left = _left(rec, o, t)
                assert left >= 0
                assert left + taken[oid, t] == _full(o, t), (oid, t)
        # a profiled bid just posted crosses no compatible offer in any slot any more
        if kind == "bid" and profile is not None:
            brec = book.get_order(oid)
            for xid, x in orders.items():
                xrec = book.get_order(xid)
                if not isinstance(x, Offer) or xrec is None or x.seller == who:
                    continue
                if x.price_utoken_per_kwh > price + 10 or not (x.start_ms <= s and e <= x.end_ms):
                    continue
                for t in slots_of(s, e, SLOT):
                    assert min(_left(brec, orders[oid], t), _left(xrec, x, t)) == 0, (xid, t)
