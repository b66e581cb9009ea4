"""Row filters of a mapping: ``source.where``, ``identity.skip_where`` and ``facts[].where``.

The syntax (DESIGN-12 "Mapping file", "Filters"), one table per filter, every entry must hold:

- ``col = "v"`` (or a whole number) equals;
- ``col = ["a", "b"]`` is one of;
- ``col = { eq, ne, in, not_in, ge, gt, le, lt, null = true|false }`` (several operators: all hold).

Columns are named as elsewhere in the mapping (``col`` of ``source.table``, ``table.col`` of a
joined table, a header of an export). Values compare as :class:`~decimal.Decimal` when both
sides parse as plain numbers (``"0400"`` equals ``400``, as a department's numeric code column
would), else as trimmed text (NFKC-folded, so full-width digits are digits). A NULL or blank
cell is null: it fails every comparison except ``null = true`` — SQL's three-valued logic, the
same rule the catalogue's attribute filters follow, so an empty cell never matches by accident.
Dates and datetimes compare as their ISO text (``"2026-10-31"``).

:func:`parse_where` raises :class:`~hedui.common.values.FieldValueError` worded ``key: got X,
want Y`` (the mapping loader reports it under ``source.where`` …); :func:`matches` evaluates.
Nothing here quotes a cell: messages describe the filter only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hedui.adapters import idnum
from hedui.common.values import FieldValueError, show

__all__ = ["Condition", "Matcher", "parse_where", "matches", "columns_of", "OPS"]

OPS = ("eq", "ne", "in", "not_in", "ge", "gt", "le", "lt", "null")
_WANT_OPS = "one of eq, ne, in, not_in, ge, gt, le, lt, null"
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_BLANK = " \t\r\n\u00a0\u3000\ufeff"
_MAX_VALUES = 1000      # a longer list is not a hand-written filter
_MAX_VALUE_TEXT = 200
_MEMO = 4096            # distinct cells remembered per condition (codes repeat; dates stop filling it)


@dataclass(frozen=True, slots=True)
class _Operand:
    text: str
    number: Decimal | None


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on one column: ``op`` one of :data:`OPS`; ``operands`` for every op but null."""

    column: str
    op: str
    operands: tuple[_Operand, ...] = ()
    null: bool = False


def _as_number(text: str) -> Decimal | None:
    if not _NUMBER.match(text):
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only plain numbers
        return None
    return d if d.is_finite() else None


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip(_BLANK)


def _operand(v: Any, key: str) -> _Operand:
    if isinstance(v, float):   # binary floats are not exact: a decimal is written as text
        raise FieldValueError(key, "a float", 'text or a whole number (a decimal as text, e.g. "1.5")')
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise FieldValueError(key, _describe(v), "text or a whole number")
    text = _fold(str(v))
    if len(text) > _MAX_VALUE_TEXT:
        raise FieldValueError(key, f"{len(text)} characters", f"at most {_MAX_VALUE_TEXT}")
    if idnum.contains(text) or idnum.long_digit_run(text):
        # A filter is configuration, published in logs and errors: never a person's number.
        raise FieldValueError(key, "a value shaped like an identity number", "a code or a short value")
    return _Operand(text, _as_number(text))


def _describe(v: Any) -> str:
    if isinstance(v, (str, bytes)) and (idnum.contains(str(v)) or idnum.long_digit_run(str(v))):
        return "a value shaped like an identity number"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, float):
        return "a float"
    return show(v)


def _list(v: Any, key: str) -> tuple[_Operand, ...]:
    if not isinstance(v, list):
        raise FieldValueError(key, _describe(v), "an array of values")
    if not v:
        raise FieldValueError(key, "an empty array", "at least one value")
    if len(v) > _MAX_VALUES:
        raise FieldValueError(key, f"an array of {len(v)}", f"at most {_MAX_VALUES} values")
    return tuple(_operand(x, f"{key}[{i}]") for i, x in enumerate(v))


