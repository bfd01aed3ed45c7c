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
# buyer's extras, one REC record per reading, header v2 (next_validators_hash), settlement's
# per-party index of a slot's trades (settle/party/<slot>/<party>, settle/indexed/<slot>: the
# state is otherwise identical key for key; on that branch's base the roots were already
# c609e226…/4babbb7f…, not the values listed before it).
EXPECTED = (
    "e853007057c79a8f399d06cc29aa5fd17f69ee5a0705f07348a3cb1d248a1273",
    "7c91dbd0dde4ed8674eeb5869f707912d770094f6315ea17c37dd1774c1134bf",
    170,
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
