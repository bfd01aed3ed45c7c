"""Cost of matching orders with a power profile against constant orders, on the embedded chain.

One chain (LedgerApp + SQLite store + solo engine) with the market's longest window
(``max_window_slots`` = 96, 24 h of 15-minute slots).  Each round times two blocks, in turn (so
the load of a shared machine falls on both alike), of ``--pairs`` offer + bid pairs that match
each other in full over a 96-slot window:

- constant: a 5 kW offer and a 5 kW bid (the rule before profiles; the reference);
- profiled: an offer and a bid with the same 96-entry profile, different in every slot.

Cost = CPU time of admission (check_tx) + block execution + commit, divided by the block's
transactions; the state a pair adds (bytes of new or changed keys and values) is counted after
each block.  Prints the medians and the range over rounds, and ends with one JSON line whose
``cost_ratio_profiled_vs_constant`` is the median over rounds of profiled / constant.

    PYTHONPATH=src python bench/market_profiles.py [--pairs 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain

SLOT = 900_000
T0 = 1_800_000_000_000 // SLOT * SLOT
SLOTS = 96
CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]
# a PV-like shape: zero at night, rising to 5 kW at noon, a different value in every day slot
PROFILE = [max(0, 5_000 - abs(k - 48) * 140) for k in range(SLOTS)]


def _key(i: int) -> KeyPair:
    return KeyPair.from_seed(f"bench-profiles-{i}".encode().ljust(32, b"\0"))


class Bench:
    def __init__(self, home: Path, members: int) -> None:
        self.keys = [_key(i) for i in range(members)]
        dso, self.val = _key(-2), _key(-1)
        roster = [{"pub_key": dso.pub_hex, "role": "dso", "name": "dso"}]
        roster += [
            {"pub_key": k.pub_hex, "role": "prosumer", "name": f"p{i}", "bus": i + 1}
            for i, k in enumerate(self.keys)
        ]
        funds = [{"account": k.pub_hex, "denom": "utoken", "amount": 10**15} for k in self.keys]
        genesis = make_genesis(
            "bench-profiles", T0 - SLOT, [(self.val.pub_hex, 1)], roster, funds, CONTRACTS
        )
        self.now = T0 - SLOT + 1
        self.chain = LocalChain(home, genesis, self.val, self.now)
        self.chain.submit(dso, "market.configure", {"max_window_slots": SLOTS})
        self._produce()
        self.member = 0

    def _produce(self) -> None:
        self.now += 1
        self.chain.produce(self.now)

    def _next(self) -> int:
        self.member = (self.member + 1) % len(self.keys)
        return self.member

    def _pair(self, profiled: bool) -> list[str]:
        seller, buyer = self._next(), self._next()
        power = {"power_w": max(PROFILE), "profile_w": PROFILE} if profiled else {"power_w": 5_000}
        window = {"start_ms": T0, "end_ms": T0 + SLOTS * SLOT}
        offer = {"node": seller + 1, "regulation_var": 0, "price_utoken_per_kwh": 100_000}
        bid = {"node": buyer + 1, "max_price_utoken_per_kwh": 100_000}
        out = []
        for who, tx_type, payload in (
            (seller, "market.offer", {**offer, **power, **window}),
            (buyer, "market.bid", {**bid, **power, **window}),
        ):
            res = self.chain.submit(self.keys[who], tx_type, payload)
            if not res.ok:
                raise RuntimeError(f"{tx_type} refused at admission: {res.log}")
            out.append(res.txid)
        return out

    def _state_bytes(self) -> dict[bytes, int]:
        return {k: len(k) + len(v) for k, v in self.chain.app._committed.items()}

    def timed_block(self, pairs: int, profiled: bool) -> tuple[float, int]:
        """(CPU seconds per transaction, state bytes added per pair) for one block."""
        before = self._state_bytes()
        c = time.process_time()
        txids = [t for _ in range(pairs) for t in self._pair(profiled)]
        self._produce()
        cpu = (time.process_time() - c) / len(txids)
        for txid in txids:
            res = self.chain.result(txid)
            if not res.ok:
                raise RuntimeError(f"a timed transaction failed: {res.log}")
        after = self._state_bytes()
        grown = sum(n for k, n in after.items() if before.get(k) != n)
        return cpu, grown // pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=20, help="offer + bid pairs per timed block")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # each member posts one order per round and kind: far inside the 256 open-order cap
        bench = Bench(Path(tmp), members=4 * args.pairs)
        bench.timed_block(2, False)  # warm-up: imports, caches, first SQLite pages
        bench.timed_block(2, True)
        rows = {"constant": [], "profiled": []}
        for _ in range(args.rounds):
            for kind in ("constant", "profiled"):
                rows[kind].append(bench.timed_block(args.pairs, kind == "profiled"))
        bench.chain.close()
    ratios = [p[0] / c[0] for c, p in zip(rows["constant"], rows["profiled"], strict=True)]
    for kind, xs in rows.items():
        ms = [1000 * x[0] for x in xs]
        print(
            f"{kind:>9}: {statistics.median(ms):.2f} ms/tx (range {min(ms):.2f}-{max(ms):.2f}), "
            f"{xs[0][1]} state bytes per matched pair"
        )
    print(f"profiled / constant: median {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}) over {args.rounds} rounds")  # fmt: skip
    summary = {
        "bench": "market_profiles",
        "slots": SLOTS,
        "pairs_per_block": args.pairs,
        "rounds": args.rounds,
        "constant_ms_per_tx": round(1000 * statistics.median(x[0] for x in rows["constant"]), 3),
        "profiled_ms_per_tx": round(1000 * statistics.median(x[0] for x in rows["profiled"]), 3),
        "constant_state_bytes_per_pair": rows["constant"][0][1],
        "profiled_state_bytes_per_pair": rows["profiled"][0][1],
        "cost_ratio_profiled_vs_constant": round(statistics.median(ratios), 3),
        "cost_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
