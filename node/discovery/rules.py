"""Detection rules, configured per department in TOML.

A rule file holds one department's rules::

    department = "medins"            # short code of the department
    name = "医保分局"                  # optional display name
    default_region = "370304"        # optional: region when a fact carries no "region" attr

    [[rules]]
    id = "medins.inpatient_single_20k"
    event_type = "large_medical_expense"
    fact = "inpatient_stay"          # the canonical fact name the adapter yields
    kind = "threshold"               # threshold | cumulative | new_in_period | within_workdays | flag
    threshold = "20000"              # exact decimal (string or integer), inclusive: value >= threshold
    unit = "CNY"                     # optional: only facts in this unit count
    period = "last_month"            # last_month | last_week | this_year | rolling
    schedule = { kind = "monthly", day = 5 }
    details = ["hospital", "admitted_on"]   # fact attrs copied into the sealed details
    where = { outcome = ["death", "disability"] }   # optional attr filter
    description = "..."

Kinds: ``threshold`` one event whose value ≥ threshold; ``cumulative`` the sum of a person's
events in the period ≥ threshold (one detection per person and period); ``new_in_period`` every
event dated in the period (e.g. a certificate issued last week); ``within_workdays`` every event
in a rolling look-back window, due N working days after the event; ``flag`` every event in the
period whose value is non-zero (a list or a yes/no mark).

Periods and schedules go in pairs: ``last_month`` ↔ ``monthly`` (due on ``day`` of the next
month), ``last_week`` ↔ ``weekly`` (due on ``weekday`` of the next week), ``this_year`` ↔
``yearly`` (due on ``month``/``day`` of that year), ``rolling`` ↔ ``within_workdays`` (due
``workdays`` working days after the event; ``lookback_days`` bounds the scan, default 31).
A due day that is not a working day moves to the next working day (顺延, the usual practice for
administrative deadlines), except the yearly one, which moves back to the last working day so
that it stays within the year ("12月底前").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hedui.common.toml import FieldValueError, load_toml, parse_toml, show
from hedui.node.discovery.calendar import WorkCalendar
from hedui.node.errors import ConfigError

__all__ = [
    "Rule",
    "RuleSet",
    "Period",
    "load_rules",
    "parse_rules",
    "RuleFile",
    "default_rules",
    "DEFAULT_DEPARTMENTS",
]

_ID = r"^[a-z][a-z0-9_.-]{0,63}$"
_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

#: Departments with a shipped default rule file ``node/data/rules-<department>.toml``.
DEFAULT_DEPARTMENTS: tuple[str, ...] = (
    "propaganda",
    "emergency",
    "traffic",
    "fire",
    "disability",
    "civil_affairs",
    "complaints",
    "health",
    "medins",
    "rural",
    "education",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Monthly(_Strict):
    kind: Literal["monthly"]
    day: Annotated[int, Field(ge=1, le=28)]


class Weekly(_Strict):
    kind: Literal["weekly"]
    weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class Yearly(_Strict):
    kind: Literal["yearly"]
    month: Annotated[int, Field(ge=1, le=12)] = 12
    day: Annotated[int, Field(ge=1, le=31)] = 31

    @model_validator(mode="after")
    def _real_day(self) -> Yearly:
        try:
            date(2001, self.month, self.day)  # a non-leap year: 29 February is refused too
        except ValueError:
            raise ValueError(f"got {self.month}-{self.day}, want a real month and day") from None
        return self


class WithinWorkdays(_Strict):
    kind: Literal["within_workdays"]
    workdays: Annotated[int, Field(ge=1, le=60)]


Schedule = Annotated[Monthly | Weekly | Yearly | WithinWorkdays, Field(discriminator="kind")]

_PAIRS = {
    "last_month": "monthly",
    "last_week": "weekly",
    "this_year": "yearly",
    "rolling": "within_workdays",
}


class Rule(_Strict):
    """One detection rule. Immutable; build with :func:`parse_rules` or :func:`load_rules`."""

    id: Annotated[str, Field(pattern=_ID)]
    event_type: Annotated[str, Field(pattern=_ID)]
    fact: Annotated[str, Field(pattern=_NAME)]
    kind: Literal["threshold", "cumulative", "new_in_period", "within_workdays", "flag"]
    threshold: Decimal | None = None
    unit: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,16}$")] | None = None
    period: Literal["last_month", "last_week", "this_year", "rolling"]
    lookback_days: Annotated[int, Field(ge=1, le=366)] | None = None
    schedule: Schedule
    details: tuple[Annotated[str, Field(pattern=_NAME)], ...] = ()
    where: dict[Annotated[str, Field(pattern=_NAME)], tuple[str, ...]] = Field(default_factory=dict)
    description: str = ""

    @field_validator("threshold", mode="before")
    @classmethod
    def _exact_decimal(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, bool) or isinstance(v, float):
            raise ValueError(
                f"got {type(v).__name__} {v!r}, want an exact decimal as a string (\"20000.00\") or an integer"
            )
        if isinstance(v, int):
            return Decimal(v)
        if isinstance(v, str):
            s = v.strip().replace(",", "")
            if not re.fullmatch(r"\d{1,15}(\.\d{1,4})?", s):
                raise ValueError(f"got {v!r}, want a non-negative decimal like \"20000.00\"")
            try:
                return Decimal(s)
            except InvalidOperation:  # pragma: no cover - the pattern rules it out
                raise ValueError(f"got {v!r}, want a decimal") from None
        raise ValueError(f"got {type(v).__name__}, want a decimal string or an integer")

    @field_validator("details", "where", mode="before")
    @classmethod
    def _lists_to_tuples(cls, v: Any) -> Any:
        if isinstance(v, list):
            return tuple(v)
        if isinstance(v, dict):
            return {k: tuple(x) if isinstance(x, list) else x for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        want = _PAIRS[self.period]
        if self.schedule.kind != want:
            raise FieldValueError("schedule.kind", repr(self.schedule.kind), f"{want!r} for period {self.period!r}")
        if self.kind == "within_workdays" and self.period != "rolling":
            raise FieldValueError("period", repr(self.period), "'rolling' for kind 'within_workdays'")
        if self.period == "rolling" and self.kind != "within_workdays":
            raise FieldValueError("kind", repr(self.kind), "'within_workdays' for period 'rolling'")
        if self.kind in ("threshold", "cumulative") and self.threshold is None:
            raise FieldValueError("threshold", "nothing", f"a threshold for kind {self.kind!r}")
        if self.kind not in ("threshold", "cumulative") and self.threshold is not None:
            raise FieldValueError("threshold", str(self.threshold), f"no threshold for kind {self.kind!r}")
        if self.lookback_days is not None and self.period != "rolling":
            raise FieldValueError("lookback_days", str(self.lookback_days), "no lookback_days unless period is 'rolling'")
        for key, values in self.where.items():
            if not values:
                raise FieldValueError(f"where.{key}", "[]", "a non-empty list of accepted values")
        return self


@dataclass(frozen=True, slots=True)
class Period:
    """The dates a rule looks at for one run: ``start``..``end`` inclusive, and a key
    (``2025-05``, ``2025-W21``, ``2025``; rolling rules key each event by its date)."""

    start: date
    end: date
    key: str


@dataclass(frozen=True, slots=True)
class RuleSet:
    department: str
    name: str
    default_region: str
    rules: tuple[Rule, ...]


# ---------------------------------------------------------------- periods and deadlines


def period_for(rule: Rule, as_of: date) -> Period:
    """The period a run on ``as_of`` covers for ``rule``."""
    if rule.period == "last_month":
        end = as_of.replace(day=1) - timedelta(days=1)
        return Period(end.replace(day=1), end, f"{end.year:04d}-{end.month:02d}")
    if rule.period == "last_week":
        this_monday = as_of - timedelta(days=as_of.weekday())
        start = this_monday - timedelta(days=7)
        iso = start.isocalendar()
        return Period(start, start + timedelta(days=6), f"{iso.year:04d}-W{iso.week:02d}")
    if rule.period == "this_year":
        return Period(date(as_of.year, 1, 1), as_of, f"{as_of.year:04d}")
    back = rule.lookback_days or 31
    return Period(as_of - timedelta(days=back - 1), as_of, "rolling")


def due_date(rule: Rule, period: Period, event_date: date, calendar: WorkCalendar) -> date:
    """When the notice for an event found in ``period`` is due."""
    s = rule.schedule
    if isinstance(s, WithinWorkdays):
        return calendar.add_workdays(event_date, s.workdays)
    if isinstance(s, Monthly):
        nxt = period.end + timedelta(days=1)  # first day of the month after the period
        return calendar.next_workday(nxt.replace(day=s.day))
    if isinstance(s, Weekly):
        next_monday = period.end + timedelta(days=1)
        return calendar.next_workday(next_monday + timedelta(days=_WEEKDAYS.index(s.weekday)))
    assert isinstance(s, Yearly)
    return calendar.previous_workday(date(period.start.year, s.month, s.day))


# ---------------------------------------------------------------- loading


class RuleFile(_Strict):
    """A department's rule file as written (see the module docstring)."""

    department: Annotated[str, Field(pattern=_NAME, description='a short code like "medins"')]
    name: Annotated[str, Field(max_length=200)] | None = None
    default_region: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{0,32}$", description="a region code")] = ""
    rules: Annotated[list[Rule], Field(min_length=1)]

    @field_validator("rules", mode="before")
    @classmethod
    def _tables(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise ValueError(f"got {show(v)}, want one or more [[rules]] tables")
        return v


_WHAT = "a detection rule file"


def _ruleset(f: RuleFile, source: str) -> RuleSet:
    seen: set[str] = set()
    for rule in f.rules:
        if rule.id in seen:
            raise ConfigError(f"{source}: rules[{rule.id!r}].id: got a duplicate, want each rule id once")
        seen.add(rule.id)
    return RuleSet(department=f.department, name=f.name or f.department, default_region=f.default_region, rules=tuple(f.rules))


def parse_rules(text: str, *, source: str = "<rules>") -> RuleSet:
    """Parses a rule file's text. Any problem is one :class:`ConfigError` naming the file,
    the rule (by id) and the key (:func:`hedui.common.toml.parse_toml`)."""
    return _ruleset(parse_toml(text, RuleFile, source=source, what=_WHAT), source)


def load_rules(path: str | Path) -> RuleSet:
    return _ruleset(load_toml(path, RuleFile, what=_WHAT), str(path))


def default_rules(department: str) -> RuleSet:
    """The shipped rule set of a department in :data:`DEFAULT_DEPARTMENTS`."""
    if department not in DEFAULT_DEPARTMENTS:
        raise ConfigError(f"department: got {department!r}, want one of {', '.join(DEFAULT_DEPARTMENTS)}")
    name = f"rules-{department.replace('_', '-')}.toml"
    res = resources.files("hedui.node") / "data" / name
    return parse_rules(res.read_text(encoding="utf-8"), source=name)

