"""The token index: every identity in a department's data, as its OPRF token, with the
facts the department derives for it.

:func:`build_index` reads a source through its adapter, computes ``F(k, id)`` (RFC 9497
§3.3.1 Evaluate, the expensive step) for each identity in a process pool, groups the facts
by token and writes them in batches. Each batch commits together with the adapter position
after it, so a build killed at any point (``kill -9`` included) resumes from the last
committed batch without losing or duplicating a row: facts are filed by source row
(locator), so re-reading a row replaces it. A later build of the same epoch reads only what
the adapter reports as changed since (watermark or key) and moves a row whose identity
changed to its new token; a full re-read (mapping or export file changed, or ``full=True``)
also removes the rows that disappeared from the source.

Serving is all-or-nothing per build (issue 13 item 1): a run writes its token rows under its
own generation (``gen`` = the run number), which readers do not see; the swap at its end
(:func:`_swap`, one transaction) sets ``index_progress.live_gen`` and deletes what the run
supersedes. Until then readers (node/verification/index_read.py) answer from the previous
complete build, or refuse with ``INDEX_NOT_READY`` when there is none. A resumed run keeps
its generation; a run that is abandoned (a new full run replaces it) is deleted.

Key rotation: build epoch N+1 with the new key while N keeps answering;
:func:`live_epochs` lists the epochs whose every source has completed a build;
:func:`retire_epoch` drops an old one.

Nothing here stores an identity number: tokens, locators (table and key, or file and
line), derived facts and problem reasons only — and text is scrubbed of anything shaped
like one before it is written.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine, delete, func, select, text, true, update

from hedui.adapters import Adapter
from hedui.common.clock import Clock
from hedui.keys.oprf import ServerKey
from hedui.node.errors import InvalidArgument
from hedui.node.verification.index_read import (
    all_tokens,
    count_tokens,
    data_dates,
    facts_for_tokens,
    list_problems,
    live_epochs,
    read_live,
)
from hedui.node.verification.index_sql import Sql
from hedui.node.verification.index_tables import index_problems, index_progress, index_rows, token_index
from hedui.node.verification.index_work import Fresh, FreshSpec, Workers, dump, token_doc

__all__ = ["IndexReport", "build_index", "facts_for_tokens", "read_live", "all_tokens", "live_epochs", "retire_epoch",
           "list_problems", "data_dates", "source_data_date"]

_IN_FLIGHT = 3           # batches whose tokens are being computed while one is written
# Rows per transaction of a fresh full build on SQLite (issue 16 item 4, docs/performance.md
# "Index build, 10^6 residents on SQLite"): the token index's primary key is in token order,
# i.e. random, so every commit rewrites (WAL, then checkpoint) about one leaf page per row
# it inserted until the index outgrows the batch; at 10^6 residents a commit per 2,000 rows
# spent 112 of a 271 s build in COMMIT. The unit of resumption grows with it, nothing else:
# each transaction still commits its rows with the position after them.
SQLITE_FRESH_COMMIT_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class IndexReport:
    epoch: int
    source: str
    mode: str            # "full" (read everything, then drop vanished rows) or "incremental"
    resumed: bool        # continued an interrupted run
    rows: int            # source rows read by this call
    records: int         # of which usable records
    problems: int        # of which problem rows
    removed: int         # rows dropped because they left the source (full runs)
    tokens: int          # live tokens in the epoch after the build
    seconds: float
    skipped: int = 0             # rows the mapping's filters skip (not problems), this call
    unusable_share: float = 0.0  # problem lines / (records + problem lines) over the whole run
    truncated: bool = False      # the source ends inside a row (a truncated export)
    live: bool = True            # the run went live (False: held back, see max_unusable_share)

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


# --- the build ----------------------------------------------------------------------------------

@dataclass
class _Run:
    epoch: int
    source: str
    run: int             # also the generation its token rows are written under
    mode: str
    position: str | None
    resumed: bool
    clock: Clock
    rows_read: int = 0   # rows committed by this run so far: the next batch's part number

    @property
    def fresh(self) -> bool:
        # The first run of a source in an epoch reads each row once, in increasing position,
        # so a record's locator cannot be in index_rows yet (even after a resume).
        return self.run == 1 and self.mode == "full"


_TOKEN_COLS = ("epoch", "token", "source", "gen", "part", "facts", "row_count")
# Created after the rows on a store's first build (issue 16 item 4); the swap re-creates them.
_SECONDARY = {"ix_token_index_gen": "token_index (epoch, source, gen)",
              "ix_index_rows_sweep": "index_rows (epoch, source, run)"}


def _start(engine: Engine, adapter: Adapter, epoch: int, full: bool, clock: Clock) -> _Run:
    fp = adapter.fingerprint
    now = clock.now()
    src = adapter.source
    with engine.begin() as conn:
        _lock(conn, epoch)
        row = conn.execute(select(index_progress).where(
            index_progress.c.epoch == epoch, index_progress.c.source == src)).mappings().first()
        if row is None:
            run = _Run(epoch, src, 1, "full", None, False, clock)
            conn.execute(index_progress.insert().values(
                epoch=epoch, source=src, run=1, mode="full", status="running", position=None,
                fingerprint=fp, rows_read=0, started_at=now, updated_at=now, completed_at=None, live_gen=None,
                problem_rows=0))
            if conn.execute(select(token_index.c.epoch).limit(1)).first() is None:
                for name in _SECONDARY:   # an empty store: load first, index after (the swap)
                    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
            return run
        if row["status"] == "running" and row["fingerprint"] == fp and not full:
            return _Run(epoch, src, row["run"], row["mode"], row["position"], True, clock, row["rows_read"])
        incremental = row["status"] == "done" and row["fingerprint"] == fp and not full
        run = _Run(epoch, src, row["run"] + 1, "incremental" if incremental else "full",
                   row["position"] if incremental else None, False, clock)
        # Rows of an abandoned run (never made live) go; the live build stays until the swap.
        live = row["live_gen"]
        conn.execute(delete(token_index).where(token_index.c.epoch == epoch, token_index.c.source == src,
                                               token_index.c.gen > live if live is not None else true()))
        conn.execute(update(index_progress).where(
            index_progress.c.epoch == epoch, index_progress.c.source == src).values(
            run=run.run, mode=run.mode, status="running", position=run.position, fingerprint=fp,
            rows_read=0, problem_rows=0, started_at=now, updated_at=now))
        return run


def _lock(conn, epoch: int) -> None:
    # Builders of one epoch and their swaps take turns (PostgreSQL; SQLite serialises writers).
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k, :e)"), {"k": 0x48454449, "e": epoch})


def _latest(prepared: list) -> dict[str, tuple]:
    """Locator -> ``("r", token, facts_json)`` or ``("p", reason, None)``; the last item for a
    locator wins (a re-read row, or a duplicate reported as a problem)."""
    latest: dict[str, tuple] = {}
    for it in prepared:
        if it[0] != "s":
            latest[it[1]] = (it[0], it[2], it[3] if it[0] == "r" else None)
    return latest


def _write_batch(engine: Engine, run: _Run, prepared: list, position: Any) -> None:
    """One batch (as the workers prepared it, index_work.py) and the position after it, in
    one transaction (the unit of resumption). Rows go under the run's generation, which no
    reader sees before the swap. ``prepared`` is the batch's items, or (a fresh full run)
    its chunks ready to write (:class:`Fresh`)."""
    sql = Sql(engine.dialect.name)
    with engine.begin() as conn:
        _lock(conn, run.epoch)
        if prepared and type(prepared[0]) is Fresh:
            used, bad = _write_ready(conn, sql, run, prepared)
        else:
            latest = _latest(prepared)
            if run.mode == "full":
                _write_full(conn, sql, run, latest)
            else:
                _write_incremental(conn, sql, run, latest)
            used = sum(1 for it in prepared if it[0] != "s")
            bad = sum(1 for it in prepared if it[0] == "p")
        values: dict[str, Any] = {"rows_read": index_progress.c.rows_read + used, "updated_at": run.clock.now(),
                                  "problem_rows": index_progress.c.problem_rows + bad}
        if position is not None:
            values["position"] = json.dumps(position, sort_keys=True)
        conn.execute(update(index_progress).where(index_progress.c.epoch == run.epoch,
                                                  index_progress.c.source == run.source).values(**values))
    run.rows_read += used


_ROW_COLS = ("epoch", "source", "locator", "token", "run")


def _write_ready(conn, sql: Sql, run: _Run, chunks: list[Fresh]) -> tuple[int, int]:
    """A fresh full run's batch, whose workers made each chunk ready to write (index_work.py
    ``prepare_fresh``): the chunks' token rows and row→token maps are appended as they
    came, then their problem rows filed — a problem takes a record of the same locator
    written earlier in this run back out, as :func:`_write_full` does. Returns the rows
    used and the problem rows."""
    # With problems, chunk by chunk in source order, so that the last word on a locator wins.
    groups = [chunks] if not any(c.problems for c in chunks) else [[c] for c in chunks]
    for group in groups:
        sql.copy_ready(conn, "token_index", _TOKEN_COLS, [c.tokens for c in group])
        sql.copy_ready(conn, "index_rows", _ROW_COLS, [c.rows for c in group])
        problems = [p for c in group for p in c.problems]
        if problems:
            _file_problems(conn, sql, run, problems)
    return sum(c.used for c in chunks), sum(c.problem_rows for c in chunks)


def _file_problems(conn, sql: Sql, run: _Run, problems: list[tuple[str, str]]) -> None:
    """Files problem rows of a full run, taking each locator's record of this run out."""
    ep, src, g = run.epoch, run.source, run.run
    locs = [loc for loc, _ in problems]
    old = list(sql.select_in(conn, "SELECT locator, token, run FROM index_rows WHERE epoch = ? AND source = ? AND locator",
                             (ep, src), locs))
    for loc, tok, r in old:
        if r == g:
            _drop_locator(conn, run, bytes(tok), loc)
    sql.delete_in(conn, "DELETE FROM index_rows WHERE epoch = ? AND source = ? AND locator", (ep, src),
                  [loc for loc, _, _ in old])
    sql.upsert(conn, "index_problems", "reason", ep, src, g, problems)


