"""Node-wide tables: key/value state, seen request ids (replay guard), quota counters."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, LargeBinary, String, Table, Text

from hedui.node.store.schema import metadata

__all__ = ["node_state", "seen_requests", "quota_counters"]

# Small facts the node must remember across restarts, e.g. the highest directory version
# accepted (so an older directory is refused after a restart too).
node_state = Table(
    "node_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Every request id a provider has accepted, so a replay is refused even after a restart.
seen_requests = Table(
    "seen_requests",
    metadata,
    Column("request_id", LargeBinary(32), primary_key=True),
    Column("caller", String(64), nullable=False),
    Column("method", String(128), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False, index=True),
    Column("request_digest", LargeBinary(32), nullable=True),
    Column("answer", LargeBinary, nullable=True),
)

# Fixed-window counters per caller, method and window ("m" minute, "d" day).
quota_counters = Table(
    "quota_counters",
    metadata,
    Column("caller", String(64), primary_key=True),
    Column("method", String(128), primary_key=True),
    Column("window", String(1), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)
