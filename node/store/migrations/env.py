"""Alembic environment: runs against the connection handed in by :func:`hedui.node.store.migrate.upgrade`."""

from alembic import context

from hedui.node.store.schema import include_name, load_all

target_metadata = load_all()
connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via `alembic` CLI
    raise SystemExit("run migrations through `hedui node migrate`")
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                  include_name=include_name)
with context.begin_transaction():
    context.run_migrations()
