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

A node of several processes (``[node] worker_processes``, node/front/): ``seen`` is stamped by
the front when it looks up the call's handler (``Front.service``: where it takes the call),
``enter`` / ``admit`` / ``leave`` / ``deadline`` by the worker that ran it (each worker dumps
its stamps to ``$HEDUI_BENCH_TIMELINE.w<index>``; :func:`load` merges them).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
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


def _dump_worker(index: int) -> None:
    with open(f"{os.environ['HEDUI_BENCH_TIMELINE']}.w{index}", "w") as f:
        json.dump(_stamps, f)


def install_worker(index: int) -> None:
    """In a front's worker process (node/front/worker.py ``hook``): stamp enter/admit/leave."""
    rpc._serving = _timed  # type: ignore[assignment]
    atexit.register(_dump_worker, index)


def _front_service(orig):
    def service(self, details):
        bid = _tag(details.invocation_metadata)
        if bid is not None:
            _stamps.append((bid, "seen", time.monotonic()))
        return orig(self, details)

    return service


def load(path: str) -> dict[str, dict[str, float]]:
    """The dumped stamps by call tag: ``{tag: {"seen": t, "enter": t, ...}}`` (a front's and
    its workers' files merged; the files are removed)."""
    out: dict[str, dict[str, float]] = {}
    for name in [path, *sorted(glob.glob(glob.escape(path) + ".w*"))]:
        if not os.path.exists(name):
            continue
        with open(name) as f:
            for bid, kind, t in json.load(f):
                out.setdefault(bid, {})[kind] = t
        if name != path:
            os.unlink(name)
    return out


if __name__ == "__main__":
    transport.TransportRefusals.intercept_service = _seen  # type: ignore[method-assign]
    rpc._serving = _timed  # type: ignore[assignment]  # looked up per call by rpc_method's wrapper
    atexit.register(_dump)
    try:
        import _node_timeline as _importable  # by name, so a worker can unpickle its hook

        from hedui.node.front import proxy
    except ImportError:   # a base without node/front/
        pass
    else:
        proxy.Front.service = _front_service(proxy.Front.service)  # type: ignore[method-assign]
        _init = proxy._Workers.__init__

        def _workers_init(self, *a, **k) -> None:
            _init(self, *a, **k)
            self._hook = _importable.install_worker

        proxy._Workers.__init__ = _workers_init  # type: ignore[method-assign]
    from hedui.node.cli import main

    main()
