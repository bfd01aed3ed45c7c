"""Vote sets: the votes of one (height, round, type), tallied by voting power.

Counting follows the paper: "2f+1 PREVOTE for id(v)" counts the distinct validators that sent a
prevote for id(v). An equivocating validator that voted for two values is counted once for each
of them (and once in the total of distinct voters) — keeping only its first vote instead would
let it show half of the network a proof-of-lock the other half can never assemble, and stall
the chain (found by the equivocation fault test). Safety is unaffected: with at most f faulty
validators, two values can still not both gather 2f+1. A second value from one validator is
also returned as a conflicting pair so the caller can turn it into evidence. At most
``MAX_VALUES_PER_VALIDATOR`` values are kept per validator, bounding what a liar can make us
store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import ConsensusError, Vote, VoteType
from .validators import ValidatorSet

MAX_VALUES_PER_VALIDATOR = 4


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
    votes: dict[bytes, dict[bytes | None, Vote]] = field(default_factory=dict)
    power_by_block: dict[bytes | None, int] = field(default_factory=dict)
    total: int = 0

    def has(self, validator: bytes, block_id: bytes | None) -> bool:
        by_value = self.votes.get(validator)
        return by_value is not None and block_id in by_value

    def add(self, vote: Vote) -> AddResult:
        """Add a vote whose signature the caller has verified."""
        if (vote.height, vote.round, vote.type) != (self.height, self.round, self.type):
            raise ConsensusError("vote does not belong to this vote set")
        power = self.valset.power_of(vote.validator)
        if power == 0:
            raise ConsensusError(f"vote from non-validator {vote.validator.hex()[:16]}")
        by_value = self.votes.get(vote.validator)
        if by_value is None:
            self.votes[vote.validator] = {vote.block_id: vote}
            self.total += power
        elif vote.block_id in by_value:
            return AddResult(False)
        else:
            conflict = (next(iter(by_value.values())), vote)
            if len(by_value) >= MAX_VALUES_PER_VALIDATOR:
                return AddResult(False, conflict)
            by_value[vote.block_id] = vote
            self.power_by_block[vote.block_id] = self.power_by_block.get(vote.block_id, 0) + power
            return AddResult(True, conflict)
        self.power_by_block[vote.block_id] = self.power_by_block.get(vote.block_id, 0) + power
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
        return [bv[block_id] for bv in self.votes.values() if block_id in bv]

    def all_votes(self) -> list[Vote]:
        return [v for bv in self.votes.values() for v in bv.values()]

    def votes_of(self, validator: bytes) -> list[Vote]:
        return list(self.votes.get(validator, {}).values())
