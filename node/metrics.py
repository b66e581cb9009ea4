"""Prometheus metrics of one node (own registry, so several nodes can share a process).

Labels are method names, peers' member codes and status codes only: never tokens, case
references or identities.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

__all__ = ["Metrics", "FrontMetrics", "NodeRegistry", "serve_wsgi", "outcome_class", "OUTCOMES"]

#: Outcome classes of an RPC (issue 17 item 3, per-peer success rate = ok / all): a handful of
#: fixed values, so the label set stays small and never carries anything from a request.
OUTCOMES = ("ok", "refused", "busy", "unavailable", "error", "cancelled")

_CLASS = {
    "OK": "ok",
    "CANCELLED": "cancelled",
    # Shed at capacity or over a rate limit: the peer is up but did not do the work.
    "RESOURCE_EXHAUSTED": "busy",
    # Not reached, timed out, or refusing everything (expired directory, maintenance).
    "UNAVAILABLE": "unavailable",
    "DEADLINE_EXCEEDED": "unavailable",
    # A bug or a broken peer, not a decision.
    "INTERNAL": "error",
    "UNKNOWN": "error",
    "DATA_LOSS": "error",
    "UNIMPLEMENTED": "error",
}


def outcome_class(code_name: str) -> str:
    """The outcome class of a gRPC status code name: every other code (PERMISSION_DENIED,
    INVALID_ARGUMENT, FAILED_PRECONDITION, UNAUTHENTICATED, ...) is a decision: ``refused``."""
    return _CLASS.get(code_name, "refused")


class NodeRegistry(CollectorRegistry):
    """A node's registry that tells its two kinds of figures apart, for a front of several
    worker processes (node/front/ops.py): the *process* metrics — counters, histograms and
    gauges this process keeps (calls, latency, refusals, in flight) — and the *state* read at
    scrape time by custom collectors (node/metrics_node.py: the directory, the store, the
    certificate), which every worker of one node reads alike from the shared store."""

    def __init__(self) -> None:
        super().__init__()
        self._state: list[Collector] = []
        self._process: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        (self._process if isinstance(collector, MetricWrapperBase) else self._state).append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        for kind in (self._state, self._process):
            if collector in kind:
                kind.remove(collector)

    def part(self, state: bool) -> Collector:
        """An object to pass to ``generate_latest``: the state collectors or the process metrics."""
        return _Part(list(self._state if state else self._process))


class _Part(Collector):
    def __init__(self, collectors: list[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterable[Any]:
        for c in self._collectors:
            yield from c.collect()


# The families a front counts itself (node/front/ops.py) share these definitions with a node's.
def _calls(reg: CollectorRegistry) -> Counter:
    return Counter("hedui_rpc_total", "RPCs served, by method and outcome", ["method", "code"], registry=reg)


def _outcomes(reg: CollectorRegistry) -> Counter:
    return Counter("hedui_rpc_outcomes_total", "RPCs by side, method, peer member code and outcome class",
                   ["side", "method", "peer", "outcome"], registry=reg)


def _refusals(reg: CollectorRegistry) -> Counter:
    return Counter("hedui_refusals_total", "Calls refused, by reason", ["reason"], registry=reg)


def _shed(reg: CollectorRegistry) -> Counter:
    return Counter("hedui_rpc_shed_total", "RPCs refused at once because the node was at capacity, by caller",
                   ["peer"], registry=reg)


class _Children:
    """``child(metric, *values)``: ``metric.labels(*values)``, cached (issue 16 item 3: every
    rpc asked for three or four children, each a validation and a lock in prometheus_client).
    Children are never removed from these metrics, and a race only looks the same child up
    twice."""

    _children: dict[tuple, Any]

    def child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        got = self._children.get(key)
        if got is None:
            got = self._children[key] = metric.labels(*values)
        return got


class FrontMetrics(_Children):
    """What the front of a node of several processes counts itself: the calls it refuses at
    once (over the cap or a caller's share), as one process counts them in node/rpc.py."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = _calls(self.registry)
        self.outcomes = _outcomes(self.registry)
        self.refusals = _refusals(self.registry)
        self.shed = _shed(self.registry)
        self._children: dict[tuple, Any] = {}

    def refused(self, method: str, caller: str, code: str, reason: str) -> None:
        for metric, values in ((self.calls, (method, code)), (self.outcomes, ("served", method, caller, outcome_class(code))),
                               (self.refusals, (reason,))):
            self.child(metric, *values).inc()
        if reason == "OVERLOADED":
            self.child(self.shed, caller).inc()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve_wsgi(hostport: str, app: Any) -> WSGIServer:
    """Serves ``app`` on ``host:port`` in a daemon thread (``server_port``: the bound port);
    raises OSError when it cannot bind."""
    host, _, port = hostport.rpartition(":")
    server = make_server(host, int(port), app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server


class Metrics(_Children):
    def __init__(self) -> None:
        self.registry = NodeRegistry()
        self.calls = _calls(self.registry)
        # Per-peer success rate (issue 17 item 3): every RPC's outcome class, by side ("served":
        # a peer called this node, peer = the caller; "called": this node called the peer), method
        # and the peer's member code. Success rate = ok / all, per peer and method.
        self.outcomes = _outcomes(self.registry)
        self.latency = Histogram("hedui_rpc_seconds", "RPC handling time, by method and calling member",
                                 ["method", "peer"], registry=self.registry)
        # Every refusal with its stable reason (hedui.node.errors.Reason), whatever the method.
        self.refusals = _refusals(self.registry)
        # Directories pulled from a source and refused (node/directory_live.py), by reason.
        self.directory_refused = Counter("hedui_directory_refused_total", "Fetched directories refused, by reason",
                                         ["reason"], registry=self.registry)
        self.directory_fetch_failures = Gauge("hedui_directory_fetch_failures",
                                              "Consecutive failed pulls of the directory (0: the last one worked)",
                                              registry=self.registry)
        self.audit_size = Gauge("hedui_audit_tree_size", "Entries in the audit log", registry=self.registry)
        self.outbox_pending = Gauge("hedui_outbox_pending", "Notices waiting to be pushed", registry=self.registry)
        self.in_flight = Gauge("hedui_rpc_in_flight", "RPCs being handled now", registry=self.registry)
        self.shed = _shed(self.registry)
        self.directory_refusing = Gauge("hedui_directory_refusing", "1 while the node refuses every call, by reason",
                                        ["reason"], registry=self.registry)
        self.transport_refusals = Counter("hedui_transport_refusals_total",
                                          "Connections or calls refused below the application, by cause",
                                          ["cause"], registry=self.registry)
        self._server: WSGIServer | None = None
        # Issue 16: where lookups read the token index ("replica", or "primary" with the reason).
        self.index_reads = Counter("hedui_index_reads_total", "Token-index reads of lookups, by store and reason",
                                   ["store", "reason"], registry=self.registry)
        self.port = 0
        self._children: dict[tuple, Any] = {}

    def serve(self, hostport: str, app=None) -> int:
        """Serves ``app`` (default: the registry alone) on the ops port; the bound port."""
        self._server = serve_wsgi(hostport, app or make_wsgi_app(self.registry))
        self.port = self._server.server_port
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
