import random
import time

import pytest
from ledger_helpers import CHAIN_ID, make_chain

from gridledger.chain import codes
from gridledger.chain.abci import Application, ProposalInfo
from gridledger.chain.block import Block, Commit, make_header
from gridledger.chain.consensus.solo import SoloEngine, SoloError
from gridledger.chain.verify import verify_chain


def test_solo_refuses_a_key_without_voting_power(tmp_path):
    chain = make_chain(tmp_path, onboard=False)
    with pytest.raises(SoloError, match="2/3"):
        SoloEngine(chain.app, chain.store, chain.mempool, chain.keys["dso"])


def test_interval_mode_cuts_blocks_on_its_own(tmp_path):
    chain = make_chain(tmp_path)
    eng = SoloEngine(
        chain.app,
        chain.store,
        chain.mempool,
        chain.keys["validator"],
        block_interval_ms=30,
        create_empty=True,
    )
    eng.start()
    try:
        raw = chain.tx(
            "alice", "token.transfer", {"amount": 5, "denom": "utoken", "to": chain.pub("bob")}
        )
        assert chain.submit(raw).ok
        deadline = time.monotonic() + 20
        while chain.store.height() < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        eng.stop()
    assert eng.error is None
    assert chain.store.height() >= 4  # empty blocks too
    assert chain.result(raw).code == codes.OK
    times = [chain.store.get_block(h).block().header.time_ms for h in range(1, 5)]
    assert times == sorted(set(times))


def test_recheck_evicts_what_a_block_made_invalid(tmp_path):
    chain = make_chain(tmp_path)
    # alice's transfer is admitted; then a block spends her funds through a tx that reached the
    # proposer by another path (here: straight into finalize), so the pending one must go
    pending = chain.tx(
        "alice", "token.transfer", {"amount": 900, "denom": "utoken", "to": chain.pub("bob")}, seq=0
    )
    assert chain.submit(pending).ok
    other = chain.tx(
        "alice", "token.transfer", {"amount": 950, "denom": "utoken", "to": chain.pub("dso")}, seq=0
    )
    commit_block(chain, [other])
    evicted = chain.mempool.update([other])
    assert evicted == [pending] and len(chain.mempool) == 0
    assert chain.app.next_seq(chain.pub("alice")) == 1


def commit_block(chain, txs):
    app = chain.app
    info = ProposalInfo(
        app.height + 1,
        app.last_time_ms + 1000,
        chain.keys["validator"].pub_key,
        bytes.fromhex(chain.store.meta("last_block_hash", writer=True)),
    )
    header = make_header(
        CHAIN_ID,
        info.height,
        info.time_ms,
        info.prev_block_hash,
        info.proposer,
        txs,
        app.classify_tx,
        app.app_hash,
        app.last_results_hash,
        app.validators_for(info.height),
        app.validators_for(info.height + 1),
    )
    res = app.finalize_block(txs, info)
    block = Block(header, tuple(txs))
    chain.store.stage_block(
        block, Commit.sign(CHAIN_ID, info.height, 0, block.hash(), [chain.keys["validator"]])
    )
    app.commit()
    return res


@pytest.mark.parametrize("seed", range(8))
def test_blocks_of_random_transfers_match_a_plain_ledger_model(tmp_path, seed):
    """Blocks (not the mempool) with arbitrary overdrafts and double spends: executed results
    equal a straightforward dict model; balances never go negative; supply is conserved."""
    rng = random.Random(seed)
    names = ["alice", "bob", "dso"]
    chain = make_chain(tmp_path)
    # keep the DSO poor so that overdrafts are frequent
    assert chain.submit(
        chain.tx(
            "dso",
            "token.transfer",
            {"amount": 999_400, "denom": "utoken", "to": chain.pub("vendor")},
        )
    ).ok
    chain.block()
    model = {n: chain.account(n)["balances"]["utoken"] for n in names}
    assert model["dso"] == 600
    supply = sum(model.values())
    seq = {n: chain.account(n)["seq"] for n in names}
    for _block in range(3):
        transfers = [
            (rng.choice(names), rng.choice(names), rng.randint(1, 900))
            for _ in range(rng.randint(1, 12))
        ]
        txs = []
        for src, dst, amount in transfers:
            txs.append(
                chain.tx(
                    src,
                    "token.transfer",
                    {"amount": amount, "denom": "utoken", "to": chain.pub(dst)},
                    seq=seq[src],
                )
            )
            seq[src] += 1
        res = commit_block(chain, txs)
        for (src, dst, amount), r in zip(transfers, res.tx_results, strict=True):
            if src == dst:
                assert r.code == codes.INVALID_PAYLOAD
            elif model[src] < amount:
                assert r.code == codes.INSUFFICIENT_FUNDS, r
            else:
                assert r.code == codes.OK, r
                model[src] -= amount
                model[dst] += amount
        got = {n: chain.account(n)["balances"]["utoken"] for n in names}
        assert got == model
        assert min(got.values()) >= 0 and sum(got.values()) == supply
        assert {n: chain.account(n)["seq"] for n in names} == seq
    rep = verify_chain(chain.store.path)  # a replay reaches the same state and results
    assert rep.ok, rep


