"""Typed errors of the node, grouped by source, and their one mapping to gRPC statuses.

Every refusal a node gives is a subclass of :class:`HeduiError` carrying a stable,
machine-readable ``reason`` (UPPER_SNAKE) and a human message. Messages never contain an
identity number. :func:`to_status` is the only place that maps errors to gRPC codes
(after google api-core ``exceptions.py`` and Boulder ``grpc/errors.go``).
"""

from __future__ import annotations

import grpc

__all__ = [
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
    "to_status",
]


class HeduiError(Exception):
    """Base of every error Hedui raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class ConfigError(HeduiError):
    """A configuration, key file or directory problem found at start."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "CONFIG"


class InvalidArgument(HeduiError):
    """The request is malformed: ``Field: got X, want Y``."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class Unauthenticated(HeduiError):
    """The peer could not be identified (no or unknown client certificate)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(HeduiError):
    """The peer is known but the policy does not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "POLICY_DENIED"


class ResourceExhausted(HeduiError):
    """A quota or batch limit was exceeded."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "QUOTA_EXCEEDED"


class NotFound(HeduiError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class FailedPrecondition(HeduiError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Unavailable(HeduiError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class VerificationError(HeduiError):
    """A signature, proof or envelope did not verify."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "VERIFICATION_FAILED"


def to_status(err: HeduiError) -> tuple[grpc.StatusCode, str]:
    """Maps an error to ``(code, details)``; details start with the stable reason."""
    return err.code, f"{err.reason}: {err.message}"
