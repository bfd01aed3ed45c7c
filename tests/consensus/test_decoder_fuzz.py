"""Hypothesis fuzzing of every decoder that reads bytes from the network: P2P records and
handshake messages, consensus messages, transactions and blocks. Only the module's own typed
errors may come out (each is a ValueError or ConnectionError subclass the caller handles);
anything else (struct.error, KeyError, TypeError, RecursionError...) is a bug."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from gridledger.chain import block as chain_block
from gridledger.chain.consensus.tendermint.evidence import DuplicateVoteEvidence
from gridledger.chain.consensus.tendermint.ledger import decode_block, encode_block
from gridledger.chain.consensus.tendermint.types import (
    ConsensusError,
    Proposal,
    Vote,
    VoteType,
)
from gridledger.chain.keys import KeyPair
from gridledger.chain.p2p.secret import (
    AUTH_BYTES,
    HELLO,
    MAGIC,
    HandshakeError,
    RecordError,
    SecretSession,
    check_auth,
    derive,
    handshake,
)
from gridledger.chain.p2p.transport import FrameError, Peer, Transport
from gridledger.chain.tx import TxError, decode_tx, make_tx

pytestmark = pytest.mark.xdist_group("fuzz")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHAIN = "fuzz-chain"
CHAIN_HASH = hashlib.sha256(CHAIN.encode()).digest()
KEY = SigningKey(hashlib.sha256(b"fuzz").digest())


def mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Valid encodings with bytes flipped, cut or appended (reaches past the length checks)."""

    @st.composite
    def mutate(draw) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["flip", "cut", "append", "insert"]))
            if op == "flip" and data:
                i = draw(st.integers(0, len(data) - 1))
                data[i] ^= draw(st.integers(1, 255))
            elif op == "cut" and data:
                del data[draw(st.integers(0, len(data) - 1)) :]
            elif op == "append":
                data += draw(st.binary(max_size=64))
            else:
                i = draw(st.integers(0, len(data)))
                data[i:i] = draw(st.binary(min_size=1, max_size=8))
        return bytes(data)

    return mutate()


def fuzz_input(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=2048), mutations(valid))


# --- P2P ----------------------------------------------------------------------------------------

SESSION_KEYS = (bytes(range(32)), bytes(range(32, 64)))


@FUZZ
@given(head=st.binary(max_size=8), sealed=st.binary(max_size=256))
def test_record_open_raises_only_record_error(head, sealed):
    with pytest.raises(RecordError):
        SecretSession(*SESSION_KEYS).open(head, sealed)


@FUZZ
@given(message=st.binary(max_size=2 * AUTH_BYTES), challenge=st.binary(min_size=32, max_size=32))
def test_auth_message_check_raises_only_handshake_error(message, challenge):
    with pytest.raises(HandshakeError):
        check_auth(message, challenge)


@FUZZ
@given(peer_eph=st.binary(min_size=32, max_size=32))
def test_ephemeral_key_derivation_accepts_or_raises_handshake_error(peer_eph):
    secret = hashlib.sha256(b"eph").digest()
    from nacl.bindings import crypto_scalarmult_base

    own = crypto_scalarmult_base(secret)
    try:
        session, challenge = derive(CHAIN_HASH, secret, own, peer_eph)
    except HandshakeError:
        return
    assert len(challenge) == 32 and isinstance(session, SecretSession)


class _SinkWriter:
    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


def _feed(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


VALID_HELLO = HELLO.pack(MAGIC, CHAIN_HASH, bytes(range(32)))


@FUZZ
@given(stream=fuzz_input(VALID_HELLO + bytes(5 + AUTH_BYTES + 16)))
def test_handshake_on_hostile_bytes_raises_only_typed_errors(stream):
    async def run():
        with pytest.raises((HandshakeError, RecordError, asyncio.IncompleteReadError)):
            await handshake(_feed(stream), _SinkWriter(), CHAIN_HASH, KEY)

    asyncio.run(run())


def _record_stream_strategy() -> st.SearchStrategy[bytes]:
    """Validly sealed records of any kind and payload, then optional garbage or bit flips."""

    @st.composite
    def build(draw) -> bytes:
        sender = SecretSession(SESSION_KEYS[1], SESSION_KEYS[0])
        frames = draw(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=64)), max_size=6))
        stream = b"".join(sender.seal(k, p) for k, p in frames)
        return draw(st.one_of(st.just(stream), mutations(stream or b"\x00")))

    return build()


