"""Pinned peers (issue 18 part B, item 4), reproduced as an attack: a server presenting
another member's certificate. Every member's certificate chains to the federation CA and the
testbed's members share a host, so without the pin gRPC's own checks accept the wrong
server; with it the call is refused (``SERVER_NOT_PINNED``) and the case records it."""

from __future__ import annotations

import json
import os

import grpc
import pytest
from sqlalchemy import select

from hedui.adapters.synthetic import resident
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit.tables import audit_entries
from hedui.node.client import PeerClient, channel_credentials
from hedui.node.pinning import PinError, PinningInterceptor, server_fingerprint
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.hub_tables import case_answers
from hedui.v1 import node_pb2

SEED = 5


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    names = {"hub": ["hub"], "tax": ["provider"], "hrss": ["provider"]}
    tb = Testbed(tmp_path_factory.mktemp("pin") / "fed", [MemberPlan(c, c, r) for c, r in names.items()], residents=40, data_seed=SEED)
    tb.create()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes()
    tb.start()
    yield tb
    tb.stop()


def _endpoint(hub, code):
    return hub.directory.member(code).endpoint


def test_each_member_presents_the_certificate_the_directory_lists(bed):
    hub = bed.runtime("hub")
    for code in ("tax", "hrss"):
        assert server_fingerprint(_endpoint(hub, code), hub.ca_pem) == bytes(hub.directory.member(code).tls_cert_sha256)


def test_another_members_server_is_refused(bed):
    hub = bed.runtime("hub")
    creds = channel_credentials(hub.ca_pem, hub.tls_cert_pem, hub.tls_key_pem)
    wrong = _endpoint(hub, "hrss")
    # The attack is real: CA chain and host name both pass for hrss's server.
    with PeerClient(wrong, creds, code="tax") as c:
        c.node.Ping(node_pb2.PingRequest(), timeout=10)
    want = bytes(hub.directory.member("tax").tls_cert_sha256)
    pin = PinningInterceptor("tax", wrong, hub.ca_pem, lambda: want)
    with pytest.raises(PinError) as e:
        pin.check()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and e.value.details().startswith("SERVER_NOT_PINNED")
    with PeerClient(wrong, creds, code="tax", pin=PinningInterceptor("tax", wrong, hub.ca_pem, lambda: want)) as c:
        with pytest.raises(grpc.RpcError) as e2:
            c.node.Ping(node_pb2.PingRequest(), timeout=10)
        # The same through the other call styles of a unary method (issue 16's lean unary
        # calls): with_call raises, future hands back a failed future, nothing goes out.
        with pytest.raises(grpc.RpcError) as e3:
            c.node.Ping.with_call(node_pb2.PingRequest(), timeout=10)
        fut = c.node.Ping.future(node_pb2.PingRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as e4:
            fut.result()
    assert e2.value.code() == grpc.StatusCode.UNAUTHENTICATED and "SERVER_NOT_PINNED" in e2.value.details()
    assert e3.value.code() == e4.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Answered calls work in every style once the pin matches (hrss's own fingerprint).
    hrss = bytes(hub.directory.member("hrss").tls_cert_sha256)
    with PeerClient(wrong, creds, code="hrss", pin=PinningInterceptor("hrss", wrong, hub.ca_pem, lambda: hrss)) as c:
        c.node.Ping(node_pb2.PingRequest(), timeout=10)
        _, call = c.node.Ping.with_call(node_pb2.PingRequest(), timeout=10)
        assert call.code() == grpc.StatusCode.OK
        c.node.Ping.future(node_pb2.PingRequest(), timeout=10).result()


def test_a_case_sent_to_the_wrong_server_records_the_refusal(bed):
    hub = bed.runtime("hub")
    creds = channel_credentials(hub.ca_pem, hub.tls_cert_pem, hub.tls_key_pem)
    wrong = _endpoint(hub, "hrss")
    want = bytes(hub.directory.member("tax").tls_cert_sha256)
    hub.peers.reset("tax")
    hub.peers._clients["tax"] = PeerClient(wrong, creds, code="tax", pin=PinningInterceptor("tax", wrong, hub.ca_pem, lambda: want))
    try:
        ref = open_case(hub, [(resident(1, SEED).id_number, "member")], purpose="dibao",
                        consent_digest=consent_digest_of(b"pin-scan"), operator="cw01", region="370304")
        res = run_case(hub, ref, timeout=5, retries=0)
    finally:
        hub.peers.reset("tax")
    status = {o.provider: o.status for o in res.outcomes}
    assert status["tax"] == "refused" and status["hrss"] == "ok"
    with hub.engine.connect() as c:
        reason = c.execute(select(case_answers.c.reason).where(case_answers.c.case_ref == ref, case_answers.c.provider == "tax")).scalar_one()
    assert "SERVER_NOT_PINNED" in reason
    # ... and audited: the hub's query.failed entry for that request names the reason.
    hub.audit.log.flush()
    with hub.engine.connect() as c:
        failed = [json.loads(bytes(e))["fields"] for e in c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == "query.failed")).scalars()]
    assert any(f.get("case_ref") == ref and f["peer"] == "tax" and "SERVER_NOT_PINNED" in f["reason"] for f in failed)
    # Dialled through the node's own peers (the directory's pin), tax answers.
    assert run_case(hub, ref).complete


def test_the_ca_issues_only_the_sans_the_authority_approved(bed, tmp_path):
    import datetime as dt

    from hedui.keys import federation as fed
    from hedui.node.errors import ConfigError

    now = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
    pw = b"member passphrase"
    # A member asks for a certificate naming another member's host.
    m = fed.init_member(tmp_path / "rogue", "rogue", "tax.example.gov.cn", pw)
    with pytest.raises(ConfigError) as e:
        fed.issue_cert(bed.authority, m.tls_csr, tmp_path / "rogue.crt", bed.ca_passphrase.encode(), now=now,
                       approved=["rogue.example.gov.cn"])
    assert e.value.reason == "BAD_CSR" and "approved by the authority" in e.value.message
    assert not (tmp_path / "rogue.crt").exists()
    ok = fed.init_member(tmp_path / "good", "good", "good.example.gov.cn", pw)
    cert = fed.issue_cert(bed.authority, ok.tls_csr, tmp_path / "good.crt", bed.ca_passphrase.encode(), now=now,
                          approved=["good.example.gov.cn"])
    assert cert.subject.rfc4514_string() == "CN=good"


def test_a_renewed_certificate_listed_beside_the_current_one_is_accepted():
    """Issue 17's overlap meets issue 18's pin: during a renewal the directory lists the
    current fingerprint and ``renewed_tls_cert_sha256``; a server presenting either passes,
    any other is refused (the probe is stubbed: no network, fixed fingerprints)."""
    current, renewed, other = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    for presented in (current, renewed):
        PinningInterceptor("tax", "h:1", b"", lambda: {current, renewed}, probe=lambda e, ca, p=presented: p).check()
    with pytest.raises(PinError) as err:
        PinningInterceptor("tax", "h:1", b"", lambda: {current, renewed}, probe=lambda e, ca: other).check()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "SERVER_NOT_PINNED" in err.value.details()
    with pytest.raises(PinError):   # an empty listing pins nothing: refused, not accepted
        PinningInterceptor("tax", "h:1", b"", lambda: {b""}, probe=lambda e, ca: b"").check()

