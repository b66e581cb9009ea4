"""The ops port (``[metrics] listen``) of a node of several processes, served by the front:
``/metrics`` shows every worker's figures and the front's own, ``/readyz`` asks the workers,
``/healthz`` answers while the front does (node/ops_http.py for one process).

How the figures of N processes are shown — each worker's *process* metrics (calls, outcomes,
latency, refusals, in flight: node/metrics.py ``NodeRegistry``) with a ``worker="i"`` label,
the front's own refusals with ``worker="front"``, and the *state* read from the shared store
(directory, index, audit checkpoints, certificate: node/metrics_node.py) once, from the first
worker that answers, without that label:

- A label, not a sum: a worker that restarts starts its counters at 0. As its own series,
  that is a counter reset ``rate()`` and ``increase()`` handle; summed with the others it
  would be a drop of part of the total, which ``rate()`` reads as a reset of the whole and
  over-counts. It is what Prometheus users get from several processes scraped apart
  (``sum without (worker) (rate(hedui_rpc_total[5m]))`` is the node's rate).
- The state once: every worker reads the same store; N copies would count the outbox, the
  index rows, the audit tree N times in any ``sum``.
- prometheus_client's multiprocess mode does not fit: it is per *process* (one directory in
  an environment variable before the library is imported, files named by metric), while a
  Hedui node keeps its own registry so that several nodes share a process (tests, the demo);
  it does not support custom collectors (the state) and keeps a dead process's figures only
  by leaving files behind.

Each worker answers on its unix socket, through an internal method (node/front/worker.py
``METRICS_METHOD``); a worker that does not answer within the timeout (down, restarting) is
``hedui_worker_up{worker="i"} 0`` in that scrape, its series missing until it is back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from hedui.node.front.worker import METRICS_METHOD, READY_METHOD
from hedui.node.metrics import FrontMetrics
from hedui.node.ops_http import send

__all__ = ["NodeFigures", "front_ops_app"]

log = logging.getLogger("hedui.node.front.ops")


class NodeFigures(Collector):
    """Every worker's exposition and the front's, merged family by family at scrape time."""

    def __init__(self, own: FrontMetrics, slots: list[Any], timeout: float = 5.0) -> None:
        self._own = own
        self._slots = slots
        self._timeout = timeout

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}

        def add(text: str, worker: str | None) -> None:
            for fam in text_string_to_metric_families(text):
                into = merged.get(fam.name)
                if into is None:
                    into = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                extra = {} if worker is None else {"worker": worker}
                into.samples.extend(s._replace(labels={**s.labels, **extra}) for s in fam.samples)

        up = GaugeMetricFamily("hedui_worker_up", "1 when the worker process answered this scrape", labels=["worker"])
        state = False
        for w in sorted(self._slots, key=lambda s: s.index):
            channel = w.channel
            got = None
            if w.ready and channel is not None:
                try:
                    ask: Any = channel.unary_unary(METRICS_METHOD)
                    got = json.loads(ask(b"" if state else b"state", timeout=self._timeout))
                except grpc.RpcError as err:
                    log.warning("metrics: worker %d did not answer (%s)", w.index, err.code().name)
                except ValueError:   # the watch closed its channel meanwhile: the worker died
                    log.warning("metrics: worker %d did not answer (it ended)", w.index)
            up.add_metric([str(w.index)], 0 if got is None else 1)
            if got is None:
                continue
            add(got["process"], str(w.index))
            if got["state"] is not None:
                add(got["state"], None)
                state = True
        add(generate_latest(self._own.registry).decode(), "front")
        yield from merged.values()
        yield up


def _ready(slots: list[Any], timeout: float) -> tuple[bool, dict[str, Any]]:
    """Ready when a worker is (the front routes calls to ready workers only); the body is that
    worker's (or the first that answered), with each worker's state under ``workers``."""
    states: dict[str, str] = {}
    chosen: dict[str, Any] | None = None
    ok = False
    for w in sorted(slots, key=lambda s: s.index):
        channel = w.channel
        if not w.ready or channel is None:
            states[str(w.index)] = "not up"
            continue
        try:
            ask: Any = channel.unary_unary(READY_METHOD)
            got = json.loads(ask(b"", timeout=timeout))
        except (grpc.RpcError, ValueError):   # ValueError: its channel was closed meanwhile (the worker died)
            states[str(w.index)] = "not answering"
            continue
        states[str(w.index)] = "ready" if got["ok"] else "not ready"
        if chosen is None or (got["ok"] and not ok):
            chosen, ok = got["body"], bool(got["ok"])
    body = chosen if chosen is not None else {
        "status": "not ready", "checks": {"workers": {"ok": False, "detail": "no worker process answered"}}}
    body["workers"] = states
    return ok, body


def front_ops_app(figures: NodeFigures, slots: list[Any], timeout: float = 5.0) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            data = generate_latest(figures)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(data)))])
            return [data]
        if path == "/healthz":
            return send(start_response, 200, {"status": "ok"})
        if path == "/readyz":
            ok, body = _ready(slots, timeout)
            return send(start_response, 200 if ok else 503, body)
        return send(start_response, 404, {"status": "not found", "paths": ["/healthz", "/readyz", "/metrics"]})

    return app
