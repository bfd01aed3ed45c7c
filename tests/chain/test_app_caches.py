"""The ledger app's per-transaction caches skip only work whose result cannot differ.

Signature verdicts are keyed by the transaction id (SHA-256 of the whole wire form, signature
included), stateless gate results by the exact wire bytes, parsed membership records by their
exact stored bytes: a forged copy of a verified transaction, or a changed record, is a miss.
Every cache is bounded. The canonical encoder's fast path must give the reference bytes.
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import make_chain

from gridledger.chain import app as app_module
from gridledger.chain import codes, encoding
from gridledger.chain.abci import ProposalInfo
from gridledger.chain.keys import SIG_LEN
from gridledger.chain.tx import TX_DOMAIN, decode_tx, tx_id


@pytest.fixture
def chain(tmp_path):
    return make_chain(tmp_path)


def _transfer(chain, who="alice", amount=10, to="bob"):
    return chain.tx(
        who, "token.transfer", {"amount": amount, "denom": "utoken", "to": chain.pub(to)}
    )


def _info(chain):
    app = chain.app
    return ProposalInfo(app.height + 1, app.last_time_ms + 1, b"\x01" * 32, b"\x00" * 32)


def test_forged_signature_on_a_verified_body_is_refused_everywhere(chain):
    genuine = _transfer(chain)
    assert chain.submit(genuine).ok  # verified: its verdict is now cached
    body = genuine[:-SIG_LEN]
    forgeries = [
        body + chain.keys["mallory"].sign(TX_DOMAIN + body),  # someone else's signature
        body + bytes([genuine[-SIG_LEN] ^ 1]) + genuine[-SIG_LEN + 1 :],  # one bit flipped
    ]
    for forged in forgeries:
        assert tx_id(forged) != tx_id(genuine)  # the cache key covers the signature
        assert decode_tx(forged).body == decode_tx(genuine).body
        res = chain.app.check_tx(forged)
        assert res.code == codes.BAD_SIGNATURE
        assert chain.mempool.add(forged).code == codes.BAD_SIGNATURE
        # a block carrying it is invalid, even next to the genuine copy that was verified
        assert chain.app.proposal_problem([genuine, forged], _info(chain)) is not None
        assert not chain.app.process_proposal([forged], _info(chain))
    # executed anyway (a faulty proposer): the forgery gets BAD_SIGNATURE and moves nothing
    before = chain.account("bob")["balances"]["utoken"]
    result = chain.app.finalize_block([forgeries[0]], _info(chain))
    assert [r.code for r in result.tx_results] == [codes.BAD_SIGNATURE]
    chain.app._pending = None  # not committed: drop the finalized height
    chain.block()  # the genuine transfer commits
    assert chain.result(genuine).code == codes.OK
    assert chain.account("bob")["balances"]["utoken"] == before + 10


def test_caches_stay_bounded_and_evictions_change_no_result(chain, monkeypatch):
    monkeypatch.setattr(app_module, "_SIG_CACHE_MAX", 4)
    monkeypatch.setattr(app_module, "_PRECHECK_CACHE_MAX", 4)
    monkeypatch.setattr(app_module, "_MEMBER_CACHE_MAX", 1)
    app = chain.app
    raws = [_transfer(chain, "alice" if i % 2 else "bob", 1 + i, "dso") for i in range(20)]
    for raw in raws:
        assert chain.submit(raw).ok
        assert len(app._sig_ok) <= 5
        assert len(app._prechecked) <= 5
        assert len(app._payload_log) <= 5
        assert len(app._members) <= 1
    # a second look at evicted transactions gives the same verdicts
    assert app.proposal_problem(raws, _info(chain)) is None
    dso_before = chain.account("dso")["balances"]["utoken"]
    chain.block()
    assert [chain.result(r).code for r in raws] == [codes.OK] * 20
    # hand-computed: alice sent 2+4+...+20 = 110, bob 1+3+...+19 = 100, from 1000 each
    assert chain.account("alice")["balances"]["utoken"] == 1000 - 110
    assert chain.account("bob")["balances"]["utoken"] == 1000 - 100
    assert chain.account("dso")["balances"]["utoken"] == dso_before + 210
    assert len(app._members) <= 1


def test_a_changed_member_record_is_never_served_from_the_cache(chain):
    assert chain.submit(_transfer(chain)).ok  # alice's active record parsed and cached
    chain.block()
    suspend = chain.tx("vendor", "member.suspend", {"member": chain.pub("alice")})
    assert chain.submit(suspend).ok
    chain.block()
    late = _transfer(chain)
    res = chain.submit(late)
    assert res.code == codes.MEMBER_INACTIVE and "suspended" in res.log
    # and in a block (a proposer that admitted it before the suspension)
    result = chain.app.finalize_block([late], _info(chain))
    assert result.tx_results[0].code == codes.MEMBER_INACTIVE
    chain.app._pending = None


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_fast_encoder_gives_the_reference_bytes(value):
    try:
        reference = json.dumps(
            value, ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not encodable on chain either
        with pytest.raises(encoding.EncodingError):
            encoding.encode(value)
        return
    assert encoding.encode(value) == reference
    assert encoding.encode_trusted(value) == reference
    assert encoding.decode(reference) == value
    # any other spelling of the same value is still refused
    spaced = json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")
    if spaced != reference:
        with pytest.raises(encoding.EncodingError):
            encoding.decode(spaced)