def _next_part(engine: Engine, run: _Run) -> int:
    """The first part number free in the run's generation (0 for a run not resumed)."""
    if not run.resumed:
        return 0
    with engine.connect() as conn:
        got = conn.execute(select(func.max(token_index.c.part)).where(
            token_index.c.epoch == run.epoch, token_index.c.source == run.source, token_index.c.gen == run.run)).scalar()
    return 0 if got is None else int(got) + 1


def _write_full(conn, sql: Sql, run: _Run, latest: dict[str, tuple]) -> None:
    """A full read: each record's locator is new to this run, so its facts are appended as a
    new part (no read-back); only a problem can follow a record of the same run."""
    ep, src, g = run.epoch, run.source, run.run
    by_tok: dict[bytes, list[tuple[str, str]]] = {}
    rows, problems = [], []
    for loc, (kind, a, b) in latest.items():
        if kind == "r":
            by_tok.setdefault(a, []).append((loc, b))
            rows.append((loc, a))
        else:
            problems.append((loc, a))
    # In key order: neighbouring keys share index pages.
    sql.copy(conn, "token_index", _TOKEN_COLS,
             sorted((ep, tok, src, g, run.rows_read, token_doc(pairs), len(pairs)) for tok, pairs in by_tok.items()))
    if run.fresh:
        sql.copy(conn, "index_rows", _ROW_COLS, [(ep, src, loc, tok, g) for loc, tok in rows])
    else:
        sql.upsert(conn, "index_rows", "token", ep, src, g, rows)
        sql.delete_in(conn, "DELETE FROM index_problems WHERE epoch = ? AND source = ? AND locator", (ep, src),
                      [loc for loc, _ in rows])
    if problems:
        _file_problems(conn, sql, run, problems)


