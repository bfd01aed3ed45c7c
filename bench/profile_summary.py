"""Where a validator's CPU goes per transaction, from the cProfiles of ``ledger_bft.py --profile``.

Usage: ``python bench/profile_summary.py DIR/n4/node1.prof --txs N`` (N: transactions the run
committed, printed by ledger_bft.py as ``committed``). Prints each row's cumulative time per
transaction and its share of the node's busy time (wall time in the profile minus the event
loop's idle wait in ``epoll``). Rows are cumulative, so nested rows overlap (execution
includes its state reads). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import pstats
import sys

# (label, file suffix or "~" for builtins, function name): matched on pstats keys
ROWS = [
    ("Ed25519 signature checks (once per tx)", "~", "<built-in method _sodium.crypto_sign_open>"),
    ("tx decode + canonical-form check", "chain/tx.py", "decode_tx"),
    ("block execution (finalize_block)", "chain/app.py", "finalize_block"),
    ("client admission (check_tx)", "chain/app.py", "check_tx"),
    ("store commit (SQLite + fsync)", "chain/store.py", "commit_height"),
    ("P2P record sealing", "p2p/secret.py", "seal"),
    ("P2P record opening", "p2p/secret.py", "open"),
    ("P2P handshakes", "p2p/secret.py", "handshake"),
    ("socket sends", "~", "<method 'send' of '_socket.socket' objects>"),
]
IDLE = ("~", "<method 'poll' of 'select.epoll' objects>")


def _cum(stats: dict, suffix: str, name: str) -> float:
    return sum(
        v[3]
        for (f, _, fn), v in stats.items()
        if fn == name and (f == suffix or f.endswith(suffix))
    )


def summarize(path: str, txs: int) -> dict:
    stats = pstats.Stats(path).stats
    wall = max(v[3] for v in stats.values())
    busy = wall - _cum(stats, *IDLE)
    rows = {label: _cum(stats, f, fn) for label, f, fn in ROWS}
    return {"busy_s": busy, "busy_ms_per_tx": 1000 * busy / txs, "rows_s": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("profile")
    p.add_argument("--txs", type=int, required=True, help="transactions committed in the run")
    args = p.parse_args(argv)
    if args.txs <= 0:
        p.error("--txs must be positive")
    s = summarize(args.profile, args.txs)
    print(f"busy {s['busy_s']:.2f} s = {s['busy_ms_per_tx']:.3f} ms per committed tx")
    for label, sec in s["rows_s"].items():
        print(f"{label:45s} {1000 * sec / args.txs:7.3f} ms/tx {100 * sec / s['busy_s']:5.1f} %")
    print(json.dumps({"benchmark": "profile_summary", **s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
