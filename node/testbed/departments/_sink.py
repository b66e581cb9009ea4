"""Table declarations and the two writers (SQLite files, PostgreSQL schemas) fed from one stream.

Both writers receive exactly the same rows (ints, text and ``None``; dates, amounts and
timestamps as text), so both backends hold identical content; each applies its own column types
(SQLite its affinities, PostgreSQL its types). Declared types are written the same way in both
dialects. Nothing is half-written: SQLite files are built under a temporary name and renamed at
the end, the PostgreSQL load is one transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Col", "Table", "GenerateError", "SqliteSink", "PgSink", "Out"]


class GenerateError(Exception):
    """A clear, one-line reason the databases could not be written (nothing was)."""


@dataclass(frozen=True)
class Col:
    name: str
    type: str       # INTEGER, BIGINT, VARCHAR(n), NUMERIC(p,s), DATE, TIMESTAMP
    comment: str
    key: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    comment: str
    cols: tuple[Col, ...]
    indexes: tuple[tuple[str, ...], ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cols]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _columns(t: Table, comments: bool) -> str:
    lines = []
    for i, c in enumerate(t.cols):
        comma = "," if i < len(t.cols) - 1 else ""
        line = f"  {_q(c.name)} {c.type}{' PRIMARY KEY' if c.key else ''}{comma}"
        lines.append(f"{line}  -- {c.comment}" if comments else line)
    return "\n".join(lines)


class SqliteSink:
    """One ``<department>.sqlite`` file per department in ``folder``; column comments live in
    the ``CREATE TABLE`` text (``sqlite_master.sql``), as in a real SQLite database."""

    def __init__(self, folder: Path, replace: bool = False) -> None:
        self.folder, self.replace = Path(folder), replace
        self.conns: dict[str, sqlite3.Connection] = {}
        self.done: list[str] = []

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.sqlite"

    def check(self, keys: list[str]) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise GenerateError(f"sqlite: got a file at {self.folder}, want a folder")
        taken = [k for k in keys if self.path(k).exists()]
        if taken and not self.replace:
            raise GenerateError(f"sqlite: {self.path(taken[0])} exists, want a new folder (or replace)")

    def open(self, key: str, tables: tuple[Table, ...]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.path(key).with_suffix(".sqlite.part")
        part.unlink(missing_ok=True)
        conn = sqlite3.connect(part, isolation_level=None)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for t in tables:
            conn.execute(f"CREATE TABLE {_q(t.name)} (  -- {t.comment}\n{_columns(t, True)}\n)")
        self.conns[key] = conn

    def write(self, key: str, t: Table, rows: list[tuple]) -> None:
        marks = ", ".join("?" * len(t.cols))
        self.conns[key].executemany(f"INSERT INTO {_q(t.name)} VALUES ({marks})", rows)

    def finish(self, key: str, tables: tuple[Table, ...]) -> None:
        conn = self.conns.pop(key)
        for t in tables:
            for i, cols in enumerate(t.indexes):
                conn.execute(f"CREATE INDEX {_q(f'ix_{t.name}_{i}')} ON {_q(t.name)} ({', '.join(map(_q, cols))})")
        conn.execute("COMMIT")
        conn.close()
        self.done.append(key)

    def commit(self) -> None:
        for key in self.done:
            self.path(key).with_suffix(".sqlite.part").replace(self.path(key))

    def abort(self) -> None:
        for conn in self.conns.values():
            conn.close()
        for key in [*self.conns, *self.done]:
            self.path(key).with_suffix(".sqlite.part").unlink(missing_ok=True)
        self.conns.clear()


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if not u.drivername.startswith("postgresql"):
        raise GenerateError(f"postgres: got a {u.drivername} URL, want postgresql://…")
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


class PgSink:
    """One schema per department in the database at ``url``, loaded with COPY in one transaction;
    table and column comments with ``COMMENT ON``."""

    def __init__(self, url: str, replace: bool = False) -> None:
        import psycopg

        self.replace = replace
        try:
            self.conn = psycopg.connect(_libpq(url), connect_timeout=10)
        except psycopg.Error as e:
            raise GenerateError(f"postgres: cannot connect ({type(e).__name__}), want a reachable database") from None

    def check(self, keys: list[str]) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY 1", (keys,))
            taken = [r[0] for r in cur.fetchall()]
        if taken and not self.replace:
            raise GenerateError(f"postgres: schema {taken[0]} exists, want a database without it (or replace)")

    def open(self, key: str, tables: tuple[Table, ...]) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {_q(key)} CASCADE")
            cur.execute(f"CREATE SCHEMA {_q(key)}")
            for t in tables:
                name = f"{_q(key)}.{_q(t.name)}"
                cur.execute(f"CREATE TABLE {name} (\n{_columns(t, False)}\n)")
                cur.execute(f"COMMENT ON TABLE {name} IS {_lit(t.comment)}")
                for c in t.cols:
                    cur.execute(f"COMMENT ON COLUMN {name}.{_q(c.name)} IS {_lit(c.comment)}")

    def write(self, key: str, t: Table, rows: list[tuple]) -> None:
        cols = ", ".join(map(_q, t.names))
        with self.conn.cursor() as cur, cur.copy(f"COPY {_q(key)}.{_q(t.name)} ({cols}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)

    def finish(self, key: str, tables: tuple[Table, ...]) -> None:
        with self.conn.cursor() as cur:
            for t in tables:
                for i, cols in enumerate(t.indexes):
                    cur.execute(f"CREATE INDEX {_q(f'ix_{t.name}_{i}')} ON {_q(key)}.{_q(t.name)} "
                                f"({', '.join(map(_q, cols))})")

    def commit(self) -> None:
        self.conn.commit()
        self.conn.close()

    def abort(self) -> None:
        self.conn.rollback()
        self.conn.close()


class Out:
    """Buffers rows per table and hands full batches to every sink: memory stays bounded."""

    def __init__(self, sinks: list, tables: dict[str, tuple[Table, ...]], batch: int = 20_000) -> None:
        self.sinks, self.batch = sinks, batch
        self.tables = {(k, t.name): t for k, ts in tables.items() for t in ts}
        self.buf: dict[tuple[str, str], list[tuple]] = {key: [] for key in self.tables}
        self.counts: dict[str, dict[str, int]] = {k: {t.name: 0 for t in ts} for k, ts in tables.items()}

    def emitter(self, key: str):
        bufs = {name: b for (k, name), b in self.buf.items() if k == key}
        batch, flush = self.batch, self._flush

        def emit(table: str, row: tuple) -> None:
            b = bufs[table]
            b.append(row)
            if len(b) >= batch:
                flush(key, table)
        return emit

    def _flush(self, key: str, table: str) -> None:
        rows = self.buf[(key, table)]
        if rows:
            t = self.tables[(key, table)]
            if {len(r) for r in rows} != {len(t.cols)}:
                raise AssertionError(f"{key}.{table}: a row does not have {len(t.cols)} values")
            for s in self.sinks:
                s.write(key, t, rows)
            self.counts[key][table] += len(rows)
            rows.clear()

    def flush(self) -> None:
        for key, table in sorted(self.buf):
            self._flush(key, table)
