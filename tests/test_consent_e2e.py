"""Consent over the wire with a fixed clock (issue 18c), the department on SQLite and on
PostgreSQL: ``hedui consent revoke`` reaches the department with the hub's next request and
holds after the department restarts; a periodic review comes no sooner than its interval; a
one-off authorisation serves one case. Every refusal is a typed status with its reason and a
``refusal`` entry at the department, and a ``query.failed`` entry at the hub.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import grpc
import pytest
from conftest import scratch_database
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from typer.testing import CliRunner

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit.tables import audit_entries
from hedui.node.cli._app import app
from hedui.node.client import PeerClient
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification import consent
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.hub_tables import cases
from hedui.v1 import common_pb2, lookup_pb2

SEED = 11
NOW = dt.datetime(2026, 11, 30, 3, 0, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def bed(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("consent-e2e")
    with _store(request) as tax_url:
        clock = FixedClock(NOW)
        tb = Testbed(root / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                     residents=60, data_seed=SEED, clock=clock, valid_days=120,
                     store=(lambda code: tax_url if code == "tax" and tax_url else "sqlite:///node.db"))
        tb.create()
        os.environ[PASSPHRASE_ENV] = tb.passphrase
        tb.build_indexes()
        tb.start()
        try:
            yield tb
        finally:
            tb.stop()


class _store:
    """The department's store URL: None (the testbed's SQLite file) or a scratch PostgreSQL database."""

    def __init__(self, request) -> None:
        self.request, self.cm = request, None

    def __enter__(self):
        if self.request.param == "sqlite":
            return None
        self.cm = scratch_database(self.request.getfixturevalue("pg_admin"))
        return self.cm.__enter__()

    def __exit__(self, *exc):
        if self.cm is not None:
            self.cm.__exit__(*exc)


def _ids(start, n=2):
    return [resident(i, SEED).id_number for i in range(start, start + n)]


def _open(bed, scan, ids, purpose="dibao"):
    return open_case(bed.runtime("hub"), [(i, "member") for i in ids], purpose=purpose,
                     consent_digest=consent_digest_of(scan), operator="cw01", region="370304")


def _entries(rt, kind):
    rt.audit.log.flush()
    with rt.engine.connect() as c:
        return [json.loads(bytes(e))["fields"] for e in c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == kind)).scalars()]


def _refused(bed, ref, reason):
    """The department logged a refusal of this case with ``reason``; the hub a failed query."""
    assert any(e.get("outcome") == reason and e.get("case_ref") == ref for e in _entries(bed.runtime("tax"), "refusal"))
    assert any(e.get("case_ref") == ref and e.get("status") == "refused" and reason in e.get("reason", "")
               for e in _entries(bed.runtime("hub"), "query.failed"))


def _outcome(res):
    [o] = res.outcomes
    return o.status, o.reason


def test_consent_revoked_with_the_cli_is_refused_and_stays_refused_after_a_restart(bed):
    hub = bed.runtime("hub")
    ref = _open(bed, b"scan-cli-revoke", _ids(1))
    cfg = str(bed.config_path("hub"))
    r = CliRunner().invoke(app, ["consent", "revoke", ref, "-c", cfg, "--reason", "household withdrew its authorisation",
                                 "--operator", "sec01", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    with hub.engine.connect() as c:
        case = c.execute(select(cases).where(cases.c.case_ref == ref)).one()
    assert out["consent_digest"] == consent.consent_digest(consent.issue_for_case(hub, case)).hex() and out["serial"] >= 1
    assert any(e.get("case_ref") == ref and e["operator"] == "sec01" for e in _entries(hub, "consent.revoked"))
    listed = json.loads(CliRunner().invoke(app, ["consent", "list", "-c", cfg, "--revoked", "--json"]).output)
    assert [(x["case_ref"], x["reason"], x["revoked_by"]) for x in listed] == [(ref, "household withdrew its authorisation", "sec01")]
    table = CliRunner().invoke(app, ["consent", "list", "-c", cfg])
    assert table.exit_code == 0 and ref in table.output, table.output

    status, reason = _outcome(run_case(hub, ref))
    assert status == "refused" and "CONSENT_REVOKED" in reason
    _refused(bed, ref, "CONSENT_REVOKED")

    # The department restarts: what it learned is in its store. A hand-made request under the
    # revoked record with no list, or the list from before the revocation, is still refused.
    bed.stop(["tax"])
    bed.start(["tax"])
    ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref=ref, consent_digest=consent_digest_of(b"scan-cli-revoke"),
                                    request_id=os.urandom(16), operator="cw01", consent=consent.issue_for_case(hub, case))
    req = lookup_pb2.LookupRequest(context=ctx, epoch=1, tokens=[os.urandom(64)],
                                   queries=[lookup_pb2.FieldQuery(field="income_last_year")], reference_month="2026-10")
    for lst in (None, consent.sign_revocations(hub.signer_for("answers"), "hub", [], hub.clock.now())):
        if lst is not None:
            req.context.revocations.CopyFrom(lst)
        req.context.request_id = os.urandom(16)
        with PeerClient.to_member(hub, "tax") as c, pytest.raises(grpc.RpcError) as e:
            c.lookup.Lookup(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and e.value.details().startswith("REVOCATIONS_STALE")
    status, reason = _outcome(run_case(hub, ref))  # with the hub's current list
    assert status == "refused" and "CONSENT_REVOKED" in reason


def test_a_periodic_review_comes_no_sooner_than_its_interval(bed):
    hub, clock = bed.runtime("hub"), bed.clock
    ids = _ids(5)
    first = _open(bed, b"scan-periodic", ids, purpose="periodic_review")
    assert run_case(hub, first).outcomes[0].status == "ok"
    clock.advance(dt.timedelta(days=3))
    second = _open(bed, b"scan-periodic", ids, purpose="periodic_review")  # a standing authorisation
    status, reason = _outcome(run_case(hub, second))
    assert status == "refused" and "CONSENT_TOO_SOON" in reason
    _refused(bed, second, "CONSENT_TOO_SOON")
    clock.advance(dt.timedelta(days=consent.PERIODIC_INTERVAL_DAYS - 3))
    assert run_case(hub, second).outcomes[0].status == "ok"  # 28 days after the first use


def test_a_one_off_authorisation_serves_one_case(bed):
    hub = bed.runtime("hub")
    ids = _ids(9)
    first = _open(bed, b"scan-one-off", ids)
    assert run_case(hub, first).outcomes[0].status == "ok"
    assert run_case(hub, first, rerun_ok=True).outcomes[0].status == "ok"  # the same case again
    # The hub lets the same household's authorisation open another case (a review); a one-off
    # purpose under it is refused by the department.
    second = _open(bed, b"scan-one-off", ids, purpose="tekun")
    status, reason = _outcome(run_case(hub, second))
    assert status == "refused" and "CONSENT_REUSED" in reason
    _refused(bed, second, "CONSENT_REUSED")


def test_an_outsider_recomputes_the_consent_binding_of_every_answer_from_the_export(bed, tmp_path):
    """From the exported case alone — protobuf schemas, SHA-256, Ed25519 and the DSSE PAE, no
    Hedui verifier — each answer's request digest, its consent record's digest, purpose and
    case, and the hub's signature on the record are recomputed and match what the department
    signed."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from hedui.node.verification.evidence import export_case
    from hedui.v1 import directory_pb2

    def pae(t: str, body: bytes) -> bytes:  # DSSE v1 pre-authentication encoding
        return b"DSSEv1 %d %s %d %s" % (len(t), t.encode(), len(body), body)

    hub = bed.runtime("hub")
    ref = _open(bed, b"scan-outsider", _ids(17))
    assert run_case(hub, ref).outcomes[0].status == "ok"
    doc = json.loads(json.dumps(export_case(hub.engine, ref), default=str))
    answered = [a for a in doc["answers"] if a["envelope"]]
    assert answered and len(answered) == len(doc["answers"])
    for a in answered:
        raw = base64.b64decode(a["request"])
        assert hashlib.sha256(raw).hexdigest() == a["request_digest"]
        req = lookup_pb2.LookupRequest.FromString(raw)
        env = common_pb2.Envelope.FromString(base64.b64decode(a["envelope"]))
        ans = lookup_pb2.LookupAnswer.FromString(env.payload)
        rec_env = req.context.consent
        rec = common_pb2.ConsentRecord.FromString(rec_env.payload)
        assert bytes(ans.consent_digest) == hashlib.sha256(rec_env.payload).digest()
        assert (ans.purpose, ans.case_ref, bytes(ans.request_digest).hex()) == (rec.purpose, rec.case_ref, a["request_digest"])
        assert (rec.case_ref, rec.hub, bytes(rec.scan_digest)) == (ref, "hub", consent_digest_of(b"scan-outsider"))
        # The hub's key for the record, from the directory in the export.
        d_env = common_pb2.Envelope.FromString(base64.b64decode(doc["directories"][str(a["directory_version"])]))
        members = {m.code: m for m in directory_pb2.Directory.FromString(d_env.payload).members}
        key = bytes(members["hub"].answer_key) or bytes(members["hub"].signing_key)
        [sig] = rec_env.signatures
        Ed25519PublicKey.from_public_bytes(key).verify(bytes(sig.sig), pae(rec_env.payload_type, bytes(rec_env.payload)))


