"""Nine department databases as real departments keep them, with designed households for
acceptance tests and background residents up to benchmark scale.

``generate(sqlite_dir=…, pg_url=…, residents=…, seed=…, extract_date=…)`` writes one SQLite
file per department (``<key>.sqlite``) and/or one PostgreSQL schema per department (``<key>``),
from the same row stream. Each department has its own tables, names, units, codes and identity
messiness (docs/department-data.md); each records how current its extract is. The designed
households and cross-check recipients (:mod:`.designed`, :mod:`.designed_crosscheck`) are in
every federation, whatever the size; the local rules they test are in docs/acceptance-rules.md.

Deterministic: no wall clock (every date derives from ``extract_date`` or is fixed), one seeded
``random.Random`` per stream; the same arguments give the same rows (and the same SQLite bytes).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from . import budongchan, canlian, cheguan, gongjijin, huji, minzheng, shebao, shuiwu, yibao
from ._background import Background
from ._sink import GenerateError, Out, PgSink, SqliteSink
from .designed import Designed, build

__all__ = ["DEPARTMENTS", "EXTRACT_DATE", "GenerateError", "Summary", "data_dates", "designed", "generate"]

DEPARTMENTS = {m.KEY: m for m in (huji, shebao, shuiwu, budongchan, cheguan, gongjijin, yibao, canlian, minzheng)}
EXTRACT_DATE = date(2026, 10, 31)
SEED = 20261031


@dataclass(frozen=True)
class Summary:
    extract_date: date
    residents: int
    households: int
    rows: dict[str, dict[str, int]]
    data_dates: dict[str, date]


def designed() -> Designed:
    """The designed households and recipients (fixed, independent of seed and size)."""
    return build()


def data_dates(extract_date: date = EXTRACT_DATE) -> dict[str, date]:
    """The last day each department's extract covers (tax: the last period filed)."""
    return {k: m.data_date(extract_date) for k, m in DEPARTMENTS.items()}


def generate(sqlite_dir: Path | str | None = None, pg_url: str | None = None, *, residents: int = 300,
             seed: int = SEED, extract_date: date = EXTRACT_DATE, recipient_share: float = 0.08,
             replace: bool = False, progress: bool = False) -> Summary:
    """Writes the nine databases; raises :class:`GenerateError` (nothing written) on bad input."""
    if sqlite_dir is None and pg_url is None:
        raise GenerateError("target: got neither a SQLite folder nor a PostgreSQL URL, want at least one")
    if not isinstance(residents, int) or isinstance(residents, bool) or not 0 <= residents <= 10**8:
        raise GenerateError(f"residents: got {residents!r}, want a whole number from 0 to 100000000")
    if not 0.0 <= recipient_share <= 0.4:
        raise GenerateError(f"recipient_share: got {recipient_share!r}, want 0 to 0.4")
    if not isinstance(extract_date, date) or not date(2024, 1, 1) <= extract_date <= date(2030, 12, 31):
        raise GenerateError(f"extract_date: got {extract_date!r}, want a date from 2024-01-01 to 2030-12-31")
    keys = list(DEPARTMENTS)
    sinks: list = []
    if sqlite_dir is not None:
        sinks.append(SqliteSink(Path(sqlite_dir), replace))
    if pg_url is not None:
        sinks.append(PgSink(pg_url, replace))
    try:
        for s in sinks:
            s.check(keys)
        tables = {k: m.TABLES for k, m in DEPARTMENTS.items()}
        for s in sinks:
            for k in keys:
                s.open(k, tables[k])
        out = Out(sinks, tables)
        writers = [m.Writer(out.emitter(k), extract_date) for k, m in DEPARTMENTS.items()]
        households = 0
        for h in build().all():
            for w in writers:
                w.household(h)
            households += 1
        bg = Background(seed, extract_date, residents, recipient_share)
        with _Progress(progress, residents) as advance:
            for h in bg.households():
                for w in writers:
                    w.household(h)
                households += 1
                advance(len(h.members))
        out.flush()
        for s in sinks:
            for k in keys:
                s.finish(k, tables[k])
        for s in sinks:
            s.commit()
    except BaseException as e:
        for s in sinks:
            s.abort()
        if isinstance(e, (OSError, sqlite3.Error)) or type(e).__module__.startswith("psycopg"):
            raise GenerateError(f"write: {type(e).__name__}: {e}".splitlines()[0]) from None
        raise
    return Summary(extract_date, residents, households, out.counts, data_dates(extract_date))


class _Progress:
    """A rich progress bar over residents written (off in tests)."""

    def __init__(self, show: bool, total: int) -> None:
        self.show, self.total, self.bar = show, total, None

    def __enter__(self):
        if not self.show:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self.bar.start()
        task = self.bar.add_task("residents", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
