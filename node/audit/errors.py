"""Typed errors of the audit log: proofs, signed notes, checkpoints, cosignatures, forks.

Every verification in :mod:`hedui.node.audit` raises one of these (never returns a bool).
All of them are :class:`hedui.node.errors.VerificationError` subclasses, so the gRPC layer
maps them with :func:`hedui.node.errors.to_status`, except :class:`IdentityInEntryError`,
which is a refused *write* (``InvalidArgument``). Messages never contain an identity number.
"""

from __future__ import annotations

from hedui.node.errors import InvalidArgument, Reason, VerificationError

__all__ = [
    "AuditVerificationError",
    "ProofError",
    "InclusionProofError",
    "ConsistencyProofError",
    "ProofFormatError",
    "NoteError",
    "MalformedNoteError",
    "NoteSignatureError",
    "UnknownKeyError",
    "AmbiguousKeyError",
    "KeyFormatError",
    "CheckpointError",
    "CosignatureError",
    "ForkError",
    "TamperedLogError",
    "IdentityInEntryError",
]


class AuditVerificationError(VerificationError):
    """Base of every audit-log verification failure."""

    default_reason = Reason.AUDIT_VERIFICATION_FAILED


# -- Merkle proofs (RFC 9162 §2.1.3, §2.1.4) -------------------------------------------


class ProofError(AuditVerificationError):
    """A Merkle proof did not verify."""

    default_reason = Reason.PROOF_INVALID


class InclusionProofError(ProofError):
    """An RFC 9162 §2.1.3 inclusion proof did not verify (or could not be produced)."""

    default_reason = Reason.INCLUSION_PROOF_INVALID


class ConsistencyProofError(ProofError):
    """An RFC 9162 §2.1.4 consistency proof did not verify (or could not be produced)."""

    default_reason = Reason.CONSISTENCY_PROOF_INVALID


class ProofFormatError(InclusionProofError):
    """A c2sp.org/tlog-proof text is malformed."""

    default_reason = Reason.TLOG_PROOF_MALFORMED


# -- Signed notes (c2sp.org/signed-note) -----------------------------------------------


class NoteError(AuditVerificationError):
    """Base of signed-note failures."""

    default_reason = Reason.NOTE_INVALID


class MalformedNoteError(NoteError):
    """The note is not a well-formed signed note (layout, encoding, signature lines)."""

    default_reason = Reason.NOTE_MALFORMED


class NoteSignatureError(NoteError):
    """A signature by a known key failed to verify (the whole note is rejected)."""

    default_reason = Reason.NOTE_SIGNATURE_INVALID


class UnknownKeyError(NoteError):
    """No trusted key matches: a lookup by (name, key id) failed, or a note carries no
    signature by any trusted key."""

    default_reason = Reason.UNKNOWN_KEY


class AmbiguousKeyError(NoteError):
    """More than one trusted key has the same (name, key id)."""

    default_reason = Reason.AMBIGUOUS_KEY


class KeyFormatError(AuditVerificationError):
    """A verifier or signer key string is malformed or its key id does not match."""

    default_reason = Reason.KEY_MALFORMED


# -- Checkpoints, cosignatures, forks --------------------------------------------------


class CheckpointError(AuditVerificationError):
    """A checkpoint body is malformed (c2sp.org/tlog-checkpoint) or is not acceptable
    (wrong origin, older than one already seen, ...)."""

    default_reason = Reason.CHECKPOINT_INVALID


class CosignatureError(AuditVerificationError):
    """A tlog-cosignature/v1 signature is malformed or does not verify."""

    default_reason = Reason.COSIGNATURE_INVALID


class ForkError(AuditVerificationError):
    """Two checkpoints signed by the same log cannot both be true (same size and other
    root, or no valid consistency proof between them): a split view."""

    default_reason = Reason.LOG_FORK


class TamperedLogError(AuditVerificationError):
    """The stored log disagrees with itself (entries, tree, checkpoints)."""

    default_reason = Reason.LOG_TAMPERED


# -- Refused writes --------------------------------------------------------------------


class IdentityInEntryError(InvalidArgument):
    """An audit entry would contain something shaped like a resident identity number."""

    default_reason = Reason.IDENTITY_IN_AUDIT_ENTRY
