"""The authenticated TCP transport on 127.0.0.1: handshake, frames, refusals, fault hooks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from gridledger.chain.p2p.faults import FaultControl, write_faults
from gridledger.chain.p2p.secret import (
    AUTH_BYTES,
    AUTH_KIND,
    HELLO,
    MAGIC,
    RECORD_HEAD,
    auth_message,
    derive,
    handshake,
    read_record,
)
from gridledger.chain.p2p.transport import (
    KEEPALIVE_KIND,
    MAX_PENDING_HANDSHAKES,
    PeerAddress,
    Transport,
)

CHAIN = "p2p-test"


def key(name: str) -> SigningKey:
    return SigningKey(hashlib.sha256(name.encode()).digest())


def pub(k: SigningKey) -> bytes:
    return bytes(k.verify_key)


def chain_hash(chain: str = CHAIN) -> bytes:
    return hashlib.sha256(chain.encode()).digest()


class Inbox:
    def __init__(self):
        self.frames: list[tuple[bytes, int, bytes]] = []
        self.event = asyncio.Event()

    def __call__(self, peer: bytes, kind: int, payload: bytes) -> None:
        self.frames.append((peer, kind, payload))
        self.event.set()

    async def wait(self, n: int, timeout_s: float = 5.0) -> None:
        async def _w():
            while len(self.frames) < n:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(_w(), timeout_s)


async def _wait_connected(*ts: Transport, timeout_s: float = 5.0) -> None:
    async def _w():
        while not all(t.peers for t in ts):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(_w(), timeout_s)


def _pair(ka, kb, allowed_a=None, allowed_b=None, chain_b=CHAIN, faults_a=None):
    ia, ib = Inbox(), Inbox()
    a = Transport(CHAIN, ka, "127.0.0.1", 0, [], allowed_a or {pub(kb)}, ia, faults_a)
    b = Transport(chain_b, kb, "127.0.0.1", 0, [], allowed_b or {pub(ka)}, ib)
    return a, b, ia, ib


def test_authenticated_link_carries_frames_both_ways():
    async def run():
        ka, kb = key("a"), key("b")
        a, b, ia, ib = _pair(ka, kb)
        port_a = await a.start()
        # Only the greater key dials; give each the other's address.
        await b.start()
        dialer, target = (a, b) if pub(ka) > pub(kb) else (b, a)
        dialer.peer_addrs[target.pub_key] = PeerAddress(
            target.pub_key, "127.0.0.1", target.listen_port
        )
        dialer._spawn(dialer._dial_loop(target.pub_key))
        await _wait_connected(a, b)
        assert port_a > 0
        a.send(pub(kb), 7, b"hello")
        b.broadcast(9, b"x" * 100_000)
        await ib.wait(1)
        await ia.wait(1)
        assert ib.frames == [(pub(ka), 7, b"hello")]
        assert ia.frames == [(pub(kb), 9, b"x" * 100_000)]
        await a.close()
        await b.close()

    asyncio.run(run())


@pytest.mark.parametrize("case", ["unknown key", "other chain", "impostor"])
def test_handshake_refuses_strangers(case):
    async def run():
        ka, kb, kc = key("a"), key("b"), key("c")
        if case == "unknown key":
            a, b, _, _ = _pair(ka, kb, allowed_b={pub(kc)})
        elif case == "other chain":
            a, b, _, _ = _pair(ka, kb, chain_b="another-chain")
        else:  # the dialer expects key b at that address, but c answers
            a, b, _, _ = _pair(ka, kc, allowed_a={pub(kb), pub(kc)})
        await a.start()
        await b.start()
        expected = pub(kb) if case == "impostor" else b.pub_key
        a.peer_addrs[expected] = PeerAddress(expected, "127.0.0.1", b.listen_port)
        await a._run_link(
            *await asyncio.open_connection("127.0.0.1", b.listen_port), expected=expected
        )
        await asyncio.sleep(0.1)
        assert not a.peers
        await a.close()
        await b.close()

    asyncio.run(run())


def test_handshake_refuses_a_forged_proof():
    """A peer that claims an allowed key but cannot sign this session's challenge is dropped."""

    async def run():
        ka, kb, kx = key("a"), key("b"), key("stranger")
        inbox = Inbox()
        a = Transport(CHAIN, ka, "127.0.0.1", 0, [], {pub(kb)}, inbox)
        await a.start()
        r, w = await asyncio.open_connection("127.0.0.1", a.listen_port)
        eph = PrivateKey.generate()
        w.write(HELLO.pack(MAGIC, chain_hash(), bytes(eph.public_key)))
        await w.drain()
        _, _, a_eph = HELLO.unpack(await r.readexactly(HELLO.size))
        session, challenge = derive(chain_hash(), bytes(eph), bytes(eph.public_key), a_eph)
        # b's key with the stranger's signature over the right challenge
        forged = pub(kb) + auth_message(kx, challenge)[32:]
        w.write(session.seal(AUTH_KIND, forged))
        await w.drain()
        await read_record(r, session, AUTH_BYTES)  # a's own authentication
        assert await r.read() == b""  # a closed the link
        assert not a.peers and not inbox.frames
        w.close()
        await a.close()

    asyncio.run(run())