STATUS_LIMITS = {3: 12, 7: 64}


@FUZZ
@given(stream=_record_stream_strategy())
def test_frame_reader_on_hostile_streams_raises_only_typed_errors(stream):
    """The link's frame loop with a handler that decodes like the reactor's status frame."""

    async def run():
        delivered = []

        def handler(peer: bytes, kind: int, payload: bytes) -> None:
            delivered.append((kind, int.from_bytes(payload[:8], "big") if kind == 3 else payload))
            if kind == 3:
                import struct

                struct.unpack(">QI", payload)

        t = Transport(CHAIN, KEY, "127.0.0.1", 0, [], set(), handler, frame_limits=STATUS_LIMITS)
        peer = Peer(b"\x01" * 32, None, SecretSession(*SESSION_KEYS))
        with pytest.raises((FrameError, RecordError, asyncio.IncompleteReadError)):
            await t._read_frames(_feed(stream), peer)
        assert all(k in STATUS_LIMITS for k, _ in delivered)

    asyncio.run(run())


# --- consensus messages -------------------------------------------------------------------------

_signer = KeyPair.from_seed(bytes(32))
_vote = Vote(VoteType.PRECOMMIT, 7, 1, bytes(range(32)), bytes(32), bytes(64))
_vote_b = Vote(VoteType.PRECOMMIT, 7, 1, None, bytes(32), bytes(64))
VALID_VOTE = _vote.encode()
VALID_PROPOSAL = Proposal(7, 1, 0, bytes(range(32)), b"block bytes", bytes(32), bytes(64)).encode()
_a, _b = sorted((_vote, _vote_b), key=lambda v: v.encode())
VALID_EVIDENCE = DuplicateVoteEvidence(_a, _b).encode()


@pytest.mark.parametrize(
    ("decode", "valid"),
    [
        (Vote.decode, VALID_VOTE),
        (Proposal.decode, VALID_PROPOSAL),
        (DuplicateVoteEvidence.decode, VALID_EVIDENCE),
    ],
    ids=["vote", "proposal", "evidence"],
)
def test_consensus_decoders_raise_only_consensus_error(decode, valid):
    assert decode(valid).encode() == valid  # the seed input is valid

    @FUZZ
    @given(data=fuzz_input(valid))
    def check(data):
        try:
            decoded = decode(data)
        except ConsensusError:
            return
        assert decoded.encode() == data  # what decodes is canonical

    check()


# --- transactions and blocks --------------------------------------------------------------------

VALID_TX = make_tx(
    _signer, CHAIN, 3, "token.transfer", {"amount": 1, "denom": "utoken", "to": "ab" * 32}
).raw


@FUZZ
@given(data=fuzz_input(VALID_TX))
def test_tx_decoder_raises_only_tx_error(data):
    try:
        tx = decode_tx(data)
    except TxError:
        return
    assert tx.raw == data


def _valid_block() -> bytes:
    roots = chain_block.TxRoots(bytes(32), bytes(32), bytes(32), bytes(32))
    header = chain_block.Header(
        CHAIN,
        5,
        1_700_000_000_000,
        bytes(32),
        bytes(32),
        1,
        roots,
        bytes(32),  # app hash
        bytes(32),  # last results hash
        bytes(32),  # validators hash
        bytes(32),  # next validators hash
    )
    return encode_block(chain_block.Block(header, (VALID_TX,)))


