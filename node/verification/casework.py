"""Case work on the hub beyond open/run/report: the case list, a case's state, the reviewer's
approval (复核) and showing members' full identity numbers — each act audited here, with the
operator, by the function that performs it (DESIGN.md "Audit": entry points never audit).

A review is a separate person's check of a run case (the 复核人 of the report's signature
block): it is refused for the operator who opened the case, and "approved" is refused for a
case whose report is incomplete.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Column, DateTime, ForeignKey, Integer, String, Table, Text, func, insert, select

from hedui.adapters.idnum import contains
from hedui.common.errors import Reason
from hedui.node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from hedui.node.store.schema import metadata
from hedui.node.verification.hub_tables import case_answers, case_member_overrides, case_members, cases
from hedui.node.verification.report import mask_identity

__all__ = ["case_reviews", "DECISIONS", "list_cases", "case_state", "answer_states", "review_case", "show_members",
           "override_member"]

DECISIONS = ("approved", "returned")
CASE_STATUSES = ("open", "complete", "incomplete")

case_reviews = Table(
    "case_reviews",
    metadata,
    Column("review_id", Integer, primary_key=True, autoincrement=True),
    Column("case_ref", String(32), ForeignKey("cases.case_ref", ondelete="CASCADE"), nullable=False, index=True),
    Column("reviewer", String(64), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("note", Text, nullable=False),
    Column("reviewed_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("decision IN ('approved', 'returned')", name="decision"),
)


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def list_cases(engine, *, status: str | None = None, purpose: str | None = None, operator: str | None = None,
               limit: int = 200) -> list[dict]:
    """Cases, newest first, with member count and the latest review decision (no identities)."""
    if status is not None and status not in CASE_STATUSES:
        raise InvalidArgument(f"status: got {status[:20]!r}, want one of {', '.join(CASE_STATUSES)}")
    n_members = select(func.count()).where(case_members.c.case_ref == cases.c.case_ref).scalar_subquery()
    stmt = select(cases, n_members.label("members")).order_by(cases.c.created_at.desc(), cases.c.case_ref.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(cases.c.status == status)
    if purpose is not None:
        stmt = stmt.where(cases.c.purpose == purpose)
    if operator is not None:
        stmt = stmt.where(cases.c.operator == operator)
    with engine.connect() as c:
        rows = c.execute(stmt).all()
        refs = [r.case_ref for r in rows]
        latest: dict[str, str] = {}
        if refs:
            for r in c.execute(select(case_reviews.c.case_ref, case_reviews.c.decision)
                               .where(case_reviews.c.case_ref.in_(refs)).order_by(case_reviews.c.review_id)):
                latest[r.case_ref] = r.decision
    return [
        {"case_ref": r.case_ref, "purpose": r.purpose, "region": r.region, "operator": r.operator, "status": r.status,
         "members": r.members, "created_at": _utc(r.created_at), "run_at": _utc(r.run_at), "review": latest.get(r.case_ref)}
        for r in rows
    ]


def answer_states(engine, case_ref: str) -> dict[str, dict]:
    """provider -> {status, reason, attempts, request_id (hex), answered_at} of the latest attempt."""
    with engine.connect() as c:
        rows = c.execute(select(case_answers.c.provider, case_answers.c.status, case_answers.c.reason,
                                case_answers.c.attempts, case_answers.c.request_id, case_answers.c.answered_at,
                                case_answers.c.envelope)
                         .where(case_answers.c.case_ref == case_ref)).all()
    return {r.provider: {"status": r.status, "reason": r.reason or "", "attempts": r.attempts,
                         "request_id": bytes(r.request_id).hex(), "answered_at": _utc(r.answered_at),
                         "envelope": bytes(r.envelope) if r.envelope is not None else None} for r in rows}


def case_state(engine, case_ref: str) -> dict:
    """One case: its fields, members (identity masked), answers by department and reviews."""
    with engine.connect() as c:
        case = c.execute(select(cases).where(cases.c.case_ref == case_ref)).first()
        if case is None:
            raise NotFound(f"case: got {case_ref[:32]!r}, want an existing case reference")
        members = c.execute(select(case_members).where(case_members.c.case_ref == case_ref)
                            .order_by(case_members.c.position)).all()
        reviews = c.execute(select(case_reviews).where(case_reviews.c.case_ref == case_ref)
                            .order_by(case_reviews.c.review_id)).all()
    return {
        "case_ref": case.case_ref, "purpose": case.purpose, "region": case.region, "operator": case.operator,
        "status": case.status, "expenditure": case.expenditure, "consent_digest": bytes(case.consent_digest).hex(),
        "reference_month": case.reference_month,
        "created_at": _utc(case.created_at), "run_at": _utc(case.run_at),
        "members": [{"position": m.position, "identity": mask_identity(m.identity), "relation": m.relation} for m in members],
        "answers": answer_states(engine, case_ref),
        "reviews": [{"reviewer": r.reviewer, "decision": r.decision, "note": r.note, "reviewed_at": _utc(r.reviewed_at)}
                    for r in reviews],
    }


def review_case(engine, audit, case_ref: str, *, reviewer: str, decision: str, note: str, now: dt.datetime) -> dict:
    """Records a reviewer's decision on a run case and audits ``case.reviewed``."""
    if decision not in DECISIONS:
        raise InvalidArgument(f"decision: got {decision[:20]!r}, want one of {', '.join(DECISIONS)}")
    if not reviewer or len(reviewer) > 64:
        raise InvalidArgument("reviewer: got an empty or over-long code, want 1..64 characters")
    note = note.strip()
    if len(note) > 500:
        raise InvalidArgument(f"note: got {len(note)} characters, want at most 500")
    if contains(note):
        raise InvalidArgument("note: got text containing an identity number, want none", reason=Reason.IDENTITY_IN_TEXT)
    with engine.begin() as c:
        case = c.execute(select(cases.c.status, cases.c.operator).where(cases.c.case_ref == case_ref)).first()
        if case is None:
            raise NotFound(f"case: got {case_ref[:32]!r}, want an existing case reference")
        if case.operator == reviewer:
            raise PermissionDenied("reviewer: got the operator who opened the case, want another person (复核)",
                                   reason=Reason.SAME_OPERATOR)
        if case.status == "open":
            raise FailedPrecondition("case status: got 'open' (not run yet), want a run case", reason=Reason.NOT_RUN)
        if decision == "approved" and case.status != "complete":
            raise FailedPrecondition(f"case status: got {case.status!r}, want 'complete' to approve", reason=Reason.INCOMPLETE)
        c.execute(insert(case_reviews).values(case_ref=case_ref, reviewer=reviewer, decision=decision, note=note,
                                              reviewed_at=now))
    audit.record("case.reviewed", {"case_ref": case_ref, "operator": reviewer, "decision": decision})
    return {"case_ref": case_ref, "reviewer": reviewer, "decision": decision, "note": note, "reviewed_at": now}


