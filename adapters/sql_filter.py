"""``source.where`` pushed into the SQL statement, only where that cannot change the result.

The filter rule (adapters/filters.py, DESIGN-12 "Filters") compares numbers as numbers and
everything else as NFKC-folded, trimmed text, and treats blank text as null. SQL can do
exactly that only for whole-number columns compared with whole numbers, so only those
conditions (and ``null = false``, which SQL's ``IS NOT NULL`` implies) are pushed down, as
a *prefilter*: every row it drops fails the filter in Python too, and Python still evaluates
every condition on the rows that remain. Text codes (``aae100 = "1"`` on a VARCHAR, where
``"01"`` must equal ``"1"``) are evaluated in Python only.

SQLite stores whatever it is given whatever the declared type, so there the comparison applies
to values stored as integers only, and values stored as anything else are left to Python.
Values are bound parameters; no SQL text is ever built from a mapping's values.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Integer, and_, func, or_

from hedui.adapters.filters import Condition

__all__ = ["prefilter"]

_BIG = 2**63   # SQLite binds 64-bit integers only


def prefilter(conditions: tuple[Condition, ...], cols: dict[str, Column], dialect: str) -> list[Any]:
    """SQL conditions that every row passing ``conditions`` also passes (possibly none)."""
    out = []
    for c in conditions:
        e = _one(c, cols[c.column], dialect)
        if e is not None:
            out.append(e)
    return out


def _one(c: Condition, col: Column, dialect: str) -> Any:
    if c.op == "null":
        return col.isnot(None) if not c.null else None
    if not isinstance(col.type, Integer):
        return None
    nums = [o.number for o in c.operands]
    if any(n is None or n != n.to_integral_value() or abs(n) >= _BIG for n in nums):
        return None   # a text operand, or a fraction: the rule compares text, leave it to Python
    vals = [int(n) for n in nums if n is not None]
    cmp = {"eq": lambda: col == vals[0], "ne": lambda: col != vals[0], "in": lambda: col.in_(vals),
           "not_in": lambda: col.notin_(vals), "ge": lambda: col >= vals[0], "gt": lambda: col > vals[0],
           "le": lambda: col <= vals[0], "lt": lambda: col < vals[0]}[c.op]()
    if dialect == "sqlite":
        kind = func.typeof(col)
        return or_(and_(kind == "integer", cmp), kind.in_(("real", "text", "blob")))
    # Two-valued (never NULL), so NOT(prefilter) counts exactly the rows it drops.
    return and_(col.isnot(None), cmp)
