"""Hot-path statements run on the driver's cursor (issue 16 item 3: lean statements).

A provider's exchange runs a dozen small statements; through SQLAlchemy Core each costs its
per-execution Python path (execution context, parameter construction, result set-up) — 41 %
of a provider's Python CPU in the profile of docs/performance.md, against 2 % in the driver.
:class:`Prepared` keeps the statement as a Core construct (so the schema stays the one
source of truth and both dialects are spelled by SQLAlchemy), compiles it **once per
dialect**, and runs the compiled SQL on the DBAPI cursor of the connection's *current
transaction* — the same transaction, so group commit (node/store/group.py) and atomicity
are unchanged. SQLAlchemy's own bind and result processors of each column type are applied,
so values go in and come out as through Core (``DateTime`` on SQLite included).

Only what is safe to do this way is accepted at construction: no post-compile parameters
(``IN`` lists that expand), no Python-side column defaults the driver would not apply.
Driver errors come back as SQLAlchemy's exception classes (``IntegrityError`` …), so the
callers' handling does not change.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import Insert

__all__ = ["Prepared"]

_Proc = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    positional: bool
    #: (bind name, bind processor, the value bound in the statement itself or _NEED)
    binds: tuple[tuple[str, _Proc, Any], ...]
    #: one result processor per selected / returned column
    results: tuple[_Proc, ...]
    #: the names of those columns
    keys: tuple[str, ...]
    #: a named tuple of those columns (:meth:`Prepared.rows`)
    row: Any


_NEED = object()


class Prepared:
    """A Core statement compiled once per dialect, executed on the driver's cursor.

    ``column_keys`` names the columns an ``insert()`` without ``.values()`` receives (as
    Core's ``execute(insert, row)`` would take them from the row's keys)."""

    __slots__ = ("stmt", "_keys", "_plans", "_lock")

    def __init__(self, stmt: Executable, *, column_keys: Sequence[str] | None = None) -> None:
        self.stmt = stmt
        self._keys = list(column_keys) if column_keys is not None else None
        self._plans: dict[str, _Plan] = {}
        self._lock = threading.Lock()

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is not None:
            return plan
        with self._lock:
            plan = self._plans.get(dialect.name)
            if plan is None:
                plan = self._compile(dialect)
                self._plans[dialect.name] = plan
        return plan

    def _compile(self, dialect: Dialect) -> _Plan:
        stmt: Any = self.stmt
        compiled: Any = stmt.compile(dialect=dialect, column_keys=self._keys)
        if "__[POSTCOMPILE" in compiled.string:
            raise ValueError("Prepared: statements with expanding (IN) parameters are not supported")
        if isinstance(stmt, Insert) and self._keys is not None:
            # The driver applies no Python-side default: every such column must be given.
            for col in stmt.table.columns:
                if (col.default is not None or col.onupdate is not None) and col.key not in self._keys:
                    raise ValueError(f"Prepared: column {col.key} has a Python-side default, want it in column_keys")
        processors = compiled._bind_processors
        names = compiled.positiontup if compiled.positional else list(compiled.bind_names.values())
        by_key = {name: b for b, name in compiled.bind_names.items()}
        binds = []
        for name in names:
            bind = by_key.get(name)
            fixed = _NEED
            if bind is not None and not bind.required and bind.callable is None and bind.value is not None:
                fixed = bind.value
            binds.append((name, processors.get(name), fixed))
        cols = compiled._result_columns
        results = tuple(typ._cached_result_processor(dialect, None) for _k, _n, _o, typ in cols)
        keys = tuple(k for k, _n, _o, _t in cols)
        return _Plan(compiled.string, compiled.positional, tuple(binds), results, keys,
                     namedtuple("Row", keys, rename=True) if keys else None)

    def _args(self, plan: _Plan, params: Mapping[str, Any]) -> Any:
        out = []
        for name, proc, fixed in plan.binds:
            value = params[name] if fixed is _NEED or name in params else fixed
            out.append(proc(value) if proc is not None and value is not None else value)
        if plan.positional:
            return tuple(out)
        return {name: v for (name, _p, _f), v in zip(plan.binds, out)}

    def keys(self, dialect: Dialect) -> tuple[str, ...]:
        """The names of the columns :meth:`run` returns, in order (for named rows)."""
        return self._plan(dialect).keys

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Executes with ``params`` (bind name → value) in ``conn``'s transaction; returns the
        rows it selected or returned (processed), ``[]`` for none."""
        plan = self._plan(conn.dialect)
        rows, _ = self._exec(conn, plan, self._args(plan, params or {}), many=False)
        return rows

    def rows(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """:meth:`run`, each row a named tuple of the selected columns (attribute access, as
        Core's rows)."""
        plan = self._plan(conn.dialect)
        rows, _ = self._exec(conn, plan, self._args(plan, params or {}), many=False)
        return [plan.row._make(r) for r in rows]

    def rowcount(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Executes a statement that returns no rows; returns the driver's row count."""
        plan = self._plan(conn.dialect)
        return self._exec(conn, plan, self._args(plan, params or {}), many=False)[1]

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Executes the statement once per row of ``rows`` (the driver's ``executemany``: one
        call, as Core's ``execute(stmt, [row, …])``) in ``conn``'s transaction. For
        statements that return nothing (an ``INSERT`` of several rows)."""
        if not rows:
            return
        plan = self._plan(conn.dialect)
        if plan.results:
            raise ValueError("Prepared.run_many: the statement returns rows, want run() per row")
        if len(rows) == 1:
            self._exec(conn, plan, self._args(plan, rows[0]), many=False)
            return
        self._exec(conn, plan, [self._args(plan, r) for r in rows], many=True)

    def _exec(self, conn: Connection, plan: _Plan, args: Any, *, many: bool) -> tuple[list[tuple[Any, ...]], int]:
        # As Connection._execute_context does: begin the transaction a "commit as you go"
        # connection would have begun, refuse to run in one that failed (PendingRollbackError).
        c: Any = conn
        if c._transaction is None:
            c._autobegin()
        elif not c._transaction.is_active:
            c._invalid_transaction()
        dbapi: Any = conn.connection.dbapi_connection
        sql = plan.sql
        events = c._has_events or c.engine._has_events
        cur = dbapi.cursor()
        try:
            try:
                if events:
                    # The engine's cursor events fire as through Core (bench/count_case.py counts
                    # statements with them, fault-injection tests stop a process at one). There
                    # is no execution context: ``context`` is None.
                    for fn in c.dispatch.before_cursor_execute:
                        sql, args = fn(conn, cur, sql, args, None, many)
                if many:
                    cur.executemany(sql, args)
                else:
                    cur.execute(sql, args)
                if events:
                    c.dispatch.after_cursor_execute(conn, cur, sql, args, None, many)
                raw = cur.fetchall() if cur.description is not None else []
                count = cur.rowcount
            except Exception as err:
                if isinstance(err, conn.dialect.loaded_dbapi.Error):
                    # SQLAlchemy's handling of a driver error: the same exception class
                    # (IntegrityError …), a lost connection invalidated, handle_error events.
                    c._handle_dbapi_exception(err, sql, args, cur, None)
                raise
        finally:
            cur.close()
        procs = plan.results
        if raw and any(p is not None for p in procs):
            return [tuple(p(v) if p is not None else v for p, v in zip(procs, row)) for row in raw], count
        return [tuple(row) for row in raw], count
