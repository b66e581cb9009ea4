"""Token index tables: pseudonymous derived facts per OPRF token and key epoch.

No table here holds an identity number. ``token_index`` is what lookups read;
``index_rows`` maps each source row (by locator: table and primary key, or file and line)
to the token it was filed under, so that a changed or deleted row replaces or removes its
facts; ``index_progress`` is the resumable position of each source's build;
``index_problems`` lists the rows that could not be used, by locator and reason.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, DateTime, Index, Integer, LargeBinary, String, Table, Text

from hedui.node.store.schema import metadata

__all__ = ["token_index", "index_rows", "index_progress", "index_problems"]

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
    # Problem rows of the current run and the physical lines they took (an unterminated quote
    # swallows lines): the unusable share a run must stay under to go live (issue 13).
    Column("problem_rows", BigInteger, nullable=False, server_default="0"),
    Column("problem_lines", BigInteger, nullable=False, server_default="0"),
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
