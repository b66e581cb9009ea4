"""The token index partitioned by token prefix on PostgreSQL (issue 16 item 6, migration
0009pg16): the partition count is the one asked for at creation, every token has exactly one
partition, rows of an existing unpartitioned index move across, and SQLite keeps one table."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from hedui.node.store import migrate
from hedui.node.store.db import open_engine, sqlite_url
from hedui.node.verification.index import all_tokens, facts_for_tokens
from hedui.node.verification.index_tables import index_progress, partition_bounds

AT = datetime(2026, 3, 1, tzinfo=UTC)


def _partitions(eng) -> list[tuple[str, str]]:
    with eng.connect() as c:
        return [tuple(r) for r in c.execute(text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = 'token_index' ORDER BY c.relname"))]


def _partition_of(tok: bytes, parts) -> str:
    (i,) = [i for i, (lo, hi) in enumerate(partition_bounds(len(parts))) if (lo is None or tok >= lo) and (hi is None or tok < hi)]
    return parts[i][0]


def _tokens(n: int) -> list[bytes]:
    return [hashlib.sha512(i.to_bytes(4, "big")).digest() for i in range(n)]


def _fill(eng, toks: list[bytes]) -> None:
    # One complete build of source "s" (generation 1 live; node/verification/index_read.py).
    with eng.begin() as c:
        c.execute(text("INSERT INTO token_index (epoch, token, source, gen, part, facts, row_count) "
                       "VALUES (1, :t, 's', 1, 0, :f, 1)"),
                  [{"t": t, "f": f'{{"t:id={i}":[]}}'} for i, t in enumerate(toks)])
        c.execute(index_progress.insert().values(epoch=1, source="s", run=1, mode="fresh", status="done",
                                                 position=None, fingerprint="f", rows_read=len(toks),
                                                 started_at=AT, updated_at=AT, completed_at=AT, live_gen=1))


@given(n=st.integers(1, 256), tok=st.binary(min_size=0, max_size=64))
@settings(max_examples=300, deadline=None)
def test_every_token_falls_in_exactly_one_partition(n, tok):
    bounds = partition_bounds(n)
    assert len(bounds) == n
    hits = [i for i, (lo, hi) in enumerate(bounds) if (lo is None or tok >= lo) and (hi is None or tok < hi)]
    assert len(hits) == 1


@pytest.mark.parametrize("n", [0, 257, -1])
def test_partition_count_out_of_range_is_refused(n):
    with pytest.raises(ValueError, match="want 1..256"):
        partition_bounds(n)


@pytest.mark.postgres
def test_postgres_index_has_the_partitions_asked_for_and_spreads_tokens(pg_url):
    eng = open_engine(pg_url)
    try:
        migrate.upgrade(eng, index_partitions=8)
        parts = _partitions(eng)
        assert [p for p, _ in parts] == [f"token_index_p{i:03d}" for i in range(8)]
        assert "MINVALUE" in parts[0][1] and "MAXVALUE" in parts[-1][1]
        toks = _tokens(4000)
        _fill(eng, toks)
        with eng.connect() as c:
            counts = dict(c.execute(text("SELECT tableoid::regclass::text, count(*) FROM token_index GROUP BY 1")).all())
            # The lookup of one token is pruned to its one partition.
            plan = "\n".join(r[0] for r in c.execute(text(
                "EXPLAIN SELECT facts FROM token_index WHERE epoch = 1 AND token = :t"), {"t": toks[0]}))
        assert sorted(counts) == [p for p, _ in parts]
        assert min(counts.values()) > 4000 / 8 * 0.8        # sha-512 prefixes: near-equal shares
        assert set(re.findall(r"token_index_p\d{3}", plan)) == {_partition_of(toks[0], parts)}
        assert list(all_tokens(eng, 1, page=700)) == sorted(toks)   # token order across partitions
        got = facts_for_tokens(eng, 1, [toks[5], b"\x00" * 64])
        assert list(got) == [toks[5]]
        # Once created, a later upgrade keeps the table as it is.
        migrate.upgrade(eng, index_partitions=3)
        assert len(_partitions(eng)) == 8
    finally:
        eng.dispose()


@pytest.mark.postgres
def test_upgrade_moves_an_existing_index_into_partitions_and_downgrade_back(pg_url):
    from alembic import command

    eng = open_engine(pg_url)
    try:
        with eng.begin() as conn:
            command.upgrade(migrate._config(conn), "0009x")   # generations, still one plain table
        toks = _tokens(500)
        _fill(eng, toks)
        migrate.upgrade(eng, index_partitions=4)
        assert len(_partitions(eng)) == 4
        assert list(all_tokens(eng, 1)) == sorted(toks)
        with eng.begin() as conn:
            command.downgrade(migrate._config(conn), "0009x")
        assert _partitions(eng) == []
        assert list(all_tokens(eng, 1)) == sorted(toks)
        assert "token_index_p000" not in inspect(eng).get_table_names()
    finally:
        eng.dispose()


def test_sqlite_keeps_one_plain_table(tmp_path):
    eng = open_engine(sqlite_url(tmp_path / "n.db"))
    try:
        migrate.upgrade(eng, index_partitions=8)
        names = inspect(eng).get_table_names()
        assert "token_index" in names and not [n for n in names if n.startswith("token_index_p")]
    finally:
        eng.dispose()



@pytest.mark.postgres
def test_a_row_whose_identity_changes_moves_partition_and_the_row_map_stays_one_table(pg_url, tmp_path):
    """``index_rows`` (locator -> token, what incremental runs read) is keyed by locator and
    deliberately not partitioned (docs/department-it.md, "Partitions"): a row whose identity
    changes leaves the partition of its old token for that of its new one, while its one
    row-map entry is updated in place."""
    from sqlalchemy import create_engine

    from hedui.adapters import open_adapter
    from hedui.adapters.synthetic import write_sql
    from hedui.common.clock import FixedClock
    from hedui.keys.oprf import ServerKey
    from hedui.node.verification.index import build_index

    key, clock = ServerKey.derive(bytes(range(32)), 1), FixedClock(AT)
    db = tmp_path / "dept.db"
    maps = write_sql(f"sqlite:///{db}", residents=120, seed=5, departments=["vehicles"], mapping_dir=tmp_path / "maps",
                     months=3)
    src = create_engine(f"sqlite:///{db}")
    with src.connect() as c:
        owners = {i: o for i, o in c.execute(text("SELECT id, owner_idno FROM vehicle ORDER BY id"))}
    eng = open_engine(pg_url)
    try:
        migrate.upgrade(eng, index_partitions=8)
        parts = _partitions(eng)
        # A vehicle whose new owner's token falls in another partition than the old owner's.
        vid, new = next((i, o) for i, old in owners.items() for o in owners.values()
                        if _partition_of(key.token(o), parts) != _partition_of(key.token(old), parts))
        old_tok, new_tok = key.token(owners[vid]), key.token(new)
        build_index(eng, open_adapter(maps["vehicles"]), key, 1, workers=0, clock=clock)
        loc = f"vehicle:id={vid}"

        def where() -> tuple[list[str], list[bytes]]:
            with eng.connect() as c:
                held = [p for (p,) in c.execute(text("SELECT tableoid::regclass::text FROM token_index "
                                                     "WHERE facts LIKE :l"), {"l": f'%"{loc}"%'})]
                mapped = [bytes(t) for (t,) in c.execute(text("SELECT token FROM index_rows WHERE locator = :l"), {"l": loc})]
            return held, mapped

        assert where() == ([_partition_of(old_tok, parts)], [old_tok])
        with src.begin() as c:   # sold: a new owner, a later watermark
            c.execute(text("UPDATE vehicle SET owner_idno = :o, updated_at = '2025-07-01 09:00:00.000000' WHERE id = :i"),
                      {"o": new, "i": vid})
        inc = build_index(eng, open_adapter(maps["vehicles"]), key, 1, workers=0, clock=clock)
        assert (inc.mode, inc.rows) == ("incremental", 1)
        assert where() == ([_partition_of(new_tok, parts)], [new_tok])
        assert facts_for_tokens(eng, 1, [new_tok])[new_tok]
        with eng.connect() as c:
            kinds = dict(c.execute(text("SELECT relname, relkind FROM pg_class WHERE relname IN ('token_index', 'index_rows')")).all())
        assert kinds == {"token_index": "p", "index_rows": "r"}
    finally:
        eng.dispose()
        src.dispose()
