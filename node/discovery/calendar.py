"""Working days for discovery deadlines: China's official holidays and make-up workdays.

The official calendar comes from ``chinese_calendar`` (State Council announcements, one
release per year). An operator override file wins over it, and covers years the package
has no data for; for such a year the calendar falls back to Monday–Friday plus the overrides
and says so once per year with a :class:`CalendarFallbackWarning` (``warnings`` and
``logging``).

Override file (TOML)::

    years = [2027]           # optional: years this file covers in full (docs/time.md)
    [[days]]
    date = 2027-02-08        # a TOML date, or the string "2027-02-08"
    workday = false
    note = "Spring Festival" # optional

Listing a year in ``years`` is the operator's statement that the file holds *every* holiday
and make-up working day of that year (transcribed from the State Council's notice): the year
is then covered by the override, not guessed. Each deadline says what it rests on
(:meth:`WorkCalendar.basis_between`): ``official``, ``override`` or ``weekdays-only``.

Counting rule: :meth:`WorkCalendar.add_workdays` returns the day on which the *n*-th working
day after ``d`` falls (``d`` itself is not counted), so an event on Friday with a 3-working-day
deadline is due on the following Wednesday in an ordinary week.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any

import chinese_calendar
from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from hedui.common.clock import DEFAULT_ZONE, zone
from hedui.common.toml import load_toml
from hedui.node.errors import ConfigError, InvalidArgument

__all__ = ["WorkCalendar", "CalendarFallbackWarning", "CHINA_TZ", "local_date", "BASES", "YearCoverage"]

log = logging.getLogger(__name__)

#: The default federation zone (China has had no daylight saving since 1991). Product code
#: takes the zone from its clock (``Runtime.clock.zone``, the directory's ``time_zone``).
CHINA_TZ: tzinfo = zone(DEFAULT_ZONE)

_MAX_WORKDAYS = 3660  # ten years of working days: a bound against runaway loops


def local_date(moment: datetime, tz: tzinfo = CHINA_TZ) -> date:
    """The local date in ``tz`` (the federation zone) of an aware ``datetime`` (naive values
    are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).date()


#: What a working-day deadline rests on, best first (docs/time.md "Working days").
OFFICIAL, OVERRIDE, WEEKDAYS_ONLY = "official", "override", "weekdays-only"
BASES = (OFFICIAL, OVERRIDE, WEEKDAYS_ONLY)


@dataclass(frozen=True)
class YearCoverage:
    """What one year's working days come from (``hedui calendar check``)."""

    year: int
    basis: str  # one of BASES
    official: bool  # chinese_calendar has the year
    override_days: int  # days of the year named in the override file

    def as_dict(self) -> dict[str, Any]:
        return {"year": self.year, "basis": self.basis, "official": self.official, "override_days": self.override_days}


class CalendarFallbackWarning(UserWarning):
    """The official holiday calendar has no data for a year; Monday–Friday plus the
    operator's overrides are used instead."""


def _covered_years() -> tuple[int, int]:
    years = [d.year for d in chinese_calendar.holidays]
    return min(years), max(years)


