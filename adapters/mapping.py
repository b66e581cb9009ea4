"""Mapping files: how one department source (a SQL table or an export file) becomes records.

A mapping is a TOML file validated by the pydantic models below. Unknown keys and wrong
types are refused with one :class:`~hedui.adapters.errors.MappingError` that names every bad key
(``facts[1].unit: got 'cents', want one of 'fen', 'yuan', 'wan_yuan'``). Whether the tables,
columns, sheets and headers it names exist is checked by the adapter's ``check()``, before
any row is read.

Column references: in a SQL mapping ``column`` or ``table.column`` (a bare name is a column
of ``source.table``); in a CSV/Excel mapping the header text, as written in the file.

Units: ``money`` facts declare the source unit (``fen``, ``yuan`` or ``wan_yuan`` = 10,000
yuan) and always come out as yuan (``CNY``, rounded half-up to the fen); ``decimal`` and
``integer`` facts carry a free unit label (``m2``, ``count`` …); ``code`` and ``bool``
facts have units ``code`` and ``bool``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from hedui.adapters import idnum
from hedui.adapters.dates import DateFormat
from hedui.adapters.errors import MappingError
from hedui.adapters.filters import Condition, parse_where
from hedui.common.toml import FieldValueError, read_toml, show, validate

__all__ = [
    "Mapping",
    "SqlSource",
    "CsvSource",
    "ExcelSource",
    "Join",
    "IdentitySpec",
    "FactSpec",
    "AttrSpec",
    "DateSpec",
    "UntilSpec",
    "DataDateSpec",
    "load_mapping",
    "parse_mapping",
]

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
_ON = re.compile(r"^\s*([^=\s]+)\s*=\s*([^=\s]+)\s*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _where(v: dict[str, Any]) -> dict[str, Any]:
    parse_where(v)   # FieldValueError names the column and operator (filters.py)
    return v


class DateSpec(_Model):
    """``date = { column, format }``: the day a fact describes. A month or year is its first day."""

    column: str
    format: DateFormat = "date"


class UntilSpec(_Model):
    """``until = { column, format, inclusive }``: the day a fact stops holding (DESIGN-12).
    Exclusive by default (a cancellation or transfer day: held while on <= D < until);
    ``inclusive = true`` for a last paid or last valid day. A month or year is its last day."""

    column: str
    format: DateFormat = "date"
    inclusive: bool = False


class DataDateSpec(_Model):
    """``data_date = { table, column, format, agg }``: how current the source is, read from
    the department's own extract table when the index is built (largest value; a month or
    year is its last day)."""

    table: str
    column: str
    format: DateFormat = "date"
    agg: Literal["max"] = "max"


def _literal_date(v: Any) -> Any:
    # data_date = "2026-10-31" (text) or 2026-10-31 (a TOML date): both mean that day.
    if isinstance(v, str):
        try:
            return dt.date.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"got {_describe(v)}, want a date YYYY-MM-DD or a table "
                             "{ table, column, format }") from None
    if isinstance(v, dt.datetime):
        raise ValueError("got a date-time, want a date YYYY-MM-DD")
    return v


#: A row filter (adapters/filters.py): checked when the file is loaded.
Where = Annotated[dict[str, Any], AfterValidator(_where)]


class Join(_Model):
    """A many-to-one LEFT JOIN: ``on = "earlier_table.col = this_table.col"``.

    ``as`` names the joined table when one table is joined twice, or joined to itself (a
    settlement joined to the row that cancels it: ``{ table = "setl_d", as = "cx", on =
    "setl_d.setl_id = cx.init_setl_id" }``); columns then say ``cx.col``."""

    table: str
    on: str
    as_: Annotated[str | None, Field(alias="as")] = None

    @field_validator("as_")
    @classmethod
    def _as_shape(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", v):
            raise ValueError(f"got {_describe(v)}, want a short name such as cx")
        return v

    @field_validator("on")
    @classmethod
    def _on_shape(cls, v: str) -> str:
        m = _ON.match(v)
        if not m or "." not in m.group(1) or "." not in m.group(2):
            raise ValueError(f"got {_describe(v)}, want 'table.column = table.column'")
        return v

    @property
    def name(self) -> str:
        """How columns refer to the joined table: ``as``, else the table's name."""
        return self.as_ or self.table

    @property
    def pair(self) -> tuple[str, str]:
        m = _ON.match(self.on)
        assert m
        return m.group(1), m.group(2)


