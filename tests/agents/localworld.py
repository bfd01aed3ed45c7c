"""A solo chain with a DSO and prosumers at given buses, for the DSO agents' tests."""

from __future__ import annotations

from pathlib import Path

from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain

SLOT = 900_000
T = 1_800_000_000_000 // SLOT * SLOT
CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]


def key(name: str) -> KeyPair:
    return KeyPair.from_seed(name.encode().ljust(32, b"\0"))


def prosumer_chain(
    home: Path, chain_id: str, buses: dict[str, int]
) -> tuple[LocalChain, dict[str, KeyPair], KeyPair]:
    """The chain (its genesis 8 slots before ``T``, one block at 7 before), the prosumers' keys
    by name and the DSO's key; every prosumer holds 10^11 utoken."""
    keys = {n: key(n) for n in buses}
    val, dso = key("val"), key("dso")
    members = [{"pub_key": dso.pub_hex, "role": "dso", "name": "dso"}] + [
        {"pub_key": k.pub_hex, "role": "prosumer", "name": n, "bus": buses[n]}
        for n, k in keys.items()
    ]
    balances = [{"account": k.pub_hex, "denom": "utoken", "amount": 10**11} for k in keys.values()]
    chain = LocalChain(
        home,
        make_genesis(chain_id, T - 8 * SLOT, [(val.pub_hex, 1)], members, balances, CONTRACTS),
        val,
        T - 8 * SLOT,
    )
    chain.produce(T - 7 * SLOT)
    return chain, keys, dso
