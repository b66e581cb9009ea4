"""The token index: build, lookup, incremental runs, resume after kill -9, rotation, and no
raw identity number anywhere in the node store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select, text

import hedui.node.verification.index_tables  # noqa: F401  (registers the tables on the shared metadata)
from hedui.adapters import idnum, open_adapter
from hedui.adapters.records import Record
from hedui.adapters.synthetic import write_csv, write_sql
from hedui.common.clock import FixedClock
from hedui.keys.oprf import ServerKey
from hedui.node.errors import ConfigError, InvalidArgument, Reason, Unavailable
from hedui.node.verification.index import all_tokens, build_index, facts_for_tokens, list_problems, live_epochs, retire_epoch
from hedui.node.verification.index_tables import index_progress, index_rows, token_index

SEED = bytes(range(32))
KEY1 = ServerKey.derive(SEED, 1)
CLOCK = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))  # a fixed instant: builds are stamped with it
N = 150


@pytest.fixture
def dept(tmp_path) -> dict[str, Path]:
    """A department database with messy identities, and its mappings."""
    return write_sql(f"sqlite:///{tmp_path / 'dept.db'}", residents=N, seed=5, dirty=0.3,
                     departments=["tax", "social_security", "vehicles"], mapping_dir=tmp_path / "maps", months=3)


def _expected(mapping: Path, key: ServerKey) -> tuple[dict[bytes, list], dict[str, str]]:
    """What the index must hold, computed straight from the adapter (for a locator reported
    twice, the later report wins)."""
    last = {item.locator: item for item in open_adapter(mapping).records()}
    by_token: dict[bytes, list] = defaultdict(list)
    problems: dict[str, str] = {}
    for item in last.values():
        if isinstance(item, Record):
            by_token[key.token(item.identity)].append((item.locator, list(item.facts)))
        else:
            problems[item.locator] = item.reason
    # Rows in source-key order (``id=9`` before ``id=10``): ``latest`` breaks ties of a day by it.
    def key(loc: str) -> list:
        return [int(p) if p.isdigit() else p for p in re.findall(r"\d+|\D+", loc)]

    return {t: [f for _, fs in sorted(rows, key=lambda r: key(r[0])) for f in fs] for t, rows in by_token.items()}, problems


def _actual(engine, epoch: int, source: str | None = None) -> tuple[dict[bytes, list], dict[str, str]]:
    with engine.connect() as c:
        tokens = [bytes(t) for (t,) in c.execute(select(token_index.c.token).where(token_index.c.epoch == epoch))]
    facts = facts_for_tokens(engine, epoch, tokens)
    return facts, {p.locator: p.reason for p in list_problems(engine, epoch, source)}


def _row_counts(engine, epoch: int) -> int:
    with engine.connect() as c:
        return sum(n for (n,) in c.execute(select(token_index.c.row_count).where(token_index.c.epoch == epoch)))


def test_build_matches_source(engine, dept):
    report = build_index(engine, open_adapter(dept["social_security"]), KEY1, 1, workers=0, batch_size=97, clock=CLOCK)
    want_facts, want_problems = _expected(dept["social_security"], KEY1)
    got_facts, got_problems = _actual(engine, 1)
    assert report.mode == "full" and not report.resumed
    assert report.records + report.problems == report.rows > 0
    assert report.problems == len(want_problems) > 0          # dirty=0.3 makes some invalid ids
    assert got_facts == want_facts
    assert got_problems == want_problems
    assert report.tokens == len(want_facts)
    assert _row_counts(engine, 1) == report.records
    assert live_epochs(engine) == [1]


def test_build_with_process_pool(engine, dept):
    build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=2, batch_size=64, clock=CLOCK)
    assert _actual(engine, 1)[0] == _expected(dept["tax"], KEY1)[0]


def test_sources_share_tokens(engine, dept):
    for name in ("tax", "vehicles"):
        build_index(engine, open_adapter(dept[name]), KEY1, 1, workers=0, clock=CLOCK)
    tax, _ = _expected(dept["tax"], KEY1)
    veh, _ = _expected(dept["vehicles"], KEY1)
    got, _ = _actual(engine, 1)
    both = set(tax) & set(veh)
    assert both, "synthetic data should give some residents both income and a vehicle"
    for t in both:
        assert got[t] == tax[t] + veh[t]      # sources in name order: tax < vehicles
    assert set(got) == set(tax) | set(veh)


def test_all_tokens_pages_in_byte_order(engine, dept):
    build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    want = sorted(_expected(dept["tax"], KEY1)[0])
    assert list(all_tokens(engine, 1, page=7)) == want
    assert list(all_tokens(engine, 1)) == want
    assert list(all_tokens(engine, 9)) == []


def test_lookup_of_unknown_token(engine, dept):
    build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    assert facts_for_tokens(engine, 1, [b"\x00" * 64]) == {}
    with pytest.raises(Unavailable) as e:        # no build of epoch 2: refuse, never "no record"
        facts_for_tokens(engine, 2, [])
    assert e.value.reason == Reason.INDEX_NOT_READY
    with pytest.raises(Unavailable):             # a source the node names but never built
        facts_for_tokens(engine, 1, [b"\x00" * 64], sources=["tax", "vehicles"])


def _scan_store(engine) -> list[str]:
    """Every table, every column, every value of the store, for anything ID-shaped."""
    hits = []
    with engine.connect() as c:
        for name in inspect(c).get_table_names():
            for row in c.execute(text(f'SELECT * FROM "{name}"')):
                for v in row:
                    if isinstance(v, (bytes, memoryview)):
                        v = bytes(v)
                    elif v is not None:
                        v = str(v)
                    if v is not None and idnum.contains(v):
                        hits.append(name)
    if engine.dialect.name == "sqlite":
        db = Path(engine.url.database)
        for f in (db, Path(f"{db}-wal")):
            if f.exists() and idnum.contains(f.read_bytes()):
                hits.append(f.name)
    return hits


def test_no_raw_identity_in_store(engine, dept, tmp_path):
    for name in ("tax", "social_security", "vehicles"):
        build_index(engine, open_adapter(dept[name]), KEY1, 1, workers=0, clock=CLOCK)
    assert list_problems(engine, 1)
    assert _scan_store(engine) == []
    # Positive control: the same scan finds the numbers in the department's own database.
    assert _scan_store(create_engine(f"sqlite:///{tmp_path / 'dept.db'}"))


def _touch(db: Path, sql: str, **params) -> None:
    eng = create_engine(f"sqlite:///{db}")
    with eng.begin() as c:
        c.execute(text(sql), params)
    eng.dispose()


LATER = "2025-07-01 09:00:00.000000"


def test_incremental_run_reads_only_changes(engine, dept, tmp_path):
    db = tmp_path / "dept.db"
    adapter = open_adapter(dept["vehicles"])
    first = build_index(engine, adapter, KEY1, 1, workers=0, batch_size=50, clock=CLOCK)
    assert first.mode == "full"
    again = build_index(engine, open_adapter(dept["vehicles"]), KEY1, 1, workers=0, clock=CLOCK)
    assert (again.mode, again.rows) == ("incremental", 0)

    eng = create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        ids = [r for (r,) in c.execute(text("SELECT owner_idno FROM vehicle WHERE length(owner_idno) = 18 "
                                            "AND owner_idno GLOB '[0-9]*' ORDER BY id"))]
    eng.dispose()
    new_owner = ids[-1]
    _touch(db, "UPDATE vehicle SET purchase_price_fen = 1, updated_at = :t WHERE id = 1", t=LATER)
    _touch(db, "UPDATE vehicle SET owner_idno = :o, updated_at = :t WHERE id = 2", o=new_owner, t=LATER)   # sold
    _touch(db, "UPDATE vehicle SET owner_idno = 'garbage', updated_at = :t WHERE id = 3", t=LATER)
    _touch(db, "INSERT INTO vehicle VALUES (100000, :o, '京A00001', '小型轿车', 12345600, '2025-06-30', :t)",
           o=ids[0], t=LATER)
    second = build_index(engine, open_adapter(dept["vehicles"]), KEY1, 1, workers=0, clock=CLOCK)
    assert (second.mode, second.rows, second.records, second.problems) == ("incremental", 4, 3, 1)
    want = _expected(dept["vehicles"], KEY1)
    assert _actual(engine, 1) == want
    assert _row_counts(engine, 1) == sum(1 for _ in open_adapter(dept["vehicles"]).records()) - len(want[1])
    assert want[1]["vehicle:id=3"] == "identity: got 7 characters, want 15 or 18"


def test_full_run_removes_deleted_rows(engine, dept, tmp_path):
    db = tmp_path / "dept.db"
    build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    _touch(db, "DELETE FROM tax_annual WHERE id IN (1, 2, 3)")
    inc = build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    assert inc.rows == 0                 # a watermark cannot see deletions…
    full = build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, full=True, clock=CLOCK)
    assert (full.mode, full.removed) == ("full", 3)      # …a full re-read does
    assert _actual(engine, 1) == _expected(dept["tax"], KEY1)


def test_problem_rows_clear_when_fixed(engine, dept, tmp_path):
    db = tmp_path / "dept.db"
    build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    bad = list_problems(engine, 1)
    assert bad
    loc = bad[0].locator
    pk = int(loc.split("=")[1])
    eng = create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        good = c.execute(text("SELECT taxpayer_idno FROM tax_annual WHERE id != :i AND length(taxpayer_idno) = 18 "
                              "AND taxpayer_idno GLOB '[0-9]*'"), {"i": pk}).first()[0]
    eng.dispose()
    _touch(db, "UPDATE tax_annual SET taxpayer_idno = :g, updated_at = :t WHERE id = :i", g=good, t=LATER, i=pk)
    build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    assert loc not in {p.locator for p in list_problems(engine, 1)}
    assert _actual(engine, 1) == _expected(dept["tax"], KEY1)


def test_mapping_change_triggers_full_run(engine, dept):
    build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    text_ = dept["tax"].read_text().replace('name = "annual_taxable_income"', 'name = "taxable_income"')
    dept["tax"].write_text(text_)
    report = build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    assert report.mode == "full" and report.removed == 0
    got, _ = _actual(engine, 1)
    assert {f.name for fs in got.values() for f in fs} == {"taxable_income"}


def test_csv_export_replaced(engine, tmp_path):
    maps = write_csv(tmp_path / "csv", residents=60, seed=3, departments=["tax"], encoding="gbk")
    build_index(engine, open_adapter(maps["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    same = build_index(engine, open_adapter(maps["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    assert (same.mode, same.rows) == ("incremental", 0)
    path = tmp_path / "csv" / "tax.csv"
    lines = path.read_bytes().split(b"\r\n")
    path.write_bytes(b"\r\n".join(lines[:1] + lines[4:]))       # three rows left the export
    report = build_index(engine, open_adapter(maps["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    assert report.mode == "full" and report.removed == 3
    assert _actual(engine, 1) == _expected(maps["tax"], KEY1)


def test_rotation_keeps_old_epoch_live(engine, dept):
    key2 = ServerKey.derive(SEED, 2)
    build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    build_index(engine, open_adapter(dept["tax"]), key2, 2, workers=0, clock=CLOCK)
    assert live_epochs(engine) == [1, 2]
    assert live_epochs(engine, sources=["tax"]) == [1, 2]
    assert live_epochs(engine, sources=["tax", "vehicles"]) == []     # vehicles not built yet
    one, _ = _actual(engine, 1)
    two, _ = _actual(engine, 2)
    assert not set(one) & set(two)                              # new key, new tokens
    assert sorted(map(repr, one.values())) == sorted(map(repr, two.values()))  # same facts
    # An epoch whose build has not completed is not live.
    with engine.begin() as c:
        c.execute(index_progress.insert().values(epoch=3, source="tax", run=1, mode="full", status="running",
                                                 position=None, fingerprint="x", rows_read=0,
                                                 started_at=datetime(2026, 11, 2, 1, 0), updated_at=datetime(2026, 11, 2, 1, 0)))
    assert live_epochs(engine) == [1, 2]
    assert retire_epoch(engine, 1) == len(one)
    assert live_epochs(engine) == [2]
    with pytest.raises(Unavailable):
        _actual(engine, 1)
    with engine.connect() as c:
        assert c.execute(select(token_index).where(token_index.c.epoch == 1)).first() is None


def test_bad_arguments(engine, dept):
    with pytest.raises(InvalidArgument, match="epoch: got 2, want the server key's epoch 1"):
        build_index(engine, open_adapter(dept["tax"]), KEY1, 2, clock=CLOCK)
    broken = dept["tax"].read_text().replace('column = "taxable_income"', 'column = "income"')
    dept["tax"].write_text(broken)
    with pytest.raises(ConfigError, match=r"facts\[0\]\.column: got column 'income'"):
        build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, clock=CLOCK)
    with engine.connect() as c:      # nothing was written before the check failed
        assert c.execute(select(index_progress)).first() is None


# --- kill -9 and resume ------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import sys, time
    from hedui.adapters import open_adapter
    from hedui.keys.oprf import ServerKey
    from hedui.node.verification.index import build_index
    from hedui.node.store.db import open_engine
    from hedui.common.clock import FixedClock
    from datetime import datetime, UTC
    CLOCK = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))

    def main():
        store, mapping = sys.argv[1], sys.argv[2]
        adapter = open_adapter(mapping)
        scan = adapter.scan
        def slow_scan(since=None):          # throttled so that the parent can kill it midway
            for item in scan(since):
                time.sleep(0.004)
                yield item
        adapter.scan = slow_scan
        # Three batches per transaction (a fresh build on SQLite groups its commits).
        build_index(open_engine(store), adapter, ServerKey.derive(bytes(range(32)), 1), 1, workers=1, batch_size=40,
                    commit_rows=120, clock=CLOCK)

    if __name__ == "__main__":   # the token workers are spawned and re-import this file
        main()
""")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; it waits only for init to reap it