def _drop_locator(conn, run: _Run, tok: bytes, loc: str) -> None:
    """Takes ``loc`` out of the part of this run's generation that holds it."""
    key = (token_index.c.epoch == run.epoch, token_index.c.token == tok, token_index.c.source == run.source,
           token_index.c.gen == run.run)
    for part, facts in conn.execute(select(token_index.c.part, token_index.c.facts).where(*key)).all():
        doc = json.loads(facts)
        if doc.pop(loc, None) is None:
            continue
        here = (*key, token_index.c.part == part)
        if doc:
            conn.execute(update(token_index).where(*here).values(facts=dump(doc), row_count=len(doc)))
        else:
            conn.execute(delete(token_index).where(*here))


def _current_docs(conn, sql: Sql, run: _Run, tokens: list[bytes]) -> dict[bytes, dict[str, list]]:
    """Each token's facts from this source as this run sees them: its newest generation up
    to the run's own (the live build, or what this run already wrote), parts merged."""
    got: dict[bytes, tuple[int, dict[str, list]]] = {}
    q = "SELECT token, gen, facts FROM token_index WHERE epoch = ? AND source = ? AND gen <= ? AND token"
    for tok, gen, facts in sql.select_in(conn, q, (run.epoch, run.source, run.run), tokens):
        tok = bytes(tok)
        have = got.get(tok)
        if have is None or gen > have[0]:
            got[tok] = (gen, json.loads(facts))
        elif gen == have[0]:
            have[1].update(json.loads(facts))
    return {tok: doc for tok, (_, doc) in got.items()}


