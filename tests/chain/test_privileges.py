"""Members attacking members (issue 10, findings 1 and 4), each attack performed on the real
ledger application (solo engine, SQLite store): privilege escalation through ``member.grant``,
a DSO's record that moves money without being bound or capped, and REC amplification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gridledger.chain import codes
from gridledger.chain.contracts import Context, State, build_registry, membership, roles
from gridledger.chain.contracts.base import ContractError, TxType
from gridledger.chain.contracts.certificates import REC_PREFIX, rec_key
from gridledger.chain.contracts.market import (
    ESCROW,
    MAX_SLOTS_PER_MATCH,
    MAX_WINDOW_SLOTS,
    reactive_digest,
    trade_record,
)
from gridledger.chain.contracts.membership import member_key
from gridledger.chain.contracts.metering import MAX_METER_RATING_W
from gridledger.chain.contracts.roles import (
    MAX_PERMISSIONS,
    OPERATOR,
    PROSUMER,
    may_send,
    type_class,
)
from gridledger.chain.contracts.roles import OPTIONAL_CONTRACTS as CONTRACTS
from gridledger.chain.contracts.settlement import done_key, rec_id
from gridledger.chain.contracts.tokens import supply_key
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import ROLES, KeyPair
from gridledger.demo.localchain import LocalChain, TxOutcome
from gridledger.market.recs import REC_WH

SLOT = 900_000
T = 1_800_000_000_000 // SLOT * SLOT
TYPES = build_registry(CONTRACTS).types
# the types the issue found a vendor could hand its prosumer
DSO_POWERS = (
    "token.mint",
    "rec.issue",
    "market.certificate",
    "market.losses",
    "market.reactive",
    "energy.transfer",
)
NAMES = ("dso", "vendor", "ict", "validator", "alice", "bob", "meter_a", "meter_b", "regulator")


def key(name: str) -> KeyPair:
    return KeyPair.from_seed(f"privileges/{name}".encode().ljust(32, b"\0"))


class Members:
    """DSO, vendor, ICT operator, validator; the vendor's prosumers alice (bus 3) and bob
    (bus 7) with their meters; a regulator prosumer; every optional contract loaded."""

    def __init__(self, home: Path, funds: int = 2_000_000, second_dso: bool = False) -> None:
        self.k = {n: key(n) for n in (*NAMES, "dso2")}
        members = [
            {"pub_key": self.k[n].pub_hex, "role": n, "name": n} for n in ("dso", "vendor", "ict")
        ]
        if second_dso:
            members.append({"pub_key": self.k["dso2"].pub_hex, "role": "dso", "name": "dso2"})
        balances = [{"account": self.k["dso"].pub_hex, "denom": "utoken", "amount": 10**12}]
        genesis = make_genesis(
            "privileges",
            T - 10 * SLOT,
            [(self.k["validator"].pub_hex, 10)],
            members,
            balances,
            list(CONTRACTS),
        )
        self.chain = LocalChain(home, genesis, self.k["validator"], T - 10 * SLOT)
        for name, bus in (("alice", 3), ("bob", 7), ("regulator", 4)):
            self.ok(
                "vendor",
                "member.register",
                {"pub_key": self.pub(name), "role": "prosumer", "bus": bus},
            )
        self.block()
        for meter, owner in (("meter_a", "alice"), ("meter_b", "bob")):
            self.ok(
                "vendor",
                "member.bind_meter",
                {"meter": self.pub(meter), "prosumer": self.pub(owner)},
            )
        for name in ("alice", "bob"):
            self.ok("dso", "token.mint", {"amount": funds, "denom": "utoken", "to": self.pub(name)})
        self.block()

    def pub(self, name: str) -> str:
        return self.k[name].pub_hex

    def send(self, who: str, tx_type: str, payload: dict[str, Any]) -> TxOutcome:
        return self.chain.submit(self.k[who], tx_type, payload)

    def ok(self, who: str, tx_type: str, payload: dict[str, Any]) -> TxOutcome:
        out = self.send(who, tx_type, payload)
        assert out.ok, out.log
        return out

    def block(self, time_ms: int | None = None) -> None:
        self.chain.produce(time_ms)

    def final(self, out: TxOutcome) -> TxOutcome:
        """Where a transaction ended: refused at the gate, or its result in a block."""
        if not out.ok:
            return out
        self.block()
        return self.chain.result(out.txid)

    def member(self, name: str) -> dict[str, Any]:
        return self.chain.state(member_key(self.pub(name)))

    def bal(self, name: str) -> int:
        return self.chain.balance("utoken", self.pub(name) if name in self.k else name)


@pytest.fixture
def net(tmp_path: Path) -> Members:
    m = Members(tmp_path / "home")
    yield m
    m.chain.close()


# --- finding 1: roles --------------------------------------------------------------------------
def test_a_vendor_cannot_give_its_prosumer_dso_powers(net: Members) -> None:
    """The attack: the vendor grants its own prosumer each DSO-only type.  Every grant is
    refused by name, the prosumer's record is unchanged and it still cannot mint."""
    before = net.member("alice")
    for permission in DSO_POWERS:
        out = net.final(
            net.send(
                "vendor", "member.grant", {"member": net.pub("alice"), "permission": permission}
            )
        )
        assert out.code == codes.UNAUTHORIZED, permission
        assert permission in out.log and "operator type" in out.log
    assert net.member("alice") == before
    mint = net.final(
        net.send(
            "alice",
            "token.mint",
            {
                "amount": 4_600_000_000_000_000_000 // 10**3,
                "denom": "utoken",
                "to": net.pub("alice"),
            },
        )
    )
    assert mint.code == codes.ROLE_NOT_ALLOWED
    # nor can the DSO itself grant them: operators are named in the genesis
    for permission in DSO_POWERS:
        out = net.final(
            net.send("dso", "member.grant", {"member": net.pub("alice"), "permission": permission})
        )
        assert out.code == codes.UNAUTHORIZED, permission
    assert net.member("alice") == before


