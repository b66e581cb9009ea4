"""Fault suite, the wire (issue 13 items 2, 3, 5, 6, 10): a streamed token filter charged only
when complete, the maximum batch end to end, directory expiry while running, refusals below
the application counted and audited in aggregate, and load shedding — all against real
servers on 127.0.0.1 (port 0, no SO_REUSEPORT). Tests assert statuses and counts, never times.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.keys import oprf
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit.tables import audit_entries
from hedui.node.client import PeerClient, channel_credentials
from hedui.node.store.tables import quota_counters, seen_requests
from hedui.node.testbed import MemberPlan, Testbed, default_policy
from hedui.node.verification.consent import issue_for_context
from hedui.v1 import common_pb2, lookup_pb2, node_pb2, pseudonym_pb2

SEED = 11
NOW = dt.datetime(2026, 11, 30, 3, 0, 30, tzinfo=dt.UTC)
FILTER = "/hedui.v1.PseudonymService/GetTokenFilter"


@pytest.fixture
def bed(tmp_path, monkeypatch):
    members = [MemberPlan("hub", "hub", ["hub"]), MemberPlan("hub2", "hub2", ["hub"]), MemberPlan("tax", "tax", ["provider"])]
    tb = Testbed(tmp_path / "fed", members, residents=40, data_seed=SEED, clock=FixedClock(NOW))
    tb.create()
    tb.policy = default_policy(tb.members)
    tb.sign_directory()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.build_indexes()
    tb.start(["hub", "hub2", "tax"])
    yield tb
    tb.stop()


def _entries(rt, kind: str) -> list[dict]:
    rt.audit.log.flush()
    with rt.engine.connect() as c:
        rows = c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == kind)).scalars()
        return [json.loads(bytes(e))["fields"] for e in rows]


def _filter_quota(rt, caller: str) -> int:
    with rt.engine.connect() as c:
        return int(c.execute(select(quota_counters.c.count).where(
            quota_counters.c.caller == caller, quota_counters.c.method == FILTER, quota_counters.c.window == "m")).scalar() or 0)


def _ctx(purpose=common_pb2.PURPOSE_BULK_CROSS_CHECK, consent=b""):
    return common_pb2.RequestContext(purpose=purpose, case_ref="XC-2026-07", request_id=os.urandom(16), consent_digest=consent)


# -- GetTokenFilter streams, and is charged only when complete ------------------------------

def test_filter_streams_and_is_charged_and_audited_once_complete(bed):
    tax = bed.runtime("tax")
    assert _filter_quota(tax, "hub") == 0 and _entries(tax, "filter.sent") == []
    ctx = _ctx()
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        stream = c.pseudonym.GetTokenFilter(pseudonym_pb2.GetTokenFilterRequest(context=ctx, epoch=1), timeout=20)
        assert iter(stream) is stream  # a stream over the wire, not one message
        parts = list(stream)
    assert parts and parts[0].total > 0
    assert _filter_quota(tax, "hub") == 1
    sent = _entries(tax, "filter.sent")
    assert [(f["peer"], f["request_id"], f["count"], f["chunks"]) for f in sent] == [("hub", ctx.request_id.hex(), parts[0].total, len(parts) - 1)]


def test_filter_cancelled_mid_stream_is_not_charged_nor_audited(bed, monkeypatch):
    """The peer goes away after the first chunk: no quota, no request id burnt, no
    ``filter.sent``; the same request id then downloads the whole filter and costs one."""
    from hedui.node.crosscheck.filterfmt import FilterChunk
    from hedui.node.verification import service

    real = service.filter_chunks
    gate = threading.Event()

    def many_chunks(content, shards):
        """The real chunks, then — once the client has cancelled — far more than HTTP/2 flow
        control lets the server buffer (4 MiB), so the server is mid-stream when it learns the
        peer went away, however late the cancellation reaches it."""
        yield from real(content, shards)
        gate.wait(20)
        yield from (FilterChunk(0, 0, b"x" * 4096) for _ in range(1024))

    monkeypatch.setattr("hedui.node.verification.service.filter_chunks", many_chunks)
    tax = bed.runtime("tax")
    ctx = _ctx()
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        stream = c.pseudonym.GetTokenFilter(pseudonym_pb2.GetTokenFilterRequest(context=ctx, epoch=1), timeout=20)
        next(stream)
        stream.cancel()
        gate.set()
    gate.clear()
    monkeypatch.setattr("hedui.node.verification.service.filter_chunks", real)
    # The handler thread notices the cancellation when it writes the next chunk; wait for the
    # slot to be given back (a count, not a time).
    for _ in range(200):
        if tax.admission.in_flight == 0:
            break
        threading.Event().wait(0.05)
    assert tax.admission.in_flight == 0
    assert _filter_quota(tax, "hub") == 0
    assert _entries(tax, "filter.sent") == []
    with tax.engine.connect() as c:
        assert c.execute(select(seen_requests.c.request_id).where(seen_requests.c.request_id == ctx.request_id)).first() is None
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        parts = list(c.pseudonym.GetTokenFilter(pseudonym_pb2.GetTokenFilterRequest(context=ctx, epoch=1), timeout=20))
    assert len(parts) >= 1 and _filter_quota(tax, "hub") == 1 and len(_entries(tax, "filter.sent")) == 1


def test_filter_refused_for_wrong_purpose_sends_nothing(bed):
    tax = bed.runtime("tax")
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        with pytest.raises(grpc.RpcError) as e:
            list(c.pseudonym.GetTokenFilter(pseudonym_pb2.GetTokenFilterRequest(context=_ctx(common_pb2.PURPOSE_DIBAO), epoch=1), timeout=20))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and e.value.details().startswith("PURPOSE_NOT_ALLOWED")
    assert _filter_quota(tax, "hub") == 0 and _entries(tax, "filter.sent") == []
    assert [f["outcome"] for f in _entries(tax, "refusal")] == ["PURPOSE_NOT_ALLOWED"]


# -- one batch limit: the maximum batch, end to end -----------------------------------------

def _tokens(bed, n_real: int = 2) -> list[bytes]:
    hub = bed.runtime("hub")
    state = oprf.blind([resident(i, SEED).id_number for i in range(1, n_real + 1)])
    with PeerClient.to_member(hub, "tax") as c:
        ev = c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(
            context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="T-1", request_id=os.urandom(16)),
            epoch=1, blinded_elements=state.blinded), timeout=10)
    return oprf.finalize(state, list(ev.evaluated_elements), ev.proof, bytes(hub.directory.member("tax").oprf_keys[0].public_key))


@pytest.mark.parametrize("n, ok", [(4096, True), (4097, False)])
def test_maximum_batch_end_to_end(bed, n, ok):
    from hedui.node.policy import MAX_BATCH

    assert MAX_BATCH == 4096
    real = _tokens(bed)
    tokens = real + [os.urandom(64) for _ in range(n - len(real))]
    ctx = _ctx(common_pb2.PURPOSE_DIBAO, consent=b"c" * 32)
    hub = bed.runtime("hub")
    ctx.consent.CopyFrom(issue_for_context(hub.signer, "hub", ctx, members=n, issued_at=hub.clock.now()))
    req = lookup_pb2.LookupRequest(context=ctx, epoch=1, tokens=tokens, reference_month="2026-10",
                                   queries=[lookup_pb2.FieldQuery(field="income_last_year")])
    tax = bed.runtime("tax")
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        if not ok:
            with pytest.raises(grpc.RpcError) as e:
                c.lookup.Lookup(req, timeout=60)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and e.value.details().startswith("BATCH_TOO_LARGE")
            assert _entries(tax, "query.received") == []
            return
        resp = c.lookup.Lookup(req, timeout=60)
    ans = lookup_pb2.LookupAnswer.FromString(resp.answer.payload)
    assert len(ans.members) == 4096
    (rec,) = _entries(tax, "query.received")
    h = hashlib.sha256(b"".join(len(t).to_bytes(2, "big") + t for t in tokens)).hexdigest()
    assert rec["count"] == 4096 and rec["tokens_digest"] == h and "tokens" not in rec
    assert [f["outcome"] for f in _entries(tax, "answer.sent")] == ["ok"]


def test_directory_cannot_allow_more_than_the_one_limit(bed):
    from hedui.node.errors import ConfigError

    pol = default_policy(bed.members)
    pol[0]["max_batch"] = 4097
    bed.policy = pol
    with pytest.raises((ConfigError, ValueError), match="max_batch"):
        bed.sign_directory()


# -- directory expiry while running ----------------------------------------------------------

def _health(bed, code: str, service: str = "") -> int:
    rt = bed.runtime("hub")
    ch = grpc.secure_channel(f"127.0.0.1:{bed.servers[code].port}", channel_credentials(rt.ca_pem, rt.tls_cert_pem, rt.tls_key_pem))
    try:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    finally:
        ch.close()


def test_directory_expiry_while_running_refuses_every_call(bed):
    tax = bed.runtime("tax")
    assert _health(bed, "tax") == health_pb2.HealthCheckResponse.SERVING
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        assert c.node.Ping(node_pb2.PingRequest(nonce=b"a"), timeout=5).member == "tax"
    bed.clock.set(tax.directory.expires_at + dt.timedelta(seconds=1))
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        for call in (lambda: c.node.Ping(node_pb2.PingRequest(nonce=b"b"), timeout=5),
                     lambda: c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(context=_ctx(common_pb2.PURPOSE_DIBAO), epoch=1,
                                                                                blinded_elements=[b"x" * 32]), timeout=5),
                     lambda: list(c.pseudonym.GetTokenFilter(pseudonym_pb2.GetTokenFilterRequest(context=_ctx(), epoch=1), timeout=5))):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE and e.value.details().startswith("DIRECTORY_EXPIRED")
    for svc in ("", "hedui.v1.LookupService", "hedui.v1.NodeService"):
        assert _health(bed, "tax", svc) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert tax.metrics.registry.get_sample_value("hedui_directory_refusing", {"reason": "DIRECTORY_EXPIRED"}) == 1
    assert tax.metrics.registry.get_sample_value("hedui_rpc_total", {"method": "/hedui.v1.NodeService/Ping", "code": "UNAVAILABLE"}) == 1
    # Three refused calls, one aggregated entry.
    tax.refusals.flush()
    agg = [f for f in _entries(tax, "refusal.aggregated") if f["cause"] == "directory_expired"]
    assert [(f["peer"], f["count"]) for f in agg] == [("hub", 3)]


def test_newer_directory_accepted_elsewhere_makes_a_running_node_refuse(bed):
    """Rollback while running: another process of the node (the CLI) accepted v2; the node
    still serving v1 refuses with DIRECTORY_ROLLBACK until restarted."""
    from hedui.node.store.tables import node_state

    tax = bed.runtime("tax")
    with tax.engine.begin() as c:
        c.execute(node_state.update().where(node_state.c.key == "directory_version").values(value="2"))
    bed.clock.advance(dt.timedelta(seconds=10))  # past the guard's re-read interval
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        with pytest.raises(grpc.RpcError) as e:
            c.node.Ping(node_pb2.PingRequest(nonce=b"b"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and e.value.details().startswith("DIRECTORY_ROLLBACK")
    assert _health(bed, "tax") == health_pb2.HealthCheckResponse.NOT_SERVING


# -- refusals below the application ----------------------------------------------------------

def test_malformed_and_oversize_requests_are_counted_and_audited_in_aggregate(bed):
    from hedui.node.transport import MAX_REQUEST_BYTES

    tax = bed.runtime("tax")
    hub = bed.runtime("hub")
    ch = grpc.secure_channel(f"127.0.0.1:{bed.servers['tax'].port}", channel_credentials(hub.ca_pem, hub.tls_cert_pem, hub.tls_key_pem),
                             options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    raw = ch.unary_unary("/hedui.v1.NodeService/Ping")  # bytes in, bytes out
    try:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as e:
                raw(b"\xff\xff\xff\xff", timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("MALFORMED_REQUEST")
        with pytest.raises(grpc.RpcError) as e:
            raw(b"\x0a" + b"\x80\x80\x80\x10" + b"x" * (MAX_REQUEST_BYTES + 1), timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and e.value.details().startswith("OVERSIZE")
    finally:
        ch.close()
    reg = tax.metrics.registry
    assert reg.get_sample_value("hedui_transport_refusals_total", {"cause": "malformed"}) == 3
    assert reg.get_sample_value("hedui_transport_refusals_total", {"cause": "oversize"}) == 1
    assert tax.refusals.flush() == 2
    got = sorted((f["cause"], f["peer"], f["count"]) for f in _entries(tax, "refusal.aggregated"))
    assert got == [("malformed", "hub", 3), ("oversize", "hub", 1)]
    assert tax.refusals.flush() == 0  # counted once, not per flush


def test_handshake_refusals_are_classified_from_grpc_core_lines():
    from hedui.node.transport import classify

    # Lines as gRPC core 1.85 writes them (captured from `hedui node serve`) for a client
    # without a certificate, one of a foreign CA, and plain text to the TLS port; and an
    # older core's form with a peer address.
    no_cert = ("I1201 00:17:15.099502   24133 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
               "error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE: Invalid certificate verification context")
    foreign = ("I1201 00:17:15.099502   24133 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
               "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: Invalid certificate verification context")
    plain = ("I1201 00:17:15.103497   24134 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
             "error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid certificate verification context")
    older = ("E1130 03:00:00.000000000 123 chttp2_server.cc:166] Handshake failed: peer_address:\"ipv4:127.0.0.1:40000\" "
             "WRONG_VERSION_NUMBER")
    assert classify(no_cert) == ("no_client_cert", "?")
    assert classify(foreign) == ("foreign_ca", "?")
    assert classify(plain) == ("tls_handshake", "?")
    assert classify(older) == ("tls_handshake", "ipv4:127.0.0.1:40000")
    assert classify("I1130 server started") is None


# -- load shedding -----------------------------------------------------------------------------

def test_calls_beyond_the_cap_are_refused_at_once_and_fairly(bed):
    """Slots held as by calls in progress (taken directly, so no test waits on a timer): hub
    at its share gets OVERLOADED while hub2 is still served; at the cap everyone is refused;
    the refusals are counted by caller and audited in aggregate."""
    from hedui.node.admission import Admission

    tax = bed.runtime("tax")
    tax.admission = Admission(4)  # a caller alone may take 3 of the 4 slots
    assert tax.admission.per_caller == 3

    def ping(client) -> grpc.StatusCode:
        try:
            client.node.Ping(node_pb2.PingRequest(nonce=b"p"), timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            assert e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or e.details().startswith("OVERLOADED")
            return e.code()

    with PeerClient.to_member(bed.runtime("hub"), "tax") as c, PeerClient.to_member(bed.runtime("hub2"), "tax") as c2:
        for _ in range(3):
            tax.admission.try_acquire("hub")
        assert ping(c) == grpc.StatusCode.RESOURCE_EXHAUSTED   # hub is at its share
        assert ping(c2) == grpc.StatusCode.OK                   # hub2 is not starved
        tax.admission.try_acquire("hub2")                       # now the node is full
        assert ping(c2) == grpc.StatusCode.RESOURCE_EXHAUSTED
        tax.admission.release("hub")
        # hub2 is active, so hub's share is an equal split: 2 of 4; it holds 2.
        assert ping(c) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ping(c2) == grpc.StatusCode.OK
        for who in ("hub", "hub", "hub2"):
            tax.admission.release(who)
        assert tax.admission.in_flight == 0
        assert ping(c) == grpc.StatusCode.OK
    reg = tax.metrics.registry
    assert reg.get_sample_value("hedui_rpc_shed_total", {"peer": "hub"}) == 2
    assert reg.get_sample_value("hedui_rpc_shed_total", {"peer": "hub2"}) == 1
    tax.refusals.flush()
    got = sorted((f["peer"], f["count"]) for f in _entries(tax, "refusal.aggregated") if f["cause"] == "overloaded")
    assert got == [("hub", 2), ("hub2", 1)]


@pytest.mark.parametrize("cap, per_caller, holds, caller, ok", [
    (4, 0, {}, "a", True),
    (4, 0, {"a": 3}, "a", False),
    (4, 0, {"a": 3}, "b", True),
    (4, 0, {"a": 3, "b": 1}, "b", False),
    (4, 0, {"a": 1, "b": 1}, "a", True),
    (4, 0, {"a": 2, "b": 1}, "a", False),
    (8, 8, {"a": 7}, "a", True),
    (1, 0, {}, "a", True),
    (1, 0, {"b": 1}, "a", False),
    # Small caps keep a slot no single caller can take (issue 13: one hub cannot starve another).
    (2, 0, {}, "a", True),
    (2, 0, {"a": 1}, "a", False),
    (2, 0, {"a": 1}, "b", True),
    (3, 0, {"a": 1}, "a", True),
    (3, 0, {"a": 2}, "a", False),
    (3, 0, {"a": 2}, "b", True),
    (2, 2, {"a": 1}, "a", True),
])
def test_admission_table(cap, per_caller, holds, caller, ok):
    from hedui.node.admission import Admission
    from hedui.node.errors import ResourceExhausted

    a = Admission(cap, per_caller)
    for who, n in holds.items():
        for _ in range(n):
            a.try_acquire(who)
    if ok:
        a.try_acquire(caller)
        assert a.held(caller) == holds.get(caller, 0) + 1
    else:
        with pytest.raises(ResourceExhausted) as e:
            a.try_acquire(caller)
        assert e.value.reason == "OVERLOADED" and a.in_flight == sum(holds.values())


def test_grpc_core_shedding_decodes_as_overloaded():
    """Beyond the core limit gRPC itself refuses (node/server.py core_limit) with its own
    text; the caller's side reads it as OVERLOADED like the node's own refusal."""
    from hedui.node.errors import ResourceExhausted, from_rpc_error

    class _Err(grpc.RpcError):
        def __init__(self, code, details):
            self._c, self._d = code, details

        def code(self):
            return self._c

        def details(self):
            return self._d

    core = from_rpc_error(_Err(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"))
    ours = from_rpc_error(_Err(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED: node: 8 calls in progress, capacity 8"))
    quota = from_rpc_error(_Err(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED: quota: hub made 2 calls"))
    assert isinstance(core, ResourceExhausted) and (core.reason, ours.reason, quota.reason) == ("OVERLOADED", "OVERLOADED", "QUOTA_EXCEEDED")


def test_core_limit_leaves_room_for_the_nodes_own_refusals():
    from hedui.node.server import core_limit

    for cap in (1, 4, 8, 64):
        assert core_limit(cap) >= cap + 4 and core_limit(cap) >= 2 * cap


def test_a_case_shed_by_a_flooded_provider_retries_and_completes(bed):
    """Fairness end to end: while another hub holds every slot of tax, hub2's case is shed
    (OVERLOADED), backs off and retries with the same request id, and is answered once the
    slots free — it is neither failed as "refused" nor answered twice."""
    from hedui.node.admission import Admission
    from hedui.node.errors import ResourceExhausted
    from hedui.node.verification.cases import consent_digest_of, open_case, run_case

    tax = bed.runtime("tax")
    refused: list[str] = []

    class _FloodEnds(Admission):
        """The flood ends (hub's slots are released) right after hub2 is first shed."""

        def try_acquire(self, caller: str) -> None:
            try:
                super().try_acquire(caller)
            except ResourceExhausted:
                refused.append(caller)
                if caller == "hub2" and self.held("hub"):
                    while self.held("hub"):
                        self.release("hub")
                raise

    tax.admission = _FloodEnds(2, 2)
    tax.admission.try_acquire("hub")
    tax.admission.try_acquire("hub")
    hub2 = bed.runtime("hub2")
    ref = open_case(hub2, [(resident(1, SEED).id_number, "m")], purpose="dibao", consent_digest=consent_digest_of(b"a"),
                    operator="cw", region="370304")
    res = run_case(hub2, ref, timeout=10, retries=2)
    st = {o.provider: o for o in res.outcomes}
    assert refused == ["hub2"]
    # Evaluate twice (shed, then answered), Lookup once.
    assert st["tax"].status == "ok" and st["tax"].attempts == 3, st["tax"]
    assert tax.admission.in_flight == 0


def test_quota_refusals_are_not_retried():
    from hedui.node.verification.cases import _retryable

    class _Err(grpc.RpcError):
        def __init__(self, code, details):
            self._c, self._d = code, details

        def code(self):
            return self._c

        def details(self):
            return self._d

    assert _retryable(_Err(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED: node: 8 calls in progress"))
    assert _retryable(_Err(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"))
    assert not _retryable(_Err(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED: quota: hub made 2 calls"))
    assert not _retryable(_Err(grpc.StatusCode.PERMISSION_DENIED, "PURPOSE_NOT_ALLOWED: no"))