class SqlSource(_Model):
    kind: Literal["sql"]
    #: Any SQLAlchemy URL. Prefer ``url_env`` (the name of an environment variable holding
    #: the URL) so that passwords stay out of the file.
    url: str | None = None
    url_env: str | None = None
    table: str
    primary_key: str
    #: A column that grows whenever a row is inserted or updated (timestamp or counter).
    #: Without one the source is treated as append-only and read incrementally by key.
    watermark: str | None = None
    joins: list[Join] = Field(default_factory=list)
    page_size: int = Field(default=5000, ge=1, le=1_000_000)
    #: Rows outside this filter are skipped: counted, neither records nor problems.
    where: Where = Field(default_factory=dict)
    #: How current the data is: a date, or read from the database at index time.
    data_date: Annotated[dt.date | DataDateSpec | None, BeforeValidator(_literal_date)] = None


    @model_validator(mode="after")
    def _one_url(self) -> SqlSource:
        if (self.url is None) == (self.url_env is None):
            raise FieldValueError("url", "both" if self.url is not None else "neither", "exactly one of 'url' and 'url_env'")
        return self

    def resolved_url(self) -> str:
        if self.url is not None:
            return self.url
        value = os.environ.get(self.url_env or "")
        if not value:
            raise MappingError(f"source.url_env: got {self.url_env!r} unset or empty, want an environment variable holding the URL")
        return value


class CsvSource(_Model):
    kind: Literal["csv"]
    path: str
    encoding: Literal["utf-8", "utf-8-sig", "gbk"]
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    #: An optional column whose value names the row (else the line number does).
    primary_key: str | None = None
    where: Where = Field(default_factory=dict)
    data_date: Annotated[dt.date | None, BeforeValidator(_literal_date)] = None



class ExcelSource(_Model):
    kind: Literal["excel"]
    path: str
    sheet: str | None = None  # the first sheet when absent
    header_row: int = Field(default=1, ge=1)
    primary_key: str | None = None
    where: Where = Field(default_factory=dict)
    data_date: Annotated[dt.date | None, BeforeValidator(_literal_date)] = None



class IdentitySpec(_Model):
    column: str
    format: Literal["gb11643"] = "gb11643"
    #: Rows that are not a person (an organisation code in the identity column): skipped,
    #: counted, not problems.
    skip_where: Where = Field(default_factory=dict)



class AttrSpec(_Model):
    column: str
    type: Literal["string", "date"] = "string"


_MONEY_UNITS = ("fen", "yuan", "wan_yuan")


