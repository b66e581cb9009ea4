"""The hub staff's discovery worklist: leads with their merged notices, their sealed details
opened on demand (for a whole page at once), and referral answers and escalations — each act
audited here with the operator (DESIGN.md "Audit": entry points never audit).

Opening details is the expensive, sensitive step: the caller holds the hub's private sealing
key already loaded (loading it costs a memory-hard KDF, ~1.5 s); every sealed part of every
lead asked for is opened with it in one call, and one ``lead.details_opened`` entry records
who opened which leads and why.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, select

from hedui.adapters.idnum import contains
from hedui.common.errors import Reason
from hedui.keys import sealing
from hedui.node.discovery.hub import Hub
from hedui.node.discovery.notice import open_notice
from hedui.node.discovery.referrals import ReferralView
from hedui.node.discovery.tables import lead_events, leads, notice_inbox, referrals, utc
from hedui.node.errors import InvalidArgument, NotFound
from hedui.v1 import common_pb2, notice_pb2

__all__ = ["leads_page", "lead_row", "event_types", "open_details", "respond", "escalate", "referrals_page", "MAX_PAGE"]

MAX_PAGE = 100
# The bindings of the sealed parts (discovery/hub.py seals them this way).
_LEAD_AAD = b"hedui.lead.v1\x00"
_MANUAL_AAD = b"hedui.manual.v1\x00"


def leads_page(hub: Hub, *, town: str | None = None, event_type: str | None = None, status: str | None = None,
               lead_id: int | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Leads, newest first, each with its merged events and its referrals (no identity)."""
    if status is not None and status not in ("open", "closed"):
        raise InvalidArgument(f"status: got {status[:20]!r}, want open or closed")
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise InvalidArgument(f"page: got limit {limit}, offset {offset}, want 1..{MAX_PAGE} and >= 0")
    stmt = select(leads.c.lead_id, leads.c.region, leads.c.status, leads.c.created_at, leads.c.updated_at)
    if status is not None:
        stmt = stmt.where(leads.c.status == status)
    if lead_id is not None:
        stmt = stmt.where(leads.c.lead_id == lead_id)
    if town:
        stmt = stmt.where(leads.c.region.startswith(town, autoescape=True))
    if event_type:
        stmt = stmt.where(leads.c.lead_id.in_(select(lead_events.c.lead_id).where(lead_events.c.event_type == event_type)))
    stmt = stmt.order_by(leads.c.lead_id.desc()).limit(limit).offset(offset)
    with hub.engine.connect() as c:
        rows = c.execute(stmt).all()
        ids = [r.lead_id for r in rows]
        events = c.execute(select(lead_events).where(lead_events.c.lead_id.in_(ids))
                           .order_by(lead_events.c.event_id)).all() if ids else []
    by_lead: dict[int, list[dict]] = {}
    for e in events:
        by_lead.setdefault(e.lead_id, []).append({
            "event_id": e.event_id, "source": e.source, "provider": e.provider, "event_type": e.event_type,
            "event_date": e.event_date, "region": e.region, "received_at": utc(e.created_at),
        })
    refs: dict[int, list[ReferralView]] = {}
    for v in hub.referrals_where(referrals.c.lead_id.in_(ids)) if ids else []:
        refs.setdefault(v.lead_id, []).append(v)
    return [
        {"lead_id": r.lead_id, "region": r.region, "status": r.status, "created_at": utc(r.created_at),
         "updated_at": utc(r.updated_at), "events": by_lead.get(r.lead_id, []), "referrals": refs.get(r.lead_id, [])}
        for r in rows
    ]


def lead_row(hub: Hub, lead_id: int) -> dict[str, Any]:
    rows = leads_page(hub, lead_id=lead_id, limit=1)
    if not rows:
        raise NotFound(f"lead: got {lead_id}, want an existing lead id")
    return rows[0]


def event_types(hub: Hub) -> list[str]:
    with hub.engine.connect() as c:
        return sorted(c.execute(select(lead_events.c.event_type).distinct()).scalars())


def _check_reason(reason: str) -> str:
    reason = reason.strip()
    if not 2 <= len(reason) <= 200:
        raise InvalidArgument(f"reason: got {len(reason)} characters, want 2..200", reason=Reason.REASON_REQUIRED)
    if contains(reason):
        raise InvalidArgument("reason: got text containing an identity number, want none", reason=Reason.IDENTITY_IN_TEXT)
    return reason


