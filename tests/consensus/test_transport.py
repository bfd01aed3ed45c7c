"""The authenticated TCP transport on 127.0.0.1: handshake, frames, refusals, fault hooks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct

import pytest
from nacl.signing import SigningKey

from gridledger.chain.p2p.faults import FaultControl, write_faults
from gridledger.chain.p2p.transport import MAGIC, PeerAddress, Transport

CHAIN = "p2p-test"


def key(name: str) -> SigningKey:
    return SigningKey(hashlib.sha256(name.encode()).digest())


def pub(k: SigningKey) -> bytes:
    return bytes(k.verify_key)


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
    """A peer that claims an allowed key but cannot sign our nonce is dropped."""

    async def run():
        ka, kb = key("a"), key("b")
        inbox = Inbox()
        a = Transport(CHAIN, ka, "127.0.0.1", 0, [], {pub(kb)}, inbox)
        await a.start()
        r, w = await asyncio.open_connection("127.0.0.1", a.listen_port)
        chain_hash = hashlib.sha256(CHAIN.encode()).digest()
        w.write(struct.pack(">4s32s32s32s", MAGIC, chain_hash, pub(kb), os.urandom(32)))
        await w.drain()
        await r.readexactly(100)  # a's hello
        await r.readexactly(64)  # a's proof
        w.write(os.urandom(64))  # not b's signature
        await w.drain()
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
