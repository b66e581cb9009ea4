"""Key files at rest (issue 18, finding 2): the v1 format (scrypt + AES-256-GCM, purpose as
associated data), its KDF against RFC 7914's vectors, attacks on a file (wrong passphrase,
tampered body, parameters, purpose; downgrade to the old PBKDF2 format; hostile parameters),
the parser under hypothesis, and ``rekey``."""

from __future__ import annotations

import base64
import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedui.common.errors import ConfigError
from hedui.keys import keyfile
from hedui.keys.errors import KeyFileError
from hedui.keys.keyfile import KdfParams
from hedui.keys.rekey import rekey
from hedui.keys.signing import SigningKey

PW = b"correct horse battery"
CHEAP = KdfParams(14, 8, 1)

# RFC 7914 §12 test vectors: (P, S, N, r, p, dkLen = 64, DK). The third is the format's floor
# (N = 2^14, r = 8, p = 1), the first two are below it and go straight to the KDF.
RFC7914 = [
    (b"", b"", 4, 1, 1, "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
                        "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"),
    (b"password", b"NaCl", 10, 8, 16, "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
                                      "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"),
    (b"pleaseletmein", b"SodiumChloride", 14, 8, 1, "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
                                                    "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"),
]


@pytest.mark.parametrize(("pw", "salt", "log2_n", "r", "p", "dk"), RFC7914)
def test_kdf_matches_rfc7914_vectors(pw, salt, log2_n, r, p, dk):
    assert KdfParams(log2_n, r, p).derive(pw, salt, 64).hex() == dk


def test_product_parameters_are_the_documented_ones(tmp_path):
    assert keyfile.DEFAULT_PARAMS == KdfParams(17, 8, 1)
    data = keyfile.encrypt(b"s" * 32, PW, purpose="tls-key", params=keyfile.DEFAULT_PARAMS)
    h = keyfile.parse(data)
    assert (h.params, len(h.salt), len(h.nonce), h.purpose) == (KdfParams(17, 8, 1), 16, 12, "tls-key")
    assert keyfile.decrypt(data, PW, purpose="tls-key") == b"s" * 32


def _raw(data: bytes) -> bytearray:
    return bytearray(base64.b64decode(b"".join(data.strip().splitlines()[1:-1])))


def _armour(raw: bytes) -> bytes:
    return b"-----BEGIN HEDUI ENCRYPTED KEY-----\n" + base64.encodebytes(bytes(raw)) + b"-----END HEDUI ENCRYPTED KEY-----\n"


def test_wrong_passphrase_refused():
    data = keyfile.encrypt(b"secret", PW, purpose="ca-key", params=CHEAP)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        keyfile.decrypt(data, b"not the passphrase", purpose="ca-key")


@pytest.mark.parametrize(
    ("offset", "what"),
    # Layout: magic 0-3, version 4, kdf 5, log2 N 6, r 7, p 8, aead 9, salt 11-26, nonce 28-39.
    [(6, "log2 N raised"), (7, "r changed"), (8, "p changed"), (12, "salt"), (29, "nonce"), (-1, "tag"), (-20, "ciphertext")],
)
def test_tampered_file_refused(offset, what):
    raw = _raw(keyfile.encrypt(b"a private key", PW, purpose="signing-key", params=CHEAP))
    raw[offset] = raw[offset] + 1 if offset in (6, 7, 8) else raw[offset] ^ 0x01
    with pytest.raises(KeyFileError, match="wrong passphrase, or the file was altered"):
        keyfile.decrypt(_armour(raw), PW, purpose="signing-key")


def test_parameters_lowered_below_the_floor_are_refused_before_any_work():
    raw = _raw(keyfile.encrypt(b"k", PW, purpose="signing-key", params=CHEAP))
    raw[6] = 10  # log2 N = 10: a downgrade of the work factor
    with pytest.raises(KeyFileError, match=r"kdf: got N = 2\^10, want 2\^14\.\.2\^20"):
        keyfile.decrypt(_armour(raw), PW, purpose="signing-key")


@pytest.mark.parametrize(("log2_n", "r", "p"), [(31, 8, 1), (20, 16, 1), (17, 8, 200)])
def test_hostile_parameters_refused_without_allocating(log2_n, r, p):
    raw = _raw(keyfile.encrypt(b"k", PW, purpose="signing-key", params=CHEAP))
    raw[6:9] = bytes([log2_n, r, p])
    with pytest.raises(KeyFileError, match="kdf: got"):
        keyfile.parse(_armour(raw))


def test_file_of_another_purpose_refused():
    data = keyfile.encrypt(b"k", PW, purpose="tls-key", params=CHEAP)
    with pytest.raises(KeyFileError, match="purpose: got 'tls-key', want 'ca-key'"):
        keyfile.decrypt(data, PW, purpose="ca-key")
    # Relabelling the header does not help: the purpose is associated data.
    raw = _raw(data)
    at = bytes(raw).index(b"tls-key")
    relabelled = bytes(raw[:at - 1]) + bytes([6]) + b"ca-key" + bytes(raw[at + 7:])
    assert keyfile.parse(_armour(relabelled)).purpose == "ca-key"
    with pytest.raises(KeyFileError, match="wrong passphrase, or the file was altered"):
        keyfile.decrypt(_armour(relabelled), PW, purpose="ca-key")


def _legacy_pem(key, pw: bytes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(pw))


