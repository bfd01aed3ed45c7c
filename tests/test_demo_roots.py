"""The demo's chain, bit for bit: refactors must leave its state and block roots unchanged.

The demo draws fresh keys and starts at the next whole hour; here both are pinned (keys from a
counter, a fixed start), so two runs of the same code give the same chain and a run of changed
code gives the same roots only if behaviour, encodings and state are unchanged. When a change
is *meant* to alter what the chain records, update ``EXPECTED`` in the same commit and say why.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from gridledger.chain.keys import KeyPair

START_MS = 1_767_261_600_000  # 2026-01-01T10:00Z, a whole hour like the demo's own start
# (app hash after the last block, hash of the last block, height) of the full demo
# Changed on purpose by: the order book as one record per order, approvals escrowing the
# buyer's extras, one REC record per reading, header v2 (next_validators_hash), the demand
# response phase (the dr contract in the genesis, nine blocks after the day-ahead schedule),
# single power flows on lightsim2grid's Newton (last-bit float differences reach the DSO's
# certificate documents and their digests) and the certificate documents' loss fields (series and
# no-load losses apart). The refactors since (wire primitives, state-key builders, Application
# protocol, CPU-per-transaction work) left these roots unchanged.
# Then: the order book's start records keep the latest end (a bid skips start slots whose
# offers all end before it) and settlement indexes a slot's approved trades by party.
EXPECTED = (
    "5c01d9f41ff408d9f138534806b5bb4fae0791e4a7b3d3e8ae9adf126e0f59db",
    "af30e7d2fa00ae541619838bb03a139e6557ddc45b0ce3a2bf23d6ad2d64bca9",
    179,
)


@pytest.mark.xdist_group("demo")
def test_the_demo_chain_is_reproducible_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = itertools.count()
    monkeypatch.setattr(
        KeyPair,
        "generate",
        staticmethod(
            lambda: KeyPair.from_seed(hashlib.sha256(b"demo-roots/%d" % next(counter)).digest())
        ),
    )
    from gridledger.demo.run import run_embedded

    _, chain = run_embedded(tmp_path / "home", lambda _msg: None, start_ms=START_MS)
    height = chain.app.height
    last = chain.store.get_block(height)
    assert last is not None
    got = (chain.app.app_hash.hex(), last.block().hash().hex(), height)
    chain.close()
    assert got == EXPECTED
