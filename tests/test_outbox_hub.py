"""Notice outbox, pusher and hub workflow, on SQLite and PostgreSQL (the ``engine`` fixture).

DSSE signing and gRPC are stand-ins here (an HMAC "signature", a direct call): the lead wires
the real ones. Everything else — sealing, outbox, receipts, leads, referrals — is the real code.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from hedui.adapters.records import Fact, Record
from hedui.common.clock import FixedClock
from hedui.keys.sealing import SealingKey
from hedui.node.discovery import tables as t
from hedui.node.discovery.calendar import CHINA_TZ, CalendarFallbackWarning, WorkCalendar
from hedui.node.discovery.detect import detect
from hedui.node.discovery.hub import Hub
from hedui.node.discovery.notice import NOTICE_PAYLOAD_TYPE, RECEIPT_PAYLOAD_TYPE, open_notice, seal_notice
from hedui.node.discovery.outbox import Pusher, enqueue
from hedui.node.discovery.report import monthly_report, render_html
from hedui.node.discovery.routing import Route, Routing
from hedui.node.discovery.rules import default_rules
from hedui.node.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from hedui.node.store.schema import metadata
from hedui.v1 import common_pb2, notice_pb2

HUB = "370304-mz"
CAL = WorkCalendar()
#: The hub's clock where a call passes no ``now`` (a fixed instant: tests never read the wall clock).
HUB_CLOCK = FixedClock(datetime(2025, 6, 3, 4, 0, tzinfo=UTC))
SIGN_KEY = b"test-signing-key"


def _idn(body17: str) -> str:
    w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body17 + "10X98765432"[sum(int(c) * x for c, x in zip(body17, w)) % 11]


PEOPLE = [_idn(f"37030419600101{i:03d}") for i in range(1, 9)]
ROUTING = Routing(
    [
        Route(region="", event_type="*", assignee="370304-mz-center", assignee_kind="department", name="区社会救助综合服务中心"),
        Route(region="370304001", assignee="370304001", assignee_kind="town", name="城东街道"),
        Route(region="370304002", assignee="370304002", assignee_kind="town", name="城西街道"),
        Route(region="", event_type="education_aid_application", assignee="370304-edu", assignee_kind="department", name="教体局"),
    ]
)


def local(y: int, m: int, d: int, hh: int = 10) -> datetime:
    return datetime(y, m, d, hh, tzinfo=CHINA_TZ).astimezone(UTC)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def hub_key() -> SealingKey:
    return SealingKey.generate()


@pytest.fixture
def hub(engine, hub_key) -> Hub:
    return Hub(engine, hub=HUB, person_secret=b"p" * 32, sealing_public=hub_key.public_bytes(),
               routing=ROUTING, calendar=CAL, clock=HUB_CLOCK)


def _sign(payload_type: str, payload: bytes) -> bytes:
    sig = hmac.new(SIGN_KEY, payload_type.encode() + b"\x00" + payload, hashlib.sha256).digest()
    return common_pb2.Envelope(
        payload_type=payload_type, payload=payload, signatures=[common_pb2.Signature(keyid="test", sig=sig)]
    ).SerializeToString()


def sign_receipt(receipt: notice_pb2.Receipt) -> bytes:
    return _sign(RECEIPT_PAYLOAD_TYPE, receipt.SerializeToString())


def verify_receipt(_notice_env: bytes, receipt_env: bytes) -> notice_pb2.Receipt | None:
    env = common_pb2.Envelope.FromString(receipt_env)
    want = hmac.new(SIGN_KEY, env.payload_type.encode() + b"\x00" + env.payload, hashlib.sha256).digest()
    if env.payload_type != RECEIPT_PAYLOAD_TYPE or not hmac.compare_digest(env.signatures[0].sig, want):
        return None
    return notice_pb2.Receipt.FromString(env.payload)


class Provider:
    """A department's side: detection → outbox."""

    def __init__(self, code: str, hub_key: SealingKey, clock: Clock) -> None:
        self.code = code
        self.public = hub_key.public_bytes()
        self.clock = clock
        self.sealed = 0

    def sign_and_seal(self, detection, notice_id: bytes) -> bytes:
        self.sealed += 1
        notice = seal_notice(detection, notice_id=notice_id, provider=self.code, hub=HUB,
                             hub_sealing_key=self.public, created_at=self.clock())
        return _sign(NOTICE_PAYLOAD_TYPE, notice.SerializeToString())

    def run(self, engine, records, department: str, as_of: date) -> list:
        found = detect(records, default_rules(department), as_of, CAL, provider=self.code, dedup_secret=b"d" * 32)
        with engine.begin() as conn:
            for d in found:
                enqueue(conn, d, self.sign_and_seal, hub=HUB, now=self.clock())
        return found