def _write_incremental(conn, sql: Sql, run: _Run, latest: dict[str, tuple]) -> None:
    """Changed rows: each touched token gets one row in this run's generation holding its
    new facts from this source (an empty one when none are left); the swap makes them live
    and drops what they supersede."""
    ep, src, g = run.epoch, run.source, run.run
    q = "SELECT locator, token FROM index_rows WHERE epoch = ? AND source = ? AND locator"
    old = {loc: bytes(tok) for loc, tok in sql.select_in(conn, q, (ep, src), list(latest))}
    touched = set(old.values()) | {a for kind, a, _ in latest.values() if kind == "r"}
    docs = _current_docs(conn, sql, run, sorted(touched))
    for loc, tok in old.items():           # take every re-read row out of its old place
        docs.get(tok, {}).pop(loc, None)
    row_rows, prob_rows, gone, fixed = [], [], [], []
    for loc, (kind, a, b) in latest.items():
        if kind == "r":
            docs.setdefault(a, {})[loc] = json.loads(b)
            row_rows.append((loc, a))
            fixed.append(loc)
        else:
            prob_rows.append((loc, a))
            if loc in old:
                gone.append(loc)
    sql.delete_in(conn, "DELETE FROM token_index WHERE epoch = ? AND source = ? AND gen = ? AND token", (ep, src, g),
                  sorted(docs))
    sql.copy(conn, "token_index", _TOKEN_COLS,
             sorted((ep, tok, src, g, run.rows_read, dump(doc), len(doc)) for tok, doc in docs.items()))
    sql.upsert(conn, "index_rows", "token", ep, src, g, row_rows)
    sql.delete_in(conn, "DELETE FROM index_rows WHERE epoch = ? AND source = ? AND locator", (ep, src), gone)
    sql.upsert(conn, "index_problems", "reason", ep, src, g, prob_rows)
    sql.delete_in(conn, "DELETE FROM index_problems WHERE epoch = ? AND source = ? AND locator", (ep, src), fixed)


def _swap(engine: Engine, run: _Run, data_date: date) -> int:
    """Makes the run live, in one transaction: drops what it supersedes (every older
    generation after a full read; older rows of the tokens it rewrote after an incremental
    one), its empty rows, and (full) the rows and problems it did not see; then
    ``live_gen`` = the run. Returns the source rows removed (full runs)."""
    ep, src, g = run.epoch, run.source, run.run
    now = run.clock.now()
    pg = engine.dialect.name == "postgresql"
    removed = 0
    with engine.begin() as conn:
        _lock(conn, ep)
        for name, on in _SECONDARY.items():
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {on}")
        p = {"e": ep, "s": src, "g": g}
        if run.mode == "full":
            conn.execute(text("DELETE FROM token_index WHERE epoch = :e AND source = :s AND gen < :g"), p)
            removed = conn.execute(text("DELETE FROM index_rows WHERE epoch = :e AND source = :s AND run < :g"), p).rowcount
            conn.execute(text("DELETE FROM index_problems WHERE epoch = :e AND source = :s AND run < :g"), p)
        elif pg:
            conn.execute(text("DELETE FROM token_index o USING token_index n WHERE n.epoch = :e AND n.source = :s "
                              "AND n.gen = :g AND o.epoch = n.epoch AND o.token = n.token AND o.source = n.source "
                              "AND o.gen < n.gen"), p)
        else:
            conn.execute(text("DELETE FROM token_index WHERE rowid IN (SELECT o.rowid FROM token_index n JOIN token_index o "
                              "ON o.epoch = n.epoch AND o.token = n.token AND o.source = n.source AND o.gen < n.gen "
                              "WHERE n.epoch = :e AND n.source = :s AND n.gen = :g)"), p)
        if run.mode != "full":   # only an incremental run writes empty rows (tokens it emptied)
            conn.execute(text("DELETE FROM token_index WHERE epoch = :e AND source = :s AND gen = :g AND row_count = 0"), p)
        elif pg:   # planner statistics for the rows just loaded (ANALYZE is transactional)
            conn.exec_driver_sql("ANALYZE token_index")
            conn.exec_driver_sql("ANALYZE index_rows")
        conn.execute(update(index_progress).where(
            index_progress.c.epoch == ep, index_progress.c.source == src).values(
            status="done", live_gen=g, updated_at=now, data_date=data_date,
            completed_at=func.coalesce(index_progress.c.completed_at, now)))
    return removed


