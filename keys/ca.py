"""Federation CA and member TLS certificates (X.509, ECDSA P-256).

Members generate their TLS key and a CSR; the federation authority checks the CSR's
self-signature and issues a certificate with serverAuth+clientAuth EKU and the member's
endpoint host as SAN (RFC 5280 §4.2.1.6), so one certificate serves both ends of mTLS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hedui.common.errors import Reason
from hedui.keys.errors import CertificateError, KeyFileError
from hedui.keys.keyfile import PURPOSE_CA, PURPOSE_TLS, load_private_key, save_private_key

__all__ = [
    "Authority",
    "create_authority",
    "new_tls_key",
    "make_csr",
    "issue",
    "load_cert",
    "load_tls_key",
    "cert_fingerprint",
    "check_issued_by",
    "member_of_cert",
    "member_of_pem",
]

_CA_YEARS = 10
_MEMBER_DAYS = 397


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def load_tls_key(path: Path, pw: bytes, *, allow_legacy: bool = True) -> ec.EllipticCurvePrivateKey:
    """A member's TLS private key (key file purpose ``tls-key``), which must be ECDSA."""
    key = load_private_key(path, pw, purpose=PURPOSE_TLS, allow_legacy=allow_legacy)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"key file {path}: got a {type(key).__name__}, want an ECDSA P-256 key (hedui keys init-member)")
    return key


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as exc:
        raise KeyFileError(f"certificate {path}: {exc.strerror}") from None
    except ValueError:
        raise KeyFileError(f"certificate {path}: got unreadable PEM, want an X.509 certificate") from None


def cert_fingerprint(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate in PEM, as gRPC's TLS credentials take it."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """An (already decrypted) TLS private key as unencrypted PKCS#8 PEM, for gRPC's TLS
    credentials in memory; never written to disk."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def pem_fingerprint(pem: bytes) -> bytes:
    """SHA-256 of the DER of a PEM certificate (what the directory lists per member); a
    :class:`CertificateError` if it is not one."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CertificateError("certificate: got unreadable PEM, want an X.509 certificate", reason=Reason.BAD_CLIENT_CERT) from None
    return cert_fingerprint(cert)


def member_of_cert(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


def member_of_pem(pem: bytes) -> str:
    """The member code a PEM certificate names (its CN); a :class:`CertificateError` if it is
    not a certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CertificateError("certificate: got unreadable PEM, want an X.509 certificate", reason=Reason.BAD_CLIENT_CERT) from None
    return member_of_cert(cert)


@dataclass
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, cert_path: Path, key_path: Path, pw: bytes) -> Authority:
        cert = load_cert(cert_path)
        key = load_private_key(key_path, pw, purpose=PURPOSE_CA)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise KeyFileError(f"CA key {key_path}: does not match certificate {cert_path}")
        return cls(cert, key)


def create_authority(name: str, cert_path: Path, key_path: Path, pw: bytes, *, now: dt.datetime) -> Authority:
    key = new_tls_key()
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hedui federation"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * _CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    save_private_key(key_path, key, pw, purpose=PURPOSE_CA)
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(cert, key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_csr(member: str, host: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member)]))
        .add_extension(x509.SubjectAlternativeName([_san(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def issue(
    ca: Authority, csr: x509.CertificateSigningRequest, *, now: dt.datetime, days: int = _MEMBER_DAYS,
    approved: Collection[str] | None = None,
) -> x509.Certificate:
    """Issues a member certificate for a CSR whose self-signature verifies.

    ``approved`` (issue 18): the host names / addresses the authority approved for this member
    (its directory endpoint's host); every subjectAltName the CSR asks for must be one of
    them, so a member cannot obtain a certificate for another member's host. ``None`` keeps
    the older behaviour (whatever the CSR asks) for callers that approved the CSR by hand."""
    if not csr.is_signature_valid:
        raise CertificateError("csr: self-signature does not verify", reason=Reason.BAD_CSR)
    member = member_of_cert(csr)  # type: ignore[arg-type]
    if not member:
        raise CertificateError("csr.subject: got no common name, want the member code", reason=Reason.BAD_CSR)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("csr: got no subjectAltName, want the endpoint host", reason=Reason.BAD_CSR) from None
    if approved is not None:
        asked = [str(n.value) for n in san]
        wrong = [a for a in asked if a not in set(approved)]
        if wrong or not asked:
            raise CertificateError(f"csr.subjectAltName: got {', '.join(wrong)[:120]!r}, want only {sorted(approved)} (approved by the authority)",
                                   reason=Reason.BAD_CSR)
    return (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )


def check_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate, *, now: dt.datetime) -> None:
    """Raises :class:`~hedui.keys.errors.CertificateError` unless ``cert`` is signed by ``ca_cert`` and valid now."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception) as exc:  # InvalidSignature, issuer mismatch
        raise CertificateError(
            f"certificate {member_of_cert(cert)!r}: not issued by federation CA {member_of_cert(ca_cert)!r} ({type(exc).__name__})",
            reason=Reason.FOREIGN_CA,
        ) from None
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise CertificateError(
            f"certificate {member_of_cert(cert)!r}: valid {cert.not_valid_before_utc:%Y-%m-%d}..{cert.not_valid_after_utc:%Y-%m-%d}, now outside",
            reason=Reason.CERT_EXPIRED,
        )
