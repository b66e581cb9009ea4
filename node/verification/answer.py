"""The provider's answer: each requested field derived from the facts filed under a token,
over the field's window of the request's reference month (DESIGN.md flow 1: aggregates over
windows, never raw rows; DESIGN-12 "Reference month R, windows").

Windows, with R the reference month and E its last day (all local dates):

===================  =================================================  ==============  ============
window               facts used                                         ends on         text
===================  =================================================  ==============  ============
months_before = N    ``on`` in months R−N … R−1                          last of R−1     2025-08..2026-07
year_to_date         ``on`` in January of R's year … R                   E               2026-01..2026-08
previous_year        ``on`` in the calendar year before R's              31 Dec          2025-01..2025-12
as_of_reference      ``on`` ≤ E and still held on E (``until`` ≥ E)     E               @2026-08-31
all_time             ``on`` ≤ E, or undated                              E               ..2026-08-31
===================  =================================================  ==============  ============

``until`` is the last day a fact holds (records.Fact; the adapter folds a mapping's exclusive end
column, a cancellation or transfer day, into the day before it), ``None`` while it still holds.

States, so that "no record", "not current" and zero never stand in for each other:
``NOT_CURRENT`` when the window ends after the data date of a source that produces the field's
facts (it beats everything: a field that is not current says nothing else); ``NO_RECORD`` when
the provider does not hold the token at all; for a token it holds, ``sum``/``count``/
``sum_per_month`` over no facts are a real zero (``VALUE``), ``exists`` is true or false, and
``max``/``min``/``latest`` over no facts are ``NO_VALUE``. ``as_of`` is the date of the newest
fact used ("" when none was). Money is summed in exact decimals and shown to the fen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from hedui.adapters.filters import matches
from hedui.adapters.records import Fact
from hedui.common.periods import Month
from hedui.node.errors import InvalidArgument, Reason
from hedui.node.verification.catalogue import FieldDef, MonthsBefore
from hedui.node.verification.protocol import Query
from hedui.v1 import lookup_pb2

__all__ = ["Window", "window_of", "Derived", "derive", "evaluate_predicate", "answer_lookup", "held_on"]

VALUE, NO_VALUE = lookup_pb2.ANSWER_STATE_VALUE, lookup_pb2.ANSWER_STATE_NO_VALUE
NO_RECORD, NOT_CURRENT = lookup_pb2.ANSWER_STATE_NO_RECORD, lookup_pb2.ANSWER_STATE_NOT_CURRENT


@dataclass(frozen=True)
class Window:
    """The days a field's value covers for one reference month. ``first``/``last`` are the
    whole months of a months window (``None`` for a point or all-time window)."""

    end: dt.date
    text: str
    first: Month | None = None
    last: Month | None = None
    point: bool = False          # as_of_reference: held on ``end``

    @property
    def start(self) -> dt.date | None:
        return self.first.first_day if self.first else None

    def months(self) -> list[Month]:
        if self.first is None or self.last is None:
            return []
        out, m = [], self.first
        while m <= self.last:
            out.append(m)
            m = m.plus(1)
        return out


def window_of(fd: FieldDef, ref: Month) -> Window:
    w = fd.window
    if isinstance(w, MonthsBefore):
        first, last = ref.plus(-w.months_before), ref.plus(-1)
    elif w == "year_to_date":
        first, last = Month(ref.year, 1), ref
    elif w == "previous_year":
        first, last = Month(ref.year - 1, 1), Month(ref.year - 1, 12)
    elif w == "as_of_reference":
        return Window(ref.last_day, f"@{ref.last_day.isoformat()}", point=True)
    else:
        return Window(ref.last_day, f"..{ref.last_day.isoformat()}")
    return Window(last.last_day, f"{first}..{last}", first, last)


def held_on(f: Fact, day: dt.date) -> bool:
    """True when the fact holds on ``day``: begun on or before it and not yet ended."""
    return f.on is not None and f.on <= day and (f.until is None or day <= f.until)


@dataclass(frozen=True)
class Derived:
    state: lookup_pb2.AnswerState.ValueType
    value: str = ""
    as_of: str = ""

    @property
    def present(self) -> bool:
        return self.state == VALUE


def _fmt(v: Decimal | str, fd: FieldDef) -> str:
    if isinstance(v, str):
        return v  # a code keeps its text
    if fd.type == "money":
        return str(v.quantize(Decimal("0.01")))
    if fd.type == "integer" or fd.agg == "count":
        return str(int(v))
    if fd.type == "boolean":
        return "true" if v else "false"
    return format(v.normalize(), "f")


def _num(v: Decimal | str) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(v)


def _select(fd: FieldDef, facts: Sequence[Fact], w: Window) -> list[Fact]:
    names = set(fd.facts)
    use = [f for f in facts if f.name in names]
    if fd.conditions:
        use = [f for f in use if matches(fd.conditions, f.attrs.get)]
    if fd.unless is not None:
        by, u = fd.unless.by, fd.unless.fact
        gone = {tuple(f.attrs.get(a, "") for a in by) for f in facts if f.name == u}
        use = [f for f in use if tuple(f.attrs.get(a, "") for a in by) not in gone]
    if fd.agg == "sum_per_month":
        start = w.start
        assert start is not None  # the catalogue gives sum_per_month a window of months
        use = [f for f in use if f.on is not None and f.on <= w.end and (f.until is None or f.until >= start)]
    elif w.point:
        use = [f for f in use if held_on(f, w.end)]
    elif w.first is not None:
        start, end = w.first.first_day, w.end
        use = [f for f in use if f.on is not None and start <= f.on <= end]
    else:
        use = [f for f in use if f.on is None or f.on <= w.end]
    if fd.distinct_by:
        seen: dict[tuple[str, ...], Fact] = {}
        for f in use:
            seen.setdefault(tuple(f.attrs.get(a, "") for a in fd.distinct_by), f)
        use = list(seen.values())
    return use


def _months_held(f: Fact, w: Window) -> int:
    """Window months in which the fact held at least one day (sum_per_month)."""
    assert f.on is not None
    last_day = w.end if f.until is None else min(w.end, f.until)
    first = max(Month.of(f.on), w.first) if w.first else Month.of(f.on)
    last = Month.of(last_day)
    return max(0, (last.year * 12 + last.month) - (first.year * 12 + first.month) + 1)


def derive(fd: FieldDef, facts: Sequence[Fact], w: Window) -> Derived:
    """The value of ``fd`` over ``facts`` (a token the provider holds) in window ``w``."""
    use = _select(fd, facts, w)
    newest = max((f.on for f in use if f.on is not None), default=None)
    as_of = newest.isoformat() if newest else ""
    if fd.agg == "sum":
        return Derived(VALUE, _fmt(sum((_num(f.value) for f in use), Decimal(0)), fd), as_of)
    if fd.agg == "sum_per_month":
        return Derived(VALUE, _fmt(sum((_num(f.value) * _months_held(f, w) for f in use), Decimal(0)), fd), as_of)
    if fd.agg == "count":
        return Derived(VALUE, str(len(use)), as_of)
    if fd.agg == "exists":
        return Derived(VALUE, "true" if use else "false", as_of)
    if not use:
        return Derived(NO_VALUE)
    if fd.agg == "max":
        return Derived(VALUE, _fmt(max(_num(f.value) for f in use), fd), as_of)
    if fd.agg == "min":
        return Derived(VALUE, _fmt(min(_num(f.value) for f in use), fd), as_of)
    # latest: the newest dated fact; among facts of one day the one read last (the source's
    # row order: a ledger's later posting, a registry's later change).
    latest = max(enumerate(use), key=lambda p: (p[1].on or dt.date.min, p[0]))[1]
    return Derived(VALUE, _fmt(latest.value, fd), latest.on.isoformat() if latest.on else "")


def evaluate_predicate(fd: FieldDef, op: str, operand: Decimal | str, d: Derived) -> bool | None:
    """``None`` when there is no value to decide on (answered as TRUTH_UNKNOWN)."""
    if not d.present:
        return None
    if op == "ge":
        if not fd.numeric:
            raise InvalidArgument(f"queries[{fd.name}].op: got >= on a {fd.type} field, want == or a numeric field", reason=Reason.BAD_PREDICATE)
        return Decimal(d.value) >= operand  # type: ignore[operator]
    if fd.numeric:
        return Decimal(d.value) == operand
    return d.value == operand


def _data_date(fd: FieldDef, sources_of: Mapping[str, Sequence[str]], data_dates: Mapping[str, dt.date | None]) -> dt.date | None:
    """The field's data date: the earliest of the sources producing its facts (``None``
    when one of them has none recorded: nothing can be said to be current)."""
    names = [*fd.facts, *([fd.unless.fact] if fd.unless else [])]   # a cancellation is data the answer rests on
    srcs = [s for n in names for s in sources_of.get(n, ())] or list(data_dates)
    got = [data_dates.get(s) for s in dict.fromkeys(srcs)]
    if not got or any(d is None for d in got):
        return None
    return min(d for d in got if d is not None)


def answer_lookup(
    facts: Mapping[bytes, list[Fact]],
    tokens: Sequence[bytes],
    queries: Sequence[Query],
    *,
    provider: str,
    digest: bytes,
    directory_version: int,
    reference_month: Month,
    now: dt.datetime,
    data_dates: Mapping[str, dt.date | None],
    sources_of: Mapping[str, Sequence[str]] | None = None,
) -> lookup_pb2.LookupAnswer:
    """The unsigned answer to a parsed lookup for ``reference_month``: per token ``found``
    and per query its state, value (or truth, for a predicate), window, data date and as_of.
    ``data_dates`` maps each source to the date its indexed data covers; ``sources_of`` maps a
    fact name to the sources that produce it (all sources when absent)."""
    answer = lookup_pb2.LookupAnswer(provider=provider, request_digest=digest, directory_version=directory_version)
    answer.issued_at.FromDatetime(now)
    plan = []
    for fd, op, operand in queries:
        w = window_of(fd, reference_month)
        dd = _data_date(fd, sources_of or {}, data_dates)
        plan.append((fd, op, operand, w, dd, dd is None or w.end > dd))
    for tok in tokens:
        have = facts.get(bytes(tok))
        ta = answer.members.add(token=tok, found=have is not None)
        for fd, op, operand, w, dd, stale in plan:
            fa = ta.fields.add(field=fd.name, unit=fd.unit, window=w.text)
            if stale:
                d = Derived(NOT_CURRENT)
            elif have is None:
                d = Derived(NO_RECORD)
            else:
                d = derive(fd, have, w)
            fa.state, fa.present, fa.as_of = d.state, d.present, d.as_of
            if dd is not None and d.state != NO_RECORD:
                fa.data_date = dd.isoformat()
            if op:
                assert operand is not None  # parse_lookup gives every predicate its operand
                t = evaluate_predicate(fd, op, operand, d)
                fa.truth = lookup_pb2.TRUTH_UNKNOWN if t is None else (lookup_pb2.TRUTH_TRUE if t else lookup_pb2.TRUTH_FALSE)
            else:
                fa.value = d.value
    return answer

