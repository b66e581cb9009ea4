"""One durable transaction per exchange (issue 16): the quota, the request id with its signed
answer and the exchange's audit entries commit together (node/policy.py ``commit``).

kill -9 of a process committing exchanges as fast as it can: every exchange it acknowledged
(printed after ``commit`` returned) is in the store with both of its audit entries, and no
exchange is there in part (a request id without its entries, or entries without it). The
expectations are straight SQL over the store (tests/oracle style), not the node's readers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from sqlalchemy import select, text

from hedui.node.audit import verdict as audit_verdict
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.note import Signer
from hedui.node.store.tables import quota_counters

CHILD = textwrap.dedent(
    """
    import os, sys
    from datetime import datetime, UTC
    from types import SimpleNamespace
    from hedui.common.clock import FixedClock
    from hedui.node import policy
    from hedui.node.audit.log import AuditLog
    from hedui.node.audit.note import Signer
    from hedui.node.audit.recorder import NodeAudit
    from hedui.node.store.db import open_engine
    from hedui.v1 import common_pb2, directory_pb2

    engine = open_engine(sys.argv[1])
    signer = Signer.from_skey(sys.argv[2])
    clock = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))
    rt = SimpleNamespace(engine=engine, clock=clock, config=SimpleNamespace(provider=None), metrics=None, member="p")
    log = AuditLog(engine, signer.name, signer, clock=clock.now)
    rt.audit = NodeAudit(rt, log, None)
    # Quota limits high enough never to refuse: the counters are updated on every exchange.
    grant = policy.Grant(rules=(directory_pb2.AccessRule(per_minute=10**9, per_day=10**9),))
    while True:
        rid = os.urandom(16)
        ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="C-1", request_id=rid)
        base = {"request_id": rid.hex(), "peer": "hub", "purpose": "PURPOSE_DIBAO", "case_ref": "C-1"}
        policy.commit(rt, "hub", "Lookup", ctx, grant, b"d" * 32, b"answer",
                      audit=[("query.received", {**base, "request_digest": "ab" * 32}),
                             ("answer.sent", {**base, "answer_digest": "cd" * 32, "outcome": "ok"})])
        print(rid.hex(), flush=True)
    """
)


def _state(engine) -> tuple[set[str], Counter, int]:
    with engine.connect() as c:
        seen = {bytes(r[0]).hex() for r in c.execute(text("SELECT request_id FROM seen_requests"))}
        entries = Counter((r[0], r[1]) for r in c.execute(text("SELECT request_id, kind FROM audit_entries")))
        q = quota_counters
        quota = c.execute(select(q.c.count).where(q.c.window == "m")).scalar()
    return seen, entries, int(quota or 0)


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_exchange_and_leaves_none_in_part(engine, store_url) -> None:
    signer = Signer.generate("crash.hedui/audit")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    acked: list[str] = []
    for _round in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, store_url, signer.skey], stdout=subprocess.PIPE, env=env, text=True)
        try:
            for _ in range(40):   # let it commit a while, then kill it mid-flight
                line = child.stdout.readline()
                assert line, "the child died on its own"
                acked.append(line.strip())
            os.kill(child.pid, signal.SIGKILL)
            rest, _ = child.communicate(timeout=30)
            acked += [x for x in rest.split() if x]   # printed before the kill: acknowledged too
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    seen, entries, quota = _state(engine)
    missing = [r for r in acked if r not in seen]
    assert missing == [], f"{len(missing)} acknowledged exchanges lost"
    for rid in seen:   # every stored exchange is whole: both entries, once each
        assert entries[(rid, "query.received")] == 1 and entries[(rid, "answer.sent")] == 1, rid
    logged = {rid for rid, _ in entries}
    assert logged == seen, "audit entries of an exchange whose request id was rolled back"
    assert quota == len(seen), "the quota counted an exchange that was not committed (or missed one)"
    from datetime import UTC, datetime

    from hedui.common.clock import FixedClock
    from hedui.node.audit.log import AuditLog

    clock = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))
    AuditLog(engine, signer.name, signer, clock=clock.now).checkpoint()   # reopens after the crash and signs
    report = audit_verify.verify(engine, [signer.vkey])
    assert report.verdict is audit_verdict.Verdict.OK, report.problems


def test_a_failed_commit_leaves_no_entry(engine) -> None:
    """A replayed request id rolls the whole exchange back: quota, answer and entries."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from hedui.common.clock import FixedClock
    from hedui.node import policy
    from hedui.node.audit.log import AuditLog
    from hedui.node.audit.recorder import NodeAudit
    from hedui.node.audit.tables import audit_entries
    from hedui.node.errors import PermissionDenied
    from hedui.v1 import common_pb2, directory_pb2

    signer = Signer.generate("t.hedui/audit")
    clock = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))
    rt = SimpleNamespace(engine=engine, clock=clock, config=SimpleNamespace(provider=None), metrics=None, member="p")
    rt.audit = NodeAudit(rt, AuditLog(engine, signer.name, signer, clock=clock.now), None)
    grant = policy.Grant(rules=(directory_pb2.AccessRule(per_minute=100, per_day=1000),))
    rid = bytes(range(16))
    ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="C-1", request_id=rid)
    base = {"request_id": rid.hex(), "peer": "hub", "purpose": "PURPOSE_DIBAO", "case_ref": "C-1",
            "request_digest": "ab" * 32}
    policy.commit(rt, "hub", "Lookup", ctx, grant, b"d" * 32, b"a", audit=[("query.received", base)])
    with pytest.raises(PermissionDenied):
        policy.commit(rt, "hub", "Lookup", ctx, grant, b"d" * 32, b"a", audit=[("query.received", base)])
    seen, entries, quota = _state(engine)
    assert seen == {rid.hex()} and quota == 1
    assert sum(entries.values()) == 1
    with engine.connect() as c:
        assert c.execute(select(audit_entries.c.seq)).scalars().all() == [0]
