"""A case's reference month and the caseworker's override of member counting, stored on
SQLite and PostgreSQL (issue 12 items 1 and 4), and the report read back from the store."""

from __future__ import annotations

import datetime as dt
import types

import pytest
from console.helpers import LogRecorder, audit_entries
from sqlalchemy import insert, select, update

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.node.errors import InvalidArgument, NotFound
from hedui.node.verification import casework
from hedui.node.verification.cases import consent_digest_of, open_case, reference_month_of
from hedui.node.verification.hub_tables import case_answers, case_member_overrides, cases
from hedui.node.verification.report import build_report, render_html
from hedui.node.verification.rules import parse_rules

# 2026-11-30 17:00 UTC is already 2026-12-01 01:00 in China Standard Time: the application day
# is 1 December, so the default reference month is November (a UTC reading would give October).
NOW = dt.datetime(2026, 11, 30, 17, 0, tzinfo=dt.UTC)
IDS = [resident(n, 7).id_number for n in (1, 2, 3)]
RULES = parse_rules('''
[members]
provider = "huji"
field = "registry_status"
exclude = { "死亡" = "dead" }
[[income]]
provider = "shebao"
field = "wages"
months = 12
[standards]
default = "1010.00"
"370304" = [{ from = "2026-01", amount = "1010.00" }, { from = "2025-01", amount = "950.00" }]
''')


@pytest.fixture
def audit(engine):
    r = LogRecorder(engine)
    yield r
    r.close()


def _hub(engine, audit, at=NOW):
    return types.SimpleNamespace(engine=engine, audit=audit, clock=FixedClock(at))


def _open(engine, audit, **kw):
    return open_case(_hub(engine, audit), [(i, "member") for i in IDS], purpose="dibao",
                     consent_digest=consent_digest_of(b"signed"), operator="cw01", region="370304", **kw)


def _stored(engine, ref):
    with engine.connect() as c:
        return c.execute(select(cases).where(cases.c.case_ref == ref)).first()


def test_default_reference_month_is_the_month_before_the_local_application_day(engine, audit):
    ref = _open(engine, audit)
    assert _stored(engine, ref).reference_month == "2026-11"
    (e,) = audit_entries(engine, "case.opened")
    assert e["fields"]["reference_month"] == "2026-11"
    # January: the month before is December of the year before.
    ref2 = open_case(_hub(engine, audit, dt.datetime(2026, 1, 15, 4, tzinfo=dt.UTC)), [(IDS[0], "self")], purpose="dibao",
                     consent_digest=consent_digest_of(b"x"), operator="cw01", region="370304")
    assert _stored(engine, ref2).reference_month == "2025-12"


@pytest.mark.parametrize("month", ["2026-08", "2026-03"])
def test_reference_month_set_by_the_caseworker_is_stored(engine, audit, month):
    ref = _open(engine, audit, reference_month=month)
    assert _stored(engine, ref).reference_month == month
    assert str(reference_month_of(_stored(engine, ref))) == month
    assert casework.case_state(engine, ref)["reference_month"] == month


@pytest.mark.parametrize("bad", ["2026-13", "2026-8", "202608", "", "2026-08-01", "abcd-ef"])
def test_bad_reference_month_is_refused_before_anything_is_written(engine, audit, bad):
    with pytest.raises(InvalidArgument, match=r"reference_month: got .*, want YYYY-MM"):
        _open(engine, audit, reference_month=bad)
    with engine.connect() as c:
        assert c.execute(select(cases)).first() is None
    assert audit_entries(engine, "case.opened") == []


def test_case_opened_before_issue_12_has_the_month_before_it_was_opened(engine, audit):
    ref = _open(engine, audit, reference_month="2026-03")
    with engine.begin() as c:
        c.execute(update(cases).where(cases.c.case_ref == ref).values(reference_month=None))
    assert str(reference_month_of(_stored(engine, ref))) == "2026-11"  # opened 2026-12-01 local


