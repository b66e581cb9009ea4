"""The node's one SQLAlchemy ``MetaData``. Each concept module declares its own tables on it
(``hedui.node.audit.tables``, ``hedui.node.verification.index_tables`` …); :func:`load_all` imports them so
that Alembic and tests see the whole schema."""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

__all__ = ["metadata", "load_all", "TABLE_MODULES", "include_name"]

# Stable constraint names so migrations are identical on SQLite and PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Every module that declares tables. Add new ones here (and an Alembic revision).
TABLE_MODULES: tuple[str, ...] = (
    "hedui.node.store.tables",
    "hedui.node.audit.tables",
    "hedui.node.verification.index_tables",
    "hedui.node.verification.hub_tables",
    "hedui.node.verification.consent_tables",
    "hedui.node.discovery.tables",
    "hedui.node.verification.casework",
    "hedui.node.console.tables",
    "hedui.node.crosscheck.tables",
    "hedui.node.crosscheck.history",
)


def load_all() -> MetaData:
    for name in TABLE_MODULES:
        importlib.import_module(name)
    return metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's filter when comparing the store with the table modules: partitions of a
    partitioned table (PostgreSQL, issue 16) are storage of their parent, not tables of the
    model, and are left out."""
    if type_ == "table":
        from hedui.node.verification.index_tables import is_partition

        return not is_partition(name)
    return True
