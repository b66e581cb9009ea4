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
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, text, update

from hedui.adapters import Adapter, idnum
from hedui.adapters.records import Fact, Record, RowProblem
from hedui.common.clock import Clock
from hedui.keys.oprf import ServerKey
from hedui.node.errors import InvalidArgument
from hedui.node.procs import worker_pool
from hedui.node.verification.index_tables import index_problems, index_progress, index_rows, token_index

__all__ = ["IndexReport", "build_index", "facts_for_tokens", "all_tokens", "live_epochs", "retire_epoch",
           "list_problems", "data_dates", "source_data_date"]

_IN_CHUNK = 500          # bound parameters per IN (...) list
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
    tokens: int          # tokens in the epoch after the build
    seconds: float

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


def _fact_of(f: dict[str, Any]) -> Fact:
    # A code keeps its text ("0400", "住宅"); every other value is a decimal (records.Fact).
    value: Decimal | str = f["value"] if f["unit"] == "code" else Decimal(f["value"])
    until = f.get("until")
    return Fact(f["name"], value, f["unit"], date.fromisoformat(f["on"]) if f["on"] else None, f["attrs"],
                date.fromisoformat(until) if until else None)


def _natural(locator: str) -> tuple:
    """Locators in source-key order (``t:id=9`` before ``t:id=10``): facts of one day are
    then in the order the department wrote them, which ``latest`` relies on for ties."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _DIGITS.split(locator))


_DIGITS = re.compile(r"(\d+)")


def _dump(doc: dict) -> str:
    return _scrub(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True))


def _chunks(seq: Sequence, n: int = _IN_CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class _Sql:
    """The bulk statements of a batch, written for the driver: SQLAlchemy's per-row
    parameter processing would cost more than the rest of a batch. SQLite gets executemany
    with tuples (in-process, cheap per row); PostgreSQL gets one statement per batch over
    arrays (``unnest``), since a statement per row costs a server round trip each."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    @staticmethod
    def _pg(conn, sql: str, params: tuple) -> list[tuple]:
        # Binary parameters (%b): psycopg's text format escapes every array element with a regex.
        with conn.connection.dbapi_connection.cursor() as cur:
            cur.execute(sql.replace("%s", "%b"), params, binary=True)
            return cur.fetchall() if cur.description else []

    def stamp(self, t: datetime) -> Any:
        # SQLAlchemy's DateTime on SQLite is text in this format (UTC here); PostgreSQL takes the object.
        return t if self.pg else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def insert_tokens(self, conn, epoch: int, rows: list[tuple[bytes, str, int]], stamp: Any) -> None:
        if not rows:
            return
        if self.pg:
            toks, facts, counts = map(list, zip(*rows))
            self._pg(conn,
                "INSERT INTO token_index (epoch, token, facts, row_count, updated_at) "
                "SELECT %s, t, f, c, %s FROM unnest(%s::bytea[], %s::text[], %s::int[]) AS u(t, f, c)",
                (epoch, stamp, toks, facts, counts))
        else:
            conn.exec_driver_sql("INSERT INTO token_index (epoch, token, facts, row_count, updated_at) "
                                 "VALUES (?, ?, ?, ?, ?)", [(epoch, t, f, c, stamp) for t, f, c in rows])

    def update_tokens(self, conn, epoch: int, rows: list[tuple[bytes, str, int]], stamp: Any) -> None:
        if not rows:
            return
        if self.pg:
            toks, facts, counts = map(list, zip(*rows))
            self._pg(conn,
                "UPDATE token_index AS x SET facts = u.f, row_count = u.c, updated_at = %s "
                "FROM unnest(%s::bytea[], %s::text[], %s::int[]) AS u(t, f, c) WHERE x.epoch = %s AND x.token = u.t",
                (stamp, toks, facts, counts, epoch))
        else:
            conn.exec_driver_sql("UPDATE token_index SET facts = ?, row_count = ?, updated_at = ? "
                                 "WHERE epoch = ? AND token = ?", [(f, c, stamp, epoch, t) for t, f, c in rows])

    def upsert(self, conn, table: str, value_col: str, epoch: int, source: str, run: int,
               rows: list[tuple[str, Any]]) -> None:
        """``(epoch, source, locator) -> (value_col, run)`` for index_rows / index_problems."""
        if not rows:
            return
        conflict = (f"ON CONFLICT (epoch, source, locator) DO UPDATE SET {value_col} = excluded.{value_col}, "
                    "run = excluded.run")
        if self.pg:
            locs, vals = map(list, zip(*rows))
            kind = "bytea" if value_col == "token" else "text"
            self._pg(conn,
                f"INSERT INTO {table} (epoch, source, locator, {value_col}, run) "
                f"SELECT %s, %s, l, v, %s FROM unnest(%s::text[], %s::{kind}[]) AS u(l, v) {conflict}",
                (epoch, source, run, locs, vals))
        else:
            conn.exec_driver_sql(f"INSERT INTO {table} (epoch, source, locator, {value_col}, run) "
                                 f"VALUES (?, ?, ?, ?, ?) {conflict}",
                                 [(epoch, source, loc, v, run) for loc, v in rows])

    def select_in(self, conn, sql: str, params: tuple, values: Sequence) -> Iterator[tuple]:
        """Runs ``sql`` (ending in a column, ``?`` placeholders) for ``column IN values``."""
        if not values:
            return
        if self.pg:
            yield from self._pg(conn, sql.replace("?", "%s") + " = ANY(%s)", params + (list(values),))
            return
        for part in _chunks(values):
            yield from conn.exec_driver_sql(f"{sql} IN ({', '.join('?' * len(part))})", params + tuple(part))


