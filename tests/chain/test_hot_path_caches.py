"""The throughput caches of the transaction path (issue 10) change no verdict and no byte.

Transaction ids are memoised by their exact wire bytes, result leaf hashes by (code, log), and
admission checks skip building events nobody reads. Each test tries to get something past a
warmed cache: tampered bytes of an admitted transaction, a replay of a committed one, a result
list that must hash exactly as the reference RFC 6962 tree does.
"""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import make_chain

from gridledger.chain import block as block_module
from gridledger.chain import codes, merkle
from gridledger.chain import tx as tx_module
from gridledger.chain.abci import ProposalInfo
from gridledger.chain.block import result_leaf, results_hash
from gridledger.chain.keys import SIG_LEN
from gridledger.chain.tx import decode_tx, tx_id


def _info(chain):
    app = chain.app
    return ProposalInfo(app.height + 1, app.last_time_ms + 1, b"\x01" * 32, b"\x00" * 32)


def _transfer(chain, amount=10):
    return chain.tx(
        "alice", "token.transfer", {"amount": amount, "denom": "utoken", "to": chain.pub("bob")}
    )


def test_tampered_bytes_of_an_admitted_tx_are_refused_in_a_proposal_and_in_a_block(tmp_path):
    chain = make_chain(tmp_path)
    genuine = _transfer(chain, 10)
    assert chain.submit(genuine).ok  # decoded, verified, its id memoised
    # the same signature over a body whose amount a proposer changed from 10 to 90
    body = genuine[:-SIG_LEN]
    assert body.count(b'"amount":10,') == 1
    tampered = body.replace(b'"amount":10,', b'"amount":90,') + genuine[-SIG_LEN:]
    assert tx_id(tampered) == hashlib.sha256(tampered).digest() != tx_id(genuine)
    assert decode_tx(tampered).payload["amount"] == 90
    assert chain.app.proposal_problem([tampered], _info(chain)) is not None
    assert chain.app.proposal_problem([genuine, tampered], _info(chain)) is not None
    bob = chain.account("bob")["balances"]["utoken"]
    result = chain.app.finalize_block([tampered], _info(chain))
    assert [r.code for r in result.tx_results] == [codes.BAD_SIGNATURE]
    chain.app._pending = None  # executed by a faulty proposer's block, not committed
    chain.block()
    assert chain.result(genuine).code == codes.OK
    assert chain.result(tampered) is None
    assert chain.account("bob")["balances"]["utoken"] == bob + 10  # not 90, not 100


def test_a_committed_tx_replayed_with_warm_caches_is_refused_everywhere(tmp_path):
    chain = make_chain(tmp_path)
    raw = _transfer(chain, 7)
    assert chain.submit(raw).ok
    chain.block()
    assert chain.result(raw).code == codes.OK
    bob = chain.account("bob")["balances"]["utoken"]
    again = bytes(bytearray(raw))  # an equal copy, as it would arrive from the network
    res = chain.submit(again)
    assert res.code == codes.DUPLICATE and "already committed" in res.log
    assert chain.app.proposal_problem([again], _info(chain)) is not None
    result = chain.app.finalize_block([again], _info(chain))
    assert [r.code for r in result.tx_results] == [codes.DUPLICATE]
    chain.app._pending = None
    chain.block()
    assert chain.account("bob")["balances"]["utoken"] == bob


def test_tx_id_memo_is_exact_and_bounded(monkeypatch):
    monkeypatch.setattr(tx_module, "_IDS", {})
    monkeypatch.setattr(tx_module, "_IDS_MAX", 8)
    raws = [bytes([i]) * (50 + i) for i in range(30)]
    for raw in raws:
        assert tx_id(raw) == hashlib.sha256(raw).digest()
        assert len(tx_module._IDS) <= 8
    for raw in raws:  # evicted or not, the same digest
        assert tx_id(raw) == hashlib.sha256(raw).digest()
    # mutable buffers are hashed, never remembered (their bytes could change afterwards)
    buf = bytearray(b"x" * 100)
    assert tx_id(buf) == hashlib.sha256(b"x" * 100).digest()
    buf[0] = ord("y")
    assert tx_id(buf) == hashlib.sha256(bytes(buf)).digest()
    # large transactions are not kept alive by the memo
    big = b"z" * (tx_module._IDS_MAX_TX_BYTES + 1)
    assert tx_id(big) == hashlib.sha256(big).digest()
    assert big not in tx_module._IDS


