"""Cell values to canonical facts: the one conversion every adapter shares.

Each source row becomes exactly one :class:`Record` or one :class:`RowProblem`. Problem
reasons name the field and what was wrong (``wage: got text that is not a number, want
money in fen``) and never contain the cell's content, so an identity number typed into a
wrong column cannot leak through a report.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from hedui.adapters import dates, idnum
from hedui.adapters.errors import InvalidIdentity
from hedui.adapters.filters import Condition, Matcher
from hedui.adapters.idnum import normalize
from hedui.adapters.records import Fact, Record, RowProblem

if TYPE_CHECKING:   # not at run time: the pydantic models stay out of the build's workers
    from hedui.adapters.mapping import Mapping

__all__ = ["RowConverter", "ConvPlan", "FactPlan", "BadCell", "is_blank"]

_FEN = Decimal("0.01")
_UNIT_FACTOR = {"fen": Decimal("0.01"), "yuan": Decimal(1), "wan_yuan": Decimal(10000)}
_UNIT_WORD = {"fen": "money in fen", "yuan": "money in yuan", "wan_yuan": "money in 10,000 yuan"}
_MAX_ABS = Decimal(10) ** 15          # larger amounts or quantities are not plausible data
_MAX_TEXT = 64                        # a number or date cell longer than this is not one
_MAX_ATTR = 256
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_BLANK = " \t\r\n\u00a0\u3000\ufeff"
_SURROGATE = re.compile("[\udc80-\udcff]")
_TRUE = {"1", "true", "t", "yes", "y", "是", "有"}
_FALSE = {"0", "false", "f", "no", "n", "否", "无"}
_DAY = timedelta(days=1)


class BadCell(Exception):
    """A cell that cannot be converted; ``got`` describes it without quoting it."""

    def __init__(self, got: str) -> None:
        super().__init__(got)
        self.got = got


def is_blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip(_BLANK))


def _has_surrogates(s: str) -> bool:
    # Undecodable bytes arrive as lone surrogates (errors="surrogateescape"); ASCII has none.
    return not s.isascii() and _SURROGATE.search(s) is not None


def _text(v: str) -> str:
    if _has_surrogates(v):
        raise BadCell("bytes that are not valid in the declared encoding")
    t = unicodedata.normalize("NFKC", v).strip(_BLANK)
    if len(t) > _MAX_TEXT:
        raise BadCell(f"{len(t)} characters")
    return t


def _number(v: Any) -> Decimal:
    if isinstance(v, bool):
        raise BadCell("a boolean")
    if isinstance(v, int):
        d = Decimal(v)
    elif isinstance(v, Decimal):
        d = v
    elif isinstance(v, float):
        d = Decimal(repr(v))
    elif isinstance(v, str):
        t = _text(v).replace(" ", "")
        if _GROUPED.match(t):
            t = t.replace(",", "")
        if not _NUMBER.match(t):
            raise BadCell("text that is not a number")
        d = Decimal(t)
    else:
        raise BadCell(f"a {type(v).__name__}")
    if not d.is_finite():
        raise BadCell("a value that is not finite")
    if abs(d) >= _MAX_ABS:
        raise BadCell("a number out of range")
    return d


def _integral(d: Decimal) -> int:
    if d != d.to_integral_value():
        raise BadCell("a fractional number")
    return int(d)


def _canonical_decimal(d: Decimal) -> Decimal:
    # One representation per value: no exponent, no trailing zeros ("12.50" -> "12.5").
    if d == 0:
        return Decimal(0)
    return Decimal(format(d.normalize(), "f"))


def _date(v: Any, fmt: str = "date", *, end: bool = False) -> date:
    try:
        return dates.parse(v, fmt, end=end)
    except dates.BadDate as bad:
        raise BadCell(bad.got) from None


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, Decimal)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        t = _text(v).lower()
        if t in _TRUE:
            return True
        if t in _FALSE:
            return False
        raise BadCell("text that is not yes/no")
    raise BadCell(f"a {type(v).__name__}")


def _code(v: Any) -> str:
    """A code cell as text: ``"0400"`` stays ``"0400"``, 110 becomes ``"110"``, ``住宅`` stays."""
    if isinstance(v, bool):
        raise BadCell("a boolean")
    if isinstance(v, int):
        text = str(v)
    elif isinstance(v, Decimal):
        if not v.is_finite():
            raise BadCell("a value that is not finite")
        text = format(_canonical_decimal(v), "f")
    elif isinstance(v, float):
        d = Decimal(repr(v))
        if not d.is_finite():
            raise BadCell("a value that is not finite")
        text = format(_canonical_decimal(d), "f")
    elif isinstance(v, str):
        if _has_surrogates(v):
            raise BadCell("bytes that are not valid in the declared encoding")
        text = (v if v.isascii() else unicodedata.normalize("NFKC", v)).strip(_BLANK)
    else:
        raise BadCell(f"a {type(v).__name__}")
    if len(text) > _MAX_ATTR:
        raise BadCell(f"{len(text)} characters")
    return idnum.mask_embedded(text)


def _value(spec: FactPlan, v: Any) -> Decimal | str:
    if spec.type == "bool":
        return Decimal(int(_bool(v)))
    if spec.type == "code":
        return _code(v)
    d = _number(v)
    if spec.type == "money":
        if spec.unit == "fen":
            _integral(d)
        return (d * _UNIT_FACTOR[spec.unit or "yuan"]).quantize(_FEN, rounding=ROUND_HALF_UP)
    if spec.type == "integer":
        return Decimal(_integral(d))
    return _canonical_decimal(d)


def _want(spec: FactPlan) -> str:
    if spec.type == "money":
        return _UNIT_WORD[spec.unit or "yuan"]
    return {"decimal": "a decimal number", "integer": "a whole number",
            "code": "a code", "bool": "yes/no (1/0)"}[spec.type]


def _identity(v: Any) -> str:
    if is_blank(v):
        raise InvalidIdentity("identity: got an empty cell, want an identity number")
    if isinstance(v, bool) or isinstance(v, float):
        raise InvalidIdentity(f"identity: got a {type(v).__name__} cell, want text "
                              "(spreadsheet numbers lose the last digits)")
    if isinstance(v, (int, Decimal)):
        v = str(v)
    if not isinstance(v, str):
        raise InvalidIdentity(f"identity: got a {type(v).__name__}, want text")
    if _has_surrogates(v):
        raise InvalidIdentity("identity: got bytes that are not valid in the declared encoding, want text")
    return normalize(v)


def _attr(kind: str, v: Any) -> str:
    if kind == "date":
        return _date(v).isoformat()
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return format(_canonical_decimal(v), "f") if v.is_finite() else str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, bytes):
        raise BadCell("binary data")
    text = str(v)
    if _has_surrogates(text):
        raise BadCell("bytes that are not valid in the declared encoding")
    text = text.strip(_BLANK)
    if len(text) > _MAX_ATTR:
        raise BadCell(f"{len(text)} characters")
    # Only identity.column is an identity number: a long number here is data (a settlement
    # id, an organisation code), kept — with any identity number inside it masked.
    return idnum.mask_embedded(text)


@dataclass(frozen=True, slots=True)
class DayPlan:
    column: str
    format: str
    inclusive: bool = False


@dataclass(frozen=True, slots=True)
class FactPlan:
    """What :class:`RowConverter` needs of one ``FactSpec``, as plain values."""

    name: str
    column: str
    type: str
    unit: str | None
    out_unit: str
    optional: bool
    date: DayPlan | None
    until: DayPlan | None
    attrs: tuple[tuple[str, str, str], ...]   # (name, column, type)
    where: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class ConvPlan:
    """A mapping as the converter reads it, in plain values (issue 16 item 4): what the
    index build hands its worker processes, which then import neither pydantic nor the
    mapping models to unpickle it."""

    identity: str
    where: tuple[Condition, ...]
    skip: tuple[Condition, ...]
    facts: tuple[FactPlan, ...]

    @classmethod
    def of(cls, mapping: Mapping) -> ConvPlan:
        where, skip, fact_where = mapping.conditions()
        facts = tuple(
            FactPlan(f.name, f.column, f.type, f.unit, f.out_unit, f.optional,
                     DayPlan(f.date.column, f.date.format) if f.date else None,
                     DayPlan(f.until.column, f.until.format, f.until.inclusive) if f.until else None,
                     tuple((n, a.column, a.type) for n, a in f.attrs.items()), w)
            for f, w in zip(mapping.facts, fact_where))
        return cls(mapping.identity.column, where, skip, facts)


_DAY_MEMO = 4096   # distinct date cells remembered per converter (bounded memory)


class RowConverter:
    """Turns one row, read through ``get(column reference)``, into a Record or RowProblem,
    or ``None`` when the mapping skips the row (``source.where`` does not hold, or
    ``identity.skip_where`` does): such rows are counted by the adapter, not reported."""

    def __init__(self, mapping: Mapping | ConvPlan) -> None:
        plan = mapping if isinstance(mapping, ConvPlan) else ConvPlan.of(mapping)
        self._identity = plan.identity
        self._where = Matcher(plan.where) if plan.where else None
        self._skip = Matcher(plan.skip) if plan.skip else None
        self._facts = [(spec, Matcher(spec.where) if spec.where else None) for spec in plan.facts]
        # Day and period cells repeat (a pay month, a filing day): each distinct text is
        # parsed once (issue 16 item 4), its day or its BadCell wording remembered.
        self._days: dict[tuple[str, str, bool], date | str] = {}

    def _day(self, v: Any, fmt: str, end: bool = False) -> date:
        if type(v) is not str:
            return _date(v, fmt, end=end)
        key = (v, fmt, end)
        got = self._days.get(key)
        if got is None:
            try:
                got = _date(v, fmt, end=end)
            except BadCell as bad:
                got = bad.got
            if len(self._days) >= _DAY_MEMO:
                self._days.clear()
            self._days[key] = got
        if type(got) is str:
            raise BadCell(got)
        return got   # type: ignore[return-value]

    def skips(self, get: Callable[[str], Any]) -> bool:
        return self.skip_reason(get) is not None

    def skip_reason(self, get: Callable[[str], Any]) -> str | None:
        """Which filter skips the row (``source.where`` or ``identity.skip_where``), or None:
        a run names skipped rows apart from problem rows (issue 13)."""
        if self._where is not None and not self._where(get):
            return "source.where"
        if self._skip is not None and self._skip(get):
            return "identity.skip_where"
        return None

    def convert(self, locator: str, get: Callable[[str], Any]) -> Record | RowProblem | None:
        if self.skips(get):
            return None
        try:
            identity = _identity(get(self._identity))
        except InvalidIdentity as err:
            return RowProblem(locator, err.message)
        facts: list[Fact] = []
        for spec, only in self._facts:
            if only is not None and not only(get):
                continue
            raw = get(spec.column)
            if is_blank(raw):
                if spec.optional:
                    continue
                return RowProblem(locator, f"{spec.name}: got an empty cell, want {_want(spec)}")
            try:
                value = _value(spec, raw)
            except BadCell as bad:
                return RowProblem(locator, f"{spec.name}: got {bad.got}, want {_want(spec)}")
            if spec.type == "code" and not value:
                if spec.optional:
                    continue
                return RowProblem(locator, f"{spec.name}: got an empty cell, want {_want(spec)}")
            on = until = None
            if spec.date:
                d = get(spec.date.column)
                if is_blank(d):
                    return RowProblem(locator, f"{spec.name}.date: got an empty cell, want {dates.want(spec.date.format)}")
                try:
                    on = self._day(d, spec.date.format)
                except BadCell as bad:
                    return RowProblem(locator, f"{spec.name}.date: got {bad.got}, want {dates.want(spec.date.format)}")
            if spec.until:
                u = get(spec.until.column)
                if not is_blank(u):   # empty: still holding
                    try:
                        until = self._day(u, spec.until.format, True)
                    except BadCell as bad:
                        return RowProblem(locator, f"{spec.name}.until: got {bad.got}, "
                                                   f"want {dates.want(spec.until.format)}")
                    # Fact.until is the last day the fact holds (records.py): an exclusive
                    # end (a cancellation day) holds until the day before.
                    if not spec.until.inclusive:
                        until = until - _DAY
            attrs: dict[str, str] = {}
            for name, column, kind in spec.attrs:
                av = get(column)
                if is_blank(av):
                    continue
                try:
                    attrs[name] = self._day(av, "date").isoformat() if kind == "date" else _attr(kind, av)
                except BadCell as bad:
                    want = "a date" if kind == "date" else "text"
                    return RowProblem(locator, f"{spec.name}.{name}: got {bad.got}, want {want}")
            facts.append(Fact(spec.name, value, spec.out_unit, on, attrs, until))
        return Record(identity, locator, tuple(facts))
