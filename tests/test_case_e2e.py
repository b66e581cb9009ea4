"""Household verification end to end: hub + departments on loopback over mTLS, real OPRF,
real signed answers, policy refusals, unavailable departments, offline evidence checks."""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal

import grpc
import pytest
from sqlalchemy import create_engine, text

from hedui.adapters.synthetic import resident
from hedui.keys import oprf
from hedui.keys.errors import OprfProofError
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import PeerClient
from hedui.node.errors import InvalidArgument
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.consent import issue_for_context
from hedui.node.verification.report import build_report, render_html
from hedui.node.verification.rules import default_rules
from hedui.v1 import common_pb2, lookup_pb2, pseudonym_pb2

SEED = 7
HOUSEHOLD = [1, 2, 3, 4]
CODES = ["hub", "tax", "hrss", "realestate", "vehicles"]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    names = {"hub": ["hub"], "tax": ["provider"], "hrss": ["provider"], "realestate": ["provider"], "vehicles": ["provider"]}
    tb = Testbed(tmp_path_factory.mktemp("case") / "fed", [MemberPlan(c, c, r) for c, r in names.items()], residents=300, data_seed=SEED)
    tb.create()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes()
    tb.start()
    yield tb
    tb.stop()


def _ids():
    return [resident(n, SEED).id_number for n in HOUSEHOLD]


_SCANS = iter(range(1, 10_000))


def _open(tb, purpose="dibao", expenditure=None, members=None, reference_month=None, scan=None):
    """Each case under an authorisation of its own (a one-off authorisation serves one case:
    departments refuse it for a second, issue 18c)."""
    hub = tb.runtime("hub")
    scan = scan or b"signed authorisation scan %d" % next(_SCANS)
    return open_case(hub, [(i, "member") for i in (members or _ids())], purpose=purpose,
                     consent_digest=consent_digest_of(scan), operator="cw01", region="370304",
                     expenditure=expenditure, reference_month=reference_month)