VALID_BLOCK = _valid_block()
VALID_LEDGER_COMMIT = chain_block.Commit.sign(CHAIN, 5, 0, bytes(32), [_signer]).encode()
# The engine's block-sync form of a commit (two precommits for one block).
VALID_WIRE_COMMIT = chain_block.Commit.from_precommits(
    7, 1, bytes(range(32)), (_vote, _vote)
).to_wire()


@pytest.mark.parametrize(
    ("decode", "valid"),
    [
        (decode_block, VALID_BLOCK),
        (chain_block.Commit.decode, VALID_LEDGER_COMMIT),
        (chain_block.Commit.from_wire, VALID_WIRE_COMMIT),
        (chain_block.decode_txs, chain_block.encode_txs([VALID_TX, b"x"])),
    ],
    ids=["block", "ledger-commit", "commit-wire", "tx-list"],
)
def test_block_decoders_raise_only_block_error(decode, valid):
    decode(valid)

    @FUZZ
    @given(data=fuzz_input(valid))
    def check(data):
        try:
            decode(data)
        except chain_block.BlockError:
            return

    check()


def test_commit_wire_form_is_canonical():
    """What decodes from the block-sync form re-encodes to the same bytes (one form per commit)."""
    assert chain_block.Commit.from_wire(VALID_WIRE_COMMIT).to_wire() == VALID_WIRE_COMMIT

    @FUZZ
    @given(data=fuzz_input(VALID_WIRE_COMMIT))
    def check(data):
        try:
            decoded = chain_block.Commit.from_wire(data)
        except chain_block.BlockError:
            return
        assert decoded.to_wire() == data

    check()


def test_nil_vote_with_a_block_id_is_refused():
    """Found by the fuzzer: a nil vote's ignored block-id field made two wire forms per vote."""
    wire = bytearray(_vote_b.encode())
    wire[14] = 1  # first byte of the block id field
    with pytest.raises(ConsensusError, match="nil vote"):
        Vote.decode(bytes(wire))


def test_short_sealed_record_is_a_record_error():
    """Found by the fuzzer: PyNaCl raised a bare ValueError on a record shorter than its tag."""
    with pytest.raises(RecordError, match="shorter than its tag"):
        SecretSession(*SESSION_KEYS).open(b"\x00" * 5, b"\x00" * 15)


# --- state sync ---------------------------------------------------------------------------------


def _state_sync_inputs() -> dict[str, tuple]:
    from gridledger.chain.abci import Validator
    from gridledger.chain.consensus.tendermint import statesync as ss
    from gridledger.chain.snapshot import FORMAT, Manifest

    header = decode_block(VALID_BLOCK).header
    commit = chain_block.Commit.sign(CHAIN, 5, 0, header.hash(), [_signer])
    light = ss.LightBlock(header, commit, (Validator(_signer.pub_key, 10),))
    manifest = Manifest(5, FORMAT, CHAIN, bytes(32), (bytes(32), bytes(range(32))), {"v": [1]})
    return {
        "light-block": (ss.LightBlock.decode, light.encode(), lambda d: d.encode()),
        "offer": (ss.decode_offer, ss.encode_offer([manifest, manifest]), ss.encode_offer),
        "chunk": (ss.decode_chunk, ss.encode_chunk(5, 1, 2, b"abc"), lambda d: ss.encode_chunk(*d)),
        "chunk-request": (
            ss.decode_chunk_request,
            ss.encode_chunk_request(5, 1, 2),
            lambda d: ss.encode_chunk_request(*d),
        ),
        "height": (ss.decode_height, ss.encode_height(9), ss.encode_height),
    }


@pytest.mark.parametrize("name", ["light-block", "offer", "chunk", "chunk-request", "height"])
def test_state_sync_decoders_raise_only_state_sync_error(name):
    from gridledger.chain.consensus.tendermint.statesync import StateSyncError

    decode, valid, encode = _state_sync_inputs()[name]
    assert encode(decode(valid)) == valid  # the seed input is valid

    @FUZZ
    @given(data=fuzz_input(valid))
    def check(data):
        try:
            decoded = decode(data)
        except StateSyncError:
            return
        assert encode(decoded) == data  # what decodes is canonical

    check()
