"""The Tendermint state machine: Algorithm 1 of Buchman, Kwon, Milosevic (arXiv 1807.04938).

Pure and single-threaded: inputs are :meth:`ConsensusState.on_proposal`, :meth:`on_vote` and
:meth:`on_timeout`; outputs go through an :class:`Environment` (broadcast, schedule a timeout,
build or validate a block, decide). The comments ``(Lnn)`` point to lines of Algorithm 1.

Values are opaque block bytes identified by a 32-byte block id that the environment computes;
the state machine never looks inside a block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from .evidence import DuplicateProposalEvidence, DuplicateVoteEvidence, Evidence
from .privval import DoubleSignError, PrivValidator
from .types import Commit, ConsensusError, Proposal, Step, Vote, VoteType
from .validators import ValidatorSet, verify_commit
from .voteset import VoteSet

log = logging.getLogger(__name__)

COMMITTED = 4  # step after a decision, until the next height starts
MAX_ROUNDS_AHEAD = 100  # votes further ahead are dropped (bounds memory under spam)
MAX_FUTURE_MSGS = 10_000


@dataclass(frozen=True)
class Timeouts:
    """Timeouts in seconds; round r waits ``base + r * delta`` (they grow with the round)."""

    propose_s: float = 1.0
    propose_delta_s: float = 0.5
    prevote_s: float = 0.5
    prevote_delta_s: float = 0.25
    precommit_s: float = 0.5
    precommit_delta_s: float = 0.25
    commit_s: float = 0.05  # pause after a decision before the next height (collect txs)

    def for_step(self, step: Step, rnd: int) -> float:
        if step == Step.PROPOSE:
            return self.propose_s + rnd * self.propose_delta_s
        if step == Step.PREVOTE:
            return self.prevote_s + rnd * self.prevote_delta_s
        return self.precommit_s + rnd * self.precommit_delta_s


class Environment(Protocol):
    def broadcast_proposal(self, proposal: Proposal) -> None: ...

    def broadcast_vote(self, vote: Vote) -> None: ...

    def schedule_timeout(self, height: int, rnd: int, step: Step, delay_s: float) -> None: ...

    def get_value(self, height: int, rnd: int) -> tuple[bytes, bytes]:
        """A new block (bytes, block id) for this node to propose."""
        ...

    def block_id_of(self, height: int, block: bytes) -> bytes | None:
        """The id of ``block`` or None if it cannot be decoded."""
        ...

    def validate(self, height: int, block: bytes) -> bool:
        """The paper's valid(v): well-formed, extends our chain, accepted by the application."""
        ...

    def validate_committed(self, height: int, block: bytes) -> bool:
        """valid(v) for a block that > 2/3 already committed (catch-up): the same, except for
        heuristics about our own clock (a block time ahead of it is not our call any more)."""
        ...

    def decide(self, height: int, block: bytes, commit: Commit) -> None: ...

    def on_evidence(self, evidence: Evidence) -> None: ...

    def relay_vote(self, vote: Vote) -> None:
        """A valid vote from another validator was added: gossip it on (lets peers see both
        halves of an equivocation and recovers votes lost on a link)."""
        ...


@dataclass
class _RoundFlags:
    prevote_timeout: bool = False  # (L34) "for the first time"
    precommit_timeout: bool = False  # (L47)
    polka_seen: bool = False  # (L36)


@dataclass
class _HeightState:
    height: int
    valset: ValidatorSet
    round: int = 0
    step: int = Step.PROPOSE
    locked_id: bytes | None = None
    locked_round: int = -1
    valid_id: bytes | None = None
    valid_round: int = -1
    proposals: dict[int, Proposal] = field(default_factory=dict)
    blocks: dict[bytes, bytes] = field(default_factory=dict)
    votes: dict[tuple[int, VoteType], VoteSet] = field(default_factory=dict)
    flags: dict[int, _RoundFlags] = field(default_factory=dict)
    validity: dict[bytes, bool] = field(default_factory=dict)
    proposers: dict[int, bytes] = field(default_factory=dict)
    evidence_seen: set[bytes] = field(default_factory=set)


