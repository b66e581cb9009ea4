"""Consent records (issue 18 part B, item 1), each finding reproduced as an attack.

Unit level: :func:`check_consent` against forged, expired, revoked, wrong-purpose, wrong-case,
over-count records and stale revocation lists. End to end (hub + a department over mTLS): the
signed answer binds the record, both audit logs name it, a revoked record is refused, an
authorisation cannot be reused for another household, and the evidence export carries the
whole request so the binding is recomputed offline.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hedui.adapters.synthetic import resident
from hedui.common.errors import HeduiError
from hedui.keys import dsse
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.keys.signing import SigningKey
from hedui.node.audit.tables import audit_entries
from hedui.node.client import PeerClient
from hedui.node.errors import PermissionDenied
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification import consent
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.hub_tables import case_answers, cases
from hedui.v1 import common_pb2, lookup_pb2

T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)
SCAN = hashlib.sha256(b"scan").digest()
HUB = SigningKey.generate("hub")
OTHER = SigningKey.generate("tax")  # a member key, but not the caller's


def _ctx(purpose=common_pb2.PURPOSE_DIBAO, case_ref="HUB-2026-000001"):
    return common_pb2.RequestContext(purpose=purpose, case_ref=case_ref, consent_digest=SCAN, request_id=os.urandom(16), operator="cw01")


def _keys():
    return {HUB.keyid: HUB.public, OTHER.keyid: OTHER.public}


_ENGINES: list = []


@pytest.fixture(scope="module", autouse=True)
def _unit_store(tmp_path_factory):
    """One SQLite store for the unit tests' revocation states (each test starts it empty)."""
    from hedui.node.store import migrate
    from hedui.node.store.db import open_engine

    eng = open_engine(f"sqlite:///{tmp_path_factory.mktemp('consent-unit') / 'node.db'}")
    migrate.upgrade(eng)
    _ENGINES.append(eng)
    yield
    eng.dispose()


def _state():
    from hedui.node.verification.consent_tables import consent_lists_seen, consent_revoked_seen

    eng = _ENGINES[0]
    with eng.begin() as c:
        c.execute(consent_lists_seen.delete())
        c.execute(consent_revoked_seen.delete())
    return consent.RevocationState(eng)


def _check(ctx, *, members=2, now=T0 + dt.timedelta(days=1), state=None):
    return consent.check_consent(ctx, caller="hub", directory_keys=_keys(), members=members, now=now,
                                 revocations=state or _state())


def _with(ctx, signer=HUB, **kw):
    args = dict(members=2, issued_at=T0) | kw
    ctx.consent.CopyFrom(consent.issue_for_context(signer, "hub", ctx, **args))
    return ctx


def test_a_record_covering_the_request_is_accepted_and_named_by_its_digest():
    ctx = _with(_ctx())
    acc = _check(ctx)
    assert acc.digest == hashlib.sha256(ctx.consent.payload).digest()
    assert acc.record.max_members == 2 and acc.record.use == common_pb2.CONSENT_USE_ONE_OFF


@pytest.mark.parametrize("attack, reason", [
    ("missing", "CONSENT_MISSING"),
    ("forged_by_other_member", "CONSENT_FORGED"),
    ("forged_unknown_key", "CONSENT_FORGED"),
    ("tampered_payload", "CONSENT_FORGED"),
    ("expired", "CONSENT_EXPIRED"),
    ("not_yet_valid", "CONSENT_EXPIRED"),
    ("wrong_purpose", "CONSENT_WRONG_PURPOSE"),
    ("wrong_case", "CONSENT_WRONG_CASE"),
    ("over_count", "CONSENT_OVER_COUNT"),
    ("other_scan", "CONSENT_INVALID"),
])
def test_attacks_on_the_consent_record_are_refused(attack, reason):
    ctx = _ctx()
    members, now = 2, T0 + dt.timedelta(days=1)
    if attack == "forged_by_other_member":
        _with(ctx, signer=OTHER)
    elif attack == "forged_unknown_key":
        _with(ctx, signer=SigningKey.generate("hub"))
    elif attack == "tampered_payload":
        _with(ctx)
        rec = common_pb2.ConsentRecord.FromString(ctx.consent.payload)
        rec.max_members = 20
        ctx.consent.payload = rec.SerializeToString(deterministic=True)
    elif attack == "expired":
        _with(ctx, validity_days=30)
        now = T0 + dt.timedelta(days=30)  # not_after is exclusive
    elif attack == "not_yet_valid":
        _with(ctx)
        now = T0 - dt.timedelta(seconds=1)
    elif attack == "wrong_purpose":
        ctx.consent.CopyFrom(_with(_ctx(purpose=common_pb2.PURPOSE_TEKUN)).consent)
    elif attack == "wrong_case":
        ctx.consent.CopyFrom(_with(_ctx(case_ref="HUB-2026-000002")).consent)
    elif attack == "over_count":
        _with(ctx)
        members = 3
    elif attack == "other_scan":
        _with(ctx)
        ctx.consent_digest = hashlib.sha256(b"another scan").digest()
    with pytest.raises(HeduiError) as e:
        _check(ctx, members=members, now=now)
    assert e.value.reason == reason, e.value.message


