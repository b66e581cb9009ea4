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

import hashlib
import json
import os
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine, delete, func, select, text, true, update

from hedui.adapters import Adapter, idnum
from hedui.adapters.records import Fact, Record, RowProblem
from hedui.common.clock import Clock
from hedui.keys.oprf import ServerKey
from hedui.node.errors import InvalidArgument
from hedui.node.procs import worker_pool
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

__all__ = ["IndexReport", "build_index", "facts_for_tokens", "read_live", "all_tokens", "live_epochs", "retire_epoch",
           "list_problems", "data_dates", "source_data_date"]

_MAX_LOCATOR = 255
_IN_FLIGHT = 3           # batches whose tokens are being computed while one is written


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


# --- token computation (worker side) ----------------------------------------------------------

_worker_key: ServerKey | None = None


def _init_worker(key: ServerKey) -> None:
    # Dying with the parent is node/procs.py's job (worker_pool), for every pool alike.
    global _worker_key
    _worker_key = key


def _tokens(identities: list[str]) -> list[bytes]:
    assert _worker_key is not None
    token = _worker_key.token
    return [token(i) for i in identities]


class _Tokenizer:
    """Computes tokens in a process pool (or inline when ``workers == 0``)."""

    def __init__(self, key: ServerKey, workers: int) -> None:
        self._key, self._workers = key, workers
        self._pool = None
        if workers > 0:
            # Workers die with this process, even when it is killed (node/procs.py, issue 13).
            self._pool = worker_pool(workers, _init_worker, (key,))

    def submit(self, identities: list[str]) -> list[Future] | list[bytes]:
        if self._pool is None:
            return [self._key.token(i) for i in identities]
        n = max(1, -(-len(identities) // self._workers))
        return [self._pool.submit(_tokens, identities[i:i + n]) for i in range(0, len(identities), n)]

    @staticmethod
    def result(pending: list) -> list[bytes]:
        if not pending or isinstance(pending[0], bytes):
            return pending
        out: list[bytes] = []
        for f in pending:
            out.extend(f.result())
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


# --- serialisation ----------------------------------------------------------------------------

def _scrub(text_: str) -> str:
    return idnum.scrub(text_, "<withheld>")


def _fit(locator: str) -> str:
    locator = _scrub(locator)
    if len(locator) <= _MAX_LOCATOR:
        return locator
    return locator[:200] + "…#" + hashlib.sha256(locator.encode()).hexdigest()[:16]


def _fact_json(f: Fact) -> dict[str, Any]:
    doc = {"name": f.name, "value": str(f.value), "unit": f.unit,
           "on": f.on.isoformat() if f.on else None, "attrs": dict(f.attrs)}
    if f.until is not None:   # only when set: indexes built before issue 12 read the same
        doc["until"] = f.until.isoformat()
    return doc


def _dump(doc: dict) -> str:
    return _scrub(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True))


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
                problem_rows=0, problem_lines=0))
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
            rows_read=0, problem_rows=0, problem_lines=0, started_at=now, updated_at=now))
        return run


def _lock(conn, epoch: int) -> None:
    # Builders of one epoch and their swaps take turns (PostgreSQL; SQLite serialises writers).
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k, :e)"), {"k": 0x48454449, "e": epoch})


def _split(items: list[Record | RowProblem], tokens: dict[str, bytes]) -> dict[str, tuple[bytes, list] | str]:
    # The last item for a locator wins (a re-read row, or a duplicate reported as a problem).
    latest: dict[str, tuple[bytes, list] | str] = {}
    for item in items:
        loc = _fit(item.locator)
        if isinstance(item, Record):
            latest[loc] = (tokens[item.identity], [_fact_json(f) for f in item.facts])
        else:
            latest[loc] = _scrub(item.reason)
    return latest


