"""The node: mutual TLS, directory membership, health, reflection, config errors, bind errors."""

from __future__ import annotations

import datetime as _dt

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hedui.common.clock import FixedClock
from hedui.keys import federation as fed
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import PeerClient, channel_credentials
from hedui.node.config import load_config
from hedui.node.errors import ConfigError
from hedui.node.runtime import Runtime
from hedui.node.server import build_server
from hedui.node.testbed import MemberPlan, Testbed
from hedui.v1 import node_pb2, node_pb2_grpc

# Certificates and directories are issued and checked at a fixed instant, never the wall clock.
NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)


def _plan():
    return [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])]


@pytest.fixture
def fedbed(tmp_path, monkeypatch):
    tb = Testbed(tmp_path / "fed", _plan(), clock=FixedClock(NOW))
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    yield tb
    tb.stop()


def test_ping_both_ways_over_mtls(fedbed):
    fedbed.start()
    with PeerClient.to_member(fedbed.runtime("hub"), "tax") as c:
        r = c.node.Ping(node_pb2.PingRequest(nonce=b"n1"), timeout=10)
    assert (r.member, r.caller, r.nonce, r.directory_version) == ("tax", "hub", b"n1", 1)
    with PeerClient.to_member(fedbed.runtime("tax"), "hub") as c:
        r = c.node.Ping(node_pb2.PingRequest(nonce=b"n2"), timeout=10)
    assert (r.member, r.caller) == ("hub", "tax")