def test_revoked_record_refused_and_an_older_list_cannot_undo_it():
    ctx = _with(_ctx())
    digest = consent.consent_digest(ctx.consent)
    state = _state()
    _check(ctx, state=state)
    old = consent.sign_revocations(HUB, "hub", [], T0)
    new = consent.sign_revocations(HUB, "hub", [b"x" * 32, digest], T0)
    ctx.revocations.CopyFrom(new)
    with pytest.raises(PermissionDenied) as e:
        _check(ctx, state=state)
    assert e.value.reason == "CONSENT_REVOKED"
    ctx.revocations.CopyFrom(old)  # an operator replays the list from before the revocation
    with pytest.raises(PermissionDenied) as e:
        _check(ctx, state=state)
    assert e.value.reason == "REVOCATIONS_STALE"
    ctx.ClearField("revocations")  # or sends none at all
    with pytest.raises(PermissionDenied) as e:
        _check(ctx, state=state)
    assert e.value.reason == "REVOCATIONS_STALE"


def test_revocation_list_signed_by_another_member_is_refused():
    ctx = _with(_ctx())
    ctx.revocations.CopyFrom(consent.sign_revocations(OTHER, "hub", [consent.consent_digest(ctx.consent)], T0))
    with pytest.raises(PermissionDenied) as e:
        _check(ctx)
    assert e.value.reason == "CONSENT_FORGED"


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_any_signed_payload_is_a_typed_refusal_or_a_record(payload):
    """The record parser over arbitrary (validly signed) bytes: never an untyped crash."""
    ctx = _ctx()
    ctx.consent.CopyFrom(dsse.sign(dsse.CONSENT, payload, [HUB]))
    try:
        _check(ctx)
    except HeduiError as exc:
        assert exc.reason.startswith("CONSENT_")


# -- end to end --------------------------------------------------------------------------------

SEED = 11


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    names = {"hub": ["hub"], "tax": ["provider"]}
    tb = Testbed(tmp_path_factory.mktemp("consent") / "fed", [MemberPlan(c, c, r) for c, r in names.items()], residents=60, data_seed=SEED)
    tb.create()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes()
    tb.start()
    yield tb
    tb.stop()


def _ids(n=2, start=1):
    return [resident(i, SEED).id_number for i in range(start, start + n)]


def _open(bed, scan=b"scan-1", ids=None, purpose="dibao"):
    return open_case(bed.runtime("hub"), [(i, "member") for i in (ids or _ids())], purpose=purpose,
                     consent_digest=consent_digest_of(scan), operator="cw01", region="370304")


def _entries(rt, kind):
    rt.audit.log.flush()
    with rt.engine.connect() as c:
        return [json.loads(bytes(e))["fields"] for e in c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == kind)).scalars()]


def _case(rt, ref):
    with rt.engine.connect() as c:
        return c.execute(select(cases).where(cases.c.case_ref == ref)).one()


def test_answer_and_both_audit_logs_bind_the_consent(bed):
    hub = bed.runtime("hub")
    ref = _open(bed)
    assert run_case(hub, ref).complete
    want = consent.consent_digest(consent.issue_for_case(hub, _case(hub, ref)))
    with hub.engine.connect() as c:
        row = c.execute(select(case_answers).where(case_answers.c.case_ref == ref)).one()
    ans = lookup_pb2.LookupAnswer.FromString(common_pb2.Envelope.FromString(row.envelope).payload)
    assert (bytes(ans.consent_digest), ans.purpose, ans.case_ref) == (want, common_pb2.PURPOSE_DIBAO, ref)
    req = lookup_pb2.LookupRequest.FromString(row.request)
    assert hashlib.sha256(row.request).digest() == bytes(row.request_digest)
    assert consent.consent_digest(req.context.consent) == want
    sent = [e for e in _entries(hub, "query.sent") if e.get("case_ref") == ref]
    got = [e for e in _entries(hub, "answer.received") if e.get("case_ref") == ref]
    recv = [e for e in _entries(bed.runtime("tax"), "answer.sent") if e.get("case_ref") == ref]
    assert sent and got and recv
    assert all(e["consent"] == want.hex() for e in sent + got + recv)


