"""Ed25519 signing keys of members and of the federation authority, with stable key ids."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.common.errors import Reason
from hedui.keys.errors import KeyFileError, SignatureError
from hedui.keys.keyfile import PURPOSE_SIGNING, load_private_key, save_private_key

__all__ = ["SigningKey", "VerifyingKey", "keyid_for", "load_public"]


def keyid_for(owner: str, raw_public: bytes) -> str:
    """``owner/<first 16 hex of SHA-256(raw public key)>`` — names the signer in DSSE."""
    return f"{owner}/{hashlib.sha256(raw_public).hexdigest()[:16]}"


@dataclass(frozen=True)
class VerifyingKey:
    owner: str
    raw: bytes

    # Computed once per key (a frozen dataclass still has a __dict__ for cached_property):
    # the hot path verifies every answer and receipt (issue 16).
    @functools.cached_property
    def keyid(self) -> str:
        return keyid_for(self.owner, self.raw)

    @functools.cached_property
    def _parsed(self) -> Ed25519PublicKey | None:
        try:
            return Ed25519PublicKey.from_public_bytes(self.raw)
        except ValueError:
            return None

    def verify(self, sig: bytes, msg: bytes) -> None:
        try:
            key = self._parsed
            if key is None:
                raise ValueError("not an Ed25519 public key")
            key.verify(sig, msg)
        except (InvalidSignature, ValueError):
            raise SignatureError(f"signature by {self.keyid}: does not verify", reason=Reason.BAD_SIGNATURE) from None


class SigningKey:
    def __init__(self, owner: str, key: Ed25519PrivateKey) -> None:
        self.owner = owner
        self._key = key
        self.public = VerifyingKey(owner, key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls, owner: str) -> SigningKey:
        return cls(owner, Ed25519PrivateKey.generate())

    @classmethod
    def load(
        cls, owner: str, path: Path, pw: bytes, *, purpose: str = PURPOSE_SIGNING, allow_legacy: bool = True
    ) -> SigningKey:
        key = load_private_key(path, pw, purpose=purpose, allow_legacy=allow_legacy)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"key file {path}: got {type(key).__name__}, want an Ed25519 private key")
        return cls(owner, key)

    @property
    def keyid(self) -> str:
        return self.public.keyid

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self._key

    def sign(self, msg: bytes) -> bytes:
        return self._key.sign(msg)

    def save(self, path: Path, pw: bytes, *, purpose: str = PURPOSE_SIGNING) -> None:
        save_private_key(path, self._key, pw, purpose=purpose)

    def save_public(self, path: Path) -> None:
        pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        Path(path).write_bytes(pem)


def load_public(owner: str, path: Path) -> VerifyingKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise KeyFileError(f"public key {path}: {exc.strerror}") from None
    except ValueError:
        raise KeyFileError(f"public key {path}: got unreadable PEM, want an Ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"public key {path}: got {type(key).__name__}, want Ed25519")
    return VerifyingKey(owner, key.public_bytes_raw())
