"""The bulk statements of an index build, written for the driver (issue 16 item 4).

SQLAlchemy's per-row parameter processing would cost more than the rest of a batch, so a
batch goes to the driver directly: ``COPY … FROM STDIN`` on PostgreSQL for rows that cannot
conflict (psycopg's ``Cursor.copy``, one stream per batch), one statement over arrays
(``unnest``) where a row may already exist, and ``executemany`` with tuples on SQLite
(in-process, cheap per row).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection

__all__ = ["Sql", "chunks", "IN_CHUNK"]

IN_CHUNK = 500   # bound parameters per IN (...) list on SQLite


def chunks(seq: Sequence, n: int = IN_CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _cursor(conn: Connection) -> Any:
    """The psycopg cursor under a SQLAlchemy connection (for binary parameters and COPY)."""
    dbapi: Any = conn.connection.dbapi_connection
    return dbapi.cursor()


class Sql:
    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    @staticmethod
    def _pg(conn: Connection, sql: str, params: tuple) -> list[tuple]:
        # Binary parameters (%b): psycopg's text format escapes every array element with a regex.
        with _cursor(conn) as cur:
            cur.execute(sql.replace("%s", "%b"), params, binary=True)
            return cur.fetchall() if cur.description else []

    def copy(self, conn: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
        """Appends ``rows`` (none of which may exist yet)."""
        if not rows:
            return
        cols = ", ".join(columns)
        if self.pg:
            with _cursor(conn) as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
        else:
            conn.exec_driver_sql(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(columns))})", list(rows))

    def copy_ready(self, conn: Connection, table: str, columns: Sequence[str], parts: Sequence[bytes | list[tuple]]) -> None:
        """Appends rows the workers made ready to write (index_work.py ``prepare_fresh``):
        ``COPY`` text on PostgreSQL, streamed as it is; row tuples on SQLite."""
        cols = ", ".join(columns)
        if self.pg:
            if not any(parts):
                return
            with _cursor(conn) as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for part in parts:
                    if part:
                        cp.write(part)
            return
        rows = [r for part in parts for r in part]
        if rows:
            dbapi: Any = conn.connection.dbapi_connection
            dbapi.executemany(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(columns))})", rows)

    def copy_encoding(self, conn: Connection) -> str | None:
        """The Python codec of the connection's client encoding for ``COPY`` text
        (PostgreSQL), or None (SQLite: rows go as tuples)."""
        if not self.pg:
            return None
        dbapi: Any = conn.connection.dbapi_connection
        return str(dbapi.info.encoding)

    def upsert(self, conn: Connection, table: str, value_col: str, epoch: int, source: str, run: int,
               rows: Sequence[tuple[str, Any]]) -> None:
        """``(epoch, source, locator) -> (value_col, run)`` for index_rows / index_problems."""
        if not rows:
            return
        conflict = (f"ON CONFLICT (epoch, source, locator) DO UPDATE SET {value_col} = excluded.{value_col}, "
                    "run = excluded.run")
        if self.pg:
            locs, vals = map(list, zip(*rows))
            kind = "bytea" if value_col == "token" else "text"
            self._pg(conn,
                f"INSERT INTO {table} (epoch, source, locator, {value_col}, run) "
                f"SELECT %s, %s, l, v, %s FROM unnest(%s::text[], %s::{kind}[]) AS u(l, v) {conflict}",
                (epoch, source, run, locs, vals))
        else:
            conn.exec_driver_sql(f"INSERT INTO {table} (epoch, source, locator, {value_col}, run) "
                                 f"VALUES (?, ?, ?, ?, ?) {conflict}",
                                 [(epoch, source, loc, v, run) for loc, v in rows])

    def select_in(self, conn: Connection, sql: str, params: tuple, values: Sequence) -> Iterator[tuple]:
        """Runs ``sql`` (ending in a column, ``?`` placeholders) for ``column IN values``."""
        if not values:
            return
        if self.pg:
            yield from self._pg(conn, sql.replace("?", "%s") + " = ANY(%s)", params + (list(values),))
            return
        # On the driver's connection: a lookup's index read goes through here, and Core's
        # exec_driver_sql cost a statement's whole Python path per call (issue 16 item 3).
        dbapi: Any = conn.connection.dbapi_connection
        for part in chunks(values):
            yield from dbapi.execute(f"{sql} IN ({', '.join('?' * len(part))})", params + tuple(part)).fetchall()

    def delete_in(self, conn: Connection, sql: str, params: tuple, values: Sequence) -> None:
        """Runs ``sql`` (a DELETE ending in a column, ``?`` placeholders) for ``column IN values``."""
        if not values:
            return
        if self.pg:
            self._pg(conn, sql.replace("?", "%s") + " = ANY(%s)", params + (list(values),))
            return
        for part in chunks(values):
            conn.exec_driver_sql(f"{sql} IN ({', '.join('?' * len(part))})", params + tuple(part))
