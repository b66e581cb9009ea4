"""The group committer's kept connection (node/store/group.py, issue 16 item 3), on SQLite and
PostgreSQL: transactions run on one connection kept between them instead of a pool check-out
each; an error drops it; a kept connection that went stale (the server ended its session)
costs nothing acknowledged — the batch runs once more on a fresh connection and is stored
once; ``close`` gives it back to the pool. Expectations are straight SQL over the store."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from hedui.node.store.group import GroupCommit

_md = MetaData()
_rows = Table("group_conn_rows", _md, Column("id", Integer, primary_key=True), Column("what", String(16)))


def _dbapi(c) -> int:
    return id(c.connection.dbapi_connection)


def _count(engine) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(_rows)).scalar_one())


def test_transactions_share_one_kept_connection_and_an_error_drops_it(engine):
    _md.create_all(engine)
    group = GroupCommit(engine)
    first = group.run(lambda c: (c.execute(insert(_rows).values(id=1, what="a")), _dbapi(c))[1])
    assert group.run(lambda c: (c.execute(insert(_rows).values(id=2, what="b")), _dbapi(c))[1]) == first
    assert engine.pool.checkedout() == 1   # the committer's, between transactions
    with pytest.raises(IntegrityError):   # a unit that fails (duplicate key): rolled back, connection dropped
        group.run(lambda c: c.execute(insert(_rows).values(id=2, what="again")))
    assert engine.pool.checkedout() == 0
    group.run(lambda c: c.execute(insert(_rows).values(id=3, what="c")))
    assert _count(engine) == 3
    group.close()
    assert engine.pool.checkedout() == 0
    group.run(lambda c: c.execute(insert(_rows).values(id=4, what="d")))   # after close: one check-out per transaction
    assert engine.pool.checkedout() == 0 and _count(engine) == 4 and (group.commits, group.units) == (4, 4)


@pytest.mark.postgres
def test_a_stale_kept_connection_loses_nothing_and_stores_once(pg_url):
    from hedui.node.store.db import open_engine

    engine = open_engine(pg_url)
    try:
        _md.create_all(engine)
        group = GroupCommit(engine)
        pid = group.run(lambda c: (c.execute(insert(_rows).values(id=1, what="a")),
                                   c.execute(text("SELECT pg_backend_pid()")).scalar_one())[1])
        with engine.connect() as admin:   # the server ends the kept connection's session
            assert admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
        runs = []

        def unit(c):
            runs.append(1)
            c.execute(insert(_rows).values(id=2, what="b"))
            return c.execute(text("SELECT pg_backend_pid()")).scalar_one()

        assert group.run(unit) != pid   # acknowledged, on a fresh connection
        assert len(runs) == 2 and _count(engine) == 2
        with engine.connect() as c:
            assert c.execute(select(_rows.c.what).where(_rows.c.id == 2)).scalar_one() == "b"
        group.close()
    finally:
        engine.dispose()
