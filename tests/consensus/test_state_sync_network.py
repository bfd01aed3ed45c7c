"""State sync on real processes: 3 of 4 validators run a chain with transactions and take
snapshots; the 4th validator and a follower start from a snapshot instead of genesis.

Each joiner trusts one header (height and hash, as an operator would copy them from a node it
trusts), light-client-verifies the header after the snapshot, fetches and checks the chunks
from its peers, and block-syncs from the snapshot's height: it never holds (or executes) the
blocks before it. Then it serves the same app hash and balances as the validators, the joined
validator signs (the chain goes on with a founding validator stopped), and the verifier passes
for the blocks each joiner has, replayed from the snapshot it kept.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from gridledger.chain.keys import KeyPair
from gridledger.chain.tx import make_tx, tx_id
from gridledger.chain.verify import verify_chain
from gridledger.node.bft_testnet import FAST_TIMEOUTS, Testnet, init_testnet
from gridledger.node.client import LedgerClient

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("bft_faults"), pytest.mark.timeout(300)]

ALICE = KeyPair.from_seed(hashlib.sha256(b"statesync-alice").digest())
BOB = KeyPair.from_seed(hashlib.sha256(b"statesync-bob").digest())
JOINER, FOLLOWER = 3, 4
INTERVAL = 4
# Snapshots kept per node: with a block every ~0.2 s, 2 kept lived ~1.6 s, shorter than a
# loaded CI machine takes to verify the headers and fetch the chunks ("no peer keeps snapshot
# N any more", chased forever). 32 keep ~25 s of chain; pruning is still checked below.
KEEP = 32


def _get(url: str) -> dict:
    r = httpx.get(url, timeout=5.0)
    r.raise_for_status()
    return r.json()


def _config(net: Testnet, i: int, **changes) -> None:
    path = net.nodes[i].home / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def test_a_validator_and_a_follower_join_from_a_snapshot(tmp_path):
    init_testnet(
        tmp_path,
        4,
        followers=1,
        timeouts=FAST_TIMEOUTS,
        status_interval_s=0.2,
        stuck_after_s=0.5,
        empty_block_interval_s=0.2,
        members=[
            {"name": "dso", "pub_key": KeyPair.generate().pub_hex, "role": "dso"},
            {"name": "alice", "pub_key": ALICE.pub_hex, "role": "prosumer"},
            {"name": "bob", "pub_key": BOB.pub_hex, "role": "prosumer"},
        ],
        balances=[{"account": ALICE.pub_hex, "amount": 10_000, "denom": "utoken"}],
    )
    net = Testnet(tmp_path)
    for i in range(3):  # small chunks: the snapshot is cut into several
        _config(net, i, snapshot_interval=INTERVAL, snapshot_chunk_bytes=512, snapshot_keep=KEEP)
    try:
        net.start([0, 1, 2])  # 3 of 4 equal powers: > 2/3, the chain runs without node3
        net.wait_height(1, [0, 1, 2], timeout_s=60)
        trust = _get(f"{net.api_urls[0]}/blocks/1")
        raws = [
            make_tx(
                ALICE,
                net.chain_id,
                s,
                "token.transfer",
                {"amount": 10 + s, "denom": "utoken", "to": BOB.pub_hex},
            ).raw
            for s in range(6)
        ]
        with LedgerClient(net.api_urls[0]) as c:
            for r in raws:
                assert c.submit(r)["code"] == 0
            for r in raws:
                assert c.wait_tx(tx_id(r).hex(), timeout_s=30)["code"] == 0
        top = max(net.heights([0, 1, 2]).values())
        net.wait_height(max(top, 2 * INTERVAL) + 1, [0, 1, 2], timeout_s=60)
        offered = _get(net.api_urls[0] + "/status")["snapshots"]
        assert offered and all(h % INTERVAL == 0 for h in offered) and len(offered) <= KEEP

        state_sync = {"trust_height": 1, "trust_hash": trust["hash"], "timeout_s": 60}
        for i in (JOINER, FOLLOWER):
            _config(net, i, state_sync=state_sync)
        net.start([JOINER, FOLLOWER])
        h = max(net.heights([0, 1, 2]).values())
        net.wait_height(h + 2, timeout_s=90)

        for i in (JOINER, FOLLOWER):
            st = _get(net.api_urls[i] + "/status")
            sync = st["state_sync"]
            assert sync is not None and sync["height"] >= INTERVAL
            # the newest snapshot can be above h + 2: wait for the blocks after it
            net.wait_height(sync["height"] + 2, [i], timeout_s=60)
            assert st["base_height"] == sync["height"]
            assert sync["peers_dropped"] == {} and sync["manifests_refused"] == 0
            assert sync["chunks"] >= 2
            # no replay from genesis: the blocks before the snapshot are not here
            with pytest.raises(httpx.HTTPStatusError):
                _get(f"{net.api_urls[i]}/blocks/1")
            assert _get(f"{net.api_urls[i]}/blocks/{sync['height'] + 1}")["header"]["height"]
            with LedgerClient(net.api_urls[i]) as c:
                assert c.account(BOB.pub_hex)["balances"]["utoken"] == sum(10 + s for s in range(6))
                assert c.account(ALICE.pub_hex)["seq"] == 6
                # replay protection holds after the restore: a committed tx comes back refused
                assert c.submit(raws[0])["code"] != 0

        assert net.check_agreement() >= h + 2  # one chain on all five
        common = min(net.heights().values())
        hashes = {
            i: _get(f"{net.api_urls[i]}/blocks/{common}")["header"]["app_hash"] for i in range(5)
        }
        assert len(set(hashes.values())) == 1

        # the joined validator signs: with a founding validator stopped, 3 of 4 still commit
        net.stop([0])
        h = max(net.heights([1, 2, JOINER]).values())
        net.wait_height(h + 2, [1, 2, JOINER, FOLLOWER], timeout_s=90)
        blk = _get(f"{net.api_urls[1]}/blocks/{h + 2}")
        signers = {s["validator"] for s in blk["commit"]["signatures"]}
        # > 2/3 of 4 equal powers is 3 signatures: with node0 stopped, node3 must be one
        assert net.nodes[JOINER].pub_key.hex() in signers

        for i in (JOINER, FOLLOWER):
            rep = verify_chain(net.nodes[i].home / "data" / "chain.db")
            assert rep.ok, rep.problem
            assert rep.base_height >= INTERVAL and rep.blocks >= 2
    finally:
        net.close()
