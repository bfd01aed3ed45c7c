"""A node of a BFT network: ledger app + store + Tendermint engine + TCP + HTTP API.

A node is a *validator* (``"role": "validator"``, the default: it signs proposals and votes
whenever its key holds power in the validator set) or a *follower* (``"role": "follower"``: it
never signs anything; it receives blocks and votes from the validators, verifies every commit
against the height's validator set, executes the blocks and serves the read API). A follower's
``key.json`` only identifies it on the P2P links; validators let it in through the ``allow``
list of their ``config.json``.

Run one per node: ``python -m gridledger.node.bft --home NODE_DIR`` (``gridledger testnet
up`` does this for every node of a test network). ``NODE_DIR`` holds ``config.json``,
``genesis.json`` (canonical bytes), ``key.json`` (the validator's Ed25519 key) and ``data/``
(SQLite store, double-sign guard state, validator-set schedule).

The HTTP API is the ledger's own (``node/api.py``: ``/status``, ``/txs``, ``/txs/batch``,
``/blocks/{h}``, ``/state/{key}``, ``/proofs/tx/{id}``, ``/events``, ...) plus ``POST /txs/raw``
(binary batch), ``GET /hashes`` (block hash per height), ``GET /commits`` (commit time and tx
ids of recent blocks) and ``GET /validators?height=h``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from gridledger.chain import codes
from gridledger.chain.app import LedgerApp
from gridledger.chain.consensus.tendermint.evidence import Evidence
from gridledger.chain.consensus.tendermint.ledger import LedgerChain
from gridledger.chain.consensus.tendermint.privval import PrivValidator
from gridledger.chain.consensus.tendermint.reactor import Reactor, ReactorConfig
from gridledger.chain.consensus.tendermint.state import Timeouts
from gridledger.chain.consensus.tendermint.statesync import (
    SnapshotServer,
    StateSyncConfig,
    StateSyncer,
    StateSyncError,
)
from gridledger.chain.consensus.tendermint.types import ConsensusError
from gridledger.chain.keys import KeyPair, load_key
from gridledger.chain.mempool import Mempool
from gridledger.chain.p2p.faults import FaultControl
from gridledger.chain.p2p.transport import PeerAddress, Transport
from gridledger.chain.snapshot import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, SnapshotStore
from gridledger.chain.store import Store
from gridledger.chain.tx import make_tx, tx_id
from gridledger.chain.wire import WireError, decode_length_prefixed
from gridledger.node.api import create_api
from gridledger.node.node import EventFeed
from gridledger.node.offchain import OffchainStore
from gridledger.node.service import LedgerReads
from gridledger.node.statesync import check_schedule, light_block, restore, take_snapshot

log = logging.getLogger("gridledger.node.bft")

RECENT_COMMITS = 4096
ROLES = frozenset({"validator", "follower"})


class ConfigError(ValueError):
    """A node configuration that is missing or wrong (names the field)."""


@dataclass(frozen=True)
class BftNodeConfig:
    """A BFT validator's ``config.json`` (a solo node's is ``node.home.NodeConfig``)."""

    name: str
    chain_id: str
    listen_host: str
    listen_port: int
    api_host: str
    api_port: int
    peers: tuple[dict[str, Any], ...]
    timeouts: Timeouts
    status_interval_s: float
    stuck_after_s: float
    byzantine: frozenset[str]
    faults_file: str | None
    store_sync: str
    max_block_txs: int
    empty_block_interval_s: float
    # Test-only clock skew: this node's wall clock reads this much ahead (negative: behind).
    clock_offset_ms: int = 0
    # Test networks only: a simulated clock shared by every validator, reading
    # ``start_ms + (wall_ms - anchor_wall_ms) * speedup`` ({"start_ms", "anchor_wall_ms",
    # "speedup"}), so a market's 15-minute slots pass in seconds of wall time (docs/community.md).
    sim_clock: dict[str, Any] | None = None
    # "validator" (signs when its key holds power) or "follower" (never signs).
    role: str = "validator"
    # Keys let in whatever the validator set is (followers): ({"name", "pub_key"}, ...).
    allow: tuple[dict[str, Any], ...] = ()
    # State snapshots (docs/consensus.md): every this many heights (0: none), the newest kept.
    snapshot_interval: int = 0
    snapshot_keep: int = 2
    snapshot_chunk_bytes: int = DEFAULT_CHUNK_BYTES
    # Start from a peer's snapshot instead of genesis: {"trust_height", "trust_hash", ...}.
    state_sync: StateSyncConfig | None = None

    @staticmethod
    def load(home: Path) -> BftNodeConfig:
        path = home / "config.json"
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        try:
            t = d.get("timeouts", {})
            cfg = BftNodeConfig(
                name=str(d["name"]),
                chain_id=str(d["chain_id"]),
                listen_host=str(d["listen"][0]),
                listen_port=int(d["listen"][1]),
                api_host=str(d["api"][0]),
                api_port=int(d["api"][1]),
                peers=tuple(d.get("peers", [])),
                timeouts=Timeouts(**t),
                status_interval_s=float(d.get("status_interval_s", 0.5)),
                stuck_after_s=float(d.get("stuck_after_s", 1.0)),
                byzantine=frozenset(d.get("byzantine", [])),
                faults_file=d.get("faults_file"),
                store_sync=str(d.get("store_sync", "FULL")),
                max_block_txs=int(d.get("max_block_txs", 5000)),
                empty_block_interval_s=float(d.get("empty_block_interval_s", 1.0)),
                clock_offset_ms=int(d.get("clock_offset_ms", 0)),
                sim_clock=_sim_clock_config(d.get("sim_clock")),
                role=str(d.get("role", "validator")),
                allow=tuple(d.get("allow", [])),
                snapshot_interval=int(d.get("snapshot_interval", 0)),
                snapshot_keep=int(d.get("snapshot_keep", 2)),
                snapshot_chunk_bytes=int(d.get("snapshot_chunk_bytes", DEFAULT_CHUNK_BYTES)),
                state_sync=_state_sync_config(d.get("state_sync")),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: bad or missing field: {exc!r}") from exc
        if cfg.snapshot_interval < 0 or cfg.snapshot_keep < 1:
            raise ConfigError(f"{path}: snapshot_interval must be >= 0 and snapshot_keep >= 1")
        if not 0 < cfg.snapshot_chunk_bytes <= MAX_CHUNK_BYTES:
            raise ConfigError(f"{path}: snapshot_chunk_bytes must be in 1..{MAX_CHUNK_BYTES}")
        if cfg.role not in ROLES:
            raise ConfigError(f"{path}: role must be one of {sorted(ROLES)}, got {cfg.role!r}")
        for entry in (*cfg.peers, *cfg.allow):
            try:
                if len(bytes.fromhex(entry["pub_key"])) != 32:
                    raise ValueError("not 32 bytes")
            except (KeyError, TypeError, ValueError) as exc:
                why = f"{path}: peer/allow entry {entry!r}: bad pub_key ({exc})"
                raise ConfigError(why) from exc
        return cfg


def _sim_clock_config(d: Any) -> dict[str, Any] | None:
    if d is None:
        return None
    sim = {"start_ms": int(d["start_ms"]), "anchor_wall_ms": int(d["anchor_wall_ms"]),
           "speedup": float(d["speedup"])}  # fmt: skip
    if not (1.0 <= sim["speedup"] <= 10_000.0):
        raise ConfigError(f"sim_clock.speedup must be from 1 to 10000, got {sim['speedup']}")
    return sim


def _state_sync_config(d: Any) -> StateSyncConfig | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ValueError("state_sync must be an object")
    try:
        return StateSyncConfig(
            trust_height=int(d["trust_height"]),
            trust_hash=bytes.fromhex(d["trust_hash"]),
            **{k: float(d[k]) for k in ("discovery_s", "request_timeout_s", "timeout_s") if k in d},
            **{k: int(d[k]) for k in ("max_snapshot_bytes",) if k in d},
        )
    except StateSyncError as exc:
        raise ValueError(str(exc)) from exc


class BftNode(LedgerReads):
    """Everything one validator or follower process runs, wired together (module docstring).

    It offers the same interface as the solo :class:`gridledger.node.node.Node` (``store``,
    ``app``, ``mempool``, ``feed``, ``offchain``, ``submit``, ``status``, ``block``, ...), so the
    ledger's HTTP API (``node/api.py``) and its client work unchanged against a BFT validator;
    the read methods are shared with it (:class:`~gridledger.node.service.LedgerReads`).
    """

    def __init__(self, home: Path | str):
        self.home = Path(home)
        self.config = BftNodeConfig.load(self.home)
        self.key, _ = load_key(self.home / "key.json")
        genesis = (self.home / "genesis.json").read_bytes().rstrip(b"\n")
        data = self.home / "data"
        data.mkdir(exist_ok=True)
        self.data, self.genesis = data, genesis
        self.store = Store(data / "chain.db", synchronous=self.config.store_sync)
        c = self.config
        # State sync runs on a store that has no block yet (a restarted synced node goes on
        # from its own height). A restore interrupted before the store's commit may have left
        # the engine's files of the snapshot height: they go, genesis writes its own again.
        self.needs_state_sync = (
            c.state_sync is not None
            and self.store.height(writer=True) == 0
            and self.store.get_block(1, writer=True) is None
        )
        if self.needs_state_sync:
            for name in ("consensus_state.json", "validator_history.json"):
                (data / name).unlink(missing_ok=True)
        self.snapshots = SnapshotStore(data / "snapshots", c.snapshot_keep)
        self.state_sync_stats: dict[str, Any] | None = None
        self._build_engine()
        self.peer_names = {bytes.fromhex(p["pub_key"]): p["name"] for p in (*c.peers, *c.allow)}
        self.allow_keys = frozenset(bytes.fromhex(p["pub_key"]) for p in c.allow)
        faults = FaultControl(self.home / c.faults_file) if c.faults_file else None
        self._allowed_set_hash = self.chain.valset(self.chain.height + 1).hash()
        self.transport = Transport(
            self.chain.chain_id,
            self.key.signing_key,
            c.listen_host,
            c.listen_port,
            [PeerAddress(bytes.fromhex(p["pub_key"]), p["host"], int(p["port"])) for p in c.peers],
            self.allowed_keys(),
            self.reactor.on_frame,
            faults,
        )
        self.reactor.attach(self.transport)
        self.recent: collections.deque = collections.deque(maxlen=RECENT_COMMITS)
        self.feed = EventFeed()
        self.feed.height = self.chain.height
        self.offchain = OffchainStore(data / "offchain.db")
        self._loop: asyncio.AbstractEventLoop | None = None

    def _build_engine(self) -> None:
        """App, mempool, engine and reactor over the store as it stands (again after a
        state-sync restore)."""
        data, genesis = self.data, self.genesis
        self.app = LedgerApp(self.store)
        self.app.init_chain(genesis)
        self.mempool = Mempool(self.app)
        self.chain = LedgerChain(
            self.app,
            self.store,
            self.mempool,
            genesis,
            data / "consensus_state.json",
            max_block_txs=self.config.max_block_txs,
            clock_ms=self._clock_ms,
        )
        if self.chain.chain_id != self.config.chain_id:
            raise ConfigError(
                f"config chain_id {self.config.chain_id!r} differs from genesis "
                f"{self.chain.chain_id!r}"
            )
        c = self.config
        # A follower holds no signer at all: it cannot vote or propose, even if its key were
        # voted into the validator set (it would have to restart as a validator).
        self.privval: PrivValidator | None = None
        if c.role == "validator":
            self.privval = PrivValidator(
                self.key.signing_key, data / "privval_state.json", self.chain.chain_id
            )
        submit_evidence = self._submit_evidence if self.privval is not None else None
        reactor_args = (
            self.chain,
            self.privval,
            ReactorConfig(
                timeouts=c.timeouts,
                status_interval_s=c.status_interval_s,
                stuck_after_s=c.stuck_after_s,
                empty_block_interval_s=c.empty_block_interval_s,
            ),
        )
        if c.byzantine:  # fault tests only: a validator that misbehaves on purpose
            from gridledger.chain.consensus.tendermint.byzantine import ByzantineReactor

            self.reactor: Reactor = ByzantineReactor(
                *reactor_args, submit_evidence=submit_evidence, behaviours=c.byzantine
            )
        else:
            self.reactor = Reactor(*reactor_args, submit_evidence=submit_evidence)
        self.reactor.snapshot_server = SnapshotServer(
            self.snapshots,
            lambda h: light_block(self.chain, self.store, h),
            lambda peer, kind, payload: self.transport.send(peer, kind, payload),
        )
        self.chain.on_applied.append(self._on_applied)

    def _clock_ms(self) -> int:
        wall_ms = int(time.time() * 1000)
        sim = self.config.sim_clock
        if sim is not None:  # anchored on the shared wall clock, so every validator agrees
            wall_ms = sim["start_ms"] + int((wall_ms - sim["anchor_wall_ms"]) * sim["speedup"])
        return wall_ms + self.config.clock_offset_ms

    def allowed_keys(self) -> set[bytes]:
        """Who may hold a link now: the set that signs the next height, plus the allow-list.

        A configured peer that is not on the allow-list counts only while it is a validator,
        so a validator voted out or jailed is refused from the height its power is gone.
        """
        current = self.chain.valset(self.chain.height + 1).validators
        return set(self.allow_keys) | {v.pub_key for v in current}

    async def _state_sync(self) -> None:
        """Restore from a peer's verified snapshot, then run the engine from its height."""
        t0 = time.perf_counter()
        syncer = StateSyncer(
            self.chain.chain_id, self.transport, self.config.state_sync, check_schedule
        )
        self.transport.handler = syncer.on_frame
        restored = await syncer.run()
        base = restore(self.store, self.data, self.snapshots, restored)
        self._build_engine()
        self.reactor.attach(self.transport)
        self.feed.height = self.chain.height
        self._follow_validator_set()
        self.needs_state_sync = False
        st = syncer.stats
        self.state_sync_stats = {
            "height": base["height"],
            "app_hash": base["app_hash"],
            "chunks": len(restored.chunks),
            "chunks_refetched": st.chunks_refetched,
            "peers_dropped": st.banned,
            "manifests_refused": st.refused_manifests,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        log.warning("state sync: restored height %d (%s)", base["height"], self.state_sync_stats)

    # --- hooks ----------------------------------------------------------------------------------
    def _follow_validator_set(self) -> None:
        vs_hash = self.chain.valset(self.chain.height + 1).hash()
        if vs_hash != self._allowed_set_hash:
            self._allowed_set_hash = vs_hash
            cut = self.transport.set_allowed(self.allowed_keys())
            log.warning(
                "validator set changed at height %d: allow-list updated, %d link(s) closed",
                self.chain.height + 1,
                len(cut),
            )

    def _on_applied(self, applied) -> None:
        self._follow_validator_set()
        every = self.config.snapshot_interval
        if every and applied.height % every == 0:
            t0 = time.perf_counter()
            m = take_snapshot(
                self.snapshots, self.chain, self.app, self.config.snapshot_chunk_bytes
            )
            log.info(
                "snapshot of height %d: %d chunks in %.3f s",
                m.height,
                len(m.chunk_hashes),
                time.perf_counter() - t0,
            )
        self.recent.append(
            (applied.height, time.time(), [tx_id(t).hex() for t in applied.block.txs])
        )
        self.feed.publish(applied.block, list(applied.results))

    def _submit_evidence(self, ev: Evidence) -> None:
        if "evidence.submit" not in self.app.registry.types:
            return
        if self.app.query(f"state/evidence/{ev.hash().hex()}").code == 0:
            return
        kp = KeyPair(self.key.signing_key)
        payload = {"evidence": ev.encode().hex()}
        tx = make_tx(
            kp, self.chain.chain_id, self.app.next_seq(kp.pub_hex), "evidence.submit", payload
        )
        res = self.mempool.add(tx.raw)
        if res.ok:
            self.reactor.gossip_tx(tx.raw)
        else:
            log.info("evidence tx not admitted: %s", res.log)

    # --- the solo node's interface (thread-safe: API handlers run in worker threads) ----------
    def submit(self, raw: bytes) -> dict[str, Any]:
        res = self.mempool.add(raw)
        if res.ok:
            self._gossip(raw)
        return {
            "code": res.code,
            "code_name": codes.NAMES.get(res.code, "?"),
            "log": res.log,
            "txid": tx_id(raw).hex(),
        }

    def _gossip(self, raw: bytes) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.reactor.gossip_tx(raw)
        else:
            loop.call_soon_threadsafe(self.reactor.gossip_tx, raw)

    def status(self) -> dict[str, Any]:
        h = self.chain.height
        vs = self.chain.valset(h + 1)
        cs = self.reactor.cs
        return {
            "node": self.config.name,
            "role": self.config.role,
            "chain_id": self.chain.chain_id,
            "height": h,
            "app_hash": self.store.meta("app_hash"),
            "last_block_hash": self.store.meta("last_block_hash") or "",
            "last_time_ms": self.store.meta("last_time_ms"),
            "consensus": {
                "engine": "tendermint",
                "height": cs.height,
                "round": cs.round,
                "step": int(cs.step),
            },
            "peers": sorted(
                self.peer_names.get(pk, pk.hex()[:16]) for pk in self.transport.connected()
            ),
            "validators": [{"power": v.power, "pub_key": v.pub_key.hex()} for v in vs.validators],
            "mempool": len(self.mempool),
            "peer_pool": len(self.chain.peer_txs),
            "pub_key": self.key.pub_hex,
            "rejected_msgs": self.reactor.rejected_msgs,
            "snapshots": [m.height for m in self.snapshots.manifests()],
            "snapshot_requests": {
                "served": self.reactor.snapshot_server.served,
                "refused": self.reactor.snapshot_server.refused,
            },
            "state_sync": self.state_sync_stats,
            "base_height": (self.store.meta("state_sync_base") or {}).get("height", 0),
            "p2p": {
                self.peer_names.get(pk, pk.hex()[:16]): {
                    "frames_in": p.frames_in,
                    "frames_out": p.frames_out,
                    "dropped_out": p.dropped_out,
                }
                for pk, p in list(self.transport.peers.items())
            },
        }

    # --- API --------------------------------------------------------------------------------------
    def build_api(self) -> FastAPI:
        """The ledger's API plus what a BFT network needs (raw batches, hashes, validators)."""
        api = create_api(self)

        @api.post("/txs/raw")
        async def txs_raw(request: Request) -> dict:
            """Binary batch: ``u32 length | tx`` repeated (the benchmark's fast path)."""
            body = await request.body()
            try:
                raws = decode_length_prefixed(body, "transaction", "binary batch")
            except WireError as exc:
                raise HTTPException(400, str(exc)) from exc
            res = []
            for i in range(0, len(raws), 32):
                res.extend(self.submit(r) for r in raws[i : i + 32])
                await asyncio.sleep(0)  # let consensus messages in between slices
            return {
                "accepted": sum(1 for r in res if r["code"] == 0),
                "rejected": [r for r in res if r["code"] != 0][:20],
            }

        @api.get("/hashes")
        async def hashes(start: int = 1, end: int = 0) -> dict:
            top = self.chain.height
            end = min(end or top, top)
            out = {}
            for h in range(max(1, start), end + 1):
                sb = self.store.get_block(h, writer=True)
                if sb is not None:  # a state-synced node holds blocks after its snapshot only
                    out[h] = sb.hash.hex()
            return {"height": top, "hashes": out}

        @api.get("/commits")
        async def commits(start: int = 1) -> dict:
            return {
                "commits": [
                    {"height": h, "time": t, "txids": ids}
                    for h, t, ids in self.recent
                    if h >= start
                ]
            }

        @api.get("/validators")
        async def validators(height: int = 0) -> dict:
            h = height or self.chain.height + 1
            try:
                vals = self.chain.validators_at(h)
            except ConsensusError as exc:
                raise HTTPException(404, str(exc)) from exc
            return {
                "height": h,
                "validators": [{"power": v.power, "pub_key": v.pub_key.hex()} for v in vals],
            }

        return api

    # --- run --------------------------------------------------------------------------------------
    async def run(self) -> None:
        import uvicorn

        from gridledger.node.http_server import uvicorn_config

        self._loop = asyncio.get_running_loop()
        await self.transport.start()
        if self.needs_state_sync:
            await self._state_sync()
        await self.reactor.start()
        server = uvicorn.Server(  # with a deadline for half-sent requests (docs/security.md)
            uvicorn_config(self.build_api(), host=self.config.api_host, port=self.config.api_port)
        )
        (self.home / "node.pid").write_text(str(os.getpid()))
        addr = self.home / "node.addr"  # where the ledger CLI (--home) finds the API
        addr.write_text(f"http://{self.config.api_host}:{self.config.api_port}\n")
        try:
            await server.serve()
        finally:
            addr.unlink(missing_ok=True)
            await self.reactor.stop()
            await self.transport.close()
            self.offchain.close()
            self.store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gridledger.node.bft")
    p.add_argument("--home", required=True, type=Path)
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--profile", type=Path, help="write a cProfile of the run here (diagnosis)")
    p.add_argument(
        "--profile-clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cProfile's clock: wall time, or this process's CPU time (on a shared machine the "
        "wall clock also counts the time other processes held the core)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        node = BftNode(args.home)
    except (ConfigError, OSError) as exc:
        print(f"gridledger bft node: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def _terminate(signum, frame):
        raise SystemExit(0)

    # uvicorn re-raises the signal after its graceful shutdown; make that a clean exit so the
    # store is closed (and a diagnosis profile written) instead of dying on the default action.
    signal.signal(signal.SIGTERM, _terminate)
    if args.profile is not None:
        import cProfile

        prof = (
            cProfile.Profile(time.process_time)
            if args.profile_clock == "cpu"
            else cProfile.Profile()
        )
        prof.enable()
    code = 0
    try:
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            asyncio.run(node.run())
    except StateSyncError as exc:  # nothing verified: better stopped than started on trust
        print(f"gridledger bft node: {exc}", file=sys.stderr)
        code = 3
    if args.profile is not None:
        prof.disable()
        prof.dump_stats(args.profile)
    return code


if __name__ == "__main__":
    sys.exit(main())
