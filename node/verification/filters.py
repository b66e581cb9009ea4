"""Attribute filters of catalogue fields (``where = { item = ["0400"] }``).

The syntax is the mapping language's row filter (DESIGN-12 "Mapping file", "Filters"), applied
here to the text attributes a fact keeps: ``attr = "v"`` equals, ``attr = ["a", "b"]`` is one
of, ``attr = { eq, ne, in, not_in, ge, gt, le, lt, null = true|false }``. Values compare as
decimals when both sides parse as numbers (``"0400"`` = ``"400"``, as a department's numeric
code column would), else as trimmed text. A missing or empty attribute is null; a null
attribute fails every comparison but ``null = true`` (SQL's three-valued logic, so a filter
never matches a row by accident of an empty cell).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["Condition", "parse_where", "matches"]

_OPS = ("eq", "ne", "in", "not_in", "ge", "gt", "le", "lt", "null")


@dataclass(frozen=True)
class Condition:
    """One attribute's test: ``op`` one of :data:`_OPS`; ``values`` its operands as text."""

    attr: str
    op: str
    values: tuple[str, ...] = ()
    null: bool = False


def _scalar(v: Any, key: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int, Decimal)):
        raise ValueError(f"{key}: got {type(v).__name__}, want text or a whole number")
    return str(v).strip()


def parse_where(where: Mapping[str, Any], *, key: str = "where") -> tuple[Condition, ...]:
    """The conditions of a ``where`` table (all must hold); ``ValueError`` worded
    ``key: got X, want Y`` for anything else."""
    if not isinstance(where, Mapping):
        raise ValueError(f"{key}: got {type(where).__name__}, want a table such as {{ item = [\"0400\"] }}")
    out: list[Condition] = []
    for attr, spec in where.items():
        k = f"{key}.{attr}"
        if isinstance(spec, list):
            if not spec:
                raise ValueError(f"{k}: got an empty list, want at least one value")
            out.append(Condition(attr, "in", tuple(_scalar(v, k) for v in spec)))
        elif isinstance(spec, Mapping):
            if not spec:
                raise ValueError(f"{k}: got an empty table, want one of {', '.join(_OPS)}")
            for op, v in spec.items():
                if op not in _OPS:
                    raise ValueError(f"{k}: got operator {str(op)[:20]!r}, want one of {', '.join(_OPS)}")
                if op == "null":
                    if not isinstance(v, bool):
                        raise ValueError(f"{k}.null: got {type(v).__name__}, want true or false")
                    out.append(Condition(attr, "null", null=v))
                elif op in ("in", "not_in"):
                    if not isinstance(v, list) or not v:
                        raise ValueError(f"{k}.{op}: got {type(v).__name__}, want a non-empty list")
                    out.append(Condition(attr, op, tuple(_scalar(x, f"{k}.{op}") for x in v)))
                else:
                    out.append(Condition(attr, op, (_scalar(v, f"{k}.{op}"),)))
        else:
            out.append(Condition(attr, "eq", (_scalar(spec, k),)))
    return tuple(out)


def _num(s: str) -> Decimal | None:
    try:
        d = Decimal(s)
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _cmp(a: str, b: str) -> int:
    da, db = _num(a), _num(b)
    if da is not None and db is not None:
        return (da > db) - (da < db)
    return (a > b) - (a < b)


def _holds(c: Condition, raw: str | None) -> bool:
    v = (raw or "").strip()
    if c.op == "null":
        return (v == "") == c.null
    if v == "":
        return False
    if c.op == "in":
        return any(_cmp(v, x) == 0 for x in c.values)
    if c.op == "not_in":
        return all(_cmp(v, x) != 0 for x in c.values)
    r = _cmp(v, c.values[0])
    return {"eq": r == 0, "ne": r != 0, "ge": r >= 0, "gt": r > 0, "le": r <= 0, "lt": r < 0}[c.op]


def matches(conds: tuple[Condition, ...], attrs: Mapping[str, str]) -> bool:
    return all(_holds(c, attrs.get(c.attr)) for c in conds)
