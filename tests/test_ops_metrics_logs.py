"""Issue 17 items 3-4: the node's metrics (build, directory, certificate, index, outbox,
audit checkpoints, refusals by reason, latency by method and peer) with no label carrying a
token, case reference or identity; JSON logs with one access line per RPC, and the W3C
traceparent carried hub → provider and kept in the provider's audit entry."""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import re

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from hedui.common.clock import FixedClock
from hedui.keys import oprf
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node import logs
from hedui.node.audit.tables import audit_entries
from hedui.node.client import PeerClient
from hedui.node.errors import Reason
from hedui.node.testbed import MemberPlan, Testbed
from hedui.v1 import common_pb2, node_pb2, pseudonym_pb2

NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)
ID = "11010519491231002X"
CASE_REF = "DB-2026-0042"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def bed(tmp_path, monkeypatch):
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 clock=FixedClock(NOW), residents=40)
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.build_indexes(["tax"])
    tb.start()
    yield tb
    tb.stop()


def _evaluate(bed, *, purpose=common_pb2.PURPOSE_DIBAO, shared: bool = False) -> None:
    """One Evaluate hub → tax; ``shared``: over the hub's own cached channel (``rt.peers``, which
    counts the caller's side of the outcome metric), else over a fresh client."""
    state = oprf.blind([ID])
    req = pseudonym_pb2.EvaluateRequest(
        context=common_pb2.RequestContext(purpose=purpose, case_ref=CASE_REF, request_id=os.urandom(16)),
        epoch=1, blinded_elements=state.blinded)
    if shared:
        bed.runtime("hub").peers.get("tax").pseudonym.Evaluate(req, timeout=10)
        return
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        c.pseudonym.Evaluate(req, timeout=10)


def _entries(rt, kind: str) -> list[dict]:
    rt.audit.log.flush()
    with rt.engine.connect() as c:
        rows = c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == kind)).scalars()
        return [json.loads(bytes(e))["fields"] for e in rows]


def _samples(rt) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in rt.metrics.registry.collect():
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_state_metrics_follow_the_node_clock(bed):
    tax = bed.runtime("tax")
    bed.clock.advance(_dt.timedelta(hours=3))
    s = _samples(tax)
    one = lambda name: s[name][0].value  # noqa: E731
    assert s["hedui_build_info"][0].labels["version"]
    assert one("hedui_directory_version") == 1
    assert one("hedui_directory_expiry_seconds") == 30 * 86400 - 3 * 3600
    cert_left = one("hedui_certificate_expiry_seconds")
    from hedui.keys.describe import cert_not_after

    assert cert_left == (cert_not_after(tax.tls_cert_pem) - bed.clock.now()).total_seconds()
    assert one("hedui_certificate_expiring") == (1 if cert_left < 30 * 86400 else 0)
    ages = {x.labels["source"]: x.value for x in s["hedui_index_age_seconds"]}
    assert ages and all(v == 3 * 3600 for v in ages.values())
    assert all(x.value > 0 for x in s["hedui_index_rows"]) and all(x.value == 1 for x in s["hedui_index_complete"])
    assert one("hedui_outbox_depth") == 0 and one("hedui_store_up") == 1
    # Witnessing: the newest cosignature per peer, its age on the node's clock and its size.
    from hedui.node.audit.tables import audit_cosignatures

    hub = bed.runtime("hub")
    hub.audit.cosigner.stop()   # no cosignature of its own while the test writes them (stop is idempotent)
    with hub.engine.begin() as c:
        c.execute(audit_cosignatures.delete())
        for size, at in ((5, NOW - _dt.timedelta(hours=1)), (9, NOW)):
            c.execute(audit_cosignatures.insert().values(peer="tax", origin="o", size=size, root=b"r" * 32,
                                                         peer_note="n", cosignature="c", created_at=at))
    s = _samples(hub)
    assert [(x.labels["peer"], x.value) for x in s["hedui_audit_cosigned_age_seconds"]] == [("tax", 3 * 3600)]
    assert [x.value for x in s["hedui_audit_cosigned_size"]] == [9]
    # The certificate warning turns on 30 days before expiry.
    bed.clock.set(cert_not_after(tax.tls_cert_pem) - _dt.timedelta(days=29))
    assert _samples(tax)["hedui_certificate_expiring"][0].value == 1


def test_refusals_by_reason_and_latency_by_method_and_peer(bed):
    tax = bed.runtime("tax")
    _evaluate(bed)
    with pytest.raises(grpc.RpcError):
        _evaluate(bed, purpose=0)   # no purpose: refused with a reason
    reg = tax.metrics.registry
    assert reg.get_sample_value("hedui_rpc_seconds_count", {"method": "/hedui.v1.PseudonymService/Evaluate", "peer": "hub"}) == 2
    refused = {s.labels["reason"]: s.value for s in _samples(tax)["hedui_refusals_total"]}
    assert sum(refused.values()) == 1 and all(r in Reason.__members__ for r in refused)


