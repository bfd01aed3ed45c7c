"""A private consortium chain: the API over TLS, and reads only for signed member requests.

The TLS test runs a real node process configured through its home (``tls_cert``, ``tls_key``,
``read_auth``), with a self-signed certificate made here by ``cryptography``.
"""

import datetime
import ipaddress
import json

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from live_server import live_node

from gridledger.chain.keys import KeyPair, load_key
from gridledger.cli import main
from gridledger.node.api import ApiSettings
from gridledger.node.client import ClientError, LedgerClient, Signer
from gridledger.node.home import NodeConfig, init_home
from gridledger.node.process import start_node_process
from gridledger.node.request_auth import sign_headers


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gridledger test node")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.xdist_group("ledger-node-procs")
def test_a_node_process_serves_tls_and_signed_reads_only(tmp_path, capsys):
    home = tmp_path / "home"
    pubs = init_home(home, "private-test", block_interval_ms=100)
    self_signed(home)
    cfg = NodeConfig.load(home)
    cfg.tls_cert, cfg.tls_key, cfg.read_auth = "tls.crt", "tls.key", True
    cfg.save(home)
    dso_key = load_key(home / "keys" / "dso.json")[0]
    with start_node_process(home, log_path=tmp_path / "node.log") as proc:
        assert proc.url.startswith("https://127.0.0.1:")
        cert = str(home / "tls.crt")
        # a client that does not trust the certificate refuses to talk
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(proc.url + "/status")
        # plain HTTP to the TLS port gets no answer
        with pytest.raises(httpx.HTTPError):
            httpx.get(proc.url.replace("https", "http") + "/status", timeout=5)
        # TLS, but unsigned: reads are refused
        with LedgerClient(proc.url, verify=cert) as anonymous:
            with pytest.raises(ClientError) as exc:
                anonymous.status()
            assert exc.value.status == 401
        # a member signs every read; its transactions flow as before
        with LedgerClient(proc.url, verify=cert, key=dso_key, chain_id="private-test") as dso:
            assert dso.status()["chain_id"] == "private-test"
            res = Signer(dso, dso_key).send(
                "token.transfer", {"amount": 5, "denom": "utoken", "to": pubs["ict"]}, wait=True
            )
            assert res["code"] == 0
            assert dso.account(pubs["ict"])["balances"]["utoken"] == 5
        # the CLI finds the certificate and chain id in the home; reads need --key
        capsys.readouterr()
        assert main(["query", "status", "--home", str(home)]) != 0
        assert "must be signed by a member" in capsys.readouterr().err
        dso_file = str(home / "keys" / "dso.json")
        assert main(["query", "status", "--home", str(home), "--key", dso_file]) == 0
        assert json.loads(capsys.readouterr().out)["chain_id"] == "private-test"
        transfer = json.dumps({"amount": 2, "denom": "utoken", "to": pubs["ict"]})
        tx = ["tx", "token.transfer", transfer, "--key", dso_file, "--home", str(home), "--wait"]
        assert main(tx) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "committed"


def test_reads_need_a_member_signature_when_read_auth_is_on(tmp_path):
    with live_node(tmp_path, settings=ApiSettings(read_auth=True)) as (node, url):
        dso_key = load_key(node.home / "keys" / "dso.json")[0]
        plain = httpx.Client(base_url=url)
        for path in ("/status", "/blocks/latest", "/accounts/" + "0" * 64, "/events"):
            r = plain.get(path)
            assert r.status_code == 401 and "signed" in r.json()["detail"], path
        # the schema stays public, and so does submitting (transactions carry signatures)
        assert plain.get("/openapi.json").status_code == 200
        stranger = LedgerClient(url, key=KeyPair.generate(), chain_id="live-test")
        with pytest.raises(ClientError) as exc:
            stranger.status()
        assert exc.value.status == 403 and "not an active member" in str(exc.value)
        dso = LedgerClient(url, key=dso_key, chain_id="live-test")
        assert dso.status()["height"] >= 0
        # one signed request cannot be replayed, nor reused for another path
        headers = sign_headers(dso_key, "live-test", "GET", b"/status", b"")
        assert plain.get("/status", headers=headers).status_code == 200
        assert plain.get("/status", headers=headers).status_code == 401
        moved = sign_headers(dso_key, "live-test", "GET", b"/status", b"")
        assert plain.get("/blocks/latest", headers=moved).status_code == 401
        # the event stream is a read too
        ict = load_key(node.home / "keys" / "ict.json")[0].pub_hex
        tx = Signer(dso, dso_key).send(
            "token.transfer", {"amount": 1, "denom": "utoken", "to": ict}
        )
        assert tx["code"] == 0
        for ev in dso.events(since=0, timeout_s=20):
            if any(t["txid"] == tx["txid"] for t in ev["txs"]):
                break
        plain.close()
        dso.close()
        stranger.close()
