"""The web app in a real browser (system Chromium via pytest-playwright), doing what a person
does: import a key, place an offer, watch it match, get certified and paid; check the DSO map's
colours against the certificate's voltages; verify a proof and see a tampered one refused;
get clear errors for bad input."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from gridledger.chain.contracts.market import order_key
from gridledger.chain.proofs import verify_proof

from .conftest import SLOT_MS, TIMEZONE, chromium_or_skip

chromium_or_skip(collecting=True)  # one skip line when absent (under CI=true: each test fails)

pytestmark = pytest.mark.xdist_group("web-browser")  # one live chain per module, one worker


def local_input(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(TIMEZONE)).strftime("%Y-%m-%dT%H:%M:%S")


def voltage_colour(v: float) -> str:
    """docs/ui.md's bus colour, written independently of the app's JavaScript."""
    low, mid, high = (215, 48, 39), (255, 255, 191), (69, 117, 180)
    t = max(-1.0, min(1.0, (v - 1) / 0.02))
    end = low if t < 0 else high
    c = [math.floor(m + (e - m) * abs(t) + 0.5) for m, e in zip(mid, end, strict=True)]
    return f"rgb({c[0]}, {c[1]}, {c[2]})"


def open_app(page: Page, url: str) -> list[str]:
    """Open the app; returns the list its uncaught script errors will be collected into."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=15_000)
    return errors


def import_key(page: Page, live, name: str) -> None:
    page.set_input_files("#keyfile", str(live.home / "keys" / f"{name}.json"))
    expect(page.locator("#account")).to_contain_text(f"{name} (prosumer", timeout=10_000)


def local_time_shown(ms: int) -> str:
    """How the app (locale en-US) prints an instant: MM/DD/YYYY, hh:mm:ss AM, local zone."""
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(TIMEZONE)).strftime("%m/%d/%Y, %I:%M:%S %p")


def shown_amount(locator) -> int:
    """A payment cell ("+1.234567" / "−0.0458" token) in utoken."""
    text = locator.inner_text().replace(",", "").replace("−", "-").lstrip("+")
    return round(float(text) * 1e6)


def map_colours(page: Page) -> dict[str, str]:
    pairs = page.evaluate(
        "window.gridledgerMap.nodes().map(n => [n.id(), n.style('background-color')])"
    )
    return {k: v.replace(",", ", ").replace(",  ", ", ") for k, v in pairs}