class HubServer:
    """Stands in for NoticeService.Push on the hub node: verify (stand-in), open, accept."""

    def __init__(self, hub: Hub, key: SealingKey, clock: Clock) -> None:
        self.hub, self.key, self.clock = hub, key, clock
        self.up = True
        self.calls = 0

    def __call__(self, envelope: bytes) -> bytes:
        self.calls += 1
        if not self.up:
            raise Unavailable("hub: got connection refused, want a reachable hub")
        env = common_pb2.Envelope.FromString(envelope)
        notice = notice_pb2.Notice.FromString(env.payload)
        opened = open_notice(notice, self.key)
        with self.hub.engine.begin() as conn:
            acc = self.hub.accept_notice(conn, notice, opened, envelope=envelope, sign_receipt=sign_receipt,
                                         now=self.clock())
        assert acc.receipt is not None
        return acc.receipt


def stays(people, amount="25000", discharged=date(2025, 5, 20), region="370304001"):
    return [
        Record(p, f"stays:pk={i}", (Fact("inpatient_stay", Decimal(amount), "CNY", discharged, {"region": region}),))
        for i, p in enumerate(people)
    ]


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


# ---------------------------------------------------------------- outbox and delivery


def test_enqueue_is_idempotent_on_dedup_key(engine, hub_key):
    clock = Clock(local(2025, 6, 3))
    prov = Provider("370304-medins", hub_key, clock)
    first = prov.run(engine, stays(PEOPLE[:3]), "medins", date(2025, 6, 3))
    again = prov.run(engine, stays(PEOPLE[:3]), "medins", date(2025, 6, 4))
    assert len(first) == len(again) == 3
    assert count(engine, t.notice_outbox) == 3
    assert prov.sealed == 3  # the re-run did not even seal


def test_enqueue_rolls_back_with_the_callers_transaction(engine, hub_key):
    clock = Clock(local(2025, 6, 3))
    prov = Provider("370304-medins", hub_key, clock)
    found = detect(stays(PEOPLE[:2]), default_rules("medins"), date(2025, 6, 3), CAL,
                   provider=prov.code, dedup_secret=b"d" * 32)
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            for d in found:
                enqueue(conn, d, prov.sign_and_seal, hub=HUB, now=clock())
            raise RuntimeError("detection run failed after queueing")
    assert count(engine, t.notice_outbox) == 0


