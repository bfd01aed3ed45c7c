"""Test-only byzantine validators: the fault tests run them as real processes.

A node whose ``config.json`` lists ``byzantine`` behaviours runs :class:`ByzantineReactor`
instead of the honest :class:`~.reactor.Reactor`; nothing in the honest path knows about them.

* ``equivocate``: every prevote goes to half of the peers, a conflicting one to the other half;
* ``split_proposal``: as proposer, one block to half of the peers, another block to the rest.
"""

from __future__ import annotations

from typing import Any

from .privval import PrivValidator
from .reactor import K_PROPOSAL, K_VOTE, Reactor
from .types import ConsensusError, Proposal, Vote, VoteType

BEHAVIOURS = frozenset({"equivocate", "split_proposal"})


class ByzantineReactor(Reactor):
    def __init__(self, *args: Any, behaviours: frozenset[str], **kwargs: Any) -> None:
        unknown = set(behaviours) - BEHAVIOURS
        if unknown:
            raise ValueError(f"unknown byzantine behaviours {sorted(unknown)}")
        super().__init__(*args, **kwargs)
        self.behaviours = behaviours

    def broadcast_proposal(self, p: Proposal) -> None:
        if "split_proposal" in self.behaviours:
            self._split_proposal(p)
        else:
            super().broadcast_proposal(p)

    def broadcast_vote(self, v: Vote) -> None:
        if "equivocate" in self.behaviours and v.type == VoteType.PREVOTE:
            self._equivocate(v)
        else:
            super().broadcast_vote(v)

    def _halves(self) -> tuple[list[bytes], list[bytes]]:
        peers = sorted(self.transport.peers)
        return peers[: len(peers) // 2], peers[len(peers) // 2 :]

    def _signing_key(self) -> PrivValidator:
        if self.privval is None:
            raise ConsensusError("a byzantine behaviour needs the node's signing key")
        return self.privval

    def _split_proposal(self, p: Proposal) -> None:
        # A second, different block for the same (height, round) to half of the peers.
        alt_block, alt_id = self.chain.make_block(
            p.height, p.round, self._signing_key().pub_key, time_offset_ms=1
        )
        alt = self._signing_key().sign_unguarded_proposal(
            p.height, p.round, p.pol_round, alt_id, alt_block
        )
        a, b = self._halves()
        for pk in a:
            self.transport.send(pk, K_PROPOSAL, p.encode())
        for pk in b:
            self.transport.send(pk, K_PROPOSAL, alt.encode())

    def _equivocate(self, v: Vote) -> None:
        other = None if v.block_id is not None else b"\xee" * 32
        alt = self._signing_key().sign_unguarded_vote(v.type, v.height, v.round, other)
        a, b = self._halves()
        for pk in a:
            self.transport.send(pk, K_VOTE, v.encode())
        for pk in b:
            self.transport.send(pk, K_VOTE, alt.encode())