def _expected_wages(tb, identity: str) -> Decimal | None:
    """Independent of Hedui: straight SQL over the department's own table."""
    eng = create_engine(f"sqlite:///{tb.member_dir('hrss') / 'dept.db'}")
    # The case's reference month R is the month before the day it was opened (the hub's clock,
    # federation zone); wages count over the 12 whole months R-12 .. R-1.
    today = tb.runtime("hub").clock.today()
    y, m = divmod(today.year * 12 + today.month - 1 - 13, 12)
    start = dt.date(y, m + 1, 1).isoformat()
    first_of_ref = (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    end = (first_of_ref - dt.timedelta(days=1)).isoformat()
    with eng.connect() as c:
        person = c.execute(text("SELECT id FROM ss_person WHERE id_number = :i"), {"i": identity}).scalar()
        if person is None:
            return None
        fen = c.execute(text("SELECT COALESCE(SUM(wage_fen), 0) FROM ss_monthly WHERE person_id = :p AND month >= :s AND month <= :t"),
                        {"p": person, "s": start, "t": end}).scalar()
    eng.dispose()
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


def test_full_case_report_matches_department_data(bed):
    ref = _open(bed, purpose="temporary_assistance", expenditure=Decimal("30000"))
    res = run_case(bed.runtime("hub"), ref)
    assert res.complete, res.outcomes
    rep = build_report(bed.runtime("hub").engine, ref, default_rules())
    assert rep["conclusion"] == "complete" and rep["unavailable"] == []
    ids = _ids()
    wants = [_expected_wages(bed, i) for i in ids]
    assert any(w for w in wants), "the synthetic household should have wages somewhere"
    for pos in range(len(ids)):
        want = wants[pos]
        got = [f for f in rep["fields"] if f["member"] == pos and f["field"] == "wages_12m"]
        assert len(got) == 1
        if want is None:
            assert got[0]["found"] is False and got[0]["present"] is False  # no record, not zero
        else:
            assert Decimal(got[0]["value"]) == want
    # Every figure carries the evidence id and signer.
    assert all(f["evidence"] and f["signer"].startswith(f["provider"] + "/") for f in rep["fields"])
    assert rep["temporary_assistance"]["expenditure"] == "30000.00"
    html = render_html(rep, "zh")
    assert "居民家庭经济状况核对报告" in html and ref in html
    assert "Household economic status" in render_html(rep, "en")
    for ident in ids:  # masked, never raw
        assert ident not in html and ident not in str(rep)


def test_unavailable_department_is_never_zero(bed):
    ref = _open(bed)
    bed.stop(["vehicles"])
    try:
        res = run_case(bed.runtime("hub"), ref, timeout=2, retries=1)
        status = {o.provider: o.status for o in res.outcomes}
        assert status["vehicles"] == "unavailable" and status["tax"] == "ok"
        rep = build_report(bed.runtime("hub").engine, ref, default_rules())
        assert rep["conclusion"] == "incomplete"
        assert [u["provider"] for u in rep["unavailable"]] == ["vehicles"]
        vehicle_flag = next(a for a in rep["assets"] if a["flag"] == "vehicle")
        assert vehicle_flag["state"] == "unknown"
    finally:
        bed.start(["vehicles"])
    # Re-running later completes only what was missing.
    res2 = run_case(bed.runtime("hub"), ref)
    assert [o.provider for o in res2.outcomes] == ["vehicles"] and res2.complete


def _lookup_request(bed, *, fields=("income_last_year",), purpose=common_pb2.PURPOSE_DIBAO, consent=b"c" * 32, rid=None, ops=None,
                    month="2026-08"):
    hub = bed.runtime("hub")
    m = hub.directory.member("tax")
    state = oprf.blind(_ids()[:2])
    with PeerClient.to_member(hub, "tax") as c:
        ev = c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(
            context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="T-1", request_id=os.urandom(16)),
            epoch=1, blinded_elements=state.blinded), timeout=10)
    tokens = oprf.finalize(state, list(ev.evaluated_elements), ev.proof, bytes(m.oprf_keys[0].public_key))
    queries = [lookup_pb2.FieldQuery(field=f) for f in fields]
    if ops:
        queries = ops
    ctx = common_pb2.RequestContext(purpose=purpose, case_ref="T-1", consent_digest=consent, request_id=rid or os.urandom(16))
    if len(consent) == 32 and purpose != common_pb2.PURPOSE_UNSPECIFIED:  # the hub's signed record (issue 18)
        ctx.consent.CopyFrom(issue_for_context(hub.signer, "hub", ctx, members=len(tokens), issued_at=hub.clock.now()))
    return lookup_pb2.LookupRequest(context=ctx, epoch=1, tokens=tokens, queries=queries, reference_month=month)


def _call(bed, req):
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        return c.lookup.Lookup(req, timeout=10)


