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
