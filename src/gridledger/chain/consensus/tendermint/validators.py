"""Validator sets: quorum arithmetic, hashing and CometBFT's weighted round-robin proposer choice.

Proposer selection follows CometBFT (``types/validator_set.go``): every validator accumulates its
voting power as priority each step, the one with the highest priority proposes and pays the total
power back. Over ``total_power`` steps each validator proposes exactly ``power`` times. Priorities
are rescaled so their spread stays within twice the total power and centred on zero, so a node
that was offline cannot come back with a huge accumulated priority.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gridledger.chain.abci import Validator
from gridledger.chain.wire import validator_set_hash

from .types import PUB_KEY_LEN, Commit, ConsensusError, VoteType, verify_sig, vote_sign_bytes

MAX_TOTAL_POWER = 2**60 // 8  # keeps priority arithmetic far from 64-bit limits, as CometBFT
PRIORITY_WINDOW_FACTOR = 2


class ValidatorSetError(ValueError):
    """An invalid validator set or update."""


def address_of(pub_key: bytes) -> bytes:
    return hashlib.sha256(pub_key).digest()[:20]


def _trunc_div(a: int, b: int) -> int:
    # Go's integer division truncates toward zero; Python's // floors. Keep CometBFT's results.
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@dataclass
class _Member:
    pub_key: bytes
    power: int
    address: bytes
    priority: int = 0


class ValidatorSet:
    """An ordered validator set with proposer priorities (mutable; use :meth:`copy`)."""

    def __init__(
        self,
        validators: Iterable[Validator],
        priorities: Iterable[int] | None = None,
        proposer: bytes | None = None,
    ):
        members: list[_Member] = []
        seen: set[bytes] = set()
        for v in validators:
            if len(v.pub_key) != PUB_KEY_LEN:
                raise ValidatorSetError(f"validator key must be 32 bytes, got {len(v.pub_key)}")
            if v.power <= 0:
                raise ValidatorSetError(f"validator power must be > 0, got {v.power}")
            if v.pub_key in seen:
                raise ValidatorSetError(f"duplicate validator {v.pub_key.hex()[:16]}")
            seen.add(v.pub_key)
            members.append(_Member(v.pub_key, v.power, address_of(v.pub_key)))
        if not members:
            raise ValidatorSetError("a validator set needs at least one validator")
        if priorities is not None:
            prios = list(priorities)
            if len(prios) != len(members):
                raise ValidatorSetError("one priority per validator expected")
            for m, p in zip(members, prios, strict=True):
                m.priority = p
        self._members = sorted(members, key=lambda m: (-m.power, m.address))
        self._index = {m.pub_key: i for i, m in enumerate(self._members)}
        self.total_power = sum(m.power for m in self._members)
        if self.total_power > MAX_TOTAL_POWER:
            raise ValidatorSetError(f"total voting power exceeds {MAX_TOTAL_POWER}")
        self._proposer = proposer if proposer in self._index else None
        if priorities is None:
            self.increment_proposer_priority(1)

    # --- membership -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, pub_key: object) -> bool:
        return pub_key in self._index

    @property
    def validators(self) -> tuple[Validator, ...]:
        return tuple(Validator(m.pub_key, m.power) for m in self._members)

    @property
    def priorities(self) -> tuple[int, ...]:
        return tuple(m.priority for m in self._members)

    def power_of(self, pub_key: bytes) -> int:
        i = self._index.get(pub_key)
        return 0 if i is None else self._members[i].power

    def index_of(self, pub_key: bytes) -> int | None:
        return self._index.get(pub_key)

    def copy(self) -> ValidatorSet:
        return ValidatorSet(self.validators, self.priorities, self._proposer)

    # --- quorum arithmetic ------------------------------------------------------------------
    def has_quorum(self, power: int) -> bool:
        """More than 2/3 of the total voting power (integer arithmetic, no rounding)."""
        return 3 * power > 2 * self.total_power

    def has_one_third(self, power: int) -> bool:
        """More than 1/3: at least one honest validator is among them (the f+1 rule)."""
        return 3 * power > self.total_power

    def hash(self) -> bytes:
        """Hash of the members and powers in canonical order (priorities excluded)."""
        return validator_set_hash(self._members)

    # --- proposer selection -----------------------------------------------------------------
    @property
    def proposer(self) -> bytes:
        """The validator chosen by the last increment (the proposer of round 0)."""
        if self._proposer is None:
            self._proposer = self._highest()
        return self._proposer

    def _highest(self) -> bytes:
        best = self._members[0]
        for m in self._members[1:]:
            if m.priority > best.priority or (
                m.priority == best.priority and m.address < best.address
            ):
                best = m
        return best.pub_key

    def increment_proposer_priority(self, times: int) -> None:
        if times <= 0:
            raise ValidatorSetError("times must be positive")
        self._rescale(PRIORITY_WINDOW_FACTOR * self.total_power)
        self._shift_by_average()
        for _ in range(times):
            for m in self._members:
                m.priority += m.power
            chosen = self._highest()
            self._members[self._index[chosen]].priority -= self.total_power
            self._proposer = chosen

    def proposer_for_round(self, rnd: int) -> bytes:
        """The proposer of round ``rnd`` at the height this set (round 0 priorities) is for."""
        if rnd == 0:
            return self.proposer
        c = self.copy()
        c.increment_proposer_priority(rnd)
        return c.proposer

    def _rescale(self, diff_max: int) -> None:
        prios = [m.priority for m in self._members]
        diff = max(prios) - min(prios)
        if diff > diff_max:
            ratio = -(-diff // diff_max)
            for m in self._members:
                m.priority = _trunc_div(m.priority, ratio)

    def _shift_by_average(self) -> None:
        avg = sum(m.priority for m in self._members) // len(self._members)
        for m in self._members:
            m.priority -= avg

    # --- updates ----------------------------------------------------------------------------
    def with_updates(self, updates: Iterable[Validator]) -> ValidatorSet:
        """A new set after ``updates`` (power 0 removes); new members start at -1.125 * total."""
        current = {m.pub_key: (m.power, m.priority) for m in self._members}
        upd: dict[bytes, int] = {}
        for u in updates:
            if len(u.pub_key) != PUB_KEY_LEN or u.power < 0:
                raise ValidatorSetError("update needs a 32-byte key and power >= 0")
            if u.pub_key in upd:
                raise ValidatorSetError(f"duplicate update for {u.pub_key.hex()[:16]}")
            if u.power == 0 and u.pub_key not in current:
                raise ValidatorSetError(f"cannot remove unknown validator {u.pub_key.hex()[:16]}")
            upd[u.pub_key] = u.power
        merged = {k: p for k, (p, _) in current.items()}
        merged.update(upd)
        merged = {k: p for k, p in merged.items() if p > 0}
        if not merged:
            raise ValidatorSetError("update would remove every validator")
        total = sum(merged.values())
        new_prio = -(total + (total >> 3))
        vals = [Validator(k, p) for k, p in merged.items()]
        prios = [current[k][1] if k in current else new_prio for k in merged]
        out = ValidatorSet(vals, prios)
        out._rescale(PRIORITY_WINDOW_FACTOR * out.total_power)
        out._shift_by_average()
        return out

    # --- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "validators": [[m.pub_key.hex(), m.power, m.priority] for m in self._members],
            "proposer": self.proposer.hex(),
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> ValidatorSet:
        rows = d["validators"]
        return ValidatorSet(
            [Validator(bytes.fromhex(k), int(p)) for k, p, _ in rows],
            [int(r[2]) for r in rows],
            bytes.fromhex(d["proposer"]),
        )


def verify_commit(chain_id: str, valset: ValidatorSet, commit: Commit) -> None:
    """Raise :class:`ConsensusError` unless > 2/3 of ``valset``'s power signed ``commit``."""
    seen: set[bytes] = set()
    power = 0
    msg = vote_sign_bytes(
        chain_id, VoteType.PRECOMMIT, commit.height, commit.round, commit.block_hash
    )
    for s in commit.signatures:
        if s.validator in seen:
            raise ConsensusError("commit counts one validator twice")
        seen.add(s.validator)
        p = valset.power_of(s.validator)
        if p == 0:
            raise ConsensusError(f"commit signed by non-validator {s.validator.hex()[:16]}")
        if not verify_sig(s.validator, msg, s.signature):
            raise ConsensusError(f"bad precommit signature from {s.validator.hex()[:16]}")
        power += p
    if not valset.has_quorum(power):
        raise ConsensusError(
            f"commit has {power} of {valset.total_power} voting power, needs more than 2/3"
        )
