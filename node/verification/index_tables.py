"""Token index tables: pseudonymous derived facts per OPRF token and key epoch.

No table here holds an identity number. ``token_index`` is what lookups read;
``index_rows`` maps each source row (by locator: table and primary key, or file and line)
to the token it was filed under, so that a changed or deleted row replaces or removes its
facts; ``index_progress`` is the resumable position of each source's build;
``index_problems`` lists the rows that could not be used, by locator and reason.
"""

from __future__ import annotations

import re

from sqlalchemy import BigInteger, Column, Date, DateTime, Index, Integer, LargeBinary, String, Table, Text

from hedui.node.store.schema import metadata

__all__ = ["token_index", "index_rows", "index_progress", "index_problems", "DEFAULT_INDEX_PARTITIONS",
           "MAX_INDEX_PARTITIONS", "partition_bounds", "token_index_pg_ddl", "is_partition"]

# The facts of one source behind one token, in one build generation (issue 13: serving is
# all-or-nothing per build). ``gen`` is the run of ``index_progress`` that wrote the row;
# readers take only rows with ``gen <= index_progress.live_gen`` of their source, and the swap
# that makes a run live (one transaction) deletes the rows it supersedes, so at every commit
# the live rows are exactly one complete build per source. ``part`` splits a token's facts
# over the batches of a full build (a batch inserts, never reads back; readers merge parts).
# ``facts`` is canonical JSON (sorted keys, no spaces, ASCII):
# {"<locator>": [{"name", "value", "unit", "on", "attrs"[, "until"]}, ...]}; values are decimal
# strings (the text itself for unit "code"), dates ISO; "until" only when set. ``row_count``
# is the number of source rows in the part; 0 marks a token an incremental run removed
# (deleted, with what it supersedes, by the swap).
token_index = Table(
    "token_index",
    metadata,
    Column("epoch", Integer, primary_key=True),
    Column("token", LargeBinary(64), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("gen", Integer, primary_key=True),
    Column("part", BigInteger, primary_key=True),
    Column("facts", Text, nullable=False),
    Column("row_count", Integer, nullable=False),
    # The swap finds a run's rows by it; a first build creates it after loading (index.py).
    Index("ix_token_index_gen", "epoch", "source", "gen"),
)

# Which token each source row is filed under (the reverse map), and the run that last saw it.
index_rows = Table(
    "index_rows",
    metadata,
    Column("epoch", Integer, primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("locator", String(255), primary_key=True),
    Column("token", LargeBinary(64), nullable=False),
    Column("run", Integer, nullable=False),
    Index("ix_index_rows_sweep", "epoch", "source", "run"),
)

# Build state per (epoch, source). ``position`` is the adapter's opaque resume position after
# the last committed batch; ``fingerprint`` the mapping (and file) digest of the current run.
index_progress = Table(
    "index_progress",
    metadata,
    Column("epoch", Integer, primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("run", Integer, nullable=False),
    Column("mode", String(16), nullable=False),        # fresh | full | incremental
    Column("status", String(16), nullable=False),      # running | done
    Column("position", Text, nullable=True),
    Column("fingerprint", String(200), nullable=False),
    Column("rows_read", BigInteger, nullable=False),   # in the current run
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),   # first completion of the epoch
    # The run whose build is served (NULL: none completed yet). Set only by the swap, in the
    # transaction that deletes what the run supersedes (node/verification/index.py).
    Column("live_gen", Integer, nullable=True),
    # Problem rows of the current run (a quote left open counts every line it swallowed,
    # adapters/tabular.py): the unusable share a run must stay under to go live (issue 13).
    Column("problem_rows", BigInteger, nullable=False, server_default="0"),
    # The last day the source's data covers (its extract date), as found when the last build
    # started; answers over windows ending later are "not current" (issue 12).
    Column("data_date", Date, nullable=True),
)

# Rows an adapter could not use, by locator; never the identity.
index_problems = Table(
    "index_problems",
    metadata,
    Column("epoch", Integer, primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("locator", String(255), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("run", Integer, nullable=False),
)


# --- PostgreSQL partitions (issue 16 item 6) -----------------------------------------------------
#
# On PostgreSQL ``token_index`` (the tokens and their facts: what every lookup reads and every
# build writes) is partitioned by the token's leading two bytes: ``PARTITION BY RANGE (token)``
# with bounds at equal steps of the 2-byte prefix. A token is an OPRF output (RFC 9497: a
# SHA-512 digest), uniform over its bytes, so equal prefix ranges are equal-sized partitions —
# hash partitioning in effect — while ranges keep the token order: a scan in token order (the
# cross-check filter, ``all_tokens``) reads the partitions one after the other instead of
# merging all of them. Each partition has its own B-tree (shallower, built and vacuumed
# independently, by several workers at once). The number of partitions is fixed when the
# table is created (``[store] index_partitions``, migration 0009pg16); changing it later means
# rebuilding the table (docs/department-it.md). SQLite keeps the plain table.

DEFAULT_INDEX_PARTITIONS = 16
MAX_INDEX_PARTITIONS = 256


def partition_bounds(n: int) -> list[tuple[bytes | None, bytes | None]]:
    """``n`` half-open token ranges ``[lo, hi)`` covering every token (``None``: unbounded),
    split at equal steps of the 2-byte prefix."""
    if not 1 <= n <= MAX_INDEX_PARTITIONS:
        raise ValueError(f"index partitions: got {n}, want 1..{MAX_INDEX_PARTITIONS}")
    cuts = [(i * 65536 // n).to_bytes(2, "big") for i in range(1, n)]
    los: list[bytes | None] = [None, *cuts]
    his: list[bytes | None] = [*cuts, None]
    return list(zip(los, his))


def _bound(b: bytes | None, edge: str) -> str:
    return edge if b is None else f"'\\x{b.hex()}'::bytea"


def token_index_pg_ddl(n: int, name: str = "token_index") -> list[str]:
    """The statements that create ``name`` as the partitioned token index (same columns and
    primary key as :data:`token_index`) and its ``n`` partitions ``<name>_p000`` …"""
    stmts = [
        f"CREATE TABLE {name} (epoch INTEGER NOT NULL, token BYTEA NOT NULL, source VARCHAR(64) NOT NULL, "
        f"gen INTEGER NOT NULL, part BIGINT NOT NULL, facts TEXT NOT NULL, row_count INTEGER NOT NULL, "
        f"CONSTRAINT pk_{name} PRIMARY KEY (epoch, token, source, gen, part)) PARTITION BY RANGE (token)"
    ]
    for i, (lo, hi) in enumerate(partition_bounds(n)):
        stmts.append(f"CREATE TABLE {name}_p{i:03d} PARTITION OF {name} "
                     f"FOR VALUES FROM ({_bound(lo, 'MINVALUE')}) TO ({_bound(hi, 'MAXVALUE')})")
    if name == "token_index":
        # The swap's index (index_tables.token_index), created on the parent: PostgreSQL
        # creates one per partition.
        stmts.append("CREATE INDEX ix_token_index_gen ON token_index (epoch, source, gen)")
    return stmts


def is_partition(name: str | None) -> bool:
    """A partition of a partitioned table (storage, not a table of the model): Alembic's
    comparison of the schema with the table modules leaves them out."""
    return bool(name) and re.fullmatch(r"token_index_p\d{3}", name or "") is not None
