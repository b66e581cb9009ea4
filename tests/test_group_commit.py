"""Group commit of the hot path's writes (issue 16 item 1, node/store/group.py), on SQLite and
PostgreSQL: concurrent exchanges share transactions, each is durable when its call returns,
a failing one (a replayed request id, a quota overrun) takes no other with it, and kill -9
of a process committing from many threads loses no acknowledged exchange and leaves none in
part. Expectations are straight SQL over the store."""

from __future__ import annotations

import os
import textwrap
import threading
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from exchange_crash import kill_mid_flight_and_check, state

from hedui.common.clock import FixedClock
from hedui.node import policy
from hedui.node.audit import verdict as audit_verdict
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Signer
from hedui.node.audit.recorder import NodeAudit
from hedui.node.errors import PermissionDenied, ResourceExhausted
from hedui.node.store.group import GroupCommit
from hedui.v1 import common_pb2, directory_pb2

T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def _rt(engine):
    signer = Signer.generate("group.hedui/audit")
    clock = FixedClock(T0)
    rt = SimpleNamespace(engine=engine, clock=clock, config=SimpleNamespace(provider=None), metrics=None, member="p")
    rt.audit = NodeAudit(rt, AuditLog(engine, signer.name, signer, clock=clock.now), None)
    return rt, signer


def _ctx(rid: bytes) -> common_pb2.RequestContext:
    return common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="C-1", request_id=rid)


def _entries(rid: bytes) -> list[tuple[str, dict]]:
    base = {"request_id": rid.hex(), "peer": "hub", "purpose": "PURPOSE_DIBAO", "case_ref": "C-1"}
    return [("query.received", {**base, "request_digest": "ab" * 32}), ("answer.sent", {**base, "answer_digest": "cd" * 32, "outcome": "ok"})]


def test_concurrent_exchanges_share_commits_and_each_is_whole(engine) -> None:
    rt, signer = _rt(engine)
    grant = policy.Grant(rules=(directory_pb2.AccessRule(per_minute=10**6, per_day=10**6),))
    rids = [os.urandom(16) for _ in range(96)]
    go = threading.Barrier(12)
    errors: list[BaseException] = []

    def worker(mine: list[bytes]) -> None:
        go.wait()
        for rid in mine:
            try:
                policy.commit(rt, "hub", "Lookup", _ctx(rid), grant, b"d" * 32, b"answer", audit=_entries(rid))
            except BaseException as exc:  # collected: the assertion below names it
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(rids[i::12],)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    group = rt.audit.log.group
    seen, entries, quota = state(engine)
    assert seen == {r.hex() for r in rids} and quota == len(rids)
    assert all(entries[(r.hex(), k)] == 1 for r in rids for k in ("query.received", "answer.sent"))
    assert group.units == len(rids)
    rt.audit.log.checkpoint()
    report = audit_verify.verify(engine, [signer.vkey])
    assert report.verdict is audit_verdict.Verdict.OK, report.problems


