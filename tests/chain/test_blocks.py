import pytest
from ledger_helpers import CHAIN_ID, make_chain, seeded_key

from gridledger.chain import merkle
from gridledger.chain.abci import Validator
from gridledger.chain.app import LedgerApp
from gridledger.chain.block import (
    Block,
    BlockError,
    Commit,
    Header,
    decode_txs,
    encode_txs,
    genesis_hash,
    precommit_sign_bytes,
    validator_set_hash,
)
from gridledger.chain.store import Store, StoreError


def transfer(chain, amount):
    return chain.tx(
        "alice", "token.transfer", {"amount": amount, "denom": "utoken", "to": chain.pub("bob")}
    )


def test_headers_link_and_roots_match(tmp_path):
    chain = make_chain(tmp_path)
    e = chain.tx(
        "dso",
        "energy.transfer",
        {
            "destination": chain.pub("bob"),
            "duration_s": 3600,
            "energy_wh": 1500,
            "profile_w": [1000, 2000],
            "source": chain.pub("alice"),
            "start_ms": 0,
        },
    )
    t = transfer(chain, 5)
    for raw in (e, t):
        assert chain.submit(raw).ok
    app_hash_before = chain.app.app_hash
    b2 = chain.block()
    assert b2.header.app_hash == app_hash_before  # lagged: state after block 1
    assert b2.header.root_of("active") == merkle.root([e])
    assert b2.header.root_of("other") == merkle.root([t])
    assert b2.header.root_of("loss") == merkle.EMPTY_ROOT
    b3 = chain.block()
    assert b3.header.prev_block_hash == b2.hash()
    assert b3.header.app_hash == chain.store.get_block(3).block().header.app_hash
    b1 = chain.store.get_block(1).block()
    assert b1.header.prev_block_hash == genesis_hash(chain.app.genesis.raw)
    assert b2.check_body(chain.app.classify_tx) is None
    swapped = Block(b2.header, (t, e))
    assert swapped.check_body(chain.app.classify_tx) is None  # different trees: order per tree
    bad = Block(b2.header, (e, transfer(chain, 6)))
    assert "other Merkle root" in bad.check_body(chain.app.classify_tx)


def test_header_roundtrip_and_strict_decode(tmp_path):
    chain = make_chain(tmp_path)
    h = chain.store.get_block(1).block().header
    assert Header.decode(h.encode()) == h
    with pytest.raises(BlockError):
        Header.decode(h.encode().replace(b'"height":1', b'"height":-1'))
    with pytest.raises(BlockError):
        Header.decode(h.encode().replace(b'"version":2', b'"version":2,"x":1'))


def test_commit_needs_two_thirds_and_valid_signatures():
    keys = [seeded_key(40 + i) for i in range(4)]
    vals = [Validator(k.pub_key, 10) for k in keys]
    bh = b"\x11" * 32
    assert Commit.sign(CHAIN_ID, 5, 0, bh, keys[:3]).check(CHAIN_ID, vals, bh, 5) is None
    assert "needs > 2/3" in Commit.sign(CHAIN_ID, 5, 0, bh, keys[:2]).check(CHAIN_ID, vals, bh, 5)
    c = Commit.sign(CHAIN_ID, 5, 0, bh, keys[:3])
    assert "bad commit signature" in Commit(
        5,
        0,
        bh,
        (c.signatures[0],) * 1
        + (type(c.signatures[0])(keys[1].pub_key, c.signatures[0].signature),)
        + c.signatures[2:],
    ).check(CHAIN_ID, vals, bh, 5)
    assert "other" not in (Commit.sign("other", 5, 0, bh, keys).check(CHAIN_ID, vals, bh, 5) or "")
    assert Commit.sign("other", 5, 0, bh, keys).check(CHAIN_ID, vals, bh, 5) is not None
    outsider = seeded_key(99)
    assert "non-validator" in Commit.sign(CHAIN_ID, 5, 0, bh, [outsider, *keys]).check(
        CHAIN_ID, vals, bh, 5
    )
    assert Commit.decode(c.encode()) == c


