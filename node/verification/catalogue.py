"""The provider's field catalogue: which typed, dated aggregates it answers, and how each is
derived from the facts in its token index.

A catalogue is TOML (``[provider] fields = "fields.toml"``)::

    [[fields]]
    name = "wages_12m"            # what the hub asks for
    type = "money"                # money | integer | decimal | boolean | code
    unit = "CNY"
    description = "近12个月工资收入合计"
    fact = "wage"                 # fact name the adapter mapping produces
    agg = "sum"                   # sum | count | max | min | latest | exists
    window_months = 12            # only facts dated within the window (0 = all time)

Semantics, chosen so that "no record" never looks like zero: a token the provider does not
hold at all is answered ``found = false`` and every field ``present = false``. For a token it
holds, ``sum`` and ``count`` over no matching facts are a real zero (the department knows the
person and has nothing of that kind); ``max``, ``min`` and ``latest`` over no facts are
``present = false``; ``exists`` is true or false. ``as_of`` is the date of the newest fact
used (or the evaluation date for an empty sum/count).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

from hedui.adapters.records import Fact
from hedui.common.toml import load_toml
from hedui.node.errors import ConfigError, InvalidArgument, Reason

__all__ = ["FieldDef", "Catalogue", "Derived", "load_catalogue", "derive", "evaluate_predicate"]

_NUMERIC = {"money", "integer", "decimal"}


class FieldDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    type: Literal["money", "integer", "decimal", "boolean", "code"]
    unit: str = ""
    description: str = ""
    fact: str
    agg: Literal["sum", "count", "max", "min", "latest", "exists"]
    window_months: int = Field(default=0, ge=0, le=600)

    @property
    def numeric(self) -> bool:
        return self.type in _NUMERIC or self.agg in ("count", "sum")


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fields: list[FieldDef]

    def by_name(self) -> dict[str, FieldDef]:
        return {f.name: f for f in self.fields}

    def directory_fields(self) -> list[dict]:
        return [{"name": f.name, "type": f.type, "unit": f.unit, "description": f.description} for f in self.fields]


def load_catalogue(path: Path) -> Catalogue:
    cat = load_toml(path, Catalogue, what="a field catalogue")
    names = [f.name for f in cat.fields]
    if len(names) != len(set(names)):
        raise ConfigError(f"{path}: fields.name: got duplicates, want unique names")
    return cat


@dataclass(frozen=True)
class Derived:
    present: bool
    value: str = ""
    as_of: str = ""


def _months_back(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.year * 12 + (d.month - 1) - months, 12)
    day = min(d.day, [31, 29 if (y % 4 == 0 and (y % 100 or y % 400 == 0)) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m])
    return dt.date(y, m + 1, day)


def _fmt(v: Decimal, fd: FieldDef) -> str:
    if fd.type == "money":
        return str(v.quantize(Decimal("0.01")))
    if fd.type == "integer" or fd.agg == "count":
        return str(int(v))
    return format(v.normalize(), "f")


def derive(fd: FieldDef, facts: Iterable[Fact], today: dt.date) -> Derived:
    since = _months_back(today, fd.window_months) if fd.window_months else None
    use = [f for f in facts if f.name == fd.fact and (since is None or (f.on is not None and since < f.on <= today))]
    newest = max((f.on for f in use if f.on is not None), default=None)
    as_of = (newest or today).isoformat()
    if fd.agg == "sum":
        return Derived(True, _fmt(sum((f.value for f in use), Decimal(0)), fd), as_of)
    if fd.agg == "count":
        return Derived(True, str(len(use)), as_of)
    if fd.agg == "exists":
        return Derived(True, "true" if use else "false", as_of if use else today.isoformat())
    if not use:
        return Derived(False)
    if fd.agg == "max":
        return Derived(True, _fmt(max(f.value for f in use), fd), as_of)
    if fd.agg == "min":
        return Derived(True, _fmt(min(f.value for f in use), fd), as_of)
    latest = max(use, key=lambda f: (f.on or dt.date.min))
    return Derived(True, _fmt(latest.value, fd) if fd.type != "code" else str(latest.value), (latest.on or today).isoformat())


def parse_operand(fd: FieldDef, operand: str) -> Decimal | str:
    if fd.type == "boolean":
        if operand not in ("true", "false"):
            raise InvalidArgument(f"queries[{fd.name}].operand: got {operand[:20]!r}, want true or false")
        return operand
    if fd.type == "code":
        if not operand or len(operand) > 32:
            raise InvalidArgument(f"queries[{fd.name}].operand: got {len(operand)} characters, want 1..32")
        return operand
    try:
        d = Decimal(operand)
    except InvalidOperation:
        raise InvalidArgument(f"queries[{fd.name}].operand: got {operand[:20]!r}, want a decimal number") from None
    if not d.is_finite() or abs(d) > Decimal("1e15"):
        raise InvalidArgument(f"queries[{fd.name}].operand: got {operand[:20]!r}, want a finite number below 1e15")
    return d


def evaluate_predicate(fd: FieldDef, op: str, operand: Decimal | str, d: Derived) -> bool | None:
    """``None`` when there is no value to decide on (answered as TRUTH_UNKNOWN)."""
    if not d.present:
        return None
    if op == "ge":
        if not fd.numeric:
            raise InvalidArgument(f"queries[{fd.name}].op: got >= on a {fd.type} field, want == or a numeric field", reason=Reason.BAD_PREDICATE)
        return Decimal(d.value) >= operand  # type: ignore[operator]
    if fd.numeric:
        return Decimal(d.value) == operand
    return d.value == operand
