"""Follower nodes on real processes: 4 validators + 1 follower on loopback.

The follower holds no validator power and no signer. It syncs every block from the validators,
verifies each commit against that height's validator set, executes the block, and serves the
read API with the same state as the validators; it never votes or proposes, and it refuses
forged blocks sent over an authenticated link by a peer it allows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import time

import httpx
import pytest

from gridledger.chain.abci import Validator
from gridledger.chain.block import Block, make_header, validator_set_hash
from gridledger.chain.consensus.tendermint.ledger import encode_block
from gridledger.chain.consensus.tendermint.reactor import K_BLOCK, frame_limits
from gridledger.chain.consensus.tendermint.types import Commit, Vote, VoteType, vote_sign_bytes
from gridledger.chain.keys import KeyPair
from gridledger.chain.p2p.transport import PeerAddress, Transport
from gridledger.chain.tx import make_tx, tx_id
from gridledger.node.bft_testnet import FAST_TIMEOUTS, Testnet, free_ports, init_testnet
from gridledger.node.client import LedgerClient

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("bft_faults"), pytest.mark.timeout(300)]

ALICE = KeyPair.from_seed(hashlib.sha256(b"follower-alice").digest())
BOB = KeyPair.from_seed(hashlib.sha256(b"follower-bob").digest())
ROGUE = KeyPair.from_seed(hashlib.sha256(b"follower-rogue-peer").digest())
STRANGERS = [KeyPair.from_seed(hashlib.sha256(f"stranger-{i}".encode()).digest()) for i in range(4)]
FOLLOWER = 4


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    home = tmp_path_factory.mktemp("followers")
    desc = init_testnet(
        home,
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
        balances=[{"account": ALICE.pub_hex, "amount": 1000, "denom": "utoken"}],
    )
    # The follower also lets in one more peer (the test's "rogue", which sends forged blocks).
    (rogue_port,) = free_ports(1)
    cfg_path = home / "node4" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["peers"].append(
        {"name": "rogue", "pub_key": ROGUE.pub_hex, "host": "127.0.0.1", "port": rogue_port}
    )
    cfg["allow"].append({"name": "rogue", "pub_key": ROGUE.pub_hex})
    cfg_path.write_text(json.dumps(cfg))
    assert [n["role"] for n in desc["nodes"]] == ["validator"] * 4 + ["follower"]
    n = Testnet(home)
    n.rogue_port = rogue_port
    n.follower_p2p = tuple(desc["nodes"][FOLLOWER]["p2p"])
    n.start()
    try:
        n.wait_height(2, timeout_s=60)
    except BaseException:
        n.close()
        raise
    yield n
    n.close()


def _get(url: str) -> dict:
    r = httpx.get(url, timeout=5.0)
    r.raise_for_status()
    return r.json()


def test_follower_syncs_executes_and_serves_the_same_state(net):
    raws = [
        make_tx(
            ALICE,
            net.chain_id,
            s,
            "token.transfer",
            {"amount": 7, "denom": "utoken", "to": BOB.pub_hex},
        ).raw
        for s in range(3)
    ]
    follower_url = net.api_urls[FOLLOWER]
    with LedgerClient(follower_url) as cf:
        # A transaction sent to the follower is forwarded to the validators and committed.
        assert cf.submit(raws[0])["code"] == 0
        assert cf.wait_tx(tx_id(raws[0]).hex(), timeout_s=30)["code"] == 0
    with LedgerClient(net.api_urls[1]) as c1:
        for r in raws[1:]:
            assert c1.submit(r)["code"] == 0
        for r in raws[1:]:
            assert c1.wait_tx(tx_id(r).hex(), timeout_s=30)["code"] == 0
    top = max(net.heights(list(range(4))).values())
    net.wait_height(top + 1, timeout_s=60)
    assert net.check_agreement() >= top  # the same block hash at every height on all five
    with LedgerClient(follower_url) as cf:
        for r in raws:
            assert cf.wait_tx(tx_id(r).hex(), timeout_s=5)["code"] == 0
        assert cf.account(BOB.pub_hex)["balances"]["utoken"] == 21
    # The follower's state root after its height h equals the app_hash that the validators
    # put in header h + 1 (docs/ledger.md); and /state serves the same value as a validator.
    st = _get(follower_url + "/status")
    assert st["role"] == "follower"
    h = st["height"]
    net.wait_height(h + 1, indices=[0], timeout_s=30)
    nxt = _get(f"{net.api_urls[0]}/blocks/{h + 1}")
    assert nxt["header"]["app_hash"] == st["app_hash"]
    key = f"bal/utoken/{BOB.pub_hex}"
    assert (
        _get(f"{follower_url}/state/{key}")["value"]
        == _get(f"{net.api_urls[2]}/state/{key}")["value"]
    )
    # The same block (each node keeps the commit it gathered: any > 2/3 of the precommits).
    fb, vb = _get(f"{follower_url}/blocks/{h}"), _get(f"{net.api_urls[3]}/blocks/{h}")
    assert {k: fb[k] for k in ("hash", "header", "txs")} == {
        k: vb[k] for k in ("hash", "header", "txs")
    }


def test_follower_never_votes_or_proposes(net):
    follower = net.nodes[FOLLOWER]
    assert not (follower.home / "data" / "privval_state.json").exists()
    top = net.wait_height(3)[FOLLOWER]
    validators = {n.pub_key.hex() for n in net.nodes[:4]}
    for h in range(1, top + 1):
        blk = _get(f"{net.api_urls[0]}/blocks/{h}")
        assert blk["header"]["proposer"] in validators
        signers = {s["validator"] for s in blk["commit"]["signatures"]}
        assert follower.pub_key.hex() not in signers and signers <= validators
    vals = _get(f"{net.api_urls[FOLLOWER]}/validators")["validators"]
    assert follower.pub_key.hex() not in {v["pub_key"] for v in vals}


def _commit(chain_id: str, h: int, block_id: bytes, signers, keys: list[KeyPair]) -> Commit:
    """Precommits for ``block_id`` claiming to be from ``signers``, signed with ``keys``."""
    msg = vote_sign_bytes(chain_id, VoteType.PRECOMMIT, h, 0, block_id)
    votes = tuple(
        Vote(VoteType.PRECOMMIT, h, 0, block_id, pk, k.signing_key.sign(msg).signature)
        for pk, k in zip(signers, keys, strict=True)
    )
    return Commit(h, 0, block_id, votes)


def _forged_frames(chain_id: str, last: dict, app_hash: bytes, vals: list[Validator]):
    """Blocks for the follower's next height that a set of strangers would like it to take."""
    h = last["header"]["height"] + 1
    strangers = [Validator(k.pub_key, 1) for k in STRANGERS]

    def block(validators) -> tuple[bytes, bytes]:
        header = make_header(
            chain_id,
            h,
            last["header"]["time_ms"] + 1,
            bytes.fromhex(last["hash"]),
            validators[0].pub_key,
            [],
            lambda raw: "other",
            app_hash,
            bytes.fromhex(last["header"]["last_results_hash"]),
            validators,
            validators,
        )
        return encode_block(Block(header, ())), header.hash()

    def frame(data: bytes, commit: Commit) -> bytes:
        return struct.pack(">QI", h, len(data)) + data + commit.encode()

    real, real_id = block(vals)
    own, own_id = block(strangers)
    return [
        # the real set's hash in the header, signed by strangers under their own keys
        frame(real, _commit(chain_id, h, real_id, [k.pub_key for k in STRANGERS], STRANGERS)),
        # ... or under the validators' keys (the signatures cannot verify)
        frame(real, _commit(chain_id, h, real_id, [v.pub_key for v in vals], STRANGERS)),
        # a header naming the strangers' own set, with a commit that set really signed
        frame(own, _commit(chain_id, h, own_id, [k.pub_key for k in STRANGERS], STRANGERS)),
    ]


