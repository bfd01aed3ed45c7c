"""Vote sets: the votes of one (height, round, type), tallied by voting power.

A second, different vote from a validator for the same slot is equivocation: it is not counted
(the first vote stands) and is returned as a pair so the caller can turn it into evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import ConsensusError, Vote, VoteType
from .validators import ValidatorSet


@dataclass
class AddResult:
    added: bool
    conflict: tuple[Vote, Vote] | None = None


@dataclass
class VoteSet:
    height: int
    round: int
    type: VoteType
    valset: ValidatorSet
    votes: dict[bytes, Vote] = field(default_factory=dict)
    power_by_block: dict[bytes | None, int] = field(default_factory=dict)
    total: int = 0

    def add(self, vote: Vote) -> AddResult:
        """Add a vote whose signature the caller has verified."""
        if (vote.height, vote.round, vote.type) != (self.height, self.round, self.type):
            raise ConsensusError("vote does not belong to this vote set")
        power = self.valset.power_of(vote.validator)
        if power == 0:
            raise ConsensusError(f"vote from non-validator {vote.validator.hex()[:16]}")
        prior = self.votes.get(vote.validator)
        if prior is not None:
            if prior.block_id == vote.block_id:
                return AddResult(False)
            return AddResult(False, (prior, vote))
        self.votes[vote.validator] = vote
        self.power_by_block[vote.block_id] = self.power_by_block.get(vote.block_id, 0) + power
        self.total += power
        return AddResult(True)

    def power_for(self, block_id: bytes | None) -> int:
        return self.power_by_block.get(block_id, 0)

    def has_quorum_for(self, block_id: bytes | None) -> bool:
        return self.valset.has_quorum(self.power_for(block_id))

    def has_quorum_any(self) -> bool:
        return self.valset.has_quorum(self.total)

    def quorum_block(self) -> tuple[bool, bytes | None]:
        """(True, id) if some block id (or nil as None) has > 2/3 of the power."""
        for bid, p in self.power_by_block.items():
            if self.valset.has_quorum(p):
                return True, bid
        return False, None

    def votes_for(self, block_id: bytes | None) -> list[Vote]:
        return [v for v in self.votes.values() if v.block_id == block_id]
