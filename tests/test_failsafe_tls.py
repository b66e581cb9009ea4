"""Fault suite, refusals in the TLS handshake (issue 13 item 6): a client without a
certificate, with one from a foreign CA, or speaking plain text to the TLS port is refused by
gRPC core before any Hedui code runs; ``hedui node serve`` counts each from gRPC's own log
(metrics by cause) and writes them to the audit log in aggregate when it stops."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from sqlalchemy import create_engine, select

from hedui.common.clock import FixedClock
from hedui.keys import federation as fed
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit.tables import audit_entries
from hedui.node.client import channel_credentials
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.testbed.federation import free_port
from hedui.v1 import node_pb2, node_pb2_grpc

NOW = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)


def _metric(port: int, cause: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith("hedui_transport_refusals_total{") and f'cause="{cause}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _knock(port: int, creds) -> None:
    ch = grpc.secure_channel(f"127.0.0.1:{port}", creds) if creds is not None else grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        with pytest.raises(grpc.RpcError) as e:
            node_pb2_grpc.NodeServiceStub(ch).Ping(node_pb2.PingRequest(), timeout=3)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ch.close()


def test_handshake_refusals_are_counted_and_audited(tmp_path, monkeypatch):
    # The directory is signed for a fixed instant but the served node runs on the wall clock
    # (a separate process): valid long enough either way.
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("fire", "fire", ["provider"])],
                 residents=20, clock=FixedClock(NOW), valid_days=3660)
    tb.create()
    mport = free_port()
    cfg = tb.config_path("hub")
    cfg.write_text(cfg.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{mport}"\n')
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    p = subprocess.Popen([sys.executable, "-m", "hedui.node.cli", "node", "serve", "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, PASSPHRASE_ENV: tb.passphrase})
    try:
        line = p.stdout.readline()
        assert "serving on" in line, line
        port = int(line.strip().rsplit(":", 1)[1])
        ca = (tb.root / "authority" / "ca.crt").read_bytes()
        _knock(port, grpc.ssl_channel_credentials(root_certificates=ca))            # no client certificate
        pw = b"another passphrase"
        other = fed.init_authority(tmp_path / "otherca", "Other", pw, b"another directory passphrase", now=NOW)
        m = fed.init_member(tmp_path / "mallory", "hub", "127.0.0.1", pw)
        fed.issue_cert(other, m.tls_csr, m.tls_cert, pw, now=NOW)
        _knock(port, channel_credentials(ca, m.tls_cert.read_bytes(), fed.load_tls_key_pem(m.tls_key, pw)))  # foreign CA
        _knock(port, None)                                                            # plain text
        causes = ("no_client_cert", "foreign_ca", "tls_handshake")
        for _ in range(100):  # the tap reads gRPC's log asynchronously: wait for the counts, bounded
            if all(_metric(mport, c) >= 1 for c in causes):
                break
            time.sleep(0.1)
        assert {c: _metric(mport, c) >= 1 for c in causes} == dict.fromkeys(causes, True)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    eng = create_engine(f"sqlite:///{tb.member_dir('hub') / 'node.db'}")
    with eng.connect() as c:
        rows = [json.loads(bytes(e))["fields"] for e in
                c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == "refusal.aggregated")).scalars()]
    eng.dispose()
    got = {r["cause"] for r in rows}
    assert {"no_client_cert", "foreign_ca", "tls_handshake"} <= got
    assert all(r["count"] >= 1 and r["first"] <= r["last"] for r in rows)
    # Aggregated: one entry per cause and peer, however many handshakes (retries) there were.
    assert len(rows) == len({(r["cause"], r["peer"]) for r in rows})