@pytest.mark.parametrize("kwargs, code, reason", [
    ({"fields": ("no_such_field",)}, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_FIELD"),
    ({"purpose": common_pb2.PURPOSE_UNSPECIFIED}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_PURPOSE"),
    ({"consent": b""}, grpc.StatusCode.PERMISSION_DENIED, "CONSENT_MISSING"),
    ({"consent": b"short"}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_CONSENT_DIGEST"),
    ({"ops": [lookup_pb2.FieldQuery(field="income_last_year", op=lookup_pb2.OPERATOR_GE, operand="abc")]},
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    # Every window is relative to the reference month: a lookup without one is refused (issue 12).
    ({"month": ""}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REFERENCE_MONTH"),
    ({"month": "2026-13"}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REFERENCE_MONTH"),
    ({"month": "202608"}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REFERENCE_MONTH"),
])
def test_policy_refusals_have_reasons_and_are_audited(bed, kwargs, code, reason):
    req = _lookup_request(bed, **kwargs)
    with pytest.raises(grpc.RpcError) as e:
        _call(bed, req)
    assert e.value.code() == code and e.value.details().startswith(reason), e.value.details()
    from sqlalchemy import select

    from hedui.node.audit.tables import audit_entries

    with bed.runtime("tax").engine.connect() as c:
        entries = [bytes(r.entry) for r in c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == "refusal"))]
    assert any(reason.encode() in e for e in entries)


def test_predicate_answers_truth_not_value(bed):
    req = _lookup_request(bed, ops=[lookup_pb2.FieldQuery(field="income_last_year", op=lookup_pb2.OPERATOR_GE, operand="9600")])
    resp = _call(bed, req)
    from hedui.node.verification.protocol import request_digest, verify_answer

    ans = verify_answer(bed.runtime("hub").directory.signing_keys(), "tax", resp.answer, request_digest(req), list(req.tokens))
    for m in ans.members:
        fa = m.fields[0]
        assert fa.value == "" and fa.truth in (lookup_pb2.TRUTH_TRUE, lookup_pb2.TRUTH_FALSE, lookup_pb2.TRUTH_UNKNOWN)
        if not m.found:
            assert fa.truth == lookup_pb2.TRUTH_UNKNOWN


def test_replayed_request_id_refused_but_identical_retry_gets_same_answer(bed):
    req = _lookup_request(bed)
    first = _call(bed, req)
    again = _call(bed, req)  # a retry of the very same request: same signed answer
    assert again.answer.SerializeToString(deterministic=True) == first.answer.SerializeToString(deterministic=True)
    other = _lookup_request(bed, rid=bytes(req.context.request_id), fields=("income_last_year",))
    other.context.case_ref = "T-2"
    with pytest.raises(grpc.RpcError) as e:
        _call(bed, other)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and e.value.details().startswith("REPLAYED_REQUEST")


def test_answer_bound_to_request_digest(bed):
    from hedui.node.errors import VerificationError
    from hedui.node.verification.protocol import request_digest, verify_answer

    req = _lookup_request(bed)
    resp = _call(bed, req)
    other = lookup_pb2.LookupRequest()
    other.CopyFrom(req)
    other.context.case_ref = "T-OTHER"
    with pytest.raises(VerificationError) as e:
        verify_answer(bed.runtime("hub").directory.signing_keys(), "tax", resp.answer, request_digest(other), list(req.tokens))
    assert e.value.reason == "ANSWER_NOT_BOUND"
    tampered = type(resp.answer)()
    tampered.CopyFrom(resp.answer)
    tampered.payload = tampered.payload[:-1] + bytes([tampered.payload[-1] ^ 1])
    with pytest.raises(VerificationError):
        verify_answer(bed.runtime("hub").directory.signing_keys(), "tax", tampered, request_digest(req), list(req.tokens))


def test_bad_blinded_element_and_oversized_batch(bed):
    hub = bed.runtime("hub")
    with PeerClient.to_member(hub, "tax") as c:
        ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="T-3", request_id=os.urandom(16))
        with pytest.raises(grpc.RpcError) as e:
            c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(context=ctx, epoch=1, blinded_elements=[b"\xff" * 32]), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "INVALID_ELEMENT" in e.value.details()
        ctx.request_id = os.urandom(16)
        state = oprf.blind(["11010519491231002X"])
        with pytest.raises(grpc.RpcError) as e:
            c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(context=ctx, epoch=1, blinded_elements=state.blinded * 4097), timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "BATCH_TOO_LARGE" in e.value.details()


def test_proof_from_wrong_key_is_refused(bed):
    state = oprf.blind(_ids()[:2])
    other = oprf.ServerKey.derive(os.urandom(32), 1)
    elements, proof = other.evaluate_batch(state.blinded)
    real = bytes(bed.runtime("hub").directory.member("tax").oprf_keys[0].public_key)
    with pytest.raises(OprfProofError):
        oprf.finalize(state, elements, proof, real)


def test_case_open_rejects_bad_households(bed):
    ids = _ids()
    with pytest.raises(InvalidArgument, match=r"members\[1\]: same person as members\[0\]"):
        _open(bed, members=[ids[0], ids[0].lower()])
    bad = ids[0][:-1] + ("0" if ids[0][-1] != "0" else "1")
    with pytest.raises(InvalidArgument) as e:
        _open(bed, members=[ids[1], bad])
    assert "members[1]" in e.value.message and bad not in e.value.message
    with pytest.raises(InvalidArgument, match="purpose"):
        _open(bed, purpose="lottery")


def test_evidence_verifies_offline_and_detects_tampering(bed, tmp_path):
    import base64
    import json

    from hedui.keys.signing import load_public
    from hedui.node.verification.evidence import export_case, verify_export

    ref = _open(bed)
    assert run_case(bed.runtime("hub"), ref).complete
    doc = export_case(bed.runtime("hub").engine, ref)
    p = tmp_path / "case.json"
    p.write_text(json.dumps(doc))
    authority = load_public("authority", bed.authority.signing_pub)
    assert all(v["status"] == "ok" for v in verify_export(p, authority))
    env = bytearray(base64.b64decode(doc["answers"][0]["envelope"]))
    env[len(env) // 2] ^= 1
    doc["answers"][0]["envelope"] = base64.b64encode(bytes(env)).decode()
    p.write_text(json.dumps(doc))
    verdicts = verify_export(p, authority)
    assert verdicts[0]["status"] == "bad_signature"
    for ident in _ids():
        assert ident not in p.read_text()


def test_offline_evidence_refuses_a_directory_the_authority_did_not_sign(bed, tmp_path):
    """Issue 19: the offline check must verify each directory against the authority key, not
    trust the directory shipped inside the file (as the hub's own store may). Every answer
    is genuine here; only the directories' signatures are not the authority's."""
    import base64
    import json

    from hedui.keys import dsse
    from hedui.keys.signing import SigningKey, load_public
    from hedui.node.verification.evidence import export_case, verify_export

    ref = _open(bed)
    assert run_case(bed.runtime("hub"), ref).complete
    doc = export_case(bed.runtime("hub").engine, ref)
    authority = load_public("authority", bed.authority.signing_pub)
    p = tmp_path / "case.json"
    p.write_text(json.dumps(doc))
    assert [v["status"] for v in verify_export(p, authority)] == ["ok"] * len(doc["answers"])
    # The same directory content, signed by a key that calls itself "authority".
    rogue = SigningKey.generate("authority")
    for v, b64 in list(doc["directories"].items()):
        env = common_pb2.Envelope.FromString(base64.b64decode(b64))
        forged = dsse.sign(dsse.DIRECTORY, env.payload, [rogue])
        doc["directories"][v] = base64.b64encode(forged.SerializeToString()).decode()
    p.write_text(json.dumps(doc))
    verdicts = verify_export(p, authority)
    assert len(verdicts) == len(doc["answers"]) >= 2
    assert all(v["status"] == "bad_signature" and v["evidence"] is None for v in verdicts), verdicts
    assert all("UNKNOWN_SIGNER" in v["reason"] for v in verdicts), verdicts
    # And the genuine file checked against another authority's key is refused the same way.
    p.write_text(json.dumps(export_case(bed.runtime("hub").engine, ref)))
    assert {v["status"] for v in verify_export(p, rogue.public)} == {"bad_signature"}


FULLWIDTH = str.maketrans({str(d): chr(0xFF10 + d) for d in range(10)} | {"X": "\uff38"})


@pytest.mark.parametrize("form", [
    pytest.param(lambda n: n, id="ascii"),
    # Issue 11: the policy let a full-width number through, then the audit log refused the
    # entry and the refusal itself was never audited. One guard decides both now.
    pytest.param(lambda n: n.translate(FULLWIDTH), id="full-width"),
    pytest.param(lambda n: f"{n[:6]} {n[6:14]} {n[14:]}", id="spaced"),
    pytest.param(lambda n: n[:6] + n[8:17], id="legacy-15"),
])
def test_identity_smuggled_into_case_ref_is_refused_and_audited_without_it(bed, form):
    from sqlalchemy import func, select

    from hedui.node.audit.tables import audit_entries

    ident = _ids()[0]
    shown = form(ident)
    req = _lookup_request(bed)
    req.context.case_ref = f"case of {shown}"
    rid = bytes(req.context.request_id).hex()
    tax = bed.runtime("tax")
    tax.audit.log.flush()
    with tax.engine.connect() as c:
        before = c.execute(select(func.count()).select_from(audit_entries)).scalar_one()
    with pytest.raises(grpc.RpcError) as e:
        _call(bed, req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("IDENTITY_IN_REQUEST")
    assert shown not in e.value.details() and ident not in e.value.details()
    tax.audit.log.flush()
    with tax.engine.connect() as c:
        new = [bytes(r.entry) for r in c.execute(select(audit_entries.c.entry).where(audit_entries.c.seq >= before))]
    refusals = [json.loads(x)["fields"] for x in new if json.loads(x)["kind"] == "refusal"]
    assert [(f["request_id"], f["outcome"], f["case_ref"]) for f in refusals] == [(rid, "IDENTITY_IN_REQUEST", "[redacted]")]
    assert all(shown.encode() not in x and ident.encode() not in x for x in new)


def test_token_filter_round_trip_and_refusals():
    """Both ends of the filter format: what a provider encodes, the hub decodes exactly;
    a filter that was cut, padded or is not zlib is refused."""
    import zlib

    from hedui.node.errors import VerificationError
    from hedui.node.verification.protocol import FILTER_PREFIX, decode_token_filter, encode_token_filter

    tokens = [os.urandom(64) for _ in range(3000)]
    tokens += tokens[:10]  # repeated tokens count once
    total, chunks = encode_token_filter(tokens)
    assert total == 3000
    assert decode_token_filter(chunks, total) == {t[:FILTER_PREFIX] for t in tokens}
    assert encode_token_filter([]) == (0, [zlib.compress(b"", 6)]) and decode_token_filter(encode_token_filter([])[1], 0) == set()
    for bad, n in ((chunks, total + 1), ([chunks[0][:-5]], total), ([b"not zlib"], 1),
                   ([zlib.compress(b"x" * (FILTER_PREFIX * 2))], 2)):
        with pytest.raises(VerificationError):
            decode_token_filter(bad, n)


def test_token_filter_download_holds_every_indexed_token(bed):
    """GetTokenFilter at a department: the hub decodes the streamed filter with the shared
    protocol and finds exactly the department's index (straight SQL), including the token it
    computes itself for a household member the department holds."""
    from sqlalchemy import select

    from hedui.node.crosscheck import shards
    from hedui.node.crosscheck.filterfmt import Assembler, FilterChunk
    from hedui.node.crosscheck.wire import verify_header
    from hedui.node.verification.index_tables import token_index

    with bed.runtime("tax").engine.connect() as c:
        stored = {bytes(t) for t in c.execute(select(token_index.c.token).where(token_index.c.epoch == 1)).scalars()}
    assert len(stored) > 100
    ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_BULK_CROSS_CHECK, case_ref="XC-2026-01", request_id=os.urandom(16))
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        parts = list(c.pseudonym.GetTokenFilter(pseudonym_pb2.GetTokenFilterRequest(context=ctx, epoch=1), timeout=20))
    assert parts and {p.epoch for p in parts} == {1} and len({p.total for p in parts}) == 1
    header = verify_header(parts[0].header, bed.runtime("hub").directory.signing_keys(), "tax", epoch=1)
    assert header.total == len(stored) == parts[0].total
    asm = Assembler(header, range(1 << header.shard_bits))
    for p in parts[1:]:
        asm.add(FilterChunk(p.shard, p.offset, bytes(p.data)))
    filt = asm.result()
    assert shards.intersect(sorted(stored), filt).all()
    assert not shards.intersect([os.urandom(64) for _ in range(200)], filt).any()
    req = _lookup_request(bed)
    held = [bytes(t) for t in req.tokens if bytes(t) in stored]
    assert held and shards.intersect(held, filt).all()


def test_open_case_records_case_opened_once(bed):
    """The Python API audits the act itself (issue 11: the CLI used to, so other callers did not)."""
    from sqlalchemy import select

    from hedui.node.audit.tables import audit_entries

    hub = bed.runtime("hub")
    ref = _open(bed, reference_month="2026-08", scan=b"signed authorisation scan")
    hub.audit.log.flush()
    with hub.engine.connect() as c:
        entries = [json.loads(bytes(e)) for e in c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == "case.opened")).scalars()]
    mine = [e["fields"] for e in entries if e["fields"]["case_ref"] == ref]
    assert mine == [{"case_ref": ref, "purpose": "dibao", "operator": "cw01",
                     "consent_digest": consent_digest_of(b"signed authorisation scan").hex(), "reference_month": "2026-08"}]
