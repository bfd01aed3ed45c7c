"""What an agent needs from a node: submit a signed transaction, read committed state, block time.

Agents are written against this protocol only.  :class:`gridledger.demo.localchain.LocalChain`
implements it in process (the demo's embedded chain); a node's HTTP client implements it across
processes.
"""

from __future__ import annotations

from typing import Any, Protocol

from gridledger.chain.keys import KeyPair


class Outcome(Protocol):
    txid: str
    code: int
    log: str

    @property
    def ok(self) -> bool: ...


class ChainClient(Protocol):
    def submit(self, key: KeyPair, tx_type: str, payload: dict[str, Any]) -> Outcome: ...

    def state(self, key: str) -> Any: ...

    def time_ms(self) -> int: ...

    def height(self) -> int: ...


class AgentError(RuntimeError):
    """A transaction an agent had to post was refused; the message carries the node's reason."""


def must(outcome: Outcome, what: str) -> Outcome:
    if not outcome.ok:
        raise AgentError(f"{what} refused (code {outcome.code}): {outcome.log}")
    return outcome
