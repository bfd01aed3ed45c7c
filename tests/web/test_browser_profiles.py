"""A profiled offer in the web app (real Chromium): the prosumer's open orders show the kW per
slot, and the market view's book shows each slot's own power."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from gridledger.chain.contracts.market import order_key

from .conftest import SLOT_MS, chromium_or_skip
from .test_browser import import_key, open_app

chromium_or_skip(collecting=True)

pytestmark = pytest.mark.xdist_group("web-browser-profiles")

PROFILE_W = [0, 1_500, 3_000, 3_000, 1_500, 0]


def test_a_profiled_offer_shows_its_power_per_slot(live, page: Page) -> None:
    now = live.client.time_ms()
    start = (now // SLOT_MS + 40) * SLOT_MS  # well ahead, and priced so nothing matches it
    offer = live.client.submit(
        live.key("DG3"),
        "market.offer",
        {
            "node": 3,
            "power_w": max(PROFILE_W),
            "regulation_var": 0,
            "price_utoken_per_kwh": 50_000_000,
            "start_ms": start,
            "end_ms": start + len(PROFILE_W) * SLOT_MS,
            "profile_w": PROFILE_W,
        },
    )
    assert offer.ok, offer.log
    deadline = time.monotonic() + 10
    while live.state(order_key(offer.txid)) is None:
        assert time.monotonic() < deadline, "the offer did not reach the book"
        time.sleep(0.1)
    errors = open_app(page, live.url)
    import_key(page, live, "DG3")
    expect(page.get_by_test_id(f"order-kw-{offer.txid[:16]}")).to_have_text(
        "0,1.5,3,3,1.5,0", timeout=15_000
    )
    page.click("nav a[data-view=market]")
    for k, w in enumerate(PROFILE_W):
        page.select_option("#book-slot", str(start + k * SLOT_MS))
        row = page.locator("#book tr", has_text=offer.txid[:10])
        # columns: side, order, bus, kW open, token/kWh (the peak would show 3 in every slot)
        expect(row.locator("td").nth(3)).to_have_text(f"{w / 1000:g}")
    assert errors == []
