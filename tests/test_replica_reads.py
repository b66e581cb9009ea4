"""Lookups read the token index from the streaming replica when one is configured, and the
primary while a build runs or when the replica fails (issue 16 item 6, node/verification/replica.py).
The "replica" here is a second engine: on the same database (the logic, not replication —
tests/test_scaleout_pg.py runs a real standby) or on a port nothing listens on."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
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
        c.execute(token_index.insert().values(epoch=1, token=TOK, row_count=1, updated_at=AT, facts=(
            '{"wages":{"t:id=1":[{"attrs":{},"name":"wage","on":"2026-01-31","unit":"yuan","value":"12.50"}]}}')))
        c.execute(index_progress.insert().values(epoch=1, source="wages", run=1, mode="full", status="done",
                                                 position=None, fingerprint="f", rows_read=1, started_at=AT,
                                                 updated_at=AT, completed_at=AT, data_date=date(2026, 1, 31)))
    replica = open_engine(pg_url)
    r = SimpleNamespace(engine=eng, read_engine=replica, metrics=Metrics())
    yield r
    replica.dispose()
    eng.dispose()


def test_an_index_at_rest_is_read_on_the_replica(rt):
    facts, dates = read_index(rt, 1, [TOK, b"\x00" * 64])
    assert list(facts) == [TOK] and str(facts[TOK][0].value) == "12.50"
    assert dates == {"wages": date(2026, 1, 31)}
    assert _reads(rt.metrics, "replica", "") == 1 and _reads(rt.metrics, "primary", "building") == 0


def test_while_a_build_runs_the_primary_answers(rt):
    with rt.engine.begin() as c:
        c.execute(update(index_progress).values(status="running"))
    facts, _ = read_index(rt, 1, [TOK])
    assert list(facts) == [TOK]
    assert _reads(rt.metrics, "primary", "building") == 1 and _reads(rt.metrics, "replica", "") == 0


def test_a_replica_that_is_down_costs_one_failed_read_then_the_primary_answers(rt):
    rt.read_engine.dispose()
    rt.read_engine = open_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2")
    facts, dates = read_index(rt, 1, [TOK])
    assert list(facts) == [TOK] and dates == {"wages": date(2026, 1, 31)}
    assert _reads(rt.metrics, "primary", "replica_failed") == 1


def test_without_a_replica_the_primary_answers(rt):
    rt.read_engine = None
    assert list(read_index(rt, 1, [TOK])[0]) == [TOK]
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
