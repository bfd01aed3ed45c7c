"""A byzantine proposer stuffs blocks with transactions that fail the gate (issue: state sync's
replay rule keeps each such committed transaction under ``txgate/<txid>`` in state).

Honest mempools never admit them (``check_tx`` runs the gate), so only a proposer can commit
them, and no fee exists on this chain: nobody pays for the records. What bounds the growth is
the block: at most ``max_block_txs`` transactions, one record each. The test measures that
record and shows the stuffed bytes stay refused once they could pass the gate, through the
warm caches of the admission path (``_seq_of``, the precheck and signature caches).
"""

from ledger_helpers import CHAIN_ID, make_chain
from test_engine_mempool import commit_block

from gridledger.chain import codes
from gridledger.chain.abci import ProposalInfo
from gridledger.chain.app import gate_failed_key
from gridledger.chain.keys import KeyPair
from gridledger.chain.tx import make_tx, tx_id

STUFFED = 200


def _info(app):
    return ProposalInfo(app.height + 1, app.last_time_ms + 1, b"\x01" * 32, b"\x00" * 32)


def _txgate_records(app) -> dict[bytes, bytes]:
    return {k: v for k, v in app._committed.items() if k.startswith(b"txgate/")}


def test_a_proposer_stuffing_gate_failing_txs_grows_state_by_one_bounded_record_each(tmp_path):
    chain = make_chain(tmp_path)
    app = chain.app
    to = {"amount": 1, "denom": "utoken", "to": chain.pub("bob")}
    # strangers' keys (not members), plus mallory's, whom the vendor registers later
    keys = [KeyPair.from_seed(b"stranger %06d" % i + b"." * 17) for i in range(STUFFED - 1)] + [
        chain.keys["mallory"]
    ]
    stuffed = [make_tx(k, CHAIN_ID, 0, "token.transfer", to).raw for k in keys]
    # an honest mempool admits none of them
    assert {chain.submit(raw).code for raw in stuffed} == {codes.NOT_MEMBER}
    # a proposer's block carrying them is valid (a gate failure is a result, as in CometBFT)
    assert app.proposal_problem(stuffed, _info(app)) is None
    before = _txgate_records(app)
    items_before = sum(1 for _ in app.snapshot_items())
    results = commit_block(chain, stuffed).tx_results
    assert {r.code for r in results} == {codes.NOT_MEMBER}
    grown = {k: v for k, v in _txgate_records(app).items() if k not in before}
    assert set(grown) == {gate_failed_key(tx_id(raw).hex()).encode() for raw in stuffed}
    assert sum(1 for _ in app.snapshot_items()) == items_before + STUFFED
    # one record is its 71-byte key and the height, whatever the transaction's size
    assert {len(k) for k in grown} == {len("txgate/") + 64}
    assert max(len(v) for v in grown.values()) <= 20
    # so a block adds at most max_block_txs records: a block over it is invalid
    limits = app.block_limits()
    assert app.proposal_problem([b"x"] * (limits.max_txs + 1), _info(app)) == (
        "too many transactions"
    )
    # mallory becomes a member: her stuffed bytes (seq 0 = her next) would now pass the gate,
    # and every cache that has seen them is warm; they are still refused everywhere
    mine = stuffed[-1]
    assert chain.submit(
        chain.tx(
            "vendor",
            "member.register",
            {"bus": 3, "pub_key": chain.pub("mallory"), "role": "prosumer"},
        )
    ).ok
    mint = {"amount": 5, "denom": "utoken", "to": chain.pub("mallory")}
    assert chain.submit(chain.tx("dso", "token.mint", mint)).ok
    chain.block()
    app.precheck_tx(mine)
    app._uncommitted.clear()
    res = chain.submit(mine)
    assert res.code == codes.DUPLICATE and "failed there" in res.log
    assert app.committed_among({tx_id(mine)}) == {tx_id(mine)}
    assert "failed the gate" in app.proposal_problem([mine], _info(app))
    assert app.replays_among([mine]) == {tx_id(mine)}
    # her fresh transaction with the same sequence number (other bytes) is hers to send
    fresh = make_tx(chain.keys["mallory"], CHAIN_ID, 0, "token.transfer", {**to, "amount": 2})
    assert chain.submit(fresh.raw).ok
    chain.block()
    assert chain.result(fresh.raw).code == codes.OK
