"""The validator's signer with a double-sign guard that survives restarts.

Before a signature leaves this object, the (height, round, step) it is for and the signed bytes
are written to disk and fsync'd. After a crash and restart the guard refuses to sign anything at
an earlier (height, round, step), or different bytes at the same one; re-signing identical bytes
returns the stored signature (a restarted node may legitimately re-send its last vote).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from .types import Proposal, Step, Vote, VoteType


class DoubleSignError(RuntimeError):
    """Signing this message could equivocate with one signed before."""


@dataclass(frozen=True)
class LastSigned:
    height: int = 0
    round: int = -1
    step: int = 0
    sign_bytes: bytes = b""
    signature: bytes = b""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class PrivValidator:
    """Signs proposals and votes for one validator key, guarded by a state file."""

    def __init__(self, signing_key: SigningKey, state_path: str | Path, chain_id: str):
        self._key = signing_key
        self.pub_key = bytes(signing_key.verify_key)
        self.chain_id = chain_id
        self._path = Path(state_path)
        self.last = self._load()

    def _load(self) -> LastSigned:
        if not self._path.exists():
            return LastSigned()
        try:
            d = json.loads(self._path.read_text())
            return LastSigned(
                int(d["height"]),
                int(d["round"]),
                int(d["step"]),
                bytes.fromhex(d["sign_bytes"]),
                bytes.fromhex(d["signature"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            # A corrupt guard must stop the validator: signing blind could equivocate.
            raise DoubleSignError(f"unreadable signer state {self._path}: {exc}") from exc

    def _sign(self, height: int, rnd: int, step: Step, sign_bytes: bytes) -> bytes:
        last = self.last
        hrs, last_hrs = (height, rnd, int(step)), (last.height, last.round, last.step)
        if hrs < last_hrs:
            raise DoubleSignError(f"refusing to sign {hrs}: already signed at {last_hrs}")
        if hrs == last_hrs:
            if sign_bytes == last.sign_bytes:
                return last.signature
            raise DoubleSignError(f"refusing to sign conflicting message at {hrs}")
        sig = self._key.sign(sign_bytes).signature
        state = {
            "height": height,
            "round": rnd,
            "step": int(step),
            "sign_bytes": sign_bytes.hex(),
            "signature": sig.hex(),
        }
        _write_atomic(self._path, json.dumps(state).encode())
        self.last = LastSigned(height, rnd, int(step), sign_bytes, sig)
        return sig

    def sign_vote(self, vtype: VoteType, height: int, rnd: int, block_id: bytes | None) -> Vote:
        v = Vote(vtype, height, rnd, block_id, self.pub_key)
        sig = self._sign(height, rnd, Step(int(vtype)), v.sign_bytes(self.chain_id))
        return Vote(vtype, height, rnd, block_id, self.pub_key, sig)

    def sign_proposal(
        self, height: int, rnd: int, pol_round: int, block_id: bytes, block: bytes
    ) -> Proposal:
        p = Proposal(height, rnd, pol_round, block_id, block, self.pub_key)
        sig = self._sign(height, rnd, Step.PROPOSE, p.sign_bytes(self.chain_id))
        return Proposal(height, rnd, pol_round, block_id, block, self.pub_key, sig)

    def sign_unguarded_vote(
        self, vtype: VoteType, height: int, rnd: int, block_id: bytes | None
    ) -> Vote:
        """Test-only: sign without the guard, to build an equivocating (byzantine) validator."""
        v = Vote(vtype, height, rnd, block_id, self.pub_key)
        sig = self._key.sign(v.sign_bytes(self.chain_id)).signature
        return Vote(vtype, height, rnd, block_id, self.pub_key, sig)

    def sign_unguarded_proposal(
        self, height: int, rnd: int, pol_round: int, block_id: bytes, block: bytes
    ) -> Proposal:
        """Test-only: a second proposal for one (height, round) from a byzantine proposer."""
        p = Proposal(height, rnd, pol_round, block_id, block, self.pub_key)
        sig = self._key.sign(p.sign_bytes(self.chain_id)).signature
        return Proposal(height, rnd, pol_round, block_id, block, self.pub_key, sig)
