"""The one mapping between Hedui's typed errors and gRPC statuses, both ways.

:func:`to_status` maps every error family (``hedui.common.errors`` and the subclasses in
``keys/errors.py``, ``adapters/errors.py``, ``node/audit/errors.py``) to a status code by
its class hierarchy, with details that start with the stable :class:`Reason`
(``REASON: message``). :func:`from_rpc_error` is the client side: it turns a peer's status
back into the typed error, so hub and peer code branch on classes and reasons instead of
parsing details (after google api-core ``exceptions.py`` and Boulder ``grpc/errors.go``).
"""

from __future__ import annotations

import grpc

from hedui.common.errors import (
    ConfigError,
    FailedPrecondition,
    HeduiError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VerificationError,
)

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
    "status_code",
    "from_status",
    "to_status",
    "from_rpc_error",
    "describe_remote",
]

# Family -> status. A subclass takes its nearest listed ancestor's code.
_CODES: dict[type[HeduiError], grpc.StatusCode] = {
    HeduiError: grpc.StatusCode.INTERNAL,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    # A bad signature or proof is a malformed request as far as the caller is concerned.
    VerificationError: grpc.StatusCode.INVALID_ARGUMENT,
}

# Status -> (family, reason when the details carry none of ours). INVALID_ARGUMENT decodes to
# InvalidArgument even when the peer raised a VerificationError: the reason tells them apart.
_FAMILIES: dict[grpc.StatusCode, tuple[type[HeduiError], Reason]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (InvalidArgument, Reason.INVALID_ARGUMENT),
    grpc.StatusCode.UNAUTHENTICATED: (Unauthenticated, Reason.UNAUTHENTICATED),
    grpc.StatusCode.PERMISSION_DENIED: (PermissionDenied, Reason.POLICY_DENIED),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (ResourceExhausted, Reason.QUOTA_EXCEEDED),
    grpc.StatusCode.NOT_FOUND: (NotFound, Reason.NOT_FOUND),
    grpc.StatusCode.FAILED_PRECONDITION: (FailedPrecondition, Reason.FAILED_PRECONDITION),
    grpc.StatusCode.UNAVAILABLE: (Unavailable, Reason.UNAVAILABLE),
    grpc.StatusCode.DEADLINE_EXCEEDED: (Unavailable, Reason.DEADLINE_EXCEEDED),
    grpc.StatusCode.CANCELLED: (Unavailable, Reason.CANCELLED),
}


#: What gRPC's own concurrency limit answers (grpc/_server.py ``_reject_rpc``); the node sets
#: that limit (node/server.py ``core_limit``), so it means the same as our OVERLOADED.
_GRPC_SHED = "Concurrent RPC limit exceeded!"


def status_code(err: HeduiError) -> grpc.StatusCode:
    """The gRPC status code of ``err``'s family."""
    for cls in type(err).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL  # pragma: no cover - HeduiError is always in the MRO


def to_status(err: HeduiError) -> tuple[grpc.StatusCode, str]:
    """Maps an error to ``(code, details)``; details start with the stable reason."""
    return status_code(err), f"{err.reason}: {err.message}"


def from_rpc_error(err: grpc.RpcError) -> HeduiError:
    """The typed error a peer's status stands for: the family from the status code, the
    reason from the details (``REASON: message``; a status without one of our reasons, such
    as a transport failure, gets the code's own). ``remote_code`` keeps the status name."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    details = (err.details() if callable(getattr(err, "details", None)) else "") or ""
    return _from_code(code, details)


def from_status(code_name: str, details: str) -> HeduiError:
    """:func:`from_rpc_error` for a status carried in a message (a notice refused inside a
    ``PushBatch``): ``code_name`` a gRPC status code name, ``details`` ``REASON: message``."""
    code = grpc.StatusCode.__members__.get(code_name, grpc.StatusCode.UNKNOWN)
    return _from_code(code, details)


def _from_code(code: grpc.StatusCode, details: str) -> HeduiError:
    cls, default = _FAMILIES.get(code, (HeduiError, Reason.UNKNOWN))
    head, sep, rest = details.partition(": ")
    known = Reason.__members__.get(head) if sep else None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details == _GRPC_SHED:
        known, rest = Reason.OVERLOADED, "the peer is at capacity (refused by gRPC before any handler); retry with back-off"
    exc = cls(rest if known is not None else details, reason=known or default)
    exc.remote_code = code.name
    return exc


def describe_remote(err: HeduiError) -> str:
    """``CODE: REASON: message`` of a decoded peer error (the reason left out where it is
    only the code's own), for stored outcomes and operator messages."""
    parts = [err.remote_code or "LOCAL"]
    if err.reason != err.remote_code:
        parts.append(err.reason)
    parts.append(err.message)
    return ": ".join(parts)
