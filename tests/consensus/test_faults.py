"""Fault injection on real validator processes (4 validators on loopback, short timeouts).

Every test ends with the invariant check: at every height all nodes hold the same block hash.
The honest network is shared by the tests of this module (each leaves it whole again), the
byzantine ones get their own.
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from gridledger.chain.abci import Validator
from gridledger.chain.consensus.tendermint.light import LightClient
from gridledger.chain.keys import KeyPair
from gridledger.chain.tx import make_tx, tx_id
from gridledger.node.bft_testnet import FAST_TIMEOUTS, Testnet, TestnetError, init_testnet
from gridledger.node.client import LedgerClient

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("bft_faults"), pytest.mark.timeout(300)]


def _net(tmp_path_factory, name: str, **kw) -> Testnet:
    home = tmp_path_factory.mktemp(name)
    init_testnet(
        home,
        4,
        timeouts=FAST_TIMEOUTS,
        status_interval_s=0.2,
        stuck_after_s=0.5,
        empty_block_interval_s=0.2,
        **kw,
    )
    net = Testnet(home)
    net.start()
    try:
        # an equivocating validator can be jailed in block 1 and cut off before block 2
        net.wait_height(2, [i for i in range(4) if i not in kw.get("byzantine", {})], timeout_s=60)
    except BaseException:
        net.close()  # never leave validator processes behind
        raise
    return net


ALICE = KeyPair.from_seed(hashlib.sha256(b"faults-alice").digest())
BOB = KeyPair.from_seed(hashlib.sha256(b"faults-bob").digest())


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    n = _net(
        tmp_path_factory,
        "honest",
        members=[
            {"name": "dso", "pub_key": KeyPair.generate().pub_hex, "role": "dso"},
            {"name": "alice", "pub_key": ALICE.pub_hex, "role": "prosumer"},
            {"name": "bob", "pub_key": BOB.pub_hex, "role": "prosumer"},
        ],
        balances=[{"account": ALICE.pub_hex, "amount": 1000, "denom": "utoken"}],
    )
    yield n
    n.close()


def _max_height(net: Testnet, idx: list[int]) -> int:
    return max(net.heights(idx).values())


def _stalled(net: Testnet, idx: list[int], wait_s: float) -> bool:
    """True if no node of ``idx`` commits during ``wait_s`` (after in-flight commits land)."""
    time.sleep(1.0)
    before = net.heights(idx)
    time.sleep(wait_s)
    after = net.heights(idx)
    return before == after


def test_ledger_client_and_light_client_against_the_bft_network(net):
    """The ledger's own client works unchanged; a light client checks the proof."""
    raw = make_tx(
        ALICE,
        net.chain_id,
        0,
        "token.transfer",
        {"amount": 11, "denom": "utoken", "to": BOB.pub_hex},
    ).raw
    with LedgerClient(net.api_urls[1]) as c1, LedgerClient(net.api_urls[3]) as c3:
        assert c1.submit(raw)["code"] == 0
        bad = make_tx(
            ALICE,
            net.chain_id,
            0,
            "token.transfer",
            {"amount": 10**9, "denom": "utoken", "to": BOB.pub_hex},
        ).raw
        assert c1.submit(bad)["code"] != 0  # replayed sequence: refused at the gate
        st = c3.wait_tx(tx_id(raw).hex(), timeout_s=30)  # committed, seen on another node
        assert st["code"] == 0
        assert c3.account(BOB.pub_hex)["balances"]["utoken"] == 11
        proof = c3.tx_proof(tx_id(raw).hex())
    h = proof["header"]["height"]
    vals = net._http.get(f"{net.api_urls[0]}/validators", params={"height": h}).json()
    signers = [Validator(bytes.fromhex(v["pub_key"]), v["power"]) for v in vals["validators"]]
    genesis_set = [Validator(n.pub_key, 1) for n in net.nodes]
    assert "is in block" in LightClient(net.chain_id, genesis_set).verify_tx(proof, signers)


def test_sigkill_one_others_continue_and_it_catches_up(net):
    net.kill(3)
    h = _max_height(net, [0, 1, 2])
    net.wait_height(h + 5, [0, 1, 2], timeout_s=60)
    net.start([3])
    top = _max_height(net, [0, 1, 2])
    net.wait_height(top, [3], timeout_s=60)
    net.wait_height(top + 2, timeout_s=60)  # and it takes part again
    assert net.check_agreement() >= top


