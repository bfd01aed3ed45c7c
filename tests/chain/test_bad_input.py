"""Every kind of bad input gets a clear error and changes nothing."""

import json

import pytest
from ledger_helpers import CHAIN_ID, make_chain

from gridledger.chain import codes
from gridledger.chain.keys import KeyPair
from gridledger.chain.tx import TX_DOMAIN, make_tx


@pytest.fixture
def chain(tmp_path):
    return make_chain(tmp_path)


def snapshot(chain):
    return (
        chain.app.app_hash,
        dict(chain.app._committed),
        chain.app.height,
        len(chain.mempool),
        chain.app.next_seq(chain.pub("alice")),
    )


def transfer(chain, who="alice", amount=100, to="bob", seq=None, **kw):
    return chain.tx(
        who, "token.transfer", {"amount": amount, "denom": "utoken", "to": chain.pub(to)}, seq=seq
    )


def assert_rejected(chain, raw, code, match):
    before = snapshot(chain)
    res = chain.submit(raw)
    assert res.code == code, res
    assert match in res.log
    assert snapshot(chain) == before


def test_malformed_bytes(chain):
    assert_rejected(chain, b"\x00garbage" * 20, codes.MALFORMED, "malformed")
    assert_rejected(chain, b"", codes.MALFORMED, "too short")


def test_unknown_type(chain):
    raw = chain.tx("alice", "token.steal", {"amount": 1}, seq=0)
    assert_rejected(chain, raw, codes.UNKNOWN_TYPE, "token.steal")


def test_bad_signature(chain):
    raw = bytearray(transfer(chain, seq=0))
    raw[-1] ^= 1
    assert_rejected(chain, bytes(raw), codes.BAD_SIGNATURE, "signature")


def test_signature_by_other_key(chain):
    good = transfer(chain, seq=0)
    body = good[:-64]
    forged = body + chain.keys["mallory"].sign(TX_DOMAIN + body)
    assert_rejected(chain, forged, codes.BAD_SIGNATURE, "signature")


def test_wrong_chain_id(chain):
    raw = make_tx(
        chain.keys["alice"],
        "other-chain",
        0,
        "token.transfer",
        {"amount": 1, "denom": "utoken", "to": chain.pub("bob")},
    ).raw
    assert_rejected(chain, raw, codes.WRONG_CHAIN, "other-chain")


def test_replayed_and_skipped_sequence(chain):
    first = transfer(chain, seq=0)
    assert chain.submit(first).ok
    chain.block()
    # replay of the committed bytes
    assert_rejected(chain, first, codes.DUPLICATE, "already committed")
    # a fresh tx reusing seq 0
    assert_rejected(chain, transfer(chain, amount=5, seq=0), codes.BAD_SEQUENCE, "replay")
    assert_rejected(chain, transfer(chain, amount=5, seq=5), codes.BAD_SEQUENCE, "skips ahead")


def test_pending_sequences_are_counted(chain):
    assert chain.submit(transfer(chain, amount=1, seq=0)).ok
    assert chain.submit(transfer(chain, amount=2, seq=1)).ok
    assert_rejected(
        chain, transfer(chain, amount=3, seq=1), codes.BAD_SEQUENCE, "expected sequence 2"
    )
    assert chain.app.next_seq(chain.pub("alice")) == 2


def test_non_member_sender(chain):
    raw = chain.tx(
        "mallory", "token.transfer", {"amount": 1, "denom": "utoken", "to": chain.pub("bob")}
    )
    assert_rejected(chain, raw, codes.NOT_MEMBER, "not a registered member")


def test_role_not_allowed(chain):
    raw = chain.tx(
        "alice", "token.mint", {"amount": 1, "denom": "utoken", "to": chain.pub("alice")}, seq=0
    )
    assert_rejected(chain, raw, codes.ROLE_NOT_ALLOWED, "prosumer may not send token.mint")
    raw = chain.tx(
        "alice",
        "member.register",
        {"bus": 1, "pub_key": chain.pub("mallory"), "role": "prosumer"},
        seq=0,
    )
    assert_rejected(chain, raw, codes.ROLE_NOT_ALLOWED, "member.register")


def test_overdraft(chain):
    assert_rejected(
        chain, transfer(chain, amount=1001, seq=0), codes.INSUFFICIENT_FUNDS, "less than 1001"
    )


def test_double_spend_in_mempool(chain):
    assert chain.submit(transfer(chain, amount=800, seq=0)).ok
    assert_rejected(
        chain,
        chain.tx(
            "alice",
            "token.transfer",
            {"amount": 800, "denom": "utoken", "to": chain.pub("dso")},
            seq=1,
        ),
        codes.INSUFFICIENT_FUNDS,
        "balance 200",
    )


