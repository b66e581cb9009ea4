"""Background jobs of node replicas sharing one PostgreSQL store run in one replica at a time
(issue 16 item 6, node/loops.py ``exclusive_on``); on SQLite nothing changes."""

from __future__ import annotations

import pytest

from hedui.node.store.db import open_engine, sqlite_url


@pytest.mark.postgres
def test_an_exclusive_job_runs_in_one_replica_at_a_time(pg_url):
    """Two processes' jobs of the same name on one PostgreSQL store (issue 16, node/loops.py):
    while one is in its step the other skips; afterwards it runs."""
    import threading

    from hedui.node.loops import PeriodicJob

    inside, release = threading.Event(), threading.Event()

    class Job(PeriodicJob):
        def __init__(self, block: bool) -> None:
            super().__init__("pusher-hrss", interval=1.0)
            self.block, self.ran = block, 0

        def step(self) -> None:
            self.ran += 1
            if self.block:
                inside.set()
                release.wait(10)

    eng = open_engine(pg_url)
    try:
        a, b = Job(True).exclusive_on(eng), Job(False).exclusive_on(eng)
        t = threading.Thread(target=a.tick)
        t.start()
        assert inside.wait(10)
        b.tick()
        assert (b.ran, b.skipped) == (0, 1)
        release.set()
        t.join(10)
        b.tick()
        assert (a.ran, b.ran, b.skipped, a.last_error, b.last_error) == (1, 1, 1, None, None)
    finally:
        eng.dispose()


def test_sqlite_jobs_are_not_locked(tmp_path):
    from hedui.node.loops import PeriodicJob

    class Job(PeriodicJob):
        def step(self) -> None:
            return None

    eng = open_engine(sqlite_url(tmp_path / "n.db"))
    try:
        job = Job("x", interval=1.0).exclusive_on(eng)
        assert job._exclusive is None
        job.tick()
        assert job.skipped == 0 and job.last_error is None
    finally:
        eng.dispose()
