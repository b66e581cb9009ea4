"""``hedui node serve`` with a per-call timeline, for bench_shedding.py only (never in product code).

Runs the node exactly as ``python -m hedui.node.cli node serve ...`` does, after wrapping two
internals so each call tagged with an ``x-bench-id`` metadata entry gets three or four
``time.monotonic()`` stamps: ``seen`` — gRPC's polling thread looked up its handler (the node's
server interceptor, node/transport.py, runs there for every call, refused ones included);
``enter`` / ``admit`` / ``leave`` — the handler thread entered node/rpc.py's ``_serving``, was
admitted (node/admission.py), and left. A call refused by gRPC's own limit (node/server.py
``core_limit``) has ``seen`` only. At exit the stamps go to ``$HEDUI_BENCH_TIMELINE`` as JSON.

``deadline`` is the call's deadline on the same clock, from ``context.time_remaining()`` at
``enter``: gRPC's core sets it when it parsed the call's headers, to that moment plus the
client's timeout (the ``grpc-timeout`` header), so deadline minus the client's timeout is when
the call reached the server's core — before it waited for the polling thread.

CLOCK_MONOTONIC is one clock for every process of the machine (Linux), so the load generator's
send and receive times and the node's stamps compare directly. Cost: a list append per stamp.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from collections.abc import Iterator

from hedui.node import rpc, transport

TAG = "x-bench-id"
_stamps: list[tuple[str, str, float]] = []
_intercept = transport.TransportRefusals.intercept_service
_serving = rpc._serving


def _tag(metadata) -> str | None:
    for k, v in metadata or ():
        if k == TAG:
            return str(v)
    return None


def _seen(self, continuation, details):
    bid = _tag(details.invocation_metadata)
    if bid is not None:
        _stamps.append((bid, "seen", time.monotonic()))
    return _intercept(self, continuation, details)


@contextlib.contextmanager
def _timed(rt, full_name, request, refusal_fields, context) -> Iterator[object]:
    bid = _tag(context.invocation_metadata())
    if bid is None:
        with _serving(rt, full_name, request, refusal_fields, context) as call:
            yield call
        return
    now = time.monotonic()
    _stamps.append((bid, "enter", now))
    remaining = context.time_remaining()
    if remaining is not None:
        _stamps.append((bid, "deadline", now + remaining))
    try:
        with _serving(rt, full_name, request, refusal_fields, context) as call:
            _stamps.append((bid, "admit", time.monotonic()))
            yield call
    finally:
        _stamps.append((bid, "leave", time.monotonic()))


def _dump() -> None:
    with open(os.environ["HEDUI_BENCH_TIMELINE"], "w") as f:
        json.dump(_stamps, f)


def load(path: str) -> dict[str, dict[str, float]]:
    """The dumped stamps by call tag: ``{tag: {"seen": t, "enter": t, ...}}``."""
    with open(path) as f:
        out: dict[str, dict[str, float]] = {}
        for bid, kind, t in json.load(f):
            out.setdefault(bid, {})[kind] = t
        return out


if __name__ == "__main__":
    transport.TransportRefusals.intercept_service = _seen  # type: ignore[method-assign]
    rpc._serving = _timed  # type: ignore[assignment]  # looked up per call by rpc_method's wrapper
    atexit.register(_dump)
    from hedui.node.cli import main

    main()
