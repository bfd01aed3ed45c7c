"""In-process network of full ledger validators (real app, store, blocks) on virtual time.

Like :mod:`simnet` but each node is the real stack the validator process runs: LedgerApp +
SQLite Store + Mempool + LedgerChain + ConsensusState, so blocks are real ledger blocks and
commits are checked against real state roots. No sockets: messages are delivered through a
deterministic event queue.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from pathlib import Path

from gridledger.chain.app import LedgerApp
from gridledger.chain.consensus.tendermint.evidence import DuplicateVoteEvidence
from gridledger.chain.consensus.tendermint.ledger import LedgerChain
from gridledger.chain.consensus.tendermint.privval import PrivValidator
from gridledger.chain.consensus.tendermint.state import ConsensusState, Timeouts
from gridledger.chain.consensus.tendermint.types import Commit, Proposal, Step, Vote
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.chain.mempool import Mempool
from gridledger.chain.store import Store
from gridledger.chain.tx import make_tx

CHAIN = "ledgernet"
GENESIS_MS = 1_700_000_000_000


def kp(name: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(name.encode()).digest())


def genesis_for(validators: list[KeyPair], extra_validator_members: list[KeyPair] = ()) -> bytes:
    dso, alice, bob = kp("dso"), kp("alice"), kp("bob")
    members = [
        {"name": "dso", "pub_key": dso.pub_hex, "role": "dso"},
        {"name": "alice", "pub_key": alice.pub_hex, "role": "prosumer"},
        {"name": "bob", "pub_key": bob.pub_hex, "role": "prosumer"},
    ]
    members += [
        {"name": f"v{i}", "pub_key": k.pub_hex, "role": "validator"}
        for i, k in enumerate([*validators, *extra_validator_members])
    ]
    balances = [{"account": alice.pub_hex, "amount": 1_000_000, "denom": "utoken"}]
    return make_genesis(
        CHAIN,
        GENESIS_MS,
        [(k.pub_hex, 1) for k in validators],
        members,
        balances,
        ["gridledger.chain.contracts.evidence"],
    )


class LedgerNode:
    def __init__(self, net: LedgerNet, index: int, key: KeyPair, home: Path):
        self.net, self.index, self.key, self.home = net, index, key, home
        self.open()

    def open(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.home / "chain.db", synchronous="OFF")
        self.app = LedgerApp(self.store)
        self.app.init_chain(self.net.genesis)
        self.mempool = Mempool(self.app)
        self.chain = LedgerChain(
            self.app,
            self.store,
            self.mempool,
            self.net.genesis,
            self.home / "consensus_state.json",
            clock_ms=lambda: GENESIS_MS + 1000 + int(self.net.now * 1000),
        )
        pv = PrivValidator(self.key.signing_key, self.home / "privval.json", CHAIN)
        self.cs = ConsensusState(CHAIN, self, pv, self.net.timeouts)
        self.up = True
        self.evidence: list[DuplicateVoteEvidence] = []

    def close(self) -> None:
        self.up = False
        self.store.close()

    def start(self) -> None:
        h = self.chain.height + 1
        self.cs.start_height(h, self.chain.valset(h))

    # Environment -----------------------------------------------------------------------------
    def broadcast_proposal(self, p: Proposal) -> None:
        self.net.broadcast(self, p)

    def broadcast_vote(self, v: Vote) -> None:
        self.net.broadcast(self, v)

    def relay_vote(self, v: Vote) -> None:
        pass

    def schedule_timeout(self, height: int, rnd: int, step: Step, delay_s: float) -> None:
        cs = self.cs
        self.net.at(delay_s, lambda: self.up and cs is self.cs and cs.on_timeout(height, rnd, step))

    def get_value(self, height: int, rnd: int) -> tuple[bytes, bytes]:
        return self.chain.make_block(height, rnd, self.key.pub_key)

    def block_id_of(self, height: int, block: bytes) -> bytes | None:
        return self.chain.block_id_of(block)

    def validate(self, height: int, block: bytes) -> bool:
        return self.chain.problem(height, block) is None

    def validate_committed(self, height: int, block: bytes) -> bool:
        return self.chain.problem(height, block, committed=True) is None

    def decide(self, height: int, block: bytes, commit: Commit) -> None:
        self.chain.apply(height, block, commit)
        self.net.at(self.net.timeouts.commit_s, lambda: self.up and self.start())

    def on_evidence(self, ev: DuplicateVoteEvidence) -> None:
        self.evidence.append(ev)

    # client ----------------------------------------------------------------------------------
    def submit(self, raw: bytes) -> None:
        res = self.mempool.add(raw)
        assert res.ok, res.log
        for n in self.net.nodes:
            if n is not self and n.up:
                n.chain.add_peer_tx(raw)


class LedgerNet:
    def __init__(
        self, tmp: Path, n: int = 4, extra_validator_members: int = 0, target_height: int = 5
    ):
        self.keys = [kp(f"validator-{i}") for i in range(n)]
        self.extra = [kp(f"spare-{i}") for i in range(extra_validator_members)]
        self.genesis = genesis_for(self.keys, self.extra)
        self.now = 0.0
        self._q: list[tuple[float, int, Callable]] = []
        self._seq = 0
        self.target_height = target_height
        self.timeouts = Timeouts(0.2, 0.1, 0.1, 0.05, 0.1, 0.05, 0.01)
        self.nodes = [LedgerNode(self, i, k, tmp / f"n{i}") for i, k in enumerate(self.keys)]

    def at(self, delay_s: float, fn: Callable) -> None:
        self._seq += 1
        heapq.heappush(self._q, (self.now + delay_s, self._seq, fn))

    def broadcast(self, src: LedgerNode, msg) -> None:
        for n in self.nodes:
            if n is not src:
                self.at(0.002, lambda n=n, cs=n.cs: self._deliver(n, cs, msg))

    def _deliver(self, node: LedgerNode, cs: ConsensusState, msg) -> None:
        if not node.up or cs is not node.cs:
            return
        if isinstance(msg, Proposal):
            cs.on_proposal(msg)
        else:
            cs.on_vote(msg)

    def start(self) -> None:
        for n in self.nodes:
            n.start()

    def run_until(self, height: int, limit_s: float = 120.0, nodes=None) -> None:
        nodes = nodes if nodes is not None else [n for n in self.nodes if n.up]
        self.target_height = max(self.target_height, height)
        while self._q and self._q[0][0] <= limit_s:
            if all(n.chain.height >= height for n in nodes):
                return
            t, _, fn = heapq.heappop(self._q)
            self.now = t
            fn()
        raise AssertionError(f"did not reach height {height}: {[n.chain.height for n in nodes]}")

    def transfer(self, seq: int, amount: int = 5) -> bytes:
        return make_tx(
            kp("alice"),
            CHAIN,
            seq,
            "token.transfer",
            {"amount": amount, "denom": "utoken", "to": kp("bob").pub_hex},
        ).raw
