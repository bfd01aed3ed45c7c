"""Attacks on the personal-data store (/offchain), each of which worked before it had owners.

In process (FastAPI TestClient) over a real solo node: a prosumer, its meter, the DSO, the
vendor that registered the prosumer, and a stranger whose key is no member.
"""

import time
import warnings
from hashlib import sha256

import pytest

from gridledger.chain.keys import KeyPair, load_key
from gridledger.node.api import create_api
from gridledger.node.client import ClientError, LedgerClient, Signer
from gridledger.node.home import NodeConfig, init_home
from gridledger.node.node import Node
from gridledger.node.request_auth import sign_headers

DETAIL = b'{"minute_wh":[5,6,7,5,4]} household 17'


@pytest.fixture
def net(tmp_path):
    home = tmp_path / "home"
    init_home(home, "offchain-test", block_interval_ms=50)
    cfg = NodeConfig.load(home)
    cfg.eager, cfg.synchronous = True, "NORMAL"
    cfg.offchain_quota_bytes, cfg.offchain_quota_records = 1000, 5
    node = Node(home, cfg)
    node.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    client = LedgerClient("http://node", http=TestClient(create_api(node), base_url="http://node"))
    keys = {n: load_key(home / "keys" / f"{n}.json")[0] for n in ("dso", "vendor", "ict")}
    prosumer, meter = KeyPair.generate(), KeyPair.generate()
    vendor = Signer(client, keys["vendor"])
    vendor.send("member.register", {"bus": 4, "pub_key": prosumer.pub_hex, "role": "prosumer"})
    st = vendor.send(
        "member.bind_meter", {"meter": meter.pub_hex, "prosumer": prosumer.pub_hex}, wait=True
    )
    assert st["code"] == 0, st
    who = {
        "prosumer": client.as_member(prosumer),
        "meter": client.as_member(meter),
        "dso": client.as_member(keys["dso"]),
        "vendor": client.as_member(keys["vendor"]),
        "stranger": client.as_member(KeyPair.generate()),
    }
    yield node, client, who
    node.stop()


def status_of(fn, *args) -> int:
    try:
        fn(*args)
    except ClientError as exc:
        return exc.status
    return 200


def test_only_the_subject_and_granted_roles_read_and_only_the_subject_erases(net):
    _node, client, who = net
    h = who["meter"].offchain_put(DETAIL, readers=("dso",))
    assert h == sha256(DETAIL).hexdigest()
    assert who["prosumer"].offchain_get(h) == DETAIL  # the subject
    assert who["dso"].offchain_get(h) == DETAIL  # a granted role
    # anyone else: an unsigned request, a stranger, a member of a role not granted
    r = client.http.get(f"/offchain/{h}")
    assert r.status_code == 401 and "signed" in r.json()["detail"]
    assert status_of(who["stranger"].offchain_get, h) == 403
    assert status_of(who["vendor"].offchain_get, h) == 403
    # only the subject erases: not the DSO, not the meter that posted it, not a stranger
    for name in ("dso", "meter", "vendor", "stranger"):
        assert status_of(who[name].offchain_erase, h) == 403, name
    assert who["dso"].offchain_get(h) == DETAIL  # nothing changed
    who["prosumer"].offchain_erase(h)
    assert status_of(who["dso"].offchain_get, h) == 410
    assert status_of(who["prosumer"].offchain_erase, h) == 410


def test_a_stranger_cannot_store(net):
    _node, client, who = net
    assert status_of(who["stranger"].offchain_put, DETAIL) == 403
    r = client.http.post("/offchain", content=DETAIL)
    assert r.status_code == 401
    assert status_of(who["dso"].offchain_get, sha256(DETAIL).hexdigest()) == 404


def test_erased_bytes_cannot_be_posted_again(net):
    _node, _client, who = net
    h = who["meter"].offchain_put(DETAIL)
    who["prosumer"].offchain_erase(h)
    for name in ("meter", "prosumer"):
        with pytest.raises(ClientError) as exc:
            who[name].offchain_put(DETAIL)
        assert exc.value.status == 410 and "erased" in str(exc.value.detail)
    assert status_of(who["prosumer"].offchain_get, h) == 410


def test_quota_per_subject_in_bytes_and_records(net):
    node, _client, who = net
    # 1000 bytes and 5 records per subject in this node's config; the meter's posts count
    # against its prosumer
    assert who["meter"].offchain_put(b"a" * 600)
    with pytest.raises(ClientError) as exc:
        who["prosumer"].offchain_put(b"b" * 600)
    assert exc.value.status == 413 and "quota" in str(exc.value.detail)
    for i in range(4):
        who["prosumer"].offchain_put(b"r%d" % i)
    with pytest.raises(ClientError) as exc:
        who["meter"].offchain_put(b"one too many")
    assert exc.value.status == 413 and "records" in str(exc.value.detail)
    usage = node.offchain.usage(who["prosumer"].key.pub_hex)
    assert (usage.bytes, usage.records) == (600 + 4 * 2, 5)
    # erasing frees bytes, not records (a tombstone is a record): no put/erase loop grows it
    who["prosumer"].offchain_erase(sha256(b"a" * 600).hexdigest())
    assert node.offchain.usage(who["prosumer"].key.pub_hex).bytes == 8
    assert status_of(who["prosumer"].offchain_put, b"new") == 413
    # another subject has its own quota
    assert who["dso"].offchain_put(b"d" * 900)


