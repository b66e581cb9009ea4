"""Typed errors of the federation's keys, certificates, signatures and directory.

Each is a subclass of a family in :mod:`hedui.common.errors`, so ``hedui.node.errors``
maps it to a gRPC status without this package knowing gRPC. Messages never contain key
material or an identity number.
"""

from __future__ import annotations

from hedui.common.errors import ConfigError, InvalidArgument, Reason, VerificationError

__all__ = [
    "KeyFileError",
    "DirectorySpecError",
    "CertificateError",
    "SignatureError",
    "DirectoryError",
    "InvalidBlindedElement",
    "OprfProofError",
    "SealError",
]


class KeyFileError(ConfigError):
    """A key, secret, certificate or passphrase cannot be read or does not fit (missing
    file, wrong passphrase, wrong kind of key, refusing to overwrite one)."""


class DirectorySpecError(ConfigError):
    """The authority's directory spec names something inconsistent (a member twice, an
    unknown role, purpose or field type, a certificate of another member)."""


class CertificateError(VerificationError):
    """A certificate or certificate signing request does not verify against the federation CA."""


class SignatureError(VerificationError):
    """A DSSE envelope or an Ed25519 signature does not verify (or names no known key)."""


class DirectoryError(VerificationError):
    """A signed directory is malformed, expired or older than one already accepted."""


class InvalidBlindedElement(InvalidArgument):
    """A blinded element in a request is not a valid ristretto255 encoding (RFC 9497 §4.1 DeserializeElement)."""

    default_reason = Reason.INVALID_ELEMENT


class OprfProofError(VerificationError):
    """An evaluation did not verify against the provider's public key (RFC 9497 §2.2.2 VerifyProof)."""

    default_reason = Reason.BAD_PROOF


class SealError(VerificationError):
    """A sealed payload (HPKE, RFC 9180) could not be opened: wrong key, or ciphertext, encapsulated
    key or bound metadata altered. Deliberately says no more than that."""

    default_reason = Reason.SEAL_OPEN_FAILED
