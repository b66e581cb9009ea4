"""The hub's cache of verified token filters (issue 14): one row per provider, the signed
header envelope and the shard bytes it covers, so a refresh re-fetches only changed shards
(``filterfmt.refresh_plan``) and a cross-check report can cite the envelope as evidence."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, DateTime, Integer, LargeBinary, String, Table

from hedui.node.store.schema import metadata

__all__ = ["token_filters"]

token_filters = Table(
    "token_filters",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("data_date", Date, nullable=False),
    Column("total", BigInteger, nullable=False),
    # SHA-256 of the signed header payload: what a report cites.
    Column("header_sha256", LargeBinary(32), nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    # Every shard's bytes in index order (sizes from the signed header).
    Column("bodies", LargeBinary, nullable=False),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
)
