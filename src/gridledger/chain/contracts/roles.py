"""Who may hold and who may grant each transaction type: the one table of privileges.

A member may send a type when its role is among the type's declared roles, or when the type was
granted to it with ``member.grant`` and not revoked since.  Grants are the dynamic permissions
of seed 004 §3.2: they let the DSO or a vendor switch a prosumer-level action on or off for one
member.  They must never hand out a privilege of another kind, so every registered type falls
in one *class*, derived from its declared roles (never hand-listed, so a contract loaded from
the genesis is classified the same way):

=============  ==============================  ===============================================
class          declared roles                  held by
=============  ==============================  ===============================================
operator       only ``dso`` / ``ict``          those roles only; never granted (token.mint,
                                               rec.issue, market.losses/reactive/certificate,
                                               energy.*, the rounds' open/seed, ...)
consensus      only ``validator``              the validator set, changed by committee vote
                                               (``validator.propose``); never granted
device         only ``meter``                  a meter's own key; never granted
prosumer       include ``prosumer``            the roles, and members granted it (table below)
governance     anything else (``member.*``,    those roles only; never granted: a granted
               ``settlement.green``,           ``member.register`` would let a prosumer enrol
               ``ev.open``, ``ev.stop``)       an ICT operator, who may mint
=============  ==============================  ===============================================

:data:`GRANTABLE_BY` is the grant table: the classes each role may grant.  A vendor may grant
only what it may send itself (its role or its own grants, minus what was revoked from it), and
only to the prosumers it registered; the DSO grants to any member but itself.  Granting an
operator type to a member who is not an operator does not exist: the consortium names its
operators in the genesis (and the DSO registers ICT operators), and only the validators change
the validator set.  :func:`may_send` honours a grant only for a grantable class, so a grant
record that predates this table cannot be used either.

``python -m gridledger.chain.contracts.roles`` prints the table for the core contracts and every
contract a genesis may add (docs/ledger.md, docs/security.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gridledger.chain import codes
from gridledger.chain.contracts.base import ContractError, TxType

if TYPE_CHECKING:  # membership imports this module
    from gridledger.chain.contracts.membership import Member

OPERATOR = "operator"
CONSENSUS = "consensus"
DEVICE = "device"
PROSUMER = "prosumer"
GOVERNANCE = "governance"

OPERATOR_ROLES = frozenset({"dso", "ict"})

# role -> the classes of types it may grant (roles not listed grant nothing)
GRANTABLE_BY: Mapping[str, frozenset[str]] = {
    "dso": frozenset({PROSUMER}),
    "vendor": frozenset({PROSUMER}),
}

# A member's grants and revocations are lists in its record: bounded, so that a governor cannot
# grow one member's record (read by every transaction it sends) without limit.
MAX_PERMISSIONS = 64


def type_class(roles: frozenset[str]) -> str:
    """The class of a type with these declared roles (see the module table)."""
    if roles <= OPERATOR_ROLES:
        return OPERATOR
    if roles <= {"validator"}:
        return CONSENSUS
    if roles <= {"meter"}:
        return DEVICE
    if "prosumer" in roles:
        return PROSUMER
    return GOVERNANCE


def may_send(member: Member, tx_type: str, roles: frozenset[str]) -> bool:
    """The member's role allows the type, or it holds a grant of a grantable type; and the
    type was not revoked from it."""
    if tx_type in member["denied"]:
        return False
    if member["role"] in roles:
        return True
    return tx_type in member["grants"] and type_class(roles) == PROSUMER


def check_grant(types: Mapping[str, TxType], grantor: Member, permission: str) -> None:
    """Raise :class:`ContractError` unless a member like ``grantor`` may grant ``permission``
    (the target's own checks, such as the vendor's ownership, are the membership contract's)."""
    ttype = types.get(permission)
    if ttype is None:
        raise ContractError(
            codes.INVALID_PAYLOAD, f"permission {permission!r} is not a registered transaction type"
        )
    cls = type_class(ttype.roles)
    if cls not in GRANTABLE_BY.get(grantor["role"], frozenset()):
        who = sorted(r for r, classes in GRANTABLE_BY.items() if cls in classes)
        raise ContractError(
            codes.UNAUTHORIZED,
            f"{permission} is a {cls} type: role {grantor['role']} cannot grant it "
            f"(granted by {', '.join(who) or 'nobody'})",
        )
    if grantor["role"] == "vendor" and not may_send(grantor, permission, ttype.roles):
        raise ContractError(
            codes.UNAUTHORIZED, f"a vendor may grant only what it may send itself, not {permission}"
        )


def grant_table(types: Mapping[str, TxType]) -> list[dict[str, Any]]:
    """One row per registered type: its class, declared roles and the roles that may grant it
    (a vendor additionally only what it may send itself)."""
    rows = []
    for name in sorted(types):
        cls = type_class(types[name].roles)
        granted_by = [
            r
            for r, classes in sorted(GRANTABLE_BY.items())
            if cls in classes and (r != "vendor" or "vendor" in types[name].roles)
        ]
        rows.append(
            {
                "type": name,
                "class": cls,
                "roles": sorted(types[name].roles),
                "granted_by": granted_by,
                "max_payload_bytes": types[name].max_payload_bytes,
            }
        )
    return rows


# the contracts a genesis may add (``"contracts"``); the table covers them too
OPTIONAL_CONTRACTS = tuple(
    f"gridledger.chain.contracts.{name}"
    for name in ("market", "settlement", "aggregator", "vpp", "billing", "evidence", "dr", "ev")
)


def main() -> None:  # pragma: no cover - prints the docs table
    from gridledger.chain.contracts import build_registry

    types = build_registry(OPTIONAL_CONTRACTS).types
    print("| tx type | class | sent by (role) | grantable by | max payload (bytes) |")
    print("|---|---|---|---|---|")
    for row in grant_table(types):
        print(
            f"| `{row['type']}` | {row['class']} | {', '.join(row['roles'])} | "
            f"{', '.join(row['granted_by']) or '—'} | {row['max_payload_bytes']} |"
        )


if __name__ == "__main__":
    main()
