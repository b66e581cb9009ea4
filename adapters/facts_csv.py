"""Canonical records from a CSV of facts: the simplest export a department can hand over
for detection when no mapping has been written yet (``hedui notices detect --records-csv``).

UTF-8 (a BOM is allowed) with the columns ``identity, fact, value, unit, on``; any further
column is a fact attribute (empty cells are left out). One fact per row. Errors name the
line and the column, never the identity.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal, InvalidOperation

from hedui.adapters.errors import SourceError
from hedui.adapters.records import Fact, Record

__all__ = ["read_facts_csv", "COLUMNS"]

COLUMNS = ("identity", "fact", "value", "unit", "on")


def read_facts_csv(text: str, *, name: str) -> list[Record]:
    """The records of a facts CSV ``text``; ``name`` (the file's name) prefixes every error
    and the locator of every record (``name:line N``)."""
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    for col in COLUMNS:
        if col not in header:
            raise SourceError(f"{name}: header: got {', '.join(header) or 'nothing'}, want columns {', '.join(COLUMNS)}")
    extra = [c for c in header if c not in COLUMNS]
    out: list[Record] = []
    for row in reader:
        line = reader.line_num
        where = f"{name} line {line}"
        if None in row:
            raise SourceError(f"{where}: got more cells than header columns, want {len(header)}")
        try:
            value = Decimal((row["value"] or "").strip())
        except InvalidOperation:
            raise SourceError(f"{where}: value: got {row['value'][:20]!r}, want a decimal") from None
        on_text = (row["on"] or "").strip()
        try:
            on = date.fromisoformat(on_text) if on_text else None
        except ValueError:
            raise SourceError(f"{where}: on: got {on_text[:20]!r}, want a date like 2025-05-31") from None
        identity = (row["identity"] or "").strip()
        if not identity:
            raise SourceError(f"{where}: identity: got nothing, want an identity number")
        attrs = {c: row[c].strip() for c in extra if row.get(c) and row[c].strip()}
        fact = Fact((row["fact"] or "").strip(), value, (row["unit"] or "").strip(), on, attrs)
        out.append(Record(identity=identity, locator=f"{name}:line {line}", facts=(fact,)))
    return out
