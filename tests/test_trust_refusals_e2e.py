"""Issue 18's "Bad input" list over the wire: each refused with a typed status and its reason,
and audited where it was refused (a ``refusal`` entry naming the request, the peer and the
reason).

Consent records — forged (signed by another member), expired, revoked, for the wrong purpose,
over the member count, reused for another case, used again too soon — sent by hand to a
department; a checkpoint of one member's log signed by another member, offered to a witness
through ``AuditService/Cosign``. (A server presenting another member's certificate:
tests/test_pinning.py; the evidence binding: tests/test_consent_e2e.py.)
"""

from __future__ import annotations

import datetime as dt
import json
import os

import grpc
import pytest
from sqlalchemy import select

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.keys.directory import ROLE_ANSWERS, ROLE_CHECKPOINTS
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit.note import Checkpoint, Signer
from hedui.node.audit.recorder import origin_of
from hedui.node.audit.tables import audit_entries
from hedui.node.client import PeerClient
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification import consent
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.hub_tables import cases
from hedui.v1 import audit_pb2, common_pb2, lookup_pb2

SEED = 5
NOW = dt.datetime(2026, 11, 30, 3, 0, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    tb = Testbed(tmp_path_factory.mktemp("refusals") / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 residents=40, data_seed=SEED, clock=FixedClock(NOW), valid_days=120)
    tb.create()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes()
    tb.start()
    yield tb
    tb.stop()


def _entries(rt, kind):
    rt.audit.log.flush()
    with rt.engine.connect() as c:
        return [json.loads(bytes(e))["fields"] for e in c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == kind)).scalars()]


def _case(hub, ref):
    with hub.engine.connect() as c:
        return c.execute(select(cases).where(cases.c.case_ref == ref)).one()


def _request(hub, ref, scan, *, record=None, purpose=common_pb2.PURPOSE_DIBAO, tokens=2):
    ctx = common_pb2.RequestContext(purpose=purpose, case_ref=ref, consent_digest=consent_digest_of(scan), request_id=os.urandom(16),
                                    operator="cw01", **consent.context_fields(hub, _case(hub, ref)))
    if record is not None:
        ctx.consent.CopyFrom(record)
    return lookup_pb2.LookupRequest(context=ctx, epoch=1, tokens=[os.urandom(64) for _ in range(tokens)],
                                    queries=[lookup_pb2.FieldQuery(field="income_last_year")], reference_month="2026-10")


def _open(bed, scan, start, purpose="dibao", n=2):
    return open_case(bed.runtime("hub"), [(resident(i, SEED).id_number, "member") for i in range(start, start + n)], purpose=purpose,
                     consent_digest=consent_digest_of(scan), operator="cw01", region="370304")


def _record(hub, ref, scan, **kw):
    """A record for case ``ref`` signed by ``signer`` (default: the hub's answers key)."""
    signer = kw.pop("signer", None) or hub.signer_for(ROLE_ANSWERS)
    args = dict(hub="hub", scan_digest=consent_digest_of(scan), purpose="dibao", case_ref=ref, max_members=2,
                issued_at=hub.clock.now(), operator="cw01") | kw
    return consent.issue(signer, **args)


def _attack(bed, name):
    """Builds the request of one attack (after any legitimate use it needs first)."""
    hub, tax = bed.runtime("hub"), bed.runtime("tax")
    scan = f"scan-{name}".encode()
    if name == "forged":
        ref = _open(bed, scan, 1)
        return _request(hub, ref, scan, record=_record(hub, ref, scan, signer=tax.signer_for(ROLE_ANSWERS)))
    if name == "expired":
        ref = _open(bed, scan, 3)
        return _request(hub, ref, scan, record=_record(hub, ref, scan, issued_at=hub.clock.now() - dt.timedelta(days=91)))
    if name == "wrong_purpose":
        ref = _open(bed, scan, 5)
        return _request(hub, ref, scan, purpose=common_pb2.PURPOSE_TEKUN)
    if name == "over_count":
        ref = _open(bed, scan, 7)
        return _request(hub, ref, scan, tokens=3)
    if name == "revoked":
        ref = _open(bed, scan, 9)
        consent.revoke_case(hub, ref, reason="withdrawn", operator="sec01")
        return _request(hub, ref, scan)
    if name == "reused":
        ref = _open(bed, scan, 11)
        assert run_case(hub, ref).outcomes[0].status == "ok"
        other = _open(bed, scan, 11)  # the hub lets the household's authorisation open another case
        return _request(hub, other, scan)
    if name == "too_soon":
        ref = _open(bed, scan, 13, purpose="periodic_review")
        assert run_case(hub, ref).outcomes[0].status == "ok"
        again = _open(bed, scan, 13, purpose="periodic_review")
        return _request(hub, again, scan, purpose=common_pb2.PURPOSE_PERIODIC_REVIEW)
    raise AssertionError(name)


@pytest.mark.parametrize("name, reason", [
    ("forged", "CONSENT_FORGED"),
    ("expired", "CONSENT_EXPIRED"),
    ("wrong_purpose", "CONSENT_WRONG_PURPOSE"),
    ("over_count", "CONSENT_OVER_COUNT"),
    ("revoked", "CONSENT_REVOKED"),
    ("reused", "CONSENT_REUSED"),
    ("too_soon", "CONSENT_TOO_SOON"),
])
def test_bad_consent_is_refused_with_its_reason_and_audited(bed, name, reason):
    hub, tax = bed.runtime("hub"), bed.runtime("tax")
    req = _attack(bed, name)
    with PeerClient.to_member(hub, "tax") as c, pytest.raises(grpc.RpcError) as e:
        c.lookup.Lookup(req, timeout=10)
    assert e.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
    assert e.value.details().startswith(reason), e.value.details()
    rid = bytes(req.context.request_id).hex()
    [entry] = [x for x in _entries(tax, "refusal") if x.get("request_id") == rid]
    assert (entry["outcome"], entry["peer"], entry["case_ref"]) == (reason, "hub", req.context.case_ref)
    # Nothing was answered: no answer.sent for this request.
    assert not [x for x in _entries(tax, "answer.sent") if x.get("request_id") == rid]


def test_a_checkpoint_of_another_members_log_is_refused_by_the_witness_and_audited(bed):
    """tax signs, with its own valid checkpoint key, a checkpoint claiming to be the hub's log
    and asks the hub to cosign it: refused before any cosignature, and the refusal logged."""
    hub, tax = bed.runtime("hub"), bed.runtime("tax")
    fed = hub.directory.msg.federation
    forged = Checkpoint(origin_of(fed, "hub"), 1, b"\x11" * 32).sign(Signer(origin_of(fed, "tax"), tax.signer_for(ROLE_CHECKPOINTS).private_key))
    before = len(_entries(hub, "refusal"))
    with PeerClient.to_member(tax, "hub") as c, pytest.raises(grpc.RpcError) as e:
        c.audit.Cosign(audit_pb2.CosignRequest(checkpoint=common_pb2.SignedCheckpoint(note=forged.encode())), timeout=10)
    assert e.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED)
    reason = e.value.details().split(":")[0]
    assert reason.startswith(("CHECKPOINT_", "NOTE_", "UNKNOWN_KEY")), e.value.details()
    new = _entries(hub, "refusal")[before:]
    assert [(x["peer"], x["method"], x["outcome"]) for x in new] == [("tax", "/hedui.v1.AuditService/Cosign", reason)]