def parse_where(where: Any) -> tuple[Condition, ...]:
    """The conditions of one ``where`` table (all must hold)."""
    if not isinstance(where, Mapping):
        raise FieldValueError("", _describe(where), 'a table such as { aae100 = "1" }')
    out: list[Condition] = []
    for column, spec in where.items():
        if not isinstance(column, str) or not column.strip() or len(column) > 200 or "=" in column:
            raise FieldValueError("", f"column {_describe(column)}", "a column name")
        k = column
        if isinstance(spec, list):
            out.append(Condition(column, "in", _list(spec, k)))
            continue
        if not isinstance(spec, Mapping):
            out.append(Condition(column, "eq", (_operand(spec, k),)))
            continue
        if not spec:
            raise FieldValueError(k, "an empty table", _WANT_OPS)
        for op, v in spec.items():
            if op not in OPS:
                raise FieldValueError(f"{k}.{op}" if isinstance(op, str) and len(op) < 30 else k,
                                      "an unknown operator", _WANT_OPS)
            if op == "null":
                if not isinstance(v, bool):
                    raise FieldValueError(f"{k}.null", _describe(v), "true or false")
                out.append(Condition(column, "null", null=v))
            elif op in ("in", "not_in"):
                out.append(Condition(column, op, _list(v, f"{k}.{op}")))
            else:
                out.append(Condition(column, op, (_operand(v, f"{k}.{op}"),)))
    return tuple(out)


def columns_of(where: Any) -> list[str]:
    """The columns a (valid) filter names, in order."""
    return list(where) if isinstance(where, Mapping) else []


def _cell(v: Any) -> tuple[str, Decimal | None] | None:
    """A cell as (text, number or None); None when the cell is null or blank."""
    if v is None:
        return None
    if isinstance(v, bool):
        return ("1" if v else "0"), Decimal(int(v))
    if isinstance(v, int):
        return str(v), Decimal(v)
    if isinstance(v, Decimal):
        return (format(v, "f"), v) if v.is_finite() else (str(v), None)
    if isinstance(v, float):
        d = Decimal(repr(v))
        return (repr(v), d) if d.is_finite() else (repr(v), None)
    if isinstance(v, datetime):
        return v.isoformat(sep=" "), None
    if isinstance(v, date):
        return v.isoformat(), None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return None
    text = _fold(str(v))
    if not text:
        return None
    return text, _as_number(text)


def _cmp(cell: tuple[str, Decimal | None], o: _Operand) -> int:
    if cell[1] is not None and o.number is not None:
        a: Any = cell[1]
        b: Any = o.number
    else:
        a, b = cell[0], o.text
    return (a > b) - (a < b)


def _holds(c: Condition, v: Any) -> bool:
    cell = _cell(v)
    if c.op == "null":
        return (cell is None) == c.null
    if cell is None:
        return False
    if c.op == "in":
        return any(_cmp(cell, o) == 0 for o in c.operands)
    if c.op == "not_in":
        return all(_cmp(cell, o) != 0 for o in c.operands)
    r = _cmp(cell, c.operands[0])
    return {"eq": r == 0, "ne": r != 0, "ge": r >= 0, "gt": r > 0, "le": r <= 0, "lt": r < 0}[c.op]


def matches(conditions: tuple[Condition, ...], get: Callable[[str], Any]) -> bool:
    """True if every condition holds for the row read through ``get(column)``."""
    return all(_holds(c, get(c.column)) for c in conditions)


class Matcher:
    """``matches`` for one filter, remembering each condition's verdict per distinct cell:
    department filters test code columns whose few values repeat on every row, so the
    folding and number parsing run once per value, not once per row (measured: most of a
    filtered scan's time went there)."""

    __slots__ = ("_conditions", "_memo")

    def __init__(self, conditions: tuple[Condition, ...]) -> None:
        self._conditions = conditions
        self._memo: list[dict[tuple[type, Any], bool]] = [{} for _ in conditions]

    def __bool__(self) -> bool:
        return bool(self._conditions)

    def __call__(self, get: Callable[[str], Any]) -> bool:
        for c, memo in zip(self._conditions, self._memo):
            v = get(c.column)
            # 1, True, 1.0 and Decimal(1) are equal keys but not equal cells, and neither are
            # 0.0 and -0.0 or Decimal("1.0") and Decimal("1") (their text differs).
            key = (type(v), repr(v) if isinstance(v, (float, Decimal)) else v)
            try:
                held = memo[key]
            except KeyError:
                held = _holds(c, v)
                if len(memo) < _MEMO:
                    memo[key] = held
            except TypeError:    # an unhashable cell (a memoryview): no memo
                held = _holds(c, v)
            if not held:
                return False
        return True
