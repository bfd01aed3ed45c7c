"""Ed25519 identities and key files.

A key file is canonical JSON written with mode 0600. Unencrypted it holds the 32-byte seed in
hex; encrypted, the seed is sealed with PyNaCl's SecretBox (XSalsa20-Poly1305) under a key derived
from the passphrase by Argon2id (libsodium's "interactive" limits: a wrong passphrase costs an
attacker ~0.1 s and 64 MiB per guess).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from gridledger.chain import encoding

ROLES = ("dso", "vendor", "prosumer", "meter", "validator", "ict", "charge_point")
PUB_KEY_LEN = 32
SIG_LEN = 64


class KeyFileError(ValueError):
    """A key file that cannot be read, or a wrong passphrase."""


@dataclass(frozen=True)
class KeyPair:
    signing_key: SigningKey

    @staticmethod
    def generate() -> KeyPair:
        return KeyPair(SigningKey.generate())

    @staticmethod
    def from_seed(seed: bytes) -> KeyPair:
        return KeyPair(SigningKey(seed))

    @property
    def pub_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def pub_hex(self) -> str:
        return self.pub_key.hex()

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature


def verify(pub_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature (libsodium rejects non-canonical S)."""
    if len(pub_key) != PUB_KEY_LEN or len(signature) != SIG_LEN:
        return False
    try:
        VerifyKey(pub_key).verify(message, signature)
    except (BadSignatureError, ValueError, CryptoError):
        return False
    return True


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def save_key(path: Path | str, key: KeyPair, role: str = "", passphrase: str | None = None) -> None:
    """Write ``key`` to ``path`` (mode 0600), sealed under ``passphrase`` when given."""
    doc: dict[str, Any] = {"pub_key": key.pub_hex, "role": role, "type": "ed25519"}
    if passphrase:
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        ops = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
        mem = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
        box_key = nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit=ops, memlimit=mem
        )
        sealed = nacl.secret.SecretBox(box_key).encrypt(key.seed)
        doc["sealed"] = {
            "kdf": "argon2id",
            "memlimit": mem,
            "opslimit": ops,
            "salt": salt.hex(),
            "secretbox": bytes(sealed).hex(),
        }
    else:
        doc["seed"] = key.seed.hex()
    _write_private(Path(path), encoding.encode(doc) + b"\n")


def load_key(path: Path | str, passphrase: str | None = None) -> tuple[KeyPair, str]:
    """Read a key file; return the key pair and its role."""
    path = Path(path)
    try:
        doc = encoding.decode(path.read_bytes().rstrip(b"\n"))
    except (OSError, encoding.EncodingError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("type") != "ed25519":
        raise KeyFileError(f"{path} is not an ed25519 key file")
    if "sealed" in doc:
        if not passphrase:
            raise KeyFileError(f"{path} is encrypted: a passphrase is needed")
        s = doc["sealed"]
        box_key = nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE,
            passphrase.encode(),
            bytes.fromhex(s["salt"]),
            opslimit=s["opslimit"],
            memlimit=s["memlimit"],
        )
        try:
            seed = nacl.secret.SecretBox(box_key).decrypt(bytes.fromhex(s["secretbox"]))
        except CryptoError as exc:
            raise KeyFileError(f"wrong passphrase for {path}") from exc
    else:
        seed = encoding.hex_bytes(doc.get("seed"), "seed", 32)
    key = KeyPair.from_seed(seed)
    if key.pub_hex != doc.get("pub_key"):
        raise KeyFileError(f"{path}: public key does not match the seed")
    return key, str(doc.get("role", ""))
