"""Engines for the node's own database: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hedui.node.errors import ConfigError

__all__ = ["open_engine", "sqlite_url", "is_sqlite", "dialect_insert"]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def dialect_insert(conn: Connection) -> Callable[..., Any]:
    """The store dialect's ``insert`` (it has ``on_conflict_do_nothing`` / ``…_do_update``):
    the store is SQLite or PostgreSQL, and both spell an upsert the same way."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def open_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Opens the node store. SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL
    uses psycopg 3. A bad URL is a :class:`ConfigError` naming the problem (the password,
    if any, is masked)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"store.url: got an unparseable URL, want e.g. sqlite:///node.db ({exc})") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Many handler threads share one file; SQLite serialises writers itself (busy_timeout),
        # so the pool must not be what runs out first under load.
        engine = create_engine(parsed, connect_args={"timeout": 30}, pool_size=16, max_overflow=112, pool_timeout=120)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # 128 MiB page cache: index builds insert at random into large indexes.
            cur.execute("PRAGMA cache_size=-131072")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_size=pool_size, max_overflow=32, pool_timeout=120, pool_pre_ping=True)
    raise ConfigError(
        f"store.url: got backend {parsed.get_backend_name()!r}, want sqlite or postgresql"
    )
