"""Equivalence (issue 16 item 3): the provider's exchange writes on the driver's cursor
(:class:`hedui.node.store.raw.Prepared` — quota windows, request id, replay prune, consent
use, audit head, entries and tree nodes) store exactly the rows the Core path stored.

Each scenario runs twice on the same store (SQLite and PostgreSQL): once as it ships, once with
every ``Prepared`` executed by SQLAlchemy Core (``conn.execute(stmt, params)``, what the code
did before). Between the runs the tables are emptied. The outcomes (committed, or the refusal)
and every row of the tables written must be equal. Scenarios are drawn by hypothesis: Lookups
and Evaluations over several minutes (new quota windows, the per-minute limit overrun and
rolled back, replay prunes), one-off consent over several cases (a second case refused), and
enough audit entries that the tree writes nodes at several levels (tile height 1).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hedui.common.clock import FixedClock
from hedui.common.errors import HeduiError
from hedui.keys.directory import TrustedDirectory
from hedui.keys.signing import SigningKey
from hedui.node import policy
from hedui.node.audit.entry import Kind
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Signer
from hedui.node.audit.tables import audit_entries, audit_head, audit_nodes
from hedui.node.store.raw import Prepared
from hedui.node.store.tables import quota_counters, seen_requests
from hedui.node.verification import consent
from hedui.node.verification.consent_state import check_use
from hedui.node.verification.consent_tables import consent_uses
from hedui.v1 import common_pb2, directory_pb2

LOOKUP = "/hedui.v1.LookupService/Lookup"
EVALUATE = "/hedui.v1.PseudonymService/Evaluate"
T0 = datetime(2026, 11, 30, 3, 0, 30, tzinfo=UTC)
ORIGIN = "equivalence.hedui/tax"
SIGNER = Signer.generate(ORIGIN)
HUB = SigningKey.generate("hub")
TABLES = [quota_counters, seen_requests, consent_uses, audit_entries, audit_nodes, audit_head]


def _records(n: int) -> list[tuple[common_pb2.ConsentRecord, bytes]]:
    out = []
    for i in range(n):
        env = consent.issue(HUB, hub="hub", scan_digest=hashlib.sha256(b"scan %d" % (i // 2)).digest(), purpose="dibao",
                            case_ref=f"HUB-2026-{i:06d}", max_members=3, issued_at=T0, operator="cw01")
        out.append((common_pb2.ConsentRecord.FromString(env.payload), consent.consent_digest(env)))
    return out


RECORDS = _records(4)   # records 0/1 and 2/3 share a scan: the second case of each is refused


def _core_mode(mp: pytest.MonkeyPatch) -> None:
    """Every Prepared runs through SQLAlchemy Core, as the statements did before."""
    def run(self, conn, params=None):
        r = conn.execute(self.stmt, dict(params or {}))
        return [tuple(x) for x in r] if r.returns_rows else []

    def rowcount(self, conn, params=None):
        return conn.execute(self.stmt, dict(params or {})).rowcount

    def run_many(self, conn, rows):
        if rows:
            conn.execute(self.stmt, [dict(r) for r in rows])

    mp.setattr(Prepared, "run", run)
    mp.setattr(Prepared, "rowcount", rowcount)
    mp.setattr(Prepared, "run_many", run_many)


def _reset(engine) -> None:
    with engine.begin() as c:
        for t in TABLES:
            c.execute(t.delete())
    policy._over.pop(engine, None)
    policy._last_prune.pop(engine, None)


def _dump(engine) -> dict[str, list[tuple]]:
    with engine.connect() as c:
        return {t.name: [tuple(r) for r in c.execute(select(t).order_by(*t.primary_key.columns))] for t in TABLES}


def _runtime(engine, clock: FixedClock, log: AuditLog, *, per_minute: int = 3, per_day: int = 50):
    rules = [directory_pb2.AccessRule(caller="hub", provider="tax", method=m, purposes=[common_pb2.PURPOSE_DIBAO],
                                      fields=["income"], per_minute=per_minute, per_day=per_day) for m in (LOOKUP, EVALUATE)]
    msg = directory_pb2.Directory(version=1, policy=rules, members=[
        directory_pb2.Member(code="tax", fields=[directory_pb2.FieldSpec(name="income")]), directory_pb2.Member(code="hub")])
    audit = SimpleNamespace(prepare=log.prepare_many, write_in=log.write_in, transact=log.group.run, committed=lambda seqs: None)
    return SimpleNamespace(directory=TrustedDirectory(common_pb2.Envelope(), msg), member="tax", engine=engine, clock=clock,
                           config=SimpleNamespace(provider=SimpleNamespace(replay_window_hours=1)), audit=audit)


def _scenario(engine, ops) -> list[str]:
    """Runs ``ops`` as a provider would; returns each one's outcome."""
    clock = FixedClock(T0)
    log = AuditLog(engine, ORIGIN, SIGNER, tile_height=1, clock=clock.now)
    rt = _runtime(engine, clock, log)
    out = []
    try:
        for i, (kind, minutes, rec_i, n_tokens, month) in enumerate(ops):
            clock.set(T0 + timedelta(minutes=minutes))
            rid = hashlib.sha256(b"request %d" % i).digest()[:16]
            ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, request_id=rid, case_ref=f"C-{rec_i}",
                                            consent_digest=RECORDS[rec_i][1])
            base = {"peer": "hub", "purpose": "dibao", "case_ref": ctx.case_ref, "request_id": rid.hex()}
            try:
                if kind == "evaluate":
                    grant = policy.check(rt, "hub", EVALUATE, ctx, batch=n_tokens, need_consent=False, replay_guard=False,
                                         charge=False)
                    policy.charge(rt, "hub", EVALUATE, grant,
                                  audit=[(Kind.PSEUDONYM_EVALUATED, {**base, "epoch": 1, "count": n_tokens})])
                else:
                    digest = hashlib.sha256(rid).digest()
                    grant = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=n_tokens, request_digest=digest)
                    rec, rec_digest = RECORDS[rec_i]
                    tokens = [hashlib.sha512(b"member %d" % (t + rec_i)).digest() for t in range(n_tokens)]

                    def use(c, rec=rec, rec_digest=rec_digest, tokens=tokens, month=month) -> None:
                        check_use(c, "hub", rec, rec_digest, rec.case_ref, 1, tokens, clock.now(),
                                  reference_month=month, record=True)

                    received = {**base, "request_digest": digest.hex(), "count": n_tokens}
                    sent = {**base, "answer_digest": hashlib.sha256(digest).hexdigest(), "outcome": "ok"}
                    policy.commit(rt, "hub", LOOKUP, ctx, grant, digest, b"signed answer %d" % i,
                                  audit=[(Kind.QUERY_RECEIVED, received), (Kind.ANSWER_SENT, sent)], also=use)
                out.append("ok")
            except HeduiError as exc:
                out.append(str(exc.reason))
    finally:
        log.close()
    return out


