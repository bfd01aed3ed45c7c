from hashlib import sha256

import pytest
from ledger_helpers import make_chain

from gridledger.chain import codes, encoding
from gridledger.chain.contracts import Contract, Registry, RegistryError, TxType, build_registry
from gridledger.chain.contracts.tokens import supply_key


@pytest.fixture
def chain(tmp_path):
    return make_chain(tmp_path)


def run(chain, who, tx_type, payload):
    raw = chain.tx(who, tx_type, payload)
    res = chain.submit(raw)
    if res.ok:
        chain.block()
        rec = chain.result(raw)
        return rec.code, rec.log, raw
    chain.seqs[chain.keys[who].pub_key] -= 1
    return res.code, res.log, raw


def transfer(chain, who="alice", amount=10):
    return run(
        chain, who, "token.transfer", {"amount": amount, "denom": "utoken", "to": chain.pub("bob")}
    )


def test_vendor_registers_prosumer_with_bus_and_meter(chain):
    alice = chain.account("alice")["member"]
    assert (alice["role"], alice["bus"], alice["vendor"]) == ("prosumer", 3, chain.pub("vendor"))
    meter = chain.account("meter_a")["member"]
    assert (meter["role"], meter["bus"], meter["prosumer"]) == ("meter", 3, chain.pub("alice"))
    # a meter is bound once
    code, log, _ = run(
        chain,
        "vendor",
        "member.bind_meter",
        {"meter": chain.pub("meter_a"), "prosumer": chain.pub("bob")},
    )
    assert code == codes.ALREADY_EXISTS
    # vendors register prosumers only
    code, log, _ = run(
        chain, "vendor", "member.register", {"pub_key": chain.pub("mallory"), "role": "vendor"}
    )
    assert code == codes.UNAUTHORIZED and "prosumers only" in log
    code, _, _ = run(
        chain, "vendor", "member.register", {"pub_key": chain.pub("mallory"), "role": "prosumer"}
    )
    assert code == codes.INVALID_PAYLOAD  # a prosumer needs its bus


def test_suspend_reinstate_revoke(chain):
    assert run(chain, "vendor", "member.suspend", {"member": chain.pub("alice")})[0] == codes.OK
    code, log, _ = transfer(chain)
    assert code == codes.MEMBER_INACTIVE and "suspended" in log
    assert run(chain, "dso", "member.reinstate", {"member": chain.pub("alice")})[0] == codes.OK
    assert transfer(chain)[0] == codes.OK
    assert run(chain, "dso", "member.revoke", {"member": chain.pub("alice")})[0] == codes.OK
    code, log, _ = run(chain, "dso", "member.reinstate", {"member": chain.pub("alice")})
    assert code == codes.INVALID_PAYLOAD and "revoked" in log
    assert transfer(chain)[0] == codes.MEMBER_INACTIVE


def test_grant_and_revoke_permission(chain):
    mint = {"amount": 5, "denom": "utoken", "to": chain.pub("alice")}
    assert run(chain, "alice", "token.mint", mint)[0] == codes.ROLE_NOT_ALLOWED
    # minting is an operator's: not even the DSO can grant it (tests/chain/test_privileges.py)
    code, log, _ = run(
        chain, "dso", "member.grant", {"member": chain.pub("alice"), "permission": "token.mint"}
    )
    assert code == codes.UNAUTHORIZED and "operator type" in log
    assert run(chain, "alice", "token.mint", mint)[0] == codes.ROLE_NOT_ALLOWED
    revoke = {"member": chain.pub("alice"), "permission": "token.transfer"}
    assert run(chain, "vendor", "member.revoke_permission", revoke)[0] == codes.OK
    code, _log, _ = transfer(chain)
    assert code == codes.ROLE_NOT_ALLOWED
    # a prosumer-level permission comes back with a grant from the prosumer's vendor
    assert run(chain, "vendor", "member.grant", revoke)[0] == codes.OK
    assert transfer(chain)[0] == codes.OK
    # another vendor's prosumers are off limits; the DSO itself cannot be suspended
    code, _, _ = run(chain, "vendor", "member.suspend", {"member": chain.pub("ict")})
    assert code == codes.UNAUTHORIZED
    code, _, _ = run(chain, "dso", "member.suspend", {"member": chain.pub("dso")})
    assert code == codes.UNAUTHORIZED


def test_token_supply_is_conserved(chain):
    assert transfer(chain, amount=400)[0] == codes.OK
    assert run(chain, "bob", "token.burn", {"amount": 100, "denom": "utoken"})[0] == codes.OK
    q = lambda k: int(chain.app.query(f"state/{k}").value or b"0")  # noqa: E731
    balances = sum(chain.account(n)["balances"]["utoken"] for n in ("dso", "alice", "bob"))
    assert q(supply_key("utoken")) == balances == 1_000_000 + 2000 - 100
    assert chain.account("alice")["balances"]["utoken"] == 600