def test_legacy_pbkdf2_file_is_read_flagged_and_refusable(tmp_path, caplog):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "signing.key"
    path.write_bytes(_legacy_pem(key, PW))
    with caplog.at_level(logging.WARNING, logger="hedui.keys"):
        loaded = SigningKey.load("tax", path, PW)
    assert loaded.public.raw == key.public_key().public_bytes_raw()
    assert [r.getMessage() for r in caplog.records if "older PKCS#8 PBES2" in r.getMessage() and "rekey" in r.getMessage()]
    # Downgrade: whoever can swap files cannot make a strict node accept the weaker format.
    with pytest.raises(KeyFileError, match="got an older PKCS#8 PBES2"):
        SigningKey.load("tax", path, PW, allow_legacy=False)


def test_unencrypted_key_refused(tmp_path):
    path = tmp_path / "tls.key"
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(KeyFileError, match="unknown or unencrypted"):
        keyfile.load_private_key(path, PW, purpose="tls-key")


# ---------------------------------------------------------------- the parser, under hypothesis

_VALID = keyfile.encrypt(b"0123456789abcdef" * 2, PW, purpose="hedui-oprf-seed", params=CHEAP)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parse_of_arbitrary_bytes_only_raises_keyfileerror(data):
    for candidate in (data, b"HDKF" + data, _armour(b"HDKF\x01" + data)):
        try:
            keyfile.parse(candidate)
        except KeyFileError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(_raw(_VALID)) - 1))
def test_truncated_file_refused(n):
    with pytest.raises(KeyFileError):
        keyfile.decrypt(_armour(_raw(_VALID)[:n]), PW, purpose="hedui-oprf-seed")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(_raw(_VALID)) - 1), st.integers(min_value=1, max_value=255))
def test_any_changed_byte_is_refused(i, x):
    raw = _raw(_VALID)
    raw[i] ^= x
    with pytest.raises(KeyFileError):
        keyfile.decrypt(_armour(raw), PW, purpose="hedui-oprf-seed")


def test_armour_damage_refused():
    with pytest.raises(KeyFileError, match="no END line"):
        keyfile.parse(_VALID.replace(b"-----END HEDUI ENCRYPTED KEY-----", b""))
    with pytest.raises(KeyFileError, match="not base64"):
        keyfile.parse(_VALID.replace(_VALID.splitlines()[1][:4], b"!!!!"))


# ---------------------------------------------------------------- rekey


def test_rekey_moves_a_legacy_key_to_v1_under_a_new_passphrase(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "signing.key"
    path.write_bytes(_legacy_pem(key, PW))
    path.chmod(0o644)
    r = rekey(path, PW, b"a brand new passphrase")
    assert (r.purpose, r.was) == ("signing-key", "pkcs8-pbkdf2")
    data = path.read_bytes()
    assert keyfile.is_current(data) and keyfile.parse(data).purpose == "signing-key"
    assert path.stat().st_mode & 0o777 == 0o600 and not list(tmp_path.glob("*.tmp"))
    assert SigningKey.load("m", path, b"a brand new passphrase", allow_legacy=False).public.raw == key.public_key().public_bytes_raw()
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        SigningKey.load("m", path, PW)


def test_rekey_with_a_wrong_passphrase_leaves_the_file_alone(tmp_path):
    path = tmp_path / "tls.key"
    keyfile.save_private_key(path, Ed25519PrivateKey.generate(), PW, purpose="tls-key")
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        rekey(path, b"not the passphrase", b"new passphrase!")
    assert path.read_bytes() == before


def test_rekey_needs_a_purpose_it_cannot_infer(tmp_path):
    path = tmp_path / "mystery.pem"
    path.write_bytes(_legacy_pem(Ed25519PrivateKey.generate(), PW))
    with pytest.raises(ConfigError, match="purpose: got none, want --purpose"):
        rekey(path, PW, PW)
    assert rekey(path, PW, PW, purpose="tls-key").purpose == "tls-key"


def test_rekey_encrypts_a_plaintext_person_secret(tmp_path):
    path = tmp_path / "person.secret"
    path.write_bytes(b"p" * 32)
    r = rekey(path, PW, PW)
    assert (r.purpose, r.was) == ("hedui-person-secret", "plaintext")
    assert b"p" * 32 not in path.read_bytes()
    assert keyfile.load_secret(path, PW, label="hedui-person-secret") == b"p" * 32


def test_rekey_of_a_legacy_sealing_key(tmp_path):
    from hedui.keys.sealing import SealingKey

    key = SealingKey.generate()
    enc = serialization.BestAvailableEncryption(PW)
    path = tmp_path / "hub-sealing.pem"  # a name that says nothing: the two PKCS#8 blocks do
    path.write_bytes(b"# hedui sealing key\n" + b"".join(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc) for k in (key._mlkem, key._x25519)
    ))
    assert rekey(path, PW, PW).purpose == "sealing-key"
    assert SealingKey.load(path, PW, allow_legacy=False).public_bytes() == key.public_bytes()


def test_unarmoured_binary_form_opens_too():
    data = keyfile.encrypt(b"binary form", PW, purpose="tls-key", params=CHEAP)
    raw = bytes(_raw(data))
    # The tag may end in bytes that look like whitespace: nothing may be stripped from it.
    assert keyfile.decrypt(raw, PW, purpose="tls-key") == b"binary form"
    with pytest.raises(KeyFileError, match="altered"):
        keyfile.decrypt(raw + b"\n", PW, purpose="tls-key")
