"""EV charging sessions on a real ledger app: payments computed by hand, and the attacks.

Units: Wh, utoken, utoken/kWh.  A charge point's meter is rated 11 kW, so a 30-minute reading
sees at most 11_000 × 1800 / 3600 = 5_500 Wh.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gridledger.chain import codes
from gridledger.chain.contracts import ev
from gridledger.chain.contracts.base import PayloadError
from gridledger.chain.contracts.certificates import rec_key
from gridledger.chain.contracts.tokens import supply_key
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.chain.tx import make_tx
from gridledger.demo.localchain import LocalChain, TxOutcome

H = 3_600_000
T = 1_767_636_000_000  # 2026-01-05T18:00Z
HALF_HOUR_S = 1800
NAMES = ("validator", "dso", "vendor", "alice", "bob", "carol", "cp", "cp2")
NAMES += ("meter-cp", "meter-cp2", "meter-cp-b", "meter-alice", "meter-cp-unrated")
KEYS = {n: KeyPair.from_seed(n.encode().ljust(32, b".")) for n in NAMES}
TOKEN = 1_000_000


class Ev:
    def __init__(self, tmp_path: Path, contracts: tuple[str, ...] = ()) -> None:
        genesis = make_genesis(
            "ev-test",
            T - H,
            [(KEYS["validator"].pub_hex, 10)],
            [
                {"pub_key": self.pub("dso"), "role": "dso", "name": "DSO"},
                {"pub_key": self.pub("vendor"), "role": "vendor", "name": "vendor"},
            ],
            [{"account": self.pub("dso"), "amount": 1000 * TOKEN, "denom": "utoken"}],
            ["gridledger.chain.contracts.ev", *contracts],
        )
        self.chain = LocalChain(tmp_path, genesis, KEYS["validator"], T - H)
        for name, bus in (("alice", 3), ("bob", 4), ("carol", 6)):
            self.ok(
                "vendor",
                "member.register",
                {"pub_key": self.pub(name), "role": "prosumer", "bus": bus},
            )
        for name, bus in (("cp", 5), ("cp2", 7)):
            self.ok(
                "dso",
                "member.register",
                {"pub_key": self.pub(name), "role": "charge_point", "bus": bus},
            )
        self.chain.produce(T - H + 1000)
        for meter, owner in (("meter-cp", "cp"), ("meter-cp-b", "cp"), ("meter-cp2", "cp2")):
            bind = {"meter": self.pub(meter), "prosumer": self.pub(owner), "rating_w": 11_000}
            self.ok("dso", "member.bind_meter", bind)
        self.ok(
            "vendor",
            "member.bind_meter",
            {"meter": self.pub("meter-alice"), "prosumer": self.pub("alice")},
        )
        unrated = {"meter": self.pub("meter-cp-unrated"), "prosumer": self.pub("cp")}
        self.ok("dso", "member.bind_meter", unrated)
        for name, amount in (("alice", 50 * TOKEN), ("bob", TOKEN), ("cp", 10 * TOKEN)):
            self.ok(
                "dso", "token.mint", {"amount": amount, "denom": "utoken", "to": self.pub(name)}
            )
        self.chain.produce(T - H + 2000)
        self.supply = self.chain.state_int(supply_key("utoken"))

    @staticmethod
    def pub(name: str) -> str:
        return KEYS[name].pub_hex

    def ok(self, who: str, tx_type: str, payload: dict) -> TxOutcome:
        out = self.chain.submit(KEYS[who], tx_type, payload)
        assert out.ok, out.log
        return out

    def run(self, who: str, tx_type: str, payload: dict, t: int) -> TxOutcome:
        """Submit at block time ``t`` (the mempool's check) and execute in the block at t + 1."""
        self.chain.produce(t)
        out = self.chain.submit(KEYS[who], tx_type, payload)
        if out.ok:
            self.chain.produce(t + 1)
            out = self.chain.result(out.txid)
        return out

    def must(self, who: str, tx_type: str, payload: dict, t: int) -> TxOutcome:
        out = self.run(who, tx_type, payload, t)
        assert out.ok, out.log
        return out

    def bal(self, name: str) -> int:
        return self.chain.balance("utoken", self.pub(name) if name in KEYS else name)

    def session(self, sid: str) -> dict:
        return self.chain.state(ev.session_key(sid))

    def authorise(self, who: str, t: int, cp: str = "cp", **extra) -> TxOutcome:
        a = {
            "charge_point": self.pub(cp),
            "max_energy_wh": 40_000,
            "max_price_utoken_per_kwh": 300_000,
            "expiry_ms": T + 8 * H,
            **extra,
        }
        return self.run(who, "ev.authorise", a, t)

    def open(self, sid: str, t: int, cp: str = "cp", meter: str = "meter-cp", **extra):
        o = {"session": sid, "meter": self.pub(meter), "price_utoken_per_kwh": 250_000, **extra}
        return self.run(cp, "ev.open", o, t)

    def reading(self, sid: str, start: int, imp: int, exp: int = 0, meter: str = "meter-cp"):
        r = ev.Reading(sid, self.pub(meter), start, HALF_HOUR_S, imp, exp)
        return self.run(meter, "ev.reading", r.to_payload(), start + HALF_HOUR_S * 1000)

    def assert_supply_kept(self) -> None:
        assert self.chain.state_int(supply_key("utoken")) == self.supply
        active = [self.bal(n) for n in NAMES] + [self.bal(ev.ESCROW)]
        assert sum(active) == self.supply


@pytest.fixture
def net(tmp_path: Path) -> Ev:
    return Ev(tmp_path)


def test_a_session_is_paid_what_was_delivered_at_the_agreed_price(net: Ev) -> None:
    sid = net.authorise("alice", T).txid
    escrow = 40_000 * 300_000 // 1000  # 12_000_000
    assert net.bal("alice") == 50 * TOKEN - escrow and net.bal(ev.ESCROW) == escrow
    assert net.session(sid)["status"] == "authorised"
    assert net.chain.state(ev.active_key(net.pub("alice"))) == [sid]
    net.open(sid, T + 60_000)
    opened = T + 60_001
    assert net.session(sid)["opened_ms"] == opened
    assert net.chain.state(ev.meter_busy_key(net.pub("meter-cp"))) == sid
    assert net.reading(sid, opened, 5_000).ok
    assert net.reading(sid, opened + HALF_HOUR_S * 1000, 5_333).ok
    cp_before = net.bal("cp")
    assert net.must("cp", "ev.stop", {"session": sid}, T + 2 * H).ok
    s = net.session(sid)
    pay = 10_333 * 250_000 // 1000  # 2_583_250: delivered × agreed price, floored
    assert pay == 2_583_250
    assert (s["status"], s["delivered_wh"], s["readings"]) == ("closed", 10_333, 2)
    assert (s["paid_utoken"], s["refund_utoken"]) == (pay, escrow - pay)
    assert net.bal("alice") == 50 * TOKEN - pay
    assert net.bal("cp") == cp_before + pay
    assert net.bal(ev.ESCROW) == 0
    assert net.chain.state(ev.active_key(net.pub("alice"))) is None
    assert net.chain.state(ev.active_key(net.pub("cp"))) is None
    assert net.chain.state(ev.meter_busy_key(net.pub("meter-cp"))) is None
    net.assert_supply_kept()


def test_a_charge_point_cannot_charge_a_driver_who_did_not_authorise_it(net: Ev) -> None:
    sid = net.authorise("alice", T).txid  # alice authorised cp, not cp2
    out = net.open(sid, T + 60_000, cp="cp2", meter="meter-cp2")
    assert out.code == codes.UNAUTHORIZED and "did not authorise" in out.log
    # cp itself, but on a meter that is not its own (cp2's, or a prosumer's)
    for meter in ("meter-cp2", "meter-alice"):
        out = net.open(sid, T + 70_000, meter=meter)
        assert out.code == codes.UNAUTHORIZED and "not bound to this charge point" in out.log
    # a meter without a rating would bound readings only by 1 GW
    out = net.open(sid, T + 75_000, meter="meter-cp-unrated")
    assert out.code == codes.INVALID_PAYLOAD and "rating_w" in out.log
    # a price above the driver's maximum
    out = net.open(sid, T + 80_000, price_utoken_per_kwh=300_001)
    assert out.code == codes.INVALID_PAYLOAD and "above the authorised" in out.log
    # nobody can authorise in the driver's place: a charge point cannot send ev.authorise,
    # and a session id that no driver authorised does not exist
    forged = {
        "charge_point": net.pub("cp"),
        "max_energy_wh": 1,
        "max_price_utoken_per_kwh": 1,
        "expiry_ms": T + H,
    }
    assert net.run("cp", "ev.authorise", forged, T + 90_000).code == codes.ROLE_NOT_ALLOWED
    out = net.open("cd" * 32, T + 100_000)
    assert out.code == codes.NOT_FOUND
    # a prosumer cannot open or stop a session in a charge point's name
    assert net.run("bob", "ev.open", {"session": sid, "meter": net.pub("meter-cp"),
                                      "price_utoken_per_kwh": 1}, T + 110_000).code == (
        codes.ROLE_NOT_ALLOWED
    )  # fmt: skip
    # the driver can only authorise a real charge point
    out = net.authorise("alice", T + 120_000, cp="bob")
    assert out.code == codes.NOT_FOUND and "not an active charge point" in out.log
    assert net.session(sid)["status"] == "authorised"
    assert net.bal("alice") == 50 * TOKEN - 12_000_000
    net.assert_supply_kept()


def test_over_reporting_beyond_the_meter_rating_or_the_authorisation_is_refused(net: Ev) -> None:
    sid = net.authorise("alice", T, max_energy_wh=8_000).txid
    net.open(sid, T + 60_000)
    opened = net.session(sid)["opened_ms"]
    # energy metered before the session opened is not the driver's
    out = net.reading(sid, opened - 1000, 1)
    assert out.code == codes.INVALID_PAYLOAD and "not inside the session" in out.log
    # the 11 kW meter sees at most 5_500 Wh in 30 minutes
    out = net.reading(sid, opened, 5_501)
    assert out.code == codes.INVALID_PAYLOAD and "rated 11000 W" in out.log
    assert net.reading(sid, opened, 5_500).ok
    nxt = opened + HALF_HOUR_S * 1000
    # a reading whose interval has not ended in block time
    net.chain.produce(nxt + 1000)
    early = ev.Reading(sid, net.pub("meter-cp"), nxt, HALF_HOUR_S, 100, 0).to_payload()
    out = net.chain.submit(KEYS["meter-cp"], "ev.reading", early)
    assert out.code == codes.INVALID_PAYLOAD and "has not ended" in out.log
    # 5_500 + 2_501 > 8_000 authorised
    out = net.reading(sid, nxt, 2_501)
    assert out.code == codes.INVALID_PAYLOAD and "exceeds the authorised 8000 Wh" in out.log
    assert net.session(sid)["delivered_wh"] == 5_500  # the refused reading changed nothing
    # another charge point's meter cannot report for this session
    r = ev.Reading(sid, net.pub("meter-cp2"), nxt, HALF_HOUR_S, 100, 0)
    out = net.run("meter-cp2", "ev.reading", r.to_payload(), nxt + HALF_HOUR_S * 1000)
    assert out.code == codes.UNAUTHORIZED
    # nor can the charge point sign a reading in its meter's name
    r = ev.Reading(sid, net.pub("meter-cp"), nxt, HALF_HOUR_S, 100, 0)
    assert net.run("cp", "ev.reading", r.to_payload(), nxt + H).code == codes.ROLE_NOT_ALLOWED
    assert net.reading(sid, nxt, 2_500).ok
    net.must("cp", "ev.stop", {"session": sid}, T + 2 * H)
    assert net.session(sid)["paid_utoken"] == 8_000 * 250_000 // 1000 == 2_000_000
    net.assert_supply_kept()


def test_a_closed_session_cannot_be_replayed(net: Ev) -> None:
    sid = net.authorise("alice", T).txid
    net.open(sid, T + 60_000)
    assert net.reading(sid, net.session(sid)["opened_ms"], 4_000).ok
    seq = net.chain.app.next_seq(net.pub("cp"))
    stop = net.must("cp", "ev.stop", {"session": sid}, T + H)
    paid = net.bal("cp")
    # the very same signed bytes again: refused at the gate (sequence numbers, chain id)
    again = make_tx(KEYS["cp"], net.chain.chain_id, seq, "ev.stop", {"session": sid})
    assert again.id.hex() == stop.txid
    assert net.chain.mempool.add(again.raw).code in (codes.DUPLICATE, codes.BAD_SEQUENCE)
    out = net.open(sid, T + H + 10_000)
    assert out.code == codes.ALREADY_EXISTS and "closed" in out.log
    out = net.open(sid, T + H + 20_000, meter="meter-cp-b")
    assert out.code == codes.ALREADY_EXISTS
    out = net.reading(sid, T + H + 30_000, 100)
    assert out.code == codes.INVALID_PAYLOAD and "closed, not open" in out.log
    out = net.run("cp", "ev.stop", {"session": sid}, T + 2 * H)
    assert out.code == codes.INVALID_PAYLOAD
    out = net.run("alice", "ev.expire", {"session": sid}, T + 9 * H)
    assert out.code == codes.INVALID_PAYLOAD and "already closed" in out.log
    assert net.bal("cp") == paid and net.bal(ev.ESCROW) == 0
    net.assert_supply_kept()


def test_a_driver_cannot_spend_one_escrow_on_two_sessions(net: Ev) -> None:
    # bob holds 1 token; a 4 kWh cap at 0.2 token/kWh escrows 0.8 token
    cap = {"max_energy_wh": 4_000, "max_price_utoken_per_kwh": 200_000}
    sid = net.authorise("bob", T, **cap).txid
    assert net.bal("bob") == 200_000
    out = net.authorise("bob", T + 10_000, cp="cp2", **cap)
    assert out.code == codes.INSUFFICIENT_FUNDS
    assert net.chain.state(ev.active_key(net.pub("bob"))) == [sid]
    # one authorisation opens one session: not twice, not on a second meter
    net.open(sid, T + 20_000, price_utoken_per_kwh=200_000)
    out = net.open(sid, T + 30_000, meter="meter-cp-b", price_utoken_per_kwh=200_000)
    assert out.code == codes.ALREADY_EXISTS
    # one meter delivers one session at a time
    sid2 = net.authorise("alice", T + 40_000).txid
    out = net.open(sid2, T + 50_000)
    assert out.code == codes.ALREADY_EXISTS and "another session" in out.log
    assert net.reading(sid, net.session(sid)["opened_ms"], 4_000).ok
    net.must("cp", "ev.stop", {"session": sid}, T + H)
    assert net.bal("bob") == TOKEN - 800_000  # the whole cap, never more
    net.assert_supply_kept()


def test_a_driver_has_a_bounded_number_of_active_sessions(net: Ev) -> None:
    small = {"max_energy_wh": 1, "max_price_utoken_per_kwh": 1}
    for i in range(ev.MAX_ACTIVE_PER_DRIVER):
        assert net.authorise("alice", T + i * 1000, **small).ok
    out = net.authorise("alice", T + 100_000, **small)
    assert out.code == codes.LIMIT_REACHED


def test_a_session_never_closed_releases_its_escrow_at_expiry(net: Ev) -> None:
    expiry = T + 2 * H
    sid = net.authorise("alice", T, expiry_ms=expiry).txid
    never_opened = net.authorise("alice", T + 1000, cp="cp2", expiry_ms=expiry).txid
    net.open(sid, T + 60_000)
    assert net.reading(sid, net.session(sid)["opened_ms"], 3_000).ok
    # before the expiry nobody can force it closed; after it, a stranger cannot either
    out = net.run("alice", "ev.expire", {"session": sid}, expiry - 1000)
    assert out.code == codes.INVALID_PAYLOAD and "expires at" in out.log
    out = net.run("bob", "ev.expire", {"session": sid}, expiry)
    assert out.code == codes.UNAUTHORIZED
    # a reading reaching past the expiry is refused
    out = net.reading(sid, expiry - 1000, 10)
    assert out.code == codes.INVALID_PAYLOAD and "not inside the session" in out.log
    # an authorisation not opened before its expiry cannot be opened after it
    out = net.open(never_opened, expiry + 1000, cp="cp2", meter="meter-cp2")
    assert out.code == codes.INVALID_PAYLOAD and "expired" in out.log
    cp_before = net.bal("cp")
    net.must("alice", "ev.expire", {"session": sid}, expiry + 2000)
    net.must("alice", "ev.expire", {"session": never_opened}, expiry + 3000)
    pay = 3_000 * 250_000 // 1000  # 750_000: the metered energy is still paid
    assert net.session(sid)["status"] == "expired" and net.session(sid)["paid_utoken"] == pay
    assert net.session(never_opened)["paid_utoken"] == 0
    assert net.bal("cp") == cp_before + pay
    assert net.bal("alice") == 50 * TOKEN - pay and net.bal(ev.ESCROW) == 0
    assert net.chain.state(ev.meter_busy_key(net.pub("meter-cp"))) is None
    assert net.chain.state(ev.active_key(net.pub("alice"))) is None
    net.assert_supply_kept()


V2G = {
    "battery_wh": 60_000,
    "arrival_wh": 30_000,
    "soc_min_wh": 20_000,
    "soc_max_wh": 54_000,
    "max_discharge_wh": 15_000,
    "min_price_utoken_per_kwh": 100_000,
}


def test_v2g_discharge_is_paid_to_the_driver_within_the_soc_window(net: Ev) -> None:
    sid = net.authorise("alice", T, v2g=V2G).txid
    out = net.open(sid, T + 30_000, v2g_price_utoken_per_kwh=99_999)
    assert out.code == codes.INVALID_PAYLOAD and "below the driver's" in out.log
    net.open(sid, T + 60_000, v2g_price_utoken_per_kwh=150_000)
    v2g_escrow = 15_000 * 150_000 // 1000  # 2_250_000, from the charge point
    assert net.bal("cp") == 10 * TOKEN - v2g_escrow
    t, step = net.session(sid)["opened_ms"], HALF_HOUR_S * 1000
    assert net.reading(sid, t, 0, 5_500).ok  # battery 30_000 -> 24_500
    assert net.reading(sid, t + step, 0, 4_500).ok  # -> 20_000, the window's floor
    out = net.reading(sid, t + 2 * step, 0, 1)  # -> 19_999
    assert out.code == codes.INVALID_PAYLOAD and "below the authorised 20000 Wh" in out.log
    assert net.reading(sid, t + 3 * step, 5_000).ok  # charge -> 25_000
    assert net.reading(sid, t + 4 * step, 0, 5_000).ok  # -> 20_000; 15_000 Wh discharged
    out = net.reading(sid, t + 5 * step, 1_000, 1)  # 15_001 Wh: beyond max_discharge_wh
    assert out.code == codes.INVALID_PAYLOAD and "exceeds the authorised 15000 Wh" in out.log
    s = net.session(sid)
    assert (s["delivered_wh"], s["discharged_wh"]) == (5_000, 15_000)
    net.must("cp", "ev.stop", {"session": sid}, T + 5 * H)
    s = net.session(sid)
    pay = 5_000 * 250_000 // 1000  # 1_250_000
    v2g_pay = 15_000 * 150_000 // 1000  # 2_250_000
    assert (s["paid_utoken"], s["v2g_paid_utoken"], s["v2g_refund_utoken"]) == (pay, v2g_pay, 0)
    assert net.bal("alice") == 50 * TOKEN - pay + v2g_pay
    assert net.bal("cp") == 10 * TOKEN + pay - v2g_pay
    net.assert_supply_kept()


def test_the_soc_ceiling_bounds_charging_and_no_v2g_without_authorisation(net: Ev) -> None:
    sid = net.authorise("alice", T, v2g={**V2G, "arrival_wh": 50_000}).txid
    net.open(sid, T + 60_000, v2g_price_utoken_per_kwh=100_000)
    out = net.reading(sid, net.session(sid)["opened_ms"], 4_001)  # 50_000 + 4_001 > 54_000
    assert out.code == codes.INVALID_PAYLOAD and "above the authorised 54000 Wh" in out.log
    small = {"max_energy_wh": 4_000, "max_price_utoken_per_kwh": 1_000}
    plain = net.authorise("bob", T + 10_000, cp="cp2", **small).txid
    v2g_offer = {"price_utoken_per_kwh": 1, "v2g_price_utoken_per_kwh": 1}
    out = net.open(plain, T + 20_000, cp="cp2", meter="meter-cp2", **v2g_offer)
    assert out.code == codes.INVALID_PAYLOAD and "did not authorise V2G" in out.log
    net.open(plain, T + 30_000, cp="cp2", meter="meter-cp2", price_utoken_per_kwh=1)
    out = net.reading(plain, net.session(plain)["opened_ms"], 0, 10, meter="meter-cp2")
    assert out.code == codes.INVALID_PAYLOAD and "cannot discharge" in out.log
    # a V2G window the driver authorised but the charge point did not take up: no discharge
    sid3 = net.authorise("alice", T + 40_000, v2g=V2G).txid
    net.open(sid3, T + 50_000, meter="meter-cp-b")
    out = net.reading(sid3, net.session(sid3)["opened_ms"], 0, 10, meter="meter-cp-b")
    assert out.code == codes.INVALID_PAYLOAD and "cannot discharge" in out.log


def test_green_energy_retires_the_delivered_wh_of_a_rec_in_the_drivers_name(net: Ev) -> None:
    # carol, a green P2P seller, holds a 1 MWh certificate and sells it to the charge point
    issue = {"owner": net.pub("carol"), "energy_wh": 1_000_000, "start_ms": T - H, "end_ms": T}
    rid = net.must("dso", "rec.issue", issue, T).txid
    net.must("carol", "rec.transfer", {"id": rid, "to": net.pub("cp")}, T + 1000)
    sid = net.authorise("alice", T + 2000).txid
    net.open(sid, T + 60_000)
    opened = net.session(sid)["opened_ms"]
    assert net.reading(sid, opened, 5_000).ok
    assert net.reading(sid, opened + HALF_HOUR_S * 1000, 5_333).ok
    # a certificate the charge point does not own: the stop is refused whole
    other = net.must("dso", "rec.issue", issue, T + 2 * H).txid
    out = net.run("cp", "ev.stop", {"session": sid, "rec": other}, T + 2 * H + 10_000)
    assert out.code == codes.UNAUTHORIZED and net.session(sid)["status"] == "open"
    stop = net.must("cp", "ev.stop", {"session": sid, "rec": rid}, T + 3 * H)
    retired = net.chain.state(rec_key(stop.txid))
    assert net.session(sid)["green_rec"] == stop.txid
    assert (retired["owner"], retired["status"], retired["energy_wh"], retired["parent"]) == (
        net.pub("alice"),
        "retired",
        10_333,
        rid,
    )
    rest = net.chain.state(rec_key(rid))
    assert (rest["owner"], rest["status"], rest["energy_wh"]) == (net.pub("cp"), "active", 989_667)
    net.assert_supply_kept()


def test_payloads_round_trip_and_bad_ones_name_the_field() -> None:
    a = ev.Authorise("ab" * 32, 40_000, 300_000, T, ev.V2g(**V2G))
    assert ev.Authorise.from_payload(a.to_payload()) == a
    o = ev.Open("cd" * 32, "ef" * 32, 1, 2)
    assert ev.Open.from_payload(o.to_payload()) == o
    s = ev.Stop("cd" * 32, "ab" * 32)
    assert ev.Stop.from_payload(s.to_payload()) == s
    bad = [
        ({**a.to_payload(), "max_energy_wh": 0}, "max_energy_wh"),
        ({**a.to_payload(), "max_energy_wh": ev.MAX_SESSION_WH + 1}, "max_energy_wh"),
        ({**a.to_payload(), "max_price_utoken_per_kwh": 1.5}, "max_price_utoken_per_kwh"),
        ({**a.to_payload(), "v2g": {**V2G, "soc_max_wh": 19_999}}, "soc_max_wh"),
        ({**a.to_payload(), "v2g": {**V2G, "arrival_wh": 60_001}}, "arrival_wh"),
        ({**a.to_payload(), "v2g": {**V2G, "extra": 1}}, "unknown fields"),
        ({**a.to_payload(), "charge_point": "AB" * 32}, "charge_point"),
    ]
    for payload, needle in bad:
        with pytest.raises(PayloadError, match=needle):
            ev.Authorise.from_payload(payload)
    with pytest.raises(PayloadError, match="import_wh"):
        ev.Reading.from_payload({**ev.Reading("cd" * 32, "ab" * 32, 0, 60, -1, 0).to_payload()})


def test_an_expiry_beyond_two_days_or_in_the_past_is_refused(net: Ev) -> None:
    before = net.bal("alice")
    t = T + H  # executed at block time t + 1
    for expiry in (t + 1, t + ev.MAX_SESSION_MS + H):
        out = net.authorise("alice", t, expiry_ms=expiry)
        assert out.code == codes.INVALID_PAYLOAD and "expiry_ms" in out.log
    out = net.authorise("alice", t + H, cp="alice")
    assert out.code == codes.INVALID_PAYLOAD
    assert net.bal("alice") == before


def test_a_charge_point_buys_p2p_energy_only_at_its_own_bus(tmp_path: Path) -> None:
    """The DSO grants the charge point ``market.bid`` (a prosumer-class type); like a prosumer,
    it can bid only at the bus it was registered at (5)."""
    net = Ev(tmp_path, ("gridledger.chain.contracts.market",))
    bid = {
        "node": 5,
        "power_w": 11_000,
        "max_price_utoken_per_kwh": 200_000,
        "start_ms": T + H,
        "end_ms": T + H + 900_000,
    }
    assert net.run("cp", "market.bid", bid, T).code == codes.ROLE_NOT_ALLOWED
    net.must("dso", "member.grant", {"member": net.pub("cp"), "permission": "market.bid"}, T + 10)
    out = net.run("cp", "market.bid", {**bid, "node": 3}, T + 20)
    assert out.code == codes.UNAUTHORIZED and "a charge_point at bus 5 cannot trade at 3" in out.log
    assert net.run("cp", "market.bid", bid, T + 30).ok
    # 11 kW for 15 minutes at 0.2 token/kWh: 2_750 Wh × 200_000 / 1000 = 550_000 escrowed
    assert net.bal("cp") == 10 * TOKEN - 550_000