def test_fault_control_drops_traffic_both_ways_and_heals(tmp_path):
    async def run():
        ka, kb = key("a"), key("b")
        ctl_path = tmp_path / "faults.json"
        faults = FaultControl(ctl_path, poll_s=0.01)
        a, b, ia, ib = _pair(ka, kb, faults_a=faults)
        await a.start()
        await b.start()
        dialer, target = (a, b) if pub(ka) > pub(kb) else (b, a)
        dialer.peer_addrs[target.pub_key] = PeerAddress(
            target.pub_key, "127.0.0.1", target.listen_port
        )
        dialer._spawn(dialer._dial_loop(target.pub_key))
        await _wait_connected(a, b)
        write_faults(ctl_path, [pub(kb)])
        await asyncio.sleep(0.1)
        assert a.connected() == []
        assert not a.send(pub(kb), 1, b"lost")
        b.send(pub(ka), 1, b"lost too")
        await asyncio.sleep(0.2)
        assert not ia.frames and not ib.frames
        write_faults(ctl_path, [])
        await asyncio.sleep(0.1)
        assert a.send(pub(kb), 1, b"back")
        await ib.wait(1)
        assert ib.frames == [(pub(ka), 1, b"back")]
        await a.close()
        await b.close()

    asyncio.run(run())


def test_unreadable_fault_file_keeps_the_previous_setting(tmp_path):
    p = tmp_path / "f.json"
    write_faults(p, [b"\x01" * 32])
    fc = FaultControl(p)
    assert fc.blocks(b"\x01" * 32)
    p.write_text("{half written")
    os.utime(p, ns=(1, 1))
    fc.reload()
    assert fc.blocks(b"\x01" * 32)
    p.unlink()
    fc.reload()
    assert not fc.blocks(b"\x01" * 32)


# --- attacks on links -------------------------------------------------------------------------


async def _link(dialer: Transport, target: Transport) -> None:
    """Make ``dialer`` dial ``target`` (whatever the key order) and wait for both ends."""
    dialer.peer_addrs[target.pub_key] = PeerAddress(target.pub_key, "127.0.0.1", target.listen_port)
    dialer._spawn(dialer._dial_loop(target.pub_key))

    async def _w():
        while target.pub_key not in dialer.peers or dialer.pub_key not in target.peers:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(_w(), 5.0)


