"""An in-process, virtual-time network for the Tendermint state machine.

Deterministic (seeded RNG, event queue ordered by (time, sequence)): message delays, drops, a
per-link filter for partitions, and byzantine behaviours (split proposals, equivocating votes).
Blocks are opaque bytes whose id is their SHA-256, so the test application is trivial and the
tests exercise only consensus.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from gridledger.chain.abci import Validator
from gridledger.chain.consensus.tendermint.evidence import DuplicateVoteEvidence
from gridledger.chain.consensus.tendermint.privval import PrivValidator
from gridledger.chain.consensus.tendermint.state import ConsensusState, Timeouts
from gridledger.chain.consensus.tendermint.types import (
    Commit,
    ConsensusError,
    Proposal,
    Step,
    Vote,
    VoteType,
)
from gridledger.chain.consensus.tendermint.validators import ValidatorSet

CHAIN = "sim-chain"


def make_keys(n: int, seed: int = 0) -> list[SigningKey]:
    return [SigningKey(hashlib.sha256(f"sim-{seed}-{i}".encode()).digest()) for i in range(n)]


@dataclass(frozen=True)
class Status:
    index: int
    height: int


@dataclass(frozen=True)
class CatchUp:
    block: bytes
    commit: Commit


@dataclass
class SimNode:
    index: int
    key: SigningKey
    net: SimNet
    cs: ConsensusState = field(init=False)
    decided: dict[int, bytes] = field(default_factory=dict)
    commits: dict[int, Commit] = field(default_factory=dict)
    evidence: list[DuplicateVoteEvidence] = field(default_factory=list)
    sent: list[Proposal | Vote] = field(default_factory=list)
    counter: int = 0

    @property
    def pub(self) -> bytes:
        return bytes(self.key.verify_key)

    # Environment ------------------------------------------------------------------------------
    def broadcast_proposal(self, p: Proposal) -> None:
        self.sent.append(p)
        if self.index in self.net.split_proposers:
            alt_block = p.block + b"|alt"
            alt = self.cs.privval.sign_unguarded_proposal(
                p.height, p.round, p.pol_round, hashlib.sha256(alt_block).digest(), alt_block
            )
            half = [n for n in self.net.nodes if n is not self][: len(self.net.nodes) // 2]
            for n in self.net.nodes:
                if n is not self:
                    self.net.send(self, n, alt if n in half else p)
            return
        self.net.broadcast(self, p)

    def broadcast_vote(self, v: Vote) -> None:
        self.sent.append(v)
        if self.index in self.net.equivocators and v.type == VoteType.PREVOTE:
            other = None if v.block_id is not None else hashlib.sha256(b"x").digest()
            alt = self.cs.privval.sign_unguarded_vote(v.type, v.height, v.round, other)
            others = [n for n in self.net.nodes if n is not self]
            for i, n in enumerate(others):
                self.net.send(self, n, alt if i % 2 else v)
            return
        self.net.broadcast(self, v)

    def schedule_timeout(self, height: int, rnd: int, step: Step, delay_s: float) -> None:
        self.net.at(delay_s, lambda: self._timeout(height, rnd, step))

    def _timeout(self, height: int, rnd: int, step: Step) -> None:
        self.cs.on_timeout(height, rnd, step)

    def tick(self) -> None:
        """What the reactor does on its status tick: re-send own messages, announce height."""
        if self.cs.hs is not None:
            for m in self.cs.own_messages():
                self.net.broadcast(self, m)
            self.net.broadcast(self, Status(self.index, self.cs.height))
        self.net.at(self.net.tick_s, self.tick)

    def on_status(self, st: Status) -> None:
        commit = self.commits.get(st.height)
        if commit is not None:
            self.net.send(self, self.net.nodes[st.index], CatchUp(self.decided[st.height], commit))

    def get_value(self, height: int, rnd: int) -> tuple[bytes, bytes]:
        self.counter += 1
        block = f"h{height}r{rnd}n{self.index}c{self.counter}".encode()
        return block, hashlib.sha256(block).digest()

    def block_id_of(self, height: int, block: bytes) -> bytes | None:
        return hashlib.sha256(block).digest()

    def validate(self, height: int, block: bytes) -> bool:
        self.net.validations += 1
        return self.net.valid(block)

    def validate_committed(self, height: int, block: bytes) -> bool:
        return self.validate(height, block)

    def decide(self, height: int, block: bytes, commit: Commit) -> None:
        self.decided[height] = block
        self.commits[height] = commit
        if height < self.net.target_height:
            self.net.at(
                self.net.timeouts.commit_s,
                lambda: self.cs.start_height(height + 1, self.net.valset_at(height + 1)),
            )

    def on_evidence(self, evidence: DuplicateVoteEvidence) -> None:
        self.evidence.append(evidence)

    def relay_vote(self, vote: Vote) -> None:
        others = [n for n in self.net.nodes if n is not self]
        for n in self.net.rng.sample(others, min(self.net.relay_fanout, len(others))):
            self.net.send(self, n, vote)

    def deliver(self, msg: Proposal | Vote | Status | CatchUp) -> None:
        try:
            if isinstance(msg, Status):
                self.on_status(msg)
            elif isinstance(msg, CatchUp):
                self.cs.on_commit(msg.block, msg.commit)
            elif isinstance(msg, Proposal):
                self.cs.on_proposal(msg)
            else:
                self.cs.on_vote(msg)
        except ConsensusError:
            self.net.rejected += 1


class SimNet:
    def __init__(
        self,
        tmp: Path,
        n: int = 4,
        powers: list[int] | None = None,
        seed: int = 1,
        delay_s: tuple[float, float] = (0.001, 0.01),
        drop: float = 0.0,
        timeouts: Timeouts | None = None,
        target_height: int = 5,
    ):
        self.rng = random.Random(seed)
        self.now = 0.0
        self._q: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.delay_s, self.drop = delay_s, drop
        self.timeouts = timeouts or Timeouts(
            propose_s=0.1,
            propose_delta_s=0.05,
            prevote_s=0.05,
            prevote_delta_s=0.02,
            precommit_s=0.05,
            precommit_delta_s=0.02,
            commit_s=0.01,
        )
        self.target_height = target_height
        self.tick_s = 0.2
        self.relay_fanout = 2
        self.link_filter: Callable[[int, int, Proposal | Vote], bool] = lambda s, d, m: True
        self.valid: Callable[[bytes], bool] = lambda b: True
        self.split_proposers: set[int] = set()
        self.equivocators: set[int] = set()
        self.crashed: set[int] = set()
        self.validations = 0
        self.rejected = 0
        keys = make_keys(n, seed)
        powers = powers or [1] * n
        self.valset = ValidatorSet(
            [Validator(bytes(k.verify_key), p) for k, p in zip(keys, powers, strict=True)]
        )
        self.nodes: list[SimNode] = []
        for i, k in enumerate(keys):
            node = SimNode(i, k, self)
            pv = PrivValidator(k, tmp / f"pv{seed}-{i}.json", CHAIN)
            node.cs = ConsensusState(CHAIN, node, pv, self.timeouts)
            self.nodes.append(node)

    def valset_at(self, height: int) -> ValidatorSet:
        """Proposer priorities advance once per height, as the reactor does after a commit."""
        vs = self.valset.copy()
        if height > 1:
            vs.increment_proposer_priority(height - 1)
        return vs

    def at(self, delay_s: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._q, (self.now + delay_s, self._seq, fn))

    def send(self, src: SimNode, dst: SimNode, msg: Proposal | Vote) -> None:
        if dst.index in self.crashed or not self.link_filter(src.index, dst.index, msg):
            return
        if self.drop and self.rng.random() < self.drop:
            return
        self.at(self.rng.uniform(*self.delay_s), lambda: dst.deliver(msg))

    def broadcast(self, src: SimNode, msg: Proposal | Vote) -> None:
        for n in self.nodes:
            if n is not src:
                self.send(src, n, msg)

    def start(self, crashed: frozenset[int] = frozenset()) -> None:
        self.crashed = set(crashed)
        for n in self.nodes:
            if n.index not in crashed:
                n.cs.start_height(1, self.valset.copy())
                self.at(self.tick_s, n.tick)

    def run(self, until_s: float, stop: Callable[[], bool] | None = None) -> None:
        while self._q and self._q[0][0] <= until_s:
            t, _, fn = heapq.heappop(self._q)
            self.now = t
            fn()
            if stop is not None and stop():
                return

    def all_decided(self, nodes: list[SimNode], height: int) -> bool:
        return all(height in n.decided for n in nodes)

    def assert_agreement(self) -> None:
        heights = set().union(*(n.decided for n in self.nodes))
        for h in heights:
            blocks = {n.decided[h] for n in self.nodes if h in n.decided}
            assert len(blocks) == 1, f"fork at height {h}: {blocks}"
