"""Validators in their own Linux network namespaces, with links the test can take down.

Topology (created by the test, removed afterwards; nothing is added to the host's namespace):

* one namespace per validator; its P2P address ``10.77.0.<i+1>`` sits on its loopback and is
  reached over a *mesh* of veth pairs, one pair per pair of validators, with a /32 route per
  peer. Taking a pair's link down cuts exactly that pair: 2-2, 1-3 and bridge partitions are
  sets of links;
* a control namespace with a bridge and one veth per validator (``10.78.0.0/24``) carries the
  HTTP API only — the test's client and checker, like Jepsen's control node, are never
  partitioned. There is no default route anywhere, so P2P traffic cannot leak onto it.

The test process reaches the control namespace from worker threads that ``setns(2)`` into it
(network namespaces are per thread), so no address exists outside the test's namespaces.
Requires root and ``ip`` (iproute2).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from gridledger.node.bft_testnet import init_testnet

CLONE_NEWNET = 0x40000000
_clusters = itertools.count()  # several clusters of one test process get distinct names
P2P_PORT, API_PORT = 26656, 8080


def p2p_addr(i: int) -> str:
    return f"10.77.0.{i + 1}"


def api_addr(i: int) -> str:
    return f"10.78.0.{i + 1}"


def netns_problem() -> str | None:
    """Why network namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    name = f"glprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsCluster:
    """N validator processes, one per namespace, a link per pair, a control network."""

    def __init__(
        self, home: Path, n: int = 4, clock_offsets_ms: dict[int, int] | None = None, **kw
    ):
        self.home, self.n = Path(home), n
        tag = f"{os.getpid() % 100000}{next(_clusters) % 10}"
        self.hub = f"glhub{tag}"
        self.ns = [f"gln{i}x{tag}" for i in range(n)]
        self.procs: list[subprocess.Popen | None] = [None] * n
        desc = init_testnet(self.home, n, **kw)
        self.chain_id = desc["chain_id"]
        self.pub_keys = [bytes.fromhex(d["pub_key"]) for d in desc["nodes"]]
        self.homes = [Path(d["home"]) for d in desc["nodes"]]
        for i, h in enumerate(self.homes):  # addresses inside the namespaces, fixed ports
            cfg = json.loads((h / "config.json").read_text())
            cfg["listen"] = [p2p_addr(i), P2P_PORT]
            cfg["api"] = [api_addr(i), API_PORT]
            for p in cfg["peers"]:
                j = int(p["name"].removeprefix("node"))
                p["host"], p["port"] = p2p_addr(j), P2P_PORT
            cfg["clock_offset_ms"] = (clock_offsets_ms or {}).get(i, 0)
            (h / "config.json").write_text(json.dumps(cfg, indent=2))
        self.api_urls = [f"http://{api_addr(i)}:{API_PORT}" for i in range(n)]
        self._created: list[str] = []
        self._pool = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(self.hub,))
        self._http: httpx.Client | None = None

    # --- topology ---------------------------------------------------------------------------
    def create(self) -> None:
        for name in [self.hub, *self.ns]:
            _ip("netns", "add", name)
            self._created.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", "10.78.0.254/24", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for i, ns in enumerate(self.ns):
            _ip("-n", ns, "addr", "add", f"{p2p_addr(i)}/32", "dev", "lo")
            _ip("-n", self.hub, "link", "add", f"c{i}", "type", "veth", "peer", "ctl", "netns", ns)
            _ip("-n", self.hub, "link", "set", f"c{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{api_addr(i)}/24", "dev", "ctl")
            _ip("-n", ns, "link", "set", "ctl", "up")
        for i in range(self.n):
            for j in range(i + 1, self.n):
                _ip("-n", self.ns[i], "link", "add", f"p{j}", "type", "veth", "peer", f"p{i}",
                    "netns", self.ns[j])  # fmt: skip
                self.link_up(i, j)

    def _route(self, i: int, j: int) -> None:
        _ip("-n", self.ns[i], "route", "replace", f"{p2p_addr(j)}/32", "dev", f"p{j}",
            "src", p2p_addr(i))  # fmt: skip

    def link_up(self, i: int, j: int) -> None:
        _ip("-n", self.ns[i], "link", "set", f"p{j}", "up")
        _ip("-n", self.ns[j], "link", "set", f"p{i}", "up")
        self._route(i, j)  # a link taken down loses its routes
        self._route(j, i)

    def link_down(self, i: int, j: int) -> None:
        _ip("-n", self.ns[i], "link", "set", f"p{j}", "down")
        _ip("-n", self.ns[j], "link", "set", f"p{i}", "down")

    def partition(self, cut: list[tuple[int, int]]) -> None:
        for i, j in cut:
            self.link_down(i, j)

    def heal(self) -> None:
        for i in range(self.n):
            for j in range(i + 1, self.n):
                self.link_up(i, j)

    # --- processes ----------------------------------------------------------------------------
    def start(self, indices: list[int] | None = None) -> None:
        for i in indices if indices is not None else range(self.n):
            if self.procs[i] is not None and self.procs[i].poll() is None:
                continue
            with open(self.homes[i] / "node.log", "ab") as logf:
                self.procs[i] = subprocess.Popen(
                    ["ip", "netns", "exec", self.ns[i], sys.executable, "-m",
                     "gridledger.node.bft", "--home", str(self.homes[i])],
                    stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip

    def signal(self, i: int, sig: int) -> None:
        p = self.procs[i]
        if p is None or p.poll() is not None:
            raise RuntimeError(f"node{i} is not running")
        os.kill(p.pid, sig)  # `ip netns exec` execs the interpreter: this is the node itself

    def kill(self, i: int) -> None:
        self.signal(i, signal.SIGKILL)
        self.procs[i].wait(10)

    def stop_all(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)

    def close(self) -> None:
        try:
            self.stop_all()
        finally:
            self.call(lambda: self._http and self._http.close())
            self._pool.shutdown()
            for name in reversed(self._created):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)

    # --- the control network ------------------------------------------------------------------
    def call(self, fn):
        """Run ``fn`` on the thread that lives in the control namespace."""
        return self._pool.submit(fn).result()

    def get(self, i: int, path: str, **params) -> httpx.Response | None:
        def go():
            if self._http is None:
                self._http = httpx.Client(timeout=2.0)
            try:
                return self._http.get(self.api_urls[i] + path, params=params)
            except httpx.HTTPError:
                return None

        return self.call(go)

    def height(self, i: int) -> int | None:
        r = self.get(i, "/status")
        return r.json()["height"] if r is not None and r.status_code == 200 else None

    def heights(self, indices: list[int] | None = None) -> dict[int, int]:
        out = {}
        for i in indices if indices is not None else range(self.n):
            h = self.height(i)
            if h is not None:
                out[i] = h
        return out

    def wait_height(self, height: int, indices: list[int] | None = None, timeout_s: float = 30):
        idx = list(indices if indices is not None else range(self.n))
        deadline = time.monotonic() + timeout_s
        hs: dict[int, int] = {}
        while time.monotonic() < deadline:
            hs = self.heights(idx)
            if len(hs) == len(idx) and min(hs.values()) >= height:
                return hs
            for i in idx:
                p = self.procs[i]
                if p is not None and p.poll() is not None:
                    tail = (self.homes[i] / "node.log").read_text(errors="replace")[-2000:]
                    raise AssertionError(f"node{i} exited ({p.returncode}): {tail}")
            time.sleep(0.1)
        raise AssertionError(f"nodes {idx} did not reach height {height} in {timeout_s}s: {hs}")


