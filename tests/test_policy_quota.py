"""Provider access policy (node/policy.py) with a fixed clock: quotas per minute and per day,
0 = unlimited, several matching rules (the most generous wins), Evaluate (charged in
``check``) and Lookup (charged in ``commit``), and a rule's own ``max_batch`` (issue 19).

The runtime is a small stand-in carrying the real pieces the policy reads: a
TrustedDirectory built from a Directory message, a FixedClock, and a store migrated by the
real migrations (the ``engine`` fixture: SQLite and PostgreSQL). Expected counters are read
back by straight SQL, not through the module under test.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from hedui.common.clock import FixedClock
from hedui.keys.directory import TrustedDirectory
from hedui.node import policy
from hedui.node.errors import PermissionDenied, Reason, ResourceExhausted
from hedui.node.store.tables import quota_counters, seen_requests
from hedui.v1 import common_pb2, directory_pb2

LOOKUP = "/hedui.v1.LookupService/Lookup"
EVALUATE = "/hedui.v1.PseudonymService/Evaluate"
# 2026-11-30 03:00:30 UTC: 30 s into a minute, so "the same minute" and "the next minute"
# are unambiguous; the day boundary (UTC midnight, the counters' window) is 20h59m30s later.
T0 = datetime(2026, 11, 30, 3, 0, 30, tzinfo=UTC)
_ids = itertools.count(1)


def _rule(method: str = LOOKUP, *, per_minute: int = 0, per_day: int = 0, max_batch: int = 0,
          provider: str = "tax", purposes=(common_pb2.PURPOSE_DIBAO,), fields=("income",)) -> directory_pb2.AccessRule:
    return directory_pb2.AccessRule(caller="hub", provider=provider, method=method, purposes=list(purposes),
                                    fields=list(fields), per_minute=per_minute, per_day=per_day, max_batch=max_batch)


def _runtime(engine, *rules: directory_pb2.AccessRule, clock: FixedClock | None = None):
    msg = directory_pb2.Directory(version=1, policy=list(rules), members=[
        directory_pb2.Member(code="tax", fields=[directory_pb2.FieldSpec(name="income"), directory_pb2.FieldSpec(name="pension")]),
        directory_pb2.Member(code="hub"),
    ])
    return SimpleNamespace(directory=TrustedDirectory(common_pb2.Envelope(), msg), member="tax", engine=engine,
                           clock=clock or FixedClock(T0), config=SimpleNamespace(provider=None))


def _ctx(purpose=common_pb2.PURPOSE_DIBAO) -> common_pb2.RequestContext:
    rid = next(_ids).to_bytes(16, "big")
    return common_pb2.RequestContext(purpose=purpose, request_id=rid, case_ref="case-1", operator="cw",
                                     consent_digest=b"\x01" * 32)


def _evaluate(rt) -> policy.Grant:
    return policy.check(rt, "hub", EVALUATE, _ctx(), need_consent=False, replay_guard=False)


def _lookup(rt, *, batch: int = 1, fields=("income",)) -> float:
    ctx = _ctx()
    grant = policy.check(rt, "hub", LOOKUP, ctx, fields=list(fields), batch=batch, request_digest=b"d" * 32)
    assert grant.cached_answer is None
    return policy.commit(rt, "hub", LOOKUP, ctx, grant, b"d" * 32, b"answer")


def _counters(engine, method: str) -> dict[tuple[str, int], int]:
    with engine.connect() as c:
        rows = c.execute(select(quota_counters.c.window, quota_counters.c.window_start, quota_counters.c.count)
                         .where(quota_counters.c.caller == "hub", quota_counters.c.method == method)).all()
    return {(w, s): n for w, s, n in rows}


def _quota_refused(call) -> ResourceExhausted:
    with pytest.raises(ResourceExhausted) as e:
        call()
    assert e.value.reason == Reason.QUOTA_EXCEEDED
    return e.value


MINUTE = int(T0.timestamp()) // 60
DAY = int(T0.timestamp()) // 86400


@pytest.mark.parametrize("call,method", [(_evaluate, EVALUATE), (_lookup, LOOKUP)], ids=["evaluate", "lookup"])
def test_per_minute_quota_is_exhausted_then_resets_the_next_minute(engine, call, method):
    rt = _runtime(engine, _rule(method, per_minute=3))
    for _ in range(3):
        call(rt)
    err = _quota_refused(lambda: call(rt))
    assert str(err) == f"quota: hub made 3 {method} calls this minute, limit 3"
    # Only the minute window is counted (no day limit).
    assert set(_counters(engine, method)) == {("m", MINUTE)}
    # 29 s later: still the same minute, still refused.
    rt.clock.advance(timedelta(seconds=29))
    _quota_refused(lambda: call(rt))
    # One more second: 03:01:00, a new minute window.
    rt.clock.advance(timedelta(seconds=1))
    call(rt)
    assert _counters(engine, method)[("m", MINUTE + 1)] == 1


@pytest.mark.parametrize("call,method", [(_evaluate, EVALUATE), (_lookup, LOOKUP)], ids=["evaluate", "lookup"])
def test_per_day_quota_is_exhausted_and_resets_at_the_utc_day(engine, call, method):
    rt = _runtime(engine, _rule(method, per_day=2))
    call(rt)
    rt.clock.advance(timedelta(hours=1))  # another minute, the same day
    call(rt)
    rt.clock.advance(timedelta(hours=1))
    err = _quota_refused(lambda: call(rt))
    assert str(err) == f"quota: hub made 2 {method} calls this day, limit 2"
    assert {k for k in _counters(engine, method)} == {("d", DAY)}
    # 2026-11-30 23:59:59 UTC: still the same day window.
    rt.clock.set(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    _quota_refused(lambda: call(rt))
    rt.clock.set(datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC))
    call(rt)
    assert _counters(engine, method)[("d", DAY + 1)] == 1


def test_lookup_refused_for_quota_stores_nothing(engine):
    rt = _runtime(engine, _rule(per_minute=1))
    _lookup(rt)
    _quota_refused(lambda: _lookup(rt))
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 1}
    with engine.connect() as c:
        assert len(c.execute(select(seen_requests.c.request_id)).all()) == 1


def test_both_windows_count_every_call(engine):
    rt = _runtime(engine, _rule(per_minute=5, per_day=7))
    for _ in range(4):
        _lookup(rt)
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 4, ("d", DAY): 4}
    rt.clock.advance(timedelta(minutes=1))
    for _ in range(3):
        _lookup(rt)
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 4, ("m", MINUTE + 1): 3, ("d", DAY): 7}
    err = _quota_refused(lambda: _lookup(rt))  # the minute allows 5, the day is spent
    assert "this day, limit 7" in str(err)


@pytest.mark.parametrize("call,method", [(_evaluate, EVALUATE), (_lookup, LOOKUP)], ids=["evaluate", "lookup"])
def test_zero_means_unlimited_and_is_not_counted(engine, call, method):
    rt = _runtime(engine, _rule(method, per_minute=0, per_day=0))
    for _ in range(25):
        call(rt)
    assert _counters(engine, method) == {}


def test_an_unlimited_matching_rule_lifts_the_limit(engine):
    # Two rules match; one is unlimited (0): the most generous wins, so nothing is counted.
    rt = _runtime(engine, _rule(per_minute=2, per_day=3), _rule(provider="*", per_minute=0, per_day=0))
    for _ in range(6):
        _lookup(rt)
    assert _counters(engine, LOOKUP) == {}


def test_the_most_generous_matching_rule_wins(engine):
    # Per-minute 2 vs 4 and per-day 9 vs 5: the limits are 4 a minute and 9 a day.
    rt = _runtime(engine, _rule(per_minute=2, per_day=9), _rule(provider="*", per_minute=4, per_day=5))
    for _ in range(4):
        _lookup(rt)
    assert "this minute, limit 4" in str(_quota_refused(lambda: _lookup(rt)))
    rt.clock.advance(timedelta(minutes=1))
    for _ in range(4):
        _lookup(rt)
    rt.clock.advance(timedelta(minutes=1))
    _lookup(rt)  # the 9th call of the day: allowed by the per-day 9
    rt.clock.advance(timedelta(minutes=1))
    assert "this day, limit 9" in str(_quota_refused(lambda: _lookup(rt)))


def test_a_rule_for_another_purpose_does_not_count(engine):
    # The generous rule allows only another purpose, so it is not a matching rule.
    rt = _runtime(engine, _rule(per_minute=1), _rule(provider="*", per_minute=100, purposes=(common_pb2.PURPOSE_TEKUN,)))
    _lookup(rt)
    _quota_refused(lambda: _lookup(rt))


def test_evaluate_and_lookup_are_charged_separately(engine):
    rt = _runtime(engine, _rule(EVALUATE, per_minute=2), _rule(LOOKUP, per_minute=1))
    _evaluate(rt)
    _evaluate(rt)
    _lookup(rt)
    assert _counters(engine, EVALUATE) == {("m", MINUTE): 2}
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 1}
    _quota_refused(lambda: _evaluate(rt))
    _quota_refused(lambda: _lookup(rt))


def test_lookup_check_alone_charges_nothing_and_commit_charges_once(engine):
    rt = _runtime(engine, _rule(per_minute=1))
    ctx = _ctx()
    grant = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    assert _counters(engine, LOOKUP) == {}
    at = policy.commit(rt, "hub", LOOKUP, ctx, grant, b"d" * 32, b"answer")
    assert at == T0.timestamp()
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 1}
    # A retry of the same request returns the cached answer, charges nothing more.
    again = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    assert again.cached_answer == b"answer"
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 1}
    # release gives the charge back and frees the id.
    policy.release(rt, "hub", LOOKUP, ctx, grant, at)
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 0}
    with engine.connect() as c:
        assert c.execute(select(seen_requests.c.request_id)).all() == []


def test_release_gives_back_both_windows_at_the_instant_charged(engine):
    rt = _runtime(engine, _rule(per_minute=3, per_day=3))
    ctx = _ctx()
    grant = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    at = policy.commit(rt, "hub", LOOKUP, ctx, grant, b"d" * 32, b"answer")
    _lookup(rt)
    rt.clock.advance(timedelta(minutes=5))  # released later: still the window it was charged in
    policy.release(rt, "hub", LOOKUP, ctx, grant, at)
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 1, ("d", DAY): 1}


def _batch_refused(rt, batch: int) -> str:
    with pytest.raises(ResourceExhausted) as e:
        policy.check(rt, "hub", LOOKUP, _ctx(), fields=["income"], batch=batch, request_digest=b"d" * 32)
    assert e.value.reason == Reason.BATCH_TOO_LARGE
    return str(e.value)


def test_a_rule_max_batch_below_the_default_is_enforced(engine):
    rt = _runtime(engine, _rule(max_batch=10))
    policy.check(rt, "hub", LOOKUP, _ctx(), fields=["income"], batch=10, request_digest=b"d" * 32)
    assert "got 11 items, want at most 10" in _batch_refused(rt, 11)


def test_no_max_batch_means_the_default(engine):
    rt = _runtime(engine, _rule(max_batch=0))
    policy.check(rt, "hub", LOOKUP, _ctx(), fields=["income"], batch=policy.DEFAULT_MAX_BATCH, request_digest=b"d" * 32)
    assert f"want at most {policy.DEFAULT_MAX_BATCH}" in _batch_refused(rt, policy.DEFAULT_MAX_BATCH + 1)


def test_several_rules_the_largest_max_batch_wins_capped_at_the_global_limit(engine):
    rt = _runtime(engine, _rule(max_batch=10), _rule(provider="*", max_batch=20))
    policy.check(rt, "hub", LOOKUP, _ctx(), fields=["income"], batch=20, request_digest=b"d" * 32)
    assert "want at most 20" in _batch_refused(rt, 21)
    # A rule with 0 (the default, 4096) among them: the default is the most generous.
    rt = _runtime(engine, _rule(max_batch=10), _rule(provider="*", max_batch=0))
    assert f"want at most {policy.DEFAULT_MAX_BATCH}" in _batch_refused(rt, policy.DEFAULT_MAX_BATCH + 1)
    # A (mis-signed) rule above the global limit cannot raise it.
    rt = _runtime(engine, _rule(max_batch=policy.MAX_BATCH + 100))
    assert f"want at most {policy.MAX_BATCH}" in _batch_refused(rt, policy.MAX_BATCH + 1)


@pytest.mark.parametrize("fields,reason", [(["pension"], Reason.FIELD_NOT_ALLOWED), (["wages"], Reason.UNKNOWN_FIELD)])
def test_fields_outside_the_rule_or_the_catalogue_are_refused(engine, fields, reason):
    rt = _runtime(engine, _rule())
    with pytest.raises(Exception) as e:
        policy.check(rt, "hub", LOOKUP, _ctx(), fields=fields, batch=1, request_digest=b"d" * 32)
    assert getattr(e.value, "reason", None) == reason


def test_no_rule_for_the_method_or_purpose_is_refused(engine):
    rt = _runtime(engine, _rule(EVALUATE))
    with pytest.raises(PermissionDenied) as e:
        _lookup(rt)
    assert e.value.reason == Reason.METHOD_NOT_ALLOWED
    rt = _runtime(engine, _rule(purposes=(common_pb2.PURPOSE_TEKUN,)))
    with pytest.raises(PermissionDenied) as e:
        _lookup(rt)
    assert e.value.reason == Reason.PURPOSE_NOT_ALLOWED


# ------------------------------------------------------------------ request context and replay

PUBLISHED_ID = "341122198811293572"  # a published identity number (tests/test_idnum.py)


def _refused(rt, ctx, *, need_consent=None, fields=("income",)):
    kw = {} if need_consent is None else {"need_consent": need_consent}
    with pytest.raises((PermissionDenied, ResourceExhausted, Exception)) as e:
        policy.check(rt, "hub", LOOKUP, ctx, fields=list(fields), batch=1, request_digest=b"d" * 32, **kw)
    return e.value


@pytest.mark.parametrize("case_ref,ok", [("c" * 64, True), ("c" * 65, False), ("", False), ("case\n1", False), ("a", True)])
def test_case_ref_length_and_printable(engine, case_ref, ok):
    rt = _runtime(engine, _rule())
    ctx = _ctx()
    ctx.case_ref = case_ref
    if ok:
        policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    else:
        err = _refused(rt, ctx)
        assert err.reason == Reason.BAD_CASE_REF and str(err) == f"context.case_ref: got {len(case_ref)} characters, want 1..64 printable"


@pytest.mark.parametrize("where", ["case_ref", "operator"])
def test_identity_number_in_free_text_is_refused_without_echo(engine, where):
    rt = _runtime(engine, _rule())
    ctx = _ctx()
    setattr(ctx, where, f"x {PUBLISHED_ID}")
    err = _refused(rt, ctx)
    assert err.reason == Reason.IDENTITY_IN_REQUEST and PUBLISHED_ID not in str(err)


@pytest.mark.parametrize("n,ok", [(64, True), (65, False)])
def test_operator_length(engine, n, ok):
    rt = _runtime(engine, _rule())
    ctx = _ctx()
    ctx.operator = "o" * n
    if ok:
        policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    else:
        assert str(_refused(rt, ctx)) == "context.operator: got 65 characters, want at most 64"


def test_consent_is_needed_by_default_and_must_be_a_digest(engine):
    rt = _runtime(engine, _rule())
    ctx = _ctx()
    ctx.consent_digest = b""
    assert _refused(rt, ctx).reason == Reason.CONSENT_MISSING            # the default: consent needed
    assert _refused(rt, ctx, need_consent=True).reason == Reason.CONSENT_MISSING
    policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32, need_consent=False)
    ctx.consent_digest = b"\x01" * 31
    err = _refused(rt, ctx)
    assert err.reason == Reason.BAD_CONSENT_DIGEST and str(err) == "context.consent_digest: got 31 bytes, want 32"
    ctx.consent_digest = b"\x01" * 33
    assert _refused(rt, ctx).reason == Reason.BAD_CONSENT_DIGEST


def test_unknown_field_name_is_cut_to_64_characters(engine):
    rt = _runtime(engine, _rule())
    err = _refused(rt, _ctx(), fields=["w" * 70])
    assert err.reason == Reason.UNKNOWN_FIELD
    assert str(err) == f"queries.field: got {'w' * 64!r}, want one of ['income', 'pension']"


def test_reused_request_id_with_other_content_is_refused_naming_32_hex_digits(engine):
    rt = _runtime(engine, _rule())
    ctx = _ctx()
    ctx.request_id = bytes(range(32))
    grant = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    policy.commit(rt, "hub", LOOKUP, ctx, grant, b"d" * 32, b"answer")
    with pytest.raises(PermissionDenied) as e:
        policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"e" * 32)
    assert e.value.reason == Reason.REPLAYED_REQUEST
    assert str(e.value) == f"context.request_id: {bytes(range(16)).hex()} was already used, want a fresh id"


def test_release_never_takes_a_counter_below_zero(engine):
    rt = _runtime(engine, _rule(per_minute=3))
    ctx = _ctx()
    grant = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    at = policy.commit(rt, "hub", LOOKUP, ctx, grant, b"d" * 32, b"answer")
    policy.release(rt, "hub", LOOKUP, ctx, grant, at)
    policy.release(rt, "hub", LOOKUP, ctx, grant, at)
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 0}


def test_the_configured_replay_window_is_used(engine):
    rt = _runtime(engine, _rule())
    rt.config = SimpleNamespace(provider=SimpleNamespace(replay_window_hours=1))
    assert policy.replay_window(rt) == timedelta(hours=1)
    ctx = _ctx()
    grant = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    policy.commit(rt, "hub", LOOKUP, ctx, grant, b"d" * 32, b"answer")
    rt.clock.advance(timedelta(minutes=59))
    assert policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32).cached_answer == b"answer"
    rt.clock.advance(timedelta(minutes=2))  # 61 minutes: past the one-hour window (the default is 24 h)
    assert policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32).cached_answer is None


def test_prune_replay_cache_counts_what_it_deleted(engine):
    rt = _runtime(engine, _rule())
    for _ in range(3):
        _lookup(rt)
    with engine.begin() as c:
        assert policy.prune_replay_cache(c, T0 + timedelta(hours=1), timedelta(hours=2)) == 0
        assert policy.prune_replay_cache(c, T0 + timedelta(hours=3), timedelta(hours=2)) == 3
    with engine.connect() as c:
        assert c.execute(select(seen_requests.c.request_id)).all() == []


def test_a_request_id_taken_by_a_concurrent_request_is_a_replay_and_charges_nothing(engine):
    # Two requests with one id both pass check() before either commits (a race): the second
    # commit hits the primary key, is refused as a replay, and its quota charge rolls back.
    rt = _runtime(engine, _rule(per_minute=5))
    ctx = _ctx()
    ctx.request_id = bytes(range(32))
    first = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    second = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    policy.commit(rt, "hub", LOOKUP, ctx, first, b"d" * 32, b"answer")
    with pytest.raises(PermissionDenied) as e:
        policy.commit(rt, "hub", LOOKUP, ctx, second, b"d" * 32, b"answer")
    assert e.value.reason == Reason.REPLAYED_REQUEST
    assert str(e.value) == f"context.request_id: {bytes(range(16)).hex()} was already used, want a fresh id"
    assert _counters(engine, LOOKUP) == {("m", MINUTE): 1}


def test_two_writers_opening_the_same_window_both_count(engine):
    """Node replicas sharing one store (issue 16): two transactions that both find no counter
    for a new window must add up to 2, not fail on the counter's key. The first holds its
    insert uncommitted while the second tries (it waits for the first, then adds to it)."""
    import threading

    from sqlalchemy import and_

    c1 = engine.connect()
    t1 = c1.begin()
    assert policy._bump(c1, "hub", "M", "m", 42) == 1
    got: list[int] = []

    def second() -> None:
        with engine.begin() as c2:
            got.append(policy._bump(c2, "hub", "M", "m", 42))

    th = threading.Thread(target=second)
    th.start()
    th.join(0.5)              # blocked behind the first writer's uncommitted row
    t1.commit()
    c1.close()
    th.join(30)
    assert got == [2]
    with engine.connect() as c:
        q = quota_counters.c
        assert c.execute(select(q.count).where(and_(q.caller == "hub", q.window_start == 42))).scalar_one() == 2


def test_release_late_in_the_utc_day_gives_back_that_days_charge(engine):
    # 23:30 UTC: late enough that a day window of 86399 s would already be the next one.
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    rt = _runtime(engine, _rule(per_minute=3, per_day=3), clock=FixedClock(late))
    ctx = _ctx()
    grant = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
    at = policy.commit(rt, "hub", LOOKUP, ctx, grant, b"d" * 32, b"answer")
    _lookup(rt)
    policy.release(rt, "hub", LOOKUP, ctx, grant, at)
    day = (date(2026, 11, 30) - date(1970, 1, 1)).days  # the UTC day number, counted by calendar
    minute = day * 1440 + 23 * 60 + 30
    assert _counters(engine, LOOKUP) == {("m", minute): 1, ("d", day): 1}


def test_commit_writes_the_exchanges_audit_entries_with_it_and_none_on_a_refusal(engine):
    """Issue 16: the exchange's audit entries commit with its quota and request id — and only
    with them (a quota overrun leaves none)."""
    from console.helpers import LogRecorder
    from sqlalchemy import func

    from hedui.node.audit.tables import audit_entries

    rt = _runtime(engine, _rule(per_minute=1))
    rt.audit = LogRecorder(engine)
    try:
        def entries(ctx) -> list[tuple[str, dict]]:
            rid = bytes(ctx.request_id).hex()
            return [("query.received", {"request_id": rid, "peer": "hub", "purpose": "dibao", "case_ref": "case-1",
                                        "request_digest": "d" * 64}),
                    ("answer.sent", {"request_id": rid, "peer": "hub", "answer_digest": "a" * 64, "outcome": "ok"})]

        def count() -> int:
            with engine.connect() as c:
                return int(c.execute(select(func.count()).select_from(audit_entries)).scalar_one())

        before = count()
        ctx = _ctx()
        grant = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
        policy.commit(rt, "hub", LOOKUP, ctx, grant, b"d" * 32, b"answer", audit=entries(ctx))
        assert count() == before + 2
        ctx = _ctx()
        grant = policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=b"d" * 32)
        with pytest.raises(ResourceExhausted):
            policy.commit(rt, "hub", LOOKUP, ctx, grant, b"d" * 32, b"answer", audit=entries(ctx))
        assert count() == before + 2
    finally:
        rt.audit.close()
