"""Migrations: the migrated schema equals the table modules, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hedui.node.store import migrate, schema


def test_migrations_reach_head_and_match_the_models(engine):
    assert migrate.current(engine) == migrate.head()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_name": schema.include_name}),
                                schema.load_all())
    assert diff == []


def test_upgrade_is_idempotent(engine):
    before, after = migrate.upgrade(engine)
    assert before == after == migrate.head()
