"""The genesis document: chain id, first validators and members, initial balances, parameters.

Canonical JSON (docs/ledger.md). Checked at the boundary: every error names the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, cast

from gridledger.chain import encoding
from gridledger.chain.keys import ROLES

DEFAULT_PARAMS: dict[str, Any] = {
    "max_block_bytes": 8 * 1024 * 1024,
    "max_block_txs": 20_000,
    "max_tx_bytes": 32 * 1024,
    "meter_tokens": True,
}


class GenesisValidator(TypedDict):
    power: int
    pub_key: str  # hex, 32 bytes


class GenesisMember(TypedDict):
    pub_key: str  # hex, 32 bytes
    role: str  # keys.ROLES
    name: NotRequired[str]
    bus: NotRequired[int]


class GenesisBalance(TypedDict):
    account: str  # a genesis member's pub_key
    denom: str  # utoken | ewh
    amount: int


class GenesisDoc(TypedDict):
    """The genesis document as :func:`parse_genesis` checked it; read by the application
    (``LedgerApp.init_chain``), the consensus engines and the contracts' ``genesis`` hooks."""

    balances: list[GenesisBalance]
    chain_id: str
    contracts: list[str]
    genesis_time_ms: int
    members: list[GenesisMember]
    params: dict[str, Any]  # DEFAULT_PARAMS' keys only
    validators: list[GenesisValidator]


class GenesisError(ValueError):
    """A genesis document that is malformed or inconsistent."""


@dataclass(frozen=True)
class Genesis:
    raw: bytes
    doc: GenesisDoc

    @property
    def chain_id(self) -> str:
        chain_id: str = self.doc["chain_id"]
        return chain_id

    @property
    def contracts(self) -> list[str]:
        contracts: list[str] = self.doc["contracts"]
        return contracts

    @property
    def params(self) -> dict[str, Any]:
        return {**DEFAULT_PARAMS, **self.doc["params"]}


def make_genesis(
    chain_id: str,
    time_ms: int,
    validators: list[tuple[str, int]],
    members: list[GenesisMember],
    balances: list[GenesisBalance] | None = None,
    contracts: list[str] | None = None,
    params: dict[str, Any] | None = None,
) -> bytes:
    """Build canonical genesis bytes; ``validators`` are (pubkey hex, power)."""
    doc: GenesisDoc = {
        "balances": balances or [],
        "chain_id": chain_id,
        "contracts": contracts or [],
        "genesis_time_ms": time_ms,
        "members": members,
        "params": params or {},
        "validators": [{"power": p, "pub_key": k} for k, p in validators],
    }
    raw = encoding.encode(doc)
    parse_genesis(raw)
    return raw


def _key(v: Any, where: str) -> str:
    try:
        encoding.hex_bytes(v, where, 32)
    except encoding.EncodingError as exc:
        raise GenesisError(f"{where}: {exc}") from exc
    return cast(str, v)  # hex_bytes accepts only a str


def parse_genesis(raw: bytes) -> Genesis:
    try:
        doc = encoding.decode(raw)
    except encoding.EncodingError as exc:
        raise GenesisError(f"genesis is not canonical JSON: {exc}") from exc
    fields = [
        "balances",
        "chain_id",
        "contracts",
        "genesis_time_ms",
        "members",
        "params",
        "validators",
    ]
    if not isinstance(doc, dict) or sorted(doc) != fields:
        raise GenesisError(f"genesis must have exactly the fields {fields}")
    if not isinstance(doc["chain_id"], str) or not 1 <= len(doc["chain_id"]) <= 64:
        raise GenesisError("chain_id must be a string of 1..64 characters")
    if not isinstance(doc["genesis_time_ms"], int) or doc["genesis_time_ms"] < 0:
        raise GenesisError("genesis_time_ms must be a non-negative integer")
    if not doc["validators"]:
        raise GenesisError("genesis needs at least one validator")
    seen: set[str] = set()
    for i, v in enumerate(doc["validators"]):
        _key(v.get("pub_key"), f"validators[{i}].pub_key")
        if not isinstance(v.get("power"), int) or v["power"] <= 0:
            raise GenesisError(f"validators[{i}].power must be a positive integer")
    roles = {}
    for i, m in enumerate(doc["members"]):
        k = _key(m.get("pub_key"), f"members[{i}].pub_key")
        if m.get("role") not in ROLES:
            raise GenesisError(f"members[{i}].role must be one of {list(ROLES)}")
        if k in seen:
            raise GenesisError(f"members[{i}] is listed twice")
        seen.add(k)
        roles[k] = m["role"]
    if "dso" not in roles.values():
        raise GenesisError("genesis must name the DSO (a member with role dso)")
    for i, b in enumerate(doc["balances"]):
        if b.get("account") not in roles:
            raise GenesisError(f"balances[{i}].account is not a genesis member")
        if (
            b.get("denom") not in ("utoken", "ewh")
            or not isinstance(b.get("amount"), int)
            or b["amount"] <= 0
        ):
            raise GenesisError(f"balances[{i}] needs denom utoken|ewh and a positive amount")
    if not all(isinstance(c, str) for c in doc["contracts"]):
        raise GenesisError("contracts must be a list of module names")
    unknown = set(doc["params"]) - set(DEFAULT_PARAMS)
    if unknown:
        raise GenesisError(f"unknown params {sorted(unknown)}")
    return Genesis(raw, cast(GenesisDoc, doc))  # checked field by field above
