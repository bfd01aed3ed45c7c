"""The peer allow-list follows validator-set changes while the nodes run (real processes).

4 validators and one candidate (``node4``: a member with role ``validator``, no power, whose
address every validator knows but which is on no allow-list). Before the committee votes it
in, every validator refuses its links, so it learns nothing. From the height its power takes
effect the validators let it in without a restart: it syncs, and signs commits. After the
committee votes it out (power 0, the path jailing also takes), the validators close its links
from the height its power is gone, and it falls behind while the four go on.
"""

from __future__ import annotations

import time

import httpx
import pytest

from gridledger.chain.keys import load_key
from gridledger.chain.tx import make_tx, tx_id
from gridledger.node.bft_testnet import FAST_TIMEOUTS, Testnet, init_testnet
from gridledger.node.client import LedgerClient

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("bft_faults"), pytest.mark.timeout(300)]

CANDIDATE = 4
VALIDATORS = [0, 1, 2, 3]


def _get(url: str, **params) -> dict:
    r = httpx.get(url, params=params, timeout=5.0)
    r.raise_for_status()
    return r.json()


def _vote(net: Testnet, voters: list[int], power: int) -> int:
    """``validator.propose`` for the candidate from ``voters``; returns the approving height."""
    cand = net.nodes[CANDIDATE].pub_key.hex()
    url = net.api_urls[0]
    ids = []
    with LedgerClient(url) as c:
        for i in voters:
            key, _ = load_key(net.nodes[i].home / "key.json")
            seq = c.account(key.pub_hex)["next_seq"]
            raw = make_tx(
                key, net.chain_id, seq, "validator.propose", {"power": power, "pub_key": cand}
            ).raw
            assert c.submit(raw)["code"] == 0
            ids.append(tx_id(raw).hex())
        results = [c.wait_tx(t, timeout_s=30) for t in ids]
    assert all(r["code"] == 0 for r in results), results
    approved = [r for r in results if any(e["type"] == "validator.updated" for e in r["events"])]
    assert len(approved) == 1, results
    return approved[0]["height"]


def _peers(net: Testnet, i: int) -> list[str]:
    return _get(net.api_urls[i] + "/status")["peers"]


def _signers(net: Testnet, h: int) -> set[str]:
    blk = _get(f"{net.api_urls[0]}/blocks/{h}")
    return {s["validator"] for s in blk["commit"]["signatures"]}


def test_allow_list_follows_votes_in_and_out_without_restart(tmp_path):
    init_testnet(
        tmp_path,
        4,
        candidates=1,
        timeouts=FAST_TIMEOUTS,
        status_interval_s=0.2,
        stuck_after_s=0.5,
        empty_block_interval_s=0.2,
    )
    net = Testnet(tmp_path)
    cand = net.nodes[CANDIDATE]
    net.start()
    try:
        net.wait_height(3, indices=VALIDATORS, timeout_s=60)
        # Not in the set: refused by every validator right after the handshake, so it gets no
        # block. (Its own side may list a link for the moment before the refusal arrives.)
        time.sleep(1.0)
        assert _get(cand.api_url + "/status")["height"] == 0
        assert all("node4" not in _peers(net, i) for i in VALIDATORS)

        # Voted in by 3 of 4: let in from the height its power takes effect.
        approved = _vote(net, [0, 1, 2], power=1)
        effective = approved + 2
        net.wait_height(effective, indices=[0], timeout_s=60)
        vals = _get(net.api_urls[0] + "/validators", height=effective)["validators"]
        assert cand.pub_key.hex() in {v["pub_key"] for v in vals}
        before = _get(net.api_urls[0] + "/validators", height=effective - 1)["validators"]
        assert cand.pub_key.hex() not in {v["pub_key"] for v in before}
        top = net.wait_height(effective + 3, indices=VALIDATORS, timeout_s=60)[0]
        net.wait_height(top, indices=[CANDIDATE], timeout_s=60)  # it synced the chain
        assert sorted(_peers(net, CANDIDATE)) == [f"node{i}" for i in VALIDATORS]
        # ... and it signs: its precommit is in a later block's commit.
        deadline = time.monotonic() + 60
        h = top
        while cand.pub_key.hex() not in _signers(net, h):
            assert time.monotonic() < deadline, "the voted-in validator never signed a commit"
            h += 1
            net.wait_height(h, indices=[0], timeout_s=30)

        # Voted out by 4 of 5 (> 2/3): cut off from the height its power is gone.
        removed = _vote(net, VALIDATORS, power=0) + 2
        net.wait_height(removed + 2, indices=VALIDATORS, timeout_s=60)
        for i in VALIDATORS:
            assert "node4" not in _peers(net, i)
        stuck = _get(cand.api_url + "/status")["height"]
        assert stuck < removed
        top = max(net.heights(VALIDATORS).values())
        net.wait_height(top + 3, indices=VALIDATORS, timeout_s=60)
        assert _get(cand.api_url + "/status")["height"] == stuck  # nobody serves it any more
        assert net.check_agreement() >= stuck
    finally:
        net.close()
