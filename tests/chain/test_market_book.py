"""The order book in chain state (contracts/market_book.py) against independent references:
``State.scan`` against a sorted model of the key space, and every match of the state-backed book
against the in-memory reference book (market/matching.py) on random order streams."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedSet

from gridledger.chain.contracts.base import Overlay, State
from gridledger.chain.contracts.market_book import ChainBook, order_key
from gridledger.market.matching import (
    PAY_AS_BID,
    PAY_AS_CLEAR,
    MarketParams,
    OrderBook,
    SellerRank,
)
from gridledger.market.orders import Bid, Offer

# --- State.scan ---------------------------------------------------------------------------------
KEYS = [f"market/ix/{a}/{b:03d}" for a in ("a", "b") for b in range(6)] + ["market/other"]


@settings(max_examples=60, deadline=None)
@given(
    base=st.dictionaries(st.sampled_from(KEYS), st.integers(0, 9), max_size=8),
    block=st.lists(st.tuples(st.sampled_from(KEYS), st.none() | st.integers(0, 9)), max_size=8),
    tx=st.lists(st.tuples(st.sampled_from(KEYS), st.none() | st.integers(0, 9)), max_size=8),
    bounds=st.tuples(st.integers(0, 5), st.integers(0, 6)),
)
def test_scan_equals_a_sorted_model_across_committed_block_and_tx_writes(
    base, block, tx, bounds
) -> None:
    committed = {k.encode(): str(v).encode() for k, v in base.items()}
    ordered = SortedSet(k for k in committed if k.startswith(b"market/ix/"))
    model = dict(base)
    state = State(committed, Overlay(), ordered)
    for writes in (block, tx):
        for k, v in writes:
            if v is None:
                state.delete(k)
                model.pop(k, None)
            else:
                state.set_int(k, v)
                model[k] = v
        if writes is block:
            state.commit_tx()  # the block's earlier transactions: now in the overlay
    lo, hi = f"market/ix/a/{bounds[0]:03d}", f"market/ix/b/{bounds[1]:03d}"
    want = sorted(k for k in model if lo <= k < hi)
    assert list(state.scan(lo, hi)) == want


def test_scan_refuses_keys_that_are_not_kept_sorted() -> None:
    state = State({}, Overlay(), SortedSet())
    try:
        next(state.scan("bal/utoken/", "bal/utoken/~"))
    except ValueError as exc:
        assert "scannable" in str(exc)
    else:
        raise AssertionError("scan over an unsorted prefix was accepted")


# --- the state-backed book against the reference book --------------------------------------------
SLOT = 1_000
HORIZON_SLOTS = 6  # the longest window, and how far ahead orders go
ACCOUNTS = ["a", "b", "c"]
NODES = {"a": 2, "b": 3, "c": 4}
RANKING = {
    3: [SellerRank(2, 500, False), SellerRank(4, -200, True)],
    4: [SellerRank(3, 100, False), SellerRank(2, 100, False)],
}

order_op = st.tuples(
    st.sampled_from(["offer", "bid"]),
    st.sampled_from(ACCOUNTS),
    st.integers(1, 3),  # start: slots after now
    st.integers(1, 3),  # length in slots
    st.integers(1, 5).map(lambda k: k * 10),  # power
    st.integers(1, 6).map(lambda k: k * 10),  # price
)
other_op = st.tuples(st.sampled_from(["cancel", "reject", "tick"]), st.integers(0, 50))
ops = st.lists(st.one_of(order_op, order_op, order_op, other_op), min_size=8, max_size=60)


def _fresh_chain_book(params: MarketParams) -> tuple[ChainBook, State]:
    state = State({}, Overlay(), SortedSet())
    return ChainBook(state, params, HORIZON_SLOTS), state


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=ops,
    pricing=st.sampled_from([PAY_AS_BID, PAY_AS_CLEAR]),
    ranked=st.booleans(),
)
def test_state_book_makes_exactly_the_reference_books_matches(ops, pricing, ranked) -> None:
    params = MarketParams(slot_ms=SLOT, pricing=pricing)
    ref = OrderBook(params)
    chain, state = _fresh_chain_book(params)
    ranking = RANKING if ranked else None
    now, n, made = 10 * SLOT, 0, []
    for op in ops:
        if op[0] in ("offer", "bid"):
            kind, who, start, length, power, price = op
            s = now - now % SLOT + start * SLOT
            e = min(s + length * SLOT, now + HORIZON_SLOTS * SLOT)
            e -= e % SLOT
            if e <= s:
                continue
            oid, n = f"{kind}{n}", n + 1
            if kind == "offer":
                o = Offer(oid, who, NODES[who], power, 0, price, s, e)
                want, got = ref.add_offer(o, now, ranking), chain.add_offer(o, now, ranking)
            else:
                b = Bid(oid, who, NODES[who], power, price + 20, s, e)  # bids mostly cross
                want, got = ref.add_bid(b, now, ranking), chain.add_bid(b, now, ranking)
        elif op[0] == "cancel":
            open_ids = sorted({*ref.offers, *ref.bids})
            if not open_ids:
                continue
            oid = open_ids[op[1] % len(open_ids)]
            owner = ref.offers[oid].seller if oid in ref.offers else ref.bids[oid].buyer
            ref.cancel(oid, owner)
            chain.cancel(oid, owner)
            want = got = []
        elif op[0] == "reject":
            if not made:
                continue
            m = made.pop(op[1] % len(made))
            ref.release(m)
            chain.release(m)
            want = ref.match_bid(m.bid_id, now, ranking)
            got = chain.match_bid(m.bid_id, now, ranking)
        else:
            now += (op[1] % 3) * SLOT + 1
            want, got = ref.expire(now), chain.expire(now, limit=1_000)
            assert sorted(got) == sorted(want)
            state.commit_tx()
            continue
        state.commit_tx()
        assert [m.to_dict() for m in got] == [m.to_dict() for m in want]
        made += got
        for oid in ref.offers:  # what is left of each open offer, slot by slot
            left = dict(state.get(order_key(oid))["left"])
            assert {s: left.get(s, ref.offers[oid].power_w) for s in ref.offer_left_w[oid]} == (
                ref.offer_left_w[oid]
            )
        for oid in ref.bids:
            assert state.get(order_key(oid))["left_w"] == ref.bid_left_w[oid]
    for s in ref.band:
        assert chain.clearing_price(s) == ref.clearing_price(s)
    open_ids = {*ref.offers, *ref.bids}
    assert all(
        state.get(order_key(f"{k}{i}")) is None
        for k in ("offer", "bid")
        for i in range(n)
        if f"{k}{i}" not in open_ids
    )


def test_a_long_window_costs_the_same_keys_as_a_short_one() -> None:
    """An order's state is its record and a fixed set of index keys, whatever its length: a
    48-slot offer writes as many keys, of the same size, as a one-slot offer (both end times
    have the same number of digits)."""
    sizes = []
    for slots in (1, 48):
        state = State({}, Overlay(), SortedSet())
        book = ChainBook(state, MarketParams(slot_ms=SLOT), 48)
        book.add_offer(Offer("o", "a", 2, 10, 0, 5, 10 * SLOT, (10 + slots) * SLOT), 0)
        writes = state._journal  # this transaction's writes
        sizes.append((len(writes), sum(len(k) + len(v or b"") for k, v in writes.items())))
    assert sizes[0] == sizes[1]


def test_partial_fills_store_remainders_only_for_the_slots_matched() -> None:
    state = State({}, Overlay(), SortedSet())
    book = ChainBook(state, MarketParams(slot_ms=SLOT), 48)
    book.add_offer(Offer("o", "a", 2, 100, 0, 5, SLOT, 41 * SLOT), 0)
    (m,) = book.add_bid(Bid("b", "b", 3, 30, 9, 3 * SLOT, 5 * SLOT), 0)
    assert m.power_w == 30
    assert state.get(order_key("o"))["left"] == [[3 * SLOT, 70], [4 * SLOT, 70]]
