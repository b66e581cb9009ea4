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
import tomllib
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hedui.node.discovery.calendar import WorkCalendar
from hedui.node.errors import ConfigError

__all__ = [
    "Rule",
    "RuleSet",
    "Period",
    "load_rules",
    "parse_rules",
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


Schedule = Annotated[Union[Monthly, Weekly, Yearly, WithinWorkdays], Field(discriminator="kind")]

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
            raise _KeyError("schedule.kind", repr(self.schedule.kind), f"{want!r} for period {self.period!r}")
        if self.kind == "within_workdays" and self.period != "rolling":
            raise _KeyError("period", repr(self.period), "'rolling' for kind 'within_workdays'")
        if self.period == "rolling" and self.kind != "within_workdays":
            raise _KeyError("kind", repr(self.kind), "'within_workdays' for period 'rolling'")
        if self.kind in ("threshold", "cumulative") and self.threshold is None:
            raise _KeyError("threshold", "nothing", f"a threshold for kind {self.kind!r}")
        if self.kind not in ("threshold", "cumulative") and self.threshold is not None:
            raise _KeyError("threshold", str(self.threshold), f"no threshold for kind {self.kind!r}")
        if self.lookback_days is not None and self.period != "rolling":
            raise _KeyError("lookback_days", str(self.lookback_days), "no lookback_days unless period is 'rolling'")
        for key, values in self.where.items():
            if not values:
                raise _KeyError(f"where.{key}", "[]", "a non-empty list of accepted values")
        return self


class _KeyError(ValueError):
    """A cross-field problem, reported under the key it concerns."""

    def __init__(self, key: str, got: str, want: str) -> None:
        super().__init__(f"{key}: got {got}, want {want}")
        self.key, self.got, self.want = key, got, want


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


def parse_rules(text: str, *, source: str = "<rules>") -> RuleSet:
    """Parses a rule file's text. Any problem is one :class:`ConfigError` naming the file,
    the rule id (or its position) and the key."""
    if not isinstance(text, str):
        raise ConfigError(f"rules {source}: got {type(text).__name__}, want TOML text")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rules {source}: got invalid TOML ({exc}), want a rule file") from None
    allowed = {"department", "name", "default_region", "rules"}
    extra = sorted(set(doc) - allowed)
    if extra:
        raise ConfigError(f"rules {source}: {extra[0]}: got an unknown key, want one of {sorted(allowed)}")
    dept = doc.get("department")
    if not isinstance(dept, str) or not re.fullmatch(_NAME, dept):
        raise ConfigError(f"rules {source}: department: got {_show(dept)}, want a short code like \"medins\"")
    name = doc.get("name", dept)
    if not isinstance(name, str) or len(name) > 200:
        raise ConfigError(f"rules {source}: name: got {_show(name)}, want a string")
    region = doc.get("default_region", "")
    if not isinstance(region, str) or not re.fullmatch(r"[0-9A-Za-z]{0,32}", region):
        raise ConfigError(f"rules {source}: default_region: got {_show(region)}, want a region code")
    raw_rules = doc.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError(f"rules {source}: rules: got {_show(raw_rules)}, want one or more [[rules]] tables")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_rules, start=1):
        label = f"#{i}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str) and re.fullmatch(_ID, raw["id"]):
            label = raw["id"]
        where = f"rules {source}: rule {label!r}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: got {type(raw).__name__}, want a [[rules]] table")
        try:
            rule = Rule.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {_first_error(exc)}") from None
        if rule.id in seen:
            raise ConfigError(f"{where}: id: got a duplicate, want each rule id once")
        seen.add(rule.id)
        rules.append(rule)
    return RuleSet(department=dept, name=name, default_region=region, rules=tuple(rules))


def load_rules(path: str | Path) -> RuleSet:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"rules {p}: got an unreadable file ({exc.strerror}), want a TOML file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"rules {p}: got non-UTF-8 bytes, want UTF-8 TOML") from None
    return parse_rules(text, source=str(p))


def default_rules(department: str) -> RuleSet:
    """The shipped rule set of a department in :data:`DEFAULT_DEPARTMENTS`."""
    if department not in DEFAULT_DEPARTMENTS:
        raise ConfigError(f"department: got {department!r}, want one of {', '.join(DEFAULT_DEPARTMENTS)}")
    name = f"rules-{department.replace('_', '-')}.toml"
    res = resources.files("hedui.node") / "data" / name
    return parse_rules(res.read_text(encoding="utf-8"), source=name)


def _show(v: Any) -> str:
    if v is None:
        return "nothing"
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    e = errors[0]
    ctx_err = (e.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _KeyError):
        return f"{ctx_err}{more}"
    loc = _loc(e["loc"])
    if e["type"] == "extra_forbidden":
        if len(e["loc"]) == 1:
            return f"{loc}: got an unknown key, want one of {', '.join(Rule.model_fields)}{more}"
        return f"{loc}: got an unknown key, want none of that name{more}"
    if e["type"] == "missing":
        return f"{loc}: got nothing, want a value{more}"
    msg = e["msg"]
    for prefix in ("Value error, ", "Input should be ", "Input should have "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if msg.startswith("got "):
        return f"{loc}: {msg}{more}"
    msg = msg.replace("String should match pattern", "a string matching")
    return f"{loc}: got {_show(e.get('input'))}, want {msg[0].lower() + msg[1:]}{more}"


def _loc(parts: tuple[Any, ...]) -> str:
    """``('schedule', 'monthly', 'day')`` → ``schedule.day`` (drops the union tag pydantic adds)."""
    out: list[str] = []
    for i, part in enumerate(parts):
        if i == 1 and parts[0] == "schedule" and part in ("monthly", "weekly", "yearly", "within_workdays"):
            continue
        out.append(str(part))
    return ".".join(out) or "rule"
