"""Data-source adapters: department data in, canonical records out.

``open_adapter(mapping)`` returns the adapter for a mapping (a :class:`Mapping`, or the path
of a mapping TOML file). Every adapter has the same small surface (:class:`Adapter`):
``check()`` validates the mapping against the real source before any work, ``records()``
yields one :class:`Record` or :class:`RowProblem` per source row, and ``scan()`` yields the
same with a resume position after each item (what the index builder persists). Rows the
mapping skips (``source.where``, ``identity.skip_where``) are neither: ``skipped`` counts them.
``data_date()`` says how current the source is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from hedui.adapters.records import Fact, Record, RowProblem

if TYPE_CHECKING:
    from hedui.adapters.mapping import Mapping, load_mapping

__all__ = ["Adapter", "open_adapter", "Mapping", "load_mapping", "Fact", "Record", "RowProblem"]


@runtime_checkable
class Adapter(Protocol):
    mapping: Mapping
    #: Rows the last scan skipped by ``source.where`` / ``identity.skip_where`` (not problems).
    skipped: int

    @property
    def source(self) -> str:
        """The mapping's stable source name."""

    @property
    def fingerprint(self) -> str:
        """Changes when the mapping (or, for files, the file) changes: then a full re-read is due."""

    def check(self) -> None:
        """Raises SourceError naming the mapping key if a table, column, sheet or header is missing."""

    def scan(self, since: Any = None) -> Iterator[tuple[Record | RowProblem, Any]]:
        """Yields each row's record or problem with the position after it (an opaque JSON
        value: the index stores the last one of each committed batch)."""

    def records(self, since: Any = None) -> Iterator[Record | RowProblem]:
        """Yields each row's record or problem, after position ``since`` if given."""

    def data_date(self) -> date | None:
        """How current the source's data is (``source.data_date``, read from the database
        when it names a table); None when the mapping declares none."""

    def close(self) -> None: ...


def __getattr__(name: str) -> Any:
    # The mapping models (pydantic) load on first use, not with the package: the index
    # build's worker processes import hedui.adapters (idnum, the converter) and never a
    # mapping, and pydantic's import was half a second of each worker's start (issue 16 item 4).
    if name in ("Mapping", "load_mapping"):
        from hedui.adapters import mapping

        return getattr(mapping, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_adapter(mapping: Mapping | str | Path) -> Adapter:
    """The adapter for a mapping; nothing is opened or read until ``check()``/``scan()``."""
    from hedui.adapters.mapping import CsvSource, ExcelSource, Mapping, SqlSource, load_mapping

    m = mapping if isinstance(mapping, Mapping) else load_mapping(mapping)
    if isinstance(m.source, SqlSource):
        from hedui.adapters.sql import SqlAdapter

        return SqlAdapter(m)
    from hedui.adapters.tabular import CsvAdapter, ExcelAdapter

    if isinstance(m.source, CsvSource):
        return CsvAdapter(m)
    assert isinstance(m.source, ExcelSource)
    return ExcelAdapter(m)
