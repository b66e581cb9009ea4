"""The provider's answer: each requested field derived from the facts filed under a token,
as a typed, dated value or a predicate's truth (DESIGN.md flow 1: aggregates over windows,
never raw rows).

Semantics, chosen so that "no record" never looks like zero: a token the provider does not
hold at all is answered ``found = false`` and every field ``present = false``. For a token it
holds, ``sum`` and ``count`` over no matching facts are a real zero (the department knows the
person and has nothing of that kind); ``max``, ``min`` and ``latest`` over no facts are
``present = false``; ``exists`` is true or false. ``as_of`` is the date of the newest fact
used (or the evaluation date for an empty sum/count).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from hedui.adapters.records import Fact
from hedui.node.errors import InvalidArgument, Reason
from hedui.node.verification.catalogue import FieldDef
from hedui.node.verification.protocol import Query
from hedui.v1 import lookup_pb2

__all__ = ["Derived", "derive", "evaluate_predicate", "answer_lookup"]


@dataclass(frozen=True)
class Derived:
    present: bool
    value: str = ""
    as_of: str = ""


def _months_back(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.year * 12 + (d.month - 1) - months, 12)
    day = min(d.day, [31, 29 if (y % 4 == 0 and (y % 100 or y % 400 == 0)) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m])
    return dt.date(y, m + 1, day)


def _fmt(v: Decimal | str, fd: FieldDef) -> str:
    if isinstance(v, str):
        return v  # a code keeps its text
    if fd.type == "money":
        return str(v.quantize(Decimal("0.01")))
    if fd.type == "integer" or fd.agg == "count":
        return str(int(v))
    return format(v.normalize(), "f")


def derive(fd: FieldDef, facts: Iterable[Fact], today: dt.date) -> Derived:
    since = _months_back(today, fd.window_months) if fd.window_months else None
    use = [f for f in facts if f.name == fd.fact and (since is None or (f.on is not None and since < f.on <= today))]
    newest = max((f.on for f in use if f.on is not None), default=None)
    as_of = (newest or today).isoformat()
    if fd.agg == "sum":
        return Derived(True, _fmt(sum((f.value for f in use), Decimal(0)), fd), as_of)
    if fd.agg == "count":
        return Derived(True, str(len(use)), as_of)
    if fd.agg == "exists":
        return Derived(True, "true" if use else "false", as_of if use else today.isoformat())
    if not use:
        return Derived(False)
    if fd.agg == "max":
        return Derived(True, _fmt(max(f.value for f in use), fd), as_of)
    if fd.agg == "min":
        return Derived(True, _fmt(min(f.value for f in use), fd), as_of)
    latest = max(use, key=lambda f: (f.on or dt.date.min))
    return Derived(True, _fmt(latest.value, fd) if fd.type != "code" else str(latest.value), (latest.on or today).isoformat())


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


def answer_lookup(
    facts: Mapping[bytes, list[Fact]],
    tokens: Sequence[bytes],
    queries: Sequence[Query],
    *,
    provider: str,
    digest: bytes,
    directory_version: int,
    today: dt.date,
    now: dt.datetime,
) -> lookup_pb2.LookupAnswer:
    """The unsigned answer to a parsed lookup: per token ``found`` and per query its value
    (or truth, for a predicate), ``present`` and ``as_of``. A token the provider does not
    hold is ``found = false``, every value absent and every truth ``UNKNOWN``."""
    answer = lookup_pb2.LookupAnswer(provider=provider, request_digest=digest, directory_version=directory_version)
    answer.issued_at.FromDatetime(now)
    for tok in tokens:
        have = facts.get(bytes(tok))
        ta = answer.members.add(token=tok, found=have is not None)
        for fd, op, operand in queries:
            fa = ta.fields.add(field=fd.name, unit=fd.unit)
            if have is None:
                if op:
                    fa.truth = lookup_pb2.TRUTH_UNKNOWN
                continue
            d = derive(fd, have, today)
            fa.present, fa.as_of = d.present, d.as_of
            if op:
                assert operand is not None  # parse_lookup gives every predicate its operand
                t = evaluate_predicate(fd, op, operand, d)
                fa.truth = lookup_pb2.TRUTH_UNKNOWN if t is None else (lookup_pb2.TRUTH_TRUE if t else lookup_pb2.TRUTH_FALSE)
            else:
                fa.value = d.value
    return answer
