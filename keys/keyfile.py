"""Private keys and secrets at rest: one small versioned, encrypted file format.

Every private key (TLS, signing, CA, directory signing, sealing) and every node secret
(OPRF seeds, the notice dedup secret, the hub's person secret) is stored as a
``HEDUI ENCRYPTED KEY`` file (format v1), written atomically with mode 0600:

    -----BEGIN HEDUI ENCRYPTED KEY-----
    base64 of:  magic "HDKF" | version 0x01 | kdf 0x01 (scrypt) | log2(N) | r | p
                | aead 0x01 (AES-256-GCM) | 16 | salt (16) | 12 | nonce (12)
                | len | purpose (ASCII, 1..64) | ciphertext || tag (16)
    -----END HEDUI ENCRYPTED KEY-----

- KDF: scrypt (RFC 7914) from ``cryptography``, memory-hard; written at N = 2^17, r = 8,
  p = 1 (128 MiB, ~0.3 s on one core here; OWASP's scrypt minimum is N = 2^17, r = 8, p = 1).
  Read at any N from 2^14 (a file below that is refused as a downgrade) to 2^20, r ≤ 16,
  p ≤ 4 and at most 1 GiB, so a hostile file cannot make a node allocate without bound.
- AEAD: AES-256-GCM (NIST SP 800-38D) with a random 96-bit nonce; the associated data is
  the whole header (magic to purpose), so the purpose ("tls-key", "ca-key", …), the KDF
  parameters and the salt are bound: a file moved to another purpose, or with its
  parameters lowered, does not open.
- Plaintext: a private key as unencrypted PKCS#8 DER (it exists only inside the AEAD), or
  the secret's bytes, or (sealing keys) several length-prefixed DER keys.

Older files are still read and flagged (a warning naming ``hedui keys rekey``): PKCS#8 PEM
encrypted by ``BestAvailableEncryption`` (PBES2, PBKDF2 at 2,048 iterations — about 156×
cheaper to attack than scrypt at the parameters above) and the ``hedui-secret-v1`` JSON
secrets (scrypt N = 2^15). Pass ``allow_legacy=False`` to refuse them (``[keys]
allow_legacy = false`` on a node).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hedui.keys.errors import KeyFileError
from hedui.keys.passphrase import PASSPHRASE_ENV, PASSPHRASE_FILE_ENV, passphrase

__all__ = [
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE_ENV",
    "passphrase",
    "KdfParams",
    "DEFAULT_PARAMS",
    "Header",
    "Opened",
    "encrypt",
    "decrypt",
    "parse",
    "open_file",
    "open_bytes",
    "pack",
    "unpack",
    "is_current",
    "save_private_key",
    "load_private_key",
    "save_secret",
    "load_secret",
    "write_private",
    "set_default_params",
    "legacy_seen",
    "PURPOSE_TLS",
    "PURPOSE_SIGNING",
    "PURPOSE_CA",
    "PURPOSE_DIRECTORY",
    "PURPOSE_SEALING",
    "PURPOSE_PERSON_SECRET",
    "PURPOSE_ANSWER_SIGNING",
    "PURPOSE_CHECKPOINT_SIGNING",
    "PURPOSE_COSIGNING",
]

log = logging.getLogger("hedui.keys")

PURPOSE_TLS = "tls-key"
PURPOSE_SIGNING = "signing-key"
PURPOSE_CA = "ca-key"
PURPOSE_DIRECTORY = "directory-signing-key"
PURPOSE_SEALING = "sealing-key"
PURPOSE_PERSON_SECRET = "hedui-person-secret"
# Per-role signing keys (issue 18): a key file for one role does not open as another's.
PURPOSE_ANSWER_SIGNING = "answer-signing-key"
PURPOSE_CHECKPOINT_SIGNING = "checkpoint-signing-key"
PURPOSE_COSIGNING = "cosignature-signing-key"

MAGIC = b"HDKF"
VERSION = 1
_KDF_SCRYPT = 1
_AEAD_AES256GCM = 1
_SALT, _NONCE, _TAG = 16, 12, 16
_PEM_BEGIN = b"-----BEGIN HEDUI ENCRYPTED KEY-----"
_PEM_END = b"-----END HEDUI ENCRYPTED KEY-----"
_LEGACY_PKCS8 = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_LEGACY_SECRET = "hedui-secret-v1"
_PURPOSE_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MIN_LOG2_N, MAX_LOG2_N, MAX_R, MAX_P, MAX_MEMORY = 14, 20, 16, 4, 1 << 30


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost parameters (RFC 7914 §2): N = 2**log2_n, block size r, parallelism p."""

    log2_n: int = 17
    r: int = 8
    p: int = 1

    def check(self) -> None:
        if not MIN_LOG2_N <= self.log2_n <= MAX_LOG2_N:
            raise KeyFileError(f"kdf: got N = 2^{self.log2_n}, want 2^{MIN_LOG2_N}..2^{MAX_LOG2_N} (lower is a downgrade)")
        if not 1 <= self.r <= MAX_R or not 1 <= self.p <= MAX_P:
            raise KeyFileError(f"kdf: got r = {self.r}, p = {self.p}, want r in 1..{MAX_R} and p in 1..{MAX_P}")
        if 128 * self.r * (1 << self.log2_n) > MAX_MEMORY:
            raise KeyFileError(f"kdf: got N = 2^{self.log2_n} with r = {self.r} (over 1 GiB), want at most 1 GiB")

    def derive(self, pw: bytes, salt: bytes, length: int = 32) -> bytes:
        """scrypt(pw, salt, N, r, p, length) — RFC 7914 §6; the AES-256 key is its 32 bytes."""
        return Scrypt(salt=salt, length=length, n=1 << self.log2_n, r=self.r, p=self.p).derive(pw)