def show_members(engine, audit, case_ref: str, *, operator: str) -> list[dict]:
    """The members' full identity numbers, for an operator who asked; audited (count only)."""
    with engine.connect() as c:
        if c.execute(select(cases.c.case_ref).where(cases.c.case_ref == case_ref)).first() is None:
            raise NotFound(f"case: got {case_ref[:32]!r}, want an existing case reference")
        rows = c.execute(select(case_members).where(case_members.c.case_ref == case_ref)
                         .order_by(case_members.c.position)).all()
    audit.record("case.members_shown", {"case_ref": case_ref, "operator": operator, "count": len(rows)})
    return [{"position": m.position, "identity": m.identity, "relation": m.relation} for m in rows]


def override_member(engine, audit, case_ref: str, *, position: int, counted: bool, reason: str, operator: str,
                    now: dt.datetime) -> dict:
    """A caseworker's decision to count (or not count) listed member ``position`` whatever the
    registry answer says (issue 12 item 4), with the reason, recorded and audited
    (``case.member_counted``); the report shows it next to the member. The latest decision for
    a member is in force."""
    if not operator or len(operator) > 64:
        raise InvalidArgument("operator: got an empty or over-long code, want 1..64 characters")
    reason = reason.strip()
    if not reason or len(reason) > 300:
        raise InvalidArgument(f"reason: got {len(reason)} characters, want 1..300 (why the member is or is not counted)")
    if contains(reason):
        raise InvalidArgument("reason: got text containing an identity number, want none", reason=Reason.IDENTITY_IN_TEXT)
    with engine.begin() as c:
        if c.execute(select(cases.c.case_ref).where(cases.c.case_ref == case_ref)).first() is None:
            raise NotFound(f"case: got {case_ref[:32]!r}, want an existing case reference")
        n = c.execute(select(func.count()).select_from(case_members).where(case_members.c.case_ref == case_ref)).scalar_one()
        if not 0 <= position < n:
            raise InvalidArgument(f"member: got {position + 1}, want 1..{n}")
        c.execute(insert(case_member_overrides).values(case_ref=case_ref, position=position, counted=counted, reason=reason,
                                                       operator=operator, decided_at=now))
    audit.record("case.member_counted", {"case_ref": case_ref, "operator": operator, "position": position, "counted": counted})
    return {"case_ref": case_ref, "position": position, "counted": counted, "reason": reason, "operator": operator}