def test_hub_down_then_back_nothing_lost_nothing_doubled(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    prov = Provider("370304-medins", hub_key, clock)
    prov.run(engine, stays(PEOPLE[:5]), "medins", date(2025, 6, 3))
    server = HubServer(hub, hub_key, clock)
    server.up = False
    import random

    pusher = Pusher(engine, server, verify_receipt, base_delay=2, max_delay=60, clock=clock, rng=random.Random(7))

    delays = []
    for _ in range(6):
        stats = pusher.push_due()
        assert (stats.attempted, stats.failed, stats.delivered) == (5, 5, 0)
        # Nothing is retried before its back-off has passed.
        assert pusher.push_due().attempted == 0
        with engine.connect() as conn:
            nxt = min(t.utc(v) for v in conn.execute(select(t.notice_outbox.c.next_attempt_at)).scalars())
        delays.append((nxt - clock.now).total_seconds())
        clock.now = nxt + timedelta(seconds=60)  # past every row's next attempt
    # Exponential with equal jitter: attempt k waits between base*2^(k-1)/2 and base*2^(k-1), capped.
    for k, d in enumerate(delays, start=1):
        cap = min(60, 2 * 2 ** (k - 1))
        assert cap / 2 <= d <= cap
    with engine.connect() as conn:
        rows = conn.execute(select(t.notice_outbox)).all()
    assert {r.status for r in rows} == {"pending"}
    assert {r.attempts for r in rows} == {6}
    assert all("Unavailable: hub: got connection refused" in r.last_error for r in rows)

    server.up = True
    stats = pusher.push_due()
    assert (stats.attempted, stats.delivered, stats.duplicates) == (5, 5, 0)
    assert pusher.push_due().attempted == 0
    clock.advance(3600)
    assert pusher.push_due().attempted == 0
    with engine.connect() as conn:
        rows = conn.execute(select(t.notice_outbox)).all()
    assert {r.status for r in rows} == {"delivered"}
    for r in rows:
        receipt = verify_receipt(r.envelope, r.receipt)
        assert receipt is not None and receipt.notice_id == r.notice_id and not receipt.duplicate
        assert r.last_error is None
    assert count(engine, t.notice_inbox) == 5
    assert count(engine, t.leads) == 5
    assert count(engine, t.lead_events) == 5
    assert count(engine, t.referrals) == 5


def test_crash_between_detection_and_push(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    Provider("370304-medins", hub_key, clock).run(engine, stays(PEOPLE[:2]), "medins", date(2025, 6, 3))
    # The detecting process died here; a new process starts a fresh pusher on the same store.
    server = HubServer(hub, hub_key, clock)
    stats = Pusher(engine, server, verify_receipt, clock=clock).push_due()
    assert (stats.delivered, stats.duplicates) == (2, 0)
    assert count(engine, t.notice_inbox) == 2


class Crash(BaseException):
    """A process death: not an Exception, so nothing catches it."""


def test_crash_after_send_before_marking_delivered(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    Provider("370304-medins", hub_key, clock).run(engine, stays(PEOPLE[:1]), "medins", date(2025, 6, 3))
    server = HubServer(hub, hub_key, clock)

    def send_then_die(envelope: bytes) -> bytes:
        server(envelope)
        raise Crash

    with pytest.raises(Crash):
        Pusher(engine, send_then_die, verify_receipt, lease=120, clock=clock).push_due()
    assert count(engine, t.notice_inbox) == 1
    assert count(engine, t.notice_outbox, t.notice_outbox.c.status == "pending") == 1

    fresh = Pusher(engine, server, verify_receipt, lease=120, clock=clock)
    assert fresh.push_due().attempted == 0  # still leased to the dead pusher
    clock.advance(121)
    stats = fresh.push_due()
    assert (stats.delivered, stats.duplicates) == (1, 1)
    assert server.calls == 2
    assert count(engine, t.notice_inbox) == 1
    assert count(engine, t.lead_events) == 1
    assert count(engine, t.referrals) == 1
    with engine.connect() as conn:
        stored = conn.execute(select(t.notice_outbox.c.receipt)).scalar_one()
    assert verify_receipt(b"", stored).duplicate


def test_receipt_for_another_notice_is_not_accepted(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    Provider("370304-medins", hub_key, clock).run(engine, stays(PEOPLE[:1]), "medins", date(2025, 6, 3))

    def wrong_receipt(_envelope: bytes) -> bytes:
        return sign_receipt(notice_pb2.Receipt(hub=HUB, notice_id=b"\x01" * 16, notice_digest=b"\x00" * 32))

    stats = Pusher(engine, wrong_receipt, verify_receipt, clock=clock).push_due()
    assert (stats.failed, stats.delivered) == (1, 0)
    with engine.connect() as conn:
        row = conn.execute(select(t.notice_outbox)).one()
    assert row.status == "pending" and "receipt.notice_id: got 0101" in row.last_error


# ---------------------------------------------------------------- hub intake


def _one_envelope(engine, hub_key, clock, people=PEOPLE[:1], provider="370304-medins", dept="medins",
                  as_of=date(2025, 6, 3), records=None) -> bytes:
    Provider(provider, hub_key, clock).run(engine, records or stays(people), dept, as_of)
    with engine.connect() as conn:
        return conn.execute(
            select(t.notice_outbox.c.envelope).order_by(t.notice_outbox.c.created_at.desc()).limit(1)
        ).scalar_one()


def test_replayed_notice_gets_duplicate_receipt_and_no_new_lead(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    envelope = _one_envelope(engine, hub_key, clock)
    server = HubServer(hub, hub_key, clock)
    first = verify_receipt(envelope, server(envelope))
    clock.advance(3600)
    second = verify_receipt(envelope, server(envelope))
    assert not first.duplicate and second.duplicate
    assert first.notice_id == second.notice_id and first.notice_digest == second.notice_digest
    assert first.received_at == second.received_at  # the receipt is for the first delivery
    assert count(engine, t.notice_inbox) == 1
    assert count(engine, t.leads) == 1
    assert count(engine, t.lead_events) == 1
    assert count(engine, t.referrals) == 1


def test_reused_notice_id_with_other_contents_is_refused(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    envelope = _one_envelope(engine, hub_key, clock)
    server = HubServer(hub, hub_key, clock)
    server(envelope)
    env = common_pb2.Envelope.FromString(envelope)
    notice = notice_pb2.Notice.FromString(env.payload)
    notice.due_date = "2025-06-06"  # same id, different (re-sealed) notice
    other = notice_pb2.Notice()
    other.CopyFrom(notice)
    with pytest.raises(InvalidArgument) as err:
        forged = _sign(NOTICE_PAYLOAD_TYPE, other.SerializeToString())
        with engine.begin() as conn:
            hub.accept_notice(conn, other, notice_pb2.SealedDetails(identity=PEOPLE[0]), envelope=forged,
                              sign_receipt=sign_receipt, now=clock())
    assert err.value.reason == "NOTICE_ID_REUSED"


def test_notice_for_another_hub_or_tampered_metadata_is_refused(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    envelope = _one_envelope(engine, hub_key, clock)
    notice = notice_pb2.Notice.FromString(common_pb2.Envelope.FromString(envelope).payload)
    notice.region = "370304999"  # public metadata changed after sealing
    from hedui.keys.sealing import SealError

    with pytest.raises(SealError):
        open_notice(notice, hub_key)
    other_hub = Hub(engine, hub="other-hub", person_secret=b"p" * 32, sealing_public=hub_key.public_bytes(),
                    routing=ROUTING, calendar=CAL, clock=HUB_CLOCK)
    good = notice_pb2.Notice.FromString(common_pb2.Envelope.FromString(envelope).payload)
    with pytest.raises(InvalidArgument, match="notice.hub: got '370304-mz', want 'other-hub'"):
        with engine.begin() as conn:
            other_hub.accept_notice(conn, good, open_notice(good, hub_key), envelope=envelope,
                                    sign_receipt=sign_receipt)


def test_two_departments_on_one_person_merge_into_one_lead(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    person, other = PEOPLE[0], PEOPLE[1]
    Provider("370304-medins", hub_key, clock).run(engine, stays([person, other]), "medins", date(2025, 6, 3))
    cert = [Record(person, "c:1", (Fact("disability_certificate", Decimal(2), "code", date(2025, 5, 28),
                                        {"region": "370304001"}),))]
    Provider("370304-cl", hub_key, clock).run(engine, cert, "disability", date(2025, 6, 3))
    server = HubServer(hub, hub_key, clock)
    assert Pusher(engine, server, verify_receipt, clock=clock).push_due().delivered == 3

    assert count(engine, t.notice_inbox) == 3
    assert count(engine, t.leads) == 2
    assert count(engine, t.referrals) == 2  # the second notice joined the open referral
    merged = hub.merged_leads()
    assert len(merged) == 1 and merged[0]["events"] == 2 and merged[0]["sources"] == 2
    detail = hub.lead(merged[0]["lead_id"])
    assert detail["providers"] == ["370304-cl", "370304-medins"]
    assert {e["event_type"] for e in detail["events"]} == {"large_medical_expense", "newly_certified_disabled"}
    assert hub.reveal_identity(merged[0]["lead_id"], hub_key) == person
    # A grid worker's report about the same person merges too.
    acc = hub.add_manual_lead(identity=" " + person.lower() + " ", region="370304001", event_type="illness",
                              event_date=date(2025, 6, 3), reporter="grid-0107", now=clock())
    assert acc.lead_id == merged[0]["lead_id"] and not acc.new_lead and acc.referral_id is None


def test_referral_due_in_five_working_days_and_routed(engine, hub):
    # Friday 24 Jan 2025: Sun 26 (make-up), Mon 27, then Spring Festival 28 Jan - 4 Feb; Wed 5,
    # Thu 6, Fri 7 Feb.
    acc = hub.add_manual_lead(identity=PEOPLE[0], region="370304002005", event_type="illness",
                              event_date=date(2025, 1, 24), reporter="grid-0201", now=local(2025, 1, 24))
    ref = hub.referral(acc.referral_id)
    assert ref.due_date == date(2025, 2, 7)
    assert (ref.assignee, ref.assignee_kind) == ("370304002", "town")
    # Late on 24 Jan UTC is already 25 Jan in China: counted from Saturday.
    acc2 = hub.add_manual_lead(identity=PEOPLE[1], region="370304009", event_type="education_aid_application",
                               event_date=date(2025, 1, 24), reporter="grid-0201",
                               now=datetime(2025, 1, 24, 17, 0, tzinfo=UTC))
    ref2 = hub.referral(acc2.referral_id)
    assert ref2.due_date == date(2025, 2, 7)
    assert (ref2.assignee, ref2.assignee_kind) == ("370304-edu", "department")
    acc3 = hub.add_manual_lead(identity=PEOPLE[2], region="370399", event_type="illness",
                               event_date=date(2025, 3, 3), reporter="grid-0201", now=local(2025, 3, 3))
    assert hub.referral(acc3.referral_id).assignee == "370304-mz-center"  # catch-all
    assert hub.referral(acc3.referral_id).due_date == date(2025, 3, 10)


def test_escalation_of_overdue_and_response(engine, hub):
    acc = hub.add_manual_lead(identity=PEOPLE[0], region="370304001", event_type="illness",
                              event_date=date(2025, 3, 3), reporter="grid-0107", now=local(2025, 3, 3))
    due = hub.referral(acc.referral_id).due_date
    assert due == date(2025, 3, 10)
    assert hub.overdue(due) == [] and hub.escalate(due) == []
    after = due + timedelta(days=1)
    assert [r.referral_id for r in hub.overdue(after)] == [acc.referral_id]
    escalated = hub.escalate(after, now=local(2025, 3, 11))
    assert [(r.referral_id, r.status) for r in escalated] == [(acc.referral_id, "escalated")]
    assert hub.escalate(after) == []  # not escalated twice
    assert [r.status for r in hub.overdue(after)] == ["escalated"]

    with pytest.raises(InvalidArgument, match="programme: got None"):
        hub.record_response(acc.referral_id, outcome="assisted")
    with pytest.raises(InvalidArgument, match="outcome: got 'done'"):
        hub.record_response(acc.referral_id, outcome="done")
    with pytest.raises(NotFound):
        hub.record_response(9999, outcome="found")
    view = hub.record_response(acc.referral_id, outcome="assisted", programme="dibao", now=local(2025, 3, 12))
    assert (view.status, view.outcome, view.programme) == ("responded", "assisted", "dibao")
    assert view.escalated_at is not None
    assert hub.overdue(date(2025, 4, 1)) == []
    assert hub.lead(acc.lead_id)["status"] == "closed"
    with pytest.raises(FailedPrecondition) as err:
        hub.record_response(acc.referral_id, outcome="found")
    assert err.value.reason == "ALREADY_RESPONDED"

    # A new report about the same person re-opens the lead with a new referral.
    again = hub.add_manual_lead(identity=PEOPLE[0], region="370304001", event_type="fire_loss",
                                event_date=date(2025, 4, 1), reporter="grid-0107", now=local(2025, 4, 1))
    assert again.lead_id == acc.lead_id and again.referral_id not in (None, acc.referral_id)
    assert hub.lead(acc.lead_id)["status"] == "open"


def _open_referral(engine, hub: Hub, person: str) -> int:
    with engine.connect() as conn:
        lead_id = conn.execute(select(t.leads.c.lead_id).where(t.leads.c.person_key == hub.person_key(person))).scalar_one()
    (ref,) = [r for r in hub.list_referrals() if r.lead_id == lead_id and r.status != "responded"]
    return ref.referral_id


def test_monthly_report_adds_up(engine, hub, hub_key):
    clock = Clock(local(2025, 3, 3))
    # 3 March: three notices from medical insurance (two towns), one from the disability federation.
    recs = stays(PEOPLE[:2], region="370304001", discharged=date(2025, 2, 10)) + \
        stays(PEOPLE[2:3], region="370304002", discharged=date(2025, 2, 11))
    Provider("370304-medins", hub_key, clock).run(engine, recs, "medins", date(2025, 3, 3))
    cert = [Record(PEOPLE[3], "c:1", (Fact("disability_certificate", Decimal(1), "code", date(2025, 2, 26),
                                           {"region": "370304009"}),))]
    Provider("370304-cl", hub_key, clock).run(engine, cert, "disability", date(2025, 3, 3))
    server = HubServer(hub, hub_key, clock)
    assert Pusher(engine, server, verify_receipt, clock=clock).push_due().delivered == 4
    r0, r1, r2, r3 = (_open_referral(engine, hub, p) for p in PEOPLE[:4])  # all due 10 March

    hub.record_response(r0, outcome="found", now=local(2025, 3, 7))  # on time
    assert {r.referral_id for r in hub.escalate(date(2025, 3, 11), now=local(2025, 3, 11))} == {r1, r2, r3}
    hub.record_response(r2, outcome="not_eligible", now=local(2025, 3, 20))  # late
    # 20 March: a grid worker reports PEOPLE[0] again: the closed lead re-opens, new referral due 27 March.
    r5 = hub.add_manual_lead(identity=PEOPLE[0], region="370304001", event_type="illness",
                             event_date=date(2025, 3, 20), reporter="grid-0107", now=local(2025, 3, 20)).referral_id
    # 27 March: a new person; due 3 April, answered 2 April: still pending at the end of March.
    r4 = hub.add_manual_lead(identity=PEOPLE[4], region="370304002", event_type="illness",
                             event_date=date(2025, 3, 27), reporter="grid-0201", now=local(2025, 3, 27)).referral_id
    hub.record_response(r4, outcome="unreachable", now=local(2025, 4, 2))
    # 1 April: counts for April only.
    hub.add_manual_lead(identity=PEOPLE[5], region="370304001", event_type="illness",
                        event_date=date(2025, 4, 1), reporter="grid-0107", now=local(2025, 4, 1))
    assert r5 is not None and len({r0, r1, r2, r3, r4, r5}) == 6

    rep = monthly_report(hub, 2025, 3)
    assert rep["received"] == {
        "total": 6, "notices": 4, "manual": 2, "new_leads": 5,
        "by_provider": {"370304-cl": 1, "370304-medins": 3},
        "by_reporter": {"grid-0107": 1, "grid-0201": 1},
    }
    assert rep["referred"] == 6
    # on time r0; late r2; overdue r1, r3, r5; pending r4.
    assert (rep["completed_on_time"], rep["completed_late"], rep["overdue"], rep["pending"]) == (1, 1, 3, 1)
    assert rep["escalated"] == 3
    assert rep["referred"] == sum(rep[k] for k in ("completed_on_time", "completed_late", "overdue", "pending"))
    groups = {**rep["by_department"], **rep["by_town"]}
    for key in ("referred", "completed_on_time", "completed_late", "overdue", "pending", "escalated"):
        assert sum(g[key] for g in groups.values()) == rep[key], key
    assert rep["by_town"]["370304001"] == {"name": "城东街道", "referred": 3, "completed_on_time": 1,
                                           "completed_late": 0, "overdue": 2, "pending": 0, "escalated": 1}
    assert rep["by_town"]["370304002"] == {"name": "城西街道", "referred": 2, "completed_on_time": 0,
                                           "completed_late": 1, "overdue": 0, "pending": 1, "escalated": 1}
    assert rep["by_department"] == {"370304-mz-center": {
        "name": "区社会救助综合服务中心", "referred": 1, "completed_on_time": 0, "completed_late": 0,
        "overdue": 1, "pending": 0, "escalated": 1}}

    april = monthly_report(hub, 2025, 4)
    assert (april["received"]["total"], april["referred"], april["overdue"]) == (1, 1, 1)  # unanswered by 30 April

    page = render_html(rep)
    assert "社会救助主动发现工作月报 2025年3月" in page and "按时办结" in page and "城西街道" in page
    assert "<svg" in page and "</svg>" in page
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)
    for p in PEOPLE:
        assert p not in page


def test_manual_lead_input_errors_do_not_echo_identity(hub):
    bad = PEOPLE[0][:-1] + ("0" if PEOPLE[0][-1] != "0" else "1")
    with pytest.raises(InvalidArgument) as err:
        hub.add_manual_lead(identity=bad, region="370304001", event_type="illness",
                            event_date=date(2025, 3, 3), reporter="g", now=local(2025, 3, 3))
    assert err.value.reason == "INVALID_IDENTITY" and bad not in str(err.value)
    with pytest.raises(InvalidArgument) as err:
        hub.add_manual_lead(identity=PEOPLE[0], region="370304001", event_type="illness",
                            event_date=date(2025, 3, 3), reporter="g", note=f"same as {PEOPLE[1]}",
                            now=local(2025, 3, 3))
    assert "note" in str(err.value) and PEOPLE[1] not in str(err.value)
    with pytest.raises(InvalidArgument, match="event_date"):
        hub.add_manual_lead(identity=PEOPLE[0], region="370304001", event_type="illness",
                            event_date=date(2025, 3, 4), reporter="g", now=local(2025, 3, 3))


def test_no_identity_in_clear_in_any_table_or_log(engine, hub, hub_key, caplog):
    caplog.set_level(logging.DEBUG)
    clock = Clock(local(2025, 6, 3))
    Provider("370304-medins", hub_key, clock).run(engine, stays(PEOPLE[:3]), "medins", date(2025, 6, 3))
    server = HubServer(hub, hub_key, clock)
    server.up = False
    pusher = Pusher(engine, server, verify_receipt, clock=clock)
    pusher.push_due()
    server.up = True
    clock.advance(7200)
    pusher.push_due()
    hub.add_manual_lead(identity=PEOPLE[4], region="370304001", event_type="illness",
                        event_date=date(2025, 6, 3), reporter="grid-0107", note="卧床, 无人照顾", now=clock())
    needles = [p.encode() for p in PEOPLE[:5]]
    seen_rows = 0
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name not in ("notice_outbox", "notice_inbox", "leads", "lead_events", "referrals"):
                continue
            for row in conn.execute(select(table)):
                seen_rows += 1
                for value in row:
                    blob = value if isinstance(value, bytes) else str(value).encode()
                    for n in needles:
                        assert n not in blob, table.name
    assert seen_rows > 10
    for rec in caplog.records:
        for p in PEOPLE:
            assert p not in rec.getMessage()


def test_deadline_beyond_the_official_calendar_is_marked(engine, hub_key, tmp_path):
    """A referral made on Christmas Day of the last year chinese_calendar covers is due in a
    year it does not: its due date rests on Monday–Friday and says so, in the view, its JSON
    and the monthly report; with the year in an override file it rests on the override."""
    import chinese_calendar

    y = max(d.year for d in chinese_calendar.holidays)
    made = datetime(y, 12, 25, 10, tzinfo=CHINA_TZ)
    clock = FixedClock(made)
    hub = Hub(engine, hub=HUB, person_secret=b"p" * 32, sealing_public=hub_key.public_bytes(),
              routing=ROUTING, calendar=WorkCalendar(), clock=clock)
    with pytest.warns(CalendarFallbackWarning, match=f"no official holiday data for {y + 1}"):
        acc = hub.add_manual_lead(identity=PEOPLE[0], region="370304001", event_type="illness",
                                  event_date=made.date(), reporter="grid-0107")
    ref = hub.referral(acc.referral_id)
    assert ref.created_on == made.date() and ref.due_basis == "weekdays-only"
    # Weekdays from 25 December: 26 (Mon..Fri counting skips weekends) — computed here by hand.
    d, n = made.date(), 0
    while n < 5:
        d += timedelta(days=1)
        n += d.weekday() < 5
    assert ref.due_date == d and ref.as_dict()["due_basis"] == "weekdays-only"
    rep = monthly_report(hub, y, 12, as_of=date(y, 12, 31))
    assert rep["due_basis"] == {"weekdays-only": 1} and rep["as_at"] == f"{y}-12-31"
    assert "仅按周一至周五计算 1 件" in render_html(rep)

    f = tmp_path / "calendar.toml"
    f.write_text(f"years = [{y + 1}]\n[[days]]\ndate = {y + 1}-01-01\nworkday = false\n", encoding="utf-8")
    hub.calendar = WorkCalendar(f)
    assert hub.referral(acc.referral_id).due_basis == "override"


def test_monthly_report_of_a_running_month_counts_as_at_today(engine, hub_key):
    clock = FixedClock(datetime(2025, 3, 3, 10, tzinfo=CHINA_TZ))
    hub = Hub(engine, hub=HUB, person_secret=b"p" * 32, sealing_public=hub_key.public_bytes(),
              routing=ROUTING, calendar=CAL, clock=clock)
    hub.add_manual_lead(identity=PEOPLE[0], region="370304001", event_type="illness",
                        event_date=date(2025, 3, 3), reporter="grid-0107")  # due Monday 10 March
    rep = monthly_report(hub, 2025, 3)  # as at today, 3 March: not yet due
    assert (rep["as_at"], rep["complete"], rep["pending"], rep["overdue"]) == ("2025-03-03", False, 1, 0)
    clock.set(datetime(2025, 3, 10, 18, tzinfo=CHINA_TZ))  # the last day to answer, still running
    rep = monthly_report(hub, 2025, 3)
    assert (rep["as_at"], rep["pending"], rep["overdue"]) == ("2025-03-10", 1, 0)
    clock.set(datetime(2025, 3, 20, 9, tzinfo=CHINA_TZ))
    rep = monthly_report(hub, 2025, 3, as_of=date(2025, 3, 10))  # as at the end of the due day
    assert (rep["pending"], rep["overdue"]) == (0, 1)
    rep = monthly_report(hub, 2025, 3, as_of=date(2025, 3, 9))
    assert (rep["pending"], rep["overdue"]) == (1, 0)
    clock.set(datetime(2025, 3, 3, 10, tzinfo=CHINA_TZ))
    with pytest.raises(InvalidArgument, match="month: got 2025-04, want a month that has begun by 2025-03-03"):
        monthly_report(hub, 2025, 4)


def test_batch_pusher_claims_once_and_a_late_pusher_audits_only_what_it_delivered(engine, hub, hub_key):
    """PushBatch on the provider (issue 16): one statement claims a batch (a second pusher
    finds nothing due while the lease holds); when the lease runs out mid-call and another
    pusher delivers the rows, the late one marks and audits none of them."""
    clock = Clock(local(2025, 6, 3))
    Provider("370304-medins", hub_key, clock).run(engine, stays(PEOPLE[:3]), "medins", date(2025, 6, 3))
    server = HubServer(hub, hub_key, clock)
    audited: dict[str, list[bytes]] = {"a": [], "b": []}

    def audit(who: str):
        return lambda conn, delivered: audited[who].extend(d[0] for d in delivered)

    b = Pusher(engine, server, verify_receipt, lease=120, clock=clock, audit=audit("b"),
               send_batch=lambda envs: [server(e) for e in envs])

    def slow_batch(envs: list[bytes]) -> list:
        out = [server(e) for e in envs]
        assert b.push_due().attempted == 0      # claimed by a: nothing due for b
        clock.advance(121)                      # a's lease runs out before its answer is back
        assert b.push_due().delivered == 3      # duplicates at the hub, delivered by b
        return out

    a = Pusher(engine, server, verify_receipt, lease=120, clock=clock, audit=audit("a"), send_batch=slow_batch)
    stats = a.push_due()
    assert (stats.attempted, stats.delivered, stats.failed) == (3, 0, 0)  # its receipts checked out...
    assert audited["a"] == [] and len(audited["b"]) == 3    # ...but b marked the rows: only b audits
    with engine.connect() as conn:
        rows = conn.execute(select(t.notice_outbox.c.status, t.notice_outbox.c.attempts, t.notice_outbox.c.receipt)).all()
    assert [(r.status, r.attempts) for r in rows] == [("delivered", 2)] * 3
    assert all(verify_receipt(b"", r.receipt).duplicate for r in rows)   # b's receipts (the replays) stay
    assert count(engine, t.notice_inbox) == 3 and count(engine, t.lead_events) == 3