class LoadClient(threading.Thread):
    """Signed transfers between a few accounts, sent to random nodes over the control network.

    Each sender has one transaction in flight: it is re-sent (same bytes, same id) to another
    node when not committed after ``resend_s``; once a node reports it committed the client
    records (id -> height, code) and moves to the next sequence number. ``sent`` keeps every
    transaction's raw bytes for the checker's replay.
    """

    def __init__(self, cluster: NetnsCluster, senders, receivers, make_tx, seed: int = 7):
        super().__init__(daemon=True)
        import random

        self.cluster, self.senders, self.receivers = cluster, senders, receivers
        self.make_tx = make_tx
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.sent: dict[str, bytes] = {}
        self.committed: dict[str, tuple[int, int]] = {}
        self.errors: list[str] = []
        self.seq = {k.pub_hex: 0 for k in senders}
        self.inflight: dict[str, tuple[str, bytes, float]] = {}

    def run(self) -> None:
        enter_netns(self.cluster.hub)
        with httpx.Client(timeout=1.0) as http:
            while not self.stop_event.is_set():
                for k in self.senders:
                    self._step(http, k)
                time.sleep(0.05)

    def drain(self, timeout_s: float) -> None:
        """Stop sending new transactions; wait for those in flight to be committed."""
        self.stop_new = True
        deadline = time.monotonic() + timeout_s
        while self.inflight and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stop_event.set()
        self.join(10)

    stop_new = False

    def _url(self) -> str:
        return self.rng.choice(self.cluster.api_urls)

    def _submit(self, http: httpx.Client, raw: bytes) -> None:
        # A node that is paused or restarting drops it: the re-send goes elsewhere.
        with contextlib.suppress(httpx.HTTPError):
            http.post(self._url() + "/txs", json={"tx": raw.hex()})

    def _step(self, http: httpx.Client, k) -> None:
        now = time.monotonic()
        cur = self.inflight.get(k.pub_hex)
        if cur is None:
            if self.stop_new:
                return
            to = self.rng.choice([r for r in self.receivers if r.pub_hex != k.pub_hex])
            raw, txid = self.make_tx(k, self.seq[k.pub_hex], to, self.rng.randint(1, 50))
            self.sent[txid] = raw
            self.inflight[k.pub_hex] = (txid, raw, now)
            self._submit(http, raw)
            return
        txid, raw, last = cur
        try:
            r = http.get(self._url() + f"/txs/{txid}")
            st = r.json() if r.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            st = {}
        if st.get("status") == "committed":
            self.committed[txid] = (st["height"], st["code"])
            self.seq[k.pub_hex] += 1
            del self.inflight[k.pub_hex]
        elif now - last > 1.5:
            self.inflight[k.pub_hex] = (txid, raw, now)
            self._submit(http, raw)
