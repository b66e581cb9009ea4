"""The worker side of an index build (issue 16 item 4): conversion, ``F(k, id)`` and
serialisation, in the build's worker processes (node/procs.py ``worker_pool``), so that the
main process only reads rows and writes batches.

A batch goes to the workers as adapter items — :class:`~hedui.adapters.records.RawRow`
(a SQL row not converted yet: the worker converts it with the mapping's ``RowConverter``),
:class:`Record` or :class:`RowProblem` — and comes back as plain tuples, cheap to pickle:

* ``("r", locator, token, facts_json)`` — a record: its facts as canonical JSON (sorted keys,
  no spaces, ASCII), scrubbed of anything shaped like an identity number;
* ``("p", locator, reason)`` — a problem row (a CSV quote left open names each line it took,
  adapters/tabular.py, so every unusable line counts);
* ``("s",)`` — a row the mapping skips (``source.where``, ``identity.skip_where``).

RFC 9497 §3.3.1 Evaluate is the expensive step; a token is computed once per identity per chunk.

On a store's first build of a source (a fresh full run: every locator new, nothing read
back) a chunk comes back **ready to write** instead (:func:`prepare_fresh`, a
:class:`FreshSpec` per chunk): its token rows grouped by token as one part of the chunk, and
its row→token map, as ``COPY … FROM STDIN`` text (PostgreSQL: one ``bytes`` per table, written
by the main process as it is) or as complete row tuples (SQLite ``executemany``), with its
counts and its problem rows. The main process then does no per-record work but the write
itself, and a chunk crosses the process boundary as two byte strings instead of a tuple per
record.

Lean workers (issue 16 item 4, profiled at 20,000 residents): a worker imports neither pydantic
nor the mapping models — it gets the mapping as a plain ``ConvPlan`` — and a raw row travels
as a plain ``(locator, values)`` tuple (a slotted dataclass pickles field by field in
Python). The converter normalises the identity once (``token_of_normalized`` does not
repeat it), parses each distinct day cell once, and one JSON encoder serves every
document (``json.dumps`` with options builds one per call).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from hedui.adapters import idnum
from hedui.adapters.records import Fact, RawRow, Record, RowProblem
from hedui.keys.oprf import ServerKey
from hedui.node.procs import worker_pool

__all__ = ["Workers", "prepare", "prepare_fresh", "FreshSpec", "Fresh", "fit", "scrub", "fact_json", "facts_text", "dump",
           "Prepared", "copy_text", "token_doc"]

_MAX_LOCATOR = 255

Prepared = tuple


def scrub(text_: str) -> str:
    return idnum.scrub(text_, "<withheld>")


def fit(locator: str) -> str:
    locator = scrub(locator)
    if len(locator) <= _MAX_LOCATOR:
        return locator
    return locator[:200] + "…#" + hashlib.sha256(locator.encode()).hexdigest()[:16]


def fact_json(f: Fact) -> dict[str, Any]:
    doc = {"name": f.name, "value": str(f.value), "unit": f.unit,
           "on": f.on.isoformat() if f.on else None, "attrs": dict(f.attrs)}
    if f.until is not None:   # only when set: indexes built before issue 12 read the same
        doc["until"] = f.until.isoformat()
    return doc


# One encoder for every document (json.dumps with these options builds a new one per call).
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def dump(doc: Any) -> str:
    return scrub(_encode(doc))


def token_doc(pairs: Sequence[tuple[str, str]]) -> str:
    """``{locator: facts}`` as canonical JSON (what ``dump`` would give) from facts already
    serialised by the workers: sorted keys, no spaces, ASCII."""
    return "{" + ",".join(f"{_encode(loc)}:{fj}" for loc, fj in sorted(pairs)) + "}"


def facts_text(facts: Sequence[Fact]) -> str:
    """``dump([fact_json(f) for f in facts])``: the facts of one record as stored."""
    return dump([fact_json(f) for f in facts])


# --- worker state --------------------------------------------------------------------------------

_state: dict[str, Any] = {}


def _init(key: ServerKey, raw: tuple | None, state: dict[str, Any] = _state) -> None:
    # Dying with the parent is node/procs.py's job (worker_pool), for every pool alike.
    state["key"] = key
    if raw is not None:
        from hedui.adapters._convert import RowConverter

        plan, refs = raw   # a ConvPlan: plain values, no pydantic in the worker
        state["conv"] = RowConverter(plan)
        state["refs"] = tuple(refs)


def _wire(item: Any) -> Any:
    """A batch item as it travels to a worker: a raw row as ``(locator, values)``."""
    return (item.locator, item.values) if type(item) is RawRow else item


def prepare(items: Sequence[Record | RowProblem | RawRow | tuple], state: dict[str, Any] = _state) -> list[Prepared]:
    """Converts, tokenises and serialises one chunk of a batch (in a worker, or inline). A
    raw row comes as a :class:`RawRow` or as its ``(locator, values)`` tuple."""
    key = state["key"]
    conv, refs = state.get("conv"), state.get("refs") or ()
    seen: dict[str, bytes] = {}
    out: list[Prepared] = []
    for wired in items:
        item: Record | RowProblem
        fresh = type(wired) is tuple or type(wired) is RawRow
        if fresh:
            locator, values = _wire(wired)
            assert conv is not None, "a raw row needs the adapter's raw_converter()"
            # A row's cells by reference through a dict's C lookup (no Python frame per cell).
            got = conv.convert(locator, dict(zip(refs, values)).__getitem__)
            if got is None:
                out.append(("s",))
                continue
            item = got
        else:
            item = wired   # type: ignore[assignment]
        if isinstance(item, Record):
            ident = item.identity
            tok = seen.get(ident)
            if tok is None:
                # Converted just now: the converter has normalised the identity (once per row).
                tok = seen[ident] = key.token_of_normalized(ident) if fresh else key.token(ident)
            loc = item.locator
            # A raw row's locator was checked by its adapter (adapters/sql.py: an identity-shaped
            # key is a problem row); scrub() would return it unchanged unless it holds an escape.
            if not (fresh and len(loc) <= _MAX_LOCATOR and "\\" not in loc):
                loc = fit(loc)
            out.append(("r", loc, tok, facts_text(item.facts)))
        else:
            out.append(("p", fit(item.locator), scrub(item.reason)))
    return out


@dataclass(frozen=True, slots=True)
class FreshSpec:
    """How one chunk of a fresh full run is written: the token rows go under (``epoch``,
    ``source``, ``gen``) as part ``part`` (unique per chunk within the run; readers merge a
    token's parts); ``copy_encoding`` is the PostgreSQL connection's client encoding (Python
    codec name) for ``COPY`` text, or ``None`` for SQLite row tuples."""

    epoch: int
    source: str
    gen: int
    part: int
    copy_encoding: str | None


@dataclass(frozen=True, slots=True)
class Fresh:
    """One chunk of a fresh full run, ready to write (:func:`prepare_fresh`)."""

    records: int                       # usable records in the chunk
    problem_rows: int                  # problem rows in the chunk
    problems: list[tuple[str, str]]    # (locator, reason) to file: the last word on each locator
    skipped: int                       # rows the mapping skips
    tokens: bytes | list[tuple]        # token_index rows: COPY text, or (epoch, token, source, gen, part, facts, n)
    rows: bytes | list[tuple]          # index_rows rows: COPY text, or (epoch, source, locator, token, run)

    @property
    def used(self) -> int:
        return self.records + self.problem_rows


def copy_text(value: str) -> str:
    """A text value as a field of PostgreSQL's ``COPY`` text format (backslash, tab,
    newline and carriage return escaped)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def prepare_fresh(items: Sequence[Record | RowProblem | RawRow | tuple], spec: FreshSpec,
                  state: dict[str, Any] = _state) -> Fresh:
    """:func:`prepare`, then the chunk as rows ready to write (see :class:`FreshSpec`). The
    last item for a locator wins, as in a batch (a row the source repeats is reported as a
    problem after its record; the main process takes a record of an earlier chunk or batch
    out when its problem comes, index.py)."""
    latest: dict[str, tuple] = {}
    probs: dict[str, str] = {}
    records = problem_rows = skipped = 0
    for it in prepare(items, state):
        kind = it[0]
        if kind == "r":
            records += 1
            latest[it[1]] = it
            probs.pop(it[1], None)
        elif kind == "p":
            problem_rows += 1
            probs[it[1]] = it[2]
            latest.pop(it[1], None)
        else:
            skipped += 1
    problems = list(probs.items())
    by_tok: dict[bytes, list[tuple[str, str]]] = {}
    for _, loc, tok, facts in latest.values():
        by_tok.setdefault(tok, []).append((loc, facts))
    ep, src, g, part = spec.epoch, spec.source, spec.gen, spec.part
    docs = sorted((tok, token_doc(pairs), len(pairs)) for tok, pairs in by_tok.items())   # in key order: neighbouring keys share index pages
    rows = [(loc, it[2]) for loc, it in latest.items()]
    if spec.copy_encoding is None:
        return Fresh(records, problem_rows, problems, skipped, [(ep, tok, src, g, part, doc, n) for tok, doc, n in docs],
                     [(ep, src, loc, tok, g) for loc, tok in rows])
    enc = spec.copy_encoding
    b_, b2 = "\\", "\\\\"   # a document is ASCII JSON: no raw tab, newline or CR, only backslashes to escape
    s = copy_text(src)
    # bytea in COPY text: "\\x<hex>" (the bytea escape, its backslash escaped for COPY).
    tokens = "".join(f"{ep}\t\\\\x{tok.hex()}\t{s}\t{g}\t{part}\t{doc.replace(b_, b2)}\t{n}\n" for tok, doc, n in docs)
    index_rows = "".join(f"{ep}\t{s}\t{copy_text(loc)}\t\\\\x{tok.hex()}\t{g}\n" for loc, tok in rows)
    return Fresh(records, problem_rows, problems, skipped, tokens.encode(enc), index_rows.encode(enc))