def test_precommit_bytes_layout():
    sb = precommit_sign_bytes("c", 7, 2, b"\xaa" * 32)
    assert (
        sb
        == b"gridledger/vote/v1"
        + b"\x01c"
        + bytes([3])
        + (7).to_bytes(8, "big")
        + (2).to_bytes(4, "big")
        + b"\x01"
        + b"\xaa" * 32
    )


def test_validator_set_hash_is_order_independent():
    a, b = seeded_key(1).pub_key, seeded_key(2).pub_key
    assert validator_set_hash([Validator(a, 1), Validator(b, 2)]) == validator_set_hash(
        [Validator(b, 2), Validator(a, 1)]
    )
    assert validator_set_hash([Validator(a, 1)]) != validator_set_hash([Validator(a, 2)])


def test_tx_list_encoding_rejects_truncation():
    txs = [b"abc", b"", b"x" * 300]
    assert decode_txs(encode_txs(txs)) == txs
    with pytest.raises(BlockError):
        decode_txs(encode_txs(txs)[:-1])


def test_restart_reloads_same_state_and_continues(tmp_path):
    chain = make_chain(tmp_path)
    for amount in (1, 2, 3):
        assert chain.submit(transfer(chain, amount)).ok
    chain.block()
    height, app_hash, state = chain.app.height, chain.app.app_hash, dict(chain.app._committed)
    chain.store.close()
    store = Store(tmp_path / "chain.db")
    app = LedgerApp(store)
    assert (app.height, app.app_hash, app._committed) == (height, app_hash, state)
    assert app.info().last_block_height == height
    assert app.init_chain(app.genesis.raw)  # idempotent with the same genesis
    with pytest.raises(Exception, match="different genesis"):
        app.init_chain(app.genesis.raw.replace(b"test-chain", b"test-chaim"))


def test_commit_requires_staged_block(tmp_path):
    chain = make_chain(tmp_path)
    from gridledger.chain.abci import ProposalInfo

    info = ProposalInfo(2, chain.app.last_time_ms + 1, chain.keys["validator"].pub_key, b"\0" * 32)
    chain.app.finalize_block([], info)
    with pytest.raises(StoreError, match="stage_block"):
        chain.app.commit()


def test_ledger_app_implements_the_abci_protocol(tmp_path):
    from gridledger.chain.abci import Application

    chain = make_chain(tmp_path, onboard=False)
    assert isinstance(chain.app, Application)
    info = chain.app.info()
    assert (info.last_block_height, info.chain_id) == (0, CHAIN_ID)
    assert info.last_block_app_hash == chain.app.app_hash


def test_failed_commit_leaves_nothing_half_written(tmp_path):
    """A write failing inside the height's SQLite transaction (disk full, I/O error) rolls back
    the block, its results and its state together; a restart continues from the last height."""
    import hashlib
    import sqlite3

    chain = make_chain(tmp_path)
    raw = transfer(chain, 77)
    assert chain.submit(raw).ok
    before = (chain.store.height(), chain.store.meta("app_hash"))
    real = chain.store._w

    class FailingConn:
        def __getattr__(self, name):
            return getattr(real, name)

        def executemany(self, sql, rows):
            if "INTO txs" in sql:
                raise sqlite3.OperationalError("database or disk is full")
            return real.executemany(sql, rows)

    chain.store._w = FailingConn()
    with pytest.raises(sqlite3.OperationalError):
        chain.block()
    chain.store._w = real
    assert (chain.store.height(), chain.store.meta("app_hash")) == before
    assert chain.store.get_block(before[0] + 1) is None
    assert chain.store.get_tx(hashlib.sha256(raw).digest()) is None
    # a fresh process (new app on the same file) resumes at the last durable height
    chain.store.close()
    store = Store(tmp_path / "chain.db")
    app = LedgerApp(store)
    assert (app.height, app.app_hash.hex()) == (before[0], before[1])
    assert app.check_tx(raw).ok  # the transfer can simply be submitted again
