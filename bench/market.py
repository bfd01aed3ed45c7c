"""Cost of one market transaction as the order book grows (10 ... 100,000 open orders).

The embedded chain (LedgerApp + SQLite store + solo engine, the demo's LocalChain): 1,000
prosumers fill the book with offers and bids that do not cross (offers at 0.20-0.30 token/kWh,
bids at 0.01-0.10), windows of 1-4 quarter-hours starting anywhere in the next 45 hours (the
market's default 48 h horizon and 15-minute slots).  One chain per book size, all alive at
once; the bench times blocks of market transactions on each in turn, round after round (so the
load of a shared machine falls on every size alike): mempool admission (check_tx) + block
execution + commit, divided by the transactions in the block, in CPU time of the process (wall
time is printed too; it swings with other jobs on the machine):

- offer: a new offer that rests (searches the bids of its window, finds none at its price);
- bid: a new bid that rests (searches the offers that could cover it, finds none cheap enough);
- match: a bid that crosses one resting offer and is matched;
- cancel: withdrawing one of the orders the three steps above posted (so the book is back to
  its size for the next round).

The reference is the same operation on the 10-order book in the same run: the figure is
``median cost at N / median cost at 10`` over the rounds.  The issue's target: within 2x at
100,000.  Ends with one JSON line; ``cost_ratio_100k_vs_10`` is the worst of the four
operations.

    PYTHONPATH=src python bench/market.py [--max-orders 100000] [--block 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain

SLOT = 900_000
T0 = 1_800_000_000_000 // SLOT * SLOT
MEMBERS = 1_000  # 100 open orders each at 100k: inside the default cap of 256
FUNDS = 10**15
CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]
LEVELS = (10, 100, 1_000, 10_000, 100_000)
FILL_BLOCK = 2_000


def _key(i: int) -> KeyPair:
    return KeyPair.from_seed(f"bench-market-{i}".encode().ljust(32, b"\0"))


class Bench:
    def __init__(self, home: Path) -> None:
        self.keys = [_key(i) for i in range(MEMBERS)]
        self.val = _key(-1)
        members = [{"pub_key": _key(-2).pub_hex, "role": "dso", "name": "dso"}]
        members += [
            {"pub_key": k.pub_hex, "role": "prosumer", "name": f"p{i}", "bus": i + 1}
            for i, k in enumerate(self.keys)
        ]
        balances = [{"account": k.pub_hex, "denom": "utoken", "amount": FUNDS} for k in self.keys]
        genesis = make_genesis(
            "bench-market", T0 - SLOT, [(self.val.pub_hex, 1)], members, balances, CONTRACTS
        )
        self.chain = LocalChain(home, genesis, self.val, T0 - SLOT + 1)
        self.rng = random.Random(13)
        self.now = T0 - SLOT + 1
        self.orders = 0
        self.resting: list[tuple[int, int, int, int]] = []  # (member, start, end, price)
        self.next_member = 0

    def _member(self) -> int:
        self.next_member = (self.next_member + 1) % MEMBERS
        return self.next_member

    def _window(self) -> tuple[int, int]:
        start = T0 + self.rng.randrange(0, 180) * SLOT
        return start, start + self.rng.randint(1, 4) * SLOT

    def offer_payload(self, m: int, start: int, end: int, price: int) -> dict:
        return {
            "node": m + 1,
            "power_w": 10_000,
            "regulation_var": 0,
            "price_utoken_per_kwh": price,
            "start_ms": start,
            "end_ms": end,
        }

    def bid_payload(self, m: int, start: int, end: int, price: int, power_w: int = 1_000) -> dict:
        return {
            "node": m + 1,
            "power_w": power_w,
            "max_price_utoken_per_kwh": price,
            "start_ms": start,
            "end_ms": end,
        }

    def submit(self, m: int, tx_type: str, payload: dict) -> str:
        out = self.chain.submit(self.keys[m], tx_type, payload)
        if not out.ok:
            raise RuntimeError(f"{tx_type} refused at admission: {out.log}")
        return out.txid

    def produce(self) -> None:
        self.now += 1
        self.chain.produce(self.now)

    def fill_to(self, n: int) -> None:
        while self.orders < n:
            for _ in range(min(FILL_BLOCK, n - self.orders)):
                m = self._member()
                start, end = self._window()
                if self.orders % 2 == 0:
                    price = self.rng.randint(200_000, 300_000)
                    self.submit(m, "market.offer", self.offer_payload(m, start, end, price))
                    self.resting.append((m, start, end, price))
                else:
                    price = self.rng.randint(10_000, 100_000)
                    self.submit(m, "market.bid", self.bid_payload(m, start, end, price))
                self.orders += 1
            self.produce()

    def timed_block(self, make_txs) -> tuple[float, float]:
        """(CPU, wall) seconds per transaction for one block: admission + execution + commit."""
        c, t = time.process_time(), time.perf_counter()
        txids = make_txs()
        self.produce()
        cpu = (time.process_time() - c) / len(txids)
        wall = (time.perf_counter() - t) / len(txids)
        for txid in txids:
            res = self.chain.result(txid)
            if not res.ok:
                raise RuntimeError(f"a timed transaction failed: {res.log}")
        return cpu, wall

    def measure(self, block: int, blocks: int) -> dict[str, tuple[float, float]]:
        """One (CPU, wall) cost per operation: the medians over ``blocks`` rounds of blocks."""
        costs: dict[str, list[tuple[float, float]]] = {
            "offer": [],
            "bid": [],
            "match": [],
            "cancel": [],
        }
        posted: list[tuple[int, str]] = []
        matches_before = self.chain.state_int("market/next_match")
        for _ in range(blocks):

            def offers() -> list[str]:
                out = []
                for _ in range(block):
                    m = self._member()
                    start, end = self._window()
                    payload = self.offer_payload(m, start, end, 400_000)
                    out.append(self.submit(m, "market.offer", payload))
                    posted.append((m, out[-1]))
                return out

            def bids() -> list[str]:
                out = []
                for _ in range(block):
                    m = self._member()
                    start, end = self._window()
                    out.append(self.submit(m, "market.bid", self.bid_payload(m, start, end, 1)))
                    posted.append((m, out[-1]))
                return out

            def crossing() -> list[str]:
                out = []
                for _ in range(block):
                    seller, start, _end, price = self.rng.choice(self.resting)
                    m = (seller + 1 + self.rng.randrange(MEMBERS - 1)) % MEMBERS
                    payload = self.bid_payload(m, start, start + SLOT, price, power_w=10)
                    out.append(self.submit(m, "market.bid", payload))
                    posted.append((m, out[-1]))  # filled but open until cancelled
                return out

            def cancels() -> list[str]:
                out = []
                while posted:
                    m, oid = posted.pop()
                    out.append(self.submit(m, "market.cancel", {"order": oid}))
                return out

            for name, fn in (("offer", offers), ("bid", bids), ("match", crossing)):
                costs[name].append(self.timed_block(fn))
            costs["cancel"].append(self.timed_block(cancels))
        made = self.chain.state_int("market/next_match") - matches_before
        if made < blocks * block:
            raise RuntimeError(f"only {made} of {blocks * block} crossing bids matched")
        return {
            k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
            for k, v in costs.items()
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-orders", type=int, default=100_000)
    ap.add_argument("--block", type=int, default=20, help="timed transactions per block")
    ap.add_argument("--rounds", type=int, default=5, help="timed blocks per operation and size")
    args = ap.parse_args()
    levels = [n for n in LEVELS if n <= args.max_orders]
    ops = ("offer", "bid", "match", "cancel")
    samples: dict[int, dict[str, list[tuple[float, float]]]] = {
        n: {op: [] for op in ops} for n in levels
    }
    with tempfile.TemporaryDirectory() as tmp:
        benches: dict[int, Bench] = {}
        t = time.perf_counter()
        for n in levels:
            benches[n] = Bench(Path(tmp) / f"home{n}")
            benches[n].fill_to(n)
            benches[n].measure(args.block, 1)  # warm-up (imports, caches): not counted
        t_fill = time.perf_counter() - t
        print(f"books filled in {t_fill:.0f} s", flush=True)
        for r in range(args.rounds):
            for n in levels:
                for op, cost in benches[n].measure(args.block, 1).items():
                    samples[n][op].append(cost)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        for b in benches.values():
            b.chain.close()
    cpu = {n: {op: statistics.median(c for c, _ in samples[n][op]) for op in ops} for n in levels}
    wall = {n: {op: statistics.median(w for _, w in samples[n][op]) for op in ops} for n in levels}
    ref = levels[0]
    print(f"\nCPU ms per market tx (wall ms), median of {args.rounds} interleaved rounds:")
    print(f"{'open orders':>12} " + " ".join(f"{op:>16}" for op in ops))
    for n in levels:
        cells = (f"{cpu[n][op] * 1e3:7.2f} ({wall[n][op] * 1e3:6.2f})" for op in ops)
        print(f"{n:>12} " + " ".join(f"{c:>16}" for c in cells))
    print(f"\ncost relative to the {ref}-order book (CPU; same run):")
    print(f"{'open orders':>12} " + " ".join(f"{op:>8}" for op in ops))
    for n in levels:
        print(f"{n:>12} " + " ".join(f"{cpu[n][op] / cpu[ref][op]:>8.2f}" for op in ops))
    top = levels[-1]
    out = {
        "bench": "market",
        "levels": levels,
        "block_txs": args.block,
        "rounds": args.rounds,
        "cpu_ms_per_tx": {str(n): {op: round(cpu[n][op] * 1e3, 3) for op in ops} for n in levels},
        "wall_ms_per_tx": {str(n): {op: round(wall[n][op] * 1e3, 3) for op in ops} for n in levels},
        "ratio_vs_10": {
            str(n): {op: round(cpu[n][op] / cpu[ref][op], 3) for op in ops} for n in levels
        },
        "fill_s": round(t_fill, 1),
    }
    if top == 100_000 and ref == 10:
        out["cost_ratio_100k_vs_10"] = round(max(cpu[top][op] / cpu[ref][op] for op in ops), 3)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