_results = st.lists(
    st.tuples(st.sampled_from([0, 0, 0, 3, 7, 12]), st.sampled_from(["", "", "no", "é\n"])),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(_results)
def test_results_hash_with_memoised_leaves_is_the_reference_tree(results):
    reference = merkle.root([result_leaf(code, log) for code, log in results])
    assert results_hash(results) == reference
    assert results_hash(results) == reference  # now from the memo


def test_results_leaf_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(block_module, "_RESULT_LEAF_HASHES", {})
    monkeypatch.setattr(block_module, "_RESULT_LEAF_HASHES_MAX", 5)
    results = [(0, f"log {i}") for i in range(50)]
    assert results_hash(results) == merkle.root([result_leaf(c, lg) for c, lg in results])
    assert len(block_module._RESULT_LEAF_HASHES) <= 5


def test_admission_builds_no_events_and_the_block_still_records_them(tmp_path):
    chain = make_chain(tmp_path)
    raw = _transfer(chain, 5)
    assert chain.submit(raw).ok  # check_tx: executed without recording events
    applied = chain.app.finalize_block([raw], _info(chain))
    chain.app._pending = None
    (result,) = applied.tx_results
    assert result.code == codes.OK
    (event,) = result.events
    assert event.type == "token.transferred"
    assert event.attributes == {
        "amount": "5",
        "denom": "utoken",
        "sender": chain.pub("alice"),
        "to": chain.pub("bob"),
    }
    chain.block()  # the solo engine's block (check_tx ran again at re-check): events kept
    stored = chain.result(raw)
    assert stored.code == codes.OK
    assert stored.events == [{"attributes": event.attributes, "type": "token.transferred"}]


def test_committed_lookup_by_sequence_agrees_with_the_store_and_survives_restart(tmp_path):
    from test_engine_mempool import commit_block

    from gridledger.chain.app import LedgerApp

    chain = make_chain(tmp_path)
    to = {"denom": "utoken", "to": chain.pub("bob")}
    ok = chain.tx("alice", "token.transfer", {"amount": 1, **to}, seq=0)
    broke = chain.tx("alice", "token.transfer", {"amount": 10**15, **to}, seq=1)  # consumes seq
    ahead = chain.tx("alice", "token.transfer", {"amount": 2, **to}, seq=9)  # gate: seq kept
    pending = chain.tx("alice", "token.transfer", {"amount": 3, **to}, seq=2)
    results = commit_block(chain, [ok, broke, ahead]).tx_results
    assert [r.code for r in results] == [codes.OK, codes.INSUFFICIENT_FUNDS, codes.BAD_SEQUENCE]
    ids = {tx_id(r) for r in (ok, broke, ahead, pending)}
    reference = chain.store.committed_among(ids)
    assert reference == {tx_id(ok), tx_id(broke), tx_id(ahead)}

    def app_asking(app):
        asked: list[set[bytes]] = []
        real = app.store.committed_among

        def spy(txids):
            asked.append(set(txids))
            return real(txids)

        app.store.committed_among = spy
        return asked

    for app in (chain.app, LedgerApp(chain.store)):  # the running app, and one restarted
        for raw in (ok, broke, ahead, pending):
            app.precheck_tx(raw)
        app._uncommitted.clear()
        asked = app_asking(app)
        assert app.committed_among(ids) == reference
        # the pending tx (seq 2 = alice's next) was answered without the store; "ahead" (seq
        # 9, committed with a gate failure) and the committed ones were looked up
        assert tx_id(pending) not in set().union(*asked)
        assert tx_id(ahead) in set().union(*asked)
        assert app.committed_among({tx_id(pending)}) == set()
        assert app.proposal_problem([ahead], _info_for(app)) is not None  # a replay
        assert app.proposal_problem([pending], _info_for(app)) is None


def _info_for(app):
    return ProposalInfo(app.height + 1, app.last_time_ms + 1, b"\x01" * 32, b"\x00" * 32)
