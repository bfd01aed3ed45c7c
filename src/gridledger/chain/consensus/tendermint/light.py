"""Light client: follow the chain from a trusted validator set without executing blocks.

What a prosumer's meter or phone needs: given a validator set it trusts (from the genesis or an
earlier verified header), accept a header when

1. the validator set offered with it hashes to the header's ``validators_hash``;
2. validators holding more than 2/3 of *that* set's power signed the header's hash (the commit);
3. the set is one the trusted state vouches for: for the *next* height, it must be the set the
   trusted header announced in ``next_validators_hash`` (CometBFT's adjacent verification — this
   follows any validator-set change, even a complete one, height by height); further ahead, if
   the set differs from the trusted one, validators holding more than 1/3 of the *trusted* set's
   power must be among the signers (skipping verification: with at most 1/3 faulty in the
   trusted set, at least one honest validator vouches for the new set);

then check a transaction's inclusion proof (``chain/proofs.py``: audit path into the header's
Merkle root for the transaction's tree) against the verified header.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gridledger.chain.abci import Validator
from gridledger.chain.block import Commit, Header, precommit_sign_bytes, validator_set_hash
from gridledger.chain.keys import verify
from gridledger.chain.proofs import verify_proof


class LightClientError(ValueError):
    """A header, commit or proof that the light client cannot accept (says why)."""


@dataclass
class TrustedState:
    height: int
    validators: tuple[Validator, ...]
    block_hash: bytes | None = None
    next_validators_hash: bytes | None = None  # from the trusted header (None: from genesis)


class LightClient:
    def __init__(self, chain_id: str, validators: Sequence[Validator], height: int = 0):
        if not validators:
            raise LightClientError("a light client needs a non-empty trusted validator set")
        self.chain_id = chain_id
        self.trusted = TrustedState(height, tuple(validators))

    def _signed_power(self, commit: Commit, block_hash: bytes, vals: Sequence[Validator]) -> int:
        power = {v.pub_key: v.power for v in vals}
        msg = precommit_sign_bytes(self.chain_id, commit.height, commit.round, block_hash)
        seen: set[bytes] = set()
        total = 0
        for s in commit.signatures:
            if (
                s.validator in power
                and s.validator not in seen
                and verify(s.validator, msg, s.signature)
            ):
                seen.add(s.validator)
                total += power[s.validator]
        return total

    def verify_header(
        self, header: Header, commit: Commit, validators: Sequence[Validator]
    ) -> None:
        """Accept ``header`` (signed by ``validators``) or raise :class:`LightClientError`."""
        if header.chain_id != self.chain_id:
            raise LightClientError(f"header is for chain {header.chain_id!r}")
        if header.height <= self.trusted.height:
            raise LightClientError(
                f"header height {header.height} is not above the trusted {self.trusted.height}"
            )
        if validator_set_hash(validators) != header.validators_hash:
            raise LightClientError("offered validator set does not match the header's hash")
        block_hash = header.hash()
        problem = commit.check(self.chain_id, validators, block_hash, header.height)
        if problem is not None:
            raise LightClientError(f"commit: {problem}")
        trusted = self.trusted
        announced = trusted.next_validators_hash
        if header.height == trusted.height + 1 and announced is not None:
            if header.validators_hash != announced:
                raise LightClientError(
                    "header's validator set is not the one the trusted header announced"
                )
        elif validator_set_hash(trusted.validators) != header.validators_hash:
            vouched = self._signed_power(commit, block_hash, trusted.validators)
            total = sum(v.power for v in trusted.validators)
            if 3 * vouched <= total:
                raise LightClientError(
                    f"only {vouched} of {total} trusted voting power signed: cannot skip to "
                    "this validator set (verify intermediate headers first)"
                )
        self.trusted = TrustedState(
            header.height, tuple(validators), block_hash, header.next_validators_hash
        )

    def follow(self, headers: Sequence[tuple[Header, Commit, Sequence[Validator]]]) -> TrustedState:
        """Verify consecutive headers one by one (each adjacent to the last), following every
        validator-set change through ``next_validators_hash``; returns the new trusted state."""
        for header, commit, validators in headers:
            if header.height != self.trusted.height + 1:
                raise LightClientError(
                    f"header {header.height} does not follow the trusted {self.trusted.height}"
                )
            self.verify_header(header, commit, validators)
        return self.trusted

    def verify_tx(self, proof: dict[str, Any], validators: Sequence[Validator]) -> str:
        """Verify a ``chain/proofs.py`` transaction proof: its header first, then inclusion."""
        try:
            header = Header.from_json(proof["header"])
            commit = Commit.from_json(proof["commit"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LightClientError(f"malformed proof: {exc}") from exc
        if header.height != self.trusted.height or header.hash() != self.trusted.block_hash:
            self.verify_header(header, commit, validators)
        ok, msg = verify_proof(proof, trusted_block_hash=self.trusted.block_hash)
        if not ok:
            raise LightClientError(msg)
        return msg
