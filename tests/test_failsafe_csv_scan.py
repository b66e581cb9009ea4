"""Fault suite, department exports (issue 13): whatever bytes a CSV export holds — stray or
unclosed quotes, cut-off last rows, blank lines — a scan accounts for every line as a record,
a named problem or a named skipped row, never raises anything but a one-line SourceError, and
reports a truncated export (the file ending inside a row or inside an open quote)."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedui.adapters import open_adapter
from hedui.adapters.errors import SourceError
from hedui.adapters.mapping import parse_mapping
from hedui.adapters.records import Record, RowProblem
from hedui.adapters.synthetic import resident

IDS = [resident(n, 3).id_number for n in range(1, 6)]
CELL = st.one_of(st.sampled_from(IDS), st.sampled_from(["", "12.5", "x", '"', '"a', 'b"', "a,b", "org", "2026-01-02"]),
                 st.text(alphabet=' ,"\n\r\tab1', max_size=6))


def _adapter(tmp_path: Path, text: str):
    path = tmp_path / "e.csv"
    path.write_bytes(text.encode("utf-8"))
    m = {"name": "e", "source": {"kind": "csv", "path": str(path), "encoding": "utf-8"},
         "identity": {"column": "idno", "skip_where": {"kind": "org"}},
         "facts": [{"name": "v", "column": "v", "type": "money", "unit": "yuan", "optional": True}]}
    a = open_adapter(parse_mapping(m, base_dir=tmp_path))
    a.check()
    return a


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELL, min_size=0, max_size=4), max_size=10), cut=st.integers(0, 40),
       end=st.sampled_from(["\n", "\r\n", ""]))
def test_every_line_is_accounted_for_and_truncation_is_reported(tmp_path, rows, cut, end):
    body = "\n".join(",".join(r) for r in rows)
    text = "idno,v,kind\n" + body[: max(0, len(body) - cut)] + end
    a = _adapter(tmp_path, text)
    try:
        items = list(a.scan())
    except SourceError:
        return  # a clear, one-line refusal (e.g. a NUL byte): never a traceback
    # csv counts "\r\n", "\r" and "\n" each as one line end.
    physical = len(re.findall(r"\r\n|\r|\n", text)) + (0 if text.endswith(("\n", "\r")) else 1)
    lines = [n for _, n in items] + [int(loc.rsplit(" ", 1)[1]) for loc, _ in a.skipped_rows]
    # Each line is named at most once, and only lines of the file are named.
    assert len(lines) == len(set(lines)) and all(2 <= n <= physical for n in lines)
    assert a.skipped == len(a.skipped_rows)
    assert all(isinstance(i, (Record, RowProblem)) for i, _ in items)
    if a.truncated is not None:
        # What ends the file is a named problem, never a record.
        assert isinstance(items[-1][0], RowProblem) and items[-1][1] == max(lines)


def test_open_quote_at_the_end_names_every_line_from_the_quote(tmp_path):
    good = [f"{i},1.5,p" for i in IDS]
    text = "idno,v,kind\n" + "\n".join(good[:2]) + '\n' + IDS[2] + ',"1.5,p\n' + "\n".join(good[3:]) + "\n"
    a = _adapter(tmp_path, text)
    items = list(a.scan())
    assert [type(i).__name__ for i, _ in items] == ["Record", "Record", "RowProblem", "RowProblem", "RowProblem"]
    assert [n for _, n in items] == [2, 3, 4, 5, 6] and a.truncated == "e.csv:line 4"


def test_quoted_newlines_that_close_are_one_good_row(tmp_path):
    text = "idno,v,kind\n" + IDS[0] + ',1.5,"multi\nline"\n' + IDS[1] + ",2,p\n"
    a = _adapter(tmp_path, text)
    items = list(a.scan())
    assert [type(i).__name__ for i, _ in items] == ["Record", "Record"] and a.truncated is None
