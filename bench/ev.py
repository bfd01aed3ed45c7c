"""The cost of EV charging sessions on the solo chain, against plain meter readings.

Measures, in one run (the machine is shared: compare ratios, not absolutes):
- reference: ``meter.reading`` of N prosumer meters, R rounds of 15-minute readings, each
  round one block (signature, check_tx, execution, SQLite commit);
- ``ev.reading`` of N open sessions over the same R rounds (the metering rules plus the
  session's bounds), and the per-transaction cost of ``ev.authorise``, ``ev.open`` and
  ``ev.stop`` (each phase one block of N transactions).

Ends with one JSON line (ratios against the reference of the same run).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from gridledger.chain.contracts import ev
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain

H = 3_600_000
T = 1_767_636_000_000  # 2026-01-05T18:00Z
QUARTER_S = 900


def _key(name: str) -> KeyPair:
    return KeyPair.from_seed(name.encode().ljust(32, b".")[:32])


def run(n: int, rounds: int, home: Path) -> dict[str, float]:
    dso, validator = _key("dso"), _key("validator")
    genesis = make_genesis(
        "bench-ev",
        T - H,
        [(validator.pub_hex, 10)],
        [{"pub_key": dso.pub_hex, "role": "dso", "name": "DSO"}],
        [{"account": dso.pub_hex, "amount": 10**15, "denom": "utoken"}],
        ["gridledger.chain.contracts.ev"],
    )
    chain = LocalChain(home, genesis, validator, T - H)
    drivers = [_key(f"driver{i}") for i in range(n)]
    cps = [_key(f"cp{i}") for i in range(n)]
    cp_meters = [_key(f"cpm{i}") for i in range(n)]
    ref_meters = [_key(f"m{i}") for i in range(n)]

    def block(txs: list[tuple[KeyPair, str, dict]], t: int) -> tuple[float, list[str]]:
        """Seconds per transaction of one block of ``txs``, and their ids."""
        chain.produce(t)
        start = time.perf_counter()
        outs = [chain.submit(k, tx_type, p) for k, tx_type, p in txs]
        chain.produce(t + 1)
        elapsed = time.perf_counter() - start
        bad = [chain.result(o.txid) for o in outs if not chain.result(o.txid).ok]
        if bad:
            raise RuntimeError(f"refused: {bad[0].log}")
        return elapsed / len(txs), [o.txid for o in outs]

    setup = []
    for i in range(n):
        setup.append(
            (dso, "member.register", {"pub_key": drivers[i].pub_hex, "role": "prosumer", "bus": 3})
        )
        cp = {"pub_key": cps[i].pub_hex, "role": "charge_point", "bus": 5}
        setup.append((dso, "member.register", cp))
    block(setup, T - H + 1000)
    setup = []
    for i in range(n):
        bind = {"meter": cp_meters[i].pub_hex, "prosumer": cps[i].pub_hex, "rating_w": 22_000}
        setup.append((dso, "member.bind_meter", bind))
        bind = {"meter": ref_meters[i].pub_hex, "prosumer": drivers[i].pub_hex}
        setup.append((dso, "member.bind_meter", bind))
        mint = {"amount": 10**9, "denom": "utoken", "to": drivers[i].pub_hex}
        setup.append((dso, "token.mint", mint))
    block(setup, T - H + 2000)

    authorise = {
        "max_energy_wh": 100_000,
        "max_price_utoken_per_kwh": 300_000,
        "expiry_ms": T + 40 * H,
    }
    per_tx: dict[str, float] = {}
    authorisations = [
        (d, "ev.authorise", {**authorise, "charge_point": c.pub_hex})
        for d, c in zip(drivers, cps, strict=True)
    ]
    per_tx["authorise"], ids = block(authorisations, T)
    opening = [
        (c, "ev.open", {"session": sid, "meter": m.pub_hex, "price_utoken_per_kwh": 250_000})
        for c, sid, m in zip(cps, ids, cp_meters, strict=True)
    ]
    per_tx["open"] = block(opening, T + 1000)[0]
    opened = chain.state(ev.session_key(ids[0]))["opened_ms"]
    ref, sess = [], []
    for r in range(rounds):
        start = opened + r * QUARTER_S * 1000
        end = start + QUARTER_S * 1000
        reading = {"start_ms": start, "duration_s": QUARTER_S, "import_wh": 2_000, "export_wh": 0}
        ref.append(
            block([(m, "meter.reading", {**reading, "meter": m.pub_hex}) for m in ref_meters], end)[
                0
            ]
        )
        sess.append(
            block(
                [
                    (m, "ev.reading", {**reading, "meter": m.pub_hex, "session": sid})
                    for m, sid in zip(cp_meters, ids, strict=True)
                ],
                end + 10,
            )[0]
        )
    stop_t = opened + rounds * QUARTER_S * 1000 + 1000
    stops = [(c, "ev.stop", {"session": s}) for c, s in zip(cps, ids, strict=True)]
    per_tx["stop"] = block(stops, stop_t)[0]
    paid = chain.state(ev.session_key(ids[0]))["paid_utoken"]
    assert paid == rounds * 2_000 * 250_000 // 1000, paid
    chain.close()
    ref_ms = 1000 * sum(ref) / rounds
    ev_ms = 1000 * sum(sess) / rounds
    return {
        "n_sessions": n,
        "rounds": rounds,
        "meter_reading_ms": round(ref_ms, 3),
        "ev_reading_ms": round(ev_ms, 3),
        "ev_reading_vs_meter_reading": round(ev_ms / ref_ms, 3),
        **{f"ev_{k}_ms": round(1000 * v, 3) for k, v in per_tx.items()},
        **{f"ev_{k}_vs_meter_reading": round(1000 * v / ref_ms, 3) for k, v in per_tx.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(args.sessions, args.rounds, Path(tmp)), sort_keys=True))


if __name__ == "__main__":
    main()
