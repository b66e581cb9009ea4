"""Statements run on the driver's cursor (node/store/raw.py, issue 16 item 3), on SQLite and
PostgreSQL: the same rows go in and come out as through SQLAlchemy Core (read back with
Core), inside the caller's transaction (a rollback takes them), and a driver error is the
exception Core raises."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from hedui.node.store.raw import Prepared
from hedui.node.store.tables import quota_counters, seen_requests

T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
_S = seen_requests.c
_Q = quota_counters.c
_KEYS = ["request_id", "caller", "method", "seen_at", "request_digest", "answer"]
INSERT_SEEN = Prepared(seen_requests.insert(), column_keys=_KEYS)
READ_SEEN = Prepared(select(_S.caller, _S.seen_at, _S.answer).where(_S.request_id == bindparam("rid")))
BUMP = Prepared(update(quota_counters).where(_Q.caller == bindparam("k_caller"), _Q.window == "m")
                .values(count=_Q.count + 1).returning(_Q.window, _Q.count))


def _row(rid: bytes, answer: bytes | None = b"\x00answer") -> dict:
    return {"request_id": rid, "caller": "hub", "method": "Lookup", "seen_at": T0,
            "request_digest": b"d" * 32, "answer": answer}


def test_insert_and_select_round_trip_like_core(engine):
    with engine.begin() as c:
        INSERT_SEEN.run(c, _row(b"r" * 32))
        raw = READ_SEEN.run(c, {"rid": b"r" * 32})
    with engine.connect() as c:   # Core reads what the driver wrote, types processed alike
        core = [tuple(r) for r in c.execute(READ_SEEN.stmt, {"rid": b"r" * 32})]
        got = c.execute(select(_S.caller, _S.seen_at, _S.answer, _S.request_digest)).one()
    assert raw == core and raw[0][0] == "hub" and raw[0][2] == b"\x00answer"
    assert (got.caller, got.seen_at.astimezone(UTC), got.answer, got.request_digest) == ("hub", T0, b"\x00answer", b"d" * 32)
    with engine.connect() as c:
        assert READ_SEEN.run(c, {"rid": b"x" * 32}) == []


def test_runs_inside_the_callers_transaction(engine):
    with pytest.raises(RuntimeError), engine.begin() as c:
        INSERT_SEEN.run(c, _row(b"a" * 32))
        raise RuntimeError("roll back")
    with engine.connect() as c:
        assert c.execute(select(_S.request_id)).all() == []


def test_a_duplicate_key_is_sqlalchemys_integrity_error(engine):
    with engine.begin() as c:
        INSERT_SEEN.run(c, _row(b"k" * 32))
    with pytest.raises(IntegrityError), engine.begin() as c:
        INSERT_SEEN.run(c, _row(b"k" * 32))
    with engine.connect() as c:
        assert c.execute(select(_S.request_id)).scalars().all() == [b"k" * 32]


def test_update_returning_and_literal_binds(engine):
    with engine.begin() as c:
        c.execute(quota_counters.insert(), [
            {"caller": "hub", "method": "Lookup", "window": "m", "window_start": 1, "count": 4},
            {"caller": "hub", "method": "Lookup", "window": "d", "window_start": 1, "count": 9},
        ])
        assert BUMP.run(c, {"k_caller": "hub"}) == [("m", 5)]   # the literal "m" is bound by the statement
        assert BUMP.run(c, {"k_caller": "other"}) == []
    with engine.connect() as c:
        assert dict(c.execute(select(_Q.window, _Q.count)).all()) == {"m": 5, "d": 9}


def test_a_value_the_store_refuses_is_core_s_error_too(engine):
    from sqlalchemy.exc import DBAPIError
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores a NUL in text")
    with pytest.raises(DBAPIError), engine.begin() as c:   # PostgreSQL text holds no NUL
        INSERT_SEEN.run(c, {**_row(b"n" * 32), "caller": "a\x00b"})


def test_refuses_what_it_cannot_run_faithfully():
    with pytest.raises(ValueError, match="expanding"):
        Prepared(select(_S.caller).where(_S.caller.in_(bindparam("many", expanding=True))))._plan(_dialect())
    with pytest.raises(KeyError):
        READ_SEEN._args(READ_SEEN._plan(_dialect()), {})


def _dialect():
    from sqlalchemy.dialects import sqlite
    return sqlite.dialect()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=st.one_of(st.none(), st.binary(max_size=300)),
       caller=st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=64))
def test_any_value_round_trips_unchanged(engine, answer, caller):
    rid = bytes(32)
    with engine.begin() as c:
        c.execute(seen_requests.delete())
        INSERT_SEEN.run(c, {**_row(rid, answer), "caller": caller})
    with engine.connect() as c:
        raw = READ_SEEN.run(c, {"rid": rid})
        assert raw == [tuple(r) for r in c.execute(READ_SEEN.stmt, {"rid": rid})]
        assert [(r[0], r[2]) for r in raw] == [(caller, answer)]


def test_run_many_inserts_every_row_as_core_executemany_does(engine):
    rows = [_row(bytes([i]) * 32, answer=None if i % 2 else bytes([i])) for i in range(5)]
    with engine.begin() as c:
        INSERT_SEEN.run_many(c, rows)
        INSERT_SEEN.run_many(c, [])   # nothing to do
    with engine.begin() as c:
        core = [{**r, "request_id": b"c" + r["request_id"][1:]} for r in rows]
        c.execute(seen_requests.insert(), core)
    with engine.connect() as c:
        got = {bytes(r.request_id): (r.caller, r.method, r.seen_at.replace(tzinfo=None), r.request_digest, r.answer)
               for r in c.execute(select(seen_requests))}
    assert len(got) == 10
    for r in rows:   # the raw rows equal the rows Core wrote from the same values
        assert got[r["request_id"]] == got[b"c" + r["request_id"][1:]]
    with pytest.raises(IntegrityError), engine.begin() as c:   # one duplicate fails the whole call
        INSERT_SEEN.run_many(c, [_row(b"\xee" * 32), _row(bytes(32))])
    with engine.connect() as c:
        assert c.execute(select(_S.request_id).where(_S.request_id == b"\xee" * 32)).first() is None
    with pytest.raises(ValueError, match="returns rows"), engine.begin() as c:
        BUMP.run_many(c, [{"k_caller": "a"}, {"k_caller": "b"}])


def test_keys_name_the_returned_columns(engine):
    assert READ_SEEN.keys(engine.dialect) == ("caller", "seen_at", "answer")
    assert BUMP.keys(engine.dialect) == ("window", "count")
    assert INSERT_SEEN.keys(engine.dialect) == ()


def test_fires_the_engines_cursor_events_like_core(engine):
    """bench/count_case.py counts statements with before_cursor_execute, fault-injection
    tests act in after_cursor_execute: a raw statement is seen by both, with its SQL and
    parameters, once per call (executemany once, flagged)."""
    from sqlalchemy import event
    seen: list[tuple[str, str, bool]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        seen.append(("before", statement.split()[0], executemany))

    def after(conn, cursor, statement, parameters, context, executemany):
        seen.append(("after", statement.split()[0], executemany))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        with engine.begin() as c:
            INSERT_SEEN.run(c, _row(b"e" * 32))
            INSERT_SEEN.run_many(c, [_row(b"f" * 32), _row(b"g" * 32)])
            READ_SEEN.run(c, {"rid": b"e" * 32})
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    assert seen == [("before", "INSERT", False), ("after", "INSERT", False),
                    ("before", "INSERT", True), ("after", "INSERT", True),
                    ("before", "SELECT", False), ("after", "SELECT", False)]


def test_an_event_that_raises_stops_the_statement(engine):
    """A fault injected in before_cursor_execute (as a test wing does) fails the statement
    and rolls the transaction back, as it would through Core."""
    from sqlalchemy import event

    def boom(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO seen_requests"):
            raise OSError("injected")

    event.listen(engine, "before_cursor_execute", boom)
    try:
        with pytest.raises(OSError, match="injected"), engine.begin() as c:
            INSERT_SEEN.run(c, _row(b"h" * 32))
    finally:
        event.remove(engine, "before_cursor_execute", boom)
    with engine.connect() as c:
        assert c.execute(select(_S.request_id)).all() == []


def test_a_commit_as_you_go_connection_begins_its_transaction(engine):
    with engine.connect() as c:
        INSERT_SEEN.run(c, _row(b"i" * 32))
        assert c.in_transaction()
        c.rollback()
    with engine.connect() as c:
        assert c.execute(select(_S.request_id)).all() == []
        INSERT_SEEN.run(c, _row(b"j" * 32))
        c.commit()
    with engine.connect() as c:
        assert c.execute(select(_S.request_id)).scalars().all() == [b"j" * 32]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.binary(min_size=1, max_size=32), st.one_of(st.none(), st.binary(max_size=200)),
                               st.integers(min_value=0, max_value=10**6)),
                     min_size=0, max_size=6, unique_by=lambda t: t[0]))
def test_run_many_writes_what_core_writes_for_any_rows(engine, rows):
    """Equivalence: the same rows through run_many and through Core's executemany read back
    identical (the raw table and the Core table are one table, keyed apart by a prefix)."""
    def row(prefix: bytes, rid: bytes, answer, sec: int) -> dict:
        return {"request_id": prefix + rid[:31], "caller": "hub", "method": "Lookup",
                "seen_at": datetime.fromtimestamp(1_780_000_000 + sec, UTC), "request_digest": rid, "answer": answer}
    with engine.begin() as c:
        c.execute(seen_requests.delete())
        INSERT_SEEN.run_many(c, [row(b"r", *t) for t in rows])
        if rows:
            c.execute(seen_requests.insert(), [row(b"c", *t) for t in rows])
    with engine.connect() as c:
        got = {bytes(r[0]): tuple(r[1:]) for r in c.execute(select(seen_requests))}
    assert len(got) == 2 * len(rows)
    for rid, _a, _s in rows:
        assert got[b"r" + rid[:31]] == got[b"c" + rid[:31]]