class ConsensusState:
    """One validator's (or observer's) view of consensus at the current height."""

    def __init__(
        self,
        chain_id: str,
        env: Environment,
        privval: PrivValidator | None,
        timeouts: Timeouts | None = None,
    ):
        self.chain_id = chain_id
        self.env = env
        self.privval = privval
        self.timeouts = timeouts or Timeouts()
        self.hs: _HeightState | None = None
        self._future: list[Proposal | Vote] = []

    # --- public view ------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.hs.height if self.hs else 0

    @property
    def round(self) -> int:
        return self.hs.round if self.hs else 0

    @property
    def step(self) -> int:
        return self.hs.step if self.hs else 0

    def proposer(self, rnd: int) -> bytes:
        hs = self._hs()
        p = hs.proposers.get(rnd)
        if p is None:
            p = hs.valset.proposer_for_round(rnd)
            hs.proposers[rnd] = p
        return p

    def own_messages(self) -> list[Proposal | Vote]:
        """This node's proposals and votes at the current height (for re-gossip)."""
        hs = self.hs
        if hs is None or self.privval is None:
            return []
        me = self.privval.pub_key
        out: list[Proposal | Vote] = [p for p in hs.proposals.values() if p.proposer == me]
        for vs in hs.votes.values():
            out.extend(vs.votes_of(me))
        return out

    def round_votes(self, rnd: int) -> list[Vote]:
        """All votes held for ``rnd`` at this height (to help a peer stuck in that round)."""
        hs = self.hs
        if hs is None:
            return []
        out: list[Vote] = []
        for t in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            vs = hs.votes.get((rnd, t))
            if vs is not None:
                out.extend(vs.all_votes())
        return out

    def proposal_for(self, rnd: int) -> Proposal | None:
        return self.hs.proposals.get(rnd) if self.hs else None

    # --- inputs -----------------------------------------------------------------------------
    def start_height(self, height: int, valset: ValidatorSet) -> None:
        """(L10) StartRound(0) at a new height with that height's validator set."""
        self.hs = _HeightState(height, valset)
        future, self._future = self._future, []
        self._start_round(0)
        self._process()
        for msg in future:
            if msg.height == height:
                self._dispatch(msg)
            elif msg.height > height:
                self._future.append(msg)

    def on_proposal(self, p: Proposal) -> None:
        hs = self.hs
        if hs is None or p.height > hs.height:
            self._buffer(p)
            return
        if p.height < hs.height or hs.step == COMMITTED:
            return
        if p.round > hs.round + MAX_ROUNDS_AHEAD:
            return
        first = hs.proposals.get(p.round)
        if first is not None:
            self._check_second_proposal(first, p)
            return
        if p.proposer != self.proposer(p.round):
            raise ConsensusError(f"proposal for round {p.round} not from its proposer")
        if not p.verify(self.chain_id):
            raise ConsensusError("proposal signature invalid")
        bid = self.env.block_id_of(p.height, p.block)
        if bid is None or bid != p.block_id:
            raise ConsensusError("proposal block does not match its block id")
        hs.proposals[p.round] = p
        hs.blocks[bid] = p.block
        self._process()

    def _check_second_proposal(self, first: Proposal, p: Proposal) -> None:
        """A second proposal for a round: ignored, but a different signed one is evidence."""
        if (p.block_id, p.pol_round, p.proposer) == (
            first.block_id,
            first.pol_round,
            first.proposer,
        ):
            return  # a re-sent copy
        if p.proposer != first.proposer:
            raise ConsensusError(f"proposal for round {p.round} not from its proposer")
        if not p.verify(self.chain_id):
            raise ConsensusError("proposal signature invalid")
        self._report(DuplicateProposalEvidence.from_proposals(first, p))

    def _report(self, ev: Evidence) -> None:
        hs = self._hs()
        if ev.hash() not in hs.evidence_seen:
            hs.evidence_seen.add(ev.hash())
            self.env.on_evidence(ev)

    def on_vote(self, v: Vote) -> None:
        hs = self.hs
        if hs is None or v.height > hs.height:
            self._buffer(v)
            return
        if v.height < hs.height or hs.step == COMMITTED or v.round > hs.round + MAX_ROUNDS_AHEAD:
            return
        vs = self._voteset(v.round, v.type)
        if vs.has(v.validator, v.block_id):
            return  # a re-gossiped copy: skip the signature check
        if v.validator not in hs.valset:
            raise ConsensusError(f"vote from non-validator {v.validator.hex()[:16]}")
        if not v.verify(self.chain_id):
            raise ConsensusError("vote signature invalid")
        res = vs.add(v)
        if res.conflict is not None:
            self._report(DuplicateVoteEvidence.from_votes(*res.conflict))
        if not res.added:
            return
        # Relayed on, including the second value of an equivocator: every honest node must be
        # able to count the same messages (see voteset.py).
        self.env.relay_vote(v)
        self._process()

    def on_timeout(self, height: int, rnd: int, step: Step) -> None:
        hs = self.hs
        if hs is None or height != hs.height or rnd != hs.round or hs.step == COMMITTED:
            return
        if step == Step.PROPOSE and hs.step == Step.PROPOSE:  # (L57)
            self._prevote(None)
        elif step == Step.PREVOTE and hs.step == Step.PREVOTE:  # (L61)
            self._precommit(None)
        elif step == Step.PRECOMMIT:  # (L65)
            self._start_round(hs.round + 1)
        self._process()

    def on_commit(self, block: bytes, commit: Commit) -> bool:
        """Decide the current height from a peer's commit (catch-up); False if not applicable."""
        hs = self.hs
        if hs is None or commit.height != hs.height or hs.step == COMMITTED:
            return False
        if self.env.block_id_of(hs.height, block) != commit.block_id:
            raise ConsensusError("catch-up block does not match the commit's block id")
        verify_commit(self.chain_id, hs.valset, commit)
        hs.blocks[commit.block_id] = block
        # Judged afresh (not from the validity cache): rules about our own clock, which may have
        # made us refuse the proposal, do not apply to a block > 2/3 already committed.
        if not self.env.validate_committed(hs.height, block):
            # > 2/3 signed it, so at least one honest node validated it: our state diverged.
            raise ConsensusError("a committed block fails validation here: state divergence")
        hs.validity[commit.block_id] = True
        hs.step = COMMITTED
        self.env.decide(hs.height, block, commit)
        return True

    # --- internals --------------------------------------------------------------------------
    def _hs(self) -> _HeightState:
        if self.hs is None:
            raise RuntimeError("consensus has not started a height")
        return self.hs

    def _dispatch(self, msg: Proposal | Vote) -> None:
        try:
            if isinstance(msg, Proposal):
                self.on_proposal(msg)
            else:
                self.on_vote(msg)
        except ConsensusError as exc:
            log.debug("dropping buffered message: %s", exc)

    def _buffer(self, msg: Proposal | Vote) -> None:
        if len(self._future) < MAX_FUTURE_MSGS and msg.height <= self.height + 1:
            self._future.append(msg)

    def _voteset(self, rnd: int, vtype: VoteType) -> VoteSet:
        hs = self._hs()
        vs = hs.votes.get((rnd, vtype))
        if vs is None:
            vs = VoteSet(hs.height, rnd, vtype, hs.valset)
            hs.votes[(rnd, vtype)] = vs
        return vs

    def _flags(self, rnd: int) -> _RoundFlags:
        return self._hs().flags.setdefault(rnd, _RoundFlags())

    def _valid(self, bid: bytes) -> bool:
        hs = self._hs()
        ok = hs.validity.get(bid)
        if ok is None:
            ok = self.env.validate(hs.height, hs.blocks[bid])
            hs.validity[bid] = ok
        return ok

    def _signer(self) -> PrivValidator | None:
        """This node's signer if it is in the height's validator set, else None."""
        pv = self.privval
        return pv if pv is not None and pv.pub_key in self._hs().valset else None

    def _start_round(self, rnd: int) -> None:  # (L11-L21)
        hs = self._hs()
        hs.round, hs.step = rnd, Step.PROPOSE
        signer = self._signer()
        if signer is not None and self.proposer(rnd) == signer.pub_key:
            if hs.valid_id is not None:
                block, bid, pol = hs.blocks[hs.valid_id], hs.valid_id, hs.valid_round
            else:
                block, bid = self.env.get_value(hs.height, rnd)
                pol = -1
            try:
                p = signer.sign_proposal(hs.height, rnd, pol, bid, block)
            except DoubleSignError as exc:
                log.warning("not proposing: %s", exc)
            else:
                hs.proposals[rnd] = p
                hs.blocks[bid] = block
                hs.validity.setdefault(bid, True)
                self.env.broadcast_proposal(p)
        delay_s = self.timeouts.for_step(Step.PROPOSE, rnd)
        self.env.schedule_timeout(hs.height, rnd, Step.PROPOSE, delay_s)

    def _sign_and_send(self, vtype: VoteType, bid: bytes | None) -> None:
        hs = self._hs()
        signer = self._signer()
        if signer is None:
            return
        try:
            v = signer.sign_vote(vtype, hs.height, hs.round, bid)
        except DoubleSignError as exc:
            log.warning("not voting: %s", exc)
            return
        self._voteset(hs.round, vtype).add(v)
        self.env.broadcast_vote(v)

    def _prevote(self, bid: bytes | None) -> None:
        self._sign_and_send(VoteType.PREVOTE, bid)
        self._hs().step = Step.PREVOTE

    def _precommit(self, bid: bytes | None) -> None:
        self._sign_and_send(VoteType.PRECOMMIT, bid)
        self._hs().step = Step.PRECOMMIT

    def _process(self) -> None:
        """Apply every enabled upon-rule until none fires (each rule changes state or a flag)."""
        while self.hs is not None and self.hs.step != COMMITTED and self._apply_one_rule():
            pass

    def _apply_one_rule(self) -> bool:
        hs = self._hs()
        # (L49) decide: a block with > 2/3 precommits in any round.
        for (rnd, vtype), vs in hs.votes.items():
            if vtype != VoteType.PRECOMMIT:
                continue
            ok, bid = vs.quorum_block()
            if ok and bid is not None and bid in hs.blocks and self._valid(bid):
                commit = Commit.from_precommits(hs.height, rnd, bid, vs.votes_for(bid))
                hs.step = COMMITTED
                self.env.decide(hs.height, hs.blocks[bid], commit)
                return False
        # (L55) skip to a higher round on f+1 of the power voting in it.
        skip = self._round_to_skip_to()
        if skip is not None:
            self._start_round(skip)
            return True
        r = hs.round
        prop = hs.proposals.get(r)
        prevotes = self._voteset(r, VoteType.PREVOTE)
        if hs.step == Step.PROPOSE and prop is not None:
            bid = prop.block_id
            if prop.pol_round == -1:  # (L22)
                good = self._valid(bid) and (hs.locked_round == -1 or hs.locked_id == bid)
                self._prevote(bid if good else None)
                return True
            pol_votes = hs.votes.get((prop.pol_round, VoteType.PREVOTE))
            if pol_votes is not None and pol_votes.has_quorum_for(bid):  # (L28)
                good = self._valid(bid) and (
                    hs.locked_round <= prop.pol_round or hs.locked_id == bid
                )
                self._prevote(bid if good else None)
                return True
        flags = self._flags(r)
        if hs.step == Step.PREVOTE and not flags.prevote_timeout and prevotes.has_quorum_any():
            flags.prevote_timeout = True  # (L34)
            self.env.schedule_timeout(
                hs.height, r, Step.PREVOTE, self.timeouts.for_step(Step.PREVOTE, r)
            )
            return True
        if (
            hs.step >= Step.PREVOTE
            and not flags.polka_seen
            and prop is not None
            and prevotes.has_quorum_for(prop.block_id)
            and self._valid(prop.block_id)
        ):  # (L36)
            flags.polka_seen = True
            if hs.step == Step.PREVOTE:
                hs.locked_id, hs.locked_round = prop.block_id, r
                self._precommit(prop.block_id)
            hs.valid_id, hs.valid_round = prop.block_id, r
            return True
        if hs.step == Step.PREVOTE and prevotes.has_quorum_for(None):  # (L44)
            self._precommit(None)
            return True
        precommits = self._voteset(r, VoteType.PRECOMMIT)
        if not flags.precommit_timeout and precommits.has_quorum_any():  # (L47)
            flags.precommit_timeout = True
            self.env.schedule_timeout(
                hs.height, r, Step.PRECOMMIT, self.timeouts.for_step(Step.PRECOMMIT, r)
            )
            return True
        return False

    def _round_to_skip_to(self) -> int | None:
        hs = self._hs()
        rounds = sorted({rnd for (rnd, _) in hs.votes if rnd > hs.round}, reverse=True)
        for rnd in rounds:
            senders: set[bytes] = set()
            for t in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                vs = hs.votes.get((rnd, t))
                if vs is not None:
                    senders.update(vs.votes)
            if hs.valset.has_one_third(sum(hs.valset.power_of(k) for k in senders)):
                return rnd
        return None
