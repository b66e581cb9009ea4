"""Audit-log tables on the node's one ``MetaData`` (register this module as
``hedui.node.audit.tables`` in :data:`hedui.node.store.schema.TABLE_MODULES`).

- ``audit_head``: one row (id 1): the log's origin, tree size and tile height. Every
  append and checkpoint starts by updating this row, which serialises writers on both
  SQLite and PostgreSQL; its ``size`` always equals the number of entries (same
  transaction).
- ``audit_entries``: one row per leaf; ``seq`` is the RFC 9162 leaf index (from 0);
  ``entry`` holds the exact bytes that were hashed (``leaf_hash`` = SHA-256(0x00 || entry)).
  ``kind``, ``request_id`` and ``created_at`` are copies of fields inside ``entry`` for
  indexed look-ups (``kind`` / ``created_at``: reconcile's period scans; ``request_id``:
  ``hedui audit find``, node/audit/find.py); verification and look-ups trust only ``entry``.
- ``audit_nodes``: hashes of complete subtrees at heights ``tile_height``,
  ``2*tile_height``, ...: a cache so that proofs and roots need O(log n) short range reads
  instead of rehashing; written in the same transaction as the entries it covers.
- ``audit_checkpoints``: every checkpoint this log signed (never deleted).
- ``audit_cosignatures``: every peer checkpoint this node cosigned, with our line.
- ``audit_forks``: evidence of inconsistent checkpoints from a peer.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
)

from hedui.node.store.schema import metadata

__all__ = [
    "audit_head",
    "audit_entries",
    "audit_nodes",
    "audit_checkpoints",
    "audit_cosignatures",
    "audit_forks",
]

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_Id = BigInteger().with_variant(Integer(), "sqlite")

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("origin", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("tile_height", SmallInteger, nullable=False),
)

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("request_id", String(64), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_audit_entries_kind_created_at", "kind", "created_at"),
)

audit_nodes = Table(
    "audit_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("size", BigInteger, nullable=False, index=True),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_cosignatures = Table(
    "audit_cosignatures",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("peer", String(64), nullable=False),
    Column("origin", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("peer_note", Text, nullable=False),
    Column("cosignature", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_audit_cosignatures_peer_size", "peer", "size"),
)

audit_forks = Table(
    "audit_forks",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("peer", String(64), nullable=False, index=True),
    Column("origin", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("size_a", BigInteger, nullable=False),
    Column("note_a", Text, nullable=False),
    Column("size_b", BigInteger, nullable=False),
    Column("note_b", Text, nullable=False),
    Column("proof", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
