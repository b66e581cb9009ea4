"""The audit log's cached incomplete tiles (node/audit/log.py ``_tails_in``, issue 16): a write
that completes a tile folds the tile's earlier hashes from what this process committed instead
of reading them back — and only from what it committed: a rolled-back transaction teaches the
cache nothing, entries another writer appended make it miss. Every stored node must equal the
in-memory tree's, on both stores."""

from __future__ import annotations

import datetime as _dt
import random

import pytest
from sqlalchemy import event, select

import hedui.node.audit.tables  # noqa: F401 - registers the tables before `engine` creates them
from hedui.node.audit import merkle
from hedui.node.audit.entry import Kind
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Signer
from hedui.node.audit.tables import audit_nodes
from hedui.node.audit.tree import perfect_root

ORIGIN = "test.hedui/tails"
T0 = _dt.datetime(2026, 5, 1, 8, 0, tzinfo=_dt.UTC)


def _clock() -> _dt.datetime:
    return T0


def _items(n: int, tag: str) -> list[tuple[str, dict]]:
    return [(Kind.ADMIN, {"action": f"{tag}-{i}", "operator": "op-7"}) for i in range(n)]


def _assert_nodes_match(log: AuditLog, engine, tile: int) -> None:
    leaves = [merkle.leaf_hash(log.entry(i)) for i in range(log.size())]
    with engine.connect() as c:
        rows = c.execute(select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash)).all()
    want = 0
    level = tile
    while (len(leaves) >> level) > 0:
        want += len(leaves) >> level
        level += tile
    assert len(rows) == want
    for level, idx, h in rows:
        span = 1 << level
        assert bytes(h) == perfect_root(leaves[idx * span:(idx + 1) * span]), (level, idx)


def _leaf_reads(engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "leaf_hash" in statement:
            seen.append(statement)

    return seen


@pytest.mark.parametrize("tile", [1, 2, 4])
def test_nodes_equal_the_memory_tree_through_rollbacks_and_other_writers(engine, tile: int) -> None:
    signer = Signer.generate(ORIGIN)
    rnd = random.Random(tile)
    with AuditLog(engine, ORIGIN, signer, tile_height=tile, clock=_clock) as log, \
            AuditLog(engine, ORIGIN, signer, tile_height=tile, clock=_clock) as other:
        for round_ in range(40):
            n = rnd.randint(1, 7)
            choice = rnd.random()
            if choice < 0.2:
                # A unit that appends, then fails: rolled back, nothing learnt from it.
                def failing(conn, n=n, round_=round_):  # type: ignore[no-untyped-def]
                    log.write_in(conn, log.prepare_many(_items(n, f"gone{round_}")))
                    raise RuntimeError("rolled back")

                with pytest.raises(RuntimeError):
                    log.group.run(failing)
            elif choice < 0.35:
                other.append_many(_items(n, f"other{round_}"))   # another writer: the cache misses
            else:
                prepared = log.prepare_many(_items(n, f"r{round_}"))
                log.group.run(lambda conn, p=prepared: log.write_in(conn, p))
        _assert_nodes_match(log, engine, tile)
        assert log.root() == merkle.MemoryTree(merkle.leaf_hash(log.entry(i)) for i in range(log.size())).root()


def test_a_lone_writer_reads_no_leaves_back(engine) -> None:
    """Once the cache holds the open tile, completing it needs no read of the store."""
    with AuditLog(engine, ORIGIN, Signer.generate(ORIGIN), tile_height=4, clock=_clock) as log:
        log.append_many(_items(5, "warm"))
        log.append_many(_items(16, "fill"))   # completes a tile: read once (the cache was cold)
        reads = _leaf_reads(engine)
        for i in range(12):
            log.append_many(_items(3, f"n{i}"))   # completes a tile every few transactions
        assert reads == []
        _assert_nodes_match(log, engine, 4)
