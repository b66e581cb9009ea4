"""The one wrapper every servicer method goes through.

It identifies the caller from its certificate, runs the method's validator and policy, maps
every :class:`~hedui.node.errors.HeduiError` to a gRPC status whose details start with a
stable reason, records refusals in the audit log, and never lets a traceback reach the peer.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from hedui.adapters import idnum
from hedui.node.audit.entry import Kind
from hedui.node.errors import HeduiError, status_code, to_status

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["rpc_method", "Call"]

log = logging.getLogger("hedui.node.rpc")


class Call:
    """What a servicer method receives besides the request."""

    __slots__ = ("caller", "method", "context", "started")

    def __init__(self, caller, method: str, context: grpc.ServicerContext) -> None:
        self.caller = caller
        self.method = method
        self.context = context
        self.started = time.monotonic()


def rpc_method(full_name: str, *, refusal_fields: Callable | None = None) -> Callable:
    """Decorates ``def m(self, request, call: Call)`` on a servicer holding ``self.rt``.

    ``refusal_fields(request) -> dict`` adds method-specific fields to the audit entry of a
    refusal (e.g. the notice id of a refused Push, whose request has no ``context``)."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self, request, context: grpc.ServicerContext):
            from hedui.node.peer import caller_of

            rt = self.rt
            caller_code = "?"
            try:
                member = caller_of(context, rt.directory)
                caller_code = member.code
                result = fn(self, request, Call(member, full_name, context))
                rt.metrics.calls.labels(full_name, "OK").inc()
                return result
            except HeduiError as err:
                code, details = to_status(err)
                rt.metrics.calls.labels(full_name, code.name).inc()
                _record_refusal(rt, full_name, caller_code, err, request, refusal_fields)
                context.abort(code, details)
            except Exception:  # a bug: log it here, tell the peer nothing internal
                log.exception("internal error in %s (caller %s)", full_name, caller_code)
                rt.metrics.calls.labels(full_name, "INTERNAL").inc()
                context.abort(grpc.StatusCode.INTERNAL, "INTERNAL: internal error, logged at the node")

        return wrapper

    return deco


def _record_refusal(rt: Runtime, method: str, caller: str, err: HeduiError, request, extra: Callable | None = None) -> None:
    ctx = getattr(request, "context", None)
    fields = {
        "method": method,
        "peer": caller,
        "code": status_code(err).name,
        "reason": err.reason,
        "outcome": err.reason,
    }
    if ctx is not None:
        fields.update(
            request_id=bytes(ctx.request_id).hex()[:64],
            purpose=int(ctx.purpose),
            # A case reference carrying an identity number is itself the refusal reason
            # (IDENTITY_IN_REQUEST); it must still be audited, without the number.
            case_ref=ctx.case_ref[:64] if ctx.case_ref.isprintable() and not idnum.contains(ctx.case_ref) else "[redacted]",
        )
    if extra is not None:
        try:
            fields.update(extra(request))
        except Exception:  # the request may be malformed: that is often why it was refused
            log.debug("refusal fields of %s unavailable", method, exc_info=True)
    if not fields.get("request_id"):
        # No request id to name (a request without a context): the digest of its bytes stands in.
        fields["request_id"] = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()[:16].hex()
    try:
        rt.audit.record(Kind.REFUSAL, fields)
    except Exception:  # the refusal itself must still reach the peer
        log.exception("could not audit a refusal")
    log.info("refused %s from %s: %s", method, caller, err.reason)
