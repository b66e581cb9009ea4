"""What the node sees below its methods: refusals of calls that never reach a servicer, and
the watch that keeps health in step with the serving guard.

:class:`TransportRefusals` is a server interceptor: it moves decoding of the request into
the handler, where the peer is known, so bytes that are not the method's protobuf
(``malformed``) and a message over :data:`MAX_REQUEST_BYTES` (``oversize``) are counted by
cause and peer (:mod:`hedui.node.refusals`) and refused with a reason.

TLS handshake failures (no client certificate, a foreign CA) never reach Python: gRPC's core
logs them. :class:`CoreLogTap` reads those log lines (the node's own stderr, through a pipe)
and counts them; :func:`classify` is the parser, tested on the lines gRPC really writes.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import grpc

from hedui.node.loops import PeriodicJob

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["TransportRefusals", "GuardWatch", "CoreLogTap", "classify", "MAX_REQUEST_BYTES"]

log = logging.getLogger("hedui.node.transport")


class GuardWatch(PeriodicJob):
    """Re-evaluates :class:`~hedui.node.guard.ServingGuard` every few seconds, so health turns
    NOT_SERVING when the directory expires even if no call arrives."""

    def __init__(self, rt: Runtime, *, interval: float = 5.0) -> None:
        super().__init__("serving-guard", interval=interval)
        self._rt = rt

    def step(self) -> float | None:
        self._rt.guard.state()
        return None


def _peer_of(context: grpc.ServicerContext) -> str:
    try:
        return str(context.peer())[:128]
    except Exception:
        return "?"


#: The largest request message a method reads. gRPC's own limit (``server_options``) is
#: twice this, so a message between the two reaches :class:`TransportRefusals` and is counted
#: with its peer; beyond gRPC's limit gRPC refuses it itself.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def _who(rt: Runtime, context: grpc.ServicerContext) -> str:
    """The peer for an aggregated refusal: its member code when its certificate is in the
    directory (mTLS already passed), else its address."""
    from hedui.node.peer import caller_of

    try:
        return str(caller_of(context, rt.directory).code)
    except Exception:
        return _peer_of(context)


class TransportRefusals(grpc.ServerInterceptor):
    """Moves request decoding into the handler thread, where the peer is known, so a
    malformed or over-size request is counted by cause and peer before it is refused
    (``INVALID_ARGUMENT`` / ``MALFORMED_REQUEST``, ``RESOURCE_EXHAUSTED`` / ``OVERSIZE``)."""

    def __init__(self, rt: Runtime, *, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self._rt = rt
        self._max = max_bytes
        # One wrapped handler per method handler: this runs in gRPC's polling thread for every
        # call, refused ones included, so it must cost a dictionary look-up, not closures.
        self._wrapped: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        hit = self._wrapped.get(id(handler))
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = self._wrap(handler)
        self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        decode: Callable[[bytes], object] = handler.request_deserializer  # type: ignore[assignment]  # checked by the caller
        rt, limit = self._rt, self._max
        refusals = rt.refusals

        def wrap(behavior: Callable | None) -> Callable | None:
            if behavior is None:
                return None

            def decoded(data: bytes, context: grpc.ServicerContext) -> object:
                if len(data) > limit:
                    refusals.count("oversize", _who(rt, context))
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"OVERSIZE: request: got {len(data)} bytes, want at most {limit}")
                try:
                    request = decode(data)
                except Exception:
                    refusals.count("malformed", _who(rt, context))
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  "MALFORMED_REQUEST: request: got bytes that are not the method's protobuf message")
                return behavior(request, context)

            return decoded

        # grpc's method handlers are namedtuples (grpc._utilities.RpcMethodHandler).
        return cast(Any, handler)._replace(
            request_deserializer=None,  # bytes reach the behaviour unchanged
            unary_unary=wrap(handler.unary_unary),
            unary_stream=wrap(handler.unary_stream),
        )


# -- TLS handshake failures, from gRPC core's log -------------------------------------------

_PEER = re.compile(r"(ipv[46]:[^\s,\"}]+)")
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("no_client_cert", re.compile(r"PEER_DID_NOT_RETURN_A_CERTIFICATE|peer did not return a certificate", re.I)),
    ("foreign_ca", re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|unable to get local issuer", re.I)),
    ("tls_handshake", re.compile(r"Handshake failed|WRONG_VERSION_NUMBER|HTTP_REQUEST|SSL_ERROR", re.I)),
]


def classify(line: str) -> tuple[str, str] | None:
    """``(cause, peer address or "?")`` for a gRPC core log line reporting a refused TLS
    handshake, else ``None``."""
    for cause, rx in _RULES:
        if rx.search(line):
            m = _PEER.search(line)
            return cause, (m.group(1) if m else "?")
    return None


class CoreLogTap:
    """Reads the process's stderr through a pipe (gRPC core writes its log to fd 2), passes
    every byte on unchanged, and counts handshake refusals. Installed only by ``hedui node
    serve`` (a process-wide change; never in library use or tests of other code)."""

    def __init__(self, on_refusal: Callable[[str, str], None]) -> None:
        self._on = on_refusal
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        sys.stderr.flush()
        keep = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self._keep = keep
        self._thread = threading.Thread(target=self._pump, args=(r, keep), name="core-log-tap", daemon=True)
        self._thread.start()

    def uninstall(self) -> None:
        """Puts the real stderr back and lets the pump drain: a process about to exit with an
        error message must not lose it in the pipe (the pump is a daemon thread)."""
        if self._thread is None:
            return
        sys.stderr.flush()
        os.dup2(self._keep, 2)   # closes the pipe's last write end: the pump reads to EOF
        self._thread.join(timeout=2)
        self._thread = None

    def _pump(self, r: int, out: int) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(r, 65536)
            except OSError:
                return
            if not chunk:
                return
            os.write(out, chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                hit = classify(raw.decode("utf-8", "replace"))
                if hit is not None:
                    try:
                        self._on(*hit)
                    except Exception:  # counting must never stop the pump
                        log.debug("could not count a handshake refusal", exc_info=True)
            buf = buf[-65536:]
