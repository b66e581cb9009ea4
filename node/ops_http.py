"""The ops port (``[metrics] listen``): plain HTTP for probes and Prometheus (issue 17 item 2).

- ``/metrics`` — the node's own Prometheus registry;
- ``/healthz`` — 200 while the process answers (liveness: restart it when this fails);
- ``/readyz`` — 200 when every readiness check passes (node/readiness.py), else 503; the body
  is JSON naming each check, so ``curl`` shows which one fails;
- anything else — 404 (issue 17: answering 200 everywhere looked like a health endpoint).

No mutual TLS here: it must be reachable by a load balancer or kubelet; it carries no data
(no token, case reference or identity appears in any metric label or check detail).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import make_wsgi_app

from hedui.node.metrics import Metrics
from hedui.node.readiness import Readiness

__all__ = ["ops_app", "readyz", "send"]


def ops_app(metrics: Metrics, readiness: Readiness) -> Callable[..., Iterable[bytes]]:
    prom = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return prom(environ, start_response)
        if path == "/healthz":
            return send(start_response, 200, {"status": "ok"})
        if path == "/readyz":
            ok, body = readyz(readiness)
            return send(start_response, 200 if ok else 503, body)
        return send(start_response, 404, {"status": "not found", "paths": ["/healthz", "/readyz", "/metrics"]})

    return app


def readyz(readiness: Readiness) -> tuple[bool, dict[str, Any]]:
    """Whether the node is ready, and the JSON body ``/readyz`` answers."""
    ok, checks = readiness.ready()
    body: dict[str, Any] = {"status": "ready" if ok else "not ready",
                            "checks": {k: {"ok": v[0], "detail": v[1]} for k, v in checks.items()}}
    info = readiness.info()
    if info:
        body["info"] = info
    return ok, body


def send(start_response: Callable[..., Any], code: int, body: dict[str, Any]) -> list[bytes]:
    """A JSON answer of the ops port."""
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
    start_response(f"{code} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