def test_consent_revoke_bad_input_is_one_line_and_writes_nothing(bed):
    from hedui.node.verification.hub_tables import consent_revocations

    hub = bed.runtime("hub")
    cfg = str(bed.config_path("hub"))
    ref = _open(bed, b"scan-bad-revoke", _ids(25))
    with hub.engine.connect() as c:
        before = c.execute(select(consent_revocations)).all()
    ident = resident(3, SEED).id_number
    for args, want in [
        (["HUB-2099-999999", "--reason", "x", "--operator", "sec01"], "case: got"),
        (["HUB\x00-1", "--reason", "x", "--operator", "sec01"], "case: got 6 characters"),
        ([ident, "--reason", "x", "--operator", "sec01"], "identity number"),  # refused before the command runs
        ([ref, "--reason", f"withdrawn by {ident}", "--operator", "sec01"], "identity number"),
        ([ref, "--reason", "   ", "--operator", "sec01"], "reason: got"),
        ([ref, "--reason", "x" * 301, "--operator", "sec01"], "reason: got 301"),
        ([ref, "--reason", "withdrawn", "--operator", "o" * 65], "operator: got 65"),
    ]:
        r = CliRunner().invoke(app, ["consent", "revoke", *args, "-c", cfg])
        assert r.exit_code != 0 and want in r.output and "Traceback" not in r.output, r.output
        assert ident not in r.output
    with hub.engine.connect() as c:
        assert c.execute(select(consent_revocations)).all() == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(max_size=320), operator=st.text(max_size=70))
@example(reason="with a \x00 byte", operator="sec01")  # PostgreSQL text cannot hold NUL
@example(reason="two\nlines", operator="sec01")
def test_any_revocation_reason_and_operator_is_stored_or_refused_typed(bed, reason, operator):
    """Whatever text: a typed refusal with nothing written, or a row and a consent.revoked entry."""
    from hedui.adapters import idnum
    from hedui.common.errors import HeduiError
    from hedui.node.verification.hub_tables import consent_revocations

    hub = bed.runtime("hub")
    digest = os.urandom(32)
    try:
        consent.revoke(hub, digest, operator=operator, reason=reason, case_ref="HUB-2026-000001")
    except HeduiError as exc:
        assert exc.reason in ("INVALID_ARGUMENT", "IDENTITY_IN_TEXT")
        with hub.engine.connect() as c:
            assert c.execute(select(consent_revocations).where(consent_revocations.c.consent_digest == digest)).first() is None
        return
    assert not idnum.contains(reason) and not idnum.contains(operator)
    with hub.engine.connect() as c:
        row = c.execute(select(consent_revocations).where(consent_revocations.c.consent_digest == digest)).one()
    assert (row.reason, row.operator) == (reason, operator)
