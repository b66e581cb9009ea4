"""The one wrapper every servicer method goes through.

It identifies the caller from its certificate, runs the method's validator and policy, maps
every :class:`~hedui.node.errors.HeduiError` to a gRPC status whose details start with a
stable reason, records refusals in the audit log, and never lets a traceback reach the peer.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc

from hedui.adapters import idnum
from hedui.node import logs
from hedui.node.audit.entry import Kind
from hedui.node.errors import HeduiError, Reason, status_code, to_status
from hedui.node.metrics import outcome_class
from hedui.node.peer import caller_of

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["rpc_method", "rpc_stream", "Call"]

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
    refusal (e.g. the notice id of a refused Push, whose request has no ``context``).

    Before the method runs: the caller is identified, the node must be allowed to serve
    (:mod:`hedui.node.guard`: directory expired or superseded -> ``UNAVAILABLE``) and a call
    slot must be free (:mod:`hedui.node.admission` -> ``RESOURCE_EXHAUSTED`` / ``OVERLOADED``
    at once). Those two refusals can come by the thousand, so they are counted and audited in
    aggregate (:mod:`hedui.node.refusals`), not one entry per call."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self, request, context: grpc.ServicerContext):
            with _serving(self.rt, full_name, request, refusal_fields, context) as call:
                return fn(self, request, call)

        return wrapper

    return deco


def rpc_stream(full_name: str) -> Callable:
    """:func:`rpc_method` for a server-streaming method: ``def m(self, request, call)`` is a
    generator of responses, and so is the wrapper (gRPC needs an iterator; a list fails with
    ``'list' object is not an iterator``). The call slot is held until the stream ends; an
    error raised while streaming is mapped to a status like any other."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self, request, context: grpc.ServicerContext):
            with _serving(self.rt, full_name, request, None, context) as call:
                yield from fn(self, request, call)

        return wrapper

    return deco


@contextlib.contextmanager
def _serving(rt: Runtime, full_name: str, request, refusal_fields, context: grpc.ServicerContext) -> Iterator[Call]:
    """One call, unary or streamed: identify the caller, admit it, map what the method raises to
    a status, and count, log and release the slot whatever happens."""
    caller_code = "?"
    admitted = False
    outcome = ["OK", ""]
    started = time.monotonic()
    bound = logs.start_call(context.invocation_metadata())
    try:
        member = _identify(rt, context)
        caller_code = member.code
        _admit(rt, caller_code)
        admitted = True
        yield Call(member, full_name, context)
        m = rt.metrics
        m.child(m.calls, full_name, "OK").inc()
    except HeduiError as err:
        outcome[:] = [status_code(err).name, str(err.reason or "")]
        _refuse(rt, full_name, caller_code, err, request, refusal_fields, context)
    except GeneratorExit:  # a streamed call's peer went away: gRPC dropped the iterator
        outcome[0] = "CANCELLED"
        rt.metrics.child(rt.metrics.calls, full_name, "CANCELLED").inc()
        raise
    except Exception:  # a bug: log it here, tell the peer nothing internal
        outcome[0] = "INTERNAL"
        log.exception("internal error in %s (caller %s)", full_name, caller_code)
        rt.metrics.child(rt.metrics.calls, full_name, "INTERNAL").inc()
        context.abort(grpc.StatusCode.INTERNAL, "INTERNAL: internal error, logged at the node")
    finally:
        if admitted:
            _leave(rt, caller_code)
        _done(rt, full_name, caller_code, outcome, started)
        logs.end_call(bound)


def _done(rt: Runtime, method: str, caller: str, outcome: list[str], started: float) -> None:
    """Latency by method and calling member, and the one access line of the call (issue 17):
    method, peer, status, reason and milliseconds — never the request's content."""
    took = time.monotonic() - started
    m = rt.metrics
    m.child(m.latency, method, caller).observe(took)
    m.child(m.outcomes, "served", method, caller, outcome_class(outcome[0])).inc()
    if logs.access.isEnabledFor(logging.INFO):   # the record and its fields only when written
        logs.access.info("%s %s %s", method, caller, outcome[0], extra={
            "method": method, "peer": caller, "code": outcome[0], "reason": outcome[1] or None, "ms": round(took * 1000, 1)})


def _identify(rt: Runtime, context: grpc.ServicerContext):
    return caller_of(context, rt.directory)


def _admit(rt: Runtime, caller: str) -> None:
    """The node-wide gates; on return a call slot is held (the caller must :func:`_leave`)."""
    try:
        rt.guard.check()
        rt.admission.try_acquire(caller)
    except HeduiError as err:
        # Marked so _refuse aggregates instead of writing one entry per refused call.
        err.aggregate = True  # type: ignore[attr-defined]
        raise
    rt.metrics.in_flight.inc()


def _leave(rt: Runtime, caller: str) -> None:
    rt.admission.release(caller)
    rt.metrics.in_flight.dec()


def _refuse(rt: Runtime, method: str, caller: str, err: HeduiError, request, extra: Callable | None, context) -> None:
    code, details = to_status(err)
    m = rt.metrics   # a flood of refusals (shedding) comes through here too: cached children
    m.child(m.calls, method, code.name).inc()
    m.child(m.refusals, err.reason.value if err.reason else "UNSPECIFIED").inc()
    if getattr(err, "aggregate", False):
        if err.reason == Reason.OVERLOADED:
            m.child(m.shed, caller).inc()
        rt.refusals.count(err.reason.lower(), caller)
    else:
        _record_refusal(rt, method, caller, err, request, extra)
    context.abort(code, details)


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