def test_block_with_bad_sequences_records_results_and_goes_on(tmp_path):
    chain = make_chain(tmp_path)

    def t(seq, amount):
        payload = {"amount": amount, "denom": "utoken", "to": chain.pub("bob")}
        return chain.tx("alice", "token.transfer", payload, seq=seq)

    skipped, good, replay = t(3, 1), t(0, 2), t(0, 4)
    stranger = chain.tx(
        "mallory", "token.transfer", {"amount": 1, "denom": "utoken", "to": chain.pub("bob")}, seq=0
    )
    res = commit_block(chain, [skipped, good, replay, stranger])
    assert [r.code for r in res.tx_results] == [
        codes.BAD_SEQUENCE,
        codes.OK,
        codes.BAD_SEQUENCE,
        codes.NOT_MEMBER,
    ]
    assert "expected sequence 0, got 3" in res.tx_results[0].log
    acct = chain.account("alice")
    assert (acct["seq"], acct["balances"]["utoken"]) == (1, 998)
    assert chain.result(replay).code == codes.BAD_SEQUENCE
    assert verify_chain(chain.store.path).ok


def test_solo_stops_once_voted_below_two_thirds(tmp_path):
    chain = make_chain(tmp_path)
    assert chain.submit(
        chain.tx("dso", "member.register", {"pub_key": chain.pub("mallory"), "role": "validator"})
    ).ok
    chain.block()
    assert chain.submit(
        chain.tx("validator", "validator.propose", {"power": 100, "pub_key": chain.pub("mallory")})
    ).ok
    chain.block()
    h = chain.app.height  # the change was decided in block h: it signs from h + 2 on
    assert len(chain.app.validators()) == 2
    assert [v.power for v in chain.app.validators_for(h + 1)] == [10]
    assert sorted(v.power for v in chain.app.validators_for(h + 2)) == [10, 100]
    chain.block()  # h + 1: still the old set, which the solo key controls
    with pytest.raises(SoloError, match="2/3"):
        chain.block()
    assert chain.app.height == h + 1
    assert verify_chain(chain.store.path).ok


def test_gate_failed_committed_tx_cannot_come_back(tmp_path):
    """A suspended member's tx lands in a block (another proposer put it there) and fails the
    gate without consuming its sequence number; after reinstatement the same bytes would pass
    the sequence check, but they are committed already: refused as a duplicate, even after a
    restart."""
    chain = make_chain(tmp_path)
    assert chain.submit(chain.tx("vendor", "member.suspend", {"member": chain.pub("alice")})).ok
    chain.block()
    raw = chain.tx(
        "alice", "token.transfer", {"amount": 5, "denom": "utoken", "to": chain.pub("bob")}, seq=0
    )
    res = commit_block(chain, [raw])
    assert res.tx_results[0].code == codes.MEMBER_INACTIVE
    assert chain.submit(chain.tx("vendor", "member.reinstate", {"member": chain.pub("alice")})).ok
    chain.block()
    r = chain.submit(raw)
    assert r.code == codes.DUPLICATE and "already committed" in r.log
    from gridledger.chain.app import LedgerApp

    assert LedgerApp(chain.store).check_tx(raw).code == codes.DUPLICATE


class _ProtocolOnly:
    """The application as an engine may see it: only the Application protocol's members."""

    def __init__(self, app) -> None:
        self._app = app

    def __getattr__(self, name: str):
        if not hasattr(Application, name) or name.startswith("_"):
            raise AttributeError(
                f"engine reached {name!r}, which is not in the Application protocol"
            )
        return getattr(self._app, name)


def test_solo_engine_uses_only_the_application_protocol(tmp_path):
    """Blocks decided through a protocol-only view are the blocks the app itself would get."""
    chain = make_chain(tmp_path)
    view = _ProtocolOnly(chain.app)
    with pytest.raises(AttributeError, match="not in the Application protocol"):
        view.lock  # noqa: B018 - the app's lock is not part of the protocol
    eng = SoloEngine(
        view, chain.store, chain.mempool, chain.keys["validator"], clock_ms=lambda: chain.clock[0]
    )
    before = chain.store.height()
    raw = chain.tx(
        "alice", "token.transfer", {"amount": 5, "denom": "utoken", "to": chain.pub("bob")}
    )
    assert chain.submit(raw).ok
    chain.clock[0] += 1000
    block = eng.produce_block()
    assert block is not None and chain.store.height() == before + 1
    assert block.header.app_hash != chain.app.info().last_block_app_hash  # the state moved on
    assert chain.result(raw).code == codes.OK
    assert verify_chain(chain.store.path).ok  # a replay agrees with what the engine committed