class Workers:
    """Runs :func:`prepare` over batches in a process pool (or inline when ``workers == 0``)."""

    def __init__(self, key: ServerKey, workers: int, raw: tuple | None) -> None:
        self._workers = workers
        self._pool = None
        self._closing: threading.Thread | None = None
        self._inline: dict[str, Any] = {}   # this build's own state when inline (builds may share a process)
        if workers > 0:
            # Workers die with this process, even when it is killed (node/procs.py, issue 13).
            self._pool = worker_pool(workers, _init, (key, raw))
            for _ in range(workers):   # one no-op each: the pool starts every worker now, not at the first batch
                self._pool.submit(int)
        else:
            _init(key, raw, self._inline)

    def submit(self, items: list) -> list[Future] | list[Prepared]:
        if self._pool is None:
            return prepare(items, self._inline)
        items = [_wire(it) for it in items]
        n = max(1, -(-len(items) // self._workers))
        return [self._pool.submit(prepare, items[i:i + n]) for i in range(0, len(items), n)]

    def submit_fresh(self, items: list, spec: Callable[[], FreshSpec]) -> list[Future] | list[Fresh]:
        """:meth:`submit` for a fresh full run: each chunk comes back ready to write
        (:func:`prepare_fresh`) under the :class:`FreshSpec` ``spec()`` gives it."""
        if self._pool is None:
            return [prepare_fresh(items, spec(), self._inline)]
        items = [_wire(it) for it in items]
        n = max(1, -(-len(items) // self._workers))
        return [self._pool.submit(prepare_fresh, items[i:i + n], spec()) for i in range(0, len(items), n)]

    @staticmethod
    def chunks(pending: list) -> list[Fresh]:
        """The chunks of :meth:`submit_fresh`, in order."""
        return [f if isinstance(f, Fresh) else f.result() for f in pending]

    @staticmethod
    def result(pending: list) -> list[Prepared]:
        if not pending or isinstance(pending[0], tuple):
            return pending
        out: list[Prepared] = []
        for f in pending:
            out.extend(f.result())
        return out

    def close(self, wait: bool = True) -> None:
        """Stops the workers. ``wait=False`` returns at once and a later ``close()`` joins
        them (they die with this process in any case: node/procs.py)."""
        if self._pool is None:
            return
        if self._closing is None:
            pool = self._pool
            self._closing = threading.Thread(target=lambda: pool.shutdown(cancel_futures=True),
                                             name="index-workers-exit", daemon=True)
            self._closing.start()
        if wait:
            self._closing.join()
