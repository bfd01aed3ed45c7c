"""bench/ledger_bft.py's committed rate: commits over the span of the committing blocks."""

import importlib.util
import math
from pathlib import Path

_path = Path(__file__).resolve().parent.parent / "bench" / "ledger_bft.py"
_spec = importlib.util.spec_from_file_location("ledger_bft_bench", _path)
ledger_bft = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ledger_bft)


def _steady(latency_s: float) -> tuple[list[float], list[float]]:
    """2,000 tx/s offered in 20 ms batches of 40 for 6 s; a block every 0.1 s commits what was
    submitted at least ``latency_s`` earlier (a hand-made schedule, no network)."""
    submit = [i * 0.02 for i in range(300)]
    commit = [math.ceil(round((s + latency_s) / 0.1, 6)) * 0.1 for s in submit for _ in range(40)]
    return submit, commit


def test_a_steady_network_reads_its_offered_rate():
    for latency_s in (0.10, 0.15):
        submit, commit = _steady(latency_s)
        # the old figure counts one latency as load time: 12,000 / 6.2 s or / 6.1 s
        old = len(commit) / (max(commit) - submit[0])
        assert math.isclose(old, 12_000 / (6.0 + math.ceil(round(latency_s / 0.1, 6)) * 0.1))
        assert old < 1970
        # 61 blocks, 60 intervals of 0.1 s: the end blocks hold 1 + 4 or 3 + 2 batches
        assert math.isclose(ledger_bft.commit_rate(commit), 12_000 / 6.0)


def test_the_end_blocks_move_it_by_at_most_one_block():
    # blocks at 10.0, 10.1, 10.2 s: 2 intervals; a full block is 200 transactions
    for first, last in ((1, 1), (200, 200), (100, 100)):
        times = [10.0] * first + [10.1] * 200 + [10.2] * last
        rate = ledger_bft.commit_rate(times)
        assert math.isclose(rate, (first + 200 + last) / 0.2)
        assert abs(rate * 0.2 - 400) <= 200 + 1e-6  # 2,000 tx/s over 0.2 s, ± one block


def test_one_block_has_no_interval_and_no_commits_is_zero():
    assert math.isnan(ledger_bft.commit_rate([5.0] * 10))
    assert ledger_bft.commit_rate([]) == 0.0