def test_health_and_reflection(fedbed):
    fedbed.build_indexes(["tax"])   # LookupService is ready only with its index (issue 17, node/readiness.py)
    fedbed.start(["tax"])
    rt = fedbed.runtime("tax")
    ch = grpc.secure_channel(f"127.0.0.1:{fedbed.servers['tax'].port}", channel_credentials(rt.ca_pem, rt.tls_cert_pem, rt.tls_key_pem))
    try:
        h = health_pb2_grpc.HealthStub(ch)
        assert h.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        assert h.Check(health_pb2.HealthCheckRequest(service="hedui.v1.LookupService"), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        names = {s.name for s in resp.list_services_response.service}
        assert {"hedui.v1.NodeService", "hedui.v1.PseudonymService", "hedui.v1.LookupService", "hedui.v1.AuditService"} <= names
    finally:
        ch.close()


def test_client_without_certificate_cannot_connect(fedbed):
    fedbed.start(["tax"])
    rt = fedbed.runtime("tax")
    ch = grpc.secure_channel(f"127.0.0.1:{fedbed.servers['tax'].port}", grpc.ssl_channel_credentials(root_certificates=rt.ca_pem))
    try:
        with pytest.raises(grpc.RpcError) as e:
            node_pb2_grpc.NodeServiceStub(ch).Ping(node_pb2.PingRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ch.close()


def test_insecure_client_cannot_connect(fedbed):
    fedbed.start(["tax"])
    ch = grpc.insecure_channel(f"127.0.0.1:{fedbed.servers['tax'].port}")
    try:
        with pytest.raises(grpc.RpcError) as e:
            node_pb2_grpc.NodeServiceStub(ch).Ping(node_pb2.PingRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ch.close()


def test_certificate_from_ca_but_not_in_directory_is_refused(fedbed, tmp_path):
    fedbed.start(["tax"])
    pw = fedbed.passphrase.encode()
    m = fed.init_member(tmp_path / "stranger", "stranger", "127.0.0.1", pw)
    fed.issue_cert(fedbed.authority, m.tls_csr, m.tls_cert, fedbed.ca_passphrase.encode(), now=NOW)
    key_pem = fed.load_tls_key_pem(m.tls_key, pw)
    rt = fedbed.runtime("tax")
    creds = channel_credentials(rt.ca_pem, m.tls_cert.read_bytes(), key_pem)
    with PeerClient(f"127.0.0.1:{fedbed.servers['tax'].port}", creds) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.node.Ping(node_pb2.PingRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details().startswith("NOT_A_MEMBER")


def test_certificate_from_another_ca_fails_handshake(fedbed, tmp_path):
    fedbed.start(["tax"])
    pw = b"another passphrase"
    other = fed.init_authority(tmp_path / "otherca", "Other", pw, pw + b" dir", now=NOW)
    m = fed.init_member(tmp_path / "mallory", "hub", "127.0.0.1", pw)
    fed.issue_cert(other, m.tls_csr, m.tls_cert, pw, now=NOW)
    rt = fedbed.runtime("tax")
    creds = channel_credentials(rt.ca_pem, m.tls_cert.read_bytes(), fed.load_tls_key_pem(m.tls_key, pw))
    with PeerClient(f"127.0.0.1:{fedbed.servers['tax'].port}", creds) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.node.Ping(node_pb2.PingRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_oversized_nonce_is_invalid_argument_and_audited(fedbed):
    fedbed.start()
    with PeerClient.to_member(fedbed.runtime("hub"), "tax") as c:
        with pytest.raises(grpc.RpcError) as e:
            c.node.Ping(node_pb2.PingRequest(nonce=b"x" * 2000), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nonce: got 2000 bytes, want at most 1024" in e.value.details()


def test_port_in_use_is_a_clear_error(fedbed):
    fedbed.start(["tax"])
    port = fedbed.servers["tax"].port
    with pytest.raises(ConfigError, match="cannot bind"):
        build_server(Runtime.open(fedbed.config_path("hub")), listen=f"127.0.0.1:{port}")


def test_expired_directory_refused_at_start(fedbed):
    fedbed.valid_days = 1
    fedbed.sign_directory()
    # Two days after the directory was signed (the federation's clock is fixed at NOW).
    later = FixedClock(NOW + _dt.timedelta(days=2))
    with pytest.raises(ConfigError, match="expired"):
        Runtime.open(fedbed.config_path("tax"), clock=later)


def test_older_directory_refused_after_newer_seen(fedbed):
    old = fedbed.directory_path.read_bytes()
    fedbed.version = 2
    fedbed.sign_directory()
    Runtime.open(fedbed.config_path("tax")).close()  # accepts v2, remembers it
    fedbed.directory_path.write_bytes(old)
    with pytest.raises(ConfigError, match="want >= 2"):
        Runtime.open(fedbed.config_path("tax"))


def test_tampered_directory_refused_at_start(fedbed):
    import json

    doc = json.loads(fedbed.directory_path.read_text())
    doc["signatures"][0]["sig"] = doc["signatures"][0]["sig"][::-1]
    fedbed.directory_path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="directory"):
        Runtime.open(fedbed.config_path("tax"))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace("[node]", "[node]\ncolour = \"blue\""), "node.colour: got an unknown key"),
        (lambda t: t.replace("workers = 8", "workers = \"many\""), "node.workers"),
        (lambda t: t.replace('listen = "127.0.0.1:', 'listen = "nowhere'), "node.listen"),
        (lambda t: t + "\n[surprise]\nx = 1\n", "surprise: got an unknown key"),
        (lambda t: t.replace("[tls]", "[tls]\n[[oops"), "got invalid TOML"),
        (lambda t: t.replace("[node]", "[node]\nswitch_interval_ms = 0"), "node.switch_interval_ms"),
        (lambda t: t.replace("[node]", "[node]\nswitch_interval_ms = \"fast\""), "node.switch_interval_ms"),
    ],
)
def test_bad_config_is_one_line(fedbed, mutate, message):
    p = fedbed.config_path("tax")
    p.write_text(mutate(p.read_text()))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert message in e.value.message and "\n" not in e.value.message


def test_switch_interval_is_read_and_set_by_serve_before_the_server_is_built(fedbed, monkeypatch):
    """``[node] switch_interval_ms`` (docs/performance.md "Load shedding"): parsed, defaulted,
    and applied to the serving process before its gRPC server exists."""
    import sys

    from hedui.node import server

    p = fedbed.config_path("tax")
    assert load_config(p).node.switch_interval_ms == 5.0
    p.write_text(p.read_text().replace("[node]", "[node]\nswitch_interval_ms = 0.5"))
    assert load_config(p).node.switch_interval_ms == 0.5

    class _Built(Exception):
        pass

    seen: list[float] = []

    def build(rt, **_kw):
        seen.append(sys.getswitchinterval())
        rt.close()
        raise _Built

    before = sys.getswitchinterval()
    monkeypatch.setattr(server, "build_server", build)
    try:
        with pytest.raises(_Built):
            server.serve(p)
    finally:
        sys.setswitchinterval(before)
    assert seen == [pytest.approx(0.0005)]


def test_wrong_passphrase_refused_at_start(fedbed, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "definitely wrong")
    with pytest.raises(ConfigError, match="wrong passphrase"):
        Runtime.open(fedbed.config_path("tax"))


def test_graceful_stop_reports_not_serving(fedbed):
    fedbed.start(["tax"])
    ns = fedbed.servers["tax"]
    ns.stop(grace=0.5)
    fedbed.servers.pop("tax")
    rt = ns.rt
    ch = grpc.secure_channel(f"127.0.0.1:{ns.port}", channel_credentials(rt.ca_pem, rt.tls_cert_pem, rt.tls_key_pem))
    try:
        with pytest.raises(grpc.RpcError):
            node_pb2_grpc.NodeServiceStub(ch).Ping(node_pb2.PingRequest(), timeout=2)
    finally:
        ch.close()