class Relay:
    """A key-less stranger that opens a connection to each of two nodes and pipes the bytes
    between them; it can flip a bit of the next chunk it forwards from the first node."""

    def __init__(self):
        self.seen = bytearray()
        self.flip_next_from_first = False
        self.tasks: list[asyncio.Task] = []

    async def start(self, port_first: int, port_second: int) -> None:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port_first)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port_second)
        self.writers = [w1, w2]
        self.tasks = [
            asyncio.create_task(self._pipe(r1, w2, from_first=True)),
            asyncio.create_task(self._pipe(r2, w1, from_first=False)),
        ]

    async def _pipe(self, r, w, from_first: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await r.read(65536):
                if from_first and self.flip_next_from_first:
                    self.flip_next_from_first = False
                    data = data[:-1] + bytes([data[-1] ^ 1])
                self.seen += data
                w.write(data)
                await w.drain()
        w.close()

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for w in self.writers:
            w.close()


def test_relaying_stranger_cannot_take_over_a_live_link():
    """Finding 2's attack: a stranger relays A's and B's handshakes to each other. Both ends
    refuse (the dialer takes no inbound link from the peer it dials, the other end keeps its
    live link), and the real link keeps carrying frames."""

    async def run():
        ka, kb = key("a"), key("b")
        a, b, _ia, ib = _pair(ka, kb)
        await a.start()
        await b.start()
        dialer, target = (a, b) if pub(ka) > pub(kb) else (b, a)
        await _link(dialer, target)
        link_a, link_b = a.peers[pub(kb)], b.peers[pub(ka)]
        relay = Relay()
        await relay.start(a.listen_port, b.listen_port)
        async with asyncio.timeout(5):
            while a.refused_links + b.refused_links < 2:
                await asyncio.sleep(0.02)
        assert a.peers[pub(kb)] is link_a and b.peers[pub(ka)] is link_b
        assert a.refused_links == 1 and b.refused_links == 1
        assert a.send(pub(kb), 7, b"still here")
        await ib.wait(1)
        assert ib.frames == [(pub(ka), 7, b"still here")]
        relay.close()
        await a.close()
        await b.close()

    asyncio.run(run())


def test_relayed_session_is_end_to_end_and_a_tampered_record_ends_it():
    """Where neither side dials (both only accept), a relay does join A and B, but into a
    session keyed end to end: the stranger sees no plaintext, and a record it alters is
    refused and ends the link without reaching the handler."""

    async def run():
        ka, kb = key("a"), key("b")
        a, b, _ia, ib = _pair(ka, kb)
        await a.start()
        await b.start()
        relay = Relay()
        await relay.start(a.listen_port, b.listen_port)
        await _wait_connected(a, b)
        secret = b"meter reading 42 kWh " * 8
        assert a.send(pub(kb), 7, secret)
        await ib.wait(1)
        assert ib.frames == [(pub(ka), 7, secret)]
        assert b"meter reading" not in relay.seen
        relay.flip_next_from_first = True
        assert a.send(pub(kb), 7, b"altered in flight")
        async with asyncio.timeout(5):
            while b.dropped_links < 1:
                await asyncio.sleep(0.02)
        assert ib.frames == [(pub(ka), 7, secret)]
        assert pub(ka) not in b.peers
        relay.close()
        await a.close()
        await b.close()

    asyncio.run(run())


def test_reflected_hello_is_refused():
    """A stranger that sends a node's own hello back gets no session (equal ephemerals)."""

    async def run():
        ka = key("a")
        inbox = Inbox()
        a = Transport(CHAIN, ka, "127.0.0.1", 0, [], {pub(key("b"))}, inbox)
        await a.start()
        r, w = await asyncio.open_connection("127.0.0.1", a.listen_port)
        w.write(await r.readexactly(HELLO.size))
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == b""
        assert not a.peers
        w.close()
        await a.close()

    asyncio.run(run())


async def _authenticate_as(k: SigningKey, port: int):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    _pk, session = await handshake(r, w, chain_hash(), k)
    return r, w, session


def test_newcomer_with_a_valid_key_cannot_replace_a_live_link_only_a_silent_one():
    async def run():
        ka, kb = key("a"), key("b")
        a = Transport(CHAIN, ka, "127.0.0.1", 0, [], {pub(kb)}, Inbox(), stale_after_s=0.5)
        await a.start()
        r1, w1, s1 = await _authenticate_as(kb, a.listen_port)
        await _wait_connected(a)
        first = a.peers[pub(kb)]
        w1.write(s1.seal(KEEPALIVE_KIND, b""))  # the first link is live
        await w1.drain()
        r2, w2, _ = await _authenticate_as(kb, a.listen_port)
        assert await asyncio.wait_for(r2.read(), 5) == b""  # newcomer refused
        assert a.peers[pub(kb)] is first and a.refused_links == 1
        await asyncio.sleep(0.6)  # the first link says nothing for longer than stale_after_s
        _r3, w3, _ = await _authenticate_as(kb, a.listen_port)
        async with asyncio.timeout(5):
            while a.peers.get(pub(kb)) is first:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(r1.read(), 5)  # a's last keepalives, then the end of the link
        assert r1.at_eof()
        for w in (w1, w2, w3):
            w.close()
        await a.close()

    asyncio.run(run())


STATUS = struct.Struct(">QI")


class StatusDecoder(Inbox):
    """A handler that decodes kind-3 frames like the reactor's status (struct.error on junk)."""

    def __call__(self, peer: bytes, kind: int, payload: bytes) -> None:
        super().__call__(peer, kind, STATUS.unpack(payload))


@pytest.mark.parametrize(
    "attack", ["undecodable", "oversize head", "oversize sealed", "unknown kind", "tampered"]
)
def test_bad_frame_ends_only_the_offending_link(attack):
    async def run():
        ka, kb, kc = key("a"), key("b"), key("c")
        limits = {3: STATUS.size, 7: 64}
        inbox = StatusDecoder()
        a = Transport(CHAIN, ka, "127.0.0.1", 0, [], {pub(kb), pub(kc)}, inbox, frame_limits=limits)
        b = Transport(CHAIN, kb, "127.0.0.1", 0, [], {pub(ka)}, Inbox(), frame_limits=limits)
        c = Transport(CHAIN, kc, "127.0.0.1", 0, [], {pub(ka)}, Inbox(), frame_limits=limits)
        for t in (a, b, c):
            await t.start()
        await _link(b, a)
        await _link(c, a)
        link_b = b.peers[pub(ka)]
        if attack == "undecodable":
            assert b.send(pub(ka), 3, b"\x01\x02\x03")
        elif attack == "oversize head":  # claims 8 MiB and sends none of it: refused on the head
            link_b.writer.write(RECORD_HEAD.pack(8 << 20, 3))
        elif attack == "oversize sealed":
            assert not b.send(pub(ka), 3, bytes(13))  # our own sender refuses it
            assert link_b.send(3, bytes(13))  # forced past that check
        elif attack == "unknown kind":
            assert link_b.send(9, b"")
        else:
            record = bytearray(link_b.session.seal(3, STATUS.pack(1, 0)))
            record[7] ^= 0x40
            link_b.writer.write(bytes(record))
        async with asyncio.timeout(5):
            while a.dropped_links < 1:
                await asyncio.sleep(0.02)
        assert inbox.frames == []
        assert c.send(pub(ka), 3, STATUS.pack(5, 1))
        await inbox.wait(1)
        assert inbox.frames == [(pub(kc), 3, (5, 1))]
        # the attacker's own dial loop gets a fresh link; the node kept running throughout
        await _wait_connected(b)
        assert b.send(pub(ka), 3, STATUS.pack(6, 0))
        await inbox.wait(2)
        assert inbox.frames[1] == (pub(kb), 3, (6, 0))
        for t in (a, b, c):
            await t.close()

    asyncio.run(run())


def test_silent_link_is_closed():
    """A link that carries nothing (not even keepalives) for dead_after_s is closed: a peer that
    died behind a lost FIN does not keep its slot (the dialer then redials)."""

    async def run():
        ka, kb = key("a"), key("b")
        a = Transport(CHAIN, ka, "127.0.0.1", 0, [], {pub(kb)}, Inbox(), dead_after_s=0.5)
        await a.start()
        r, w, _ = await _authenticate_as(kb, a.listen_port)  # then says nothing at all
        await _wait_connected(a)
        await asyncio.wait_for(r.read(), 5)  # a's keepalives, then a closes the link
        assert r.at_eof() and not a.peers
        w.close()
        await a.close()

    asyncio.run(run())


def test_idle_strangers_cannot_hold_more_than_the_pending_handshake_bound():
    """A stranger opening many connections that never finish the handshake gets at most
    MAX_PENDING_HANDSHAKES of them held; the rest are closed at once, and live links work."""

    async def run():
        ka, kb = key("a"), key("b")
        a, b, _ia, ib = _pair(ka, kb)
        await a.start()
        await b.start()
        await _link(b, a)
        idle = [
            await asyncio.open_connection("127.0.0.1", a.listen_port)
            for _ in range(MAX_PENDING_HANDSHAKES)
        ]
        for r, _ in idle:  # each got a's hello: its handshake is pending
            await asyncio.wait_for(r.readexactly(HELLO.size), 5)
        r, w = await asyncio.open_connection("127.0.0.1", a.listen_port)
        assert await asyncio.wait_for(r.read(), 5) == b""  # no hello: closed at once
        assert a.send(pub(kb), 7, b"unaffected")
        await ib.wait(1)
        assert ib.frames == [(pub(ka), 7, b"unaffected")]
        for _, iw in [*idle, (r, w)]:
            iw.close()
        await a.close()
        await b.close()

    asyncio.run(run())


def test_reactor_frame_limits_admit_the_largest_real_frames():
    from types import SimpleNamespace

    from gridledger.chain.consensus.tendermint import reactor as r
    from gridledger.chain.consensus.tendermint.evidence import (
        DuplicateProposalEvidence,
        DuplicateVoteEvidence,
        SignedProposal,
    )
    from gridledger.chain.consensus.tendermint.types import Proposal, Vote, VoteType

    limits = r.frame_limits(4 << 20, 5000)
    v1 = Vote(VoteType.PREVOTE, 2**63, 2**31 - 1, bytes(32), bytes(32), bytes(64))
    v2 = Vote(VoteType.PREVOTE, 2**63, 2**31 - 1, None, bytes(32), bytes(64))
    assert len(v1.encode()) == limits[r.K_VOTE]
    # the evidence bound is the larger of the two kinds: duplicate votes and duplicate proposals
    vote_ev = len(DuplicateVoteEvidence.from_votes(v1, v2).encode())
    p1 = SignedProposal(2**63 - 1, 2**31 - 1, 2**31 - 2, bytes(32), bytes(32), bytes(64))
    p2 = SignedProposal(2**63 - 1, 2**31 - 1, -1, bytes(32), bytes(32), bytes(64))
    prop_ev = len(DuplicateProposalEvidence(p1, p2).encode())
    assert limits[r.K_EVIDENCE] == max(vote_ev, prop_ev)
    assert r._STATUS.size == limits[r.K_STATUS]
    # a block of 5,000 transactions filling 4 MiB, with its header, fits a proposal frame
    full = Proposal(9, 1, 0, bytes(32), bytes((4 << 20) + 4 * 5000 + 2048), bytes(32), bytes(64))
    assert len(full.encode()) <= limits[r.K_PROPOSAL]
    # a transaction flush larger than one frame goes out as several frames within the bound
    sent = []
    fake = SimpleNamespace(
        _tx_flush_scheduled=True,
        _tx_buf=[bytes([i % 256]) * 30_000 for i in range(100)],  # ~3 MiB
        transport=SimpleNamespace(broadcast=lambda kind, payload: sent.append((kind, payload))),
    )
    r.Reactor._flush_txs(fake)
    assert len(sent) == 3 and all(k == r.K_TXS for k, _ in sent)
    assert all(len(p) <= limits[r.K_TXS] for _, p in sent)
    assert sum(len(p) for _, p in sent) == 100 * (4 + 30_000)


def test_set_allowed_cuts_a_removed_key_and_lets_an_added_one_in():
    """The allow-list replaced while running (validator-set change): a live link to a key
    that left it is closed and not redialled; once the key is allowed again it is redialled."""

    async def run():
        ka, kb = key("allow-a"), key("allow-b")
        a, b, _, _ = _pair(ka, kb)
        await a.start()
        await b.start()
        dialer, target = (a, b) if pub(ka) > pub(kb) else (b, a)
        dialer.peer_addrs[target.pub_key] = PeerAddress(
            target.pub_key, "127.0.0.1", target.listen_port
        )
        dialer._spawn(dialer._dial_loop(target.pub_key))
        await _wait_connected(a, b)
        assert target.set_allowed(set()) == [dialer.pub_key]  # the target drops the dialer
        await asyncio.sleep(0.1)
        assert dialer.pub_key not in target.peers
        # the dialer, still allowing the target, redials: refused after each handshake
        await asyncio.sleep(3 * dialer.redial_s)
        assert dialer.pub_key not in target.peers and target.refused_links >= 1
        assert dialer.set_allowed(set()) == []  # the dialer stops dialling the target
        await asyncio.sleep(dialer.redial_s)  # a handshake already under way ends first
        refused = target.refused_links
        await asyncio.sleep(3 * dialer.redial_s)
        assert target.refused_links == refused
        target.set_allowed({dialer.pub_key})
        dialer.set_allowed({target.pub_key})
        await _wait_connected(a, b)
        assert dialer.pub_key in target.peers and target.pub_key in dialer.peers
        await a.close()
        await b.close()

    asyncio.run(run())
