"""The gRPC server factory: mutual TLS, health checking, reflection, role-based services.

``build_server(rt)`` binds the configured address (tests pass ``listen="127.0.0.1:0"``)
and returns a :class:`NodeServer` that knows its port. ``serve(config)`` is what
``hedui node serve`` runs: start, wait for SIGTERM/SIGINT, stop gracefully.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hedui.node.config import NodeConfig
from hedui.node.errors import ConfigError, Reason
from hedui.node.loops import PeriodicJob
from hedui.node.ops_http import ops_app
from hedui.node.readiness import Readiness
from hedui.node.refusals import RefusalFlusher
from hedui.node.runtime import Runtime
from hedui.node.transport import CoreLogTap, GuardWatch, TransportRefusals
from hedui.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    lookup_pb2,
    lookup_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    notice_pb2,
    notice_pb2_grpc,
    pseudonym_pb2,
    pseudonym_pb2_grpc,
)

__all__ = ["NodeServer", "apply_process_settings", "build_server", "server_options"]

log = logging.getLogger("hedui.node.server")

# No SO_REUSEPORT: a second node on the same port must fail loudly, not share it.
_BASE_OPTIONS = [
    ("grpc.so_reuseport", 0),
    # Twice what a method reads (node/transport.py MAX_REQUEST_BYTES): a larger message than
    # that is refused by the node itself, counted and audited with its peer.
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def core_limit(cap: int) -> int:
    """Calls gRPC itself lets into the node: the cap plus as many again for refusals."""
    return cap + max(4, cap)


def server_options() -> list[tuple[str, int]]:
    return list(_BASE_OPTIONS)


@dataclass
class NodeServer:
    rt: Runtime
    server: grpc.Server
    port: int
    health: health.HealthServicer
    background: list = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    readiness: Readiness | None = None
    #: Pulls newer signed directories while running (node/directory_live.py), when configured.
    puller: Any = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    #: The unix socket of a front's worker (node/front/), else None.
    front_socket: str | None = None

    @property
    def address(self) -> str:
        if self.front_socket is not None:
            return f"unix:{self.front_socket}"
        host = self.rt.config.node.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def start(self) -> NodeServer:
        self.server.start()
        for b in self.background:
            b.start()
        # Health follows the serving guard: NOT_SERVING for every service while the directory
        # is expired or superseded (node/guard.py), SERVING again once it is not.
        self.rt.guard.on_change(self._health_follows)
        log.info("node %s serving on %s (directory v%d)", self.rt.member, self.address, self.rt.directory.version)
        return self

    def _health_follows(self, refusing: Reason | None) -> None:
        if self._stopped.is_set():
            return
        if self.readiness is None or refusing is not None:
            status = health_pb2.HealthCheckResponse.SERVING if refusing is None else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ["", *self.services]:
                self.health.set(name, status)
            return
        self.refresh_health()

    def refresh_health(self) -> None:
        """gRPC health per service from the readiness checks (node/readiness.py): the same
        answer ``/readyz`` gives, per service (index-backed services also need the index)."""
        if self._stopped.is_set() or self.readiness is None:
            return
        for name, ok in self.readiness.by_service(self.services).items():
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING)

    def stop(self, grace: float = 5.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        for b in reversed(self.background):
            try:
                b.stop()
            except Exception:  # keep stopping the rest
                log.exception("stopping %s", b)
        self.server.stop(grace).wait(grace + 1)
        self.rt.close()
        log.info("node %s stopped", self.rt.member)

    def wait(self) -> None:
        self._stopped.wait()


def add_port(server: grpc.Server, listen: str, creds: grpc.ServerCredentials | None) -> int:
    """Binds ``listen`` (with ``creds``, or without TLS for a worker's unix socket); the
    bound port, 0 when it cannot bind (gRPC raises or returns 0, by version and cause)."""
    try:
        return server.add_secure_port(listen, creds) if creds is not None else server.add_insecure_port(listen)
    except RuntimeError:
        return 0


def build_server(rt: Runtime, *, listen: str | None = None, extra: Callable | None = None,
                 front_socket: str | None = None) -> NodeServer:
    """Builds (does not start) the server for ``rt``'s roles, bound with mTLS — or, for a worker
    process of a front (node/front/), ``front_socket``: a unix socket path in the front's
    private folder, without TLS, and no TCP port at all (the front ended TLS and passes the
    verified peer certificate on, node/peer.py)."""
    listen = listen or rt.config.node.listen
    # Threads beyond the call cap (node/admission.py) are what refuses the excess at once:
    # with only as many threads as admitted calls, a refusal would queue behind them.
    threads = core_limit(rt.admission.cap)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"rpc-{rt.member}"),
        options=server_options(),
        interceptors=[TransportRefusals(rt)],
        # The first line of shedding: beyond this many calls in the node (admitted or waiting
        # for a thread), gRPC refuses at once in its polling thread, before any handler thread
        # (RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!", which hedui.node.errors
        # decodes as OVERLOADED). Below it node/admission.py refuses a caller beyond its share
        # with the reason itself; the headroom leaves room for those refusals.
        maximum_concurrent_rpcs=core_limit(rt.admission.cap),
    )
    names = [node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name]
    from hedui.node.node_service import NodeServicer

    node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(rt), server)
    from hedui.node.audit.service import AuditServicer

    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(rt), server)
    names.append(audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name)
    background: list = []
    if rt.provider is not None:
        # Lookups need an OPRF key and a field catalogue; a department that only pushes
        # notices (fire, traffic police) runs without them (rt.provider is None).
        from hedui.node.verification.service import LookupServicer, PseudonymServicer

        pseudonym_pb2_grpc.add_PseudonymServiceServicer_to_server(PseudonymServicer(rt), server)
        lookup_pb2_grpc.add_LookupServiceServicer_to_server(LookupServicer(rt), server)
        names += [
            pseudonym_pb2.DESCRIPTOR.services_by_name["PseudonymService"].full_name,
            lookup_pb2.DESCRIPTOR.services_by_name["LookupService"].full_name,
        ]
    if rt.notices is not None:
        from hedui.node.discovery.provider import provider_background

        # Shared state of the department: one node replica at a time (node/loops.py).
        background += [job.exclusive_on(rt.engine) for job in provider_background(rt)]
    if "hub" in rt.config.node.roles:
        from hedui.node.discovery.referrals import hub_background
        from hedui.node.discovery.service import NoticeServicer

        notice_pb2_grpc.add_NoticeServiceServicer_to_server(NoticeServicer(rt), server)
        names.append(notice_pb2.DESCRIPTOR.services_by_name["NoticeService"].full_name)
        background += [job.exclusive_on(rt.engine) for job in hub_background(rt)]
    # Started after and stopped before the audit jobs, so the last flush of aggregated
    # refusals is covered by the final checkpoint.
    background += _audit_background(rt)
    background += [RefusalFlusher(rt.refusals), GuardWatch(rt)]
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    for n in names:
        hs.set(n, health_pb2.HealthCheckResponse.SERVING)
    services = list(names)
    names += [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    if extra is not None:
        extra(server)

    creds = grpc.ssl_server_credentials(
        [(rt.tls_key_pem, rt.tls_cert_pem)],
        root_certificates=rt.ca_pem,
        require_client_auth=True,
    )
    if front_socket is not None:
        listen = f"unix:{front_socket}"
    port = add_port(server, listen, None if front_socket is not None else creds)
    if port == 0:
        rt.close()
        raise ConfigError(f"node.listen: cannot bind {listen} (port already in use or address not local)", reason=Reason.BIND_FAILED)
    readiness = Readiness(rt)
    if rt.config.metrics.listen:
        try:
            rt.metrics.serve(rt.config.metrics.listen, ops_app(rt.metrics, readiness))
        except OSError as exc:
            server.stop(0)
            rt.close()
            raise ConfigError(f"metrics.listen: cannot bind {rt.config.metrics.listen} ({exc.strerror})", reason=Reason.BIND_FAILED) from None
        background.append(_Stopper(rt.metrics.stop))
    ns = NodeServer(rt=rt, server=server, port=port, health=hs, background=background, services=services,
                    readiness=readiness, front_socket=front_socket)
    ns.background.append(_HealthWatch(ns))
    if rt.config.directory.sources:
        from hedui.node.directory_live import DirectoryPuller

        ns.puller = DirectoryPuller(rt)
        ns.puller.on_applied(lambda _td: ns.refresh_health())
        ns.background.append(ns.puller)
        readiness.pull_state = ns.puller.state
    return ns


class _HealthWatch(PeriodicJob):
    """Re-evaluates readiness every few seconds so gRPC health follows the index and the store
    even when no call arrives (the guard alone only sees the directory)."""

    def __init__(self, ns: NodeServer, *, interval: float = 5.0) -> None:
        super().__init__("health-watch", interval=interval)
        self._ns = ns

    def step(self) -> float | None:
        self._ns.refresh_health()
        return None


class _Stopper:
    def __init__(self, fn: Callable) -> None:
        self._fn = fn

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self._fn()


def _audit_background(rt: Runtime) -> list:
    return [rt.audit.scheduler, rt.audit.cosigner]


def apply_process_settings(config: NodeConfig) -> None:
    """Process-wide settings of a serving node (not of :func:`build_server`, which tests call
    several times in one process): the GIL switch interval (``[node] switch_interval_ms``)."""
    sys.setswitchinterval(config.node.switch_interval_ms / 1000)


def serve(config_path) -> None:
    """Runs a node until SIGTERM or SIGINT, then stops gracefully: one process, or with
    ``[node] worker_processes`` a front and its worker processes (node/front/)."""
    from hedui.node.config import load_config

    if load_config(config_path).node.worker_processes:
        from hedui.common.clock import SystemClock
        from hedui.node.front.proxy import serve_front

        serve_front(config_path, clock=SystemClock())
        return
    rt = Runtime.open(config_path)
    apply_process_settings(rt.config)
    # TLS handshake refusals (no client certificate, a foreign CA) never reach Python; gRPC
    # core logs them on stderr, where this process counts them (node/transport.py).
    tap = CoreLogTap(rt.refusals.count)
    tap.install()
    try:
        ns = build_server(rt)
    except BaseException:
        tap.uninstall()   # the one-line error that follows must reach the terminal
        raise
    ns.start()

    def _on_signal(signum, _frame) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        threading.Thread(target=ns.stop, name="stopper").start()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"hedui node {rt.member} serving on {ns.address}", flush=True)
    ns.wait()
    # Let the stopping thread finish closing the store before the process exits.
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join(timeout=10)