DEFAULT_PARAMS = KdfParams()
_write_params = DEFAULT_PARAMS


def set_default_params(params: KdfParams) -> KdfParams:
    """Sets the parameters new files are written with; returns the previous ones. Tests
    lower N to the floor to stay fast; the product always writes :data:`DEFAULT_PARAMS`."""
    global _write_params
    params.check()
    old, _write_params = _write_params, params
    return old


@dataclass(frozen=True)
class Header:
    params: KdfParams
    salt: bytes
    nonce: bytes
    purpose: str
    ad: bytes  # the header bytes, bound as the AEAD's associated data
    ciphertext: bytes


@dataclass(frozen=True)
class Opened:
    """What a file held, and whether it is in an older format (``hedui keys rekey`` it)."""

    plaintext: bytes
    purpose: str | None
    legacy: str | None  # None, "pkcs8-pbkdf2" or "secret-json-v1"


def _check_purpose(purpose: str) -> bytes:
    if not _PURPOSE_RE.fullmatch(purpose):
        raise KeyFileError(f"purpose: got {purpose[:64]!r}, want 1..64 of a-z 0-9 . _ -")
    return purpose.encode("ascii")


def encrypt(plaintext: bytes, pw: bytes, *, purpose: str, params: KdfParams | None = None) -> bytes:
    """The file contents (format v1) holding ``plaintext`` for ``purpose``."""
    params = params or _write_params
    params.check()
    p = _check_purpose(purpose)
    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    ad = (
        MAGIC + bytes([VERSION, _KDF_SCRYPT, params.log2_n, params.r, params.p, _AEAD_AES256GCM, _SALT]) + salt
        + bytes([_NONCE]) + nonce + bytes([len(p)]) + p
    )
    ct = AESGCM(params.derive(pw, salt)).encrypt(nonce, bytes(plaintext), ad)
    body = base64.encodebytes(ad + ct)
    return _PEM_BEGIN + b"\n" + body + _PEM_END + b"\n"


