"""Runs a department's detection rules over its canonical records.

``detect`` is a pure function of (records, rules, as_of, calendar, provider, secret): running
it again for the same period yields the same detections with the same ``dedup_key``, and the
outbox's unique ``dedup_key`` turns a re-run into a no-op.

The ``dedup_key`` is HMAC-SHA256 under a provider-local secret over (provider, rule, period,
identity, event key). It is keyed because the key is stored in the outbox's public columns: an
unkeyed hash of an 18-character identity number is reversed by trying the ~10^10 plausible
numbers. The secret must stay the same across runs (it lives with the node's keys).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from hedui.adapters.records import Fact, Record
from hedui.node.discovery.calendar import WorkCalendar
from hedui.node.discovery.rules import Period, Rule, RuleSet, due_date, period_for
from hedui.node.errors import InvalidArgument

__all__ = ["Detection", "detect"]

_SEP = "\x1f"


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected event, ready to become a notice. ``identity`` and ``details`` are
    personal data: they are only ever sealed to the hub, and are kept out of ``repr``."""

    rule: str
    event_type: str
    identity: str = field(repr=False)
    region: str
    event_date: date
    due_date: date
    period: str
    details: Mapping[str, str] = field(repr=False)
    dedup_key: str

    def public(self) -> dict[str, str]:
        """The fields that may be shown or logged (no identity, no details)."""
        return {
            "rule": self.rule,
            "event_type": self.event_type,
            "region": self.region,
            "event_date": self.event_date.isoformat(),
            "due_date": self.due_date.isoformat(),
            "period": self.period,
            "dedup_key": self.dedup_key,
        }


@dataclass(slots=True)
class _Plan:
    index: int
    rule: Rule
    period: Period
    where: tuple[tuple[str, frozenset[str]], ...]


@dataclass(slots=True)
class _Sum:
    total: Decimal
    count: int
    last: date
    region: str
    unit: str
    seen: set[str]


def detect(
    records: Iterable[Record],
    rules: RuleSet,
    as_of: date,
    calendar: WorkCalendar,
    *,
    provider: str,
    dedup_secret: bytes,
) -> list[Detection]:
    """Every detection ``rules`` define for a run on ``as_of``, sorted by rule, event date and
    dedup key. Facts without a date never match (every rule is about a dated event)."""
    if not isinstance(provider, str) or not provider:
        raise InvalidArgument(f"provider: got {provider!r}, want a member code")
    if not isinstance(dedup_secret, (bytes, bytearray)) or len(dedup_secret) < 16:
        raise InvalidArgument("dedup_secret: got fewer than 16 bytes, want a random secret of 32 bytes")
    if not isinstance(as_of, date):
        raise InvalidArgument(f"as_of: got {type(as_of).__name__}, want datetime.date")

    plans_by_fact: dict[str, list[_Plan]] = {}
    for i, rule in enumerate(rules.rules):
        plan = _Plan(
            index=i,
            rule=rule,
            period=period_for(rule, as_of),
            where=tuple((k, frozenset(v)) for k, v in rule.where.items()),
        )
        plans_by_fact.setdefault(rule.fact, []).append(plan)

    secret = bytes(dedup_secret)
    default_region = rules.default_region
    found: dict[str, tuple[int, Detection]] = {}
    sums: dict[int, dict[str, _Sum]] = {}

    def emit(plan: _Plan, identity: str, region: str, event_date: date, period_key: str,
             event_key: str, details: dict[str, str]) -> None:
        rule = plan.rule
        msg = _SEP.join((provider, rule.id, period_key, identity, event_key)).encode()
        key = hmac.new(secret, msg, hashlib.sha256).hexdigest()
        if key in found:
            return
        found[key] = (plan.index, Detection(
            rule=rule.id,
            event_type=rule.event_type,
            identity=identity,
            region=region,
            event_date=event_date,
            due_date=due_date(rule, plan.period, event_date, calendar),
            period=period_key,
            details=details,
            dedup_key=key,
        ))

    for rec in records:
        record_region: str | None = None
        for fact in rec.facts:
            plans = plans_by_fact.get(fact.name)
            if plans is None:
                continue
            on = fact.on
            if on is None:
                continue
            for plan in plans:
                p = plan.period
                if on < p.start or on > p.end:
                    continue
                rule = plan.rule
                if rule.unit is not None and fact.unit != rule.unit:
                    continue
                if plan.where and not all(fact.attrs.get(k) in ok for k, ok in plan.where):
                    continue
                region = fact.attrs.get("region")
                if not region:
                    if record_region is None:
                        record_region = _record_region(rec, default_region)
                    region = record_region
                kind = rule.kind
                if kind == "cumulative":
                    if not isinstance(fact.value, Decimal):
                        continue  # a code fact has no amount to add up (rules load refuses such a rule)
                    # The same event seen twice (overlapping exports) is counted once.
                    ekey = _event_key(fact)
                    acc = sums.setdefault(plan.index, {}).get(rec.identity)
                    if acc is None:
                        sums[plan.index][rec.identity] = _Sum(fact.value, 1, on, region, fact.unit, {ekey})
                    elif ekey not in acc.seen:
                        acc.seen.add(ekey)
                        acc.total += fact.value
                        acc.count += 1
                        if on >= acc.last:
                            acc.last, acc.region = on, region
                    continue
                if kind == "threshold":
                    if fact.value < rule.threshold:  # type: ignore[operator]
                        continue
                elif kind == "flag":
                    if not fact.value:
                        continue
                period_key = on.isoformat() if rule.period == "rolling" else p.key
                emit(plan, rec.identity, region, on, period_key, _event_key(fact), _details(rule, fact))

    for index, per_person in sums.items():
        plan = next(pl for pls in plans_by_fact.values() for pl in pls if pl.index == index)
        threshold = plan.rule.threshold
        for identity, acc in per_person.items():
            if acc.total >= threshold:  # type: ignore[operator]
                details = {
                    "fact": plan.rule.fact,
                    "total": str(acc.total),
                    "unit": acc.unit,
                    "events": str(acc.count),
                }
                emit(plan, identity, acc.region, acc.last, plan.period.key, "cumulative", details)

    ordered = sorted(found.values(), key=lambda t: (t[0], t[1].event_date, t[1].dedup_key))
    return [d for _, d in ordered]


def _record_region(rec: Record, default: str) -> str:
    for f in rec.facts:
        r = f.attrs.get("region")
        if r:
            return r
    return default


def _event_key(fact: Fact) -> str:
    value = format(fact.value.normalize(), "f") if isinstance(fact.value, Decimal) else str(fact.value)
    attrs = _SEP.join(f"{k}={fact.attrs[k]}" for k in sorted(fact.attrs))
    return _SEP.join((fact.name, fact.on.isoformat() if fact.on else "", value, fact.unit, attrs))


def _details(rule: Rule, fact: Fact) -> dict[str, str]:
    out = {"fact": fact.name, "value": str(fact.value), "unit": fact.unit}
    for k in rule.details:
        v = fact.attrs.get(k)
        if v is not None:
            out[k] = str(v)
    return out