def test_sigstop_then_sigcont_catches_up_without_fork(net):
    net.pause(2)
    try:
        h = _max_height(net, [0, 1, 3])
        net.wait_height(h + 5, [0, 1, 3], timeout_s=60)
    finally:
        net.resume(2)
    top = _max_height(net, [0, 1, 3])
    net.wait_height(top + 1, timeout_s=60)
    assert net.check_agreement() >= top


def test_node_with_a_wiped_store_syncs_the_whole_chain_from_peers(net):
    """A new (or rebuilt) node fetches every block, checks commits and state roots, rejoins."""
    net.kill(1)
    data = net.nodes[1].home / "data"
    for f in data.iterdir():
        if f.name != "privval_state.json":  # the signer's memory stays: it must not double-sign
            f.unlink()
    top = _max_height(net, [0, 2, 3])
    net.start([1])
    net.wait_height(top + 2, [1], timeout_s=90)
    assert net.check_agreement() >= top + 2


def test_partition_two_two_stalls_then_heals(net):
    net.partition([[0, 1], [2, 3]])
    try:
        assert _stalled(net, [0, 1, 2, 3], 3.0), "a 2|2 partition must not commit"
    finally:
        net.heal()
    h = _max_height(net, [0, 1, 2, 3])
    net.wait_height(h + 3, timeout_s=90)
    net.check_agreement()


def test_negative_control_two_of_four_down_then_one_back(net):
    net.kill(2)
    net.kill(3)
    try:
        assert _stalled(net, [0, 1], 3.0), "2 of 4 validators must not commit"
        net.start([3])
        h = _max_height(net, [0, 1])
        net.wait_height(h + 3, [0, 1, 3], timeout_s=90)
    finally:
        net.start([2])
    net.wait_height(_max_height(net, [0, 1, 3]), timeout_s=90)
    net.check_agreement()


def test_equivocating_validator_is_jailed_everywhere(tmp_path_factory):
    """Evidence is committed on every honest node and the equivocator loses its power."""
    net = _net(tmp_path_factory, "equivocate", byzantine={3: ["equivocate"]})
    try:
        culprit = net.nodes[3].pub_key.hex()
        deadline = time.monotonic() + 60
        jailed: dict[int, dict] = {}
        while time.monotonic() < deadline and len(jailed) < 3:
            for i in range(3):
                r = net._http.get(f"{net.nodes[i].api_url}/state/jail/{culprit}")
                value = r.json().get("value") if r.status_code == 200 else None
                if value is not None:
                    jailed[i] = json.loads(bytes.fromhex(value))
            time.sleep(0.3)
        assert sorted(jailed) == [0, 1, 2], f"not jailed on every honest node: {jailed}"
        rec = jailed[0]
        assert all(r == rec for r in jailed.values())
        assert rec["reason"].startswith("duplicate prevote at height ") and rec["power"] == 1
        for i in range(3):
            r = net._http.get(f"{net.nodes[i].api_url}/state/misbehavior/{culprit}")
            assert int(bytes.fromhex(r.json()["value"])) >= 1
        # From two heights after the jailing block the set has three validators, and the three
        # honest ones (3 of 3 > 2/3) go on committing without it.
        net.wait_height(rec["from_height"] + 3, [0, 1, 2], timeout_s=60)
        for h, expect_in in ((rec["from_height"] - 1, True), (rec["from_height"], False)):
            vals = net._http.get(f"{net.api_urls[1]}/validators", params={"height": h}).json()
            keys = {v["pub_key"] for v in vals["validators"]}
            assert (culprit in keys) is expect_in, (h, keys)
        net.check_agreement([0, 1, 2])
    finally:
        net.close()


def test_proposer_sending_two_blocks_cannot_fork(tmp_path_factory):
    net = _net(tmp_path_factory, "split", byzantine={0: ["split_proposal"]})
    try:
        # Node 0 proposes about once every 4 heights; 12 heights cover several of its turns.
        # Its two proposals for one round are evidence: it is jailed, and the others cut its
        # links from the height its power is gone, so it stays behind on a prefix.
        net.wait_height(12, [1, 2, 3], timeout_s=120)
        net.check_agreement()  # node 0's (shorter) history included: no fork
        top = net.check_agreement([1, 2, 3])
        assert top >= 12
        proposers = set()
        for h in range(2, top + 1):
            blk = net._http.get(f"{net.nodes[1].api_url}/blocks/{h}").json()
            proposers.add(blk["header"]["proposer"])
        assert net.nodes[0].pub_key.hex() in proposers or len(proposers) == 3
    except TestnetError:
        net.close()
        raise
    finally:
        net.close()