class WorkCalendar:
    """Working days: operator overrides, else the official calendar, else Monday–Friday."""

    def __init__(self, overrides_path: str | Path | None = None) -> None:
        self._overrides: dict[date, bool] = {}
        self._override_years: frozenset[int] = frozenset()
        self.overrides_path = Path(overrides_path) if overrides_path is not None else None
        if self.overrides_path is not None:
            self._overrides, self._override_years = _load_overrides(self.overrides_path)
        self._first_year, self._last_year = _covered_years()
        self._warned: set[int] = set()
        self._cache: dict[date, bool] = {}

    @property
    def official_years(self) -> tuple[int, int]:
        """First and last year the official calendar covers."""
        return self._first_year, self._last_year

    @property
    def override_years(self) -> frozenset[int]:
        """Years the override file says it covers in full (its ``years`` list)."""
        return self._override_years

    def basis(self, year: int) -> str:
        """What the working days of ``year`` rest on: the official calendar, the operator's
        override file (a year it lists in ``years``), or Monday–Friday alone."""
        if self._first_year <= year <= self._last_year:
            return OFFICIAL
        if year in self._override_years:
            return OVERRIDE
        return WEEKDAYS_ONLY

    def basis_between(self, start: date, end: date) -> str:
        """The weakest basis over the days a deadline counted: ``(start, end]`` (the day of
        the event is not counted; a zero-day span counts ``end`` alone)."""
        first = start + timedelta(days=1) if end > start else end
        worst = OFFICIAL
        for y in range(min(first.year, end.year), max(first.year, end.year) + 1):
            b = self.basis(y)
            if BASES.index(b) > BASES.index(worst):
                worst = b
        return worst

    def coverage(self, year: int) -> YearCoverage:
        n = sum(1 for d in self._overrides if d.year == year)
        return YearCoverage(year, self.basis(year), self._first_year <= year <= self._last_year, n)

    def is_workday(self, d: date) -> bool:
        if isinstance(d, datetime) or not isinstance(d, date):
            raise InvalidArgument(f"date: got {type(d).__name__}, want datetime.date")
        hit = self._cache.get(d)
        if hit is not None:
            return hit
        if d in self._overrides:
            result = self._overrides[d]
        elif self._first_year <= d.year <= self._last_year:
            result = bool(chinese_calendar.is_workday(d))
        elif d.year in self._override_years:
            result = d.weekday() < 5  # the file lists every exception of a year it covers
        else:
            self._warn_fallback(d.year)
            result = d.weekday() < 5
        self._cache[d] = result
        return result

    def add_workdays(self, d: date, n: int) -> date:
        """The date of the ``n``-th working day after ``d`` (``d`` not counted); ``n=0``
        returns ``d``."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > _MAX_WORKDAYS:
            raise InvalidArgument(f"workdays: got {n!r}, want an integer 0..{_MAX_WORKDAYS}")
        cur = d
        left = n
        while left:
            cur += timedelta(days=1)
            if self.is_workday(cur):
                left -= 1
        return cur

    def next_workday(self, d: date) -> date:
        """``d`` if it is a working day, else the first working day after it."""
        cur = d
        while not self.is_workday(cur):
            cur += timedelta(days=1)
        return cur

    def previous_workday(self, d: date) -> date:
        """``d`` if it is a working day, else the last working day before it."""
        cur = d
        while not self.is_workday(cur):
            cur -= timedelta(days=1)
        return cur

    def workdays_between(self, a: date, b: date) -> int:
        """Working days in ``(a, b]``: the inverse of :meth:`add_workdays`
        (``workdays_between(d, add_workdays(d, n)) == n``); negative when ``b < a``."""
        if b < a:
            return -self.workdays_between(b, a)
        count = 0
        cur = a
        while cur < b:
            cur += timedelta(days=1)
            if self.is_workday(cur):
                count += 1
        return count

    def _warn_fallback(self, year: int) -> None:
        if year in self._warned:
            return
        self._warned.add(year)
        msg = (
            f"working-day calendar: got no official holiday data for {year} "
            f"(chinese_calendar covers {self._first_year}-{self._last_year}), "
            "using Monday-Friday plus operator overrides; add the year's holidays to the "
            f"override file and list {year} in its years (docs/time.md), or upgrade chinesecalendar"
        )
        log.warning(msg)
        warnings.warn(msg, CalendarFallbackWarning, stacklevel=3)


class _Day(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    date: date
    workday: Annotated[bool, Strict()] = Field(description="true or false")
    note: Annotated[str, Strict()] = ""

    @field_validator("date", mode="before")
    @classmethod
    def _a_date(cls, v: Any) -> Any:
        if isinstance(v, datetime):
            raise ValueError(f"got the date-time {v.isoformat()}, want a date like 2027-01-01")
        return v


class _Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    years: list[Annotated[int, Strict(), Field(ge=1900, le=2199)]] = []
    days: list[_Day] = []


def _load_overrides(path: Path) -> tuple[dict[date, bool], frozenset[int]]:
    doc = load_toml(path, _Overrides, what="calendar overrides (years = [...], [[days]] tables)")
    out: dict[date, bool] = {}
    for i, d in enumerate(doc.days):
        if d.date in out and out[d.date] != d.workday:
            raise ConfigError(f"{path}: days[{i}].date: got {d.date.isoformat()} twice with different workday values, want one")
        out[d.date] = d.workday
    years = frozenset(doc.years)
    for y in sorted(years):
        # A year said to be covered with no day listed is a typo or an empty paste: every
        # year has holidays (New Year's Day at least).
        if not any(d.year == y for d in out):
            raise ConfigError(f"{path}: years: got {y} with no [[days]] in it, want that year's holidays and make-up workdays listed")
    return out, years