_OPS = st.lists(st.tuples(st.sampled_from(["lookup", "lookup", "evaluate"]), st.integers(0, 90),
                          st.integers(0, len(RECORDS) - 1), st.integers(1, 3), st.sampled_from(["2026-09", "2026-10"])),
                min_size=1, max_size=14).map(lambda ops: sorted(ops, key=lambda o: o[1]))   # the clock moves forward


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_the_raw_path_writes_exactly_the_rows_the_core_path_wrote(engine, ops):
    _reset(engine)
    raw_outcomes = _scenario(engine, ops)
    raw = _dump(engine)
    _reset(engine)
    with pytest.MonkeyPatch.context() as mp:
        _core_mode(mp)
        core_outcomes = _scenario(engine, ops)
    core = _dump(engine)
    assert raw_outcomes == core_outcomes
    assert raw == core


def test_a_fixed_scenario_covers_every_statement(engine):
    """The drawn scenarios may miss a branch; this one takes each: two quota windows and a
    new minute, an overrun (rolled back), a prune, a refused second case, a same-review
    re-run, Evaluate, and a tree several levels high."""
    ops = [("lookup", 0, 0, 2, "2026-09"), ("evaluate", 0, 0, 3, "2026-09"), ("lookup", 0, 0, 2, "2026-09"),
           ("lookup", 0, 2, 1, "2026-10"), ("lookup", 0, 2, 1, "2026-10"),   # the 4th lookup this minute: over
           ("lookup", 2, 1, 1, "2026-09"),                                   # record 1: the scan's second case
           ("lookup", 75, 0, 3, "2026-10"), ("evaluate", 75, 3, 1, "2026-10"), ("lookup", 76, 2, 3, "2026-10")]
    _reset(engine)
    raw_outcomes = _scenario(engine, ops)
    raw = _dump(engine)
    assert raw_outcomes.count("ok") >= 6 and "QUOTA_EXCEEDED" in raw_outcomes and "CONSENT_REUSED" in raw_outcomes
    assert {r[0] for r in raw["audit_nodes"]} >= {1, 2, 3}   # nodes at several levels were written
    assert len(raw["seen_requests"]) < raw_outcomes.count("ok")   # the prune removed the first minutes' ids
    _reset(engine)
    with pytest.MonkeyPatch.context() as mp:
        _core_mode(mp)
        core_outcomes = _scenario(engine, ops)
    assert raw_outcomes == core_outcomes
    assert raw == _dump(engine)
