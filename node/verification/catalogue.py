"""The provider's field catalogue: which typed aggregates it answers, over which window of the
request's reference month (how each is computed is :mod:`hedui.node.verification.answer`).

A catalogue is TOML (``[provider] fields = "fields.toml"``; DESIGN-12 "Catalogue")::

    [[fields]]
    name = "wages"                 # what the hub asks for
    type = "money"                 # money | integer | decimal | boolean | code
    unit = "CNY"
    description = "工资性收入"
    facts = ["wage"]               # fact names the mappings produce (`fact = "wage"` still accepted)
    agg = "sum"                    # sum | count | max | min | latest | exists | sum_per_month
    window = { months_before = 12 }   # or "year_to_date" | "previous_year" | "as_of_reference" | "all_time"
    where = { item = ["0400"] }    # filters on the facts' attributes (adapters/filters.py, the mapping syntax)
    distinct_by = ["settlement"]   # each distinct attribute tuple counts once
    unless = { fact = "settlement_cancelled", by = ["settlement"] }   # drop facts another fact cancels

``window_months = N`` (the old key) is ``window = { months_before = N }``; ``0`` or no window is
``all_time``. ``unless`` is this catalogue's answer to "valid settlements only" where the
cancellation is a separate row that names the row it cancels (docs/department-data.md,
``yibao``): a fact is left out when a fact named ``unless.fact`` has the same ``by`` attributes.

:func:`check_catalogue` validates a catalogue against the node's mappings at load (issue 12,
"Validation at load"): every fact named is produced, every attribute filtered or keyed on is
kept by those facts, a windowed field's facts carry dates, and the field's type fits its
aggregate and its facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from hedui.adapters.filters import Condition, parse_where
from hedui.common.toml import FieldValueError, load_toml
from hedui.node.errors import ConfigError

__all__ = ["FieldDef", "Catalogue", "MonthsBefore", "Unless", "load_catalogue", "check_catalogue", "FactInfo",
           "facts_of_mappings"]

_NUMERIC = {"money", "integer", "decimal"}
_NAME = r"^[a-z][a-z0-9_]{0,62}$"
WindowKind = Literal["year_to_date", "previous_year", "as_of_reference", "all_time"]
Agg = Literal["sum", "count", "max", "min", "latest", "exists", "sum_per_month"]

# Which field types each aggregate can give (DESIGN-12 "type fits agg").
_AGG_TYPES: dict[str, set[str]] = {
    "sum": _NUMERIC, "sum_per_month": _NUMERIC, "max": _NUMERIC, "min": _NUMERIC,
    "count": {"integer"}, "exists": {"boolean"}, "latest": {"money", "integer", "decimal", "boolean", "code"},
}
# Which mapping fact types can feed a field of a type (for aggregates that carry the value).
_FACT_TYPES: dict[str, set[str]] = {
    "money": {"money"}, "integer": {"integer"}, "decimal": {"decimal", "integer"},
    "boolean": {"bool"}, "code": {"code"},
}


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MonthsBefore(_M):
    """The ``months_before`` whole calendar months before the reference month."""

    months_before: int = Field(ge=1, le=600)


class Unless(_M):
    fact: str = Field(pattern=_NAME)
    by: list[str] = Field(min_length=1)


class FieldDef(_M):
    name: str = Field(pattern=_NAME)
    type: Literal["money", "integer", "decimal", "boolean", "code"]
    unit: str = ""
    description: str = ""
    facts: list[str] = Field(min_length=1)
    agg: Agg
    window: MonthsBefore | WindowKind = "all_time"
    where: dict[str, Any] = Field(default_factory=dict)
    distinct_by: list[str] = Field(default_factory=list)
    unless: Unless | None = None
    _conditions: tuple[Condition, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _old_keys(cls, data: Any) -> Any:
        # Catalogues written before issue 12 keep loading: `fact` and `window_months`.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "fact" in data:
            if "facts" in data:
                raise FieldValueError("fact", "both fact and facts", "one of them")
            data["facts"] = [data.pop("fact")]
        if "window_months" in data:
            if "window" in data:
                raise FieldValueError("window_months", "both window_months and window", "one of them")
            n = data.pop("window_months")
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 600:
                raise FieldValueError("window_months", repr(n)[:20], "a whole number 0..600")
            data["window"] = "all_time" if n == 0 else {"months_before": n}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> FieldDef:
        if self.type not in _AGG_TYPES[self.agg]:
            raise FieldValueError("type", repr(self.type), f"one of {sorted(_AGG_TYPES[self.agg])} for agg {self.agg}")
        if self.agg == "sum_per_month" and not isinstance(self.window, MonthsBefore) \
                and self.window not in ("year_to_date", "previous_year"):
            raise FieldValueError("window", repr(self.window), "a window of months for agg sum_per_month")
        try:   # the mapping language's filter (adapters/filters.py), on the facts' attributes
            self._conditions = parse_where(self.where)
        except FieldValueError as exc:
            raise FieldValueError(f"where.{exc.key}" if exc.key else "where", exc.got, exc.want) from None
        return self

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return self._conditions

    @property
    def window_text(self) -> str:
        """The window as written in docs and errors (``months_before=12``, ``as_of_reference``)."""
        return f"months_before={self.window.months_before}" if isinstance(self.window, MonthsBefore) else self.window

    @property
    def numeric(self) -> bool:
        return self.type in _NUMERIC or self.agg in ("count", "sum", "sum_per_month")

    @property
    def attrs_used(self) -> list[str]:
        return list(dict.fromkeys([c.column for c in self._conditions] + list(self.distinct_by)))


class Catalogue(_M):
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


class FactInfo(BaseModel):
    """What the node's mappings say about one fact name: its types, whether every producer
    dates it, and the attributes every producer keeps."""

    types: set[str]
    dated: bool
    attrs: set[str]
    sources: list[str]


def facts_of_mappings(mappings: Sequence[Any]) -> dict[str, FactInfo]:
    """Fact names to :class:`FactInfo`, from loaded :class:`~hedui.adapters.mapping.Mapping` objects."""
    out: dict[str, FactInfo] = {}
    for m in mappings:
        for f in m.facts:
            attrs = set(getattr(f, "attrs", {}) or {})
            dated = getattr(f, "date", None) is not None
            info = out.get(f.name)
            if info is None:
                out[f.name] = FactInfo(types={f.type}, dated=dated, attrs=attrs, sources=[m.name])
            else:
                info.types.add(f.type)
                info.dated = info.dated and dated
                info.attrs &= attrs
                if m.name not in info.sources:
                    info.sources.append(m.name)
    return out


def check_catalogue(cat: Catalogue, facts: dict[str, FactInfo], where: str | Path) -> None:
    """Refuses a catalogue the mappings cannot answer (``file: key: got X, want Y``)."""
    known = ", ".join(sorted(facts)) or "none"
    for f in cat.fields:
        key = f"{where}: fields['{f.name}']"
        needed = list(f.facts) + ([f.unless.fact] if f.unless else [])
        for name in needed:
            if name not in facts:
                k = "unless.fact" if f.unless and name == f.unless.fact and name not in f.facts else "facts"
                raise ConfigError(f"{key}.{k}: got {name!r}, want a fact a mapping produces ({known})")
        infos = [facts[n] for n in f.facts]
        for attr in f.attrs_used:
            for n, info in zip(f.facts, infos):
                if attr not in info.attrs:
                    k = "distinct_by" if attr in f.distinct_by else "where"
                    raise ConfigError(f"{key}.{k}: got attribute {attr!r}, want one fact {n!r} keeps "
                                      f"({', '.join(sorted(info.attrs)) or 'none'})")
        if f.unless:
            for attr in f.unless.by:
                for n in (*f.facts, f.unless.fact):
                    if attr not in facts[n].attrs:
                        raise ConfigError(f"{key}.unless.by: got attribute {attr!r}, want one fact {n!r} keeps "
                                          f"({', '.join(sorted(facts[n].attrs)) or 'none'})")
        if f.window != "all_time" or f.agg == "sum_per_month":
            for n, info in zip(f.facts, infos):
                if not info.dated:
                    raise ConfigError(f"{key}.window: got {f.window_text} over fact {n!r} that has no date, "
                                      "want a date on the fact in every mapping or window all_time")
        if f.agg in ("count", "exists"):
            continue
        want = _FACT_TYPES[f.type]
        for n, info in zip(f.facts, infos):
            bad = sorted(info.types - want)
            if bad:
                raise ConfigError(f"{key}.type: got {f.type} over fact {n!r} of type {', '.join(bad)}, "
                                  f"want a fact of type {' or '.join(sorted(want))}")
