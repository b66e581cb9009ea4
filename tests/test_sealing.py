"""HPKE sealing to the hub (ML-KEM-768 + X25519, HKDF-SHA256, AES-256-GCM)."""

from __future__ import annotations

import pytest

from hedui.keys import keyfile, sealing
from hedui.keys.sealing import SUITE_LABEL, SealError, SealingKey
from hedui.node.errors import ConfigError, InvalidArgument, VerificationError

AAD = b"notice-id|provider|hub|rule|event|region|2025-05-31|2025-06-05"
SECRET = "110101199003070016 张三 inpatient 23456.78".encode()


@pytest.fixture(scope="module")
def key() -> SealingKey:
    return SealingKey.generate()


def test_round_trip_and_suite(key):
    enc, ct, suite = sealing.seal(key.public_bytes(), SECRET, AAD)
    assert suite == SUITE_LABEL == "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
    assert len(key.public_bytes()) == sealing.PUBLIC_KEY_SIZE == 1216
    assert len(enc) == 1120  # ML-KEM-768 ciphertext (1088) + X25519 share (32)
    assert len(ct) == len(SECRET) + 16
    assert SECRET not in ct
    assert sealing.open(key, enc, ct, AAD) == SECRET


def test_sealing_is_randomised(key):
    a = sealing.seal(key.public_bytes(), SECRET, AAD)
    b = sealing.seal(key.public_bytes(), SECRET, AAD)
    assert a[0] != b[0] and a[1] != b[1]


def test_sealed_to_another_key_is_refused(key):
    other = SealingKey.generate()
    enc, ct, _ = sealing.seal(other.public_bytes(), SECRET, AAD)
    with pytest.raises(SealError) as err:
        sealing.open(key, enc, ct, AAD)
    assert err.value.reason == "SEAL_OPEN_FAILED"
    assert isinstance(err.value, VerificationError)
    assert sealing.open(other, enc, ct, AAD) == SECRET


@pytest.mark.parametrize("part", ["ciphertext", "enc_mlkem", "enc_x25519", "aad", "truncated"])
def test_tampering_is_refused(key, part):
    enc, ct, _ = sealing.seal(key.public_bytes(), SECRET, AAD)
    aad = AAD
    if part == "ciphertext":
        ct = ct[:5] + bytes([ct[5] ^ 1]) + ct[6:]
    elif part == "enc_mlkem":
        enc = bytes([enc[0] ^ 0x80]) + enc[1:]
    elif part == "enc_x25519":
        enc = enc[:-1] + bytes([enc[-1] ^ 1])
    elif part == "aad":
        aad = AAD.replace(b"2025-06-05", b"2025-06-06")
    else:
        ct = ct[:-1]
    with pytest.raises(SealError) as err:
        sealing.open(key, enc, ct, aad)
    assert err.value.reason == "SEAL_OPEN_FAILED"
    assert "1101011990" not in str(err.value)


def test_wrong_enc_length_and_suite(key):
    enc, ct, _ = sealing.seal(key.public_bytes(), SECRET, AAD)
    with pytest.raises(SealError, match="enc: got 1119 bytes, want 1120"):
        sealing.open(key, enc[:-1], ct, AAD)
    with pytest.raises(SealError) as err:
        sealing.open(key, enc, ct, AAD, suite="X25519/HKDF-SHA256/AES-128-GCM")
    assert err.value.reason == "SEAL_SUITE_UNSUPPORTED"


def test_bad_public_key_is_invalid_argument(key):
    with pytest.raises(InvalidArgument, match="got 32 bytes, want 1216"):
        sealing.seal(b"\x00" * 32, SECRET, AAD)
    # Right length, but the ML-KEM part is not a valid encapsulation key (coefficients >= q).
    with pytest.raises(InvalidArgument, match="not a valid"):
        sealing.seal(b"\xff" * 1216, SECRET, AAD)


def test_private_key_saved_encrypted_and_loaded(tmp_path, key):
    path = tmp_path / "hub-sealing.pem"
    key.save(path, b"correct horse")
    data = path.read_bytes()
    # keys/keyfile.py format v1 (issue 18); no PKCS#8 block, encrypted or not, in the file.
    assert data.startswith(b"-----BEGIN HEDUI ENCRYPTED KEY-----") and b"PRIVATE KEY" not in data
    assert keyfile.parse(data).purpose == "sealing-key"
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = SealingKey.load(path, b"correct horse")
    assert loaded.public_bytes() == key.public_bytes()
    enc, ct, _ = sealing.seal(key.public_bytes(), SECRET, AAD)
    assert sealing.open(loaded, enc, ct, AAD) == SECRET


def test_wrong_passphrase_or_damaged_file(tmp_path, key):
    path = tmp_path / "k.pem"
    key.save(path, b"right")
    with pytest.raises(ConfigError, match="wrong passphrase"):
        SealingKey.load(path, b"wrong")
    with pytest.raises(ConfigError, match="empty"):
        key.to_pem(b"")
    half = path.read_bytes().split(b"-----END HEDUI ENCRYPTED KEY-----")[0]
    path.write_bytes(half)
    with pytest.raises(ConfigError, match="no END line"):
        SealingKey.load(path, b"right")
    with pytest.raises(ConfigError, match="unreadable"):
        SealingKey.load(tmp_path / "missing.pem", b"right")


def _legacy_pem(key, pw: bytes, order=(0, 1)) -> bytes:
    """The file format before issue 18: two PBES2 (PBKDF2) PKCS#8 PEM blocks."""
    from cryptography.hazmat.primitives import serialization

    enc = serialization.BestAvailableEncryption(pw)
    ks = [key._mlkem, key._x25519]
    return b"# hedui sealing key\n" + b"".join(
        ks[i].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc) for i in order
    )


def test_swapped_blocks_are_refused(key):
    ders = [keyfile.key_der(k) for k in (key._x25519, key._mlkem)]
    swapped = keyfile.encrypt(keyfile.pack(ders), b"pw", purpose="sealing-key")
    with pytest.raises(ConfigError, match="want MLKEM768PrivateKey then X25519PrivateKey"):
        SealingKey.from_pem(swapped, b"pw")
    with pytest.raises(ConfigError, match="want MLKEM768PrivateKey then X25519PrivateKey"):
        SealingKey.from_pem(_legacy_pem(key, b"pw", (1, 0)), b"pw")


def test_legacy_file_still_opens_and_can_be_refused(key):
    old = _legacy_pem(key, b"old passphrase")
    assert SealingKey.from_pem(old, b"old passphrase").public_bytes() == key.public_bytes()
    with pytest.raises(ConfigError, match="older PKCS#8 PBES2"):
        SealingKey.from_pem(old, b"old passphrase", allow_legacy=False)


def test_repr_does_not_leak(key):
    assert "SealingKey(id=" in repr(key)
    assert len(key.key_id()) == 16
