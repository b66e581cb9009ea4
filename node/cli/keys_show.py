"""``hedui keys show FILE``: print any public key or fingerprint again (issue 17 item 5) —
a certificate, a public key, or an encrypted key file (with its passphrase), whatever made it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import typer

from hedui.node.cli._common import cli_errors, console, emit_json

__all__ = ["register", "describe_key_file"]


def register(app: typer.Typer) -> None:
    app.command("show")(show)


def describe_key_file(path: Path, *, passphrase: bytes | None, epoch: int = 1) -> dict[str, Any]:
    """What ``path`` holds and its public part; private keys need ``passphrase``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from hedui.keys import keyfile
    from hedui.keys.ca import cert_fingerprint, member_of_cert
    from hedui.keys.signing import keyid_for
    from hedui.node.errors import ConfigError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    out: dict[str, Any] = {"file": str(path)}
    if b"-----BEGIN CERTIFICATE-----" in data:
        cert = x509.load_pem_x509_certificate(data)
        out.update(kind="certificate", subject=member_of_cert(cert), issuer=cert.issuer.rfc4514_string(),
                   sha256=cert_fingerprint(cert).hex(), not_after=cert.not_valid_after_utc.isoformat())
        return out
    if b"-----BEGIN PUBLIC KEY-----" in data:
        pub = serialization.load_pem_public_key(data)
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        out.update(kind="public-key", public_key_hex=raw.hex(), keyid=keyid_for(path.stem, raw))
        return out
    if not keyfile.is_current(data):
        raise ConfigError(f"{path}: got an unknown file, want a certificate, a public key or a hedui key file")
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


@cli_errors
def show(
    file: Path = typer.Argument(..., help="Certificate, public key, or hedui key file"),
    epoch: int = typer.Option(1, min=1, help="OPRF seed files: the epoch whose public key to print"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Print a key's public part or a certificate's fingerprint again (e.g. a hub's whole
    sealing_key_hex for the directory). Key files ask for the passphrase as every command does."""
    from hedui.keys import keyfile
    from hedui.keys.keyfile import passphrase

    data = file.read_bytes() if file.is_file() else b""
    pw = passphrase() if keyfile.is_current(data) else None
    out = describe_key_file(file, passphrase=pw, epoch=epoch)
    if json_out:
        emit_json(out)
        return
    for k, v in out.items():
        console.print(f"{k}: {v}", highlight=False, soft_wrap=True)