# --- the build ----------------------------------------------------------------------------------

@dataclass
class _Run:
    epoch: int
    source: str
    run: int
    mode: str
    position: str | None
    resumed: bool
    clock: Clock

    @property
    def fresh(self) -> bool:
        # The first run of a source in an epoch reads each row once, in increasing position,
        # so a record's locator cannot be in the index yet (even after a resume).
        return self.run == 1 and self.mode == "full"


def _start(engine: Engine, adapter: Adapter, epoch: int, full: bool, clock: Clock) -> _Run:
    fp = adapter.fingerprint
    now = clock.now()
    with engine.begin() as conn:
        row = conn.execute(select(index_progress).where(
            index_progress.c.epoch == epoch, index_progress.c.source == adapter.source)).mappings().first()
        if row is None:
            run = _Run(epoch, adapter.source, 1, "full", None, False, clock)
            conn.execute(index_progress.insert().values(
                epoch=epoch, source=adapter.source, run=1, mode="full", status="running", position=None,
                fingerprint=fp, rows_read=0, started_at=now, updated_at=now, completed_at=None))
            return run
        if row["status"] == "running" and row["fingerprint"] == fp and not full:
            return _Run(epoch, adapter.source, row["run"], row["mode"], row["position"], True, clock)
        incremental = row["status"] == "done" and row["fingerprint"] == fp and not full
        run = _Run(epoch, adapter.source, row["run"] + 1, "incremental" if incremental else "full",
                   row["position"] if incremental else None, False, clock)
        conn.execute(update(index_progress).where(
            index_progress.c.epoch == epoch, index_progress.c.source == adapter.source).values(
            run=run.run, mode=run.mode, status="running", position=run.position, fingerprint=fp,
            rows_read=0, started_at=now, updated_at=now))
        return run


def _lock(conn, epoch: int) -> None:
    # Batches of concurrent builders of one epoch touch the same tokens: serialise them.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k, :e)"), {"k": 0x48454449, "e": epoch})


def _load_docs(conn, epoch: int, tokens: Iterable[bytes]) -> dict[bytes, dict]:
    rows = _Sql(conn.dialect.name).select_in(conn, "SELECT token, facts FROM token_index WHERE epoch = ? AND token",
                                             (epoch,), list(tokens))
    return {bytes(tok): json.loads(facts) for tok, facts in rows}


def _store_docs(conn, sql: _Sql, epoch: int, docs: dict[bytes, dict], existing: set[bytes], now: datetime) -> None:
    inserts, updates, deletes = [], [], []
    stamp = sql.stamp(now)
    for tok, doc in docs.items():
        count = 0
        for src in [s for s, locs in doc.items() if not locs]:
            del doc[src]
        for locs in doc.values():
            count += len(locs)
        if count == 0:
            if tok in existing:
                deletes.append(tok)
        elif tok in existing:
            updates.append((tok, _dump(doc), count))
        else:
            inserts.append((tok, _dump(doc), count))
    inserts.sort()   # in key order: neighbouring keys share index pages
    updates.sort()
    sql.insert_tokens(conn, epoch, inserts, stamp)
    sql.update_tokens(conn, epoch, updates, stamp)
    for part in _chunks(deletes):
        conn.execute(delete(token_index).where(token_index.c.epoch == epoch, token_index.c.token.in_(part)))


