"""Fault injection on real validator processes (4 validators on loopback, short timeouts).

Every test ends with the invariant check: at every height all nodes hold the same block hash.
The honest network is shared by the tests of this module (each leaves it whole again), the
byzantine ones get their own.
"""

from __future__ import annotations

import time

import pytest

from gridledger.node.bft_testnet import FAST_TIMEOUTS, Testnet, TestnetError, init_testnet

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("bft_faults"), pytest.mark.timeout(300)]


def _net(tmp_path_factory, name: str, **kw) -> Testnet:
    home = tmp_path_factory.mktemp(name)
    init_testnet(home, 4, timeouts=FAST_TIMEOUTS, status_interval_s=0.2, stuck_after_s=0.5, **kw)
    net = Testnet(home)
    net.start()
    net.wait_height(2, timeout_s=60)
    return net


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    n = _net(tmp_path_factory, "honest")
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


def test_equivocating_validator_evidence_committed_everywhere(tmp_path_factory):
    net = _net(tmp_path_factory, "equivocate", byzantine={3: ["equivocate"]})
    try:
        culprit = net.nodes[3].pub_key.hex()
        deadline = time.monotonic() + 60
        found: dict[int, int] = {}
        while time.monotonic() < deadline and len(found) < 3:
            for i in range(3):
                r = net._http.get(f"{net.nodes[i].api_url}/state/misbehavior/{culprit}")
                if r.status_code == 200:
                    found[i] = int(r.json()["value"])
            time.sleep(0.3)
        assert sorted(found) == [0, 1, 2], f"evidence not committed on every honest node: {found}"
        assert all(v >= 1 for v in found.values())
        net.wait_height(_max_height(net, [0, 1, 2]) + 1, timeout_s=60)
        net.check_agreement()
    finally:
        net.close()


def test_proposer_sending_two_blocks_cannot_fork(tmp_path_factory):
    net = _net(tmp_path_factory, "split", byzantine={0: ["split_proposal"]})
    try:
        # Node 0 proposes about once every 4 heights; 12 heights cover several of its turns.
        net.wait_height(12, timeout_s=120)
        top = net.check_agreement()
        assert top >= 12
        proposers = set()
        for h in range(2, top + 1):
            blk = net._http.get(f"{net.nodes[1].api_url}/block/{h}").json()
            proposers.add(blk["header"]["proposer"])
        assert net.nodes[0].pub_key.hex() in proposers or len(proposers) == 3
    except TestnetError:
        net.close()
        raise
    finally:
        net.close()
