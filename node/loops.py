"""The one shape of a node's background work: a :class:`PeriodicJob`.

A job is one daemon thread that calls :meth:`PeriodicJob.step` and waits until the next
time is due (the seconds ``step`` returns, else ``interval``). A failing step is logged
(scrubbed of anything shaped like an identity number) and tried again after ``interval``: a
background job never dies of a passing error (the store briefly away, a peer down). The wait
ends early on :meth:`stop` or when ``wake`` is set (e.g. a detection run queued notices).
:meth:`stop` returns promptly: it wakes the thread, calls :meth:`interrupt` (to cancel an
RPC in flight), joins, and then runs :meth:`final` once in the caller's thread.

The server starts every job after the gRPC server and stops them in reverse order
(:class:`hedui.node.server.NodeServer`).

Node replicas sharing one PostgreSQL store (issue 16): a job that works on the department's
shared state (notice detection, the outbox pusher, the hub's escalations) is made
:meth:`PeriodicJob.exclusive_on` the store: each step runs only while this process holds the
job's PostgreSQL advisory lock, so two replicas never run it at once (the other skips that
step and tries again after ``interval``); a replica that dies releases the lock with its
connection. On SQLite (one process per store) nothing changes.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from typing import Any

from sqlalchemy import text

from hedui.adapters.idnum import scrub

__all__ = ["PeriodicJob"]

log = logging.getLogger("hedui.node.loops")


class PeriodicJob:
    """Subclasses implement :meth:`step`; ``name`` names the thread and the log lines."""

    def __init__(self, name: str, *, interval: float, wake: threading.Event | None = None, join_timeout: float = 15.0) -> None:
        if interval <= 0:
            raise ValueError(f"interval: got {interval}, want > 0")
        self.name = name
        self.interval = interval
        self._wake = wake or threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._join_timeout = join_timeout
        self._next_due: float | None = None
        self.last_error: BaseException | None = None
        #: Whether the job ever ran (a serving node's jobs do; a CLI process's never do).
        self.ever_started = False
        self._exclusive: Any = None      # an Engine on PostgreSQL: see exclusive_on()
        #: Steps skipped because another process held the job's lock.
        self.skipped = 0

    def exclusive_on(self, engine: Any) -> PeriodicJob:
        """Runs each step under this job's advisory lock in ``engine``'s PostgreSQL store (see
        the module docstring); a no-op on SQLite. Returns the job."""
        self._exclusive = engine if engine.dialect.name == "postgresql" else None
        return self

    # -- what a job does ------------------------------------------------------------------

    def step(self) -> float | None:
        """One unit of work; returns the seconds until the next step (``None``: ``interval``)."""
        raise NotImplementedError

    def interrupt(self) -> None:
        """Called by :meth:`stop` before it joins the thread (cancel work in flight)."""

    def final(self) -> None:
        """Called by :meth:`stop` after the thread ended (e.g. a last checkpoint)."""

    # -- running ----------------------------------------------------------------------------

    def tick(self) -> float:
        """Runs one :meth:`step`, catching and logging its error; returns the wait before the
        next one."""
        try:
            delay = self._step_exclusive() if self._exclusive is not None else self.step()
            self.last_error = None
        except Exception as exc:
            self.last_error = exc
            log.error("%s failed: %s", self.name, scrub(f"{type(exc).__name__}: {exc}")[:300])
            delay = None
        return self.interval if delay is None else max(0.0, delay)

    def _step_exclusive(self) -> float | None:
        # A session lock on a connection of its own, held for the step only; keyed by the
        # job's name (which names the member: "pusher-tax").
        key = {"a": 0x48454452, "b": zlib.crc32(self.name.encode()) - (1 << 31)}
        with self._exclusive.connect() as conn:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), key).scalar():
                conn.rollback()
                self.skipped += 1
                return None
            conn.commit()
            try:
                return self.step()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), key)
                conn.commit()

    @property
    def next_due(self) -> float | None:
        """``time.monotonic()`` of the next step while the job runs, else ``None``."""
        return self._next_due

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self.ever_started = True
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        t, self._thread = self._thread, None
        self._stop.set()
        self._wake.set()
        self.interrupt()
        if t is not None:
            t.join(timeout=self._join_timeout)
        self._next_due = None
        if t is not None:
            self.final()

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.tick()
            self._next_due = time.monotonic() + delay
            if self._stop.is_set():
                return
            self._wake.wait(delay)
            self._wake.clear()

    def __enter__(self) -> PeriodicJob:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
