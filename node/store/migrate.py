"""Schema migrations (Alembic) run on start or by ``hedui node migrate``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

__all__ = ["upgrade", "current", "head", "autogenerate"]

_HERE = Path(__file__).resolve().parent / "migrations"


def _config(connection=None, index_partitions: int | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = connection
    # Read by 0009pg16 when it creates the partitioned token index (PostgreSQL only).
    cfg.attributes["index_partitions"] = index_partitions
    return cfg


def head() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, *, index_partitions: int | None = None) -> tuple[str | None, str | None]:
    """Brings the store to the newest schema; returns (before, after) revisions.
    ``index_partitions``: how many partitions the token index gets on PostgreSQL when a
    migration creates it (``[store] index_partitions``; default 16); ignored on SQLite and
    once the table exists."""
    before = current(engine)
    with engine.begin() as conn:
        command.upgrade(_config(conn, index_partitions), "head")
    return before, current(engine)


def autogenerate(engine: Engine, message: str) -> None:  # pragma: no cover - developer tool
    with engine.begin() as conn:
        command.revision(_config(conn), message=message, autogenerate=True)
