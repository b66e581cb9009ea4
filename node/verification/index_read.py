"""Reading the token index: only what a complete build made live (issue 13 item 1).

A source's rows are served when ``token_index.gen <= index_progress.live_gen``; the swap that
ends a build (node/verification/index.py ``_swap``) sets ``live_gen`` and deletes what the run
supersedes in one transaction, so a reader sees one complete build per source, never a part.
An epoch answers only when every source recorded in it (and every source the node's mappings
name) has a live build; otherwise the reader raises ``UNAVAILABLE`` with reason
``INDEX_NOT_READY`` — never a "no record" for a row that a complete build would hold.

Every read that takes more than one statement runs in one snapshot (:func:`snapshot`:
REPEATABLE READ on PostgreSQL, a read transaction on SQLite in WAL mode), so a swap that
commits in between cannot make one answer half old, half new.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, text

from hedui.adapters.records import Fact, RowProblem
from hedui.common.errors import Reason, Unavailable
from hedui.node.store.raw import Prepared
from hedui.node.verification.index_sql import Sql
from hedui.node.verification.index_tables import index_problems, index_progress

__all__ = ["Live", "snapshot", "live_state", "require_live", "read_live", "read_live_in", "facts_for_tokens", "data_dates",
           "live_tokens", "all_tokens", "count_tokens", "list_problems", "live_epochs", "fact_of"]


@dataclass(frozen=True, slots=True)
class Live:
    """One epoch's answer from one snapshot: facts per token and each source's data date."""

    facts: dict[bytes, list[Fact]]
    data_dates: dict[str, date | None]


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose statements all see one committed state of the store."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            yield conn
        return
    with engine.connect() as conn:
        # pysqlite opens no transaction for a SELECT; in WAL mode an explicit one keeps the
        # snapshot of its first read until it ends (the pool rolls it back on release). Sent
        # on the driver's connection: through Core it cost a statement's whole Python path
        # on every lookup (issue 16 item 3).
        dbapi: Any = conn.connection.dbapi_connection
        dbapi.execute("BEGIN")
        yield conn


# Read by every lookup: built once, the epoch as a parameter, run on the driver's cursor
# (issue 16 item 3: node/store/raw.py).
_LIVE_STATE = Prepared(select(index_progress.c.source, index_progress.c.live_gen, index_progress.c.data_date)
                       .where(index_progress.c.epoch == bindparam("epoch")))


def live_state(conn: Connection, epoch: int) -> dict[str, tuple[int | None, date | None]]:
    """Each source recorded in ``epoch``: (its live generation or None, its data date)."""
    return {src: (gen, d) for src, gen, d in _LIVE_STATE.run(conn, {"epoch": epoch})}


def require_live(state: dict[str, tuple[int | None, date | None]], epoch: int, sources: Iterable[str] = ()) -> None:
    """Raises ``UNAVAILABLE``/``INDEX_NOT_READY`` unless every source of ``epoch`` (recorded or
    named in ``sources``) has a complete build."""
    missing = sorted({s for s, (gen, _) in state.items() if gen is None} | (set(sources) - set(state)))
    if not state or missing:
        what = ", ".join(missing[:5]) or "every source"
        raise Unavailable(f"index: epoch {epoch} has no complete build of {what}, want `hedui node index` to "
                          "complete first", reason=Reason.INDEX_NOT_READY)


def fact_of(f: dict[str, Any]) -> Fact:
    # A code keeps its text ("0400", "住宅"); every other value is a decimal (records.Fact).
    value: Decimal | str = f["value"] if f["unit"] == "code" else Decimal(f["value"])
    until = f.get("until")
    return Fact(f["name"], value, f["unit"], date.fromisoformat(f["on"]) if f["on"] else None, f["attrs"],
                date.fromisoformat(until) if until else None)


_DIGITS = re.compile(r"(\d+)")


def _natural(locator: str) -> tuple:
    """Locators in source-key order (``t:id=9`` before ``t:id=10``): facts of one day are
    then in the order the department wrote them, which ``latest`` relies on for ties."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _DIGITS.split(locator))


_LIVE_ROWS = ("SELECT t.token, t.source, t.facts FROM token_index t JOIN index_progress p "
              "ON p.epoch = t.epoch AND p.source = t.source AND t.gen <= p.live_gen WHERE t.epoch = ? AND t.token")


def read_live(engine: Engine, epoch: int, tokens: Iterable[bytes], sources: Iterable[str] = ()) -> Live:
    """The live facts filed under each token of ``epoch`` (tokens not in the index are
    absent), ordered by source, source row and mapping order, with the sources' data dates;
    raises ``INDEX_NOT_READY`` (:func:`require_live`) when the epoch cannot answer."""
    with snapshot(engine) as conn:
        return read_live_in(conn, epoch, tokens, sources)


