"""A small permissioned chain for tests: DSO, vendor, two prosumers, a meter, one validator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridledger.chain.app import LedgerApp
from gridledger.chain.consensus.solo import SoloEngine
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.chain.mempool import Mempool
from gridledger.chain.store import Store
from gridledger.chain.tx import make_tx

CHAIN_ID = "test-chain"


def seeded_key(n: int) -> KeyPair:
    return KeyPair.from_seed(bytes([n]) * 32)


@dataclass
class Chain:
    path: Path
    store: Store
    app: LedgerApp
    mempool: Mempool
    engine: SoloEngine
    keys: dict[str, KeyPair]
    seqs: dict[bytes, int] = field(default_factory=dict)
    clock: list[int] = field(default_factory=lambda: [1_700_000_000_000])

    def tx(self, who: str, tx_type: str, payload: dict[str, Any], seq: int | None = None) -> bytes:
        key = self.keys[who]
        if seq is None:
            seq = self.seqs.get(key.pub_key, 0)
            self.seqs[key.pub_key] = seq + 1
        return make_tx(key, CHAIN_ID, seq, tx_type, payload).raw

    def submit(self, raw: bytes):
        return self.mempool.add(raw)

    def block(self):
        self.clock[0] += 1000
        return self.engine.produce_block(allow_empty=True)

    def pub(self, who: str) -> str:
        return self.keys[who].pub_hex

    def account(self, who: str) -> dict:
        from gridledger.chain import encoding

        return encoding.decode(self.app.query(f"account/{self.pub(who)}").value)

    def result(self, raw: bytes):
        from gridledger.chain.tx import tx_id

        return self.store.get_tx(tx_id(raw))


def genesis_bytes(keys: dict[str, KeyPair], balances: list | None = None) -> bytes:
    members = [
        {"bus": None, "name": "dso", "pub_key": keys["dso"].pub_hex, "role": "dso"},
        {"bus": None, "name": "vendor", "pub_key": keys["vendor"].pub_hex, "role": "vendor"},
        {"bus": None, "name": "ict", "pub_key": keys["ict"].pub_hex, "role": "ict"},
    ]
    if balances is None:
        balances = [{"account": keys["dso"].pub_hex, "amount": 1_000_000, "denom": "utoken"}]
    return make_genesis(
        CHAIN_ID, 1_700_000_000_000, [(keys["validator"].pub_hex, 10)], members, balances
    )


def make_chain(tmp_path: Path, onboard: bool = True, synchronous: str = "NORMAL") -> Chain:
    keys = {
        name: seeded_key(i + 1)
        for i, name in enumerate(
            ["dso", "vendor", "ict", "validator", "alice", "bob", "meter_a", "meter_b", "mallory"]
        )
    }
    store = Store(tmp_path / "chain.db", synchronous=synchronous)
    app = LedgerApp(store)
    app.init_chain(genesis_bytes(keys))
    mempool = Mempool(app)
    chain = Chain(tmp_path, store, app, mempool, None, keys)  # type: ignore[arg-type]
    chain.engine = SoloEngine(
        app, store, mempool, keys["validator"], clock_ms=lambda: chain.clock[0]
    )
    if onboard:
        for name, bus in (("alice", 3), ("bob", 7)):
            assert chain.submit(
                chain.tx(
                    "vendor",
                    "member.register",
                    {"bus": bus, "pub_key": chain.pub(name), "role": "prosumer"},
                )
            ).ok
        assert chain.submit(
            chain.tx(
                "vendor",
                "member.bind_meter",
                {"meter": chain.pub("meter_a"), "prosumer": chain.pub("alice")},
            )
        ).ok
        assert chain.submit(
            chain.tx(
                "vendor",
                "member.bind_meter",
                {"meter": chain.pub("meter_b"), "prosumer": chain.pub("bob")},
            )
        ).ok
        for name in ("alice", "bob"):
            assert chain.submit(
                chain.tx(
                    "dso", "token.mint", {"amount": 1000, "denom": "utoken", "to": chain.pub(name)}
                )
            ).ok
        chain.block()
    return chain