def parse(data: bytes) -> Header:
    """Parses a v1 file (armoured or raw binary) without decrypting. :class:`KeyFileError`
    names the first thing that is wrong; never reads past the end, never allocates by a
    length the file claims beyond its own size."""
    raw = bytes(data)
    armoured = raw.strip()
    if armoured.startswith(_PEM_BEGIN):
        if not armoured.endswith(_PEM_END):
            raise KeyFileError("file: got no END line, want a complete HEDUI ENCRYPTED KEY block")
        try:
            raw = base64.b64decode(b"".join(armoured[len(_PEM_BEGIN):-len(_PEM_END)].split()), validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError("file: got a body that is not base64, want a HEDUI ENCRYPTED KEY block") from None
    if raw[:4] != MAGIC:
        raise KeyFileError("magic: got something else, want a HEDUI ENCRYPTED KEY (HDKF) file")
    fixed = raw[4:11]
    if len(fixed) < 7:
        raise KeyFileError(f"header: got {len(raw)} bytes, want at least 11")
    version, kdf, log2_n, r, p, aead, salt_len = fixed
    if version != VERSION:
        raise KeyFileError(f"version: got {version}, want {VERSION}")
    if kdf != _KDF_SCRYPT:
        raise KeyFileError(f"kdf: got {kdf}, want {_KDF_SCRYPT} (scrypt)")
    if aead != _AEAD_AES256GCM:
        raise KeyFileError(f"aead: got {aead}, want {_AEAD_AES256GCM} (AES-256-GCM)")
    params = KdfParams(log2_n, r, p)
    params.check()
    if salt_len != _SALT:
        raise KeyFileError(f"salt: got {salt_len} bytes, want {_SALT}")
    at = 11
    salt = raw[at:at + _SALT]
    at += _SALT
    if len(raw) < at + 1 or raw[at] != _NONCE:
        raise KeyFileError(f"nonce: got {raw[at] if len(raw) > at else 'no'} length byte, want {_NONCE}")
    nonce = raw[at + 1:at + 1 + _NONCE]
    at += 1 + _NONCE
    if len(raw) < at + 1:
        raise KeyFileError("purpose: got nothing, want its length and name")
    plen = raw[at]
    purpose_b = raw[at + 1:at + 1 + plen]
    at += 1 + plen
    if len(purpose_b) != plen or not _PURPOSE_RE.fullmatch(purpose_b.decode("ascii", "replace")):
        raise KeyFileError("purpose: got a truncated or malformed name, want 1..64 of a-z 0-9 . _ -")
    ct = raw[at:]
    if len(ct) < _TAG:
        raise KeyFileError(f"ciphertext: got {len(ct)} bytes, want at least the {_TAG}-byte tag")
    return Header(params, bytes(salt), bytes(nonce), purpose_b.decode("ascii"), bytes(raw[:at]), bytes(ct))


def decrypt(data: bytes, pw: bytes, *, purpose: str, source: str = "key file") -> bytes:
    h = _parse_in(data, source)
    if h.purpose != purpose:
        raise KeyFileError(f"{source}: purpose: got {h.purpose!r}, want {purpose!r}")
    try:
        return AESGCM(h.params.derive(pw, h.salt)).decrypt(h.nonce, h.ciphertext, h.ad)
    except InvalidTag:
        raise KeyFileError(f"{source}: wrong passphrase, or the file was altered") from None


def _parse_in(data: bytes, source: str) -> Header:
    try:
        return parse(data)
    except KeyFileError as exc:
        raise KeyFileError(f"{source}: {exc.message}") from None


def is_current(data: bytes) -> bool:
    s = data.lstrip()
    return s.startswith(_PEM_BEGIN) or s.startswith(MAGIC)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{what} {path}: {exc.strerror}") from None


_legacy_seen: list[str] = []


def legacy_seen() -> list[str]:
    """The older-format files this process has opened (``hedui node check`` lists them)."""
    return list(_legacy_seen)


def _flag(source: str, kind: str, allow_legacy: bool) -> None:
    if source not in _legacy_seen:
        _legacy_seen.append(source)
    if not allow_legacy:
        raise KeyFileError(f"{source}: got an older {kind} file, want format v1 (run `hedui keys rekey {source.split()[-1]}`)")
    log.warning("%s: older %s encryption; re-encrypt it with `hedui keys rekey`", source, kind)


def open_file(path: Path, pw: bytes, *, purpose: str, allow_legacy: bool = True, what: str = "key file") -> Opened:
    """Reads any supported file. Private keys come back as PKCS#8 DER, secrets as their bytes."""
    return open_bytes(_read(path, what), pw, purpose=purpose, allow_legacy=allow_legacy, source=f"{what} {path}")


def open_bytes(data: bytes, pw: bytes, *, purpose: str, source: str, allow_legacy: bool = True) -> Opened:
    """:func:`open_file` on a file's contents; ``source`` names it in messages."""
    if is_current(data):
        return Opened(decrypt(data, pw, purpose=purpose, source=source), purpose, None)
    if data.lstrip().startswith(b"{"):
        _flag(source, "hedui-secret-v1 (scrypt N=2^15)", allow_legacy)
        return Opened(_legacy_secret(data, pw, purpose, source), purpose, "secret-json-v1")
    blocks = re.findall(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----.*?-----END ENCRYPTED PRIVATE KEY-----", data, re.S)
    if blocks:
        _flag(source, "PKCS#8 PBES2 (PBKDF2, 2,048 iterations)", allow_legacy)
        ders = [_legacy_pkcs8(b, pw, source) for b in blocks]
        return Opened(ders[0] if len(ders) == 1 else pack(ders), purpose, "pkcs8-pbkdf2")
    raise KeyFileError(f"{source}: got an unknown or unencrypted file, want a HEDUI ENCRYPTED KEY file")


def _legacy_pkcs8(block: bytes, pw: bytes, source: str) -> bytes:
    try:
        key = serialization.load_pem_private_key(block, password=pw)
    except (ValueError, TypeError):
        raise KeyFileError(f"{source}: wrong passphrase, or not an encrypted PKCS#8 key") from None
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _legacy_secret(data: bytes, pw: bytes, label: str, source: str) -> bytes:
    try:
        doc = json.loads(data)
        if doc.get("format") != _LEGACY_SECRET:
            raise ValueError
        salt, nonce, ct = (base64.b64decode(doc[k]) for k in ("salt", "nonce", "ciphertext"))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyFileError(f"{source}: got an unreadable file, want {_LEGACY_SECRET} JSON") from None
    if doc.get("label") != label:
        raise KeyFileError(f"{source}: label: got {doc.get('label')!r}, want {label!r}")
    try:
        return AESGCM(KdfParams(15, 8, 1).derive(pw, salt)).decrypt(nonce, ct, label.encode())
    except (InvalidTag, ValueError):
        raise KeyFileError(f"{source}: wrong passphrase") from None


def pack(parts: list[bytes]) -> bytes:
    """Several DER keys in one plaintext: each as a 4-byte big-endian length and its bytes."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def unpack(data: bytes, *, source: str) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        if at + 4 > len(data):
            raise KeyFileError(f"{source}: got a truncated key list, want length-prefixed keys")
        (n,) = struct.unpack(">I", data[at:at + 4])
        if at + 4 + n > len(data):
            raise KeyFileError(f"{source}: got a truncated key list, want length-prefixed keys")
        out.append(data[at + 4:at + 4 + n])
        at += 4 + n
    return out


def write_private(path: Path, data: bytes) -> None:
    """Writes a file readable by its owner only, atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def key_der(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def save_private_key(path: Path, key: PrivateKeyTypes, pw: bytes, *, purpose: str) -> None:
    write_private(path, encrypt(key_der(key), pw, purpose=purpose))


def load_private_key(path: Path, pw: bytes, *, purpose: str, allow_legacy: bool = True) -> PrivateKeyTypes:
    opened = open_file(path, pw, purpose=purpose, allow_legacy=allow_legacy)
    try:
        return serialization.load_der_private_key(opened.plaintext, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"key file {path}: got a plaintext that is not a PKCS#8 private key, want one") from None


def save_secret(path: Path, secret: bytes, pw: bytes, *, label: str) -> None:
    write_private(path, encrypt(secret, pw, purpose=label))


def load_secret(path: Path, pw: bytes, *, label: str, allow_legacy: bool = True) -> bytes:
    return open_file(path, pw, purpose=label, allow_legacy=allow_legacy, what="secret file").plaintext
