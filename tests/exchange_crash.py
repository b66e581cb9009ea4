"""Test wing: kill -9 a process that commits exchanges, then check the store (issue 16: one
durable transaction per exchange). Shared by tests/test_exchange_durability.py (one committer)
and tests/test_group_commit.py (concurrent committers, group-committed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import select, text

from hedui.common.clock import FixedClock
from hedui.node.audit import verdict as audit_verdict
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Signer
from hedui.node.store.tables import quota_counters

AFTER = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))


def state(engine) -> tuple[set[str], Counter, int]:
    """Stored request ids (hex), audit entries per (request id, kind), this minute's quota."""
    with engine.connect() as c:
        seen = {bytes(r[0]).hex() for r in c.execute(text("SELECT request_id FROM seen_requests"))}
        entries = Counter((r[0], r[1]) for r in c.execute(text("SELECT request_id, kind FROM audit_entries")))
        quota = c.execute(select(quota_counters.c.count).where(quota_counters.c.window == "m")).scalar()
    return seen, entries, int(quota or 0)


def kill_mid_flight_and_check(engine, store_url: str, child: str, *, acks_before_kill: int, rounds: int = 3) -> None:
    """Runs ``child`` (``python -c child STORE_URL SIGNING_KEY``, printing each acknowledged
    request id) ``rounds`` times, killing it with SIGKILL after ``acks_before_kill`` acks; then
    asserts no acknowledged exchange is lost, every stored one is whole (both entries, once),
    nothing of a rolled-back one remains, the quota counts exactly the stored ones, and the
    audit log reopens, signs and verifies."""
    signer = Signer.generate("crash.hedui/audit")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    acked: list[str] = []
    for _round in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", child, store_url, signer.skey], stdout=subprocess.PIPE, env=env, text=True)
        try:
            for _ in range(acks_before_kill):   # let it commit a while, then kill it mid-flight
                line = proc.stdout.readline()   # type: ignore[union-attr]
                assert line, "the child died on its own"
                acked.append(line.strip())
            os.kill(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate(timeout=30)
            acked += [x for x in rest.split() if x]   # printed before the kill: acknowledged too
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    seen, entries, quota = state(engine)
    missing = [r for r in acked if r not in seen]
    # Say what each lost one looks like: a whole request id or a cut line, its entries present
    # or not, and where it was in the acknowledgements (last of a round: the kill's moment).
    assert missing == [], f"{len(missing)} acknowledged exchanges lost: " + "; ".join(
        f"{r!r} (ack {acked.index(r) + 1} of {len(acked)}, entries {entries[(r, 'query.received')]}/{entries[(r, 'answer.sent')]})"
        for r in missing[:5])
    for rid in seen:   # every stored exchange is whole: both entries, once each
        assert entries[(rid, "query.received")] == 1 and entries[(rid, "answer.sent")] == 1, rid
    assert {rid for rid, _ in entries} == seen, "audit entries of an exchange whose request id was rolled back"
    assert quota == len(seen), "the quota counted an exchange that was not committed (or missed one)"
    AuditLog(engine, signer.name, signer, clock=AFTER.now).checkpoint()   # reopens after the crash and signs
    report = audit_verify.verify(engine, [signer.vkey])
    assert report.verdict is audit_verdict.Verdict.OK, report.problems
