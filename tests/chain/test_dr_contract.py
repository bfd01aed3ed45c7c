"""Demand response on a real ledger app: baselines computed by hand, and the gaming attempts.

Calendar: day 0 of these tests is Monday 2026-01-05 (UTC); day numbers below are offsets from
it.  Weekdays are days 0-4, 7-11, 14-18; days 5-6 and 12-13 are a weekend.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gridledger.chain import codes
from gridledger.chain.contracts import dr
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain
from gridledger.market import dr as rules

H = 3_600_000
DAY = 86_400_000
MONDAY = 1_767_571_200_000  # 2026-01-05T00:00Z
assert rules.day_of(MONDAY) * DAY == MONDAY and rules.is_weekday(rules.day_of(MONDAY))

NAMES = ("validator", "dso", "vendor", "alice", "bob", "carol", "meter-alice", "meter-bob")
NAMES += ("meter-carol",)
KEYS = {n: KeyPair.from_seed(n.encode().ljust(32, b".")) for n in NAMES}
BUDGET = 10**9
CERT = {"digest": "ab" * 32, "line": "1-5", "loading_before_ppm": 1_080_000}
CERT |= {"loading_after_ppm": 950_000}


def at(day: int, hour: int) -> int:
    return MONDAY + day * DAY + hour * H


class Dr:
    def __init__(self, tmp_path: Path) -> None:
        k = KEYS
        genesis = make_genesis(
            "dr-test",
            MONDAY - DAY,
            [(k["validator"].pub_hex, 10)],
            [
                {"pub_key": k["dso"].pub_hex, "role": "dso", "name": "DSO"},
                {"pub_key": k["vendor"].pub_hex, "role": "vendor", "name": "vendor"},
            ],
            [{"account": k["dso"].pub_hex, "amount": BUDGET, "denom": "utoken"}],
            ["gridledger.chain.contracts.dr"],
        )
        self.chain = LocalChain(tmp_path, genesis, k["validator"], MONDAY - DAY)
        for name, bus in (("alice", 5), ("bob", 3), ("carol", 7)):
            self.ok(
                "vendor",
                "member.register",
                {"pub_key": self.pub(name), "role": "prosumer", "bus": bus},
            )
        self.block(MONDAY - DAY + 1000)
        for name in ("alice", "bob", "carol"):
            self.ok(
                "vendor",
                "member.bind_meter",
                {"meter": self.pub(f"meter-{name}"), "prosumer": self.pub(name)},
            )
        self.block(MONDAY - DAY + 2000)

    def pub(self, name: str) -> str:
        return KEYS[name].pub_hex

    def send(self, who: str, tx_type: str, payload: dict):
        return self.chain.submit(KEYS[who], tx_type, payload)

    def ok(self, who: str, tx_type: str, payload: dict):
        out = self.send(who, tx_type, payload)
        assert out.ok, out.log
        return out

    def block(self, t: int) -> None:
        self.chain.produce(t)

    def read(self, member: str, slot_ms: int, import_wh: int):
        return self.send(
            f"meter-{member}",
            "dr.reading",
            {
                "meter": self.pub(f"meter-{member}"),
                "start_ms": slot_ms,
                "duration_s": 3600,
                "import_wh": import_wh,
                "export_wh": 0,
            },
        )

    def open(self, start_ms: int, n_slots: int, **extra) -> str:
        payload = {
            "start_ms": start_ms,
            "n_slots": n_slots,
            "requested_w": 500_000,
            "incentive_utoken_per_kwh": 500_000,
            "budget_utoken": 2_000_000,
            "eligible": sorted([self.pub("alice"), self.pub("bob")]),
            "method": "mean",
            "baseline_days": 3,
            "certificate": CERT,
            **extra,
        }
        return self.ok("dso", "dr.open", payload).txid

    def outcome(self, out):
        return self.chain.result(out.txid)


@pytest.fixture
def env(tmp_path: Path) -> Dr:
    return Dr(tmp_path)


def test_mean_baseline_by_hand_and_the_gaming_attempts(env: Dr) -> None:
    # history, recorded before the announcement: alice on days 4, 7, 8, 9 at 17 h and 18 h
    history = {4: (5000, 5000), 7: (1000, 900), 8: (1100, 950), 9: (1300, 1000)}
    env.block(at(9, 20))
    for day, (wh17, wh18) in sorted(history.items()):
        env.ok(
            "meter-alice",
            "dr.reading",
            {
                "meter": env.pub("meter-alice"),
                "start_ms": at(day, 17),
                "duration_s": 3600,
                "import_wh": wh17,
                "export_wh": 0,
            },
        )
        assert env.read("alice", at(day, 18), wh18).ok
    env.block(at(9, 20) + 1000)
    # announcement on Thursday (day 10) at noon, of an event on Monday (day 14) 17-19 h
    env.block(at(10, 12))
    event = env.open(at(14, 17), 2)
    env.block(at(10, 12) + 1000)
    assert env.chain.state(dr.event_key(event))["announced_ms"] == at(10, 12) + 1000
    assert env.chain.balance("utoken", env.pub("dso")) == BUDGET - 2_000_000
    assert env.chain.balance("utoken", dr.ESCROW) == 2_000_000
    assert env.send("alice", "dr.enrol", {"event": event}).ok
    assert env.send("bob", "dr.enrol", {"event": event}).ok
    carol = env.send("carol", "dr.enrol", {"event": event})  # not eligible
    assert carol.code == codes.UNAUTHORIZED and "not eligible" in carol.log
    env.block(at(10, 13))
    again = env.send("alice", "dr.enrol", {"event": event})  # double enrolment
    assert again.code == codes.ALREADY_EXISTS
    # gaming 1: alice, now knowing of the event, consumes 10x on the like days after the
    # announcement (days 10 and 11); they are after the cutoff and never count
    env.block(at(11, 20))
    for day in (10, 11):
        assert env.read("alice", at(day, 17), 10_000).ok
        assert env.read("alice", at(day, 18), 10_000).ok
    # gaming 2: bob's meter reported nothing so far; it now backfills days before the
    # announcement with inflated readings: recorded after the announcement, they never count
    for day in (7, 8, 9):
        assert env.read("bob", at(day, 17), 9_000).ok
        assert env.read("bob", at(day, 18), 9_000).ok
    env.block(at(11, 20) + 1000)
    # and alice's meter cannot go back before its last interval (day 11) to add to day 4
    late = env.read("alice", at(4, 19), 9_000)
    assert late.code == codes.INVALID_PAYLOAD and "before the end of the previous" in late.log
    # enrolment closes when the event starts
    env.block(at(14, 17))
    assert env.send("bob", "dr.enrol", {"event": event}).code == codes.INVALID_PAYLOAD
    # event day: carol's meter reports for carol, not enrolled: refused
    env.block(at(14, 19))
    refused = env.read("carol", at(14, 17), 100)
    assert refused.code == codes.UNAUTHORIZED and "not enrolled" in refused.log
    assert env.read("alice", at(14, 17), 600).ok
    assert env.read("alice", at(14, 18), 700).ok
    assert env.read("bob", at(14, 17), 50).ok
    assert env.read("bob", at(14, 18), 50).ok
    env.block(at(14, 19) + 1000)
    assert env.send("bob", "dr.settle", {"event": event}).code == codes.ROLE_NOT_ALLOWED
    settled = env.ok("dso", "dr.settle", {"event": event})
    env.block(at(14, 19) + 2000)
    assert env.outcome(settled).ok
    trace = env.chain.state(dr.trace_key(event))
    rows = {r["member"]: r for r in trace["members"]}
    a = rows[env.pub("alice")]
    # alice: like days before Thursday (day 10), newest first, weekdays: 9, 8, 7 (N = 3;
    # days 10 and 11 are after the cutoff; day 4 is the 4th)
    assert a["baseline_days"] == [rules.day_of(at(d, 0)) for d in (9, 8, 7)]
    # 17 h: (1300 + 1100 + 1000) / 3 = 3400 / 3 = 1133 (floor); 18 h: (1000 + 950 + 900) / 3
    # = 2850 / 3 = 950; metered 600 + 700 = 1300; reduction 1133 + 950 - 1300 = 783 Wh
    assert a["baseline_wh"] == [1133, 950]
    assert a["metered_wh"] == [600, 700]
    assert a["reduction_wh"] == 783
    # pay: 783 Wh x 500 000 utoken/kWh / 1000 = 391 500 utoken
    assert a["pay_utoken"] == 391_500
    # bob: every reading of a baseline day was recorded after the announcement: no baseline
    b = rows[env.pub("bob")]
    assert b["baseline_days"] == [] and b["baseline_wh"] == [0, 0]
    assert b["reduction_wh"] == 0 and b["pay_utoken"] == 0
    assert trace["paid_utoken"] == 391_500 and trace["refund_utoken"] == 2_000_000 - 391_500
    assert env.chain.balance("utoken", env.pub("alice")) == 391_500
    assert env.chain.balance("utoken", env.pub("dso")) == BUDGET - 391_500
    assert env.chain.balance("utoken", dr.ESCROW) == 0
    # the trace re-derives from state alone
    event_rec = env.chain.state(dr.event_key(event))
    again_a = dr.member_trace(env.chain.state, event_rec, env.pub("alice"))
    assert {k: a[k] for k in again_a} == again_a
    # after settlement: no reading of the event's slots, no second settlement
    env.block(at(14, 21))
    assert env.read("carol", at(14, 18), 1).code == codes.INVALID_PAYLOAD
    assert env.send("dso", "dr.settle", {"event": event}).code == codes.ALREADY_EXISTS


def test_caiso_10_in_10_with_capped_same_day_adjustment_and_budget_overflow(env: Dr) -> None:
    # ten weekdays 0-4 and 7-11 before the announcement (Monday, day 14, 08:00) of an event the
    # same afternoon, 17-19 h.  Both members on day d: 13, 14, 15 h: 1000 Wh each; 17 h: 2000
    # + d; 18 h: 2000.
    days = (0, 1, 2, 3, 4, 7, 8, 9, 10, 11)
    env.block(at(11, 20))
    for member in ("alice", "bob"):
        for d in days:
            for hour, wh in ((13, 1000), (14, 1000), (15, 1000), (17, 2000 + d), (18, 2000)):
                assert env.read(member, at(d, hour), wh).ok
    env.block(at(11, 20) + 1000)
    env.block(at(14, 8))
    event = env.open(
        at(14, 17),
        2,
        method="caiso_10in10",
        adjustment_cap_ppm=200_000,
        incentive_utoken_per_kwh=1_000_000,
        budget_utoken=1_000_000,
        baseline_days=10,
    )
    env.block(at(14, 8) + 1000)
    env.ok("alice", "dr.enrol", {"event": event})
    env.ok("bob", "dr.enrol", {"event": event})
    env.block(at(14, 8) + 2000)
    # event day: alice pre-consumes in the adjustment window (1350 x 3), bob does not (900 x 3)
    env.block(at(14, 19))
    for member, window, event_wh in (("alice", 1350, (1500, 1500)), ("bob", 900, (1800, 1700))):
        for hour in (13, 14, 15):
            assert env.read(member, at(14, hour), window).ok
        assert env.read(member, at(14, 17), event_wh[0]).ok
        assert env.read(member, at(14, 18), event_wh[1]).ok
    env.block(at(14, 19) + 1000)
    env.ok("dso", "dr.settle", {"event": event})
    env.block(at(14, 19) + 2000)
    trace = env.chain.state(dr.trace_key(event))
    rows = {r["member"]: r for r in trace["members"]}
    a, b = rows[env.pub("alice")], rows[env.pub("bob")]
    assert a["baseline_days"] == [rules.day_of(at(d, 0)) for d in reversed(days)]
    # raw 17 h: sum(2000 + d) / 10 = (20000 + 0+1+2+3+4+7+8+9+10+11 = 20055) / 10 = 2005
    # (floor of 2005.5); raw 18 h: 2000; window baseline 3 x 1000 = 3000
    assert a["raw_baseline_wh"] == [2005, 2000] == b["raw_baseline_wh"]
    # alice: window 4050 / 3000 = 1.35 -> capped at 1.20: 2005 x 1.2 = 2406, 2000 x 1.2 = 2400
    assert a["adjustment_ppm"] == 1_200_000 and a["baseline_wh"] == [2406, 2400]
    # reduction 2406 + 2400 - (1500 + 1500) = 1806 Wh; owed 1806 x 10^6 / 1000 = 1 806 000
    assert a["reduction_wh"] == 1806
    # bob: window 2700 / 3000 = 0.9: 2005 x 0.9 = 1804.5 -> 1804, 1800; reduction 3604 - 3500
    assert b["adjustment_ppm"] == 900_000 and b["baseline_wh"] == [1804, 1800]
    assert b["reduction_wh"] == 104  # owed 104 000
    # owed 1 910 000 > budget 1 000 000: pro rata.  alice 10^6 x 1806000 / 1910000 =
    # 945 549.73, bob 10^6 x 104000 / 1910000 = 54 450.26: floors sum to 999 999, the last
    # utoken goes to the larger remainder (alice)
    assert (a["pay_utoken"], b["pay_utoken"]) == (945_550, 54_450)
    assert trace["paid_utoken"] == 1_000_000 and trace["refund_utoken"] == 0
    assert env.chain.balance("utoken", dr.ESCROW) == 0
    assert env.chain.balance("utoken", env.pub("dso")) == BUDGET - 1_000_000


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"start_ms": at(14, 17) + 1}, "whole hour"),
        ({"n_slots": 9}, "n_slots"),
        ({"eligible": ["ff" * 32, "00" * 32]}, "sorted"),
        ({"certificate": CERT | {"loading_after_ppm": 1_010_000}}, "over its rating"),
        ({"certificate": CERT | {"loading_before_ppm": 990_000}}, "over its rating"),
        ({"method": "median"}, "method"),
        ({"method": "caiso_10in10", "baseline_days": 5}, "10 baseline days"),
        ({"budget_utoken": 0}, "budget_utoken"),
    ],
)
def test_bad_open_payloads_are_refused_and_change_nothing(env: Dr, change, needle) -> None:
    payload = {
        "start_ms": at(14, 17),
        "n_slots": 2,
        "requested_w": 1,
        "incentive_utoken_per_kwh": 1,
        "budget_utoken": 10,
        "eligible": [env.pub("alice")],
        "method": "mean",
        "baseline_days": 3,
        "certificate": CERT,
        **change,
    }
    out = env.send("dso", "dr.open", payload)
    assert out.code == codes.INVALID_PAYLOAD and needle in out.log
    assert env.chain.balance("utoken", env.pub("dso")) == BUDGET


def test_open_rules_on_chain(env: Dr) -> None:
    env.block(at(1, 0))
    base = {
        "n_slots": 1,
        "requested_w": 1,
        "incentive_utoken_per_kwh": 1,
        "method": "mean",
        "baseline_days": 1,
        "certificate": CERT,
    }
    past = env.send(
        "dso",
        "dr.open",
        {**base, "start_ms": at(0, 23), "budget_utoken": 1, "eligible": [env.pub("alice")]},
    )
    assert past.code == codes.INVALID_PAYLOAD and "not after block time" in past.log
    broke = env.send(
        "dso",
        "dr.open",
        {**base, "start_ms": at(2, 0), "budget_utoken": BUDGET + 1, "eligible": [env.pub("alice")]},
    )
    assert broke.code == codes.INSUFFICIENT_FUNDS
    stranger = env.send(
        "dso",
        "dr.open",
        {**base, "start_ms": at(2, 0), "budget_utoken": 1, "eligible": [env.pub("meter-alice")]},
    )
    assert stranger.code == codes.NOT_FOUND
    assert (
        env.send(
            "alice",
            "dr.open",
            {**base, "start_ms": at(2, 0), "budget_utoken": 1, "eligible": [env.pub("alice")]},
        ).code
        == codes.ROLE_NOT_ALLOWED
    )
    event = env.open(at(2, 0), 1)
    env.block(at(1, 1))
    early = env.send("dso", "dr.settle", {"event": event})
    assert early.code == codes.INVALID_PAYLOAD and "ends at" in early.log
    # a reading of a slot that has not ended yet is refused
    assert env.read("alice", at(1, 1), 5).code == codes.INVALID_PAYLOAD
    # an event nobody enrolled in: the whole budget comes back
    env.block(at(2, 1))
    env.ok("dso", "dr.settle", {"event": event})
    env.block(at(2, 1) + 1000)
    assert env.chain.state(dr.trace_key(event))["refund_utoken"] == 2_000_000
    assert env.chain.balance("utoken", env.pub("dso")) == BUDGET


def test_like_days_skip_the_announcement_day_and_other_day_types() -> None:
    # event Monday day 14; announced Saturday day 12: like days are weekdays before day 12,
    # newest first, back to day 14 - 45
    days = rules.like_days(at(14, 17), at(12, 9))
    d0 = rules.day_of(MONDAY)
    assert days[:6] == [d0 + d for d in (11, 10, 9, 8, 7, 4)]
    assert min(days) >= d0 + 14 - rules.LOOKBACK_DAYS
    # a Saturday event takes weekends only
    assert [d - d0 for d in rules.like_days(at(12, 17), at(12, 9))[:3]] == [6, 5, -1]


def test_bounds_of_an_event(env: Dr) -> None:
    env.block(at(1, 0))
    too_many = [f"{i:064x}" for i in range(1, dr.MAX_MEMBERS + 2)]
    out = env.send(
        "dso",
        "dr.open",
        {
            "start_ms": at(2, 0),
            "n_slots": 1,
            "requested_w": 1,
            "incentive_utoken_per_kwh": 1,
            "budget_utoken": 1,
            "eligible": too_many,
            "method": "mean",
            "baseline_days": 1,
            "certificate": CERT,
        },
    )
    assert out.code == codes.INVALID_PAYLOAD and "1 to 32" in out.log
    # at most MAX_EVENTS_PER_SLOT events cover one hour; the next is refused, money untouched
    for _ in range(dr.MAX_EVENTS_PER_SLOT):
        env.open(at(2, 0), 2, budget_utoken=1)
    env.block(at(1, 0) + 1000)
    extra = env.send(
        "dso",
        "dr.open",
        {
            "start_ms": at(2, 1),
            "n_slots": 1,
            "requested_w": 1,
            "incentive_utoken_per_kwh": 1,
            "budget_utoken": 1,
            "eligible": [env.pub("alice")],
            "method": "mean",
            "baseline_days": 1,
            "certificate": CERT,
        },
    )
    assert extra.code == codes.INVALID_PAYLOAD and "already in 8 DR events" in extra.log
    assert env.chain.balance("utoken", dr.ESCROW) == dr.MAX_EVENTS_PER_SLOT


def test_one_reduction_is_not_paid_by_two_overlapping_events(env: Dr) -> None:
    env.block(at(1, 0))
    first = env.open(at(2, 17), 2)
    second = env.open(at(2, 18), 2)  # shares 18-19 h with the first
    apart = env.open(at(2, 19), 1)  # after the first
    env.block(at(1, 0) + 1000)
    env.ok("alice", "dr.enrol", {"event": first})
    env.block(at(1, 0) + 2000)
    twice = env.send("alice", "dr.enrol", {"event": second})
    assert twice.code == codes.ALREADY_EXISTS and "shares the hour" in twice.log
    assert env.send("alice", "dr.enrol", {"event": apart}).ok
    assert env.send("bob", "dr.enrol", {"event": second}).ok