def source_data_date(adapter: Adapter, clock: Clock, configured: date | None = None) -> date:
    """The last day a source's data covers (issue 12: "each source declares how current its
    data is"): the adapter's reading of it from the data (``data_date()``), else the mapping's
    ``source.data_date``, else ``configured`` (node config), else the build day — a live
    table read now is current to today, and that is all that can be said of it."""
    read = getattr(adapter, "data_date", None)
    if callable(read):
        got = read()
        if isinstance(got, date):
            return got
    declared = getattr(getattr(getattr(adapter, "mapping", None), "source", None), "data_date", None)
    if isinstance(declared, date):
        return declared
    if isinstance(declared, str):
        try:
            return date.fromisoformat(declared)
        except ValueError:
            raise InvalidArgument(f"source.data_date: got {declared[:20]!r}, want YYYY-MM-DD") from None
    return configured or clock.today()


def build_index(engine: Engine, adapter: Adapter, server_key: ServerKey, epoch: int, *, clock: Clock,
                workers: int | None = None, progress: Any = None, full: bool = False,
                batch_size: int = 2000, data_date: date | None = None,
                max_unusable_share: float | None = None, commit_rows: int | None = None) -> IndexReport:
    """Builds or updates the token index of ``epoch`` from one adapter's source.

    Resumes an interrupted run of the same source and epoch; otherwise reads what changed
    since the last completed run (or everything, when the mapping or file changed or
    ``full`` is set). Nothing of the run is served before it completes: the swap at the end
    makes it live in one transaction. ``workers`` processes compute tokens (default: CPU
    count; 0 computes inline). ``progress`` is an optional ``rich.progress.Progress``.
    Checks the adapter (``check()``) before anything is written. Records the source's data
    date (:func:`source_data_date`, ``data_date`` being the node config's), read before the
    rows so that it never claims more than what was read.

    With ``max_unusable_share`` set (the CLI passes ``provider.max_unusable_share``), a run
    whose problem rows — counted by the physical lines they took — exceed that share of
    what it read, or whose source ends inside a row (a truncated export), is not made live:
    the report says ``live=False``, the previous build keeps answering, and the run stays
    open (issue 13: an export that all fails to decode must not become "no record" for all).

    ``commit_rows``: a fresh full run (the first of a source in an epoch) commits each batch
    alone until this many rows are in, then its batches together until at least this many
    rows are pending (default: one batch on PostgreSQL, :data:`SQLITE_FRESH_COMMIT_ROWS` on
    SQLite); other runs commit every batch.
    """
    if server_key.epoch != epoch:
        raise InvalidArgument(f"epoch: got {epoch}, want the server key's epoch {server_key.epoch}")
    if batch_size < 1:
        raise InvalidArgument(f"batch_size: got {batch_size}, want at least 1")
    if commit_rows is None:
        commit_rows = SQLITE_FRESH_COMMIT_ROWS if engine.dialect.name == "sqlite" else batch_size
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 0:
        raise InvalidArgument(f"workers: got {workers}, want 0 or more")
    started = time.perf_counter()
    adapter.check()
    # A SQL source hands over its rows unconverted: the workers convert them (index_work.py).
    raw = callable(getattr(adapter, "raw_scan", None)) and callable(getattr(adapter, "raw_converter", None))
    # Started first: the workers start up (imports) while this process reads the data date
    # and opens the run.
    workers_ = Workers(server_key, workers, adapter.raw_converter() if raw else None)  # type: ignore[attr-defined]
    try:
        covered = source_data_date(adapter, clock, data_date)
        run = _start(engine, adapter, epoch, full, clock)
        task = progress.add_task(f"index {run.source} (epoch {epoch}, {run.mode})", total=None) if progress else None
        counts = {"rows": 0, "records": 0, "problems": 0, "skipped": 0}
        scan = adapter.raw_scan if raw else adapter.scan  # type: ignore[attr-defined]
        inflight: deque = deque()
        held: list = []          # a fresh run's chunks not written yet (up to commit_rows rows)
        if run.fresh:
            # Each chunk comes back ready to write (index_work.py prepare_fresh), as one part.
            with engine.connect() as conn:
                encoding = Sql(engine.dialect.name).copy_encoding(conn)
            parts = iter(range(_next_part(engine, run), 1 << 62))

            def spec() -> FreshSpec:
                return FreshSpec(epoch, run.source, run.run, next(parts), encoding)

        def submit(items: list) -> list:
            return workers_.submit_fresh(items, spec) if run.fresh else workers_.submit(items)

        def drain_one(last: bool = False) -> None:
            n, pending, position = inflight.popleft()
            if run.fresh:
                chunks = workers_.chunks(pending)
                for c in chunks:
                    counts["records"] += c.records
                    counts["problems"] += c.problem_rows
                    counts["skipped"] += c.skipped
                    counts["rows"] += c.used
                held.extend(chunks)
                # Batches commit together (with the position after the last of them) once
                # commit_rows rows are pending, and at the end. Until commit_rows rows are in,
                # each batch commits alone: on a small index a commit is cheap, and writing
                # each batch as it comes overlaps the writes with the workers (a build of
                # fewer rows writes as it did before grouping).
                held_rows = sum(c.used + c.skipped for c in held)
                if last or held_rows >= commit_rows or run.rows_read + held_rows < commit_rows:
                    ready = held.copy()
                    held.clear()
                    _write_batch(engine, run, ready, position)
                if progress is not None:
                    progress.advance(task, n)
                return
            prepared = workers_.result(pending)
            for it in prepared:
                counts[{"r": "records", "p": "problems", "s": "skipped"}[it[0]]] += 1
            counts["rows"] += sum(1 for it in prepared if it[0] != "s")
            _write_batch(engine, run, prepared, position)
            if progress is not None:
                progress.advance(task, n)

        batch: list = []
        position = None
        for item, position in scan(json.loads(run.position) if run.position else None):
            batch.append(item)
            if len(batch) >= batch_size:
                inflight.append((len(batch), submit(batch), position))
                batch = []
                if len(inflight) > _IN_FLIGHT:
                    drain_one()
        if batch:
            inflight.append((len(batch), submit(batch), position))
        while inflight:
            drain_one(last=len(inflight) == 1)
        workers_.close(wait=False)   # they exit while the swap runs
        with engine.connect() as conn:
            read, bad_rows = conn.execute(select(index_progress.c.rows_read, index_progress.c.problem_rows).where(
                index_progress.c.epoch == epoch, index_progress.c.source == run.source)).one()
        share = bad_rows / read if read else 0.0
        truncated = bool(getattr(adapter, "truncated", False))
        live = max_unusable_share is None or not (truncated or share > max_unusable_share)
        removed = _swap(engine, run, covered) if live else 0
        with engine.connect() as conn:
            total = count_tokens(conn, epoch)
    finally:
        workers_.close()
        adapter.close()
    return IndexReport(epoch, run.source, run.mode, run.resumed, counts["rows"], counts["records"],
                       counts["problems"], removed, total, time.perf_counter() - started,
                       counts["skipped"] + int(getattr(adapter, "skipped", 0) or 0), share, truncated, live)


def retire_epoch(engine: Engine, epoch: int) -> int:
    """Deletes an epoch's index, rows, problems and progress; returns the tokens removed."""
    with engine.begin() as conn:
        _lock(conn, epoch)
        n = count_tokens(conn, epoch)
        for t in (token_index, index_rows, index_problems, index_progress):
            conn.execute(delete(t).where(t.c.epoch == epoch))
    return n
