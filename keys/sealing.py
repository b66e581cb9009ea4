"""Sealing personal data to the hub: HPKE (RFC 9180), base mode, with the hybrid
post-quantum KEM ML-KEM-768 + X25519, HKDF-SHA256 and AES-256-GCM, from ``cryptography``.

- Public key bytes (what the directory publishes as the hub sealing key): the ML-KEM-768
  encapsulation key (1,184 bytes) followed by the X25519 public key (32 bytes), 1,216 bytes.
- ``seal`` returns ``(enc, ciphertext, suite_label)``: ``enc`` is the KEM's encapsulated
  key (1,120 bytes), ``ciphertext`` the AEAD output (plaintext + 16-byte tag).
- Binding: ``cryptography`` exposes HPKE's ``info`` (key-schedule context) but not the
  AEAD's ``aad`` in its public API, so the caller's ``aad`` (the notice's public metadata)
  is bound through ``info = b"hedui/seal/v1\\x00" + aad``. Any change to it makes opening
  fail exactly as a changed AEAD aad would.
- Private key at rest: a keys/keyfile.py file (scrypt + AES-256-GCM, purpose ``sealing-key``)
  holding the ML-KEM-768 key (seed form) then the X25519 key as PKCS#8 DER. Older files (one
  PEM with two PBES2 ``ENCRYPTED PRIVATE KEY`` blocks) are still read, with a warning.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from hedui.common.errors import InvalidArgument, Reason
from hedui.keys import keyfile
from hedui.keys.errors import KeyFileError, SealError

__all__ = ["SealingKey", "SealError", "seal", "open", "SUITE_LABEL", "PUBLIC_KEY_SIZE"]

SUITE_LABEL = "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
_MLKEM_PUB = 1184
_X25519_PUB = 32
PUBLIC_KEY_SIZE = _MLKEM_PUB + _X25519_PUB
_INFO_PREFIX = b"hedui/seal/v1\x00"
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_ENC_LEN = hpke.KEM.MLKEM768_X25519.enc_length()




class SealingKey:
    """A hub's private sealing key (hybrid ML-KEM-768 + X25519)."""

    __slots__ = ("_mlkem", "_x25519", "_hpke")

    def __init__(self, mlkem_key: mlkem.MLKEM768PrivateKey, x25519_key: x25519.X25519PrivateKey) -> None:
        self._mlkem = mlkem_key
        self._x25519 = x25519_key
        self._hpke = hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)

    def __repr__(self) -> str:
        return f"SealingKey(id={self.key_id()})"

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    def public_bytes(self) -> bytes:
        return (
            self._mlkem.public_key().public_bytes_raw()
            + self._x25519.public_key().public_bytes_raw()
        )

    def key_id(self) -> str:
        """Hex SHA-256 of :meth:`public_bytes`, first 16 characters."""
        return hashlib.sha256(self.public_bytes()).hexdigest()[:16]

    def to_pem(self, passphrase: bytes) -> bytes:
        """The encrypted private key file contents (keys/keyfile.py format v1, purpose
        ``sealing-key``; plaintext: the ML-KEM-768 then the X25519 PKCS#8 DER, length-prefixed)."""
        ders = [keyfile.key_der(k) for k in (self._mlkem, self._x25519)]
        return keyfile.encrypt(keyfile.pack(ders), _check_passphrase(passphrase), purpose=keyfile.PURPOSE_SEALING)

    @classmethod
    def from_pem(
        cls, data: bytes, passphrase: bytes, *, source: str = "sealing key", allow_legacy: bool = True
    ) -> SealingKey:
        pw = _check_passphrase(passphrase)
        opened = keyfile.open_bytes(data, pw, purpose=keyfile.PURPOSE_SEALING, source=source, allow_legacy=allow_legacy)
        ders = keyfile.unpack(opened.plaintext, source=source)
        if len(ders) != 2:
            raise KeyFileError(f"{source}: got {len(ders)} keys, want 2 (ML-KEM-768, X25519)")
        try:
            m, x = (serialization.load_der_private_key(d, password=None) for d in ders)
        except (ValueError, TypeError):
            raise KeyFileError(f"{source}: got a key that does not parse, want PKCS#8 ML-KEM-768 and X25519") from None
        if not isinstance(m, mlkem.MLKEM768PrivateKey) or not isinstance(x, x25519.X25519PrivateKey):
            raise KeyFileError(
                f"{source}: got key types {type(m).__name__}, {type(x).__name__}, "
                "want MLKEM768PrivateKey then X25519PrivateKey"
            )
        return cls(m, x)

    def save(self, path: str | Path, passphrase: bytes) -> None:
        """Writes the encrypted private key (mode 0600, temp file + rename)."""
        keyfile.write_private(Path(path), self.to_pem(passphrase))

    @classmethod
    def load(cls, path: str | Path, passphrase: bytes, *, allow_legacy: bool = True) -> SealingKey:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"sealing key {p}: got an unreadable file ({exc.strerror}), want a key file") from None
        return cls.from_pem(data, passphrase, source=f"sealing key {p}", allow_legacy=allow_legacy)


