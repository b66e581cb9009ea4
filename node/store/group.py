"""Group commit for a node's store writes (issue 16 item 1).

Every durable write on the hot path — a provider's exchange (quota, request id, signed
answer, audit entries), an evaluation's quota and audit entry, a hub's case answer with its
entries, any audit entry — is a *unit*: a function that runs its statements on a connection
inside a transaction. :meth:`GroupCommit.run` executes the caller's unit together with every
unit other threads have queued meanwhile, in **one transaction**, and returns once that
transaction has committed. So a unit is exactly as durable as before (it is acknowledged only
after its commit), while concurrent requests share one commit instead of queueing for the
store's write lock one by one (SQLite's busy handler sleeps in steps of milliseconds; on
PostgreSQL every writer queues on the audit head row anyway).

Leader/follower, no writer thread: the first thread to find no transaction in progress
becomes the leader and runs the queued units itself; the others wait for the outcome of
theirs. A lone request therefore pays no thread hand-off at all; under load each commit
carries every unit that arrived while the previous one ran (after MySQL's binlog group commit
and PostgreSQL's ``commit_delay``, without the delay).

A unit that raises (a quota overrun, a replayed request id) must not take the others down:
the shared transaction is rolled back and every unit of the batch runs again in a
transaction of its own, so each gets its own outcome. Units must therefore touch nothing but
the connection they are given (they may run twice, and the first run may be rolled back).

The committer keeps **one connection** for its transactions (issue 16 item 3): only one
leader runs at a time, so a connection of its own saves every transaction the pool's
check-out and check-in (on PostgreSQL a pre-ping round trip and a reset) and SQLAlchemy's
per-connection set-up. Any error drops that connection (the next transaction checks out a
fresh, pre-pinged one); a batch that failed because the kept connection had gone stale (the
server restarted, SQLAlchemy invalidated it) runs once more on a fresh connection, as a
rolled-back batch's units do anyway. Only engines with a queue pool (a file SQLite store,
PostgreSQL) keep one; :meth:`GroupCommit.close` gives it back.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool

__all__ = ["GroupCommit", "on_commit"]

T = TypeVar("T")

log = logging.getLogger("hedui.store")

#: Connections a forked child inherited from its parent's committers: kept referenced so
#: they are never closed (nor collected) in the child.
_INHERITED: list[Connection] = []


#: ``conn.info`` key of the after-commit callbacks of the transaction a committer runs.
_HOOKS = "hedui.group.on_commit"


def on_commit(conn: Connection, fn: Callable[[], None]) -> bool:
    """Registers ``fn`` to run once the transaction ``conn`` is in has committed — only when
    a :class:`GroupCommit` runs that transaction (it runs them right after the commit, never
    after a rollback). Returns False, and ``fn`` never runs, for any other transaction. For
    caches of committed state (an append-only log's committed rows never change): a unit
    must not touch anything but its connection, since it may run twice and its first run
    may be rolled back — what it learnt becomes true only with the commit."""
    hooks = conn.info.get(_HOOKS)
    if hooks is None or hooks[0] is not conn.get_transaction():
        return False
    hooks[1].append(fn)
    return True


def _clear_hooks(conn: Connection) -> None:
    try:
        conn.info.pop(_HOOKS, None)
    except Exception:   # a closed or invalidated connection has no info left to clear
        pass


def _run_hooks(hooks: list[Callable[[], None]]) -> None:
    for fn in hooks:
        try:
            fn()
        except Exception:   # the transaction is committed: a cache's failure must not undo that
            log.exception("after-commit callback failed")


class _Unit(Generic[T]):
    __slots__ = ("work", "done", "value", "error")

    def __init__(self, work: Callable[[Connection], T]) -> None:
        self.work = work
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """One engine's group committer; ``max_batch`` bounds the units of one transaction."""

    def __init__(self, engine: Engine, *, max_batch: int = 256) -> None:
        self.engine = engine
        self._max = max(1, max_batch)
        self._cv = threading.Condition(threading.Lock())
        self._pending: list[_Unit] = []
        self._busy = False
        #: The connection this committer keeps between transactions (only the leader uses
        #: it), the process that opened it, and whether it keeps one at all.
        self._conn: Connection | None = None
        self._pid = 0
        self._hold = isinstance(engine.pool, QueuePool)
        #: Transactions committed and units carried, for benchmarks and tests.
        self.commits = 0
        self.units = 0

    def close(self) -> None:
        """Gives the kept connection back (waits for a transaction in progress); later
        transactions each check one out of the pool."""
        with self._cv:
            self._hold = False
            while self._busy:
                self._cv.wait()
            conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    def _connection(self) -> tuple[Connection, bool]:
        """The connection for the next transaction, and whether it was kept from an earlier one."""
        conn = self._conn
        if conn is not None:
            if self._pid == os.getpid():
                return conn, True
            # Inherited across a fork: the parent's. Never used or closed here (closing would
            # end the parent's session on a shared socket); kept referenced, never collected.
            _INHERITED.append(conn)
            self._conn = None
        conn = self.engine.connect()
        if self._hold:
            self._conn, self._pid = conn, os.getpid()
        return conn, False

    def _drop(self, conn: Connection) -> None:
        if self._conn is conn:
            self._conn = None
        try:
            conn.close()
        except Exception:   # a broken connection: the pool discards it
            pass

    def run(self, work: Callable[[Connection], T]) -> T:
        """Runs ``work(conn)`` in a transaction shared with concurrent units; returns its
        result once committed, or raises what it raised (nothing of it is then stored)."""
        unit: _Unit[T] = _Unit(work)
        with self._cv:
            self._pending.append(unit)
            while self._busy and not unit.done:
                self._cv.wait()
            if not unit.done:
                self._busy = True
                batch, self._pending = self._pending[: self._max], self._pending[self._max:]
            else:
                batch = []
        if batch:
            try:
                self._commit(batch)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
        if unit.error is not None:
            raise unit.error
        return unit.value

    def _commit(self, batch: list[_Unit]) -> None:
        values: list[Any] = []
        conn, kept = self._connection()
        committing = False
        hooks: list[Callable[[], None]] = []
        try:
            with conn.begin() as txn:
                conn.info[_HOOKS] = (txn, hooks)
                for u in batch:
                    values.append(u.work(conn))
                committing = True
            _clear_hooks(conn)
            if not self._hold:
                self._drop(conn)
        except BaseException as exc:
            _clear_hooks(conn)
            self._drop(conn)
            if kept and not committing and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                # The kept connection had gone stale before the commit was asked for, so
                # nothing of the batch can have been stored: once more on a fresh connection.
                self._commit(batch)
                return
            if len(batch) == 1 or not isinstance(exc, Exception):
                for u in batch:
                    u.error, u.done = exc, True
                return
            # Some unit failed and took the shared transaction with it: each on its own now.
            for u in batch:
                one_hooks: list[Callable[[], None]] = []
                try:
                    with self.engine.begin() as conn:
                        conn.info[_HOOKS] = (conn.get_transaction(), one_hooks)
                        try:
                            u.value = u.work(conn)
                        finally:
                            _clear_hooks(conn)
                    self.commits += 1
                    self.units += 1
                except BaseException as one:
                    u.error = one
                else:
                    _run_hooks(one_hooks)
                u.done = True
            return
        _run_hooks(hooks)
        self.commits += 1
        self.units += len(batch)
        for u, v in zip(batch, values):
            u.value, u.done = v, True
