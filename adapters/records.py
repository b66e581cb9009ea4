"""Canonical records: what every adapter yields, whatever the department's format.

A record is one person's identity (already normalised, see :mod:`hedui.adapters.idnum`)
plus typed, dated facts. Money is always in yuan as :class:`~decimal.Decimal`; the
adapter converts from fen or 10k yuan. Nothing else of the source row survives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

__all__ = ["Fact", "Record", "RowProblem"]


@dataclass(frozen=True, slots=True)
class Fact:
    """One typed, dated fact about a person.

    ``name`` is the mapping's fact name (e.g. ``wage``, ``inpatient_stay``, ``vehicle``);
    ``unit`` is ``CNY`` for money, or ``m2``, ``count``, ``code``, ``bool``.
    ``on`` is the date the fact describes (pay date, discharge date, certificate date).
    ``until`` is the LAST day the fact holds (inclusive), for facts that hold over a span; None
    while it still holds. The adapter folds the mapping's ``until.inclusive`` in: an exclusive
    end column (a right's cancellation day, a transfer day) gives that day minus one, so an
    ``until`` before ``on`` means the fact never held a whole day.
    ``attrs`` holds further typed columns the mapping declares (strings, ISO dates).
    Codes keep their text (``"0400"``, ``"住宅"``, ``"A"``): the value is a ``str`` for ``code``
    facts and a :class:`~decimal.Decimal` for every other type.
    """

    name: str
    value: Decimal | str
    unit: str
    on: date | None = None
    attrs: Mapping[str, str] = field(default_factory=dict)
    until: date | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """One source row turned canonical. ``locator`` says where it came from
    (``table:pk=17`` or ``file.csv:line 12``) and never contains the identity."""

    identity: str
    locator: str
    facts: tuple[Fact, ...]


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row an adapter could not use, reported by locator, never by identity."""

    locator: str
    reason: str


@dataclass(frozen=True, slots=True)
class RawRow:
    """A source row read but not converted yet: its locator and the values of the columns
    the mapping refers to, in the order of the adapter's ``raw_converter()`` references. The
    index build converts these in its worker processes (issue 16 item 4)."""

    locator: str
    values: tuple
