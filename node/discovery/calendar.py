"""Working days for discovery deadlines: China's official holidays and make-up workdays.

The official calendar comes from ``chinese_calendar`` (State Council announcements, one
release per year). An operator override file wins over it, and covers years the package
has no data for; for such a year the calendar falls back to Monday–Friday plus the overrides
and says so once per year with a :class:`CalendarFallbackWarning` (``warnings`` and
``logging``).

Override file (TOML)::

    [[days]]
    date = 2027-02-08        # a TOML date, or the string "2027-02-08"
    workday = false
    note = "Spring Festival" # optional

Counting rule: :meth:`WorkCalendar.add_workdays` returns the day on which the *n*-th working
day after ``d`` falls (``d`` itself is not counted), so an event on Friday with a 3-working-day
deadline is due on the following Wednesday in an ordinary week.
"""

from __future__ import annotations

import logging
import warnings
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import chinese_calendar
from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from hedui.common.toml import load_toml
from hedui.node.errors import ConfigError, InvalidArgument

__all__ = ["WorkCalendar", "CalendarFallbackWarning", "CHINA_TZ", "local_date"]

log = logging.getLogger(__name__)

#: Local time of the deadlines (China has had no daylight saving since 1991).
CHINA_TZ = timezone(timedelta(hours=8), "CST")

_MAX_WORKDAYS = 3660  # ten years of working days: a bound against runaway loops


def local_date(moment: datetime) -> date:
    """The date in China of an aware ``datetime`` (naive values are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA_TZ).date()


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
        if overrides_path is not None:
            self._overrides = _load_overrides(Path(overrides_path))
        self._first_year, self._last_year = _covered_years()
        self._warned: set[int] = set()
        self._cache: dict[date, bool] = {}

    @property
    def official_years(self) -> tuple[int, int]:
        """First and last year the official calendar covers."""
        return self._first_year, self._last_year

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
            "override file or upgrade chinesecalendar"
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

    days: list[_Day] = []


def _load_overrides(path: Path) -> dict[date, bool]:
    doc = load_toml(path, _Overrides, what="calendar overrides ([[days]] tables)")
    out: dict[date, bool] = {}
    for i, d in enumerate(doc.days):
        if d.date in out and out[d.date] != d.workday:
            raise ConfigError(f"{path}: days[{i}].date: got {d.date.isoformat()} twice with different workday values, want one")
        out[d.date] = d.workday
    return out