def test_dso_only_types_are_the_dso_s_alone(net: Members) -> None:
    """The issue's DSO-only types (token.mint, energy.*, ...) are declared for the DSO alone:
    the ICT operator, which used to be able to mint and certify energy, is refused at the gate
    and nothing changes; the DSO still mints."""
    for t in (*DSO_POWERS, "energy.loss", "energy.reactive"):
        assert TYPES[t].roles == frozenset({"dso"}), t
    before = net.bal("ict")
    mint = {"amount": 10**15, "denom": "utoken", "to": net.pub("ict")}
    assert net.final(net.send("ict", "token.mint", mint)).code == codes.ROLE_NOT_ALLOWED
    for t in ("energy.transfer", "energy.loss", "energy.reactive"):
        assert net.final(net.send("ict", t, {})).code == codes.ROLE_NOT_ALLOWED, t
    assert net.bal("ict") == before
    net.ok("dso", "token.mint", {"amount": 5, "denom": "utoken", "to": net.pub("ict")})
    net.block()
    assert net.bal("ict") == before + 5


def test_a_grant_made_before_the_table_opens_nothing(
    net: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack's state: a prosumer that already holds grants of DSO types (as the old
    member.grant allowed; replayed here by switching the table's check off for the grants)
    still cannot mint or certify: the gate honours grants of prosumer-level types only."""
    monkeypatch.setattr(roles, "check_grant", lambda *_: None)
    for permission in ("token.mint", "market.certificate", "market.reactive"):
        net.ok("vendor", "member.grant", {"member": net.pub("alice"), "permission": permission})
    net.block()
    monkeypatch.undo()
    assert "token.mint" in net.member("alice")["grants"]
    mint = {"amount": 10**15, "denom": "utoken", "to": net.pub("alice")}
    assert net.final(net.send("alice", "token.mint", mint)).code == codes.ROLE_NOT_ALLOWED
    mid = _trade(net)
    cert = _approval(net, mid, [])
    assert net.final(net.send("alice", "market.certificate", cert)).code == codes.ROLE_NOT_ALLOWED
    assert net.chain.state(f"market/match/{mid}")["status"] == "pending"
    assert net.bal("alice") == 2_000_000


def test_only_the_certifier_changes_an_approved_matchs_loss_share(tmp_path: Path) -> None:
    net = Members(tmp_path / "home", second_dso=True)
    try:
        mid = _trade(net)
        share = {"from_ms": T, "total_loss_w": 5, "shares": [{"match_id": mid, "loss_w": 5}]}
        net.ok("dso", "market.losses", share)
        net.ok("dso", "market.reactive", {"match_id": mid, "setpoints": []})
        net.ok("dso", "market.certificate", _approval(net, mid, []))
        net.block()
        assert net.chain.state(f"market/match/{mid}")["status"] == "approved"
        other = net.final(
            net.send(
                "dso2", "market.losses", {**share, "shares": [{"match_id": mid, "loss_w": 200}]}
            )
        )
        assert other.code == codes.UNAUTHORIZED and "only its certifier" in other.log
        assert net.final(net.send("dso", "market.losses", share)).ok
    finally:
        net.chain.close()


def test_grants_of_unknown_or_governance_types_are_refused_by_name(net: Members) -> None:
    for who in ("vendor", "dso"):
        out = net.final(
            net.send(who, "member.grant", {"member": net.pub("alice"), "permission": "token.mnit"})
        )
        assert out.code == codes.INVALID_PAYLOAD and "'token.mnit' is not a registered" in out.log
    revoke = net.final(
        net.send(
            "vendor",
            "member.revoke_permission",
            {"member": net.pub("alice"), "permission": "x" * 64},
        )
    )
    assert revoke.code == codes.INVALID_PAYLOAD and "not a registered" in revoke.log
    # a granted member.register would let a prosumer enrol an ICT operator, who may mint
    out = net.final(
        net.send(
            "dso", "member.grant", {"member": net.pub("alice"), "permission": "member.register"}
        )
    )
    assert out.code == codes.UNAUTHORIZED and "governance type" in out.log
    # a vendor grants only what it may send itself: admm.submit is the prosumers' and the DSO's
    out = net.final(
        net.send(
            "vendor", "member.grant", {"member": net.pub("alice"), "permission": "admm.submit"}
        )
    )
    assert out.code == codes.UNAUTHORIZED and "only what it may send itself" in out.log
    assert net.member("alice")["grants"] == [] and net.member("alice")["denied"] == []


def test_the_grant_lists_are_bounded() -> None:
    """A member's grants are capped (MAX_PERMISSIONS), whatever the registry holds."""
    noop = lambda *_: None  # noqa: E731
    types = {f"x.t{i}": TxType(f"x.t{i}", frozenset({"prosumer"}), noop, noop) for i in range(70)}
    member = membership.new_member("prosumer", 1, bus=3)
    member["grants"] = sorted(types)[:MAX_PERMISSIONS]
    overlay: dict[bytes, bytes | None] = {}
    state = State({}, overlay)
    state.set(member_key("aa" * 32), member)
    dso = membership.new_member("dso", 0)
    ctx = Context(state, "c", 1, 0, "bb" * 32, dso, tx_types=types)
    with pytest.raises(ContractError, match=f"at most {MAX_PERMISSIONS} grants"):
        membership.CONTRACT.tx_types[2].execute(
            ctx, {"member": "aa" * 32, "permission": sorted(types)[MAX_PERMISSIONS]}
        )


@pytest.mark.parametrize("tx_type", sorted(TYPES))
def test_roles_table_for_every_registered_type(net: Members, tx_type: str) -> None:
    """Every registered type: each member whose role is not declared for it is refused at the
    gate; the DSO and a vendor can grant it only when it is a prosumer-level type (the vendor
    only if it may send it itself); a grant never lets the prosumer send anything else."""
    roles = TYPES[tx_type].roles
    outsiders = [n for n in NAMES if _role(n) not in roles]
    for name in outsiders:
        out = net.final(net.send(name, tx_type, {}))
        assert out.code == codes.ROLE_NOT_ALLOWED, (name, out.log)
    cls = type_class(roles)
    grant = {"member": net.pub("alice"), "permission": tx_type}
    by_vendor = net.final(net.send("vendor", "member.grant", grant))
    assert by_vendor.ok == (cls == PROSUMER and "vendor" in roles), by_vendor.log
    by_dso = net.final(net.send("dso", "member.grant", grant))
    assert by_dso.ok == (cls == PROSUMER), by_dso.log
    if "prosumer" not in roles:
        # still refused after every grant attempt: nothing above a prosumer's level leaks
        assert net.final(net.send("alice", tx_type, {})).code == codes.ROLE_NOT_ALLOWED
    # a grant record of a non-grantable type (say one written before the table existed)
    # opens nothing either
    holder = {"role": "prosumer", "grants": [tx_type], "denied": []}
    assert may_send(holder, tx_type, roles) == (cls == PROSUMER)
    for role in ROLES:
        plain = {"role": role, "grants": [], "denied": []}
        assert may_send(plain, tx_type, roles) == (role in roles)
        assert not may_send({**plain, "denied": [tx_type]}, tx_type, roles)
    if cls == OPERATOR:
        assert roles <= {"dso", "ict"}


def _role(name: str) -> str:
    return {
        "alice": "prosumer",
        "bob": "prosumer",
        "regulator": "prosumer",
        "meter_a": "meter",
        "meter_b": "meter",
    }.get(name, name)


# --- finding 1: money that a certificate binds and escrow caps -----------------------------------
def _trade(net: Members) -> str:
    """alice sells 1 kW for one slot to bob, who escrows 3,333 utoken (the issue's numbers)."""
    offer = {
        "node": 3,
        "power_w": 1_000,
        "regulation_var": 0,
        "price_utoken_per_kwh": 13_332,
        "start_ms": T,
        "end_ms": T + SLOT,
    }
    net.ok("alice", "market.offer", offer)
    bid = {
        "node": 7,
        "power_w": 1_000,
        "max_price_utoken_per_kwh": 13_332,
        "start_ms": T,
        "end_ms": T + SLOT,
    }
    net.ok("bob", "market.bid", bid)
    net.block(T - 8 * SLOT)
    assert net.bal(ESCROW) == 3_333
    return "m0"


def _approval(net: Members, mid: str, setpoints: list[dict[str, Any]]) -> dict[str, Any]:
    rec = net.chain.state(f"market/match/{mid}")
    return {
        "match_id": mid,
        "match_digest": rec["digest"],
        "verdict": "approved",
        "reasons": [],
        "trade": trade_record(rec["match"]),
        "reactive_digest": reactive_digest(setpoints),
    }


def test_reactive_pay_cannot_drain_the_buyer_beyond_escrow(net: Members) -> None:
    mid = _trade(net)
    bob_free = net.bal("bob")
    # the issue's path: a prosumer holding DSO types certifies with a set-point paid to itself
    grant = net.final(
        net.send(
            "vendor", "member.grant", {"member": net.pub("alice"), "permission": "market.reactive"}
        )
    )
    assert grant.code == codes.UNAUTHORIZED
    drain = [
        {
            "account": net.pub("alice"),
            "node": 3,
            "q_var": 1,
            "delta_q_var": 1,
            "delta_pq_w": 1,
            "utoken_per_slot": bob_free,
        }
    ]
    for tx_type, payload in (
        ("market.reactive", {"match_id": mid, "setpoints": drain}),
        ("market.certificate", _approval(net, mid, drain)),
    ):
        assert net.final(net.send("alice", tx_type, payload)).code == codes.ROLE_NOT_ALLOWED
    # even the DSO cannot make the buyer pay more than it escrows: the approval must escrow
    # the reactive pay, and bob's free balance cannot cover it
    net.ok(
        "dso",
        "market.losses",
        {"from_ms": T, "total_loss_w": 10, "shares": [{"match_id": mid, "loss_w": 10}]},
    )
    net.ok("dso", "market.reactive", {"match_id": mid, "setpoints": drain})
    net.block()
    out = net.final(net.send("dso", "market.certificate", _approval(net, mid, drain)))
    assert out.code == codes.INSUFFICIENT_FUNDS and "escrows" in out.log
    assert net.bal("bob") == bob_free and net.chain.state(f"market/match/{mid}")["status"] == (
        "pending"
    )
    # a loss share above the cap (25 % of the trade's power) is refused
    big = net.final(
        net.send(
            "dso",
            "market.losses",
            {"from_ms": T, "total_loss_w": 251, "shares": [{"match_id": mid, "loss_w": 251}]},
        )
    )
    assert big.code == codes.INVALID_PAYLOAD and "exceeds the cap" in big.log
    # an honest reactive record: approved, and bound to the certificate by its digest
    fair = [{**drain[0], "account": net.pub("regulator"), "node": 4, "utoken_per_slot": 500}]
    net.ok("dso", "market.reactive", {"match_id": mid, "setpoints": fair})
    net.block()
    assert net.final(net.send("dso", "market.certificate", _approval(net, mid, fair))).ok
    rec = net.chain.state(f"market/match/{mid}")
    # extras escrowed: 500 of reactive pay + the loss charge at the cap, 250 W x 0.25 h at
    # 13,332 utoken/kWh = 62.5 Wh -> 62 Wh x 13,332 / 1000 = 826 utoken
    assert rec["extras_escrow_utoken"] == 500 + 826
    assert net.bal("bob") == bob_free - 1_326
    # the reactive record is fixed once certified
    again = net.final(net.send("dso", "market.reactive", {"match_id": mid, "setpoints": drain}))
    assert again.code == codes.INVALID_PAYLOAD and "not pending" in again.log
    # delivery: settlement pays only out of escrow, never from bob's free balance
    free_after_approval = net.bal("bob")
    net.block(T + SLOT)
    _reading(net, "meter_a", T, export_wh=250)
    _reading(net, "meter_b", T, import_wh=250)
    net.block(T + SLOT + 1000)
    done = net.chain.state(done_key(mid, T))
    paid = {p["kind"]: p["amount"] for p in done["payments"]}
    # 250 Wh x 13,332 / 1000 = 3,333; the loss share in force, 10 W over 0.25 h = 2 Wh -> 26;
    # the certified reactive pay 500
    assert paid == {"energy": 3_333, "loss": 26, "reactive": 500}
    assert net.bal("regulator") == 500 and net.bal(ESCROW) == 0
    assert net.bal("bob") == free_after_approval + 1_326 - 26 - 500  # extras left come back


def test_a_penalty_beyond_escrow_is_a_shortfall_not_a_drain(net: Members) -> None:
    """A buyer who draws far more than its schedule owes a penalty beyond what it escrowed:
    escrow pays what it can, the rest is recorded as a shortfall, the free balance is kept."""
    mid = _trade(net)
    net.ok(
        "dso",
        "market.losses",
        {"from_ms": T, "total_loss_w": 0, "shares": [{"match_id": mid, "loss_w": 0}]},
    )
    net.ok("dso", "market.reactive", {"match_id": mid, "setpoints": []})
    net.block()
    assert net.final(net.send("dso", "market.certificate", _approval(net, mid, []))).ok
    free = net.bal("bob")
    assert free == 2_000_000 - 3_333 - 826  # the loss cap's charge is escrowed
    net.block(T + SLOT)
    _reading(net, "meter_a", T, export_wh=250)
    _reading(net, "meter_b", T, import_wh=250_000)
    net.block(T + SLOT + 1000)
    rows = {p["kind"]: p for p in net.chain.state(done_key(mid, T))["payments"]}
    # tolerance 5 % of 250 Wh = 12 Wh: 249,738 Wh of deviation x 13,332 utoken/kWh x 20 %
    owed = 249_738 * 13_332 * 200_000 // (1_000 * 1_000_000)
    assert owed == 665_901
    assert rows["energy"]["amount"] == 3_333
    assert rows["penalty"]["amount"] == 826 and rows["penalty"]["shortfall"] == owed - 826
    assert net.bal("bob") == free and net.bal(ESCROW) == 0


def test_a_reactive_record_bound_to_one_certificate_pays_only_its_regulators(
    net: Members,
) -> None:
    """Swapping the reactive record between the DSO's review and its approval is caught: the
    approval names the record it approved by digest."""
    mid = _trade(net)
    fair = [
        {
            "account": net.pub("regulator"),
            "node": 4,
            "q_var": 1,
            "delta_q_var": 1,
            "delta_pq_w": 1,
            "utoken_per_slot": 500,
        }
    ]
    net.ok(
        "dso",
        "market.losses",
        {"from_ms": T, "total_loss_w": 0, "shares": [{"match_id": mid, "loss_w": 0}]},
    )
    net.ok("dso", "market.reactive", {"match_id": mid, "setpoints": fair})
    net.block()
    swapped = [{**fair[0], "account": net.pub("alice")}]
    net.ok("dso", "market.reactive", {"match_id": mid, "setpoints": swapped})
    net.block()
    out = net.final(net.send("dso", "market.certificate", _approval(net, mid, fair)))
    assert out.code == codes.INVALID_PAYLOAD and "reactive record" in out.log
    twice = [fair[0], {**fair[0], "account": net.pub("alice")}]
    dup = net.final(net.send("dso", "market.reactive", {"match_id": mid, "setpoints": twice}))
    assert dup.code == codes.INVALID_PAYLOAD and "appear once" in dup.log


# --- finding 4: REC amplification --------------------------------------------------------------
def _reading(net: Members, meter: str, start: int, export_wh: int = 0, import_wh: int = 0):
    return net.send(
        meter,
        "settlement.reading",
        {
            "meter": net.pub(meter),
            "start_ms": start,
            "duration_s": SLOT // 1000,
            "export_wh": export_wh,
            "import_wh": import_wh,
        },
    )


def _keys_written(net: Members, monkeypatch: pytest.MonkeyPatch, send) -> int:
    """Distinct state keys a transaction writes (at the mempool check and in its block)."""
    written: set[str] = set()
    for name in ("set", "set_int", "delete"):
        original = getattr(State, name)

        def spy(self, k, *v, _original=original):
            written.add(k)
            return _original(self, k, *v)

        monkeypatch.setattr(State, name, spy)
    assert net.final(send()).ok
    monkeypatch.undo()
    return len(written)


# what one metered slot's reading writes when it settles no trade: the meter's record, its
# sequence number, the prosumer's ewh balance and supply, the settlement reading, the REC carry,
# the REC counter and one REC record (the order book is one record per order: a reading does
# not touch it)
READING_KEYS = 8


def test_a_huge_reading_issues_one_record_and_is_bounded_by_the_meter_rating(
    net: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    net.ok("vendor", "settlement.green", {"prosumer": net.pub("bob"), "green": True})
    net.ok("vendor", "settlement.green", {"prosumer": net.pub("alice"), "green": True})
    net.block(T + 3 * SLOT)
    # the issue's reading, 10^11 Wh in 15 minutes, is beyond any meter this chain accepts
    refused = _reading(net, "meter_b", T, export_wh=10**11)
    assert refused.code == codes.INVALID_PAYLOAD and "export_wh must be in [0, " in refused.log
    # at the largest rating (1 GW): 250 MWh in the slot, 250 RECs in ONE record
    most = MAX_METER_RATING_W * (SLOT // 1000) // 3600
    huge = _keys_written(net, monkeypatch, lambda: _reading(net, "meter_b", T, export_wh=most))
    one = _keys_written(
        net, monkeypatch, lambda: _reading(net, "meter_b", T + SLOT, export_wh=REC_WH)
    )
    assert huge == one == READING_KEYS
    recs = net.chain.keys_with_prefix(REC_PREFIX)
    assert len(recs) == 2
    first = net.chain.state(rec_key(rec_id(net.pub("bob"), 0)))
    assert first["energy_wh"] == 250 * REC_WH and first["owner"] == net.pub("bob")
    assert net.chain.state(rec_key(rec_id(net.pub("bob"), 1)))["energy_wh"] == REC_WH
    # a meter bound with its own rating (10 kW) cannot report more than 2.5 kWh per 15 minutes
    net.ok("dso", "member.revoke", {"member": net.pub("meter_a")})
    small = key("meter_small")
    net.ok(
        "vendor",
        "member.bind_meter",
        {"meter": small.pub_hex, "prosumer": net.pub("alice"), "rating_w": 10_000},
    )
    net.block()
    net.k["meter_small"] = small
    supply = net.chain.state_int(supply_key("ewh"))
    over = net.final(_reading(net, "meter_small", T, export_wh=2_501))
    assert over.code == codes.INVALID_PAYLOAD and "rated 10000 W" in over.log
    assert net.chain.state_int(supply_key("ewh")) == supply
    assert net.final(_reading(net, "meter_small", T, export_wh=2_500)).ok
    # part of a record is transferred and retired on its own (two records written at most)
    part = net.ok(
        "bob",
        "rec.transfer",
        {"id": rec_id(net.pub("bob"), 0), "to": net.pub("alice"), "energy_wh": REC_WH},
    )
    net.block()
    assert net.chain.state(rec_key(part.txid)) == {
        **first,
        "energy_wh": REC_WH,
        "owner": net.pub("alice"),
        "parent": rec_id(net.pub("bob"), 0),
    }
    assert net.chain.state(rec_key(rec_id(net.pub("bob"), 0)))["energy_wh"] == 249 * REC_WH
    too_much = net.final(
        net.send("alice", "rec.retire", {"id": part.txid, "energy_wh": REC_WH + 1})
    )
    assert too_much.code == codes.INVALID_PAYLOAD and "more than the certificate" in too_much.log
    assert net.final(net.send("alice", "rec.retire", {"id": part.txid})).ok
    assert net.chain.state(rec_key(part.txid))["status"] == "retired"


def test_an_approval_writes_at_most_a_bounded_number_of_slot_entries(net: Members) -> None:
    """With one-second slots a week-long bid would make an approval write 604,800 slot index
    entries. Orders span at most MAX_WINDOW_SLOTS slots, however the DSO configures the market,
    so a match and its approval do too: one slot entry per slot."""
    assert MAX_SLOTS_PER_MATCH == MAX_WINDOW_SLOTS
    net.ok("dso", "market.configure", {"slot_ms": 1_000, "max_window_slots": MAX_WINDOW_SLOTS})
    net.block()
    too_long = net.final(
        net.send(
            "dso",
            "market.configure",
            {"slot_ms": 1_000, "max_window_slots": MAX_WINDOW_SLOTS + 1},
        )
    )
    assert too_long.code == codes.INVALID_PAYLOAD and "max_window_slots" in too_long.log
    week = {"start_ms": T, "end_ms": T + 7 * 86_400_000}
    offer = {"node": 3, "power_w": 1_000, "regulation_var": 0, "price_utoken_per_kwh": 1_000}
    refused = net.final(net.send("alice", "market.offer", {**offer, **week}))
    assert refused.code == codes.INVALID_PAYLOAD
    assert "max_window_slots" in refused.log or "horizon" in refused.log
    window = {"start_ms": T, "end_ms": T + MAX_WINDOW_SLOTS * 1_000}
    net.ok("alice", "market.offer", {**offer, **window})
    net.ok(
        "bob",
        "market.bid",
        {"node": 7, "power_w": 1_000, "max_price_utoken_per_kwh": 1_000, **window},
    )
    net.block(T - 8 * SLOT)
    net.ok(
        "dso",
        "market.losses",
        {"from_ms": T, "total_loss_w": 0, "shares": [{"match_id": "m0", "loss_w": 0}]},
    )
    net.ok("dso", "market.reactive", {"match_id": "m0", "setpoints": []})
    net.block()
    assert net.final(net.send("dso", "market.certificate", _approval(net, "m0", []))).ok
    assert len(net.chain.keys_with_prefix("market/slot/")) == MAX_WINDOW_SLOTS
