"""Migration 0009x: a store indexed before generations (one row per (epoch, token) holding
every source's facts) keeps answering the same after the upgrade, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from alembic import command
from sqlalchemy import text

from hedui.node.store import migrate
from hedui.node.verification.index import read_live

_T = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def _fact(v: str) -> dict:
    return {"name": "wage", "value": v, "unit": "CNY", "on": "2026-10-01", "attrs": {}}


def test_old_index_is_split_by_source_and_stays_live(store_url):
    from hedui.node.store.db import open_engine

    eng = open_engine(store_url)
    try:
        with eng.begin() as conn:
            command.upgrade(migrate._config(conn), "0008t")
        a, b = b"\x01" * 64, b"\x02" * 64
        with eng.begin() as c:
            c.execute(text("INSERT INTO token_index (epoch, token, facts, row_count, updated_at) VALUES (1, :t, :f, :n, :u)"),
                      [{"t": a, "f": json.dumps({"s1": {"t:id=1": [_fact("10.00")]}, "s2": {"u:id=2": [_fact("5.00")]}}),
                        "n": 2, "u": _T},
                       {"t": b, "f": json.dumps({"s1": {"t:id=3": [_fact("7.00")]}}), "n": 1, "u": _T}])
            for src, run in (("s1", 3), ("s2", 1)):
                c.execute(text("INSERT INTO index_progress (epoch, source, run, mode, status, position, fingerprint, rows_read, "
                               "started_at, updated_at, completed_at, data_date) VALUES (1, :s, :r, 'full', 'done', NULL, 'x', 0, "
                               ":u, :u, :u, :d)"), {"s": src, "r": run, "u": _T, "d": date(2026, 10, 31)})
        migrate.upgrade(eng)
        live = read_live(eng, 1, [a, b, b"\x03" * 64], ["s1", "s2"])
        assert {t: [str(f.value) for f in fs] for t, fs in live.facts.items()} == {a: ["10.00", "5.00"], b: ["7.00"]}
        assert live.data_dates == {"s1": date(2026, 10, 31), "s2": date(2026, 10, 31)}
        with eng.connect() as c:
            assert sorted(c.execute(text("SELECT source, gen FROM token_index ORDER BY source, token")).all()) == \
                [("s1", 3), ("s1", 3), ("s2", 1)]
    finally:
        eng.dispose()
