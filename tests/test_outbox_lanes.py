"""The pusher's hand-offs (issue 16, notices end to end), on SQLite and PostgreSQL (the
``engine`` fixture):

- ``enqueue_many`` queues what ``enqueue`` would, one result per detection, and signs every
  notice before its first write: on SQLite another writer (the node's pusher) can take the
  file's write lock while detection signs.
- ``in_flight``: with more than one batch due, a pass keeps that many PushBatch calls in
  flight at once; every notice is still delivered and audited exactly once.
- The outbox doorbell: a ring from another process wakes the listener; nobody listening is
  not an error; one listener per store.

kill -9 of a provider with two batches in flight: tests/test_notices_e2e.py ("two-in-flight").
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import date

import pytest
from sqlalchemy import select
from test_outbox_hub import (
    CAL,
    HUB,
    HUB_CLOCK,
    PEOPLE,
    ROUTING,
    Clock,
    HubServer,
    Provider,
    count,
    local,
    stays,
    verify_receipt,
)

from hedui.keys.sealing import SealingKey
from hedui.node.discovery import tables as t
from hedui.node.discovery.detect import detect
from hedui.node.discovery.doorbell import Doorbell, bell_name, ring
from hedui.node.discovery.hub import Hub
from hedui.node.discovery.outbox import MAX_IN_FLIGHT, Pusher, enqueue, enqueue_many
from hedui.node.discovery.rules import default_rules
from hedui.node.errors import InvalidArgument
from hedui.node.store.db import open_engine

#: A safety net for a lane that never comes (the test then fails), not a timing assertion.
SAFETY = 60.0


@pytest.fixture(scope="module")
def hub_key() -> SealingKey:
    return SealingKey.generate()


@pytest.fixture
def hub(engine, hub_key) -> Hub:
    """The hub of tests/test_outbox_hub.py, on the provider's store."""
    return Hub(engine, hub=HUB, person_secret=b"p" * 32, sealing_public=hub_key.public_bytes(),
               routing=ROUTING, calendar=CAL, clock=HUB_CLOCK)


def _found(prov: Provider, people: list[str]) -> list:
    return detect(stays(people), default_rules("medins"), date(2025, 6, 3), CAL, provider=prov.code,
                  dedup_secret=b"d" * 32)