def _write_batch(engine: Engine, run: _Run, items: list[Record | RowProblem], tokens: dict[str, bytes],
                 position: Any) -> None:
    now = run.clock.now()
    # The last item for a locator wins (a re-read row, or a duplicate reported as a problem).
    latest: dict[str, tuple[bytes, list] | str] = {}
    for item in items:
        loc = _fit(item.locator)
        if isinstance(item, Record):
            latest[loc] = (tokens[item.identity], [_fact_json(f) for f in item.facts])
        else:
            latest[loc] = _scrub(item.reason)
    locs = list(latest)
    ep, src = run.epoch, run.source
    sql = _Sql(engine.dialect.name)
    with engine.begin() as conn:
        _lock(conn, ep)
        q = "SELECT locator, token FROM index_rows WHERE epoch = ? AND source = ? AND locator"
        if run.fresh:   # only a problem can follow an earlier record of the same locator
            locs = [loc for loc, v in latest.items() if not isinstance(v, tuple)]
        old = {loc: bytes(tok) for loc, tok in sql.select_in(conn, q, (ep, src), locs)}
        touched = set(old.values()) | {v[0] for v in latest.values() if isinstance(v, tuple)}
        docs = _load_docs(conn, ep, touched)
        existing = set(docs)
        for loc, tok in old.items():           # take every re-read row out of its old place
            docs.get(tok, {}).get(src, {}).pop(loc, None)
        row_rows, prob_rows, gone, fixed = [], [], [], []
        for loc, v in latest.items():
            if isinstance(v, tuple):
                tok, facts = v
                docs.setdefault(tok, {}).setdefault(src, {})[loc] = facts
                row_rows.append((loc, tok))
                fixed.append(loc)
            else:
                prob_rows.append((loc, v))
                if loc in old:
                    gone.append(loc)
        _store_docs(conn, sql, ep, docs, existing, now)
        sql.upsert(conn, "index_rows", "token", ep, src, run.run, row_rows)
        for part in _chunks(gone):
            conn.execute(delete(index_rows).where(index_rows.c.epoch == ep, index_rows.c.source == src,
                                                  index_rows.c.locator.in_(part)))
        sql.upsert(conn, "index_problems", "reason", ep, src, run.run, prob_rows)
        for part in _chunks([] if run.fresh else fixed):
            conn.execute(delete(index_problems).where(index_problems.c.epoch == ep, index_problems.c.source == src,
                                                      index_problems.c.locator.in_(part)))
        values: dict[str, Any] = {"rows_read": index_progress.c.rows_read + len(items), "updated_at": now}
        if position is not None:
            values["position"] = json.dumps(position, sort_keys=True)
        conn.execute(update(index_progress).where(index_progress.c.epoch == ep,
                                                  index_progress.c.source == src).values(**values))


def _sweep(engine: Engine, run: _Run) -> int:
    """After a full read: drop rows (and problems) this run did not see."""
    ep, src = run.epoch, run.source
    removed = 0
    while True:
        with engine.begin() as conn:
            _lock(conn, ep)
            stale = conn.execute(select(index_rows.c.locator, index_rows.c.token).where(
                index_rows.c.epoch == ep, index_rows.c.source == src, index_rows.c.run < run.run,
            ).limit(_IN_CHUNK * 4)).all()
            if not stale:
                conn.execute(delete(index_problems).where(index_problems.c.epoch == ep, index_problems.c.source == src,
                                                          index_problems.c.run < run.run))
                return removed
            docs = _load_docs(conn, ep, {bytes(t) for _, t in stale})
            existing = set(docs)
            for loc, tok in stale:
                docs.get(bytes(tok), {}).get(src, {}).pop(loc, None)
            _store_docs(conn, _Sql(engine.dialect.name), ep, docs, existing, run.clock.now())
            for part in _chunks([loc for loc, _ in stale]):
                conn.execute(delete(index_rows).where(index_rows.c.epoch == ep, index_rows.c.source == src,
                                                      index_rows.c.locator.in_(part)))
            removed += len(stale)


