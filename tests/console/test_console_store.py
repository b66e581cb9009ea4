"""The console's state and the staff acts it calls, on SQLite and PostgreSQL: sessions (idle
timeout, lifetime), sign-in lock-out and rate limit (audited), once-only form tokens, the
reviewer's approval and showing identity numbers (audited, with the operator)."""

from __future__ import annotations

import datetime as dt
import threading
import types
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.node.console.auth import SessionStore, SignIn
from hedui.node.console.security import FormTokens
from hedui.node.console.tables import console_sessions
from hedui.node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from hedui.node.verification import casework
from hedui.node.verification.cases import consent_digest_of, open_case
from hedui.node.verification.hub_tables import cases

from .helpers import PASSWORD, LogRecorder, add_operators, audit_entries

NOW = dt.datetime(2026, 12, 1, 2, 40, tzinfo=dt.UTC)


@pytest.fixture
def audit(engine):
    r = LogRecorder(engine)
    yield r
    r.close()


def _signin(engine, audit, tmp_path, clock, **kw):
    users = add_operators(tmp_path / "console-users.toml")
    sessions = SessionStore(engine, clock, idle=dt.timedelta(minutes=15), lifetime=dt.timedelta(hours=12))
    return SignIn(users, sessions, audit, clock, **kw), sessions, users


def test_session_idle_timeout_and_lifetime(engine):
    clock = FixedClock(NOW)
    s = SessionStore(engine, clock, idle=dt.timedelta(minutes=15), lifetime=dt.timedelta(hours=12))
    cookie, sess = s.create("cw01")
    with engine.connect() as c:
        stored = c.execute(select(console_sessions.c.session_hash)).scalars().all()
    assert len(stored) == 1 and cookie.encode() not in bytes(stored[0])  # only its digest is stored
    clock.advance(dt.timedelta(minutes=14))
    assert s.get(cookie)[0].operator == "cw01"  # activity moves the idle deadline
    clock.advance(dt.timedelta(minutes=14))
    assert s.get(cookie)[0] is not None
    clock.advance(dt.timedelta(minutes=15, seconds=1))
    assert s.get(cookie) == (None, "expired")
    assert s.get(cookie) == (None, "none")  # and it is gone
    cookie2, _ = s.create("cw01")
    for _ in range(12 * 4):  # busy all day: the absolute lifetime still ends it
        clock.advance(dt.timedelta(minutes=15))
        if s.get(cookie2)[0] is None:
            break
    assert clock.now() - NOW >= dt.timedelta(hours=12)
    assert s.get("x" * 200) == (None, "none") and s.get(None) == (None, "none")
    s.create("rv01")
    s.create("rv01")
    assert s.delete_for("rv01") == 2


def test_lockout_after_repeated_failures_is_audited(engine, audit, tmp_path):
    clock = FixedClock(NOW)
    signin, sessions, _ = _signin(engine, audit, tmp_path, clock, max_failures=5, lock_minutes=15, per_minute=100)
    for _ in range(4):
        assert signin.attempt("cw01", "wrong-password", "10.1.1.1").outcome == "BAD_CREDENTIALS"
    res = signin.attempt("cw01", "wrong-password", "10.1.1.1")
    assert res.outcome == "LOCKED_OUT" and res.locked_until == NOW + dt.timedelta(minutes=15)
    # locked: even the right password is refused, without being checked
    assert signin.attempt("cw01", PASSWORD, "10.1.1.1").outcome == "LOCKED"
    clock.advance(dt.timedelta(minutes=15, seconds=1))
    ok = signin.attempt("cw01", PASSWORD, "10.1.1.1")
    assert ok.ok and sessions.get(ok.cookie)[0].operator == "cw01"
    # a success resets the count: four more failures do not lock
    for _ in range(4):
        signin.attempt("cw01", "nope-nope-nope", "10.1.1.1")
    assert signin.attempt("cw01", PASSWORD, "10.1.1.1").ok
    failed = audit_entries(engine, "console.signin_failed")
    assert [e["fields"]["outcome"] for e in failed] == ["BAD_CREDENTIALS"] * 4 + ["LOCKED_OUT", "LOCKED"] + ["BAD_CREDENTIALS"] * 4
    assert all(e["fields"]["operator"] == "cw01" for e in failed)
    assert [e["fields"]["operator"] for e in audit_entries(engine, "console.signin")] == ["cw01", "cw01"]


def test_unknown_names_and_disabled_operators(engine, audit, tmp_path):
    clock = FixedClock(NOW)
    signin, _, users = _signin(engine, audit, tmp_path, clock)
    typed = resident(1, 7).id_number  # someone types an identity number as the name
    assert signin.attempt(typed, "whatever-pass", "10.1.1.2").outcome == "BAD_CREDENTIALS"
    users.set_user("cw02", disabled=True)
    assert signin.attempt("cw02", PASSWORD, "10.1.1.2").outcome == "DISABLED"
    failed = audit_entries(engine, "console.signin_failed")
    assert [(e["fields"]["operator"], e["fields"]["outcome"]) for e in failed] == [("", "BAD_CREDENTIALS"), ("cw02", "DISABLED")]


