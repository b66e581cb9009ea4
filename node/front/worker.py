"""A worker process of a front (node/front/proxy.py): a full node of the same ``node.toml``,
serving on a unix socket in the front's private folder instead of a TCP port.

It is started by the front with :mod:`hedui.node.procs`'s spawn context (it does not re-run
the front's ``__main__``), dies with the front (``PR_SET_PDEATHSIG`` and a watchdog,
:func:`hedui.node.procs.die_with_parent`), ignores SIGINT (a Ctrl-C reaches the whole process
group: the front decides when its workers stop, by SIGTERM) and trusts the caller identity
the front forwards in metadata — only on that unix socket (node/peer.py ``trust_front``).

Besides the node's services it serves one internal method the front calls: the refusals the
front counted (it has no store), merged into this node's aggregated refusals and metrics
(node/refusals.py), so they are audited as before. The method is reachable only on the unix
socket: the front's method table (node/front/proxy.py) does not forward it.
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

__all__ = ["run", "REFUSALS_METHOD"]

log = logging.getLogger("hedui.node.front.worker")

#: The internal method a worker serves on its unix socket (never forwarded from outside).
REFUSALS_METHOD = "/hedui.front.Internal/Refusals"


def _merge_refusals(rt: Runtime) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    def merge(request: bytes, context: grpc.ServicerContext) -> bytes:
        m = rt.metrics
        for item in json.loads(request):
            cause, peer, n = str(item["cause"]), str(item["peer"]), int(item["count"])
            first, last = dt.datetime.fromisoformat(item["first"]), dt.datetime.fromisoformat(item["last"])
            rt.refusals.merge(cause, peer, n, first, last)
            if cause == "overloaded":   # what node/rpc.py counts for a call it sheds itself
                m.child(m.refusals, "OVERLOADED").inc(n)
                m.child(m.shed, peer).inc(n)
                if item.get("method"):
                    m.child(m.calls, str(item["method"]), "RESOURCE_EXHAUSTED").inc(n)
        return b""

    return merge


def _internal(rt: Runtime) -> Callable[[grpc.Server], None]:
    def add(server: grpc.Server) -> None:
        service, _, method = REFUSALS_METHOD.lstrip("/").partition("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            service, {method: grpc.unary_unary_rpc_method_handler(_merge_refusals(rt))}),))

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
        if index > 0:
            cfg.metrics.listen = None   # one Prometheus endpoint per node: the first worker's
        rt = Runtime.from_config(cfg)
        apply_process_settings(cfg)
        ns = build_server(rt, front_socket=socket_path, extra=_internal(rt))
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
