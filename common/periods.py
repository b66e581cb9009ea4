"""Reference periods: one type, one syntax, one arithmetic (DESIGN.md "Time").

A verification is made for a *reference month*; income is counted over whole calendar months
before it, assets and statuses as at its end (domain.md "Periods, members and income").
Discovery schedules speak of last week (Monday–Sunday), last month and this year. Every such
period is one of four kinds, printed one way and parsed back the same way:

============  ============================  ==========================================
kind          text                          days it covers (inclusive)
============  ============================  ==========================================
month         ``2025-09``                   1 September – 30 September 2025
year          ``2025``                      1 January – 31 December 2025
week          ``2025-W36``                  ISO 8601 week: Monday 1 – Sunday 7 September 2025
range         ``2025-01-15..2025-03-31``    the two dates and every day between
============  ============================  ==========================================

All of them are local dates in the federation zone; turning an instant into one is the
clock's job (:mod:`hedui.common.clock`). Errors read ``field: got X, want Y``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

__all__ = [
    "PeriodError",
    "Month",
    "Year",
    "Week",
    "DateRange",
    "Period",
    "parse_period",
    "parse_month",
    "months_before",
    "year_to_date",
    "previous_year",
    "week_before",
    "end_of",
]

_EARLIEST, _LATEST = 1900, 2199  # any period outside these years is a typo, not data


class PeriodError(ValueError):
    """A period that cannot be parsed or does not exist; ``field: got X, want Y``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _show(text: str) -> str:
    return repr(text[:32])


def _year_ok(y: int, field: str, text: str) -> None:
    if not _EARLIEST <= y <= _LATEST:
        raise PeriodError(f"{field}: got {_show(text)}, want a year between {_EARLIEST} and {_LATEST}")


