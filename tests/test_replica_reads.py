"""Lookups read the token index from the streaming replica when one is configured — also while
a build runs, since every read takes only the live build — and the primary when the replica
fails or has no complete build yet (issue 16 item 6, node/verification/replica.py).
The "replica" here is a second engine: on the same database (the logic, not replication —
tests/test_scaleout_pg.py runs a real standby) or on a port nothing listens on."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
from conftest import scratch_database
from sqlalchemy import update

from hedui.node.metrics import Metrics
from hedui.node.store import migrate
from hedui.node.store.db import open_engine
from hedui.node.testbed.federation import free_port
from hedui.node.verification.index_tables import index_progress, token_index
from hedui.node.verification.replica import read_index

pytestmark = pytest.mark.postgres
AT = datetime(2026, 3, 1, tzinfo=UTC)
TOK = b"\x42" * 64


def _reads(m: Metrics, store: str, reason: str) -> float:
    return m.registry.get_sample_value("hedui_index_reads_total", {"store": store, "reason": reason}) or 0.0


@pytest.fixture
def rt(pg_url):
    eng = open_engine(pg_url)
    migrate.upgrade(eng, index_partitions=4)
    with eng.begin() as c:
        c.execute(token_index.insert().values(epoch=1, token=TOK, source="wages", gen=1, part=0, row_count=1, facts=(
            '{"t:id=1":[{"attrs":{},"name":"wage","on":"2026-01-31","unit":"yuan","value":"12.50"}]}')))
        c.execute(index_progress.insert().values(epoch=1, source="wages", run=1, mode="full", status="done",
                                                 position=None, fingerprint="f", rows_read=1, started_at=AT,
                                                 updated_at=AT, completed_at=AT, live_gen=1,
                                                 data_date=date(2026, 1, 31)))
    replica = open_engine(pg_url)
    r = SimpleNamespace(engine=eng, read_engine=replica, metrics=Metrics())
    yield r
    replica.dispose()
    eng.dispose()


def test_an_index_at_rest_is_read_on_the_replica(rt):
    live = read_index(rt, 1, [TOK, b"\x00" * 64])
    assert list(live.facts) == [TOK] and str(live.facts[TOK][0].value) == "12.50"
    assert live.data_dates == {"wages": date(2026, 1, 31)}
    assert _reads(rt.metrics, "replica", "") == 1 and _reads(rt.metrics, "primary", "replica_not_ready") == 0


def test_while_a_build_runs_the_replica_answers_from_the_live_build(rt):
    # A rebuild writes under its own generation, invisible until the swap (issue 13 item 1).
    with rt.engine.begin() as c:
        c.execute(update(index_progress).values(status="running", run=2))
        c.execute(token_index.insert().values(epoch=1, token=TOK, source="wages", gen=2, part=0, row_count=1, facts=(
            '{"t:id=1":[{"attrs":{},"name":"wage","on":"2026-02-28","unit":"yuan","value":"99.00"}]}')))
    live = read_index(rt, 1, [TOK])
    assert [str(f.value) for f in live.facts[TOK]] == ["12.50"]
    assert _reads(rt.metrics, "replica", "") == 1


def test_a_replica_without_a_complete_build_costs_one_read_then_the_primary_answers(rt, pg_admin):
    # The "replica" lags: a migrated store whose index has no complete build yet.
    with scratch_database(pg_admin) as url:
        lagging = open_engine(url)
        migrate.upgrade(lagging, index_partitions=4)
        rt.read_engine.dispose()
        rt.read_engine = lagging
        try:
            live = read_index(rt, 1, [TOK])
        finally:
            lagging.dispose()
    assert [str(f.value) for f in live.facts[TOK]] == ["12.50"]
    assert _reads(rt.metrics, "primary", "replica_not_ready") == 1 and _reads(rt.metrics, "replica", "") == 0


def test_a_replica_that_is_down_costs_one_failed_read_then_the_primary_answers(rt):
    rt.read_engine.dispose()
    rt.read_engine = open_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2")
    live = read_index(rt, 1, [TOK])
    assert list(live.facts) == [TOK] and live.data_dates == {"wages": date(2026, 1, 31)}
    assert _reads(rt.metrics, "primary", "replica_failed") == 1


def test_without_a_replica_the_primary_answers(rt):
    rt.read_engine = None
    assert list(read_index(rt, 1, [TOK]).facts) == [TOK]
    assert _reads(rt.metrics, "primary", "no_replica") == 1


def test_node_check_wants_a_reachable_standby(rt):
    from hedui.node.cli.node import check_read_replica

    (problem,) = check_read_replica(rt)          # the "replica" here is the primary itself
    assert "not in recovery, want a streaming replica" in problem
    rt.read_engine.dispose()
    rt.read_engine = open_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2")
    (problem,) = check_read_replica(rt)
    assert problem.startswith("store.read_database_url: cannot connect")
    rt.read_engine = None
    assert check_read_replica(rt) == []
