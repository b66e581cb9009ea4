"""A fresh full build whose workers return rows ready to write (index_work.prepare_fresh):
COPY text on PostgreSQL, row tuples on SQLite. The index it builds must be the one the
source describes — whatever characters a locator holds, wherever a repeated key falls
(same chunk, another chunk of the batch, another batch) — and a resumed run must not reuse
a part number."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

import hedui.node.verification.index_tables  # noqa: F401  (registers the tables on the shared metadata)
from hedui.adapters import open_adapter
from hedui.adapters.records import Fact, Record, RowProblem
from hedui.adapters.synthetic import residents as synthetic_residents
from hedui.adapters.synthetic import write_csv
from hedui.common.clock import FixedClock
from hedui.keys.oprf import ServerKey
from hedui.node.verification import index
from hedui.node.verification.index import build_index, list_problems
from hedui.node.verification.index_tables import index_rows, token_index
from hedui.node.verification.index_work import FreshSpec, _init, copy_text, prepare_fresh
from tests.test_index import _actual, _expected, _row_counts

KEY1 = ServerKey.derive(bytes(range(32)), 1)
CLOCK = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))


def _csv_source(tmp_path, keys: dict[int, str] | None = None, dup_of: dict[int, int] | None = None):
    """The synthetic tax export with ``编号`` as its key; ``keys`` renames the key of some
    lines (by data line number, from 1), ``dup_of`` makes a line repeat another line's key."""
    maps = write_csv(tmp_path / "csv", residents=60, seed=3, departments=["tax"])
    m = maps["tax"]
    m.write_text(m.read_text().replace('encoding = "utf-8"', 'encoding = "utf-8"\nprimary_key = "编号"'))
    path = tmp_path / "csv" / "tax.csv"
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    for line, key in (keys or {}).items():
        rows[line][0] = key
    for line, other in (dup_of or {}).items():
        rows[line][0] = rows[other][0]
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return m, len(rows) - 1