def test_a_failing_unit_takes_no_other_with_it(engine) -> None:
    """Units queued together: one replays a request id, one is over the quota; the others
    commit, the two get their own refusal and leave nothing behind."""
    rt, _ = _rt(engine)
    group = rt.audit.log.group
    grant = policy.Grant(rules=(directory_pb2.AccessRule(per_minute=100, per_day=1000),))
    tight = policy.Grant(rules=(directory_pb2.AccessRule(per_minute=1, per_day=1000),))
    taken = os.urandom(16)
    policy.commit(rt, "hub", "Lookup", _ctx(taken), grant, b"d" * 32, b"a", audit=_entries(taken))
    other_first = os.urandom(16)
    policy.commit(rt, "other", "Lookup", _ctx(other_first), tight, b"d" * 32, b"a")   # other's minute is used up
    good = [os.urandom(16) for _ in range(4)]
    outcome: dict[str, object] = {}
    # Hold the committer busy so every unit below queues behind it and they go in one batch.
    blocker, release = _held(group)

    def run(name, fn):
        try:
            fn()
            outcome[name] = "ok"
        except (PermissionDenied, ResourceExhausted) as exc:
            outcome[name] = exc.reason

    calls = [(f"good{i}", lambda r=r: policy.commit(rt, "hub", "Lookup", _ctx(r), grant, b"d" * 32, b"a", audit=_entries(r)))
             for i, r in enumerate(good)]
    calls += [("replay", lambda: policy.commit(rt, "hub", "Lookup", _ctx(taken), grant, b"d" * 32, b"a", audit=_entries(taken))),
              ("quota", lambda: policy.commit(rt, "other", "Lookup", _ctx(os.urandom(16)), tight, b"d" * 32, b"a"))]
    threads = [threading.Thread(target=run, args=c) for c in calls]
    for t in threads:
        t.start()
    while len(group._pending) < len(calls):   # all queued behind the held transaction
        threading.Event().wait(0.01)
    release.set()
    blocker.join()
    for t in threads:
        t.join()
    assert outcome == {**{f"good{i}": "ok" for i in range(4)}, "replay": "REPLAYED_REQUEST", "quota": "QUOTA_EXCEEDED"}
    seen, entries, _ = state(engine)
    # taken, other's first and the four good ones: nothing of the two refused units.
    assert seen == {taken.hex(), other_first.hex(), *(r.hex() for r in good)}
    assert entries[(taken.hex(), "query.received")] == 1
    assert all(entries[(r.hex(), "answer.sent")] == 1 for r in good)


def _held(group: GroupCommit):
    """Keeps ``group``'s committer busy until the returned event is set (units queue)."""
    held, release = threading.Event(), threading.Event()

    def hold(_conn):
        held.set()
        release.wait(10)

    t = threading.Thread(target=group.run, args=(hold,))
    t.start()
    held.wait(10)
    return t, release


def test_units_queued_meanwhile_commit_together(engine) -> None:
    rt, _ = _rt(engine)
    group = rt.audit.log.group
    grant = policy.Grant(rules=(directory_pb2.AccessRule(per_minute=100, per_day=1000),))
    blocker, release = _held(group)
    before = group.commits
    rids = [os.urandom(16) for _ in range(5)]
    threads = [threading.Thread(target=policy.commit, args=(rt, "hub", "Lookup", _ctx(r), grant, b"d" * 32, b"a"),
                                kwargs={"audit": _entries(r)}) for r in rids]
    for t in threads:
        t.start()
    while len(group._pending) < len(rids):
        threading.Event().wait(0.01)
    release.set()
    blocker.join()
    for t in threads:
        t.join()
    assert group.commits - before == 2   # the held one, then all five in one transaction
    seen, entries, quota = state(engine)
    assert seen == {r.hex() for r in rids} and quota == 5 and sum(entries.values()) == 10


def test_a_lone_unit_runs_in_the_callers_thread() -> None:
    """No hand-off: with nothing else queued the caller is the leader and runs its unit itself."""
    from sqlalchemy import create_engine

    eng = create_engine("sqlite://")
    group = GroupCommit(eng)
    assert group.run(lambda c: threading.get_ident()) == threading.get_ident()
    assert (group.commits, group.units) == (1, 1)


CHILD = textwrap.dedent(
    """
    import os, sys, threading
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
    rt.audit = NodeAudit(rt, AuditLog(engine, signer.name, signer, clock=clock.now), None)
    grant = policy.Grant(rules=(directory_pb2.AccessRule(per_minute=10**9, per_day=10**9),))
    out = threading.Lock()

    def worker():
        while True:
            rid = os.urandom(16)
            ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="C-1", request_id=rid)
            base = {"request_id": rid.hex(), "peer": "hub", "purpose": "PURPOSE_DIBAO", "case_ref": "C-1"}
            policy.commit(rt, "hub", "Lookup", ctx, grant, b"d" * 32, b"answer",
                          audit=[("query.received", {**base, "request_digest": "ab" * 32}),
                                 ("answer.sent", {**base, "answer_digest": "cd" * 32, "outcome": "ok"})])
            with out:
                print(rid.hex(), flush=True)

    for _ in range(8):
        threading.Thread(target=worker, daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.slow
def test_kill_9_of_concurrent_committers_loses_no_acknowledged_exchange(engine, store_url) -> None:
    kill_mid_flight_and_check(engine, store_url, CHILD, acks_before_kill=60)   # 8 threads committing
