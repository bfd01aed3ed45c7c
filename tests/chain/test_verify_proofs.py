import sqlite3

import pytest
from ledger_helpers import make_chain

from gridledger.chain import encoding
from gridledger.chain.abci import Validator
from gridledger.chain.contracts.tokens import balance_key
from gridledger.chain.proofs import ProofError, state_proof, tx_proof, verify_proof
from gridledger.chain.tx import tx_id
from gridledger.chain.verify import verify_chain


def build(tmp_path, blocks=5):
    chain = make_chain(tmp_path)
    marks = []
    for b in range(blocks):
        for i in range(3):
            raw = chain.tx(
                "alice",
                "token.transfer",
                {"amount": 10 * b + 1 + i, "denom": "utoken", "to": chain.pub("bob")},
            )
            assert chain.submit(raw).ok
            marks.append(raw)
        chain.block()
    return chain, marks


def test_good_chain_verifies(tmp_path):
    chain, _ = build(tmp_path)
    rep = verify_chain(chain.store.path)
    assert rep.ok, rep
    assert (rep.height, rep.blocks, rep.txs) == (6, 6, 6 + 15)


def test_flipped_byte_in_block_body_names_the_block(tmp_path):
    chain, _ = build(tmp_path)
    conn = sqlite3.connect(chain.store.path)
    txs = bytearray(conn.execute("SELECT txs FROM blocks WHERE height=4").fetchone()[0])
    i = txs.index(b'"amount":')
    txs[i + 9] ^= 0x01  # '2' -> '3': still valid JSON, signature and root now wrong
    conn.execute("UPDATE blocks SET txs=? WHERE height=4", (bytes(txs),))
    conn.commit()
    rep = verify_chain(chain.store.path)
    assert not rep.ok and rep.bad_height == 4
    assert "Merkle root" in rep.problem


def test_flipped_byte_in_database_file_names_the_block(tmp_path):
    chain, _ = build(tmp_path)
    # checkpoint so the blocks live in the main file, then corrupt the file itself
    chain.store._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    chain.store.close()
    path = tmp_path / "chain.db"
    data = bytearray(path.read_bytes())
    marker = b'"amount":32'  # only in block 5's body
    assert data.count(marker) == 1
    i = data.index(marker)
    data[i + 10] = ord("9")
    path.write_bytes(bytes(data))
    rep = verify_chain(path)
    assert not rep.ok and rep.bad_height == 5, rep


def test_tampered_header_breaks_the_link(tmp_path):
    chain, _ = build(tmp_path)
    conn = sqlite3.connect(chain.store.path)
    hdr = conn.execute("SELECT header FROM blocks WHERE height=3").fetchone()[0]
    hdr = hdr.replace(b'"num_txs":3', b'"num_txs":2')
    conn.execute("UPDATE blocks SET header=? WHERE height=3", (hdr,))
    conn.commit()
    rep = verify_chain(chain.store.path)
    assert not rep.ok and rep.bad_height == 3
    assert "hash" in rep.problem


def test_tampered_result_and_state_are_found(tmp_path):
    chain, marks = build(tmp_path)
    conn = sqlite3.connect(chain.store.path)
    conn.execute("UPDATE txs SET code=9 WHERE id=?", (tx_id(marks[4]),))
    conn.commit()
    rep = verify_chain(chain.store.path)
    assert rep.bad_height == 3 and "recorded result" in rep.problem
    conn.execute("UPDATE txs SET code=0 WHERE id=?", (tx_id(marks[4]),))
    conn.execute(
        "UPDATE state SET v=? WHERE k=?",
        (b"999999", balance_key("utoken", chain.pub("bob")).encode()),
    )
    conn.commit()
    rep = verify_chain(chain.store.path)
    assert not rep.ok and "state table differs" in rep.problem


def test_tx_proof_checks_offline(tmp_path):
    chain, marks = build(tmp_path)
    proof = encoding.decode(
        encoding.encode(tx_proof(chain.store, tx_id(marks[7]), chain.app.classify_tx))
    )
    vals = chain.app.validators()
    ok, msg = verify_proof(proof, validators=vals)
    assert ok, msg
    assert "result code 0" in msg
    block_hash = chain.store.get_block(proof["header"]["height"]).hash
    assert verify_proof(proof, trusted_block_hash=block_hash)[0]
    assert not verify_proof(proof, trusted_block_hash=b"\0" * 32)[0]
    forged = dict(proof, path=["0" * 64, *proof["path"][1:]])
    assert verify_proof(forged) == (False, "transaction is not in the header's other tree")
    other = [Validator(chain.keys["mallory"].pub_key, 10)]
    ok, msg = verify_proof(proof, validators=other)
    assert not ok and "non-validator" in msg
    bad_result = dict(proof, result=dict(proof["result"], code=9))
    assert verify_proof(bad_result) == (False, "result is not committed by the next header")
    with pytest.raises(ProofError):
        tx_proof(chain.store, b"\1" * 32, chain.app.classify_tx)


def test_state_proofs_presence_and_absence(tmp_path):
    chain, _ = build(tmp_path)
    key = balance_key("utoken", chain.pub("bob"))
    p = state_proof(chain.store, chain.app, key)
    assert "header" not in p  # the latest state is committed by the next header only
    assert verify_proof(p)[0]
    chain.block()
    p["header"] = chain.store.get_block(p["height"] + 1).block().header.to_json()
    ok, msg = verify_proof(p, trusted_block_hash=chain.store.get_block(p["height"] + 1).hash)
    assert ok and f"committed by header {p['height'] + 1}" in msg, msg
    p["header"]["app_hash"] = "00" * 32
    assert verify_proof(p) == (False, "header does not commit to this state root")
    del p["header"]
    assert int(bytes.fromhex(p["value"])) == chain.account("bob")["balances"]["utoken"]
    absent = state_proof(chain.store, chain.app, "bal/utoken/" + "0" * 64)
    assert absent["value"] is None and verify_proof(absent)[0]
    lie = dict(p, value=b"1".hex())
    assert verify_proof(lie) == (False, "value does not match the committed leaf")


def test_missing_block_and_forged_commit_are_named(tmp_path):
    chain, _ = build(tmp_path)
    conn = sqlite3.connect(chain.store.path)
    commit = conn.execute("SELECT commit_ FROM blocks WHERE height=2").fetchone()[0]
    i = commit.index(b'"signature":"') + 13
    forged = commit[:i] + (b"0" if commit[i : i + 1] != b"0" else b"1") + commit[i + 1 :]
    conn.execute("UPDATE blocks SET commit_=? WHERE height=2", (forged,))
    conn.commit()
    rep = verify_chain(chain.store.path)
    assert (rep.bad_height, rep.problem.startswith("bad commit signature")) == (2, True), rep
    conn.execute("UPDATE blocks SET commit_=? WHERE height=2", (commit,))
    conn.execute("DELETE FROM blocks WHERE height=5")
    conn.commit()
    rep = verify_chain(chain.store.path)
    assert (rep.ok, rep.bad_height, rep.problem, rep.height) == (False, 5, "block missing", 4)