def test_enqueue_many_queues_what_enqueue_would(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    prov = Provider("370304-medins", hub_key, clock)
    found = _found(prov, PEOPLE[:4])
    with engine.begin() as conn:
        one = enqueue(conn, found[0], prov.sign_and_seal, hub=HUB, now=clock())
    with engine.begin() as conn:
        # found[0] is queued already, found[2] comes twice in this call
        got = enqueue_many(conn, [found[0], found[1], found[2], found[2], found[3]], prov.sign_and_seal, hub=HUB,
                           now=clock())
    assert [created for _, created in got] == [False, True, True, False, True]
    assert got[0][0] == one[0] and got[2][0] == got[3][0]
    assert prov.sealed == 4          # the queued one and the repeat were not signed again
    assert count(engine, t.notice_outbox) == 4
    with engine.connect() as conn:
        ids = {bytes(x) for x in conn.execute(select(t.notice_outbox.c.notice_id)).scalars()}
    assert ids == {nid for nid, _ in got}
    with engine.begin() as conn:     # a re-run queues nothing and signs nothing
        assert not any(c for _, c in enqueue_many(conn, found, prov.sign_and_seal, hub=HUB, now=clock()))
    assert prov.sealed == 4
    with engine.begin() as conn:
        assert enqueue_many(conn, [], prov.sign_and_seal, hub=HUB, now=clock()) == []


def test_enqueue_many_rejects_a_signer_that_returns_nothing(engine, hub_key):
    clock = Clock(local(2025, 6, 3))
    prov = Provider("370304-medins", hub_key, clock)
    with pytest.raises(InvalidArgument, match="sign_and_seal: got NoneType"):
        with engine.begin() as conn:
            enqueue_many(conn, _found(prov, PEOPLE[:1]), lambda d, nid: None, hub=HUB, now=clock())  # type: ignore[arg-type,return-value]
    assert count(engine, t.notice_outbox) == 0


def test_enqueue_many_signs_before_it_takes_the_sqlite_write_lock(tmp_path, hub_key):
    from hedui.node.store import migrate

    path = tmp_path / "node.db"
    engine = open_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    clock = Clock(local(2025, 6, 3))
    prov = Provider("370304-medins", hub_key, clock)
    found = _found(prov, PEOPLE[:3])
    with engine.begin() as conn:
        enqueue(conn, found[0], prov.sign_and_seal, hub=HUB, now=clock())
    other = sqlite3.connect(path, timeout=0, isolation_level=None)   # no busy wait: locked -> error
    took: list[bool] = []

    def sign_while_another_writes(d, nid):
        other.execute("BEGIN IMMEDIATE")    # the write lock: free while detection signs
        other.execute("UPDATE notice_outbox SET attempts = attempts")
        other.execute("COMMIT")
        took.append(True)
        return prov.sign_and_seal(d, nid)

    try:
        with engine.begin() as conn:
            got = enqueue_many(conn, found, sign_while_another_writes, hub=HUB, now=clock())
        assert [c for _, c in got] == [False, True, True] and took == [True, True]
        # The old way holds the lock from its first insert on: the second signing finds it taken.
        took.clear()
        more = _found(prov, PEOPLE[3:5])
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            with engine.begin() as conn:
                for d in more:
                    enqueue(conn, d, sign_while_another_writes, hub=HUB, now=clock())
        assert took == [True]
    finally:
        other.close()
        engine.dispose()


def test_in_flight_keeps_two_batches_at_the_hub_and_delivers_each_notice_once(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    Provider("370304-medins", hub_key, clock).run(engine, stays(PEOPLE[:7]), "medins", date(2025, 6, 3))
    server = HubServer(hub, hub_key, clock)
    both = threading.Barrier(2, timeout=SAFETY)   # broken (and the pass fails) unless two calls overlap
    lock = threading.Lock()
    calls: list[int] = []
    audited: list[bytes] = []

    def send_batch(envs: list[bytes]) -> list:
        with lock:
            calls.append(len(envs))
            first_two = len(calls) <= 2
        if first_two:
            both.wait()
        with lock:   # the stand-in hub is one SQLite writer, as the real one's intake lock makes it
            return [server(e) for e in envs]

    def audit(conn, delivered):
        audited.extend(d[0] for d in delivered)

    pusher = Pusher(engine, server, verify_receipt, batch=2, in_flight=2, clock=clock, send_batch=send_batch,
                    audit=audit)
    stats = pusher.push_due()
    assert (stats.attempted, stats.delivered, stats.failed, stats.duplicates) == (7, 7, 0, 0)
    assert sorted(calls) == [1, 2, 2, 2]
    assert len(audited) == len(set(audited)) == 7
    with engine.connect() as conn:
        rows = conn.execute(select(t.notice_outbox.c.status, t.notice_outbox.c.attempts)).all()
    assert [(r.status, r.attempts) for r in rows] == [("delivered", 1)] * 7
    assert count(engine, t.notice_inbox) == 7 and pusher.push_due().attempted == 0


def test_a_failing_lane_leaves_its_batch_for_a_retry(engine, hub, hub_key):
    clock = Clock(local(2025, 6, 3))
    Provider("370304-medins", hub_key, clock).run(engine, stays(PEOPLE[:4]), "medins", date(2025, 6, 3))
    server = HubServer(hub, hub_key, clock)
    both = threading.Barrier(2, timeout=SAFETY)
    lock = threading.Lock()
    calls: list[int] = []

    def send_batch(envs: list[bytes]) -> list:
        with lock:
            calls.append(len(envs))
            k = len(calls)
        both.wait()
        if k == 2:
            raise ConnectionError("hub went away mid-call")
        with lock:
            return [server(e) for e in envs]

    pusher = Pusher(engine, server, verify_receipt, batch=2, in_flight=2, clock=clock, send_batch=send_batch)
    stats = pusher.push_due()
    assert (stats.attempted, stats.delivered, stats.failed) == (4, 2, 2)
    assert count(engine, t.notice_outbox, t.notice_outbox.c.status == "pending") == 2
    clock.advance(3600)   # past the backoff
    again = Pusher(engine, server, verify_receipt, batch=2, in_flight=2, clock=clock,
                   send_batch=lambda envs: [server(e) for e in envs]).push_due()
    assert (again.delivered, again.duplicates) == (2, 0)
    assert count(engine, t.notice_inbox) == 4


def test_in_flight_is_checked(engine):
    for bad in (0, MAX_IN_FLIGHT + 1):
        with pytest.raises(InvalidArgument, match="in_flight"):
            Pusher(engine, lambda e: e, verify_receipt, in_flight=bad, clock=lambda: local(2025, 6, 3))


# ---------------------------------------------------------------- the doorbell


def test_the_doorbell_wakes_its_listener_and_a_ring_without_one_is_harmless(tmp_path):
    a = open_engine(f"sqlite:///{tmp_path / 'a' / 'node.db'}")
    a2 = open_engine(f"sqlite:///{tmp_path / 'a' / '..' / 'a' / 'node.db'}")
    b = open_engine(f"sqlite:///{tmp_path / 'b' / 'node.db'}")
    name = bell_name(a)
    if name is None:
        pytest.skip("no abstract socket namespace here: the pusher polls")
    assert bell_name(a2) == name and bell_name(b) != name      # one bell per store file
    assert str(tmp_path).encode() not in name                  # a digest, not the path
    assert ring(name) is False                                 # nobody listening: fine
    wake = threading.Event()
    bell = Doorbell(name, wake)
    try:
        assert bell.start()
        assert Doorbell(name, threading.Event()).start() is False   # taken: that one polls
        assert ring(bell_name(b)) is False and not wake.is_set()
        assert ring(name)
        assert wake.wait(SAFETY)
        wake.clear()
        assert ring(name) and wake.wait(SAFETY)
    finally:
        bell.stop()
    assert ring(name) is False      # gone with its listener
    wake2 = threading.Event()
    again = Doorbell(name, wake2)   # and the name is free again
    try:
        assert again.start()
    finally:
        again.stop()
    for e in (a, a2, b):
        e.dispose()
