"""Structured logs (issue 17 item 4): one JSON object per line with ``ts``, ``level``,
``component`` (the logger name), ``msg``, and — inside an RPC — its ``request_id`` and W3C
``traceparent`` (https://www.w3.org/TR/trace-context/#traceparent-header).

The trace context travels hub → provider in gRPC metadata: a server takes the caller's
``traceparent`` (or starts a trace) and keeps it in a context variable for the call; every
client call made while handling it (node/client.py's interceptor) sends the same trace id
with a new parent id, so one verification case is one trace across departments. The audit
entry of a received query stores it too (node/verification/provider.py reads
:func:`current_traceparent`).

Every line passes the identity guard (hedui.adapters.idnum.install_log_guard), JSON or not.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import re
from typing import TextIO

__all__ = ["JsonFormatter", "configure", "current_traceparent", "child_traceparent", "start_call", "end_call",
           "parse_traceparent", "new_traceparent", "access"]

# The parent id is 16 hex digits, written as two runs of 8 (tests/test_architecture.py keeps
# identity-length digit runs out of every pattern but the identity guard's).
_TP = re.compile(r"00-([0-9a-f]{32})-((?:[0-9a-f]{8}){2})-([0-9a-f]{2})")
_RID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("hedui_traceparent", default=None)
_request: contextvars.ContextVar[str | None] = contextvars.ContextVar("hedui_request_id", default=None)

access = logging.getLogger("hedui.access")


def parse_traceparent(value: str | None) -> str | None:
    """The header if well-formed (version 00, non-zero ids), else ``None`` (then a new trace
    starts: the spec says a malformed header is ignored, not repaired)."""
    if not value:
        return None
    m = _TP.fullmatch(value.strip())
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    return m.group(0)


def new_traceparent() -> str:
    h = os.urandom(24).hex()   # trace id and parent id from one read of the system's random source
    return f"00-{h[:32]}-{h[32:]}-01"


def child_traceparent() -> str:
    """What an outgoing call carries: the current trace id with a new parent (span) id."""
    cur = _trace.get()
    if cur is None:
        return new_traceparent()
    return f"00-{cur[3:35]}-{os.urandom(8).hex()}-{cur[-2:]}"


def current_traceparent() -> str | None:
    return _trace.get()


def start_call(metadata: object) -> tuple[contextvars.Token, contextvars.Token]:
    """Binds the call's trace context and request id; :func:`end_call` unbinds them."""
    tp_in = rid_in = None
    for k, v in metadata or ():  # type: ignore[attr-defined]
        # The two keys read, the last of each winning (as a dict of the pairs would).
        if k == "traceparent":
            tp_in = v
        elif k == "x-request-id":
            rid_in = v
    tp = parse_traceparent(tp_in) or new_traceparent()
    rid = str(rid_in or "")[:64] or tp[36:52]
    if not _RID.fullmatch(rid):
        rid = tp[36:52]
    return _trace.set(tp), _request.set(rid)


def end_call(tokens: tuple[contextvars.Token, contextvars.Token]) -> None:
    _trace.reset(tokens[0])
    _request.reset(tokens[1])


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request.get()
        record.traceparent = _trace.get()
        return True


_EXTRA = ("method", "peer", "code", "reason", "ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # record.created is set by logging itself when the record is made.
        doc: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": record.name,
            "msg": record.getMessage(),
        }
        for k in ("request_id", "traceparent", *_EXTRA):
            v = getattr(record, k, None)
            if v is not None:
                doc[k] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure(level: str = "warning", fmt: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """The root logger at ``level`` (debug, info, warning, error) writing ``fmt`` (json or text)."""
    lv = getattr(logging, level.upper(), None)
    if not isinstance(lv, int):
        raise ValueError(f"log level: got {level!r}, want debug, info, warning or error")
    handler: logging.Handler = logging.StreamHandler(stream)
    handler.addFilter(_Context())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lv)
    return handler
