"""The hub's verification rules (核对规则): who counts as a household member, which answers
count as income, which are deducted, asset flags, fields shown for information, the local
standards by region and period, and temporary-assistance tiers.

Rules live in a TOML file (``[hub] rules = "verification-rules.toml"``), never in code; the
packaged default is ``hedui/node/data/verification-rules.toml`` and docs/verification-rules.md
is the reference of every key (issue 12 "Hub verification rules"; DESIGN-12 "Hub rules").
Every amount is CNY. Files written before issue 12 (no ``[members]``, scalar standards, only
``>=``/``==`` flags) still load and mean what they meant.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from hedui.common.periods import Month, PeriodError, parse_month
from hedui.common.toml import FieldValueError, load_toml, parse_toml

__all__ = ["Rules", "MemberRule", "IncomeItem", "AssetFlag", "InfoField", "StandardPeriod", "load_rules",
           "default_rules", "parse_rules", "as_number", "ORDERING_OPS"]

#: Ordering comparisons need numbers on both sides; the others compare numbers or text.
ORDERING_OPS = frozenset({">=", ">", "<=", "<"})


def as_number(text: str) -> Decimal | None:
    """``text`` as a finite Decimal, or None (a code such as ``A``, a boolean ``true``).
    The same rule as mapping filters (DESIGN-12): numbers when both sides parse as numbers."""
    try:
        d = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        return None
    return d if d.is_finite() else None


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberRule(_M):
    """``[members]``: who counts, decided from one provider's status answer (acceptance-rules.md
    "Counted members"). A member whose answer is one of ``exclude``'s values is listed but not
    counted, with that reason and the answer's ``as_of`` as the day."""

    provider: str = Field(min_length=1)
    field: str = Field(min_length=1)
    exclude: dict[str, str] = Field(description="answer value → reason (dead, moved_out, …)")
    label: str = "户籍状态"

    @field_validator("exclude")
    @classmethod
    def _reasons(cls, v: dict[str, str]) -> dict[str, str]:
        for value, reason in v.items():
            if not value.strip() or not reason.strip():
                raise FieldValueError(value, repr(reason), "a non-empty status value and reason")
        return v


class IncomeItem(_M):
    provider: str = Field(min_length=1)
    field: str = Field(min_length=1)
    months: int = Field(ge=1, le=120, description="Months the value covers; monthly = value / months")
    label: str = ""


Threshold = Decimal | str | list[str]


class AssetFlag(_M):
    flag: str = Field(min_length=1)
    label: str = ""
    provider: str = Field(min_length=1)
    field: str = Field(min_length=1)
    op: Literal[">=", ">", "<=", "<", "==", "!=", "in"] = ">="
    threshold: Threshold
    scope: Literal["member", "household"] = "member"

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_text(cls, v: object) -> object:
        # TOML booleans compare as the text a provider answers (``true``/``false``); numbers
        # stay exact (a float in TOML is read through its text, never as a binary float).
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return Decimal(str(v))
        if isinstance(v, list):
            return [("true" if x else "false") if isinstance(x, bool) else str(x) for x in v]
        if isinstance(v, str) and as_number(v) is not None:
            return as_number(v)
        return v

    @model_validator(mode="after")
    def _op_fits(self) -> AssetFlag:
        if self.op == "in" and not isinstance(self.threshold, list):
            raise FieldValueError("threshold", repr(self.threshold), "a list of values for op 'in'")
        if self.op != "in" and isinstance(self.threshold, list):
            raise FieldValueError("op", repr(self.op), "'in' for a list threshold")
        if self.op in ORDERING_OPS and not isinstance(self.threshold, Decimal):
            raise FieldValueError("threshold", repr(self.threshold), f"a number for op {self.op!r}")
        if self.scope == "household" and not isinstance(self.threshold, Decimal):
            raise FieldValueError("threshold", repr(self.threshold), "a number for scope 'household' (values are summed)")
        return self


class InfoField(_M):
    """``[[info]]``: shown in the report, never concluding (acceptance-rules.md "Shown for
    information"). ``household`` sums the counted members' values."""

    provider: str = Field(min_length=1)
    field: str = Field(min_length=1)
    label: str = ""
    scope: Literal["member", "household"] = "member"