def test_override_is_stored_audited_and_shown_in_the_report(engine, audit):
    ref = _open(engine, audit, reference_month="2026-08")
    casework.override_member(engine, audit, ref, position=1, counted=False, reason="长期在外", operator="cw01", now=NOW)
    casework.override_member(engine, audit, ref, position=1, counted=True, reason="已返回共同生活", operator="cw02",
                             now=NOW + dt.timedelta(minutes=5))
    casework.override_member(engine, audit, ref, position=2, counted=False, reason="户口未迁出但已分户", operator="cw02", now=NOW)
    with engine.connect() as c:
        rows = c.execute(select(case_member_overrides).order_by(case_member_overrides.c.override_id)).all()
    assert [(r.position, r.counted, r.operator) for r in rows] == [(1, False, "cw01"), (1, True, "cw02"), (2, False, "cw02")]
    entries = [e["fields"] for e in audit_entries(engine, "case.member_counted")]
    assert entries == [{"case_ref": ref, "operator": "cw01", "position": 1, "counted": False},
                       {"case_ref": ref, "operator": "cw02", "position": 1, "counted": True},
                       {"case_ref": ref, "operator": "cw02", "position": 2, "counted": False}]
    # No department answered (every provider unavailable): the report is incomplete, and the
    # overrides in force (the latest per member) decide members 2 and 3.
    with engine.begin() as c:
        for p in ("huji", "shebao"):
            c.execute(insert(case_answers).values(case_ref=ref, provider=p, status="unavailable", reason="deadline",
                                                  request_id=b"\x01" * 16, attempts=3))
    rep = build_report(engine, ref, RULES)
    assert rep["reference_month"] == "2026-08" and rep["income_window"] == "2025-08..2026-07" and rep["as_of"] == "2026-08-31"
    assert rep["time_zone"] == "Asia/Shanghai" and rep["conclusion"] == "incomplete"
    m = rep["members"]
    assert [x["counted"] for x in m] == [None, True, False]
    assert m[1]["override"] == {"counted": True, "reason": "已返回共同生活", "operator": "cw02"}
    assert m[2]["reason"] == "户口未迁出但已分户" and m[0]["override"] is None
    assert rep["income"]["per_capita_monthly"] is None and rep["income"]["standard"] == "1010.00"
    assert {(g["member"], g["provider"], g["why"]) for g in rep["missing"]} == {
        (0, "huji", "unavailable"), (0, "shebao", "unavailable"), (1, "shebao", "unavailable")}
    html = render_html(rep)
    for text in ("核对基准月", "2026-08", "2025-08..2026-07", "Asia/Shanghai", "核对人", "复核人", "日期",
                 "已返回共同生活", "核对不完整", "部门未响应"):
        assert text in html, text
    assert all(i not in html and i not in str(rep) for i in IDS)


def test_standard_by_period_follows_the_reference_month(engine, audit):
    ref = _open(engine, audit, reference_month="2025-12")
    assert build_report(engine, ref, RULES)["income"]["standard"] == "950.00"


def test_override_refusals(engine, audit):
    ref = _open(engine, audit)
    with pytest.raises(InvalidArgument, match="member: got 4, want 1..3"):
        casework.override_member(engine, audit, ref, position=3, counted=True, reason="x", operator="cw01", now=NOW)
    with pytest.raises(InvalidArgument, match="reason"):
        casework.override_member(engine, audit, ref, position=0, counted=True, reason="  ", operator="cw01", now=NOW)
    with pytest.raises(InvalidArgument) as exc:
        casework.override_member(engine, audit, ref, position=0, counted=True, reason=f"见 {IDS[0]}", operator="cw01", now=NOW)
    assert exc.value.reason == "IDENTITY_IN_TEXT" and IDS[0] not in str(exc.value)
    with pytest.raises(InvalidArgument, match="operator"):
        casework.override_member(engine, audit, ref, position=0, counted=True, reason="x", operator="", now=NOW)
    with pytest.raises(NotFound):
        casework.override_member(engine, audit, "HUB-1999-000009", position=0, counted=True, reason="x", operator="c", now=NOW)
    assert audit_entries(engine, "case.member_counted") == []