def test_per_peer_success_rate_on_both_sides(bed):
    """Issue 17 item 3: hedui_rpc_outcomes_total counts each call's outcome class by side,
    method and peer, so success rate = ok / all per peer (docs/operations.md alert rule)."""
    tax, hub = bed.runtime("tax"), bed.runtime("hub")
    ev = "/hedui.v1.PseudonymService/Evaluate"
    for _ in range(3):
        _evaluate(bed, shared=True)
    with pytest.raises(grpc.RpcError):
        _evaluate(bed, purpose=0, shared=True)

    def val(rt, side, outcome):
        return rt.metrics.registry.get_sample_value(
            "hedui_rpc_outcomes_total", {"side": side, "method": ev, "peer": "tax" if side == "called" else "hub",
                                         "outcome": outcome}) or 0

    # The provider counts what it served to the hub; the hub what it got from tax: the same story.
    for rt, side in ((tax, "served"), (hub, "called")):
        assert (val(rt, side, "ok"), val(rt, side, "refused"), val(rt, side, "error")) == (3, 1, 0), side
    # A peer that does not answer counts as "unavailable" on the caller's side.
    bed.stop(["tax"])
    hub.peers.reset("tax")
    with pytest.raises(grpc.RpcError):
        _evaluate(bed, shared=True)
    assert val(hub, "called", "unavailable") == 1 and val(hub, "called", "ok") == 3
    # A streamed call to the stopped peer (the pin check refuses it before it goes out) counts
    # as unavailable too, with its own method name, and still raises for the caller.
    hub.peers.reset("tax")
    stream = hub.peers.get("tax").pseudonym.GetTokenFilter(pseudonym_pb2.GetTokenFilterRequest(), timeout=5)
    with pytest.raises(grpc.RpcError):
        list(stream)
    assert hub.metrics.registry.get_sample_value("hedui_rpc_outcomes_total", {
        "side": "called", "method": "/hedui.v1.PseudonymService/GetTokenFilter", "peer": "tax", "outcome": "unavailable"}) == 1


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_every_status_code_has_one_outcome_class(code):
    from hedui.node.metrics import OUTCOMES, outcome_class

    cls = outcome_class(code.name)
    assert cls in OUTCOMES
    assert (cls == "ok") == (code == grpc.StatusCode.OK)


def test_no_label_carries_a_token_case_reference_or_identity(bed):
    tax, hub = bed.runtime("tax"), bed.runtime("hub")
    _evaluate(bed)
    _evaluate(bed, shared=True)
    with pytest.raises(grpc.RpcError):
        _evaluate(bed, purpose=0)
    members = {m.code for m in tax.directory.msg.members} | {"?"}
    allowed = {
        "method": lambda v: re.fullmatch(r"/hedui\.v1\.\w+/\w+", v),
        "peer": lambda v: v in members,
        "code": lambda v: v in grpc.StatusCode.__members__,
        "reason": lambda v: v in Reason.__members__,
        "cause": lambda v: re.fullmatch(r"[a-z_]+", v),
        "source": lambda v: re.fullmatch(r"[a-z][a-z0-9_]{0,63}", v),
        "epoch": lambda v: v.isdigit() and len(v) < 6,
        "version": lambda v: re.fullmatch(r"[0-9a-z.+-]+", v),
        "python": lambda v: re.fullmatch(r"[0-9.]+", v),
        "grpc": lambda v: re.fullmatch(r"[0-9a-z.]+", v),
        "le": lambda v: True,
        "side": lambda v: v in ("served", "called"),
        "outcome": lambda v: v in ("ok", "refused", "busy", "unavailable", "error", "cancelled"),
    }
    for rt in (tax, hub):
        for name, ss in _samples(rt).items():
            for s in ss:
                for k, v in s.labels.items():
                    assert k in allowed, (name, k)
                    assert allowed[k](v), (name, k, v)
                    assert CASE_REF not in v and ID not in v and not re.search(r"[0-9a-f]{24}", v), (name, k, v)


def test_access_lines_are_json_and_the_traceparent_reaches_the_provider_audit(bed):
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.configure("info", "json", stream=buf)
    try:
        bound = logs.start_call([("traceparent", TRACE)])   # as if the hub were handling a call
        try:
            _evaluate(bed)
        finally:
            logs.end_call(bound)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    lines = [json.loads(x) for x in buf.getvalue().splitlines() if x.strip()]
    acc = [x for x in lines if x["component"] == "hedui.access" and x["method"] == "/hedui.v1.PseudonymService/Evaluate"]
    assert len(acc) == 1, lines
    a = acc[0]
    assert (a["level"], a["peer"], a["code"]) == ("info", "hub", "OK") and a["ms"] >= 0
    # Same trace, a new parent id (the hub's outgoing call is a child span).
    assert a["traceparent"].startswith(TRACE[:36]) and a["traceparent"] != TRACE
    assert re.fullmatch(r"[0-9a-f]{16}", a["request_id"])
    ev = _entries(bed.runtime("tax"), "pseudonym.evaluated")
    assert [e["traceparent"] for e in ev] == [a["traceparent"]]
    assert CASE_REF not in buf.getvalue() and ID not in buf.getvalue()


@pytest.mark.parametrize("header,kept", [
    (TRACE, True),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),   # all-zero trace id
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),   # unknown version
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),   # upper case
    ("garbage", False), ("", False),
])
def test_traceparent_parsing(header, kept):
    assert (logs.parse_traceparent(header) == header) is kept


def test_a_call_without_traceparent_starts_a_trace(bed):
    tax = bed.runtime("tax")
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        c.node.Ping(node_pb2.PingRequest(nonce=b"x"), timeout=5)
    _evaluate(bed)
    tp = _entries(tax, "pseudonym.evaluated")[0]["traceparent"]
    assert logs.parse_traceparent(tp) == tp


@given(st.text(max_size=80) | st.from_regex(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", fullmatch=True))
def test_traceparent_parser_never_raises_and_keeps_only_wellformed(s):
    got = logs.parse_traceparent(s)
    assert got is None or (got == s.strip() and re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", got))
