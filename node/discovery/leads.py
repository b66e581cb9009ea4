"""Discovery leads on the hub: one per person, merged from notices and manual reports; the
caseworker's views of them, and the one place a lead's sealed identity is opened.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from hedui.keys import sealing
from hedui.node.discovery.referrals import Referrals
from hedui.node.discovery.tables import lead_events, leads, referrals, utc
from hedui.node.errors import InvalidArgument, NotFound

__all__ = ["Leads"]


class Leads(Referrals):
    """The lead views of the hub's discovery workflow (a base of
    :class:`~hedui.node.discovery.hub.Hub`; a lead shows its referrals)."""

    def list_leads(self, *, status: str | None = None, region: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Leads, newest first, with how many events and sources each has (no identity)."""
        n_events = func.count(lead_events.c.event_id)
        n_sources = func.count(func.distinct(lead_events.c.provider))
        stmt = (
            select(leads.c.lead_id, leads.c.region, leads.c.status, leads.c.created_at, leads.c.updated_at,
                   n_events.label("events"), n_sources.label("sources"))
            .select_from(leads.outerjoin(lead_events, lead_events.c.lead_id == leads.c.lead_id))
            .group_by(leads.c.lead_id, leads.c.region, leads.c.status, leads.c.created_at, leads.c.updated_at)
            .order_by(leads.c.lead_id.desc())
            .limit(limit)
        )
        if status is not None:
            if status not in ("open", "closed"):
                raise InvalidArgument(f"status: got {status!r}, want open or closed")
            stmt = stmt.where(leads.c.status == status)
        if region is not None:
            stmt = stmt.where(leads.c.region.startswith(region, autoescape=True))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            {
                "lead_id": r.lead_id,
                "region": r.region,
                "status": r.status,
                "created_at": utc(r.created_at).isoformat(),  # type: ignore[union-attr]
                "updated_at": utc(r.updated_at).isoformat(),  # type: ignore[union-attr]
                "events": r.events,
                "sources": r.sources,
            }
            for r in rows
        ]

    def lead(self, lead_id: int) -> dict[str, Any]:
        """One lead: public fields, its events (which notices and reports merged into it) and
        its referrals. No identity: see :meth:`reveal_identity`."""
        with self.engine.connect() as conn:
            row = conn.execute(select(leads).where(leads.c.lead_id == lead_id)).one_or_none()
            if row is None:
                raise NotFound(f"lead: got {lead_id}, want an existing lead id")
            events = conn.execute(
                select(lead_events).where(lead_events.c.lead_id == lead_id).order_by(lead_events.c.event_id)
            ).all()
        return {
            "lead_id": row.lead_id,
            "region": row.region,
            "status": row.status,
            "created_at": utc(row.created_at).isoformat(),  # type: ignore[union-attr]
            "updated_at": utc(row.updated_at).isoformat(),  # type: ignore[union-attr]
            "events": [
                {
                    "source": e.source,
                    "notice_id": bytes(e.notice_id).hex() if e.notice_id is not None else None,
                    "provider": e.provider,
                    "event_type": e.event_type,
                    "event_date": e.event_date.isoformat(),
                    "region": e.region,
                    "received_at": utc(e.created_at).isoformat(),  # type: ignore[union-attr]
                }
                for e in events
            ],
            "providers": sorted({e.provider for e in events}),
            "referrals": [v.as_dict() for v in self.referrals_where(referrals.c.lead_id == lead_id)],
        }

    def merged_leads(self) -> list[dict[str, Any]]:
        """Leads into which more than one notice or report was merged."""
        return [d for d in self.list_leads(limit=100_000) if d["events"] > 1]

    def reveal_identity(self, lead_id: int, key: sealing.SealingKey) -> str:
        """Opens a lead's sealed identity with the hub's private sealing key (caseworker use)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(leads).where(leads.c.lead_id == lead_id)).one_or_none()
        if row is None:
            raise NotFound(f"lead: got {lead_id}, want an existing lead id")
        plain = sealing.open(
            key,
            bytes(row.identity_enc),
            bytes(row.identity_ciphertext),
            b"hedui.lead.v1\x00" + row.person_key.encode(),
            suite=row.identity_suite,
        )
        return plain.decode()
