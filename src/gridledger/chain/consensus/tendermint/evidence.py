"""Evidence of equivocation: two conflicting signed messages from one validator for one slot.

Two kinds, one interface (``height``, ``round``, ``step``, ``validator``, ``kind``, ``encode``,
``hash``, ``check_conflict``, ``signatures_valid``, ``verify``):

* :class:`DuplicateVoteEvidence`: two votes for one (height, round, type) with different values;
* :class:`DuplicateProposalEvidence`: two proposals for one (height, round) by one proposer with
  different blocks or proof-of-lock rounds. Only the signed part of each proposal is kept (the
  signature covers the block id, not the block), so the evidence stays small.

Evidence is encoded canonically (the two messages in byte order) so every node that sees the same
equivocation produces the same bytes, and the chain records it once. The evidence contract
(``chain/contracts/evidence.py``) records it and jails the validator.
"""

from __future__ import annotations

import hashlib
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .types import ConsensusError, Proposal, Step, Vote, proposal_sign_bytes, verify_sig
from .validators import ValidatorSet

_TAG = b"gridledger/dupvote/v1"
_PROPOSAL_TAG = b"gridledger/dupproposal/v1"
MAX_EVIDENCE_AGE_HEIGHTS = 10_000


class _Checks(ABC):
    """What both kinds share: judging the evidence against a validator set and a height."""

    @property
    @abstractmethod
    def height(self) -> int: ...

    @property
    @abstractmethod
    def validator(self) -> bytes: ...

    @abstractmethod
    def check_conflict(self) -> None: ...

    @abstractmethod
    def signatures_valid(self, chain_id: str) -> bool: ...

    @abstractmethod
    def encode(self) -> bytes: ...

    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    def verify(self, chain_id: str, valset: ValidatorSet, current_height: int) -> None:
        """Raise :class:`ConsensusError` unless this is valid evidence against ``valset``."""
        self.check_conflict()
        if self.validator not in valset:
            raise ConsensusError("evidence against a key that was not a validator at that height")
        h = self.height
        if h > current_height or current_height - h > MAX_EVIDENCE_AGE_HEIGHTS:
            raise ConsensusError(f"evidence height {h} too old or in the future")
        if not self.signatures_valid(chain_id):
            raise ConsensusError("evidence signature invalid")


@dataclass(frozen=True)
class DuplicateVoteEvidence(_Checks):
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
    def round(self) -> int:
        return self.vote_a.round

    @property
    def step(self) -> int:
        return int(self.vote_a.type)

    @property
    def validator(self) -> bytes:
        return self.vote_a.validator

    @property
    def kind(self) -> str:
        """What was signed twice, for the jail record ("prevote" or "precommit")."""
        return self.vote_a.type.name.lower()

    def encode(self) -> bytes:
        return _TAG + self.vote_a.encode() + self.vote_b.encode()

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

    def check_conflict(self) -> None:
        a, b = self.vote_a, self.vote_b
        if not a.same_slot(b):
            raise ConsensusError("evidence votes are for different slots or validators")
        if a.block_id == b.block_id:
            raise ConsensusError("evidence votes do not conflict (same block id)")

    def signatures_valid(self, chain_id: str) -> bool:
        return self.vote_a.verify(chain_id) and self.vote_b.verify(chain_id)


_SIGNED_PROPOSAL = struct.Struct(">Qii32s32s64s")  # height, round, pol_round, block id, key, sig


@dataclass(frozen=True)
class SignedProposal:
    """The signed fields of a :class:`~.types.Proposal` (everything but the block)."""

    height: int
    round: int
    pol_round: int
    block_id: bytes
    proposer: bytes
    signature: bytes

    @staticmethod
    def of(p: Proposal) -> SignedProposal:
        return SignedProposal(p.height, p.round, p.pol_round, p.block_id, p.proposer, p.signature)

    def encode(self) -> bytes:
        return _SIGNED_PROPOSAL.pack(
            self.height, self.round, self.pol_round, self.block_id, self.proposer, self.signature
        )

    @staticmethod
    def decode(data: bytes) -> SignedProposal:
        if len(data) != _SIGNED_PROPOSAL.size:
            raise ConsensusError(f"signed proposal must be {_SIGNED_PROPOSAL.size} bytes")
        sp = SignedProposal(*_SIGNED_PROPOSAL.unpack(data))
        if sp.round < 0 or not -1 <= sp.pol_round < sp.round:
            raise ConsensusError("signed proposal needs round >= 0 and -1 <= pol_round < round")
        return sp

    def verify(self, chain_id: str) -> bool:
        msg = proposal_sign_bytes(chain_id, self.height, self.round, self.pol_round, self.block_id)
        return verify_sig(self.proposer, msg, self.signature)


@dataclass(frozen=True)
class DuplicateProposalEvidence(_Checks):
    prop_a: SignedProposal
    prop_b: SignedProposal

    @staticmethod
    def from_proposals(a: Proposal, b: Proposal) -> DuplicateProposalEvidence:
        sa, sb = SignedProposal.of(a), SignedProposal.of(b)
        if sa.encode() <= sb.encode():
            return DuplicateProposalEvidence(sa, sb)
        return DuplicateProposalEvidence(sb, sa)

    @property
    def height(self) -> int:
        return self.prop_a.height

    @property
    def round(self) -> int:
        return self.prop_a.round

    @property
    def step(self) -> int:
        return int(Step.PROPOSE)

    @property
    def validator(self) -> bytes:
        return self.prop_a.proposer

    kind = "proposal"

    def encode(self) -> bytes:
        return _PROPOSAL_TAG + self.prop_a.encode() + self.prop_b.encode()

    @staticmethod
    def decode(data: bytes) -> DuplicateProposalEvidence:
        if not data.startswith(_PROPOSAL_TAG):
            raise ConsensusError("not duplicate-proposal evidence (bad tag)")
        body = data[len(_PROPOSAL_TAG) :]
        n = _SIGNED_PROPOSAL.size
        if len(body) != 2 * n:
            raise ConsensusError(f"duplicate-proposal evidence must hold two {n}-byte proposals")
        ev = DuplicateProposalEvidence(
            SignedProposal.decode(body[:n]), SignedProposal.decode(body[n:])
        )
        if ev.prop_a.encode() > ev.prop_b.encode():
            raise ConsensusError("duplicate-proposal evidence not in canonical order")
        return ev

    def check_conflict(self) -> None:
        a, b = self.prop_a, self.prop_b
        if (a.height, a.round, a.proposer) != (b.height, b.round, b.proposer):
            raise ConsensusError("evidence proposals are for different slots or proposers")
        if (a.block_id, a.pol_round) == (b.block_id, b.pol_round):
            raise ConsensusError("evidence proposals do not conflict (same block)")

    def signatures_valid(self, chain_id: str) -> bool:
        return self.prop_a.verify(chain_id) and self.prop_b.verify(chain_id)


Evidence = DuplicateVoteEvidence | DuplicateProposalEvidence


def decode_evidence(data: bytes) -> Evidence:
    """Either kind, told apart by its tag."""
    if data.startswith(_PROPOSAL_TAG):
        return DuplicateProposalEvidence.decode(data)
    return DuplicateVoteEvidence.decode(data)
