"""Many submitters at once while the eager engine cuts blocks: nothing lost, nothing doubled."""

import threading

from gridledger.chain.keys import KeyPair, load_key
from gridledger.chain.tx import make_tx
from gridledger.chain.verify import verify_chain
from gridledger.node.home import NodeConfig, init_home
from gridledger.node.node import Node


def test_concurrent_submitters(tmp_path):
    home = tmp_path / "home"
    init_home(home, "conc")
    cfg = NodeConfig.load(home)
    cfg.eager, cfg.synchronous = True, "NORMAL"
    node = Node(home, cfg)
    node.start()
    try:
        dso = load_key(home / "keys" / "dso.json")[0]
        vendor = load_key(home / "keys" / "vendor.json")[0]
        users = [KeyPair.from_seed(bytes([50 + i]) * 32) for i in range(4)]
        for i, u in enumerate(users):
            assert (
                node.submit(
                    make_tx(
                        vendor,
                        "conc",
                        i,
                        "member.register",
                        {"bus": 2, "pub_key": u.pub_hex, "role": "prosumer"},
                    ).raw
                )["code"]
                == 0
            )
            assert (
                node.submit(
                    make_tx(
                        dso,
                        "conc",
                        i,
                        "token.mint",
                        {"amount": 10_000, "denom": "utoken", "to": u.pub_hex},
                    ).raw
                )["code"]
                == 0
            )
        per_user = 150
        results: dict[int, list] = {}

        def run(i: int) -> None:
            u, to = users[i], users[(i + 1) % len(users)].pub_hex
            results[i] = [
                node.submit(
                    make_tx(
                        u,
                        "conc",
                        s,
                        "token.transfer",
                        {"amount": 1 + s % 3, "denom": "utoken", "to": to},
                    ).raw
                )
                for s in range(per_user)
            ]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(users))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(r["code"] == 0 for rs in results.values() for r in rs)
        txids = [bytes.fromhex(r["txid"]) for rs in results.values() for r in rs]
        import time

        deadline = time.monotonic() + 60
        while len(node.mempool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.engine.error is None
        recs = [node.store.get_tx(t) for t in txids]
        assert all(r is not None and r.code == 0 for r in recs)
        assert len({(r.height, r.index) for r in recs}) == len(recs)
        for u in users:  # in a ring, each sends exactly what it receives from its neighbour
            acct = node.account(u.pub_hex)
            assert (acct["balances"]["utoken"], acct["seq"]) == (10_000, per_user)
    finally:
        node.stop()
    assert verify_chain(home / "data" / "chain.db").ok
