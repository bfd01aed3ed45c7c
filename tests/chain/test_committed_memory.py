"""The app remembers txids it found uncommitted (to spare SQLite lookups); a commit must make
that memory forget them, or a replay in a later block would be executed a second time."""

from ledger_helpers import make_chain
from test_engine_mempool import commit_block

from gridledger.chain import codes
from gridledger.chain.abci import ProposalInfo
from gridledger.chain.tx import tx_id


def test_a_tx_looked_up_as_uncommitted_is_seen_committed_after_its_block(tmp_path):
    chain = make_chain(tmp_path)
    app = chain.app
    raw = chain.tx(
        "alice", "token.transfer", {"amount": 7, "denom": "utoken", "to": chain.pub("bob")}
    )
    txid = tx_id(raw)
    # proposal-time lookups at this height say "not committed" and are remembered
    assert app.committed_among({txid}) == set()
    assert not app.tx_committed(txid)
    assert commit_block(chain, [raw]).tx_results[0].code == codes.OK
    assert app.committed_among({txid}) == {txid}
    assert app.tx_committed(txid)
    bob = chain.account("bob")["balances"]["utoken"]
    # the same bytes again, one height later: an invalid proposal, and a duplicate if executed
    info = ProposalInfo(
        app.height + 1, app.last_time_ms + 1000, chain.keys["validator"].pub_key, b""
    )
    assert app.proposal_problem([raw], info).startswith(
        "block repeats an already committed transaction"
    )
    assert app.prepare_proposal([raw], 1 << 20, info) == []
    res = commit_block(chain, [raw])
    assert res.tx_results[0].code == codes.DUPLICATE
    assert chain.account("bob")["balances"]["utoken"] == bob
    # and admission names the replay for what it is
    assert chain.submit(raw).code == codes.DUPLICATE


def test_payload_verdict_is_cached_per_tx_but_keeps_its_gate_position(tmp_path):
    chain = make_chain(tmp_path)
    bad = {"amount": 0, "denom": "utoken", "to": chain.pub("bob")}  # amount must be >= 1
    # a wrong sequence number is reported before the payload, every time (cache or not)
    skip = chain.tx("alice", "token.transfer", bad, seq=5)
    for _ in range(2):
        assert chain.app.check_tx(skip).code == codes.BAD_SEQUENCE
    raw = chain.tx("alice", "token.transfer", bad, seq=0)
    for _ in range(2):
        res = chain.app.check_tx(raw)
        assert res.code == codes.INVALID_PAYLOAD and "amount" in res.log
    assert commit_block(chain, [raw]).tx_results[0].code == codes.INVALID_PAYLOAD
    assert chain.account("alice")["seq"] == 0  # a gate failure consumes nothing
