"""A worker process of a front (node/front/proxy.py): a full node of the same ``node.toml``,
serving on a unix socket in the front's private folder instead of a TCP port.

It is started by the front with :mod:`hedui.node.procs`'s spawn context (it does not re-run
the front's ``__main__``), dies with the front (``PR_SET_PDEATHSIG`` and a watchdog,
:func:`hedui.node.procs.die_with_parent`), ignores SIGINT (a Ctrl-C reaches the whole process
group: the front decides when its workers stop, by SIGTERM) and trusts the caller identity
the front forwards in metadata — only on that unix socket (node/peer.py ``trust_front``).

Besides the node's services it serves internal methods the front calls: the refusals the
front counted (it has no store), merged into this node's aggregated refusals (node/refusals.py),
so they are audited as before; this worker's metrics and readiness, which the front serves on
the node's ops port (``[metrics] listen``, node/front/ops.py). They are reachable only on the
unix socket: the front's method table (node/front/proxy.py) does not forward them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["run", "REFUSALS_METHOD", "METRICS_METHOD", "READY_METHOD"]

log = logging.getLogger("hedui.node.front.worker")

#: The internal method a worker serves on its unix socket (never forwarded from outside).
REFUSALS_METHOD = "/hedui.front.Internal/Refusals"
#: This worker's Prometheus exposition: JSON ``{"process": text, "state": text or null}``
#: (the request ``b"state"`` asks for the state read from the store too, node/metrics.py).
METRICS_METHOD = "/hedui.front.Internal/Metrics"
#: This worker's ``/readyz`` answer: JSON ``{"ok": bool, "body": {...}}`` (node/ops_http.py).
READY_METHOD = "/hedui.front.Internal/Ready"


def _merge_refusals(rt: Runtime) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    def merge(request: bytes, context: grpc.ServicerContext) -> bytes:
        for item in json.loads(request):
            cause, peer, n = str(item["cause"]), str(item["peer"]), int(item["count"])
            first, last = dt.datetime.fromisoformat(item["first"]), dt.datetime.fromisoformat(item["last"])
            # Audited here; the front counted them in its own metrics when it refused them.
            rt.refusals.merge(cause, peer, n, first, last)
        return b""

    return merge


def _metrics(rt: Runtime) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    from prometheus_client import generate_latest

    from hedui.node.metrics import NodeRegistry

    def expose(request: bytes, context: grpc.ServicerContext) -> bytes:
        reg = rt.metrics.registry
        assert isinstance(reg, NodeRegistry)
        state = generate_latest(reg.part(True)).decode() if request == b"state" else None
        return json.dumps({"process": generate_latest(reg.part(False)).decode(), "state": state}).encode()

    return expose


def _ready(held: dict[str, Any]) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    from hedui.node.ops_http import readyz

    def ready(request: bytes, context: grpc.ServicerContext) -> bytes:
        ns = held.get("ns")
        if ns is None or ns.readiness is None:
            return json.dumps({"ok": False, "body": {"status": "not ready", "checks": {}}}).encode()
        ok, body = readyz(ns.readiness)
        return json.dumps({"ok": ok, "body": body}).encode()

    return ready


def _internal(rt: Runtime, held: dict[str, Any]) -> Callable[[grpc.Server], None]:
    def add(server: grpc.Server) -> None:
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for path, fn in ((REFUSALS_METHOD, _merge_refusals(rt)), (METRICS_METHOD, _metrics(rt)), (READY_METHOD, _ready(held))):
            service, _, method = path.lstrip("/").partition("/")
            handlers[method] = grpc.unary_unary_rpc_method_handler(fn)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))

    return add


def run(index: int, config_path: str, socket_path: str, passphrase_env: str, passphrase: bytes, parent: int,
        conn: Connection, logs: tuple[str, str] = ("warning", "json"), hook: Callable[[int], Any] | None = None) -> None:
    """The worker's main: open the node, serve on ``socket_path``, tell the front
    (``("ready", pid)`` or ``("error", message)`` on ``conn``), stop when the front says so
    (or closes ``conn``)."""
    from hedui.node.procs import die_with_parent

    die_with_parent(parent)
    # A Ctrl-C or a service manager's SIGTERM reaches the whole process group; the front
    # decides when its workers stop (after it stopped taking calls and handed over its
    # refusals), and tells them on ``conn``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from hedui.adapters.idnum import install_log_guard
    from hedui.node.logs import configure

    configure(*logs)   # the front's level and format (node/cli/_app.py)
    install_log_guard()
    if hook is not None:   # benchmarks only (bench/_node_timeline.py): per-call stamps in the worker
        hook(index)
    from hedui.keys.passphrase import provide
    from hedui.node.config import load_config
    from hedui.node.errors import HeduiError
    from hedui.node.peer import trust_front
    from hedui.node.runtime import Runtime
    from hedui.node.server import apply_process_settings, build_server

    provide(passphrase, env=passphrase_env)
    trust_front()
    try:
        cfg = load_config(Path(config_path))
        cfg.metrics.listen = None   # the front serves the ops port, from every worker (node/front/ops.py)
        rt = Runtime.from_config(cfg)
        apply_process_settings(cfg)
        held: dict[str, Any] = {}
        ns = held["ns"] = build_server(rt, front_socket=socket_path, extra=_internal(rt, held))
    except HeduiError as exc:
        conn.send(("error", exc.message))
        os._exit(2)
    except BaseException as exc:
        conn.send(("error", f"worker {index}: {type(exc).__name__}"))
        raise
    ns.start()

    def _until_told() -> None:
        try:
            conn.recv()   # ("stop",) from the front; EOF if it went away
        except (EOFError, OSError):
            pass
        log.info("worker %d: stopping", index)
        ns.stop()

    watch = threading.Thread(target=_until_told, name="front-watch", daemon=True)
    watch.start()
    conn.send(("ready", os.getpid()))
    ns.wait()
    watch.join(timeout=60)   # ns.stop() runs there: let it finish (last flush, final checkpoint)
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join(timeout=10)
