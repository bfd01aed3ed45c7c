"""The transaction index works the same in both table layouts a node database may have.

New databases keep results in a rowid table with a UNIQUE index on the id; databases created
earlier keep them in a table keyed by the id WITHOUT ROWID. Both must index every result, keep
the first result of a repeated id, and pass the audit from genesis.
"""

import sqlite3

import pytest
from ledger_helpers import make_chain

from gridledger.chain import codes
from gridledger.chain.abci import ProposalInfo
from gridledger.chain.block import Block, Commit, make_header
from gridledger.chain.verify import verify_chain

OLD_TXS_TABLE = """CREATE TABLE txs (
  id BLOB PRIMARY KEY, height INTEGER NOT NULL, idx INTEGER NOT NULL,
  code INTEGER NOT NULL, log TEXT NOT NULL, events BLOB NOT NULL) WITHOUT ROWID"""


@pytest.mark.parametrize("layout", ["current", "without_rowid"])
def test_transaction_index_in_either_layout(tmp_path, layout):
    if layout == "without_rowid":
        conn = sqlite3.connect(tmp_path / "chain.db")
        conn.execute(OLD_TXS_TABLE)
        conn.close()
    chain = make_chain(tmp_path)
    ddl = chain.store._w.execute("SELECT sql FROM sqlite_master WHERE name='txs'").fetchone()[0]
    assert ("WITHOUT ROWID" in ddl) == (layout == "without_rowid")
    pay = {"amount": 7, "denom": "utoken", "to": chain.pub("bob")}
    raws = [chain.tx("alice", "token.transfer", pay) for _ in range(3)]
    for raw in raws:
        assert chain.submit(raw).ok
    chain.block()
    height = chain.app.height
    recs = [chain.result(raw) for raw in raws]
    assert [(r.height, r.index, r.code) for r in recs] == [(height, i, codes.OK) for i in range(3)]
    assert chain.account("bob")["balances"]["utoken"] == 1000 + 21
    # a replay is refused as a duplicate; a committed id's first result is never overwritten
    assert chain.submit(raws[0]).code == codes.DUPLICATE
    assert chain.app.committed_among({r.txid for r in recs} | {b"\x00" * 32}) == {
        r.txid for r in recs
    }
    report = verify_chain(tmp_path / "chain.db")  # audit from genesis (a second connection)
    assert report.ok, report.problem
    assert report.txs == 3 + 6  # these three and the six of the onboarding block
    # a faulty proposer repeats it in the next block: recorded DUPLICATE there, but the index
    # keeps its first result
    app = chain.app
    info = ProposalInfo(height + 1, app.last_time_ms + 1, b"\x01" * 32, b"\x00" * 32)
    result = app.finalize_block([raws[0]], info)
    assert [r.code for r in result.tx_results] == [codes.DUPLICATE]
    header = make_header(
        "test-chain",
        height + 1,
        info.time_ms,
        info.prev_block_hash,
        info.proposer,
        [raws[0]],
        app.classify_tx,
        app.app_hash,
        app.last_results_hash,
        [],
        [],
    )
    block = Block(header, (raws[0],))
    chain.store.stage_block(block, Commit(height + 1, 0, block.hash(), ()))
    app.commit()
    again = chain.result(raws[0])
    assert (again.height, again.index, again.code) == (height, 0, codes.OK)
    chain.store.close()
