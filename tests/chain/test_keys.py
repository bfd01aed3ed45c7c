import os
import stat

import pytest

from gridledger.chain.keys import KeyFileError, KeyPair, load_key, save_key, verify


def test_plain_key_file_roundtrip_and_mode(tmp_path):
    k = KeyPair.generate()
    path = tmp_path / "k.json"
    save_key(path, k, role="prosumer")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    k2, role = load_key(path)
    assert (k2.pub_key, role) == (k.pub_key, "prosumer")
    assert verify(k.pub_key, b"m", k2.sign(b"m"))


def test_encrypted_key_file(tmp_path):
    k = KeyPair.generate()
    path = tmp_path / "k.json"
    save_key(path, k, role="dso", passphrase="correct horse")
    text = path.read_text()
    assert k.seed.hex() not in text and "argon2id" in text
    assert load_key(path, "correct horse")[0].pub_key == k.pub_key
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_key(path, "wrong")
    with pytest.raises(KeyFileError, match="passphrase is needed"):
        load_key(path)


def test_damaged_key_file(tmp_path):
    path = tmp_path / "k.json"
    save_key(path, KeyPair.generate())
    path.write_text(path.read_text().replace('"pub_key":"', '"pub_key":"00'))
    with pytest.raises(KeyFileError):
        load_key(path)


def test_verify_rejects_wrong_lengths_and_messages():
    k = KeyPair.generate()
    sig = k.sign(b"m")
    assert not verify(k.pub_key, b"n", sig)
    assert not verify(k.pub_key[:31], b"m", sig)
    assert not verify(k.pub_key, b"m", sig[:63])
