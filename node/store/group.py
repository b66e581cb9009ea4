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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine

__all__ = ["GroupCommit"]

T = TypeVar("T")


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
        #: Transactions committed and units carried, for benchmarks and tests.
        self.commits = 0
        self.units = 0

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
        try:
            with self.engine.begin() as conn:
                for u in batch:
                    values.append(u.work(conn))
        except BaseException as exc:
            if len(batch) == 1 or not isinstance(exc, Exception):
                for u in batch:
                    u.error, u.done = exc, True
                return
            # Some unit failed and took the shared transaction with it: each on its own now.
            for u in batch:
                try:
                    with self.engine.begin() as conn:
                        u.value = u.work(conn)
                    self.commits += 1
                    self.units += 1
                except BaseException as one:
                    u.error = one
                u.done = True
            return
        self.commits += 1
        self.units += len(batch)
        for u, v in zip(batch, values):
            u.value, u.done = v, True