def test_offer_matched_certified_paid_then_map_and_proof(live, page: Page) -> None:
    dg2, l5 = live.key("DG2").pub_hex, live.key("L5").pub_hex
    now = live.client.time_ms()
    start = (now // SLOT_MS + 5) * SLOT_MS  # 20-25 s ahead: time to match and certify
    bid = live.client.submit(
        live.key("L5"),
        "market.bid",
        {
            "node": 5,
            "power_w": 300_000,
            "max_price_utoken_per_kwh": 240_000,
            "start_ms": start,
            "end_ms": start + SLOT_MS,
        },
    )
    assert bid.ok, bid.log
    deadline = time.monotonic() + 10
    while live.state(order_key(bid.txid)) is None:
        assert time.monotonic() < deadline, "the bid did not reach the book"
        time.sleep(0.1)

    errors = open_app(page, live.url)
    import_key(page, live, "DG2")
    page.select_option("#order-kind", "offer")
    page.fill("#order-power", "300")
    page.fill("#order-price", "0.2")
    page.fill("#order-start", local_input(start))
    page.fill("#order-end", local_input(start + SLOT_MS))
    page.click("#order-submit")
    expect(page.locator("#order-result")).to_contain_text("placed in block", timeout=20_000)

    # matched at once against the bid, then certified by the DSO agent before delivery
    status = page.get_by_test_id("status-m0")
    expect(status).to_contain_text("approved", timeout=30_000)
    rec = live.state("market/match/m0")
    m = rec["match"]
    assert (m["seller"], m["buyer"], m["power_w"]) == (dg2, l5, 300_000)
    assert (m["start_ms"], m["end_ms"]) == (start, start + SLOT_MS)  # local time stored as UTC
    assert m["price_utoken_per_kwh"] == 240_000  # pay-as-bid: the bid's 0.24 token/kWh

    # delivered, metered, settled: the energy payment shows up, equal to the chain's
    pay = page.get_by_test_id("pay-m0-energy")
    expect(pay).to_be_visible(timeout=40_000)
    done = live.state(f"settle/done/m0/{start}")
    energy = next(p for p in done["payments"] if p["kind"] == "energy")
    assert energy["payee"] == dg2 and energy["amount"] > 0
    assert shown_amount(pay) == energy["amount"]
    expect(status).to_contain_text("settled", timeout=10_000)
    assert not live.errors, live.errors
    # DG2 also regulates voltage for this trade: its reactive pay; the buyer's loss charge
    reactive = [p for p in done["payments"] if p["kind"] == "reactive" and p["payee"] == dg2]
    assert len(reactive) == 1 and reactive[0]["amount"] > 0
    assert shown_amount(page.get_by_test_id("pay-m0-reactive")) == reactive[0]["amount"]
    import_key(page, live, "L5")
    loss = next(p for p in done["payments"] if p["kind"] == "loss" and p["payer"] == l5)
    assert shown_amount(page.get_by_test_id("pay-m0-loss")) == -loss["amount"]

    # DSO map of the certificate's interval, after and before the R-OPF
    doc = json.loads((live.home / "dso" / "certificates" / "m0.json").read_text())
    ev = doc["intervals"][0]["evaluation"]
    page.click("nav a[data-view=dso]")
    page.select_option("#dso-match", "m0")
    expect(page.locator("#dso-digest")).to_contain_text("matches the digest on chain")
    expect(page.locator("#dso-map")).to_have_attribute(
        "data-drawn",
        re.compile(r'"match":"m0".*"before":false'),
        timeout=20_000,  # the node loads the grid case (pandapower) on first use
    )
    after = map_colours(page)
    assert after == {b: voltage_colour(v) for b, v in ev["bus_vm_pu"].items()}
    for b, v in ev["bus_vm_pu"].items():
        expect(page.get_by_test_id(f"vm-{b}")).to_have_text(f"{v:.5f}")
    page.get_by_label("before R-OPF").check()
    expect(page.locator("#dso-map")).to_have_attribute("data-drawn", re.compile('"before":true'))
    before = map_colours(page)
    assert before == {b: voltage_colour(v) for b, v in ev["bus_vm_pu_without_ropf"].items()}
    assert before != after  # the R-OPF moved the voltages visibly
    expect(page.locator("#dso-setpoints")).to_contain_text("ΔQ kvar")
    expect(page.locator("#dso-losses")).to_contain_text("m0")

    # the market view: the slot's matched power and price
    page.click("nav a[data-view=market]")
    row = page.locator("#market-table tr", has_text=local_time_shown(start))
    expect(row).to_contain_text("300")
    expect(row).to_contain_text("0.2400")

    # the explorer: the offer's block, its validator signature checked in the browser
    offer_height = live.client.http.get(f"/txs/{m['offer_id']}").json()["height"]
    page.click("nav a[data-view=explorer]")
    page.fill("#block-height", str(offer_height))
    page.keyboard.press("Enter")
    expect(page.locator("#block-detail")).to_contain_text(f"Block {offer_height}")
    expect(page.locator("#block-detail")).to_contain_text("valid")
    expect(page.locator("#block-detail")).not_to_contain_text("INVALID")

    # the offer's inclusion proof, verified in the browser; then tampered with and refused
    ok, why = verify_proof(live.client.http.get(f"/proofs/tx/{m['offer_id']}").json())
    assert ok, why  # the reference verifier agrees the proof is good
    page.fill("#proof-txid", m["offer_id"])
    page.click("#proof-fetch")
    verdict = page.locator("#proof-verdict")
    expect(verdict).to_have_attribute("data-verdict", "verified", timeout=10_000)
    expect(verdict).to_contain_text("VERIFIED")
    expect(page.locator("#proof-steps")).to_contain_text("signature verifies")
    page.click("#proof-tamper")
    page.click("#proof-verify")
    expect(verdict).to_have_attribute("data-verdict", "refused")
    expect(page.locator("#proof-steps")).to_contain_text("NOT in the header's")
    assert errors == []


def test_errors_for_bad_key_files_prices_times_and_refused_txs(live, page: Page, tmp_path) -> None:
    from gridledger.chain.keys import KeyPair, save_key

    open_app(page, live.url)
    bad = tmp_path / "notes.json"
    bad.write_text("my shopping list")
    page.set_input_files("#keyfile", str(bad))
    expect(page.locator("#key-error")).to_contain_text("not a gridledger key file: it is not JSON")
    damaged = json.loads((live.home / "keys" / "DG3.json").read_text())
    damaged["pub_key"] = KeyPair.generate().pub_hex
    (tmp_path / "damaged.json").write_text(json.dumps(damaged))
    page.set_input_files("#keyfile", str(tmp_path / "damaged.json"))
    expect(page.locator("#key-error")).to_contain_text("public key does not match its seed")
    save_key(tmp_path / "sealed.json", KeyPair.generate(), "prosumer", passphrase="pw")
    page.set_input_files("#keyfile", str(tmp_path / "sealed.json"))
    expect(page.locator("#key-error")).to_contain_text("encrypted with a passphrase")

    import_key(page, live, "DG3")
    expect(page.locator("#key-error")).to_have_text("")
    seq = live.client.http.get(f"/accounts/{live.key('DG3').pub_hex}").json()["next_seq"]
    start = (live.client.time_ms() // SLOT_MS + 4) * SLOT_MS
    page.fill("#order-power", "100")
    page.fill("#order-price", "2000000")
    page.fill("#order-start", local_input(start))
    page.fill("#order-end", local_input(start + SLOT_MS))
    page.click("#order-submit")
    expect(page.locator("#order-error")).to_contain_text(
        "price must be between 0 and 1,000,000 token/kWh, got 2000000"
    )
    page.fill("#order-price", "0.1")
    page.fill("#order-start", local_input(start + 1000))
    page.click("#order-submit")
    expect(page.locator("#order-error")).to_contain_text("must be on 5 s market slot boundaries")
    page.fill("#order-start", local_input(start - 600_000))
    page.click("#order-submit")
    expect(page.locator("#order-error")).to_contain_text("is not after the chain's time")
    # nothing was signed or sent for bad input
    assert live.client.http.get(f"/accounts/{live.key('DG3').pub_hex}").json()["next_seq"] == seq

    # a bid whose escrow exceeds the balance: the node refuses it and the app shows its reason
    page.select_option("#order-kind", "bid")
    page.fill("#order-power", "9000000")
    page.fill("#order-price", "1000")
    page.fill("#order-start", local_input(start))
    page.fill("#order-end", local_input(start + SLOT_MS))
    page.click("#order-submit")
    expect(page.locator("#order-error")).to_contain_text("INSUFFICIENT_FUNDS", timeout=20_000)
    expect(page.locator("#order-error")).to_contain_text("bid needs")


def test_a_trade_the_grid_cannot_carry_is_refused_with_the_dsos_reasons(live, page: Page) -> None:
    """20 MW from bus 3 to bus 7 of a microgrid of 1.5 MVA generators: the DSO's certificate
    rejects it, and the seller sees the rejection with the reasons recorded on chain."""
    l7 = live.key("L7").pub_hex
    start = (live.client.time_ms() // SLOT_MS + 5) * SLOT_MS
    window = {"start_ms": start, "end_ms": start + SLOT_MS}
    bid = live.client.submit(
        live.key("L7"),
        "market.bid",
        {"node": 7, "power_w": 20_000_000, "max_price_utoken_per_kwh": 100_000, **window},
    )
    assert bid.ok, bid.log
    open_app(page, live.url)
    import_key(page, live, "DG3")
    page.fill("#order-power", "20000")
    page.fill("#order-price", "0.1")
    page.fill("#order-start", local_input(start))
    page.fill("#order-end", local_input(start + SLOT_MS))
    page.click("#order-submit")
    expect(page.locator("#order-result")).to_contain_text("placed in block", timeout=20_000)
    deadline = time.monotonic() + 30
    while True:
        recs = [
            x["value"]
            for x in live.client.http.get("/web/state", params={"prefix": "market/match/"}).json()[
                "items"
            ]
        ]
        rec = next((r for r in recs if r["match"]["buyer"] == l7), None)
        if rec is not None and rec["status"] != "pending":
            break
        assert time.monotonic() < deadline, "the DSO did not certify the trade"
        time.sleep(0.2)
    assert rec["status"] == "rejected" and rec["reasons"], rec
    status = page.get_by_test_id(f"status-{rec['match']['match_id']}")
    expect(status).to_have_text("rejected: " + "; ".join(rec["reasons"]), timeout=10_000)
    expect(status).to_have_class("bad")


def test_phone_width_keyboard_and_labels(live, page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_app(page, live.url)
    for _ in range(12):  # Tab from the top of the page to the Market link, then Enter
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.view") == "market":
            break
    page.keyboard.press("Enter")
    expect(page.locator("#view-market")).to_be_visible()
    expect(page.locator("#view-prosumer")).to_be_hidden()
    for view in ("prosumer", "market", "dso", "scheduling", "explorer"):
        page.click(f"nav a[data-view={view}]")
        expect(page.locator(f"#view-{view}")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 391, f"{view} view is {overflow} px wide at 390 px"
        unlabelled = page.evaluate(
            """view => [...document.querySelectorAll(
                   `#view-${view} input, #view-${view} select, #view-${view} textarea`)]
                 .filter(e => !e.labels || !e.labels.length).map(e => e.id || e.name)""",
            view,
        )
        assert unlabelled == [], f"{view}: fields without a label: {unlabelled}"


def test_the_app_beside_a_remote_node_through_gridledger_web(live, page: Page) -> None:
    """`gridledger web --node URL`: the app from the proxy, the API and the event stream
    through it."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "gridledger.cli", "web", "--node", live.url]
    proc = subprocess.Popen(
        [*cmd, "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        url = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        open_app(page, url)
        expect(page.locator("#chain-status")).to_contain_text("gridledger-demo")
        expect(page.locator("#live li").first).to_contain_text("block", timeout=10_000)
        import_key(page, live, "DG4")
        expect(page.get_by_test_id("balance")).to_contain_text("token")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