def test_rate_limit_per_client_audited_once_per_burst(engine, audit, tmp_path):
    clock = FixedClock(NOW)
    signin, _, _ = _signin(engine, audit, tmp_path, clock, per_minute=3, max_failures=100)
    outcomes = [signin.attempt("cw01", "wrong-wrong-1", "10.9.9.9").outcome for _ in range(6)]
    assert outcomes == ["BAD_CREDENTIALS"] * 3 + ["RATE_LIMITED"] * 3
    assert signin.attempt("cw01", PASSWORD, "10.9.9.8").ok  # another client is not held up
    clock.advance(dt.timedelta(seconds=61))
    assert signin.attempt("cw01", PASSWORD, "10.9.9.9").ok
    limited = [e for e in audit_entries(engine, "console.signin_failed") if e["fields"]["outcome"] == "RATE_LIMITED"]
    assert len(limited) == 1 and limited[0]["fields"]["client"] == "10.9.9.9"


def test_form_tokens_once_only_under_races(engine):
    tokens = FormTokens(engine, FixedClock(NOW))
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def submit():
        barrier.wait()
        results.append(tokens.claim("tok-1", "cw01")[0])

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert tokens.claim("tok-1", "cw01") == (False, None)  # still running
    tokens.done("tok-1", "/cases/HUB-2026-000001")
    assert tokens.claim("tok-1", "cw01") == (False, "/cases/HUB-2026-000001")
    assert tokens.claim("tok-1", "cw02") == (False, None)  # another operator learns nothing
    tokens.claim("tok-2", "cw01")
    tokens.release("tok-2")  # failed validation: the corrected form may be sent again
    assert tokens.claim("tok-2", "cw01") == (True, None)
    assert tokens.claim("", "cw01") == (False, None)


def _case(engine, audit, operator="cw01") -> str:
    # open_case needs only the store and the audit recorder of a hub runtime.
    hub = types.SimpleNamespace(engine=engine, audit=audit, clock=FixedClock(NOW))
    ids = [resident(n, 7).id_number for n in (1, 2)]
    return open_case(hub, [(ids[0], "applicant"), (ids[1], "spouse")], purpose="dibao",
                     consent_digest=consent_digest_of(b"%PDF-1.4 signed"), operator=operator, region="370304",
                     expenditure=Decimal("0"))


def test_review_rules_and_audit(engine, audit):
    ref = _case(engine, audit)
    with pytest.raises(FailedPrecondition, match="not run"):
        casework.review_case(engine, audit, ref, reviewer="rv01", decision="approved", note="", now=NOW)
    with engine.begin() as c:
        c.execute(update(cases).where(cases.c.case_ref == ref).values(status="incomplete"))
    with pytest.raises(PermissionDenied) as exc:
        casework.review_case(engine, audit, ref, reviewer="cw01", decision="returned", note="", now=NOW)
    assert exc.value.reason == "SAME_OPERATOR"
    with pytest.raises(FailedPrecondition) as exc:
        casework.review_case(engine, audit, ref, reviewer="rv01", decision="approved", note="", now=NOW)
    assert exc.value.reason == "INCOMPLETE"
    with pytest.raises(InvalidArgument) as exc:
        casework.review_case(engine, audit, ref, reviewer="rv01", decision="returned",
                             note=f"见 {resident(1, 7).id_number}", now=NOW)
    assert exc.value.reason == "IDENTITY_IN_TEXT"
    with pytest.raises(InvalidArgument):
        casework.review_case(engine, audit, ref, reviewer="rv01", decision="maybe", note="", now=NOW)
    with pytest.raises(NotFound):
        casework.review_case(engine, audit, "HUB-1999-000009", reviewer="rv01", decision="returned", note="", now=NOW)
    casework.review_case(engine, audit, ref, reviewer="rv01", decision="returned", note="税务部门未答复，请补充核对", now=NOW)
    with engine.begin() as c:
        c.execute(update(cases).where(cases.c.case_ref == ref).values(status="complete"))
    casework.review_case(engine, audit, ref, reviewer="rv01", decision="approved", note="", now=NOW + dt.timedelta(hours=1))
    st = casework.case_state(engine, ref)
    assert [(r["reviewer"], r["decision"]) for r in st["reviews"]] == [("rv01", "returned"), ("rv01", "approved")]
    assert st["reviews"][1]["reviewed_at"] == NOW + dt.timedelta(hours=1)
    assert casework.list_cases(engine)[0]["review"] == "approved"
    entries = audit_entries(engine, "case.reviewed")
    assert [(e["fields"]["operator"], e["fields"]["decision"]) for e in entries] == [("rv01", "returned"), ("rv01", "approved")]


def test_case_state_masks_and_show_members_is_audited(engine, audit):
    ref = _case(engine, audit)
    ids = [resident(n, 7).id_number for n in (1, 2)]
    st = casework.case_state(engine, ref)
    assert [m["identity"] for m in st["members"]] == [i[:6] + "********" + i[-4:] for i in ids]
    assert ids[0] not in str(st)
    full = casework.show_members(engine, audit, ref, operator="cw01")
    assert [m["identity"] for m in full] == ids
    (e,) = audit_entries(engine, "case.members_shown")
    assert e["fields"] == {"case_ref": ref, "operator": "cw01", "count": 2}
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(cases)).scalar_one() == 1
    assert [r["case_ref"] for r in casework.list_cases(engine, status="open", purpose="dibao", operator="cw01")] == [ref]
    assert casework.list_cases(engine, operator="someone-else") == []
    with pytest.raises(InvalidArgument):
        casework.list_cases(engine, status="weird")
