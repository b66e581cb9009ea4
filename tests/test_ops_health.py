"""Issue 17 item 2: /healthz, /readyz and 404 on the ops port; gRPC health per service
following the same checks (directory, store, clock, index)."""

from __future__ import annotations

import datetime as _dt
import json
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hedui.common.clock import FixedClock
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import channel_credentials
from hedui.node.testbed import MemberPlan, Testbed

NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def bed(tmp_path, monkeypatch):
    ops = {"metrics": {"listen": "127.0.0.1:0"}}
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"], extra_config=ops),
                                    MemberPlan("tax", "tax", ["provider"], extra_config=ops)],
                 clock=FixedClock(NOW), residents=40)
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    yield tb
    tb.stop()


def _get(bed, code: str, path: str) -> tuple[int, dict | str]:
    url = f"http://127.0.0.1:{bed.runtime(code).metrics.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
            return r.status, (json.loads(body) if r.headers.get("Content-Type") == "application/json" else body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def _health(bed, code: str, service: str) -> int:
    rt = bed.runtime(code)
    ch = grpc.secure_channel(f"127.0.0.1:{bed.servers[code].port}", channel_credentials(rt.ca_pem, rt.tls_cert_pem, rt.tls_key_pem))
    try:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    finally:
        ch.close()


def test_healthz_metrics_and_unknown_paths(bed):
    bed.start(["hub"])
    assert _get(bed, "hub", "/healthz") == (200, {"status": "ok"})
    code, body = _get(bed, "hub", "/metrics")
    assert code == 200 and "hedui_rpc_total" in body
    for p in ("/", "/health", "/readyz/x", "/metrics/../x"):
        assert _get(bed, "hub", p)[0] == 404, p


def test_readyz_follows_the_index_and_the_directory(bed):
    bed.start(["tax"])
    code, body = _get(bed, "tax", "/readyz")
    assert code == 503
    assert body["checks"]["index"]["ok"] is False and body["checks"]["directory"]["ok"] is True
    assert body["checks"]["store"]["ok"] is True and body["checks"]["clock"]["ok"] is True
    # gRPC health per service: the index-backed ones are not serving, the rest are.
    assert _health(bed, "tax", "hedui.v1.LookupService") == NOT_SERVING
    assert _health(bed, "tax", "hedui.v1.PseudonymService") == NOT_SERVING
    assert _health(bed, "tax", "hedui.v1.NodeService") == SERVING
    assert _health(bed, "tax", "") == NOT_SERVING
    bed.build_indexes(["tax"])
    assert _get(bed, "tax", "/readyz")[0] == 200
    bed.servers["tax"].refresh_health()   # what the health watch does every few seconds
    assert _health(bed, "tax", "hedui.v1.LookupService") == SERVING and _health(bed, "tax", "") == SERVING
    # Past the directory's expiry everything is not ready.
    bed.clock.set(bed.runtime("tax").directory.expires_at + _dt.timedelta(seconds=1))
    code, body = _get(bed, "tax", "/readyz")
    assert code == 503 and body["checks"]["directory"] == {"ok": False, "detail": "DIRECTORY_EXPIRED"}
    assert _health(bed, "tax", "hedui.v1.NodeService") == NOT_SERVING


def test_readyz_refuses_a_clock_behind_the_directory(bed):
    bed.start(["hub"])
    assert _get(bed, "hub", "/readyz")[0] == 200
    bed.clock.set(NOW - _dt.timedelta(hours=1))
    code, body = _get(bed, "hub", "/readyz")
    assert code == 503 and body["checks"]["clock"]["ok"] is False


def test_readyz_reports_a_store_that_went_away(bed, monkeypatch):
    bed.start(["hub"])
    rt = bed.runtime("hub")

    def down(*a, **k):
        raise ConnectionRefusedError("store down")

    monkeypatch.setattr(rt.engine, "connect", down)
    code, body = _get(bed, "hub", "/readyz")
    assert code == 503 and body["checks"]["store"] == {"ok": False, "detail": "ConnectionRefusedError"}
    monkeypatch.undo()
    assert _get(bed, "hub", "/readyz")[0] == 200
