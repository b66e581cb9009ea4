"""Private keys at rest: encrypted PKCS#8 PEM, passphrase from the environment or a file.

The passphrase is looked up, in order, from an explicit value, the environment variable
named by ``env`` (default ``HEDUI_KEY_PASSPHRASE``), or the file named by ``HEDUI_KEY_PASSPHRASE_FILE``.
Secrets that are not asymmetric keys (OPRF seeds) are stored as a small JSON document
encrypted with AES-256-GCM under a scrypt-derived key (RFC 7914), same passphrase sources.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hedui.keys.errors import KeyFileError

__all__ = [
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE_ENV",
    "passphrase",
    "save_private_key",
    "load_private_key",
    "save_secret",
    "load_secret",
    "write_private",
]

PASSPHRASE_ENV = "HEDUI_KEY_PASSPHRASE"
PASSPHRASE_FILE_ENV = "HEDUI_KEY_PASSPHRASE_FILE"
_SECRET_FORMAT = "hedui-secret-v1"


def passphrase(explicit: str | bytes | None = None, *, env: str = PASSPHRASE_ENV) -> bytes:
    """Returns the key passphrase, or raises :class:`KeyFileError` saying where to put one."""
    if explicit is not None:
        value = explicit.encode() if isinstance(explicit, str) else explicit
    elif os.environ.get(env):
        value = os.environ[env].encode()
    elif os.environ.get(PASSPHRASE_FILE_ENV):
        path = Path(os.environ[PASSPHRASE_FILE_ENV])
        try:
            value = path.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise KeyFileError(f"{PASSPHRASE_FILE_ENV}: cannot read {path}: {exc.strerror}") from None
    else:
        raise KeyFileError(
            f"key passphrase: got none, want it in ${env} or a file named by ${PASSPHRASE_FILE_ENV}"
        )
    if len(value) < 8:
        raise KeyFileError(f"key passphrase: got {len(value)} characters, want at least 8")
    return value


def write_private(path: Path, data: bytes) -> None:
    """Writes a file readable by its owner only, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_private_key(path: Path, key, pw: bytes) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(pw),
    )
    write_private(path, pem)


def load_private_key(path: Path, pw: bytes):
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    try:
        return serialization.load_pem_private_key(data, password=pw)
    except (ValueError, TypeError) as exc:
        text = str(exc).lower()
        if "password" in text or "decrypt" in text or "bad decrypt" in text:
            raise KeyFileError(f"key file {path}: wrong passphrase") from None
        raise KeyFileError(f"key file {path}: not an encrypted PKCS#8 PEM private key") from None


def _kdf(salt: bytes) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1)


def save_secret(path: Path, secret: bytes, pw: bytes, *, label: str) -> None:
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _kdf(salt).derive(pw)
    ct = AESGCM(key).encrypt(nonce, secret, label.encode())
    doc = {
        "format": _SECRET_FORMAT,
        "label": label,
        "kdf": "scrypt-n32768-r8-p1",
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ct).decode(),
    }
    write_private(path, json.dumps(doc, indent=1).encode())


def load_secret(path: Path, pw: bytes, *, label: str) -> bytes:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != _SECRET_FORMAT:
            raise ValueError
        salt = base64.b64decode(doc["salt"])
        nonce = base64.b64decode(doc["nonce"])
        ct = base64.b64decode(doc["ciphertext"])
    except OSError as exc:
        raise KeyFileError(f"secret file {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise KeyFileError(f"secret file {path}: got an unreadable file, want {_SECRET_FORMAT} JSON") from None
    if doc.get("label") != label:
        raise KeyFileError(f"secret file {path}: label: got {doc.get('label')!r}, want {label!r}")
    try:
        return AESGCM(_kdf(salt).derive(pw)).decrypt(nonce, ct, label.encode())
    except InvalidTag:
        raise KeyFileError(f"secret file {path}: wrong passphrase") from None