def test_double_spend_in_one_block_exactly_one_succeeds(chain):
    """A proposer may put both in one block (e.g. a Byzantine one): execution order decides."""
    a = transfer(chain, amount=800, seq=0)
    b = chain.tx(
        "alice", "token.transfer", {"amount": 800, "denom": "utoken", "to": chain.pub("dso")}, seq=1
    )
    from gridledger.chain.abci import ProposalInfo
    from gridledger.chain.block import Block, Commit, make_header

    app = chain.app
    info = ProposalInfo(
        app.height + 1,
        app.last_time_ms + 1000,
        chain.keys["validator"].pub_key,
        bytes.fromhex(chain.store.meta("last_block_hash")),
    )
    assert app.process_proposal([a, b], info)
    header = make_header(
        CHAIN_ID,
        info.height,
        info.time_ms,
        info.prev_block_hash,
        info.proposer,
        [a, b],
        app.classify_tx,
        app.app_hash,
        app.last_results_hash,
        app.validators_for(info.height),
        app.validators_for(info.height + 1),
    )
    res = app.finalize_block([a, b], info)
    assert [r.code for r in res.tx_results] == [codes.OK, codes.INSUFFICIENT_FUNDS]
    block = Block(header, (a, b))
    chain.store.stage_block(
        block, Commit.sign(CHAIN_ID, info.height, 0, block.hash(), [chain.keys["validator"]])
    )
    app.commit()
    acct = chain.account("alice")
    assert acct["balances"]["utoken"] == 200
    assert acct["seq"] == 2  # the failed one consumed its sequence number
    assert chain.account("bob")["balances"]["utoken"] == 1800
    assert chain.account("dso")["balances"]["utoken"] == 1_000_000  # the second one did nothing
    assert chain.result(b).code == codes.INSUFFICIENT_FUNDS


def test_malleated_copy_of_committed_tx(chain):
    raw = transfer(chain, seq=0)
    assert chain.submit(raw).ok
    chain.block()
    body, sig = raw[:-64], raw[-64:]
    doc = json.loads(body)
    variants = [
        json.dumps(doc, sort_keys=True).encode(),  # spaces after separators
        json.dumps(doc, sort_keys=False, separators=(",", ":"))
        .encode()[::1]
        .replace(b'{"chain_id"', b'{ "chain_id"'),
        body.replace(b'"amount":100', b'"amount":1e2'),
        body.replace(b'"denom":"utoken"', b'"denom":"\\u0075token"'),
        body.replace(b'"seq":0', b'"seq":0,"seq":0'),
    ]
    for v in variants:
        assert v != body
        assert_rejected(chain, v + sig, codes.MALFORMED, "")


def test_oversized_payload(chain):
    raw = chain.tx(
        "dso",
        "energy.reactive",
        {"bus": 1, "duration_s": 900, "q_varh": 1, "start_ms": 0, "provider": "a" * 40_000},
        seq=2,
    )
    assert_rejected(chain, raw, codes.TOO_LARGE, "exceeds 32768")
    raw = chain.tx(
        "dso",
        "energy.reactive",
        {"bus": 1, "duration_s": 900, "q_varh": 1, "start_ms": 0, "provider": "a" * 10_000},
        seq=2,
    )
    assert_rejected(chain, raw, codes.TOO_LARGE, "payload exceeds 4096")


def test_invalid_payload_names_the_field(chain):
    raw = chain.tx(
        "alice", "token.transfer", {"amount": -5, "denom": "utoken", "to": chain.pub("bob")}, seq=0
    )
    assert_rejected(chain, raw, codes.INVALID_PAYLOAD, "amount must be in")
    raw = chain.tx(
        "alice", "token.transfer", {"amount": 5, "denom": "gold", "to": chain.pub("bob")}, seq=0
    )
    assert_rejected(chain, raw, codes.INVALID_PAYLOAD, "denom must be one of")


def test_meter_reading_signed_by_another_key(chain):
    reading = {
        "duration_s": 900,
        "export_wh": 500,
        "import_wh": 0,
        "meter": chain.pub("meter_a"),
        "start_ms": 0,
    }
    # another registered meter signs meter_a's reading
    assert_rejected(
        chain,
        chain.tx("meter_b", "meter.reading", reading, seq=0),
        codes.UNAUTHORIZED,
        "not that meter's key",
    )
    # the prosumer itself is not a meter
    assert_rejected(
        chain,
        chain.tx("alice", "meter.reading", reading, seq=0),
        codes.ROLE_NOT_ALLOWED,
        "may not send meter.reading",
    )
    assert chain.submit(chain.tx("meter_a", "meter.reading", reading, seq=0)).ok


def test_unregistered_key_cannot_claim_a_meter(chain):
    stranger = KeyPair.from_seed(b"\x77" * 32)
    raw = make_tx(
        stranger,
        CHAIN_ID,
        0,
        "meter.reading",
        {
            "duration_s": 900,
            "export_wh": 1,
            "import_wh": 0,
            "meter": chain.pub("meter_a"),
            "start_ms": 0,
        },
    ).raw
    assert_rejected(chain, raw, codes.NOT_MEMBER, "not a registered member")


def test_no_single_byte_mutation_is_ever_admitted(chain):
    import random

    rng = random.Random(5)
    raw = transfer(chain, amount=10, seq=0)
    before = snapshot(chain)
    seen_codes = set()
    for _ in range(300):
        bad = bytearray(raw)
        i = rng.randrange(len(bad))
        bad[i] = (bad[i] + rng.randrange(1, 256)) % 256
        res = chain.submit(bytes(bad))
        assert not res.ok, (i, bytes(bad))
        seen_codes.add(res.code)
    assert snapshot(chain) == before
    assert {codes.MALFORMED, codes.BAD_SIGNATURE} <= seen_codes
