"""The work of one market order is bounded, whatever the book holds (docs/ledger.md, bounds).

The abuse: a member fills the book with thousands of tiny resting orders, so that one order
crossing all of them would make thousands of matches (and write thousands of records) in one
transaction.  One incoming order makes at most ``MAX_MATCHES_PER_ORDER`` matches; what is left
of it rests in the book.  Checked on the real ledger (contracts, solo engine, SQLite) and, on the
state book, against the in-memory reference book's matches."""

from __future__ import annotations

from pathlib import Path

from sortedcontainers import SortedSet

from gridledger.chain.contracts.base import Overlay, State
from gridledger.chain.contracts.market import NEXT_MATCH, PENDING, match_count, order_key
from gridledger.chain.contracts.market_book import MAX_ORDERS_READ_PER_ORDER, ChainBook
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain
from gridledger.market.matching import MAX_MATCHES_PER_ORDER, MarketParams, OrderBook
from gridledger.market.orders import Bid, Offer

SLOT = 900_000
T = 1_800_000_000_000 // SLOT * SLOT
CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]
TINY = 2_000  # resting orders, far more than the cap


def key(name: str) -> KeyPair:
    return KeyPair.from_seed(name.encode().ljust(32, b"\0"))


VAL, DSO, SPAMMER, TRADER = key("validator"), key("dso"), key("spammer"), key("trader")


def _chain(home: Path) -> LocalChain:
    members = [{"pub_key": DSO.pub_hex, "role": "dso", "name": "dso"}] + [
        {"pub_key": k.pub_hex, "role": "prosumer", "name": n, "bus": b}
        for n, k, b in (("spammer", SPAMMER, 3), ("trader", TRADER, 2))
    ]
    balances = [
        {"account": k.pub_hex, "denom": "utoken", "amount": 10**12} for k in (SPAMMER, TRADER)
    ]
    genesis = make_genesis(
        "bounds", T - 10 * SLOT, [(VAL.pub_hex, 1)], members, balances, CONTRACTS
    )
    chain = LocalChain(home, genesis, VAL, T - 10 * SLOT)
    # the DSO lets one member hold thousands of open orders: the worst case for the book
    out = chain.submit(DSO, "market.configure", {"max_open_orders": 10 * TINY})
    chain.produce(T - 9 * SLOT)
    assert chain.result(out.txid).ok, chain.result(out.txid).log
    return chain


def _order(kind: str, who: KeyPair, node: int, power_w: int, price: int) -> tuple[str, dict]:
    body = {"node": node, "power_w": power_w, "start_ms": T, "end_ms": T + SLOT}
    if kind == "market.offer":
        body |= {"regulation_var": 0, "price_utoken_per_kwh": price}
    else:
        body |= {"max_price_utoken_per_kwh": price}
    return kind, body


def _flood_then_cross(chain: LocalChain, rest: str, cross: str) -> tuple[int, dict]:
    for i in range(TINY):
        kind, body = _order(rest, SPAMMER, 3, 10, 200_000 + (i % 7))
        assert chain.submit(SPAMMER, kind, body).ok
    while len(chain.mempool):
        chain.produce(chain.now_ms + 1000)
    before = match_count(chain.state(NEXT_MATCH))
    kind, body = _order(cross, TRADER, 2, 10 * TINY, 250_000 if cross == "market.bid" else 1)
    out = chain.submit(TRADER, kind, body)
    chain.produce(chain.now_ms + 1000)
    res = chain.result(out.txid)
    assert res.ok, res.log
    made = match_count(chain.state(NEXT_MATCH)) - before
    return made, chain.state(order_key(out.txid))  # an order's id is its transaction's


def test_one_offer_crossing_thousands_of_tiny_bids_makes_at_most_the_cap(tmp_path: Path) -> None:
    chain = _chain(tmp_path)
    made, rec = _flood_then_cross(chain, "market.bid", "market.offer")
    assert made == MAX_MATCHES_PER_ORDER
    assert len(chain.state(PENDING)) == MAX_MATCHES_PER_ORDER
    # the rest of the offer rests in the book: 10 W went to each match
    assert rec is not None and rec["left"] == [[T, 10 * TINY - 10 * MAX_MATCHES_PER_ORDER]]
    chain.close()


def test_one_bid_crossing_thousands_of_tiny_offers_makes_at_most_the_cap(tmp_path: Path) -> None:
    chain = _chain(tmp_path)
    made, rec = _flood_then_cross(chain, "market.offer", "market.bid")
    assert made == MAX_MATCHES_PER_ORDER
    assert rec is not None and rec["left_w"] == 10 * TINY - 10 * MAX_MATCHES_PER_ORDER
    chain.close()


def test_the_cap_is_the_reference_books_rule_too() -> None:
    """The state book and the reference book make the same capped matches, both ways."""
    params = MarketParams(slot_ms=SLOT)
    for flood, cross in (("bid", "offer"), ("offer", "bid")):
        ref = OrderBook(params)
        chain = ChainBook(State({}, Overlay(), SortedSet()), params, 16)
        for i in range(MAX_MATCHES_PER_ORDER + 50):
            if flood == "bid":
                o = Bid(f"b{i}", "s", 3, 10, 200 + i % 5, T, T + SLOT)
                assert ref.add_bid(o, 0) == chain.add_bid(o, 0) == []
            else:
                o = Offer(f"o{i}", "s", 3, 10, 0, 200 - i % 5, T, T + SLOT)
                assert ref.add_offer(o, 0) == chain.add_offer(o, 0) == []
        if cross == "offer":
            x = Offer("x", "t", 2, 10**6, 0, 100, T, T + SLOT)
            want, got = ref.add_offer(x, 0), chain.add_offer(x, 0)
        else:
            x = Bid("x", "t", 2, 10**6, 300, T, T + SLOT)
            want, got = ref.add_bid(x, 0), chain.add_bid(x, 0)
        assert len(got) == MAX_MATCHES_PER_ORDER
        assert [m.to_dict() for m in got] == [m.to_dict() for m in want]


def test_unservable_crossing_orders_cost_a_bounded_read() -> None:
    """Bids that cross on price but cannot be served (their window is longer than the offer's)
    are read at most MAX_ORDERS_READ_PER_ORDER times by one offer: a servable bid behind more of
    them than that is left for a later order (or its own re-match)."""
    params = MarketParams(slot_ms=SLOT)
    book = ChainBook(State({}, Overlay(), SortedSet()), params, 16)
    for i in range(MAX_ORDERS_READ_PER_ORDER):
        book.add_bid(Bid(f"long{i}", "s", 3, 10, 300, T, T + 2 * SLOT), 0)
    book.add_bid(Bid("servable", "s", 3, 10, 200, T, T + SLOT), 0)
    assert book.add_offer(Offer("x", "t", 2, 100, 0, 100, T, T + SLOT), 0) == []
    # with one unservable bid fewer, the same offer reaches the servable bid
    book = ChainBook(State({}, Overlay(), SortedSet()), params, 16)
    for i in range(MAX_ORDERS_READ_PER_ORDER - 1):
        book.add_bid(Bid(f"long{i}", "s", 3, 10, 300, T, T + 2 * SLOT), 0)
    book.add_bid(Bid("servable", "s", 3, 10, 200, T, T + SLOT), 0)
    (m,) = book.add_offer(Offer("x", "t", 2, 100, 0, 100, T, T + SLOT), 0)
    assert m.bid_id == "servable"