def test_revoked_consent_is_refused_and_audited_by_the_provider(bed):
    hub = bed.runtime("hub")
    ref = _open(bed, scan=b"scan-revoked", ids=_ids(start=5))
    digest = consent.consent_digest(consent.issue_for_case(hub, _case(hub, ref)))
    assert consent.revoke(hub, digest, operator="sec01") >= 1
    res = run_case(hub, ref)
    assert [(o.provider, o.status) for o in res.outcomes] == [("tax", "refused")]
    assert res.outcomes[0].reason.startswith("CONSENT_REVOKED") or "CONSENT_REVOKED" in res.outcomes[0].reason
    refusals = _entries(bed.runtime("tax"), "refusal")
    assert any(e.get("outcome") == "CONSENT_REVOKED" and e.get("case_ref") == ref for e in refusals)


def test_consent_over_count_is_refused_on_the_wire(bed):
    """A hub operator who adds a third person to a two-person authorisation's lookup."""
    hub = bed.runtime("hub")
    ref = _open(bed, scan=b"scan-count", ids=_ids(start=9))
    ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref=ref, consent_digest=consent_digest_of(b"scan-count"),
                                    request_id=os.urandom(16), operator="cw01", **consent.context_fields(hub, _case(hub, ref)))
    req = lookup_pb2.LookupRequest(context=ctx, epoch=1, tokens=[os.urandom(64) for _ in range(3)],
                                   queries=[lookup_pb2.FieldQuery(field="income_last_year")], reference_month="2026-06")
    with PeerClient.to_member(hub, "tax") as c, pytest.raises(grpc.RpcError) as e:
        c.lookup.Lookup(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and e.value.details().startswith("CONSENT_OVER_COUNT")


def test_an_authorisation_is_not_reused_for_another_household(bed):
    hub = bed.runtime("hub")
    first = _open(bed, scan=b"scan-reuse", ids=_ids(start=13))
    with pytest.raises(PermissionDenied) as e:
        _open(bed, scan=b"scan-reuse", ids=_ids(start=15))
    assert e.value.reason == "CONSENT_REUSED"
    assert any(x.get("outcome") == "CONSENT_REUSED" for x in _entries(hub, "consent.refused"))
    # Issue 18d: a one-off authorisation serves one case, even for the same household and
    # another one-off purpose; the refusal is audited with the purpose asked for.
    for purpose in ("dibao", "tekun"):
        with pytest.raises(PermissionDenied) as e:
            _open(bed, scan=b"scan-reuse", ids=_ids(start=13), purpose=purpose)
        assert e.value.reason == "CONSENT_REUSED" and first in e.value.message and "one-off" in e.value.message
    assert any(x.get("outcome") == "CONSENT_REUSED" and x.get("purpose") == "tekun" and first in x.get("detail", "")
               for x in _entries(hub, "consent.refused"))
    # A periodic review of the same household may reuse it (dynamic re-checks, 动态复核), and
    # another after it; never for another member set.
    again = _open(bed, scan=b"scan-reuse", ids=list(reversed(_ids(start=13))), purpose="periodic_review")
    third = _open(bed, scan=b"scan-reuse", ids=_ids(start=13), purpose="periodic_review")
    with pytest.raises(PermissionDenied) as e:
        _open(bed, scan=b"scan-reuse", ids=_ids(start=14), purpose="periodic_review")
    assert e.value.reason == "CONSENT_REUSED" and "another member set" in e.value.message
    with hub.engine.connect() as c:  # the refused cases wrote nothing
        assert len(c.execute(select(cases.c.case_ref).where(cases.c.consent_digest == consent_digest_of(b"scan-reuse"))).all()) == 3
    listed = [r for r in consent.reused_consents(hub.engine) if r["consent_digest"] == consent_digest_of(b"scan-reuse").hex()]
    assert listed == [{"consent_digest": consent_digest_of(b"scan-reuse").hex(), "cases": sorted([first, again, third])}]


def test_evidence_carries_the_request_and_a_swapped_consent_fails(bed, tmp_path):
    from hedui.keys.signing import load_public
    from hedui.node.verification.evidence import export_case, verify_export

    hub = bed.runtime("hub")
    ref = _open(bed, scan=b"scan-evidence", ids=_ids(start=17))
    assert run_case(hub, ref).complete
    authority = load_public("authority", bed.authority.signing_pub)
    doc = export_case(hub.engine, ref)
    p = tmp_path / "ev.json"
    p.write_text(json.dumps(doc))
    assert [v["status"] for v in verify_export(p, authority)] == ["ok"]
    # Anyone recomputes the binding from the exported request alone.
    raw = base64.b64decode(doc["answers"][0]["request"])
    assert hashlib.sha256(raw).hexdigest() == doc["answers"][0]["request_digest"]
    # Swap the consent in the exported request for another case's record, with a matching
    # request digest: the signed answer names neither, so the evidence fails.
    req = lookup_pb2.LookupRequest.FromString(raw)
    other = _open(bed, scan=b"scan-evidence-2", ids=_ids(start=19))
    req.context.consent.CopyFrom(consent.issue_for_case(hub, _case(hub, other)))
    raw2 = req.SerializeToString(deterministic=True)
    doc["answers"][0]["request"] = base64.b64encode(raw2).decode()
    p.write_text(json.dumps(doc))
    [v] = verify_export(p, authority)
    assert v["status"] == "bad_signature" and "ANSWER_NOT_BOUND" in v["reason"]
    doc["answers"][0]["request_digest"] = hashlib.sha256(raw2).hexdigest()
    p.write_text(json.dumps(doc))
    [v] = verify_export(p, authority)
    assert v["status"] == "bad_signature" and "ANSWER_NOT_BOUND" in v["reason"]


def test_audit_reconcile_lists_an_authorisation_used_for_several_cases(bed):
    from hedui.node.audit.reconcile import reconcile

    hub = bed.runtime("hub")
    a = _open(bed, scan=b"scan-review", ids=_ids(start=21))
    b = _open(bed, scan=b"scan-review", ids=_ids(start=21), purpose="periodic_review")  # the household's periodic review
    hub.audit.log.flush()
    bed.runtime("tax").audit.log.flush()
    r = reconcile(hub.engine, {"tax": bed.runtime("tax").engine}, hub_code="hub")
    want = {"consent_digest": consent_digest_of(b"scan-review").hex(), "cases": sorted([a, b])}
    assert want in r.consent_reused
    assert all(len(x["cases"]) > 1 for x in r.consent_reused)
    assert want in r.to_dict()["consent_reused"]
    # The consent each side logged for each query agrees (a mismatch would be listed).
    assert not [m for m in r.request_mismatches if "consent" in m["detail"]]


def test_the_answer_must_bind_the_consent_record_sent_whether_its_digest_is_given_or_computed():
    """``check_binding`` (the hub's end, issue 18): run_case passes the record's digest it
    computed once per case (``sent``, issue 16); without it the digest is computed from the
    request. Either way an answer naming another record, purpose or case is refused."""
    from hedui.node.errors import Reason, VerificationError
    from hedui.node.verification import consent
    from hedui.v1 import common_pb2, lookup_pb2

    hub = SigningKey.generate("hub")
    record = consent.issue(hub, hub="hub", scan_digest=bytes(32), purpose="dibao", case_ref="HUB-2026-000001", max_members=2,
                           issued_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), operator="cw07")
    ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="HUB-2026-000001", consent=record)
    req = lookup_pb2.LookupRequest(context=ctx)
    digest = consent.consent_digest(record)
    bound = lookup_pb2.LookupAnswer(consent_digest=digest, purpose=common_pb2.PURPOSE_DIBAO, case_ref="HUB-2026-000001")
    consent.check_binding(bound, req)
    consent.check_binding(bound, req, digest)
    other = hashlib.sha256(b"another record").digest()
    for answer, sent in ((lookup_pb2.LookupAnswer(consent_digest=other, purpose=common_pb2.PURPOSE_DIBAO,
                                                  case_ref="HUB-2026-000001"), None),
                         (bound, other),   # the digest the caller says it sent is not the one bound
                         (lookup_pb2.LookupAnswer(consent_digest=digest, purpose=common_pb2.PURPOSE_DIBAO,
                                                  case_ref="HUB-2026-000002"), digest)):
        with pytest.raises(VerificationError) as e:
            consent.check_binding(answer, req, sent)
        assert e.value.reason == Reason.ANSWER_NOT_BOUND
