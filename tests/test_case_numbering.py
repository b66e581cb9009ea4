"""Case references (issue 16): the next number comes from the newest ``HUB-`` reference (one
index seek), not from counting every case; the numbers are those counting gave, and a
reference that is taken is never handed out again. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select

from hedui.node.verification.cases import _next_ref
from hedui.node.verification.hub_tables import cases

_AT = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _add(engine, *refs: str) -> None:
    with engine.begin() as c:
        c.execute(insert(cases), [{"case_ref": r, "purpose": "dibao", "consent_digest": bytes(32), "operator": "op",
                                   "region": "370304", "status": "open", "created_at": _AT} for r in refs])


def _next(engine, year: int) -> str:
    with engine.begin() as c:
        return _next_ref(c, year)


def test_numbers_follow_the_newest_case_across_years(engine):
    assert _next(engine, 2026) == "HUB-2026-000001"
    _add(engine, "HUB-2026-000001", "HUB-2026-000002", "HUB-2026-000003")
    assert _next(engine, 2026) == "HUB-2026-000004"
    # A new year continues the numbering (as counting every case did).
    assert _next(engine, 2027) == "HUB-2027-000004"
    _add(engine, "HUB-2027-000004")
    assert _next(engine, 2027) == "HUB-2027-000005"


def test_a_taken_reference_is_skipped(engine):
    # The number after the newest one already taken (a clock set back to an earlier year, a
    # reference written by hand): counted and walked past, never handed out twice.
    _add(engine, "HUB-2026-000001", "HUB-2026-000003", "HUB-2026-000004", "HUB-2027-000002")
    ref = _next(engine, 2026)
    assert ref == "HUB-2026-000005"
    with engine.connect() as c:
        assert c.execute(select(cases.c.case_ref).where(cases.c.case_ref == ref)).first() is None


def test_past_a_million_cases(engine):
    # Seven digits do not sort after six: the newest by the index is then taken, and the
    # count decides, as before.
    _add(engine, "HUB-2026-999999", "HUB-2026-1000000")
    assert _next(engine, 2026) == "HUB-2026-1000001"
    assert _next(engine, 2026) != "HUB-2026-1000000"


def test_other_references_are_counted_when_there_is_no_hub_reference(engine):
    _add(engine, "IMPORT-1", "IMPORT-2")
    assert _next(engine, 2026) == "HUB-2026-000003"
