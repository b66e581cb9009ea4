"""How a message words one bad value, without pydantic (issue 16 item 4): the index build's
worker processes convert rows with the mapping's filters (adapters/filters.py), and importing
pydantic there cost each worker half a second of a few-second build. hedui.common.toml
re-exports both names."""

from __future__ import annotations

from typing import Any

__all__ = ["FieldValueError", "show"]


class FieldValueError(ValueError):
    """Raised by a model validator for a problem that concerns one key below the model
    (a cross-field rule): reported as ``key: got X, want Y`` under that key."""

    def __init__(self, key: str, got: str, want: str) -> None:
        super().__init__(f"{key}: got {got}, want {want}")
        self.key, self.got, self.want = key, got, want


def show(v: Any) -> str:
    """A value as a message shows it: ``nothing``, ``a table``, or its repr cut to 60 characters."""
    if v is None:
        return "nothing"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return f"an array of {len(v)}"
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."
