"""``hedui keys rekey``: re-encrypt a key file under a new passphrase and/or the current format.

Reads any file :mod:`hedui.keys.keyfile` reads (format v1, PKCS#8 PBES2 PEM, hedui-secret-v1
JSON, and a plaintext person secret), checks that the new file opens with the new passphrase
and yields the same plaintext, then replaces the old file atomically (temp file, fsync,
rename; mode 0600). The key itself does not change, so nothing in the directory changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hedui.keys import keyfile
from hedui.keys.errors import KeyFileError

__all__ = ["Rekeyed", "rekey", "infer_purpose", "PURPOSES"]

#: Every purpose a Hedui key file has (the OPRF seed's and dedup secret's labels are the node's).
PURPOSES = (
    keyfile.PURPOSE_TLS,
    keyfile.PURPOSE_SIGNING,
    keyfile.PURPOSE_CA,
    keyfile.PURPOSE_DIRECTORY,
    keyfile.PURPOSE_SEALING,
    keyfile.PURPOSE_PERSON_SECRET,
    keyfile.PURPOSE_ANSWER_SIGNING,
    keyfile.PURPOSE_CHECKPOINT_SIGNING,
    keyfile.PURPOSE_COSIGNING,
    "hedui-oprf-seed",
    "hedui-dedup-secret",
)
_BY_NAME = {"tls.key": keyfile.PURPOSE_TLS, "ca.key": keyfile.PURPOSE_CA, "sealing.key": keyfile.PURPOSE_SEALING,
            "person.secret": keyfile.PURPOSE_PERSON_SECRET, "answer-signing.key": keyfile.PURPOSE_ANSWER_SIGNING,
            "checkpoint-signing.key": keyfile.PURPOSE_CHECKPOINT_SIGNING, "cosign-signing.key": keyfile.PURPOSE_COSIGNING}


@dataclass(frozen=True)
class Rekeyed:
    path: Path
    purpose: str
    was: str  # "v1", "pkcs8-pbkdf2", "secret-json-v1" or "plaintext"


def infer_purpose(path: Path, data: bytes) -> str | None:
    """The purpose a file is for, from its header (v1), its label (JSON) or its name."""
    if keyfile.is_current(data):
        return keyfile.parse(data).purpose
    if data.lstrip().startswith(b"{"):
        try:
            label = json.loads(data).get("label")
        except (ValueError, AttributeError):
            return None
        return label if isinstance(label, str) else None
    if data.count(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") == 2:
        return keyfile.PURPOSE_SEALING
    if path.name == "signing.key":
        # The authority's folder holds the CA certificate beside its directory-signing key.
        return keyfile.PURPOSE_DIRECTORY if (path.parent / "ca.crt").exists() else keyfile.PURPOSE_SIGNING
    return _BY_NAME.get(path.name)


def rekey(path: Path, old_pw: bytes, new_pw: bytes, *, purpose: str | None = None) -> Rekeyed:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    found = infer_purpose(path, data)
    if purpose is None:
        purpose = found
    elif found is not None and found != purpose and keyfile.is_current(data):
        raise KeyFileError(f"key file {path}: purpose: got {found!r} in the file, want {purpose!r} (--purpose)")
    if purpose is None:
        raise KeyFileError(f"key file {path}: purpose: got none, want --purpose, one of {', '.join(PURPOSES)}")
    if keyfile.is_current(data) or data.lstrip().startswith(b"{") or b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data:
        opened = keyfile.open_bytes(data, old_pw, purpose=purpose, source=f"key file {path}")
        plaintext, was = opened.plaintext, opened.legacy or "v1"
    elif purpose == keyfile.PURPOSE_PERSON_SECRET and len(data) >= 32:
        plaintext, was = data, "plaintext"  # the person secret of older installations
    else:
        raise KeyFileError(f"key file {path}: got an unknown or unencrypted file, want a Hedui key file")
    new = keyfile.encrypt(plaintext, new_pw, purpose=purpose)
    if keyfile.decrypt(new, new_pw, purpose=purpose, source=f"key file {path} (new)") != plaintext:
        raise KeyFileError(f"key file {path}: the re-encrypted file does not give back the key; left unchanged")
    keyfile.write_private(path, new)
    return Rekeyed(path, purpose, was)