def _signed(client, key, method, target, body=b"", **kw):
    return sign_headers(key, "offchain-test", method, target, body, **kw)


def test_replayed_stale_foreign_and_tampered_requests_are_refused(net):
    _node, client, who = net
    h = who["meter"].offchain_put(DETAIL)
    dso = who["dso"].key
    target = f"/offchain/{h}".encode()
    headers = _signed(client, dso, "GET", target)
    assert client.http.get(f"/offchain/{h}", headers=headers).content == DETAIL
    replay = client.http.get(f"/offchain/{h}", headers=headers)
    assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
    stale = _signed(client, dso, "GET", target, time_ms=time.time_ns() // 10**6 - 120_000)
    r = client.http.get(f"/offchain/{h}", headers=stale)
    assert r.status_code == 401 and "clock" in r.json()["detail"]
    other_chain = sign_headers(dso, "another-chain", "GET", target, b"")
    assert client.http.get(f"/offchain/{h}", headers=other_chain).status_code == 401
    # a signature for one record does not open another, nor a DELETE
    other = who["meter"].offchain_put(b"other record")
    r = client.http.get(f"/offchain/{other}", headers=_signed(client, dso, "GET", target))
    assert r.status_code == 401 and "signature" in r.json()["detail"]
    subject = who["prosumer"].key
    get_sig = _signed(client, subject, "GET", target)
    assert client.http.delete(f"/offchain/{h}", headers=get_sig).status_code == 401
    # a signed POST whose body was swapped in transit
    meter = who["meter"].key
    post = _signed(client, meter, "POST", b"/offchain", b"the real detail")
    r = client.http.post("/offchain", content=b"forged detail", headers=post)
    assert r.status_code == 401
    assert status_of(who["prosumer"].offchain_get, sha256(b"forged detail").hexdigest()) == 404
    # the readers grant is in the signed query: widening it in transit breaks the signature
    post = _signed(client, meter, "POST", b"/offchain?readers=dso", b"x")
    r = client.http.post("/offchain?readers=dso,vendor", content=b"x", headers=post)
    assert r.status_code == 401
    assert who["dso"].offchain_get(h) == DETAIL  # still readable: nothing was erased


def test_bad_readers_and_bad_headers_are_named(net):
    _node, client, who = net
    r = client.http.post("/offchain?readers=everyone", content=b"x", auth=who["meter"].auth)
    assert r.status_code == 422 and "readers" in r.text
    r = client.http.get("/offchain/" + "0" * 64, headers={"x-gridledger-key": "zz"})
    assert r.status_code == 422 and "x-gridledger-key" in r.text


def test_records_from_before_owners_are_kept_for_the_dso(tmp_path):
    """A store of the former layout (no owners) is migrated: the DSO reads and erases its
    records; nobody else can."""
    import sqlite3

    from gridledger.node.offchain import OffchainStore, RecordErased, RecordForbidden

    path = tmp_path / "offchain.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute(
        "CREATE TABLE blobs (hash BLOB PRIMARY KEY, data BLOB, erased_ms INTEGER) WITHOUT ROWID"
    )
    old.execute("INSERT INTO blobs VALUES (?, ?, NULL)", (sha256(DETAIL).digest(), DETAIL))
    old.execute("INSERT INTO blobs VALUES (?, NULL, 5)", (sha256(b"gone").digest(),))
    old.close()
    store = OffchainStore(path)
    h = sha256(DETAIL).digest()
    dso, prosumer = KeyPair.generate().pub_hex, KeyPair.generate().pub_hex
    assert store.get(h, dso, "dso") == DETAIL
    with pytest.raises(RecordForbidden):
        store.get(h, prosumer, "prosumer")
    with pytest.raises(RecordErased):
        store.get(sha256(b"gone").digest(), dso, "dso")
    with pytest.raises(RecordForbidden):
        store.erase(h, prosumer, legacy=False)
    store.erase(h, dso, legacy=True)
    with pytest.raises(RecordErased):
        store.get(h, dso, "dso")
    store.close()
    assert DETAIL not in path.read_bytes()


def test_a_bad_signature_does_not_tell_who_is_a_member(net):
    _node, client, who = net
    h = who["meter"].offchain_put(DETAIL)
    target = f"/offchain/{h}".encode()
    for name in ("dso", "stranger"):  # a member's key and a non-member's, both forged
        headers = _signed(client, who[name].key, "GET", target)
        headers["x-gridledger-signature"] = "0" * 128
        r = client.http.get(f"/offchain/{h}", headers=headers)
        assert r.status_code == 401 and "bad request signature" in r.json()["detail"], name
