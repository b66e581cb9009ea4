"""Discovery tables on the node's shared ``metadata``.

Provider side: ``notice_outbox``. Hub side: ``notice_inbox``, ``leads``, ``lead_events``,
``referrals``. No column outside a sealed blob holds an identity number: the outbox keys
detections by a keyed hash (``dedup_key``), leads by a hub-keyed hash (``person_key``), and
the identity itself travels and rests only HPKE-sealed to the hub's key.

Times are stored in UTC (``DateTime(timezone=True)``; SQLite hands them back naive, read them
with :func:`utc`). Dates (event, due) are calendar dates in China.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from hedui.node.store.schema import metadata

__all__ = ["notice_outbox", "notice_inbox", "leads", "lead_events", "referrals", "utc", "insert_ignore"]

_TS = DateTime(timezone=True)

notice_outbox = Table(
    "notice_outbox",
    metadata,
    Column("notice_id", LargeBinary(16), primary_key=True),
    Column("dedup_key", String(64), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("hub", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("due_date", Date, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", _TS, nullable=False),
    Column("last_error", Text),
    Column("receipt", LargeBinary),
    Column("created_at", _TS, nullable=False),
    Column("delivered_at", _TS),
    UniqueConstraint("dedup_key"),
    # rejected: the hub refused the notice itself (e.g. an invalid identity inside); it is not
    # retried until an operator runs `hedui notices retry`.
    CheckConstraint("status IN ('pending', 'delivered', 'rejected')", name="status"),
    Index("ix_notice_outbox_due", "status", "next_attempt_at"),
)

notice_inbox = Table(
    "notice_inbox",
    metadata,
    Column("notice_id", LargeBinary(16), primary_key=True),
    Column("provider", String(64), nullable=False),
    Column("notice_digest", LargeBinary(32), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("region", String(32), nullable=False),
    Column("event_date", Date, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("created_at", _TS, nullable=False),
    # The sealed part exactly as received; opened on demand with the hub's sealing key.
    Column("sealed_enc", LargeBinary, nullable=False),
    Column("sealed_ciphertext", LargeBinary, nullable=False),
    Column("sealed_suite", String(64), nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("received_at", _TS, nullable=False),
    Column("receipt", LargeBinary),
    Column("lead_id", Integer, ForeignKey("leads.lead_id")),
    Index("ix_notice_inbox_received_at", "received_at"),
)

leads = Table(
    "leads",
    metadata,
    Column("lead_id", Integer, primary_key=True, autoincrement=True),
    # HMAC-SHA256(hub secret, identity): merges a person's notices without storing the identity.
    Column("person_key", String(64), nullable=False),
    # The identity sealed to the hub's own sealing key (aad binds the person_key).
    Column("identity_enc", LargeBinary, nullable=False),
    Column("identity_ciphertext", LargeBinary, nullable=False),
    Column("identity_suite", String(64), nullable=False),
    Column("region", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("updated_at", _TS, nullable=False),
    UniqueConstraint("person_key"),
    CheckConstraint("status IN ('open', 'closed')", name="status"),
)

lead_events = Table(
    "lead_events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("lead_id", Integer, ForeignKey("leads.lead_id"), nullable=False),
    Column("source", String(16), nullable=False),
    Column("notice_id", LargeBinary(16), ForeignKey("notice_inbox.notice_id")),
    # Provider member code for notices; the reporter's code (grid worker, town) for manual ones.
    Column("provider", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("event_date", Date, nullable=False),
    Column("region", String(32), nullable=False),
    # Manual reports: the reporter's details, sealed like a notice's (NULL for notices).
    Column("sealed_enc", LargeBinary),
    Column("sealed_ciphertext", LargeBinary),
    Column("created_at", _TS, nullable=False),
    CheckConstraint("source IN ('notice', 'manual')", name="source"),
    CheckConstraint(
        "(source = 'notice' AND notice_id IS NOT NULL) OR (source = 'manual' AND notice_id IS NULL)",
        name="source_notice",
    ),
    Index("ix_lead_events_lead", "lead_id"),
    Index("ix_lead_events_created_at", "created_at"),
)

referrals = Table(
    "referrals",
    metadata,
    Column("referral_id", Integer, primary_key=True, autoincrement=True),
    Column("lead_id", Integer, ForeignKey("leads.lead_id"), nullable=False),
    Column("assignee", String(64), nullable=False),
    Column("assignee_kind", String(16), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("status", String(16), nullable=False),
    Column("outcome", String(16)),
    Column("programme", String(32)),
    Column("responded_at", _TS),
    Column("escalated_at", _TS),
    CheckConstraint("status IN ('open', 'responded', 'escalated')", name="status"),
    CheckConstraint("assignee_kind IN ('town', 'department')", name="assignee_kind"),
    CheckConstraint(
        "outcome IS NULL OR outcome IN ('found', 'assisted', 'not_eligible', 'unreachable')",
        name="outcome",
    ),
    Index("ix_referrals_lead", "lead_id"),
    Index("ix_referrals_status_due", "status", "due_date"),
    Index("ix_referrals_created_at", "created_at"),
)


def utc(value: datetime | None) -> datetime | None:
    """A stored timestamp as an aware UTC ``datetime`` (SQLite returns naive UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


_IGNORE: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def insert_ignore(conn: Connection, table: Table, values: dict[str, Any], conflict: list[str]) -> bool:
    """``INSERT … ON CONFLICT (conflict) DO NOTHING`` on SQLite and PostgreSQL; True when a
    row was inserted."""
    key = (conn.dialect.name, table.name, tuple(conflict))
    stmt = _IGNORE.get(key)
    if stmt is None:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif conn.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - the store supports only these two
            raise NotImplementedError(conn.dialect.name)
        pk = list(table.primary_key.columns)[0]
        # Built once; the values go in as parameters, so the compiled statement is reused.
        stmt = _IGNORE[key] = insert(table).on_conflict_do_nothing(index_elements=conflict).returning(pk)
    # rowcount is unreliable with RETURNING on psycopg; a returned row is not.
    return conn.execute(stmt, values).first() is not None
