"""No raw identity number anywhere a run leaves traces, outside the places DESIGN.md allows:
the departments' own source data, the hub's case member records, and sealed payloads.

Runs the whole demo (every flow) with logging at DEBUG, then scans every file it wrote,
every table of every node store (row by row, every column), and every log line."""

from __future__ import annotations

import json
import logging
import sqlite3

from hedui.adapters import idnum
from hedui.node.testbed.demo import run_demo

# Where raw numbers are allowed (DESIGN.md "Parties and what each may learn").
ALLOWED_FILES = {"dept.db", "dept.db-wal", "dept.db-shm"}
ALLOWED_COLUMNS = {("case_members", "identity")}
SOURCE_SUFFIXES = {".csv", ".xlsx"}  # department exports (source data)


def _hits(text: str) -> list[str]:
    """The lines holding something identity-shaped, masked (the report never shows a number)."""
    return [idnum.scrub(line)[:120] for line in text.splitlines() if idnum.contains(line)]


def test_demo_leaves_no_raw_identity_numbers(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "demo"
    summary = run_demo(root, say=lambda *a, **k: None, residents=300)
    assert any(s["name"] == "case run" for s in summary["steps"])
    problems: list[str] = []
    scanned_tables = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name in ALLOWED_FILES or path.suffix in SOURCE_SUFFIXES:
            continue
        if path.suffix == ".db":
            con = sqlite3.connect(path)
            try:
                for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                    cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
                    scanned_tables += 1
                    for row in con.execute(f'SELECT * FROM "{table}"'):
                        for col, val in zip(cols, row):
                            if (table, col) in ALLOWED_COLUMNS or val is None:
                                continue
                            text = val.decode("utf-8", "replace") if isinstance(val, (bytes, bytearray)) else str(val)
                            if _hits(text):
                                problems.append(f"{path.relative_to(root)}:{table}.{col}: {_hits(text)}")
            finally:
                con.close()
        elif path.suffix not in (".db-wal", ".db-shm"):
            text = path.read_bytes().decode("utf-8", "replace")
            if _hits(text):
                problems.append(f"{path.relative_to(root)}: {_hits(text)}")
    assert scanned_tables > 20
    # The demo's case is audited as opened exactly once, by the domain call (not the entry point).
    hub_db = root / "members" / "hub" / "node.db"
    con = sqlite3.connect(hub_db)
    try:
        refs = [r for (r,) in con.execute("SELECT case_ref FROM cases")]
        opened = [json.loads(e)["fields"]["case_ref"] for (e,) in con.execute("SELECT entry FROM audit_entries WHERE kind = 'case.opened'")]
    finally:
        con.close()
    assert refs and sorted(opened) == sorted(refs)
    for rec in caplog.records:
        msg = rec.getMessage() + (rec.exc_text or "")
        if _hits(msg):
            problems.append(f"log {rec.name}: {_hits(msg)}")
    assert not problems, "\n".join(problems[:50])


def test_scanner_is_not_blind(tmp_path):
    # The pattern finds a planted number in the same way the scan above reads stores.
    from hedui.adapters.synthetic import resident

    ident = resident(1, 7).id_number
    db = tmp_path / "x.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (v BLOB)")
    con.execute("INSERT INTO t VALUES (?)", (f'{{"note":"{ident}"}}'.encode(),))
    con.commit()
    (val,) = con.execute("SELECT v FROM t").fetchone()
    assert _hits(val.decode())
