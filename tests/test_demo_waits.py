"""The demo's waits for chain state are bounded: a state that never arrives is a clear error."""

from __future__ import annotations

import re

import pytest

from gridledger.chain.contracts.certificates import rec_key
from gridledger.demo.run import _wait_for, _wait_for_owner, _wait_for_rec

RID = "ab" * 32


class Ledger:
    """A chain whose state changes only when a block is produced (as the demo's chain)."""

    def __init__(self, changes: dict[int, dict[str, object]]) -> None:
        self.blocks = 0
        self.changes = changes  # block number -> state writes
        self.kv: dict[str, object] = {}

    def produce(self) -> None:
        self.blocks += 1
        self.kv.update(self.changes.get(self.blocks, {}))

    def state(self, key: str) -> object:
        return self.kv.get(key)


def test_waits_return_once_the_state_is_committed():
    chain = Ledger({3: {rec_key(RID): {"owner": "bob", "status": "active"}}, 5: {"member/x": {}}})
    _wait_for_owner(chain, RID, "bob", chain.produce)  # type: ignore[arg-type]
    assert chain.blocks == 3
    _wait_for(chain, "member/x", chain.produce)  # type: ignore[arg-type]
    assert chain.blocks == 5


def test_a_retirement_that_never_commits_is_a_timeout_naming_the_certificate():
    chain = Ledger({1: {rec_key(RID): {"owner": "bob", "status": "active"}}})
    with pytest.raises(
        TimeoutError, match=re.escape(f"REC {RID[:12]}… with status retired not on chain")
    ):
        _wait_for_rec(chain, RID, "status", "retired", chain.produce, timeout_s=0.05)  # type: ignore[arg-type]
    assert chain.blocks > 1  # it kept producing blocks until the deadline
    with pytest.raises(TimeoutError, match=re.escape("member/y not on chain after 0.05 s")):
        _wait_for(chain, "member/y", chain.produce, timeout_s=0.05)  # type: ignore[arg-type]