def test_meter_readings_mint_and_burn_energy_tokens(chain):
    r = {
        "duration_s": 900,
        "export_wh": 700,
        "import_wh": 0,
        "meter": chain.pub("meter_a"),
        "start_ms": 0,
    }
    detail = b"minute-by-minute profile of alice"
    r["detail_hash"] = sha256(detail).hexdigest()
    assert run(chain, "meter_a", "meter.reading", r)[0] == codes.OK
    assert chain.account("alice")["balances"]["ewh"] == 700
    r2 = {**r, "export_wh": 0, "import_wh": 1000, "start_ms": 900_000}
    del r2["detail_hash"]
    code, _, raw = run(chain, "meter_a", "meter.reading", r2)
    assert code == codes.OK
    assert chain.account("alice")["balances"]["ewh"] == 0
    ev = {e["type"]: e["attributes"] for e in chain.result(raw).events}
    assert ev["meter.tokens"]["unbacked_wh"] == "300"
    # overlapping interval
    code, log, _ = run(chain, "meter_a", "meter.reading", {**r2, "start_ms": 1})
    assert code == codes.INVALID_PAYLOAD and "before the end" in log


def test_energy_loss_reactive_records(chain):
    payload = {
        "destination": chain.pub("bob"),
        "duration_s": 3600,
        "energy_wh": 1500,
        "profile_w": [1000, 2000],
        "source": chain.pub("alice"),
        "start_ms": 0,
    }
    code, _, raw = run(chain, "dso", "energy.transfer", payload)
    assert code == codes.OK
    txid = sha256(raw).hexdigest()
    code, log, _ = run(chain, "dso", "energy.transfer", {**payload, "energy_wh": 1501})
    assert code == codes.INVALID_PAYLOAD and "integral 1500" in log
    assert (
        run(
            chain,
            "dso",
            "energy.loss",
            {"duration_s": 3600, "loss_wh": 12, "start_ms": 0, "transfer": txid},
        )[0]
        == codes.OK
    )
    assert (
        run(
            chain,
            "dso",
            "energy.loss",
            {"duration_s": 3600, "loss_wh": 12, "start_ms": 0, "transfer": "0" * 64},
        )[0]
        == codes.NOT_FOUND
    )
    assert (
        run(
            chain,
            "dso",
            "energy.reactive",
            {"bus": 5, "duration_s": 900, "q_varh": 2500, "start_ms": 0},
        )[0]
        == codes.OK
    )
    assert run(chain, "alice", "energy.transfer", payload)[0] == codes.ROLE_NOT_ALLOWED
    blocks = [chain.store.get_block(h).block() for h in range(1, chain.app.height + 1)]
    trees = {
        t: sum(1 for b in blocks for raw in b.txs if chain.app.classify_tx(raw) == t)
        for t in ("active", "loss", "reactive")
    }
    assert trees == {"active": 1, "loss": 1, "reactive": 1}


def test_certificates_issue_transfer_retire(chain):
    code, _, raw = run(
        chain,
        "dso",
        "rec.issue",
        {"end_ms": 3_600_000, "energy_wh": 5000, "owner": chain.pub("alice"), "start_ms": 0},
    )
    assert code == codes.OK
    rec_id = sha256(raw).hexdigest()
    assert (
        run(chain, "bob", "rec.transfer", {"id": rec_id, "to": chain.pub("bob")})[0]
        == codes.UNAUTHORIZED
    )
    assert (
        run(chain, "alice", "rec.transfer", {"id": rec_id, "to": chain.pub("bob")})[0] == codes.OK
    )
    assert run(chain, "bob", "rec.retire", {"id": rec_id})[0] == codes.OK
    code, log, _ = run(chain, "bob", "rec.transfer", {"id": rec_id, "to": chain.pub("alice")})
    assert code == codes.INVALID_PAYLOAD and "retired" in log
    rec = encoding.decode(chain.app.query(f"state/rec/{rec_id}").value)
    assert (rec["owner"], rec["status"]) == (chain.pub("bob"), "retired")
    assert (
        run(
            chain,
            "alice",
            "rec.issue",
            {"end_ms": 2, "energy_wh": 1, "owner": chain.pub("alice"), "start_ms": 1},
        )[0]
        == codes.ROLE_NOT_ALLOWED
    )


def test_validator_change_needs_two_thirds(chain):
    assert (
        run(
            chain, "dso", "member.register", {"pub_key": chain.pub("mallory"), "role": "validator"}
        )[0]
        == codes.OK
    )
    code, _, raw = run(
        chain, "validator", "validator.propose", {"power": 4, "pub_key": chain.pub("mallory")}
    )
    assert code == codes.OK
    assert {e["type"] for e in chain.result(raw).events} == {"validator.updated"}
    vals = {v.pub_key.hex(): v.power for v in chain.app.validators()}
    assert vals == {chain.pub("validator"): 10, chain.pub("mallory"): 4}
    # now the set is 10 + 4: the old validator alone (10/14 > 2/3) still decides
    code, _, raw = run(
        chain, "validator", "validator.propose", {"power": 0, "pub_key": chain.pub("mallory")}
    )
    assert code == codes.OK
    assert len(chain.app.validators()) == 1
    assert (
        run(chain, "alice", "validator.propose", {"power": 1, "pub_key": chain.pub("bob")})[0]
        == codes.ROLE_NOT_ALLOWED
    )


def test_registry_rejects_duplicate_types():
    t = TxType("x.y", frozenset({"dso"}), lambda p: None, lambda c, p: None)
    reg = Registry([Contract("a", (t,))])
    with pytest.raises(RegistryError, match="declared twice"):
        reg.register(Contract("b", (t,)))
    with pytest.raises(RegistryError, match="cannot import"):
        build_registry(["gridledger.no_such_module"])
