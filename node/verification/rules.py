"""The hub's verification rules (核对规则): which answers count as income, which are
deducted, the local dibao standards, asset flags and temporary-assistance tiers.

Rules live in a TOML file (``[hub] rules = "verification-rules.toml"``), never in code; the
packaged default is ``hedui/node/data/verification-rules.toml`` and docs/caseworker.md is
its reference. Every amount is CNY.
"""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hedui.common.toml import FieldValueError, load_toml, parse_toml

__all__ = ["Rules", "load_rules", "default_rules"]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IncomeItem(_M):
    provider: str
    field: str
    months: int = Field(ge=1, le=120, description="Months the value covers; monthly = value / months")
    label: str = ""


class AssetFlag(_M):
    flag: str
    label: str = ""
    provider: str
    field: str
    op: Literal[">=", "=="] = ">="
    threshold: Decimal
    scope: Literal["member", "household"] = "member"


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
    standards: dict[str, Decimal] = Field(description="Monthly dibao standard per region code; 'default' required")
    income: list[IncomeItem]
    deductions: list[IncomeItem] = []
    assets: list[AssetFlag] = []
    temporary_assistance: TemporaryAssistance | None = None

    @model_validator(mode="after")
    def _has_default(self) -> Rules:
        if "default" not in self.standards:
            raise FieldValueError("standards.default", "nothing", "the fallback monthly standard")
        return self

    def standard_for(self, region: str) -> Decimal:
        return self.standards.get(region, self.standards["default"])

    def fields_by_provider(self) -> dict[str, list[str]]:
        need: dict[str, list[str]] = {}
        items = list(self.income) + list(self.deductions)
        for it in items:
            need.setdefault(it.provider, [])
            if it.field not in need[it.provider]:
                need[it.provider].append(it.field)
        for a in self.assets:
            need.setdefault(a.provider, [])
            if a.field not in need[a.provider]:
                need[a.provider].append(a.field)
        ta = self.temporary_assistance
        if ta is not None:
            need.setdefault(ta.provider, [])
            if ta.field not in need[ta.provider]:
                need[ta.provider].append(ta.field)
        return need


_WHAT = "verification rules"


def load_rules(path: Path | None) -> Rules:
    if path is None:
        return default_rules()
    return load_toml(path, Rules, what=_WHAT)


def default_rules() -> Rules:
    text = resources.files("hedui.node").joinpath("data/verification-rules.toml").read_text(encoding="utf-8")
    return parse_toml(text, Rules, source="verification-rules.toml (packaged default)", what=_WHAT)
