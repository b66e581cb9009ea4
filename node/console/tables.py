"""The console's own state in the hub's store: sessions, sign-in failures, used form tokens.

Sessions live server-side (not in signed cookies) so that signing out, disabling an operator
and the idle timeout take effect at once, on every console process that shares the store,
and survive a restart. The cookie holds only a random session id; the store holds its
SHA-256, so reading the table does not yield a usable session.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, LargeBinary, String, Table

from hedui.node.store.schema import metadata

__all__ = ["console_sessions", "console_signin_state", "console_form_tokens"]

_TS = DateTime(timezone=True)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("session_hash", LargeBinary(32), primary_key=True),  # SHA-256 of the cookie value
    Column("operator", String(64), nullable=False),
    Column("csrf", String(64), nullable=False),  # the synchroniser token every POST must carry
    Column("created_at", _TS, nullable=False),
    Column("last_seen_at", _TS, nullable=False),
    Index("ix_console_sessions_operator", "operator"),
)

# Consecutive sign-in failures of a *known* operator (unknown names are rate-limited by client
# address only: a typed name may be anything, even an identity number, so it is never stored).
console_signin_state = Table(
    "console_signin_state",
    metadata,
    Column("operator", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", _TS, nullable=True),
    Column("updated_at", _TS, nullable=False),
)

# One row per submitted form token: a second submission of the same form finds the row and is
# sent where the first one led instead of acting twice.
console_form_tokens = Table(
    "console_form_tokens",
    metadata,
    Column("token", String(64), primary_key=True),
    Column("operator", String(64), nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("result", String(200), nullable=True),  # the page the first submission led to; NULL while it runs
)
