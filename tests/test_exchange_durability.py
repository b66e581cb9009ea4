"""One durable transaction per exchange (issue 16): the quota, the request id with its signed
answer and the exchange's audit entries commit together (node/policy.py ``commit``).

kill -9 of a process committing exchanges as fast as it can: every exchange it acknowledged
(printed after ``commit`` returned) is in the store with both of its audit entries, and no
exchange is there in part (a request id without its entries, or entries without it). The
expectations are straight SQL over the store (tests/oracle style), not the node's readers.
"""

from __future__ import annotations

import textwrap

import pytest
from exchange_crash import kill_mid_flight_and_check, state
from sqlalchemy import select

from hedui.node.audit.note import Signer

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


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_exchange_and_leaves_none_in_part(engine, store_url) -> None:
    kill_mid_flight_and_check(engine, store_url, CHILD, acks_before_kill=40)


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
    seen, entries, quota = state(engine)
    assert seen == {rid.hex()} and quota == 1
    assert sum(entries.values()) == 1
    with engine.connect() as c:
        assert c.execute(select(audit_entries.c.seq)).scalars().all() == [0]
