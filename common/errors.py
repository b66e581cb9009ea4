"""Typed errors of Hedui, and the one vocabulary of refusal reasons.

Every error Hedui raises on purpose is a :class:`HeduiError` carrying a stable,
machine-readable :class:`Reason` and a human message (``Field: got X, want Y``). Messages
never contain an identity number. Nothing here knows gRPC: ``hedui.node.errors`` is the one
place that maps an error family to a gRPC status and turns a peer's status back into the
typed error (after python-tuf ``tuf/api/exceptions.py``, sigstore ``errors.py``, X-Road
``ErrorCode.java``, Boulder ``grpc/errors.go``).

``keys/errors.py``, ``adapters/errors.py`` and ``node/audit/errors.py`` add their own typed
errors below these families.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import ClassVar

__all__ = [
    "Reason",
    "HeduiError",
    "ConfigError",
    "InvalidArgument",
    "Unauthenticated",
    "PermissionDenied",
    "ResourceExhausted",
    "NotFound",
    "FailedPrecondition",
    "Unavailable",
    "VerificationError",
    "set_message_scrubber",
]


class Reason(enum.StrEnum):
    """Why something was refused or failed. The value is what travels: a gRPC status's
    details start with it (``REASON: message``), and refusal audit entries record it in
    ``outcome``. Never reuse a name for another meaning; add new ones to their group."""

    # -- the families' defaults (one per error class below) ------------------------------
    INTERNAL = "INTERNAL"
    CONFIG = "CONFIG"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    POLICY_DENIED = "POLICY_DENIED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAVAILABLE = "UNAVAILABLE"
    VERIFICATION_FAILED = "VERIFICATION_FAILED"

    # -- a peer's status that carried no reason of ours (transport, older peers) ---------
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"

    # -- starting a node ------------------------------------------------------------------
    BIND_FAILED = "BIND_FAILED"

    # -- a running node refusing below the method (node/guard.py, node/admission.py) -------
    OVERLOADED = "OVERLOADED"
    OVERSIZE = "OVERSIZE"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"

    # -- who is calling (node/peer.py) ----------------------------------------------------
    NO_CLIENT_CERT = "NO_CLIENT_CERT"
    BAD_CLIENT_CERT = "BAD_CLIENT_CERT"
    NOT_A_MEMBER = "NOT_A_MEMBER"

    # -- request context and access policy (node/policy.py) -------------------------------
    BAD_PURPOSE = "BAD_PURPOSE"
    BAD_REQUEST_ID = "BAD_REQUEST_ID"
    BAD_CASE_REF = "BAD_CASE_REF"
    IDENTITY_IN_REQUEST = "IDENTITY_IN_REQUEST"
    CONSENT_MISSING = "CONSENT_MISSING"
    BAD_CONSENT_DIGEST = "BAD_CONSENT_DIGEST"
    # consent records (node/verification/consent.py, issue 18)
    CONSENT_INVALID = "CONSENT_INVALID"
    CONSENT_FORGED = "CONSENT_FORGED"
    CONSENT_EXPIRED = "CONSENT_EXPIRED"
    CONSENT_REVOKED = "CONSENT_REVOKED"
    CONSENT_WRONG_PURPOSE = "CONSENT_WRONG_PURPOSE"
    CONSENT_WRONG_CASE = "CONSENT_WRONG_CASE"
    CONSENT_OVER_COUNT = "CONSENT_OVER_COUNT"
    CONSENT_REUSED = "CONSENT_REUSED"
    CONSENT_TOO_SOON = "CONSENT_TOO_SOON"
    REVOCATIONS_STALE = "REVOCATIONS_STALE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PURPOSE_NOT_ALLOWED = "PURPOSE_NOT_ALLOWED"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    FIELD_NOT_ALLOWED = "FIELD_NOT_ALLOWED"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    REPLAYED_REQUEST = "REPLAYED_REQUEST"

    # -- identity numbers (adapters/idnum.py) ---------------------------------------------
    INVALID_IDENTITY = "INVALID_IDENTITY"

    # -- keys, certificates, signatures, the directory (keys/) ----------------------------
    BAD_CSR = "BAD_CSR"
    CERT_EXPIRED = "CERT_EXPIRED"
    FOREIGN_CA = "FOREIGN_CA"
    BAD_DIRECTORY = "BAD_DIRECTORY"
    DIRECTORY_EXPIRED = "DIRECTORY_EXPIRED"
    DIRECTORY_ROLLBACK = "DIRECTORY_ROLLBACK"
    DIRECTORY_SPLIT_VIEW = "DIRECTORY_SPLIT_VIEW"
    DIRECTORY_NOT_IN_FORCE = "DIRECTORY_NOT_IN_FORCE"
    # No directory source answered (node/directory_live.py, issue 17): not a refusal of a
    # directory, so it is not counted in hedui_directory_refused_total.
    FETCH_FAILED = "FETCH_FAILED"
    BAD_ENVELOPE = "BAD_ENVELOPE"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNKNOWN_SIGNER = "UNKNOWN_SIGNER"
    INVALID_ELEMENT = "INVALID_ELEMENT"
    BAD_PROOF = "BAD_PROOF"
    SEAL_OPEN_FAILED = "SEAL_OPEN_FAILED"
    SEAL_SUITE_UNSUPPORTED = "SEAL_SUITE_UNSUPPORTED"

    # -- household verification (node/verification/) -------------------------------------
    BAD_TOKEN = "BAD_TOKEN"
    DUPLICATE_TOKEN = "DUPLICATE_TOKEN"
    BAD_PREDICATE = "BAD_PREDICATE"
    UNKNOWN_EPOCH = "UNKNOWN_EPOCH"
    BAD_EPOCH = "BAD_EPOCH"
    NO_OPRF_KEY = "NO_OPRF_KEY"
    BAD_ANSWER = "BAD_ANSWER"
    ANSWER_NOT_BOUND = "ANSWER_NOT_BOUND"
    DUPLICATE_MEMBER = "DUPLICATE_MEMBER"
    BAD_REFERENCE_MONTH = "BAD_REFERENCE_MONTH"
    BAD_EXPORT = "BAD_EXPORT"

    # -- token filters and bulk cross-checks (node/crosscheck/) ----------------------------
    BAD_FILTER = "BAD_FILTER"
    FILTER_DIGEST = "FILTER_DIGEST"
    NO_FILTER = "NO_FILTER"
    FILTER_EPOCH = "FILTER_EPOCH"
    BAD_POPULATION = "BAD_POPULATION"
    BAD_CRITERION = "BAD_CRITERION"

    # -- active discovery (node/discovery/) -----------------------------------------------
    BAD_NOTICE = "BAD_NOTICE"
    PROVIDER_MISMATCH = "PROVIDER_MISMATCH"
    WRONG_HUB = "WRONG_HUB"
    NOTICE_ID_REUSED = "NOTICE_ID_REUSED"
    RECEIPT_INVALID = "RECEIPT_INVALID"
    RECEIPT_MISMATCH = "RECEIPT_MISMATCH"
    ALREADY_RESPONDED = "ALREADY_RESPONDED"

    # -- the audit log (node/audit/) ------------------------------------------------------
    AUDIT_VERIFICATION_FAILED = "AUDIT_VERIFICATION_FAILED"
    PROOF_INVALID = "PROOF_INVALID"
    INCLUSION_PROOF_INVALID = "INCLUSION_PROOF_INVALID"
    CONSISTENCY_PROOF_INVALID = "CONSISTENCY_PROOF_INVALID"
    TLOG_PROOF_MALFORMED = "TLOG_PROOF_MALFORMED"
    NOTE_INVALID = "NOTE_INVALID"
    NOTE_MALFORMED = "NOTE_MALFORMED"
    NOTE_SIGNATURE_INVALID = "NOTE_SIGNATURE_INVALID"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    AMBIGUOUS_KEY = "AMBIGUOUS_KEY"
    KEY_MALFORMED = "KEY_MALFORMED"
    CHECKPOINT_INVALID = "CHECKPOINT_INVALID"
    COSIGNATURE_INVALID = "COSIGNATURE_INVALID"
    LOG_FORK = "LOG_FORK"
    LOG_TAMPERED = "LOG_TAMPERED"
    NO_SUCH_CHECKPOINT = "NO_SUCH_CHECKPOINT"
    IDENTITY_IN_AUDIT_ENTRY = "IDENTITY_IN_AUDIT_ENTRY"

    # -- staff acts at the hub: the console and the CLI (node/console/, casework, worklist) ---
    IDENTITY_IN_TEXT = "IDENTITY_IN_TEXT"
    SAME_OPERATOR = "SAME_OPERATOR"
    NOT_RUN = "NOT_RUN"
    INCOMPLETE = "INCOMPLETE"
    REASON_REQUIRED = "REASON_REQUIRED"
    CSRF = "CSRF"
    ROLE = "ROLE"

    # -- the demo's own checks (node/testbed/) --------------------------------------------
    DEMO_MISMATCH = "DEMO_MISMATCH"
    DEMO_EVIDENCE = "DEMO_EVIDENCE"
    DEMO_AUDIT = "DEMO_AUDIT"
    DEMO_RECONCILE = "DEMO_RECONCILE"


_scrub: Callable[[str], str] | None = None


def set_message_scrubber(fn: Callable[[str], str]) -> None:
    """Registers the identity guard (``hedui.adapters.idnum.scrub``, which registers itself on
    import) that every :class:`HeduiError` message passes through: no error Hedui raises can
    carry an identity number to a log, a peer or a person (issue 13)."""
    global _scrub
    _scrub = fn


class HeduiError(Exception):
    """Base of every error Hedui raises on purpose."""

    default_reason: ClassVar[Reason] = Reason.INTERNAL
    #: The gRPC status name when this error was decoded from a peer's answer
    #: (``hedui.node.errors.from_rpc_error``); ``None`` for an error raised here.
    remote_code: str | None = None

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        if _scrub is not None:
            message = _scrub(message)
        super().__init__(message)
        self.message = message
        self.reason: Reason = reason or self.default_reason

    def __str__(self) -> str:
        return self.message


class ConfigError(HeduiError):
    """A configuration, key file or directory problem found at start (or by a command)."""

    default_reason = Reason.CONFIG


class InvalidArgument(HeduiError):
    """The request or input is malformed: ``Field: got X, want Y``."""

    default_reason = Reason.INVALID_ARGUMENT


class Unauthenticated(HeduiError):
    """The peer could not be identified (no or unknown client certificate)."""

    default_reason = Reason.UNAUTHENTICATED


class PermissionDenied(HeduiError):
    """The peer is known but the policy does not allow this call."""

    default_reason = Reason.POLICY_DENIED


class ResourceExhausted(HeduiError):
    """A quota or batch limit was exceeded."""

    default_reason = Reason.QUOTA_EXCEEDED


class NotFound(HeduiError):
    """The named case, lead, referral, epoch or checkpoint does not exist."""

    default_reason = Reason.NOT_FOUND


class FailedPrecondition(HeduiError):
    """The thing exists but is not in a state that allows the operation."""

    default_reason = Reason.FAILED_PRECONDITION


class Unavailable(HeduiError):
    """A peer or the store did not answer; trying again later may work."""

    default_reason = Reason.UNAVAILABLE


class VerificationError(HeduiError):
    """A signature, proof or envelope did not verify."""

    default_reason = Reason.VERIFICATION_FAILED