@pytest.mark.slow
def test_resume_after_kill_9(engine, store_url, tmp_path):
    mapping = write_sql(f"sqlite:///{tmp_path / 'ss.db'}", residents=300, seed=6, dirty=0.3,
                        departments=["social_security"], mapping_dir=tmp_path / "maps")["social_security"]
    total = sum(1 for _ in open_adapter(mapping).records())
    assert total > 1000
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    child = subprocess.Popen([sys.executable, str(script), store_url, str(mapping)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with engine.connect() as c:
                done = c.execute(select(index_progress.c.rows_read)).scalar()
            if done and done >= 200:
                break
            assert child.poll() is None, "the build ended before it could be killed"
            time.sleep(0.02)
        workers = _children(child.pid)
        assert workers, "the build runs its token worker in a process of its own"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # No orphaned worker: the token worker (and multiprocessing's resource tracker) end
        # with the build that was killed (a poll with a deadline, not a timing assertion).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and [w for w in workers if _alive(w)]:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)], "orphaned worker processes after kill -9"
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    with engine.connect() as c:
        status, read = c.execute(select(index_progress.c.status, index_progress.c.rows_read)).one()
    assert status == "running" and 200 <= read < total

    report = build_index(engine, open_adapter(mapping), KEY1, 1, workers=0, clock=CLOCK)
    assert report.resumed and report.mode == "full"
    assert read + report.rows == total                       # nothing read twice, nothing skipped
    want = _expected(mapping, KEY1)
    assert _actual(engine, 1) == want
    assert _row_counts(engine, 1) == total - len(want[1])    # no duplicated rows
    with engine.connect() as c:
        assert c.execute(select(index_rows.c.locator)).all().__len__() == total - len(want[1])
    assert _scan_store(engine) == []


def test_duplicate_export_keys_are_problems(engine, tmp_path):
    maps = write_csv(tmp_path / "csv", residents=80, seed=3, departments=["tax"])
    m = maps["tax"]
    m.write_text(m.read_text().replace('encoding = "utf-8"', 'encoding = "utf-8"\nprimary_key = "编号"'))
    path = tmp_path / "csv" / "tax.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    dup = lines[1]                                     # row with key 1 appears again at the end
    path.write_text("\n".join(lines + [dup]) + "\n", encoding="utf-8")
    build_index(engine, open_adapter(m), KEY1, 1, workers=0, batch_size=7, clock=CLOCK)
    problems = {p.locator: p.reason for p in list_problems(engine, 1)}
    assert problems["tax.csv:编号=1"] == "source.primary_key: got the key of line 2 again, want unique keys"
    got, _ = _actual(engine, 1)
    assert _row_counts(engine, 1) == len(lines) - 2    # header and the duplicated key left out
    assert got == _expected(m, KEY1)[0]


def test_progress_bar_advances(engine, dept):
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(file=StringIO())) as progress:
        report = build_index(engine, open_adapter(dept["tax"]), KEY1, 1, workers=0, batch_size=50, progress=progress, clock=CLOCK)
        (task,) = progress.tasks
        assert task.completed == report.rows > 50


def test_until_text_codes_attrs_and_the_data_date_are_kept(engine, tmp_path):
    """Issue 12: facts that hold over a span keep ``until``, codes keep their text (a leading
    zero, Chinese words), attributes stay text, and the build records the source's data date."""
    from datetime import date
    from decimal import Decimal

    from hedui.adapters.records import Fact
    from hedui.node.verification.index import data_dates

    facts = (Fact("right", Decimal("88.50"), "m2", date(2020, 1, 2), {"use": "住宅"}, until=date(2026, 5, 14)),
             Fact("item", "0400", "code", date(2026, 1, 1), {"voucher": "1" * 20}),
             Fact("status", "死亡", "code", date(2026, 5, 12)))

    class Source:
        source, fingerprint, kind = "spans", "fp1", "test"

        def check(self) -> None:
            pass

        def data_date(self) -> date:
            return date(2026, 10, 31)

        def scan(self, since=None):
            yield Record(ident, "spans:id=1", facts), {"pk": 1}

        def close(self) -> None:
            pass

    ident = idnum.synthetic(__import__("random").Random(3))
    build_index(engine, Source(), KEY1, 1, workers=0, clock=CLOCK)    # type: ignore[arg-type]
    got = facts_for_tokens(engine, 1, [KEY1.token(ident)])[KEY1.token(ident)]
    assert list(got) == list(facts)
    assert data_dates(engine, 1) == {"spans": date(2026, 10, 31)}


def test_data_date_comes_from_the_data_then_the_mapping_then_the_config_then_the_build_day():
    from datetime import date
    from types import SimpleNamespace

    from hedui.node.verification.index import source_data_date

    class Read:
        def data_date(self):
            return date(2026, 10, 31)

    class Unread:   # an adapter whose mapping names no data date
        mapping = SimpleNamespace(source=SimpleNamespace(data_date=None))

        def data_date(self):
            return None

    class Declared:
        mapping = SimpleNamespace(source=SimpleNamespace(data_date=date(2026, 9, 30)))

    assert source_data_date(Read(), CLOCK, date(2020, 1, 1)) == date(2026, 10, 31)          # type: ignore[arg-type]
    assert source_data_date(Declared(), CLOCK, date(2020, 1, 1)) == date(2026, 9, 30)       # type: ignore[arg-type]
    assert source_data_date(Unread(), CLOCK, date(2020, 1, 1)) == date(2020, 1, 1)          # type: ignore[arg-type]
    assert source_data_date(Unread(), CLOCK) == CLOCK.today() == date(2026, 11, 30)         # type: ignore[arg-type]