class StandardPeriod(_M):
    """One amount in force from ``from`` (a reference month) until the next entry's month."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    since: str = Field(alias="from")
    amount: Decimal = Field(gt=0)

    @field_validator("since")
    @classmethod
    def _month(cls, v: str) -> str:
        try:
            return str(parse_month(v, field="from"))
        except PeriodError as exc:
            raise FieldValueError("", repr(v[:16]), "a month YYYY-MM") from exc


def _standard_kind(v: object) -> str:
    return "periods" if isinstance(v, list) else "amount"


# A scalar (every period) or a dated list; tagged so an error names the form that was written.
Standard = Annotated[
    Annotated[Decimal, Tag("amount")] | Annotated[list[StandardPeriod], Tag("periods")], Discriminator(_standard_kind)
]


class Tier(_M):
    over: Decimal = Field(description="ratio strictly above this")
    upto: Decimal | None = Field(default=None, description="ratio at most this; none = no upper bound")
    aid: str
    min_cny: Decimal | None = None
    max_cny: Decimal | None = None


class TemporaryAssistance(_M):
    provider: str
    field: str = Field(description="Last year's income per member (e.g. taxable income)")
    tiers: list[Tier]


class Rules(_M):
    standards: dict[str, Standard] = Field(description="Monthly dibao standard per region code; 'default' required")
    members: MemberRule | None = None
    # At least one item: with none every household would be "below the standard".
    income: list[IncomeItem] = Field(min_length=1)
    deductions: list[IncomeItem] = []
    assets: list[AssetFlag] = []
    info: list[InfoField] = []
    temporary_assistance: TemporaryAssistance | None = None

    @model_validator(mode="after")
    def _checks(self) -> Rules:
        if "default" not in self.standards:
            raise FieldValueError("standards.default", "nothing", "the fallback monthly standard")
        for region, std in self.standards.items():
            if region != "default" and (not region.isdigit() or len(region) not in (6, 9, 12)):
                raise FieldValueError(f"standards.{region[:16]}", repr(region[:16]), "'default' or a 6-, 9- or 12-digit region code")
            if isinstance(std, list):
                if not std:
                    raise FieldValueError(f"standards.{region}", "an empty list", "at least one { from, amount }")
                months = [p.since for p in std]
                if len(set(months)) != len(months):
                    raise FieldValueError(f"standards.{region}", f"months {months}", "each 'from' month once")
            elif std <= 0:
                raise FieldValueError(f"standards.{region}", str(std), "a positive monthly amount")
        flags = [a.flag for a in self.assets]
        if len(set(flags)) != len(flags):
            raise FieldValueError("assets", f"flags {flags}", "each flag name once")
        return self

    def standard_for(self, region: str, month: Month | None = None) -> Decimal | None:
        """The standard in force for ``region`` in reference month ``month``: the region's own
        entry, else ``default``; of a dated list, the latest entry starting on or before the
        month (None when none has started: the report then concludes nothing)."""
        for key in (region, "default"):
            std = self.standards.get(key)
            if std is None:
                continue
            if isinstance(std, Decimal):
                return std
            if month is None:
                return max(std, key=lambda p: p.since).amount
            started = [p for p in std if p.since <= str(month)]
            if started:
                return max(started, key=lambda p: p.since).amount
        return None

    def unknown_fields(self, offered: Mapping[str, Collection[str]]) -> list[str]:
        """``key: got X, want Y`` for every rule naming a department or field the directory
        does not offer (``offered``: member code → its catalogue's field names); checked by
        ``node check`` on a hub, since such a rule makes every report incomplete."""
        named: list[tuple[str, str, str]] = []
        if self.members is not None:
            named.append(("members", self.members.provider, self.members.field))
        groups: tuple[tuple[str, Sequence[IncomeItem | AssetFlag | InfoField]], ...] = (
            ("income", self.income), ("deductions", self.deductions), ("assets", self.assets), ("info", self.info))
        for key, items in groups:
            named += [(f"{key}[{i}]", it.provider, it.field) for i, it in enumerate(items)]
        if self.temporary_assistance is not None:
            named.append(("temporary_assistance", self.temporary_assistance.provider, self.temporary_assistance.field))
        out = []
        for key, provider, field in named:
            if provider not in offered:
                out.append(f"{key}.provider: got {provider!r}, want a department in the directory ({', '.join(sorted(offered))})")
            elif field not in offered[provider]:
                out.append(f"{key}.field: got {field!r}, want one of {provider}'s fields ({', '.join(sorted(offered[provider]))})")
        return out

    def fields_by_provider(self) -> dict[str, list[str]]:
        """provider → the fields a case asks it, in rule order (each once)."""
        need: dict[str, list[str]] = {}

        def add(provider: str, field: str) -> None:
            fields = need.setdefault(provider, [])
            if field not in fields:
                fields.append(field)

        if self.members is not None:
            add(self.members.provider, self.members.field)
        rows: list[IncomeItem | AssetFlag | InfoField] = [*self.income, *self.deductions, *self.assets, *self.info]
        for it in rows:
            add(it.provider, it.field)
        if self.temporary_assistance is not None:
            add(self.temporary_assistance.provider, self.temporary_assistance.field)
        return need


_WHAT = "verification rules"


def load_rules(path: Path | None) -> Rules:
    if path is None:
        return default_rules()
    return load_toml(path, Rules, what=_WHAT)


def parse_rules(text: str, source: str = "verification-rules.toml") -> Rules:
    return parse_toml(text, Rules, source=source, what=_WHAT)


def default_rules() -> Rules:
    text = resources.files("hedui.node").joinpath("data/verification-rules.toml").read_text(encoding="utf-8")
    return parse_toml(text, Rules, source="verification-rules.toml (packaged default)", what=_WHAT)
