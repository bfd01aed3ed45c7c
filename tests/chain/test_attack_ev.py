"""Attacks on the EV contract at its edges: exact block times, the largest amounts, an escrow
the payer cannot fund, a settlement undone by a certificate that is not the charge point's.

Each attack goes through the mempool and a block on the real ledger app of
``test_ev_contract.py``. The mempool's check runs the contract at the last block time; the
block then executes it at its own time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_ev_contract import HALF_HOUR_S, KEYS, TOKEN, V2G, Ev, H, T

from gridledger.chain import codes
from gridledger.chain.contracts import ev
from gridledger.chain.contracts.certificates import rec_key
from gridledger.chain.tx import decode_tx
from gridledger.market.orders import MAX_PRICE_UTOKEN_PER_KWH


@pytest.fixture
def chain_ev(tmp_path: Path) -> Ev:
    """The EV network, with a guard on the admission cache: the decoded transaction the mempool
    check caches is the very object the block executes again, so a contract that changed its
    payload in place would make the block's result depend on whether this node had admitted
    the transaction. After every execution its payload must still be its bytes' payload."""
    net = Ev(tmp_path)
    app = net.chain.app
    real = app._execute
    executed: list[str] = []

    def guarded(tx, *args, **kwargs):
        out = real(tx, *args, **kwargs)
        assert tx.payload == decode_tx(tx.raw).payload, f"{tx.type} changed its payload"
        executed.append(tx.type)
        return out

    app._execute = guarded
    yield net
    assert "ev.authorise" in executed  # the guard saw the contract run


def test_expiry_at_the_exact_block_time(chain_ev: Ev) -> None:
    net, c = chain_ev, chain_ev.chain
    expiry = T + 2 * H
    late = net.authorise("alice", T, cp="cp2", expiry_ms=expiry).txid
    sid = net.authorise("alice", T + 1000, expiry_ms=expiry).txid
    net.open(sid, T + 60_000)
    assert net.reading(sid, net.session(sid)["opened_ms"], 2_000).ok
    c.produce(expiry - 1)
    # one ms before the expiry, nobody may expire the session yet
    out = c.submit(KEYS["alice"], "ev.expire", {"session": sid})
    assert out.code == codes.INVALID_PAYLOAD and "expires at" in out.log
    # admitted at expiry - 1, executed in the block at exactly the expiry: too late to open
    out = c.submit(KEYS["cp2"], "ev.open", {
        "session": late, "meter": net.pub("meter-cp2"), "price_utoken_per_kwh": 1,
    })  # fmt: skip
    assert out.ok, out.log
    c.produce(expiry)
    out = c.result(out.txid)
    assert out.code == codes.INVALID_PAYLOAD and "expired" in out.log
    assert net.session(late)["status"] == "authorised"
    # at exactly the expiry: a reading ending at the expiry still counts, then the driver
    # expires the session (both checked at block time == expiry, executed in the next block)
    start = expiry - HALF_HOUR_S * 1000
    last = ev.Reading(sid, net.pub("meter-cp"), start, HALF_HOUR_S, 1_000, 0).to_payload()
    read = c.submit(KEYS["meter-cp"], "ev.reading", last)
    end = c.submit(KEYS["alice"], "ev.expire", {"session": sid})
    assert read.ok and end.ok, (read.log, end.log)
    c.produce(expiry + 1)
    assert c.result(read.txid).ok and c.result(end.txid).ok
    s = net.session(sid)
    assert (s["status"], s["delivered_wh"], s["paid_utoken"]) == ("expired", 3_000, 750_000)
    # nothing more is metered into it
    more = ev.Reading(sid, net.pub("meter-cp"), expiry, HALF_HOUR_S, 1, 0).to_payload()
    out = net.run("meter-cp", "ev.reading", more, expiry + HALF_HOUR_S * 1000)
    assert out.code == codes.INVALID_PAYLOAD and "expired, not open" in out.log
    net.assert_supply_kept()


