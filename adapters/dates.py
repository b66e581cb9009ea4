"""Declared date formats of a mapping (``date``, ``until``, ``source.data_date``).

DESIGN-12 "Mapping file": a column's format is declared, never guessed, because department
periods come as ``YYYYMM`` integers, ``YYYYMMDD`` text, datetime text and real DATE values:

=============  ==============================================================  ==================
format         accepted cells                                                   a value means
=============  ==============================================================  ==================
``date``       DATE/DATETIME values; text ``YYYY-MM-DD[ HH:MM:SS]`` (also the   that day
               forms older mappings relied on: ``YYYY/MM/DD``, ``YYYYMMDD``, …)
``datetime``   DATETIME/DATE values; text ``YYYY-MM-DD HH:MM:SS[.ffffff]``      that day
``YYYYMMDD``   an integer or text of 8 digits                                   that day
``YYYYMM``     an integer or text of 6 digits                                   a month
``YYYY-MM``    text ``YYYY-MM``                                                 a month
``YYYY``       an integer or text of 4 digits                                   a year
=============  ==============================================================  ==================

A month or a year is its FIRST day where the date says when a fact starts (``date``) and its
LAST day where it says until when something holds (``until``, ``data_date``: "data up to
2026-09" covers 30 September). Text is NFKC-folded first (full-width digits are digits) and
trimmed. Years outside 1900–2200 are refused (no department data is dated there; a 0 or a
sentinel such as 99991231 is a typing or export error).

:func:`parse` raises :class:`BadDate` whose ``got`` describes the cell without quoting more
than a short, digit-only value (never anything long enough to be an identity number).
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

__all__ = ["FORMATS", "DateFormat", "BadDate", "parse", "want"]

DateFormat = Literal["date", "datetime", "YYYYMMDD", "YYYYMM", "YYYY-MM", "YYYY"]
FORMATS: tuple[str, ...] = ("date", "datetime", "YYYYMMDD", "YYYYMM", "YYYY-MM", "YYYY")

_BLANK = " \t\r\n\u00a0\u3000\ufeff"
_MIN_YEAR, _MAX_YEAR = 1900, 2200
_ISO_DAY = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T].*)?$")
_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?$")
# What format "date" accepted before formats were declared (old mappings keep working).
_LEGACY = (
    (re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"), "day"),
    (re.compile(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})$"), "day"),
    (re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日$"), "day"),
    (re.compile(r"^(\d{4})(\d{2})(\d{2})$"), "day"),
    (re.compile(r"^(\d{4})-(\d{1,2})$"), "month"),
    (re.compile(r"^(\d{4})/(\d{1,2})$"), "month"),
    (re.compile(r"^(\d{4})年(\d{1,2})月$"), "month"),
)
_DIGITS = {"YYYYMMDD": 8, "YYYYMM": 6, "YYYY": 4}


class BadDate(Exception):
    """A cell that is not a date in the declared format; ``got`` describes it safely."""

    def __init__(self, got: str) -> None:
        super().__init__(got)
        self.got = got


def want(fmt: str) -> str:
    """How a message names what a format expects."""
    return {"date": "a date", "datetime": "a date and time YYYY-MM-DD HH:MM:SS"}.get(fmt, fmt)


def _got(text: str, fmt: str = "date") -> str:
    # Short digit/dash values are shown (a bad month is easiest fixed when seen); anything
    # longer or with other characters is only described: a cell may hold a person's number.
    if len(text) <= 10 and re.fullmatch(r"[0-9\-/.: ]+", text):
        return repr(text)
    return f"text that is not {want(fmt)}"


def _day(y: int, m: int, d: int | None, end: bool, shown: str) -> date:
    if not _MIN_YEAR <= y <= _MAX_YEAR:
        raise BadDate(f"{shown} (a year out of range)")
    if not 1 <= m <= 12:
        raise BadDate(f"{shown} (no month {m})")
    if d is None:
        d = calendar.monthrange(y, m)[1] if end else 1
    try:
        return date(y, m, d)
    except ValueError:
        raise BadDate(f"{shown} (no such day)") from None


def _text(v: str) -> str:
    if any("\udc80" <= ch <= "\udcff" for ch in v):
        raise BadDate("bytes that are not valid in the declared encoding")
    t = unicodedata.normalize("NFKC", v).strip(_BLANK)
    if len(t) > 40:
        raise BadDate(f"text of {len(t)} characters")
    return t


def _whole(v: Any) -> str:
    """An integer-like cell (int, integral Decimal or float) as its digits."""
    if isinstance(v, int):
        return str(v)
    d = Decimal(repr(v)) if isinstance(v, float) else v
    if not d.is_finite() or d != d.to_integral_value():
        raise BadDate("a fractional number")
    return str(int(d))


def parse(v: Any, fmt: str, *, end: bool = False) -> date:
    """The day a cell names in format ``fmt``; a month/year is its first day, or its last
    when ``end`` is true. Raises :class:`BadDate`."""
    if isinstance(v, bool):
        raise BadDate("a boolean")
    if fmt in ("date", "datetime"):
        if isinstance(v, datetime):
            return _checked(v.date())
        if isinstance(v, date):
            return _checked(v)
        if not isinstance(v, str):
            if fmt == "date" and isinstance(v, (int, Decimal)) and not isinstance(v, bool):
                # Old mappings read 8-digit integers (YYYYMMDD) as dates: keep that.
                digits = _whole(v)
                if len(digits) == 8:
                    return _day(int(digits[:4]), int(digits[4:6]), int(digits[6:]), end, repr(digits))
            raise BadDate(f"a {_kind(v)}")
        t = _text(v)
        m = (_DATETIME if fmt == "datetime" else _ISO_DAY).match(t)
        if m:
            return _day(int(m.group(1)), int(m.group(2)), int(m.group(3)), end, _got(t, fmt))
        if fmt == "date":
            for pattern, kind in _LEGACY:
                m = pattern.match(t)
                if m:
                    return _day(int(m.group(1)), int(m.group(2)), int(m.group(3)) if kind == "day" else None,
                                end, _got(t))
        raise BadDate(_got(t, fmt) if t else "an empty cell")
    if isinstance(v, (datetime, date)):
        raise BadDate("a date value")  # a DATE column declared as a period: say so, don't guess
    if isinstance(v, (int, Decimal, float)):
        digits = _whole(v)
    elif isinstance(v, str):
        digits = _text(v)
    else:
        raise BadDate(f"a {_kind(v)}")
    if fmt == "YYYY-MM":
        m = re.fullmatch(r"(\d{4})-(\d{2})", digits)
        if not m:
            raise BadDate(_got(digits, fmt) if digits else "an empty cell")
        return _day(int(m.group(1)), int(m.group(2)), None, end, _got(digits, fmt))
    n = _DIGITS.get(fmt)
    if n is None:
        raise BadDate(f"format {fmt!r}")  # pragma: no cover - the mapping model admits FORMATS only
    if len(digits) != n or not (digits.isascii() and digits.isdigit()):
        raise BadDate(_got(digits, fmt) if digits else "an empty cell")
    y = int(digits[:4])
    if fmt == "YYYY":
        if not _MIN_YEAR <= y <= _MAX_YEAR:
            raise BadDate(f"{_got(digits)} (a year out of range)")
        return date(y, 12, 31) if end else date(y, 1, 1)
    return _day(y, int(digits[4:6]), int(digits[6:8]) if n == 8 else None, end, _got(digits))


def _kind(v: Any) -> str:
    return {int: "whole number", float: "float", Decimal: "number"}.get(type(v), type(v).__name__)


def _checked(d: date) -> date:
    if not _MIN_YEAR <= d.year <= _MAX_YEAR:
        raise BadDate("a date out of range")
    return d
