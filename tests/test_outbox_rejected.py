"""A notice the hub refuses as such (not a transient failure) is marked rejected, not retried
forever; an operator re-queues it with `hedui notices retry` once the cause is fixed."""

from __future__ import annotations

from datetime import UTC, date, datetime

import grpc
from sqlalchemy import select

from hedui.node.discovery.detect import Detection
from hedui.node.discovery.notice import permanent_refusal
from hedui.node.discovery.outbox import Pusher, enqueue, retry_rejected
from hedui.node.discovery.tables import notice_outbox

#: The instant the test runs at (a fixed one: tests never read the wall clock).
T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)


class _Refused(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def _det(key: str) -> Detection:
    return Detection(rule="medins.inpatient_single_20k", event_type="large_medical_expense", identity="x", region="370304",
                     event_date=date(2026, 10, 9), due_date=date(2026, 11, 5), period="2026-10", details={}, dedup_key=key)


def _status(engine) -> list[str]:
    with engine.connect() as c:
        return sorted(r.status for r in c.execute(select(notice_outbox.c.status)))


def test_permanent_refusal_is_rejected_transient_is_retried(engine):
    with engine.begin() as c:
        enqueue(c, _det("a" * 64), lambda d, nid: b"envelope-a", hub="hub", now=T0)
        enqueue(c, _det("b" * 64), lambda d, nid: b"envelope-b", hub="hub", now=T0)

    def send(envelope: bytes) -> bytes:
        if envelope == b"envelope-a":
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_IDENTITY: sealed identity: check digit mismatch")
        raise _Refused(grpc.StatusCode.PERMISSION_DENIED, "NOT_A_MEMBER: peer certificate not in directory v3")

    stats = Pusher(engine, send, lambda e, r: None, permanent=permanent_refusal, clock=lambda: T0).push_due()
    assert stats.failed == 2
    assert _status(engine) == ["pending", "rejected"]  # membership refusal may be directory skew: retried
    with engine.connect() as c:
        err = c.execute(select(notice_outbox.c.last_error).where(notice_outbox.c.status == "rejected")).scalar_one()
    assert "INVALID_IDENTITY" in err
    assert retry_rejected(engine, now=T0) == 1
    assert _status(engine) == ["pending", "pending"]


def test_classifier():
    assert permanent_refusal(_Refused(grpc.StatusCode.INVALID_ARGUMENT, "SEAL_OPEN_FAILED: cannot open"))
    assert not permanent_refusal(_Refused(grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIGNATURE: x"))
    assert not permanent_refusal(_Refused(grpc.StatusCode.UNAVAILABLE, "INVALID_IDENTITY: x"))
    assert not permanent_refusal(ValueError("INVALID_IDENTITY"))