def read_live_in(conn: Connection, epoch: int, tokens: Iterable[bytes], sources: Iterable[str] = ()) -> Live:
    """:func:`read_live` on ``conn``, a :func:`snapshot` the caller holds (a Lookup reads the
    revocation serial and the index in one: issue 16 item 3)."""
    want = list({bytes(t): None for t in tokens})
    state = live_state(conn, epoch)
    require_live(state, epoch, sources)
    rows = list(Sql(conn.dialect.name).select_in(conn, _LIVE_ROWS, (epoch,), want))
    docs: dict[bytes, dict[str, dict[str, list]]] = {}
    for tok, src, facts in rows:   # the parts of one build merge (index_tables.token_index)
        docs.setdefault(bytes(tok), {}).setdefault(src, {}).update(json.loads(facts))
    out: dict[bytes, list[Fact]] = {}
    for tok, doc in docs.items():
        facts_: list[Fact] = []
        for src in sorted(doc):
            locs = doc[src]
            for loc in (sorted(locs, key=_natural) if len(locs) > 1 else locs):
                facts_.extend(fact_of(f) for f in locs[loc])
        out[tok] = facts_
    return Live(out, {s: d for s, (_, d) in state.items()})


def facts_for_tokens(engine: Engine, epoch: int, tokens: Iterable[bytes], sources: Iterable[str] = ()) -> dict[bytes, list[Fact]]:
    """:func:`read_live`'s facts."""
    return read_live(engine, epoch, tokens, sources).facts


def data_dates(engine: Engine, epoch: int) -> dict[str, date | None]:
    """Each source's data date in ``epoch`` as of its live build (``None``: never recorded)."""
    with engine.connect() as conn:
        return {s: d for s, (_, d) in live_state(conn, epoch).items()}


def live_tokens(conn: Connection, epoch: int, *, page: int = 50_000) -> Iterator[bytes]:
    """Every live token of ``epoch`` in byte order, in keyset pages, on ``conn`` (a
    :func:`snapshot` for a consistent set)."""
    last = b""
    sql = ("SELECT DISTINCT t.token FROM token_index t JOIN index_progress p ON p.epoch = t.epoch AND "
           "p.source = t.source AND t.gen <= p.live_gen WHERE t.epoch = :e AND t.token > :last "
           "ORDER BY t.token LIMIT :n")
    while True:
        toks = [bytes(t) for t in conn.execute(text(sql), {"e": epoch, "last": last, "n": page}).scalars()]
        yield from toks
        if len(toks) < page:
            return
        last = toks[-1]


def all_tokens(engine: Engine, epoch: int, *, page: int = 50_000) -> Iterator[bytes]:
    """Every live token of ``epoch`` in byte order, from one snapshot (for the token filter
    of a bulk cross-check; the caller decides how much of each token to disclose)."""
    with snapshot(engine) as conn:
        yield from live_tokens(conn, epoch, page=page)


def count_tokens(conn: Connection, epoch: int) -> int:
    """Distinct live tokens of ``epoch``."""
    return int(conn.execute(text(
        "SELECT count(DISTINCT t.token) FROM token_index t JOIN index_progress p ON p.epoch = t.epoch AND "
        "p.source = t.source AND t.gen <= p.live_gen WHERE t.epoch = :e"), {"e": epoch}).scalar_one())


def list_problems(engine: Engine, epoch: int, source: str | None = None) -> list[RowProblem]:
    """Rows the last builds could not use, by locator (never by identity)."""
    q = select(index_problems.c.locator, index_problems.c.reason).where(index_problems.c.epoch == epoch)
    if source is not None:
        q = q.where(index_problems.c.source == source)
    with engine.connect() as conn:
        return [RowProblem(loc, reason) for loc, reason in conn.execute(q.order_by(index_problems.c.source,
                                                                                   index_problems.c.locator))]


def live_epochs(engine: Engine, sources: Iterable[str] | None = None) -> list[int]:
    """Epochs that can answer: every source recorded in them has a live build (and, if
    ``sources`` is given, each of those sources has)."""
    with engine.connect() as conn:
        rows = conn.execute(select(index_progress.c.epoch, index_progress.c.source, index_progress.c.live_gen)).all()
    by_epoch: dict[int, dict[str, bool]] = {}
    for epoch, source, gen in rows:
        by_epoch.setdefault(epoch, {})[source] = gen is not None
    want = set(sources or ())
    return sorted(e for e, srcs in by_epoch.items() if all(srcs.values()) and want <= {s for s, ok in srcs.items() if ok})
