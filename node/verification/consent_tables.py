"""A provider's durable consent state (issue 18c): what each hub's revocation lists told it,
and how each authorisation has been used here. Kept across restarts, so neither an older
list nor a restart undoes a revocation, and a periodic authorisation's frequency limit and a
one-off authorisation's single case hold for the life of the store."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, LargeBinary, String, Table

from hedui.node.store.schema import metadata

__all__ = ["consent_lists_seen", "consent_revoked_seen", "consent_uses"]

# Per hub: the highest serial of its signed revocation list this provider accepted.
consent_lists_seen = Table(
    "consent_lists_seen",
    metadata,
    Column("hub", String(64), primary_key=True),
    Column("serial", BigInteger, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

# Every record digest a hub's list revoked. Only ever added to: a later list that omits a
# digest does not un-revoke it here.
consent_revoked_seen = Table(
    "consent_revoked_seen",
    metadata,
    Column("hub", String(64), primary_key=True),
    Column("consent_digest", LargeBinary(32), primary_key=True),
    Column("learned_at", DateTime(timezone=True), nullable=False),
)

# One row per (hub, authorisation scan digest, use): the authorisation, not the record, is
# what the household signed — a hub that opens a new case under the same scan gets a new
# record but the same row. ``members``: the distinct members this provider was asked about
# under it, each as 4-byte epoch + SHA-256 of the token, sorted (never the tokens).
consent_uses = Table(
    "consent_uses",
    metadata,
    Column("hub", String(64), primary_key=True),
    Column("scan_digest", LargeBinary(32), primary_key=True),
    Column("use", Integer, primary_key=True),
    Column("case_ref", String(64), nullable=False),
    Column("record_digest", LargeBinary(32), nullable=False),
    Column("first_used_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=False),
    Column("uses", Integer, nullable=False),
    Column("members", LargeBinary, nullable=False),
)
