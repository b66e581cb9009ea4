"""The replay-cache read of a Lookup on the Lookup's one read snapshot (issue 16 item 3):
``policy.check(..., conn=...)`` reads the request id on the connection the caller holds, on
SQLite and PostgreSQL. What it finds there — a retry's cached answer, a replayed id, an
expired entry dropped — is what a read of its own finds; an id committed after the snapshot
began is not seen by that read (the snapshot's state), and the commit still refuses it (the
primary key decides, as before)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from test_policy_quota import LOOKUP, _ctx, _rule, _runtime

from hedui.node import policy
from hedui.node.errors import PermissionDenied, Reason
from hedui.node.store.tables import seen_requests
from hedui.node.verification.index_read import snapshot


def _check(rt, ctx, digest: bytes, conn=None) -> policy.Grant:
    return policy.check(rt, "hub", LOOKUP, ctx, fields=["income"], batch=1, request_digest=digest, conn=conn)


def test_replay_cache_read_on_the_callers_snapshot(engine):
    rt = _runtime(engine, _rule())
    done = _ctx()
    policy.commit(rt, "hub", LOOKUP, done, _check(rt, done, b"d" * 32), b"d" * 32, b"answer 1")
    late = _ctx()
    with snapshot(engine) as conn:
        # A retry of the same request gets its cached answer; another request under the id is refused.
        assert _check(rt, done, b"d" * 32, conn).cached_answer == b"answer 1"
        with pytest.raises(PermissionDenied) as e:
            _check(rt, done, b"e" * 32, conn)
        assert e.value.reason == Reason.REPLAYED_REQUEST
        # Committed after the snapshot's first read: not in this snapshot's state...
        policy.commit(rt, "hub", LOOKUP, late, _check(rt, late, b"d" * 32), b"d" * 32, b"answer 2")
        grant = _check(rt, late, b"f" * 32, conn)
        assert grant.cached_answer is None
    # ...and the commit refuses it all the same: nothing more is stored.
    with pytest.raises(PermissionDenied) as e:
        policy.commit(rt, "hub", LOOKUP, late, grant, b"f" * 32, b"answer 3")
    assert e.value.reason == Reason.REPLAYED_REQUEST
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(seen_requests)).scalar_one() == 2
    # Past the window an entry found on the snapshot is dropped, as by a read of its own.
    rt.clock.advance(timedelta(hours=policy.DEFAULT_REPLAY_WINDOW_HOURS, seconds=1))
    with snapshot(engine) as conn:
        assert _check(rt, done, b"e" * 32, conn).cached_answer is None
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(seen_requests)
                         .where(seen_requests.c.request_id == bytes(done.request_id))).scalar_one() == 0
