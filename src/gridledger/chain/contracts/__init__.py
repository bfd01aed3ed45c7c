"""Contracts: deterministic state transition rules, dispatched by transaction type.

The core contracts below are always loaded, in this order; a genesis document may name more
(``"contracts": ["package.module", ...]``, each exposing ``CONTRACT``), appended in its order.
"""

from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    PayloadError,
    Registry,
    RegistryError,
    State,
    TxType,
    load_contract,
)

CORE_CONTRACTS = (
    "gridledger.chain.contracts.membership",
    "gridledger.chain.contracts.tokens",
    "gridledger.chain.contracts.energy",
    "gridledger.chain.contracts.metering",
    "gridledger.chain.contracts.certificates",
    "gridledger.chain.contracts.validators",
)


def build_registry(extra: tuple[str, ...] | list[str] = ()) -> Registry:
    return Registry(load_contract(spec) for spec in (*CORE_CONTRACTS, *extra))


__all__ = [
    "CORE_CONTRACTS",
    "Context",
    "Contract",
    "ContractError",
    "PayloadError",
    "Registry",
    "RegistryError",
    "State",
    "TxType",
    "build_registry",
    "load_contract",
]
