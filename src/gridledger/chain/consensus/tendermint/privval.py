"""The validator's signer with a double-sign guard that survives restarts.

Before a signature leaves this object, the (height, round, step) it is for and the signed bytes
are written to disk and fsync'd. After a crash and restart the guard refuses to sign anything at
an earlier (height, round, step), or different bytes at the same one; re-signing identical bytes
returns the stored signature (a restarted node may legitimately re-send its last vote).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


RECORD_BYTES = 512  # one disk sector: the record is rewritten in place with one fsync


def _encode_record(state: dict[str, Any]) -> bytes:
    body = json.dumps(state, sort_keys=True).encode()
    line = body + b"\n" + hashlib.sha256(body).hexdigest().encode() + b"\n"
    if len(line) > RECORD_BYTES:
        raise DoubleSignError("signer state record too large")
    return line.ljust(RECORD_BYTES, b" ")


def _decode_record(data: bytes) -> dict[str, Any]:
    body, _, check = data.rstrip(b" ").rstrip(b"\n").partition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != check:
        raise ValueError("checksum mismatch (torn or edited record)")
    record: dict[str, Any] = json.loads(body)
    return record


class PrivValidator:
    """Signs proposals and votes for one validator key, guarded by a state file."""

    def __init__(self, signing_key: SigningKey, state_path: str | Path, chain_id: str):
        self._key = signing_key
        self.pub_key = bytes(signing_key.verify_key)
        self.chain_id = chain_id
        self._path = Path(state_path)
        self.last = self._load()
        self._fd: int | None = None

    def _load(self) -> LastSigned:
        if not self._path.exists():
            return LastSigned()
        try:
            d = _decode_record(self._path.read_bytes())
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
        self._persist(_encode_record(state))
        self.last = LastSigned(height, rnd, int(step), sign_bytes, sig)
        return sig

    def _persist(self, record: bytes) -> None:
        # In-place rewrite of one sector plus fsync: one disk flush per signature (a temp file
        # and rename would need two, the file's and the directory's). A torn record fails its
        # checksum at the next start and the signer refuses to run rather than sign blind.
        if self._fd is None:
            new = not self._path.exists()
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            if new:
                dfd = os.open(self._path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        os.pwrite(self._fd, record, 0)
        os.fsync(self._fd)

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
