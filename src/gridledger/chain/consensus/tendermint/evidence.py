"""Evidence of equivocation: two signed, conflicting votes from one validator for one slot.

Evidence is encoded canonically (the two votes in byte order) so every node that sees the same
equivocation produces the same bytes, and a block never carries it twice. It reaches the
application as ``ProposalInfo.misbehavior``; the membership contract decides what follows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .types import ConsensusError, Vote
from .validators import ValidatorSet

_TAG = b"gridledger/dupvote/v1"
MAX_EVIDENCE_AGE_HEIGHTS = 10_000


@dataclass(frozen=True)
class DuplicateVoteEvidence:
    vote_a: Vote
    vote_b: Vote

    @staticmethod
    def from_votes(a: Vote, b: Vote) -> DuplicateVoteEvidence:
        ea, eb = a.encode(), b.encode()
        return DuplicateVoteEvidence(a, b) if ea <= eb else DuplicateVoteEvidence(b, a)

    @property
    def height(self) -> int:
        return self.vote_a.height

    @property
    def validator(self) -> bytes:
        return self.vote_a.validator

    @property
    def kind(self) -> str:
        """What was signed twice, for the jail record ("prevote" or "precommit")."""
        return self.vote_a.type.name.lower()

    def encode(self) -> bytes:
        return _TAG + self.vote_a.encode() + self.vote_b.encode()

    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @staticmethod
    def decode(data: bytes) -> DuplicateVoteEvidence:
        if not data.startswith(_TAG):
            raise ConsensusError("not duplicate-vote evidence (bad tag)")
        body = data[len(_TAG) :]
        if len(body) % 2:
            raise ConsensusError("duplicate-vote evidence has odd length")
        half = len(body) // 2
        ev = DuplicateVoteEvidence(Vote.decode(body[:half]), Vote.decode(body[half:]))
        if ev.vote_a.encode() > ev.vote_b.encode():
            raise ConsensusError("duplicate-vote evidence votes not in canonical order")
        return ev

    def verify(self, chain_id: str, valset: ValidatorSet, current_height: int) -> None:
        """Raise :class:`ConsensusError` unless this is valid evidence against ``valset``."""
        a, b = self.vote_a, self.vote_b
        if not a.same_slot(b):
            raise ConsensusError("evidence votes are for different slots or validators")
        if a.block_id == b.block_id:
            raise ConsensusError("evidence votes do not conflict (same block id)")
        if a.validator not in valset:
            raise ConsensusError("evidence against a key that was not a validator at that height")
        if a.height > current_height or current_height - a.height > MAX_EVIDENCE_AGE_HEIGHTS:
            raise ConsensusError(f"evidence height {a.height} too old or in the future")
        if not a.verify(chain_id) or not b.verify(chain_id):
            raise ConsensusError("evidence vote signature invalid")
