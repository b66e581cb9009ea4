"""The provider's field catalogue: which typed, dated aggregates it answers (how each is
derived from the facts in its token index is :mod:`hedui.node.verification.answer`).

A catalogue is TOML (``[provider] fields = "fields.toml"``)::

    [[fields]]
    name = "wages_12m"            # what the hub asks for
    type = "money"                # money | integer | decimal | boolean | code
    unit = "CNY"
    description = "近12个月工资收入合计"
    fact = "wage"                 # fact name the adapter mapping produces
    agg = "sum"                   # sum | count | max | min | latest | exists
    window_months = 12            # only facts dated within the window (0 = all time)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hedui.common.toml import load_toml
from hedui.node.errors import ConfigError

__all__ = ["FieldDef", "Catalogue", "load_catalogue"]

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