def _write_batch(engine: Engine, run: _Run, items: list[Record | RowProblem], tokens: dict[str, bytes],
                 position: Any) -> None:
    """One batch and the position after it, in one transaction (the unit of resumption).
    Rows go under the run's generation, which no reader sees before the swap."""
    latest = _split(items, tokens)
    sql = Sql(engine.dialect.name)
    with engine.begin() as conn:
        _lock(conn, run.epoch)
        if run.mode == "full":
            _write_full(conn, sql, run, latest)
        else:
            _write_incremental(conn, sql, run, latest)
        bad = [i for i in items if isinstance(i, RowProblem)]
        values: dict[str, Any] = {"rows_read": index_progress.c.rows_read + len(items), "updated_at": run.clock.now(),
                                  "problem_rows": index_progress.c.problem_rows + len(bad),
                                  "problem_lines": index_progress.c.problem_lines + sum(max(1, p.lines) for p in bad)}
        if position is not None:
            values["position"] = json.dumps(position, sort_keys=True)
        conn.execute(update(index_progress).where(index_progress.c.epoch == run.epoch,
                                                  index_progress.c.source == run.source).values(**values))
    run.rows_read += len(items)


def _write_full(conn, sql: Sql, run: _Run, latest: dict[str, tuple[bytes, list] | str]) -> None:
    """A full read: each record's locator is new to this run, so its facts are appended as a
    new part (no read-back); only a problem can follow a record of the same run."""
    ep, src, g = run.epoch, run.source, run.run
    by_tok: dict[bytes, dict[str, list]] = {}
    rows, problems = [], []
    for loc, v in latest.items():
        if isinstance(v, tuple):
            by_tok.setdefault(v[0], {})[loc] = v[1]
            rows.append((loc, v[0]))
        else:
            problems.append((loc, v))
    # In key order: neighbouring keys share index pages.
    sql.copy(conn, "token_index", _TOKEN_COLS,
             sorted((ep, tok, src, g, run.rows_read, _dump(doc), len(doc)) for tok, doc in by_tok.items()))
    if run.fresh:
        sql.copy(conn, "index_rows", ("epoch", "source", "locator", "token", "run"), [(ep, src, loc, tok, g) for loc, tok in rows])
    else:
        sql.upsert(conn, "index_rows", "token", ep, src, g, rows)
        sql.delete_in(conn, "DELETE FROM index_problems WHERE epoch = ? AND source = ? AND locator", (ep, src),
                      [loc for loc, _ in rows])
    if problems:
        locs = [loc for loc, _ in problems]
        old = list(sql.select_in(conn, "SELECT locator, token, run FROM index_rows WHERE epoch = ? AND source = ? AND locator",
                                 (ep, src), locs))
        for loc, tok, r in old:
            if r == g:
                _drop_locator(conn, run, bytes(tok), loc)
        sql.delete_in(conn, "DELETE FROM index_rows WHERE epoch = ? AND source = ? AND locator", (ep, src),
                      [loc for loc, _, _ in old])
        sql.upsert(conn, "index_problems", "reason", ep, src, g, problems)


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
            conn.execute(update(token_index).where(*here).values(facts=_dump(doc), row_count=len(doc)))
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