def _finish(engine: Engine, run: _Run, data_date: date) -> None:
    now = run.clock.now()
    with engine.begin() as conn:
        conn.execute(update(index_progress).where(
            index_progress.c.epoch == run.epoch, index_progress.c.source == run.source).values(
            status="done", updated_at=now, data_date=data_date,
            completed_at=func.coalesce(index_progress.c.completed_at, now)))


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
                batch_size: int = 2000, data_date: date | None = None) -> IndexReport:
    """Builds or updates the token index of ``epoch`` from one adapter's source.

    Resumes an interrupted run of the same source and epoch; otherwise reads what changed
    since the last completed run (or everything, when the mapping or file changed or
    ``full`` is set). ``workers`` processes compute tokens (default: CPU count; 0 computes
    inline). ``progress`` is an optional ``rich.progress.Progress``. Checks the adapter
    (``check()``) before anything is written. Records the source's data date
    (:func:`source_data_date`, ``data_date`` being the node config's), read before the rows
    so that it never claims more than what was read.
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
    removed = _sweep(engine, run) if run.mode == "full" else 0
    _finish(engine, run, covered)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(token_index).where(token_index.c.epoch == epoch)).scalar_one()
    return IndexReport(epoch, run.source, run.mode, run.resumed, counts["rows"], counts["records"],
                       counts["problems"], removed, total, time.perf_counter() - started)


# --- reading ---------------------------------------------------------------------------------------

def _connected(bind: Engine | Connection) -> Any:
    # A Connection is used as it is: a caller reading several things in one snapshot (a
    # lookup on a streaming replica, issue 16) passes its own.
    return nullcontext(bind) if isinstance(bind, Connection) else bind.connect()


def facts_for_tokens(engine: Engine | Connection, epoch: int, tokens: Iterable[bytes]) -> dict[bytes, list[Fact]]:
    """The facts filed under each token in ``epoch`` (tokens not in the index are absent),
    ordered by source, source row and mapping order."""
    out: dict[bytes, list[Fact]] = {}
    with _connected(engine) as conn:
        docs = _load_docs(conn, epoch, {bytes(t) for t in tokens})
    for tok, doc in docs.items():
        facts: list[Fact] = []
        for src in sorted(doc):
            locs = doc[src]
            for loc in (sorted(locs, key=_natural) if len(locs) > 1 else locs):
                facts.extend(_fact_of(f) for f in doc[src][loc])
        out[tok] = facts
    return out


def data_dates(engine: Engine | Connection, epoch: int) -> dict[str, date | None]:
    """Each source's data date in ``epoch`` (``None``: never recorded)."""
    with _connected(engine) as conn:
        rows = conn.execute(select(index_progress.c.source, index_progress.c.data_date)
                            .where(index_progress.c.epoch == epoch)).all()
    return {src: d for src, d in rows}


def all_tokens(engine: Engine, epoch: int, *, page: int = 50_000) -> Iterator[bytes]:
    """Every token of ``epoch`` in byte order, read in keyset pages (for the token filter
    of a bulk cross-check; the caller decides how much of each token to disclose)."""
    last: bytes | None = None
    while True:
        q = select(token_index.c.token).where(token_index.c.epoch == epoch)
        if last is not None:
            q = q.where(token_index.c.token > last)
        with engine.connect() as conn:
            toks = [bytes(t) for t in conn.execute(q.order_by(token_index.c.token).limit(page)).scalars()]
        yield from toks
        if len(toks) < page:
            return
        last = toks[-1]


def list_problems(engine: Engine, epoch: int, source: str | None = None) -> list[RowProblem]:
    """Rows the last builds could not use, by locator (never by identity)."""
    q = select(index_problems.c.locator, index_problems.c.reason).where(index_problems.c.epoch == epoch)
    if source is not None:
        q = q.where(index_problems.c.source == source)
    with engine.connect() as conn:
        return [RowProblem(loc, reason) for loc, reason in conn.execute(q.order_by(index_problems.c.source,
                                                                                   index_problems.c.locator))]


def live_epochs(engine: Engine, sources: Iterable[str] | None = None) -> list[int]:
    """Epochs that can answer: every source built in them has completed a build at least
    once (and, if ``sources`` is given, each of those sources has)."""
    done = (select(index_progress.c.epoch, index_progress.c.source, index_progress.c.completed_at))
    with engine.connect() as conn:
        rows = conn.execute(done).all()
    by_epoch: dict[int, dict[str, bool]] = {}
    for epoch, source, completed in rows:
        by_epoch.setdefault(epoch, {})[source] = completed is not None
    want = set(sources or ())
    return sorted(e for e, srcs in by_epoch.items() if all(srcs.values()) and want <= {s for s, ok in srcs.items() if ok})


def retire_epoch(engine: Engine, epoch: int) -> int:
    """Deletes an epoch's index, rows, problems and progress; returns the tokens removed."""
    with engine.begin() as conn:
        _lock(conn, epoch)
        n = conn.execute(delete(token_index).where(token_index.c.epoch == epoch)).rowcount
        for t in (index_rows, index_problems, index_progress):
            conn.execute(delete(t).where(t.c.epoch == epoch))
    return n