@dataclass(frozen=True, order=True)
class DateRange:
    """Every day from ``start`` to ``end``, both included."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise PeriodError(f"period: got {self.start}..{self.end}, want a start on or before the end")

    @property
    def first_day(self) -> dt.date:
        return self.start

    @property
    def last_day(self) -> dt.date:
        return self.end

    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __contains__(self, d: object) -> bool:
        return isinstance(d, dt.date) and self.start <= d <= self.end

    def covers(self, other: Period) -> bool:
        """True when every day of ``other`` is in this range."""
        r = as_range(other)
        return self.start <= r.start and r.end <= self.end

    def overlaps(self, other: Period) -> bool:
        r = as_range(other)
        return self.start <= r.end and r.start <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month, ``2025-09``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        _year_ok(self.year, "month", str(self))
        if not 1 <= self.month <= 12:
            raise PeriodError(f"month: got {self.year:04d}-{self.month:02d}, want a month 01..12")

    @classmethod
    def of(cls, d: dt.date) -> Month:
        return cls(d.year, d.month)

    @property
    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    @property
    def last_day(self) -> dt.date:
        return dt.date(self.year, self.month, calendar.monthrange(self.year, self.month)[1])

    def plus(self, n: int) -> Month:
        """The month ``n`` months later (earlier for negative ``n``)."""
        y, m = divmod(self.year * 12 + (self.month - 1) + n, 12)
        return Month(y, m + 1)

    def range(self) -> DateRange:
        return DateRange(self.first_day, self.last_day)

    def __contains__(self, d: object) -> bool:
        return isinstance(d, dt.date) and (d.year, d.month) == (self.year, self.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True, order=True)
class Year:
    """A calendar (and, in China, tax) year, ``2025``."""

    year: int

    def __post_init__(self) -> None:
        _year_ok(self.year, "year", str(self.year))

    @property
    def first_day(self) -> dt.date:
        return dt.date(self.year, 1, 1)

    @property
    def last_day(self) -> dt.date:
        return dt.date(self.year, 12, 31)

    def range(self) -> DateRange:
        return DateRange(self.first_day, self.last_day)

    def __contains__(self, d: object) -> bool:
        return isinstance(d, dt.date) and d.year == self.year

    def __str__(self) -> str:
        return f"{self.year:04d}"


@dataclass(frozen=True, order=True)
class Week:
    """An ISO 8601 week, Monday to Sunday, ``2025-W36``."""

    monday: dt.date

    def __post_init__(self) -> None:
        if self.monday.weekday() != 0:
            raise PeriodError(f"week: got {self.monday.isoformat()} ({self.monday:%A}), want a Monday")
        _year_ok(self.monday.year, "week", self.monday.isoformat())

    @classmethod
    def of(cls, d: dt.date) -> Week:
        return cls(d - dt.timedelta(days=d.weekday()))

    @property
    def first_day(self) -> dt.date:
        return self.monday

    @property
    def last_day(self) -> dt.date:
        return self.monday + dt.timedelta(days=6)

    def range(self) -> DateRange:
        return DateRange(self.first_day, self.last_day)

    def __contains__(self, d: object) -> bool:
        return isinstance(d, dt.date) and self.monday <= d <= self.last_day

    def __str__(self) -> str:
        y, w, _ = self.monday.isocalendar()
        return f"{y:04d}-W{w:02d}"


Period = Month | Year | Week | DateRange

_MONTH = re.compile(r"^(\d{4})-(\d{2})$", re.ASCII)
_YEAR = re.compile(r"^(\d{4})$", re.ASCII)
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$", re.ASCII)
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$", re.ASCII)
_WANT = "a month 2025-09, a year 2025, a week 2025-W36 or a range 2025-01-01..2025-03-31"


def parse_period(text: str, *, field: str = "period") -> Period:
    """Parses the one text form of any period (see the module table)."""
    if not isinstance(text, str):
        raise PeriodError(f"{field}: got a {type(text).__name__}, want {_WANT}")
    t = text.strip()
    if m := _MONTH.match(t):
        y, mo = int(m.group(1)), int(m.group(2))
        _year_ok(y, field, t)
        if not 1 <= mo <= 12:
            raise PeriodError(f"{field}: got {_show(t)}, want a month 01..12")
        return Month(y, mo)
    if m := _YEAR.match(t):
        y = int(m.group(1))
        _year_ok(y, field, t)
        return Year(y)
    if m := _WEEK.match(t):
        y, w = int(m.group(1)), int(m.group(2))
        _year_ok(y, field, t)
        try:
            monday = dt.date.fromisocalendar(y, w, 1)
        except ValueError:
            raise PeriodError(f"{field}: got {_show(t)}, want a week that exists in {y} (W01..W{dt.date(y, 12, 28).isocalendar()[1]:02d})") from None
        return Week(monday)
    if m := _RANGE.match(t):
        try:
            a, b = dt.date.fromisoformat(m.group(1)), dt.date.fromisoformat(m.group(2))
        except ValueError:
            raise PeriodError(f"{field}: got {_show(t)}, want real dates") from None
        _year_ok(a.year, field, t)
        _year_ok(b.year, field, t)
        if b < a:
            raise PeriodError(f"{field}: got {_show(t)}, want a start on or before the end")
        return DateRange(a, b)
    raise PeriodError(f"{field}: got {_show(t)}, want {_WANT}")


def parse_month(text: str, *, field: str = "month") -> Month:
    """Parses ``YYYY-MM`` only (a reference month)."""
    p = parse_period(text, field=field) if isinstance(text, str) and _MONTH.match(text.strip()) else None
    if not isinstance(p, Month):
        raise PeriodError(f"{field}: got {_show(str(text))}, want a month such as 2025-09")
    return p


def as_range(p: Period) -> DateRange:
    return p if isinstance(p, DateRange) else p.range()


# --- windows relative to a reference month (what field catalogues and rules speak of) ---------


def months_before(ref: Month, n: int) -> DateRange:
    """The ``n`` whole calendar months before ``ref`` (``ref`` itself excluded):
    for ``2026-03`` and 12, 1 March 2025 – 28 February 2026."""
    if not 1 <= n <= 600:
        raise PeriodError(f"months_before: got {n}, want 1..600")
    return DateRange(ref.plus(-n).first_day, ref.plus(-1).last_day)


def year_to_date(ref: Month) -> DateRange:
    """1 January of ``ref``'s year to the end of ``ref``."""
    return DateRange(dt.date(ref.year, 1, 1), ref.last_day)


def previous_year(ref: Month) -> DateRange:
    """The calendar (tax) year before ``ref``'s year."""
    return Year(ref.year - 1).range()


def week_before(monday: dt.date) -> DateRange:
    """The Monday–Sunday week before the week that starts on ``monday``."""
    Week(monday)  # refuses a day that is not a Monday
    return DateRange(monday - dt.timedelta(days=7), monday - dt.timedelta(days=1))


def end_of(ref: Month) -> dt.date:
    """The day a status "as at the reference month" describes: its last day."""
    return ref.last_day
