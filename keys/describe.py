"""What a key or certificate file holds, and its public part (``hedui keys show``, issue 17):
certificates, PEM public keys and hedui key files of every purpose. Private keys need their
passphrase; nothing private is ever returned."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hedui.keys import keyfile
from hedui.keys.ca import cert_fingerprint, member_of_cert
from hedui.keys.errors import KeyFileError
from hedui.keys.signing import keyid_for

__all__ = ["describe_key_file", "cert_not_after"]


def cert_not_after(pem: bytes) -> dt.datetime:
    """The end of a PEM certificate's validity (UTC)."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def describe_key_file(path: Path, *, passphrase: bytes | None, epoch: int = 1) -> dict[str, Any]:
    """What ``path`` holds and its public part; private keys need ``passphrase``."""

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror}") from None
    out: dict[str, Any] = {"file": str(path)}
    if b"-----BEGIN CERTIFICATE-----" in data:
        cert = x509.load_pem_x509_certificate(data)
        out.update(kind="certificate", subject=member_of_cert(cert), issuer=cert.issuer.rfc4514_string(),
                   sha256=cert_fingerprint(cert).hex(), not_after=cert.not_valid_after_utc.isoformat())
        return out
    if b"-----BEGIN PUBLIC KEY-----" in data:
        pub = serialization.load_pem_public_key(data)
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        # sha256: what node.toml [directory] trust_anchor pins for the authority's key (issue 17).
        out.update(kind="public-key", public_key_hex=raw.hex(), keyid=keyid_for(path.stem, raw),
                   sha256=hashlib.sha256(raw).hexdigest())
        return out
    if not keyfile.is_current(data):
        raise KeyFileError(f"{path}: got an unknown file, want a certificate, a public key or a hedui key file")
    purpose = keyfile.parse(data).purpose
    out["kind"] = purpose
    if passphrase is None:
        return out
    if purpose == keyfile.PURPOSE_SEALING:
        from hedui.keys.sealing import SealingKey

        sk = SealingKey.from_pem(data, passphrase, source=str(path))
        # The whole key, never truncated: it goes into the directory as sealing_key_hex.
        out.update(sealing_key_hex=sk.public_bytes().hex(), key_id=sk.key_id())
    elif purpose == "hedui-oprf-seed":
        from hedui.keys.oprf import ServerKey

        seed = keyfile.open_bytes(data, passphrase, purpose=purpose, source=str(path)).plaintext
        out.update(epoch=epoch, public_key_hex=ServerKey.derive(seed, epoch).public_key_bytes.hex())
    elif purpose in (keyfile.PURPOSE_SIGNING, keyfile.PURPOSE_DIRECTORY, keyfile.PURPOSE_TLS, keyfile.PURPOSE_CA):
        key = keyfile.load_private_key(path, passphrase, purpose=purpose)
        pub = key.public_key()
        try:
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            out["public_key_hex"] = raw.hex()
        except ValueError:
            spki = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            out["spki_sha256"] = hashlib.sha256(spki).hexdigest()
    return out