def test_the_largest_amounts_escrow_exactly_or_are_refused_whole(chain_ev: Ev) -> None:
    net = chain_ev
    biggest = {"max_energy_wh": ev.MAX_SESSION_WH, "max_price_utoken_per_kwh": 10**12}
    assert MAX_PRICE_UTOKEN_PER_KWH == 10**12
    # 2 MWh at 10^12 utoken/kWh escrows 2 x 10^15 utoken: alice holds 5 x 10^7
    before = (net.bal("alice"), net.bal(ev.ESCROW))
    out = net.authorise("alice", T, **biggest)
    assert out.code == codes.INSUFFICIENT_FUNDS, out.log
    assert (net.bal("alice"), net.bal(ev.ESCROW)) == before
    assert net.chain.state(ev.active_key(net.pub("alice"))) is None
    # one past either cap is a payload error naming the field
    for field, value in (("max_energy_wh", ev.MAX_SESSION_WH + 1),
                         ("max_price_utoken_per_kwh", 10**12 + 1),
                         ("max_energy_wh", 2**64), ("max_energy_wh", -1)):  # fmt: skip
        out = net.authorise("alice", T + 1000, **{field: value})
        assert out.code == codes.INVALID_PAYLOAD and field in out.log, out.log
    # the DSO funds the largest escrow: it is debited exactly, and refunded exactly
    net.must("dso", "token.mint", {"amount": 2 * 10**15, "denom": "utoken",
                                   "to": net.pub("alice")}, T + 2000)  # fmt: skip
    net.supply += 2 * 10**15
    sid = net.authorise("alice", T + 3000, **biggest).txid
    assert net.bal(ev.ESCROW) == 2 * 10**15
    net.must("alice", "ev.expire", {"session": sid}, T + 8 * H)
    assert net.bal(ev.ESCROW) == 0 and net.bal("alice") == 50 * TOKEN + 2 * 10**15
    net.assert_supply_kept()


def test_an_unfunded_v2g_offer_and_a_foreign_certificate_change_nothing(chain_ev: Ev) -> None:
    net = chain_ev
    sid = net.authorise("alice", T, v2g=V2G).txid
    # cp holds 10 tokens; V2G for 15 kWh at 1,000 tokens/kWh would escrow 15,000 tokens
    out = net.open(sid, T + 60_000, v2g_price_utoken_per_kwh=1_000 * TOKEN)
    assert out.code == codes.INSUFFICIENT_FUNDS, out.log
    s = net.session(sid)
    assert s["status"] == "authorised" and s["v2g_escrow_utoken"] == 0
    assert net.chain.state(ev.meter_busy_key(net.pub("meter-cp"))) is None
    assert net.chain.state(ev.active_key(net.pub("cp"))) is None
    net.open(sid, T + 120_000)  # without V2G
    assert net.reading(sid, net.session(sid)["opened_ms"], 4_000).ok
    # the charge point names carol's certificate: the stop (settlement included) is undone
    issue = {"owner": net.pub("carol"), "energy_wh": 10_000, "start_ms": T - H, "end_ms": T}
    carols = net.must("dso", "rec.issue", issue, T + H).txid
    escrow, alice, cp = net.bal(ev.ESCROW), net.bal("alice"), net.bal("cp")
    out = net.run("cp", "ev.stop", {"session": sid, "rec": carols}, T + H + 10_000)
    assert out.code == codes.UNAUTHORIZED
    assert (net.bal(ev.ESCROW), net.bal("alice"), net.bal("cp")) == (escrow, alice, cp)
    assert net.session(sid)["status"] == "open"
    assert net.chain.state(rec_key(carols))["owner"] == net.pub("carol")
    assert net.chain.state(rec_key(carols))["status"] == "active"
    # another charge point cannot stop it, nor expire it
    out = net.run("cp2", "ev.stop", {"session": sid}, T + H + 20_000)
    assert out.code == codes.UNAUTHORIZED
    out = net.run("cp2", "ev.expire", {"session": sid}, T + 9 * H)
    assert out.code == codes.UNAUTHORIZED
    net.must("cp", "ev.stop", {"session": sid}, T + 9 * H + 10_000)
    assert net.bal("cp") == cp + 4_000 * 250_000 // 1000
    net.assert_supply_kept()