async def _send_as_rogue(net, frames: list[bytes]) -> int:
    follower = net.nodes[FOLLOWER].pub_key
    host, port = net.follower_p2p
    received: list[int] = []
    rogue = Transport(
        net.chain_id,
        ROGUE.signing_key,
        "127.0.0.1",
        net.rogue_port,
        [PeerAddress(follower, host, port)],
        {follower},
        lambda pk, kind, payload: received.append(kind),
        frame_limits=frame_limits(4 * 1024 * 1024, 5000),
    )
    await rogue.start()
    try:
        for _ in range(200):
            if follower in rogue.connected():
                break
            await asyncio.sleep(0.05)
        assert follower in rogue.connected(), "the follower did not let its allowed peer in"
        sent = sum(rogue.send(follower, K_BLOCK, f) for f in frames)
        await asyncio.sleep(1.0)
        return sent
    finally:
        await rogue.close()


def test_follower_refuses_forged_blocks_from_an_allowed_peer(net):
    follower_url = net.api_urls[FOLLOWER]
    vals = [
        Validator(bytes.fromhex(v["pub_key"]), v["power"])
        for v in _get(f"{follower_url}/validators")["validators"]
    ]
    for i in range(4):  # freeze the validators: the forged block would be the next one
        net.pause(i)
    try:
        time.sleep(0.5)
        st = _get(follower_url + "/status")
        h = st["height"]
        last = _get(f"{follower_url}/blocks/{h}")
        assert validator_set_hash(vals) == bytes.fromhex(last["header"]["next_validators_hash"])
        frames = _forged_frames(net.chain_id, last, bytes.fromhex(st["app_hash"]), vals)
        assert asyncio.run(_send_as_rogue(net, frames)) == len(frames)
        after = _get(follower_url + "/status")
        assert after["height"] == h  # nothing was taken
        assert after["rejected_msgs"] >= st["rejected_msgs"] + len(frames)
    finally:
        for i in range(4):
            net.resume(i)
    net.wait_height(h + 2, timeout_s=60)
    assert net.check_agreement() >= h + 2  # and the follower stays on the validators' chain
