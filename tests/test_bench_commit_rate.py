"""bench/ledger_bft.py's committed rate: what committed after the first block, per second."""

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


def test_a_steady_network_reads_its_offered_rate_less_at_most_one_block():
    # 61 blocks, 60 intervals of 0.1 s; the first block holds 1 batch (latency 0.10 s) or 3
    # (0.15 s) of 40 transactions: hand-counted
    for latency_s, first_block in ((0.10, 40), (0.15, 120)):
        submit, commit = _steady(latency_s)
        rate = ledger_bft.commit_rate(commit, 2000.0)
        assert math.isclose(rate, (12_000 - first_block) / 6.0)
        assert 2000 - 200 / 6.0 <= rate <= 2000  # low by at most one block (200 txs) over 6 s
        # the old figure counted one latency as load time: 12,000 / 6.1 s or / 6.2 s
        old = len(commit) / (max(commit) - submit[0])
        assert math.isclose(old, 12_000 / (6.0 + math.ceil(round(latency_s / 0.1, 6)) * 0.1))
        assert old < rate


def test_it_counts_what_committed_inside_the_interval():
    # blocks at 10.0 s (500 txs), 10.1 s (200) and 10.2 s (300): 500 in 0.2 s, whatever the
    # first block held (a backlog from before the interval is not a rate within it)
    times = [10.0] * 500 + [10.1] * 200 + [10.2] * 300
    assert math.isclose(ledger_bft.commit_rate(times, 3000.0), 2500.0)


def test_it_never_reads_above_the_offered_rate():
    # 100 tx/s offered for 8 s, blocks of 10 every 0.1 s; the first block waited 0.3 s (holds
    # 30), the last only 0.05 s: 770 after the first block over 7.65 s would read 100.65
    middle = [round(0.3 + 0.1 * i, 6) for i in range(1, 77) for _ in range(10)]
    times = [0.3] * 30 + middle + [7.95] * 10
    assert len(times) == 800 and math.isclose(max(times) - min(times), 7.65)
    assert math.isclose(ledger_bft.commit_rate(times, 1000.0), 770 / 7.65)
    assert ledger_bft.commit_rate(times, 100.0) == 100.0


def test_one_block_has_no_interval_and_no_commits_is_zero():
    assert math.isnan(ledger_bft.commit_rate([5.0] * 10, 100.0))
    assert ledger_bft.commit_rate([], 100.0) == 0.0
