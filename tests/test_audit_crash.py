"""kill -9 in the middle of appending never leaves leaves without entries or entries
without leaves: after each crash the log reopens, re-derives and verifies OK."""

from __future__ import annotations

import datetime as _dt
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import func, select

import hedui.node.audit.tables  # noqa: F401 - registers the tables before `engine` creates them
from hedui.common.clock import FixedClock as _FixedClock
from hedui.node.audit import merkle
from hedui.node.audit import verdict as audit_verdict
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Signer
from hedui.node.audit.tables import audit_entries

# Entries and checkpoints are stamped with a fixed instant, never the wall clock.
AUDIT_CLOCK = _FixedClock(_dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC))

CHILD = textwrap.dedent(
    """
    import random, sys
    from hedui.node.store.db import open_engine
    import hedui.node.audit.tables
    from hedui.node.audit.log import AuditLog
    from hedui.node.audit.note import Signer
    from hedui.common.clock import FixedClock
    from datetime import datetime, UTC

    signer = Signer.from_skey(sys.argv[2])
    clock = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))
    log = AuditLog(open_engine(sys.argv[1]), signer.name, signer, tile_height=3, clock=clock.now)
    rnd = random.Random()
    i = 0
    while True:
        k = rnd.randint(1, 60)
        log.append_many(("admin", {"action": f"a{i + j}", "operator": "op"}) for j in range(k))
        futures = [log.submit("admin", {"action": f"s{i}-{j}", "operator": "op"}) for j in range(rnd.randint(1, 30))]
        if rnd.random() < 0.3:
            log.checkpoint()
        i += k
        print(i, flush=True)
    """
)


@pytest.mark.slow
def test_kill_9_mid_append_leaves_a_consistent_log(engine, store_url) -> None:
    signer = Signer.generate("crash.hedui/audit")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for round_ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, store_url, signer.skey],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        try:
            for _ in range(25 + 10 * round_):  # let it commit a while, then kill it mid-flight
                line = child.stdout.readline()
                assert line, child.stderr.read().decode()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL

        log = AuditLog(engine, signer.name, signer, tile_height=3, clock=AUDIT_CLOCK.now)  # checks head == entries
        size = log.size()
        with engine.connect() as conn:
            count, top = conn.execute(select(func.count(), func.max(audit_entries.c.seq))).one()
        assert count == size == top + 1
        tree = merkle.MemoryTree(merkle.leaf_hash(log.entry(i)) for i in range(size))
        assert log.root() == tree.root()
        log.checkpoint()
        log.close()
        report = audit_verify.verify(engine, [signer.vkey])
        assert report.verdict is audit_verdict.Verdict.OK, report.problems
        assert report.entries == size and report.unsigned_tail == 0