def _write_incremental(conn, sql: Sql, run: _Run, latest: dict[str, tuple[bytes, list] | str]) -> None:
    """Changed rows: each touched token gets one row in this run's generation holding its
    new facts from this source (an empty one when none are left); the swap makes them live
    and drops what they supersede."""
    ep, src, g = run.epoch, run.source, run.run
    q = "SELECT locator, token FROM index_rows WHERE epoch = ? AND source = ? AND locator"
    old = {loc: bytes(tok) for loc, tok in sql.select_in(conn, q, (ep, src), list(latest))}
    touched = set(old.values()) | {v[0] for v in latest.values() if isinstance(v, tuple)}
    docs = _current_docs(conn, sql, run, sorted(touched))
    for loc, tok in old.items():           # take every re-read row out of its old place
        docs.get(tok, {}).pop(loc, None)
    row_rows, prob_rows, gone, fixed = [], [], [], []
    for loc, v in latest.items():
        if isinstance(v, tuple):
            docs.setdefault(v[0], {})[loc] = v[1]
            row_rows.append((loc, v[0]))
            fixed.append(loc)
        else:
            prob_rows.append((loc, v))
            if loc in old:
                gone.append(loc)
    sql.delete_in(conn, "DELETE FROM token_index WHERE epoch = ? AND source = ? AND gen = ? AND token", (ep, src, g),
                  sorted(docs))
    sql.copy(conn, "token_index", _TOKEN_COLS,
             sorted((ep, tok, src, g, run.rows_read, _dump(doc), len(doc)) for tok, doc in docs.items()))
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
        conn.execute(text("DELETE FROM token_index WHERE epoch = :e AND source = :s AND gen = :g AND row_count = 0"), p)
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
                max_unusable_share: float | None = None) -> IndexReport:
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
    """
    if server_key.epoch != epoch:
        raise InvalidArgument(f"epoch: got {epoch}, want the server key's epoch {server_key.epoch}")
    if batch_size < 1:
        raise InvalidArgument(f"batch_size: got {batch_size}, want at least 1")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 0:
        raise InvalidArgument(f"workers: got {workers}, want 0 or more")
    started = time.perf_counter()
    adapter.check()
    covered = source_data_date(adapter, clock, data_date)
    run = _start(engine, adapter, epoch, full, clock)
    task = progress.add_task(f"index {run.source} (epoch {epoch}, {run.mode})", total=None) if progress else None
    counts = {"rows": 0, "records": 0, "problems": 0}
    tokenizer = _Tokenizer(server_key, workers)
    inflight: deque = deque()

    def drain_one() -> None:
        items, idents, pending, position = inflight.popleft()
        tokens = dict(zip(idents, tokenizer.result(pending)))
        _write_batch(engine, run, items, tokens, position)
        if progress is not None:
            progress.advance(task, len(items))

    try:
        batch: list[Record | RowProblem] = []
        position = None
        for item, position in adapter.scan(json.loads(run.position) if run.position else None):
            batch.append(item)
            if isinstance(item, Record):
                counts["records"] += 1
            else:
                counts["problems"] += 1
            if len(batch) >= batch_size:
                idents = list({i.identity: None for i in batch if isinstance(i, Record)})
                inflight.append((batch, idents, tokenizer.submit(idents), position))
                counts["rows"] += len(batch)
                batch = []
                if len(inflight) > _IN_FLIGHT:
                    drain_one()
        if batch:
            idents = list({i.identity: None for i in batch if isinstance(i, Record)})
            inflight.append((batch, idents, tokenizer.submit(idents), position))
            counts["rows"] += len(batch)
        while inflight:
            drain_one()
    finally:
        tokenizer.close()
        adapter.close()
    with engine.connect() as conn:
        read, bad_rows, bad_lines = conn.execute(select(
            index_progress.c.rows_read, index_progress.c.problem_rows, index_progress.c.problem_lines).where(
            index_progress.c.epoch == epoch, index_progress.c.source == run.source)).one()
    seen = read - bad_rows + bad_lines
    share = bad_lines / seen if seen else 0.0
    truncated = bool(getattr(adapter, "truncated", False))
    live = max_unusable_share is None or not (truncated or share > max_unusable_share)
    removed = _swap(engine, run, covered) if live else 0
    with engine.connect() as conn:
        total = count_tokens(conn, epoch)
    return IndexReport(epoch, run.source, run.mode, run.resumed, counts["rows"], counts["records"],
                       counts["problems"], removed, total, time.perf_counter() - started,
                       int(getattr(adapter, "skipped", 0) or 0), share, truncated, live)


def retire_epoch(engine: Engine, epoch: int) -> int:
    """Deletes an epoch's index, rows, problems and progress; returns the tokens removed."""
    with engine.begin() as conn:
        _lock(conn, epoch)
        n = count_tokens(conn, epoch)
        for t in (token_index, index_rows, index_problems, index_progress):
            conn.execute(delete(t).where(t.c.epoch == epoch))
    return n
