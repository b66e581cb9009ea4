"""The index build's lean worker path (issue 16 item 4) gives exactly what the plain path
gives: a raw row converted in a worker from a plain ``ConvPlan`` (identity normalised once,
day cells parsed once per distinct text, facts JSON written directly) prepares to the same
locator, token and facts text as the adapter's own ``Record`` through ``ServerKey.token``
and the generic JSON encoder — and the worker does so without importing pydantic."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from datetime import date
from decimal import Decimal

import pytest

from hedui.adapters import open_adapter
from hedui.adapters._convert import BadCell, ConvPlan, RowConverter, _date
from hedui.adapters.records import Fact, RawRow
from hedui.adapters.synthetic import write_sql
from hedui.keys.oprf import ServerKey
from hedui.node.verification.index_work import _init, dump, fact_json, facts_text, prepare

KEY = ServerKey.derive(bytes(range(32)), 1)
ID = "11010519491231002X"   # the GB 11643 example number


def _facts() -> list[list[Fact]]:
    return [
        [],
        [Fact("wage", Decimal("1234.50"), "CNY", date(2026, 1, 31))],
        [Fact("vehicle", "A\"b\\c\u00e9\u4f4f\u5b85\n\t\x01", "code", None,
              {"z": "last", "a": "\u00a0first", "m": f"cert {ID} end"}, date(2026, 3, 1))],
        [Fact("h", Decimal(0), "m2", date(2025, 12, 1), {}, date(2025, 11, 30)),
         Fact("g", Decimal("-7.5"), "", None, {"k": "v"})],
        # Not what a RowConverter makes (no unit, a number attr): the generic encoder's text.
        [Fact("odd", Decimal(1), None, None, {"n": 3})],   # type: ignore[arg-type, dict-item]
    ]


@pytest.mark.parametrize("facts", _facts())
def test_facts_text_is_the_dump_of_fact_json(facts):
    assert facts_text(facts) == dump([fact_json(f) for f in facts])
    assert ID not in facts_text(facts)


def test_raw_rows_prepare_as_the_adapters_records_do(tmp_path):
    maps = write_sql(f"sqlite:///{tmp_path / 'dept.db'}", residents=300, seed=7, dirty=0.3,
                     departments=["tax", "social_security", "vehicles"], mapping_dir=tmp_path / "maps", months=3)
    checked = 0
    for path in maps.values():
        adapter = open_adapter(path)
        try:
            records = [item for item, _ in adapter.scan()]
            raw = [item for item, _ in adapter.raw_scan()]   # type: ignore[attr-defined]
            plan = adapter.raw_converter()                   # type: ignore[attr-defined]
        finally:
            adapter.close()
        assert isinstance(plan[0], ConvPlan)
        plain: dict = {}
        _init(KEY, None, plain)
        lean: dict = {}
        _init(KEY, pickle.loads(pickle.dumps(plan)), lean)
        # As the pool gets them (tuples) and as inline gets them (RawRow), twice over so the
        # second pass reads every day cell from the converter's memo.
        wire = [(r.locator, r.values) if isinstance(r, RawRow) else r for r in raw]
        got = prepare(wire + raw, lean)
        want = [p for p in prepare(records, plain)]
        assert [p for p in got if p[0] != "s"] == want + want
        checked += len(want)
        assert any(p[0] == "p" for p in want) and any(p[0] == "r" for p in want)
    assert checked > 300


def test_day_memo_keeps_answers_and_stays_bounded(tmp_path):
    maps = write_sql(f"sqlite:///{tmp_path / 'dept.db'}", residents=5, seed=1, departments=["tax"],
                     mapping_dir=tmp_path / "maps")
    adapter = open_adapter(maps["tax"])
    try:
        plan, refs = adapter.raw_converter()   # type: ignore[attr-defined]
    finally:
        adapter.close()
    conv = RowConverter(plan)
    fmt = next(f.date.format for f in plan.facts if f.date)
    good = "2026-01-31" if fmt in ("date", "datetime") else {"YYYYMM": "202601", "YYYY": "2026",
                                                              "YYYYMMDD": "20260131", "YYYY-MM": "2026-01"}[fmt]
    first = conv._day(good, fmt)
    for i in range(5000):   # more distinct texts than the memo holds, each asked twice
        with pytest.raises(BadCell) as direct:
            _date(f"x{i}", fmt)
        for _ in range(2):
            with pytest.raises(BadCell) as bad:
                conv._day(f"x{i}", fmt)
            assert bad.value.got == direct.value.got
    assert conv._day(good, fmt) == first
    assert len(conv._days) <= 4096


_CHILD = textwrap.dedent("""
    import pickle, sys
    from hedui.node.verification.index_work import _init, prepare
    key, raw, rows = pickle.load(sys.stdin.buffer)
    _init(key, raw)
    out = prepare(rows)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core", "sqlalchemy")
                   or m == "hedui.adapters.mapping")
    print(len(out), sum(1 for p in out if p[0] == "r"), heavy)
""")


def test_a_worker_converts_without_importing_pydantic(tmp_path):
    maps = write_sql(f"sqlite:///{tmp_path / 'dept.db'}", residents=50, seed=3, departments=["tax"],
                     mapping_dir=tmp_path / "maps")
    adapter = open_adapter(maps["tax"])
    try:
        rows = [(r.locator, r.values) for r, _ in adapter.raw_scan() if isinstance(r, RawRow)]   # type: ignore[attr-defined]
        raw = adapter.raw_converter()   # type: ignore[attr-defined]
    finally:
        adapter.close()
    done = subprocess.run([sys.executable, "-c", _CHILD], input=pickle.dumps((KEY, raw, rows)),
                          capture_output=True, check=True, cwd=tmp_path)
    n, records, heavy = done.stdout.decode().split(" ", 2)
    assert int(n) == len(rows) and int(records) > 0
    assert heavy.strip() == "[]"


def test_token_of_normalized_is_token():
    assert KEY.token_of_normalized(ID) == KEY.token(ID) == KEY.token(" 11010519491231002x ")
