"""A node's home directory: configuration, genesis, keys and data.

```
HOME/config.json     canonical JSON: chain id, API address, block interval, durability, API
                     limits, TLS and read_auth (docs/api.md, "A private chain")
HOME/genesis.json    the genesis document (canonical JSON)
HOME/keys/*.json     Ed25519 key files, mode 0600 (validator, dso, vendor, ict)
HOME/data/chain.db   blocks, results and state (SQLite, WAL)
HOME/data/offchain.db  personal data kept off chain (meter detail), erasable
HOME/node.addr       the API address of the running node (written at start)
```
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from gridledger.chain import encoding
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair, save_key


class HomeError(ValueError):
    """A home directory that is missing, incomplete or already initialised."""


@dataclass
class NodeConfig:
    chain_id: str
    api: str = "127.0.0.1:26657"
    block_interval_ms: int = 1000
    eager: bool = False
    synchronous: str = "FULL"
    validator_key: str = "keys/validator.json"
    # API hardening (docs/security.md): TLS when both files are set (paths relative to HOME);
    # read_auth makes every read need a request signed by a member (a private chain)
    tls_cert: str = ""
    tls_key: str = ""
    read_auth: bool = False
    request_timeout_ms: int = 10_000  # a request's headers and body must arrive within this
    max_event_streams: int = 64
    offchain_quota_bytes: int = 64 * 1024 * 1024
    offchain_quota_records: int = 10_000

    @staticmethod
    def load(home: Path) -> NodeConfig:
        path = home / "config.json"
        try:
            doc = encoding.decode(path.read_bytes().rstrip(b"\n"))
        except (OSError, encoding.EncodingError) as exc:
            raise HomeError(
                f"cannot read {path}: {exc} (run `gridledger node init` first)"
            ) from exc
        try:
            return NodeConfig(**doc)
        except TypeError as exc:
            raise HomeError(f"{path}: {exc}") from exc

    def save(self, home: Path) -> None:
        (home / "config.json").write_bytes(encoding.encode(asdict(self)) + b"\n")


def init_home(
    home: Path,
    chain_id: str,
    passphrase: str | None = None,
    vendors: int = 1,
    dso_utoken: int = 10**12,
    time_ms: int | None = None,
    block_interval_ms: int = 1000,
    contracts: list[str] | None = None,
) -> dict[str, str]:
    """Create keys, genesis and config; return role -> public key hex."""
    import time

    if (home / "genesis.json").exists():
        raise HomeError(f"{home} already holds a genesis; refusing to overwrite it")
    from gridledger.chain.contracts import RegistryError, build_registry

    try:
        build_registry(contracts or [])
    except RegistryError as exc:
        raise HomeError(str(exc)) from exc
    from gridledger.chain.contracts import RegistryError, build_registry

    try:
        build_registry(contracts or [])
    except RegistryError as exc:
        raise HomeError(str(exc)) from exc
    home.mkdir(parents=True, exist_ok=True)
    (home / "data").mkdir(exist_ok=True)
    keys = {"validator": KeyPair.generate(), "dso": KeyPair.generate(), "ict": KeyPair.generate()}
    for i in range(vendors):
        keys[f"vendor{i + 1}" if vendors > 1 else "vendor"] = KeyPair.generate()
    for name, k in keys.items():
        role = "vendor" if name.startswith("vendor") else name
        # the validator key must be usable unattended by the node; the others may be sealed
        save_key(
            home / "keys" / f"{name}.json", k, role, None if name == "validator" else passphrase
        )
    members = [
        {
            "bus": None,
            "name": name,
            "pub_key": k.pub_hex,
            "role": "vendor" if name.startswith("vendor") else name,
        }
        for name, k in keys.items()
        if name != "validator"
    ]
    genesis = make_genesis(
        chain_id,
        time_ms if time_ms is not None else time.time_ns() // 10**6,
        [(keys["validator"].pub_hex, 10)],
        members,
        [{"account": keys["dso"].pub_hex, "amount": dso_utoken, "denom": "utoken"}],
        contracts=contracts or [],
    )
    (home / "genesis.json").write_bytes(genesis + b"\n")
    NodeConfig(chain_id, block_interval_ms=block_interval_ms).save(home)
    os.chmod(home / "keys", 0o700)
    return {name: k.pub_hex for name, k in keys.items()}


def read_genesis(home: Path) -> bytes:
    try:
        return (home / "genesis.json").read_bytes().rstrip(b"\n")
    except OSError as exc:
        raise HomeError(f"no genesis in {home}: {exc}") from exc