def test_copy_text_escapes_what_copy_reads_as_syntax():
    assert copy_text("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert copy_text("纳税人 plain") == "纳税人 plain"


def test_locators_with_copy_syntax_round_trip(engine, tmp_path):
    # Backslashes, tabs, newlines and non-ASCII text in keys: the COPY text must carry them as they are.
    keys = {1: "k\\1", 2: "k\t2", 3: "k\n3", 4: "键\\N", 5: "\\.", 6: "k\r6"}
    m, _ = _csv_source(tmp_path, keys=keys)
    report = build_index(engine, open_adapter(m), KEY1, 1, workers=0, batch_size=4, clock=CLOCK)
    assert report.problems == 0
    assert _actual(engine, 1) == _expected(m, KEY1)
    with engine.connect() as c:
        locs = set(c.execute(select(index_rows.c.locator)).scalars())
    assert {f"tax.csv:编号={k}" for k in keys.values()} <= locs
    assert _row_counts(engine, 1) == report.records


@pytest.mark.parametrize("where", ["same chunk", "next chunk", "next batch"])
def test_repeated_key_takes_the_record_out_wherever_it_falls(engine, tmp_path, where):
    # Batches of 20 rows in two chunks of 10 (two workers): line 3 repeated by line 5 (same
    # chunk), by line 15 (the batch's other chunk) or by line 25 (the next batch).
    line = {"same chunk": 5, "next chunk": 15, "next batch": 25}[where]
    m, n = _csv_source(tmp_path, dup_of={line: 3})
    report = build_index(engine, open_adapter(m), KEY1, 1, workers=2, batch_size=20, clock=CLOCK)
    want_facts, want_problems = _expected(m, KEY1)
    assert any("again" in r for r in want_problems.values())   # the repeat is a problem, its record gone
    assert _actual(engine, 1) == (want_facts, want_problems)
    assert {p.locator for p in list_problems(engine, 1)} == set(want_problems)
    assert report.rows == n and report.problems == 1
    assert _row_counts(engine, 1) == n - 2             # the repeated key's record and its repeat


class _Stop(Exception):
    pass


def test_parts_are_unique_per_chunk_and_continue_after_a_resume(engine, tmp_path):
    m, n = _csv_source(tmp_path)
    real = index._write_batch
    calls = {"n": 0}

    def stop_after_two(*a, **kw):
        if calls["n"] == 2:
            raise _Stop   # the build stops between two committed batches
        calls["n"] += 1
        return real(*a, **kw)

    index._write_batch = stop_after_two
    try:
        with pytest.raises(_Stop):
            build_index(engine, open_adapter(m), KEY1, 1, workers=2, batch_size=10, commit_rows=10, clock=CLOCK)
    finally:
        index._write_batch = real
    with engine.connect() as c:
        first = c.execute(select(func.max(token_index.c.part))).scalar()
    assert first is not None
    report = build_index(engine, open_adapter(m), KEY1, 1, workers=2, batch_size=10, commit_rows=10, clock=CLOCK)
    assert report.resumed
    with engine.connect() as c:
        parts = c.execute(select(token_index.c.part, func.count()).group_by(token_index.c.part)).all()
    assert min(p for p, _ in parts if p > first) == first + 1
    assert _actual(engine, 1) == _expected(m, KEY1)
    assert _row_counts(engine, 1) == n


def test_chunk_rows_for_sqlite_and_copy_text_agree():
    # The same chunk prepared both ways: the COPY text is the tuples, field by field.
    state: dict = {}
    _init(KEY1, None, state)
    ident = next(synthetic_residents(1, seed=4)).id_number
    items: list = [Record(ident, f"t:id={i}", (Fact("f", Decimal(i), "count"),)) for i in range(3)]
    items += [RowProblem("t:id=9", "bad\tcell"), Record(ident, "t:id=9", (Fact("f", Decimal(9), "count"),))]
    rows = prepare_fresh(items, FreshSpec(1, "src", 2, 7, None), state)
    text = prepare_fresh(items, FreshSpec(1, "src", 2, 7, "utf-8"), state)
    assert rows.records == 4 and rows.problem_rows == 1 and rows.problems == []   # the record came last
    assert isinstance(rows.tokens, list) and isinstance(text.tokens, bytes)
    assert len(rows.tokens) == 1 and rows.tokens[0][4] == 7 and rows.tokens[0][6] == 4
    want = "".join("\t".join("\\\\x" + v.hex() if isinstance(v, bytes) else copy_text(str(v)) for v in r) + "\n"
                   for r in rows.tokens)
    assert text.tokens.decode() == want
    assert isinstance(text.rows, bytes) and text.rows.decode().count("\n") == len(rows.rows) == 4


def test_integer_keys_shaped_like_an_identity_are_withheld(engine, tmp_path):
    # The SQL adapter checks every key but skips the scan for integers of fewer than 15
    # digits: an 18-digit integer key is still caught, a 14-digit one is a plain key.
    import sqlite3

    from hedui.adapters.synthetic import write_sql

    m = write_sql(f"sqlite:///{tmp_path / 'dept.db'}", residents=40, seed=2, departments=["tax"],
                  mapping_dir=tmp_path / "maps")["tax"]
    con = sqlite3.connect(tmp_path / "dept.db")
    with con:
        con.execute("UPDATE tax_annual SET id = 110105194912310021 WHERE id = 3")
        con.execute("UPDATE tax_annual SET id = 99999999999999 WHERE id = 4")
    con.close()
    report = build_index(engine, open_adapter(m), KEY1, 1, workers=2, batch_size=8, clock=CLOCK)
    problems = {p.locator: p.reason for p in list_problems(engine, 1)}
    assert "tax_annual:id=<withheld>" in problems and "identity-shaped" in problems["tax_annual:id=<withheld>"]
    with engine.connect() as c:
        locs = set(c.execute(select(index_rows.c.locator)).scalars())
    assert "tax_annual:id=99999999999999" in locs
    assert not [loc for loc in locs | set(problems) if "110105194912310021" in loc]
    assert _actual(engine, 1) == _expected(m, KEY1)
    assert report.problems == 1


@pytest.mark.parametrize("commit_rows", [None, 25])
def test_fresh_batches_commit_together_up_to_commit_rows(engine, tmp_path, commit_rows):
    # ~60 rows in batches of 10: with commit_rows=25 the first two batches commit alone
    # (fewer than 25 rows in with them), then three at a time; by default (20,000 rows on SQLite,
    # one batch on PostgreSQL) one per batch here. The index and the counts are the same
    # whichever way the rows were grouped.
    m, n = _csv_source(tmp_path)
    real = index._write_batch
    seen: list[int] = []

    def counting(engine_, run, prepared, position):
        seen.append(sum(c.used for c in prepared))
        return real(engine_, run, prepared, position)

    index._write_batch = counting
    try:
        report = build_index(engine, open_adapter(m), KEY1, 1, workers=2, batch_size=10, commit_rows=commit_rows,
                             clock=CLOCK)
    finally:
        index._write_batch = real

    def groups(size: int, total: int = n) -> list[int]:
        return [size] * (total // size) + ([total % size] if total % size else [])

    if commit_rows == 25:   # one batch at a time while fewer than 25 rows would be in, then three at a time
        assert seen == [10, 10, *groups(30, n - 20)]
    else:                   # fewer rows than SQLITE_FRESH_COMMIT_ROWS: one batch per transaction
        assert seen == groups(10)
    assert report.rows == n and report.records == n
    assert _actual(engine, 1) == _expected(m, KEY1)
    assert _row_counts(engine, 1) == n