class FactSpec(_Model):
    name: Annotated[str, Field(pattern=_NAME, description="lower_snake_case")]
    column: str
    type: Literal["money", "decimal", "integer", "code", "bool"]
    unit: str | None = Field(default=None, validate_default=True)
    #: The date the fact describes (pay date, period, discharge date …): ``"column"`` (format
    #: ``date``) or ``{ column, format }``.
    date: DateSpec | None = None
    #: The day the fact stops holding (optional): ``"column"`` or ``{ column, format, inclusive }``.
    until: UntilSpec | None = None
    #: Further columns kept with the fact: ``{name = "column"}`` or ``{name = {column, type}}``.
    attrs: dict[str, AttrSpec] = Field(default_factory=dict)
    #: When true an empty cell means "no such fact in this row"; else it is a row problem.
    optional: bool = False
    #: Rows outside this filter produce no such fact (the row's other facts are unaffected).
    where: Where = Field(default_factory=dict)


    @field_validator("date", "until", mode="before")
    @classmethod
    def _column_shorthand(cls, v: Any) -> Any:
        return {"column": v} if isinstance(v, str) else v

    @field_validator("attrs", mode="before")
    @classmethod
    def _attr_shorthand(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for k in v:
            if not isinstance(k, str) or not re.match(_NAME, k):
                raise ValueError(f"got attribute name {_describe(k)}, want lower_snake_case")
        return {k: ({"column": c} if isinstance(c, str) else c) for k, c in v.items()}

    @field_validator("unit")
    @classmethod
    def _unit_fits_type(cls, unit: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind == "money" and unit is None:
            raise ValueError("got nothing, want one of 'fen', 'yuan', 'wan_yuan' for type money")
        if kind == "money" and unit not in _MONEY_UNITS:
            raise ValueError(f"got {_describe(unit)}, want one of 'fen', 'yuan', 'wan_yuan' for type money")
        if kind in ("code", "bool") and unit not in (None, kind):
            raise ValueError(f"got {_describe(unit)}, want none for type {kind}")
        if kind in ("decimal", "integer") and unit is not None and not re.match(r"^[A-Za-z0-9_]{1,16}$", unit):
            raise ValueError(f"got {_describe(unit)}, want a short label such as m2 or count")
        return unit

    @property
    def out_unit(self) -> str:
        """The unit of the canonical fact."""
        if self.type == "money":
            return "CNY"
        if self.type in ("code", "bool"):
            return self.type
        return self.unit or ("count" if self.type == "integer" else "")


class Mapping(_Model):
    """One source: where rows come from, which column is the identity, which facts to derive."""

    version: Literal[1] = 1
    #: A stable name for this source; index progress and row keys are recorded under it.
    name: Annotated[str, Field(pattern=_NAME, description="lower_snake_case")]
    department: str | None = None
    source: Annotated[SqlSource | CsvSource | ExcelSource, Field(discriminator="kind")]
    identity: IdentitySpec
    facts: list[FactSpec] = Field(default_factory=list)
    # Where relative paths in ``source.path`` are resolved (set by load_mapping / parse_mapping).
    _base_dir: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique_fact_names(self) -> Mapping:
        # Fact names may repeat (two columns can feed one fact name) but not with other types.
        types: dict[str, str] = {}
        for f in self.facts:
            if types.setdefault(f.name, f.type) != f.type:
                raise FieldValueError("facts", f"fact {f.name!r} with types {types[f.name]} and {f.type}", "one type per name")
        return self

    def columns(self) -> list[tuple[str, str]]:
        """Every column the mapping reads, as ``(key path, column reference)``."""
        out = [("identity.column", self.identity.column)]
        src = self.source
        out += [("source.where", c) for c in src.where]
        out += [("identity.skip_where", c) for c in self.identity.skip_where]
        if isinstance(src, SqlSource):
            out.append(("source.primary_key", src.primary_key))
            if src.watermark:
                out.append(("source.watermark", src.watermark))
            for i, j in enumerate(src.joins):
                a, b = j.pair
                out += [(f"source.joins[{i}].on", a), (f"source.joins[{i}].on", b)]
        elif src.primary_key:
            out.append(("source.primary_key", src.primary_key))
        for i, f in enumerate(self.facts):
            out.append((f"facts[{i}].column", f.column))
            if f.date:
                out.append((f"facts[{i}].date", f.date.column))
            if f.until:
                out.append((f"facts[{i}].until", f.until.column))
            for k, a in f.attrs.items():
                out.append((f"facts[{i}].attrs.{k}", a.column))
            out += [(f"facts[{i}].where", c) for c in f.where]
        return out

    def conditions(self) -> tuple[tuple[Condition, ...], tuple[Condition, ...], list[tuple[Condition, ...]]]:
        """The compiled filters: ``(source.where, identity.skip_where, [facts[i].where])``."""
        return (parse_where(self.source.where), parse_where(self.identity.skip_where),
                [parse_where(f.where) for f in self.facts])

    def resolved_path(self) -> Path:
        src = self.source
        assert not isinstance(src, SqlSource)
        p = Path(src.path)
        return p if p.is_absolute() or not self._base_dir else Path(self._base_dir) / p

    def fingerprint(self) -> str:
        """A digest of everything that shapes the output (not the URL or base_dir)."""
        data = self.model_dump(mode="json")
        data["source"].pop("url", None)
        data["source"].pop("url_env", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _describe(value: Any) -> str:
    """A value for a message: never one shaped like an identity number."""
    if idnum.contains(repr(value)):
        return f"a {type(value).__name__} shaped like an identity number"
    return show(value)


def parse_mapping(data: dict[str, Any], *, origin: str = "mapping", base_dir: str | Path | None = None) -> Mapping:
    """Validates a mapping given as a dict (parsed TOML). Raises :class:`MappingError`."""
    m = validate(data, Mapping, source=origin, error=MappingError)
    m._base_dir = None if base_dir is None else str(base_dir)
    return m


def load_mapping(path: str | Path) -> Mapping:
    """Reads and validates a mapping TOML file; relative source paths are resolved next to it."""
    p = Path(path)
    return parse_mapping(read_toml(p, what="a mapping file", error=MappingError), origin=str(p), base_dir=p.resolve().parent)
