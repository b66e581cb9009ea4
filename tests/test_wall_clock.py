"""No product code reads the wall clock except :class:`hedui.common.clock.SystemClock`
(DESIGN.md "Time", issue 10): every component is handed a Clock, so tests and ``--as-of``
fix the date. Durations (``time.monotonic``, ``time.perf_counter``) are not the date and are
allowed.

The check walks each module's syntax tree (not its text), so a docstring that *mentions*
``date.today()`` is not a finding and a call spelt ``dt.datetime.now(dt.UTC)`` is."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("common", "keys", "adapters", "node")
#: The one module allowed to read the wall clock.
ALLOWED = {Path("common/clock.py")}

_DATE_CALLS = {"today", "now", "utcnow"}
_TIME_CALLS = {"time", "time_ns", "localtime", "gmtime", "ctime"}


def _name(node: ast.expr) -> str:
    """``a.b.c`` for an attribute chain, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def wall_clock_reads(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """``(line, call)`` for every wall-clock read in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if not name:
            continue
        head, _, last = name.rpartition(".")
        owner = head.rpartition(".")[2]
        if last in _DATE_CALLS and owner in ("date", "datetime"):
            out.append((node.lineno, name))
        elif last in _TIME_CALLS and owner == "time":
            out.append((node.lineno, name))
    return out


def _product_files() -> list[Path]:
    files = []
    for top in PRODUCT:
        files += [p for p in (ROOT / top).rglob("*.py") if "_pb2" not in p.name]
    return sorted(files)


@pytest.mark.parametrize("snippet", [
    "import datetime\nx = datetime.date.today()",
    "from datetime import datetime, UTC\nx = datetime.now(UTC)",
    "import datetime as dt\nx = dt.datetime.now(dt.UTC)",
    "from datetime import datetime\nx = datetime.utcnow()",
    "import time\nx = time.time()",
    "from datetime import date\nx = date.today().isoformat()",
])
def test_detector_finds_wall_clock_reads(snippet):
    assert wall_clock_reads(snippet), snippet


@pytest.mark.parametrize("snippet", [
    '"""call date.today() and datetime.now() nowhere"""',
    "import time\nx = time.monotonic() - time.perf_counter()",
    "x = clock.now()\ny = clock.today()\nz = self._clock()",
    "from datetime import date\nx = date.fromisoformat('2026-12-01')",
])
def test_detector_ignores_clock_use_and_durations(snippet):
    assert wall_clock_reads(snippet) == []


def test_no_product_module_reads_the_wall_clock():
    files = _product_files()
    assert len(files) > 100  # the walk found the product
    found = []
    for path in files:
        rel = path.relative_to(ROOT)
        if rel in ALLOWED:
            continue
        for line, call in wall_clock_reads(path.read_text(encoding="utf-8"), str(rel)):
            found.append(f"{rel}:{line}: {call}()")
    assert not found, "read the time from a Clock (hedui.common.clock), not the wall clock:\n" + "\n".join(found)


def test_the_clock_module_is_where_the_wall_clock_is_read():
    src = (ROOT / "common/clock.py").read_text(encoding="utf-8")
    assert [call for _, call in wall_clock_reads(src)] == ["dt.datetime.now"]