def _check_passphrase(passphrase: bytes) -> bytes:
    if not isinstance(passphrase, (bytes, bytearray)) or not passphrase:
        raise KeyFileError("sealing key passphrase: got an empty or non-bytes value, want non-empty bytes")
    return bytes(passphrase)


def _public_key(public: bytes) -> hpke.MLKEM768X25519PublicKey:
    if not isinstance(public, (bytes, bytearray)) or len(public) != PUBLIC_KEY_SIZE:
        got = len(public) if isinstance(public, (bytes, bytearray)) else type(public).__name__
        raise InvalidArgument(f"sealing public key: got {got} bytes, want {PUBLIC_KEY_SIZE}")
    return _parsed(bytes(public))


@functools.lru_cache(maxsize=32)
def _parsed(public: bytes) -> hpke.MLKEM768X25519PublicKey:
    """The parsed key, kept: a node seals every notice to the same hub key (issue 16, cached
    parsed keys; parsing ML-KEM-768 costs about as much as the X25519 part of a seal). Keys
    are immutable, so a cached one is the same key; a refused key raises and is not cached."""
    try:
        m = mlkem.MLKEM768PublicKey.from_public_bytes(bytes(public[:_MLKEM_PUB]))
        x = x25519.X25519PublicKey.from_public_bytes(bytes(public[_MLKEM_PUB:]))
    except ValueError:
        raise InvalidArgument(
            "sealing public key: got bytes that are not a valid ML-KEM-768 + X25519 key, want the "
            "hub's published sealing key"
        ) from None
    return hpke.MLKEM768X25519PublicKey(m, x)


def seal(public_bytes: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes, str]:
    """Seals ``plaintext`` to the holder of ``public_bytes``, bound to ``aad``.
    Returns ``(enc, ciphertext, suite_label)``."""
    pk = _public_key(public_bytes)
    out = _SUITE.encrypt(bytes(plaintext), pk, info=_INFO_PREFIX + bytes(aad))
    return out[:_ENC_LEN], out[_ENC_LEN:], SUITE_LABEL


def open(
    private: SealingKey, enc: bytes, ciphertext: bytes, aad: bytes, *, suite: str = SUITE_LABEL
) -> bytes:
    """Opens a sealed payload; :class:`SealError` on any failure."""
    if suite != SUITE_LABEL:
        raise SealError(f"sealed suite: got {suite!r}, want {SUITE_LABEL!r}", reason=Reason.SEAL_SUITE_UNSUPPORTED)
    if len(enc) != _ENC_LEN:
        raise SealError(f"sealed enc: got {len(enc)} bytes, want {_ENC_LEN}")
    try:
        return _SUITE.decrypt(bytes(enc) + bytes(ciphertext), private._hpke, info=_INFO_PREFIX + bytes(aad))
    except Exception:  # InvalidTag, ValueError: the library's reasons are not more useful
        raise SealError(
            "sealed payload: could not open (wrong key, or ciphertext or bound metadata altered)"
        ) from None
