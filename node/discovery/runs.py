"""What one detection run did: its counts, the rows it could not use and the rows the
mapping skipped, named by locator (issue 13: "runs over department data say how much was
unusable"), and whether that fails the run. Split from provider.py, which runs it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

from hedui.adapters import idnum
from hedui.adapters.records import RowProblem
from hedui.node.discovery.detect import Detection

__all__ = ["MAX_LISTED", "DetectionRun"]


@dataclass(frozen=True)
class DetectionRun:
    """What one detection run did (public fields only; the detections hide their identity)."""

    as_of: date
    rules: tuple[str, ...]
    records: int
    problems: int
    detections: tuple[Detection, ...] = field(repr=False)
    queued: int
    #: Every row that could not be used, by locator and reason (never by identity), up to
    #: :data:`MAX_LISTED`; ``problems`` counts them all.
    problem_rows: tuple[RowProblem, ...] = ()
    #: The configured limit (``provider.max_unusable_share``).
    max_unusable_share: float = 1.0
    #: Rows the mapping's filters skipped (``source.where``, ``identity.skip_where``): read
    #: and legitimately not used — counted apart from ``problems`` (issue 13) …
    skipped: int = 0
    #: … and named, as (locator, filter), up to :data:`MAX_LISTED` (file exports; a database
    #: source's filter runs in SQL, so its skipped rows are counted only).
    skipped_rows: tuple[tuple[str, str], ...] = ()
    #: The locator of the row the export ends inside (a truncated export, or a quote never
    #: closed): rows after it are missing, however few problems were counted.
    truncated: str | None = None

    @property
    def unusable_share(self) -> float:
        """Rows that could not be used, as a share of every row read."""
        total = self.records + self.problems
        return self.problems / total if total else 0.0

    @property
    def too_many_unusable(self) -> bool:
        """More rows failed than the configured share allows, or the export is truncated
        (issue 13): the run must not be taken for a complete one — a truncated or undecodable
        export would otherwise detect little and report success."""
        if self.truncated is not None:
            return True
        return self.problems > 0 and self.unusable_share > self.max_unusable_share

    def as_dict(self) -> dict:
        return {
            "as_of": self.as_of.isoformat(),
            "rules": list(self.rules),
            "records": self.records,
            "problems": self.problems,
            "unusable_share": round(self.unusable_share, 6),
            "max_unusable_share": self.max_unusable_share,
            "too_many_unusable": self.too_many_unusable,
            "problem_rows": [{"locator": p.locator, "reason": p.reason} for p in self.problem_rows],
            "skipped": self.skipped,
            "skipped_rows": [{"locator": loc, "filter": why} for loc, why in self.skipped_rows],
            "truncated": self.truncated,
            "queued": self.queued,
            "detections": [
                d.public() for d in self.detections
            ],
        }


#: Problem rows a run lists by locator (all are counted).
MAX_LISTED = 1000


class _Counted:
    """Yields the adapter's records, counting (and skipping) the rows it could not use, and
    keeping the first :data:`MAX_LISTED` of those by locator and reason."""

    def __init__(self, items: Iterable) -> None:
        self._items = items
        self.records = 0
        self.problems = 0
        self.listed: list[RowProblem] = []

    def __iter__(self) -> Iterator:
        for item in self._items:
            if isinstance(item, RowProblem):
                self.problems += 1
                if len(self.listed) < MAX_LISTED:
                    self.listed.append(RowProblem(idnum.scrub(item.locator), idnum.scrub(item.reason)))
                continue
            self.records += 1
            yield item
