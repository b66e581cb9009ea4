"""Referral slips (线索转办单): the town's or department's answer, overdue referrals and
their escalation (通报督办), on the hub.

A lead is referred when it is accepted (:mod:`hedui.node.discovery.hub`); here its referral
is answered (:meth:`Referrals.record_response`), listed, found overdue and escalated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, func, select, true, update

from hedui.common.clock import Clock
from hedui.node.audit.entry import Kind
from hedui.node.discovery.calendar import WorkCalendar, local_date
from hedui.node.discovery.tables import leads, referrals, utc
from hedui.node.errors import ConfigError, FailedPrecondition, InvalidArgument, NotFound, Reason
from hedui.node.loops import PeriodicJob

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["ReferralView", "Referrals", "OUTCOMES", "PROGRAMMES", "EscalationJob", "hub_background"]

log = logging.getLogger("hedui.node.discovery")

OUTCOMES = ("found", "assisted", "not_eligible", "unreachable")
PROGRAMMES = (
    "dibao",
    "tekun",
    "temporary_assistance",
    "medical",
    "education",
    "housing",
    "employment",
    "disaster_relief",
)


@dataclass(frozen=True, slots=True)
class ReferralView:
    referral_id: int
    lead_id: int
    assignee: str
    assignee_kind: str
    event_type: str
    region: str
    created_at: datetime
    due_date: date
    status: str
    #: The local date the referral was made (federation zone): the day its working days count from.
    created_on: date
    #: What the deadline rests on: official, override or weekdays-only (docs/time.md).
    due_basis: str
    outcome: str | None
    programme: str | None
    responded_at: datetime | None
    escalated_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "referral_id": self.referral_id,
            "lead_id": self.lead_id,
            "assignee": self.assignee,
            "assignee_kind": self.assignee_kind,
            "event_type": self.event_type,
            "region": self.region,
            "created_at": self.created_at.isoformat(),
            "created_on": self.created_on.isoformat(),
            "due_date": self.due_date.isoformat(),
            "due_basis": self.due_basis,
            "status": self.status,
            "outcome": self.outcome,
            "programme": self.programme,
            "responded_at": self.responded_at.isoformat() if self.responded_at else None,
            "escalated_at": self.escalated_at.isoformat() if self.escalated_at else None,
        }


class Referrals:
    """The referral half of the hub's discovery workflow (a base of
    :class:`~hedui.node.discovery.hub.Hub`)."""

    engine: Engine
    clock: Clock
    calendar: WorkCalendar

    def record_response(
        self,
        referral_id: int,
        *,
        outcome: str,
        programme: str | None = None,
        now: datetime | None = None,
    ) -> ReferralView:
        """The assignee's answer. ``assisted`` needs the programme the person was placed in."""
        at = now or self.clock.now()
        if outcome not in OUTCOMES:
            raise InvalidArgument(f"outcome: got {outcome!r}, want one of {', '.join(OUTCOMES)}")
        if outcome == "assisted" and programme not in PROGRAMMES:
            raise InvalidArgument(f"programme: got {programme!r}, want one of {', '.join(PROGRAMMES)}")
        if outcome != "assisted" and programme is not None:
            raise InvalidArgument(f"programme: got {programme!r}, want none unless outcome is 'assisted'")
        with self.engine.begin() as conn:
            row = conn.execute(
                select(referrals.c.status, referrals.c.lead_id).where(referrals.c.referral_id == referral_id)
            ).one_or_none()
            if row is None:
                raise NotFound(f"referral: got {referral_id}, want an existing referral id")
            if row.status == "responded":
                raise FailedPrecondition(
                    f"referral {referral_id} status: got 'responded', want 'open' or 'escalated'",
                    reason=Reason.ALREADY_RESPONDED,
                )
            conn.execute(
                update(referrals)
                .where(referrals.c.referral_id == referral_id)
                .values(status="responded", outcome=outcome, programme=programme, responded_at=at)
            )
            still = conn.execute(
                select(func.count())
                .select_from(referrals)
                .where(referrals.c.lead_id == row.lead_id, referrals.c.status.in_(("open", "escalated")))
            ).scalar_one()
            if not still:
                conn.execute(update(leads).where(leads.c.lead_id == row.lead_id).values(status="closed", updated_at=at))
        return self.referral(referral_id)

    def referral(self, referral_id: int) -> ReferralView:
        found = self.referrals_where(referrals.c.referral_id == referral_id)
        if not found:
            raise NotFound(f"referral: got {referral_id}, want an existing referral id")
        return found[0]

    def list_referrals(
        self, *, status: str | None = None, assignee: str | None = None, made_by: datetime | None = None
    ) -> list[ReferralView]:
        """Referrals, oldest first; ``made_by``: only those made at or before that instant
        (``--as-of``)."""
        conds = []
        if made_by is not None:
            conds.append(referrals.c.created_at <= made_by)
        if status is not None:
            if status not in ("open", "responded", "escalated"):
                raise InvalidArgument(f"status: got {status!r}, want open, responded or escalated")
            conds.append(referrals.c.status == status)
        if assignee is not None:
            conds.append(referrals.c.assignee == assignee)
        return self.referrals_where(*conds)

    def overdue(self, as_of: date) -> list[ReferralView]:
        """Referrals not answered whose due date is before ``as_of``."""
        return self.referrals_where(
            referrals.c.status.in_(("open", "escalated")), referrals.c.due_date < as_of
        )

    def escalate(self, as_of: date, *, now: datetime | None = None) -> list[ReferralView]:
        """Marks open overdue referrals escalated (reported to the leading group's office and
        chased); returns the ones escalated by this call."""
        at = now or self.clock.now()
        with self.engine.begin() as conn:
            ids = conn.execute(
                select(referrals.c.referral_id).where(referrals.c.status == "open", referrals.c.due_date < as_of)
            ).scalars().all()
            if ids:
                conn.execute(
                    update(referrals)
                    .where(referrals.c.referral_id.in_(ids), referrals.c.status == "open")
                    .values(status="escalated", escalated_at=at)
                )
        return self.referrals_where(referrals.c.referral_id.in_(ids)) if ids else []

    def referrals_where(self, *conds: Any) -> list[ReferralView]:
        stmt = (
            select(referrals, leads.c.region)
            .join(leads, leads.c.lead_id == referrals.c.lead_id)
            .where(and_(true(), *conds))
            .order_by(referrals.c.referral_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        tz = self.clock.zone
        return [
            ReferralView(
                referral_id=r.referral_id,
                lead_id=r.lead_id,
                assignee=r.assignee,
                assignee_kind=r.assignee_kind,
                event_type=r.event_type,
                region=r.region,
                created_at=utc(r.created_at),  # type: ignore[arg-type]
                due_date=r.due_date,
                status=r.status,
                created_on=local_date(r.created_at, tz),
                due_basis=self.calendar.basis_between(local_date(r.created_at, tz), r.due_date),
                outcome=r.outcome,
                programme=r.programme,
                responded_at=utc(r.responded_at),
                escalated_at=utc(r.escalated_at),
            )
            for r in rows
        ]


# ---------------------------------------------------------------- the daily escalation job


class EscalationJob(PeriodicJob):
    """Escalates overdue referrals (通报督办) once a day at ``at`` (China time), and once at
    start to catch up; each run that escalates something is audited (``admin`` entry,
    action ``referrals.escalate``). A failed run is retried within the hour."""

    def __init__(self, rt: Runtime, *, at: time = time(8, 0), clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(f"escalation-{rt.member}", interval=3600.0, join_timeout=10.0)
        self.rt = rt
        self.at = at
        self._clock = clock or rt.clock.now  # the runtime's clock (DESIGN.md "Time")
        self._zone = rt.clock.zone
        self._last: date | None = None  # the China date of the last successful run; None: run at start

    def run_once(self, as_of=None) -> list[ReferralView]:
        """Escalates every open referral due before ``as_of`` (default: today in China)."""
        hub = self.rt.hub.discovery if self.rt.hub is not None else None
        if hub is None:
            raise ConfigError("hub.routing: got none, want the hub discovery file to escalate referrals")
        as_of = as_of or local_date(self._clock(), self._zone)
        views = hub.escalate(as_of)
        if views:
            self.rt.audit.record(Kind.ADMIN, {
                "action": "referrals.escalate",
                "operator": "hedui/escalation-job",
                "as_of": as_of.isoformat(),
                "count": len(views),
                "referral_ids": [v.referral_id for v in views],
            })
            log.warning("escalated %d overdue referral(s) as of %s", len(views), as_of)
        return views

    def _seconds_to_next(self) -> float:
        now = self._clock().astimezone(self._zone)
        nxt = datetime.combine(now.date(), self.at, self._zone)
        if nxt <= now:
            nxt += timedelta(days=1)
        return (nxt - now).total_seconds()

    def step(self) -> float:
        now = self._clock().astimezone(self._zone)
        if self._last is None or (now.date() != self._last and now.time() >= self.at):
            self.run_once(now.date())
            self._last = now.date()
        # Wake at least hourly, so a failed run is retried and a changed clock is noticed.
        return min(self._seconds_to_next(), 3600.0)


def hub_background(rt: Runtime) -> list:
    """Background jobs of a hub node: the daily overdue-referral escalation."""
    return [EscalationJob(rt)] if rt.hub is not None and rt.hub.discovery is not None else []