def open_details(hub: Hub, key: sealing.SealingKey, audit, lead_ids: list[int], *, operator: str,
                 reason: str) -> dict[int, dict[str, Any]]:
    """Opens the sealed identity and every sealed event part of each lead in ``lead_ids``.

    Returns ``lead_id -> {"identity", "name", "events": {event_id: {"name", "details"}}}``;
    audits one ``lead.details_opened`` entry (operator, reason, lead ids) before returning."""
    reason = _check_reason(reason)
    ids = sorted({int(i) for i in lead_ids})
    if not ids or len(ids) > MAX_PAGE:
        raise InvalidArgument(f"leads: got {len(ids)}, want 1..{MAX_PAGE}")
    with hub.engine.connect() as c:
        lrows = {r.lead_id: r for r in c.execute(select(leads).where(leads.c.lead_id.in_(ids)))}
        missing = [i for i in ids if i not in lrows]
        if missing:
            raise InvalidArgument(f"leads: got unknown lead id {missing[0]}, want existing leads")
        erows = c.execute(
            select(lead_events.c.event_id, lead_events.c.lead_id, lead_events.c.source, lead_events.c.sealed_enc,
                   lead_events.c.sealed_ciphertext, notice_inbox.c.envelope)
            .select_from(lead_events.outerjoin(notice_inbox, and_(notice_inbox.c.notice_id == lead_events.c.notice_id)))
            .where(lead_events.c.lead_id.in_(ids)).order_by(lead_events.c.event_id)
        ).all()
    out: dict[int, dict[str, Any]] = {}
    for lid in ids:
        row = lrows[lid]
        identity = sealing.open(key, bytes(row.identity_enc), bytes(row.identity_ciphertext),
                                _LEAD_AAD + row.person_key.encode(), suite=row.identity_suite).decode()
        out[lid] = {"identity": identity, "name": "", "events": {}}
    for e in erows:
        sealed = _open_event(key, e, lrows[e.lead_id].person_key)
        if sealed is None:
            continue
        entry = out[e.lead_id]
        entry["events"][e.event_id] = {"name": sealed.name, "details": dict(sorted(sealed.details.items()))}
        if sealed.name and not entry["name"]:
            entry["name"] = sealed.name
    audit.record("lead.details_opened", {"operator": operator, "reason": reason, "leads": ids, "count": len(ids)})
    return out


def _open_event(key: sealing.SealingKey, e, person_key: str) -> notice_pb2.SealedDetails | None:
    if e.source == "notice" and e.envelope is not None:
        env = common_pb2.Envelope.FromString(bytes(e.envelope))
        return open_notice(notice_pb2.Notice.FromString(env.payload), key)
    if e.sealed_enc is not None and e.sealed_ciphertext is not None:
        plain = sealing.open(key, bytes(e.sealed_enc), bytes(e.sealed_ciphertext), _MANUAL_AAD + person_key.encode())
        return notice_pb2.SealedDetails.FromString(plain)
    return None


def respond(hub: Hub, audit, referral_id: int, *, outcome: str, programme: str | None, operator: str,
            now: datetime) -> ReferralView:
    """Records the assignee's answer (as typed in by ``operator``) and audits it."""
    view = hub.record_response(referral_id, outcome=outcome, programme=programme, now=now)
    audit.record("referral.responded", {"referral_id": referral_id, "operator": operator, "outcome": outcome,
                                        "programme": programme or ""})
    return view


def escalate(hub: Hub, audit, as_of: date, *, operator: str, now: datetime) -> list[ReferralView]:
    """Escalates every open referral overdue as of ``as_of``; audits who did it and which."""
    views = hub.escalate(as_of, now=now)
    audit.record("referral.escalated", {"operator": operator, "count": len(views),
                                        "referrals": [v.referral_id for v in views], "as_of": as_of.isoformat()})
    return views


def referrals_page(hub: Hub, *, status: str | None = None, assignee: str | None = None,
                   overdue_as_of: date | None = None) -> list[ReferralView]:
    """Referrals by status and assignee; with ``overdue_as_of``, only those overdue that day."""
    views = hub.list_referrals(status=status, assignee=assignee)
    if overdue_as_of is not None:
        views = [v for v in views if v.status in ("open", "escalated") and v.due_date < overdue_as_of]
    return views
