"""The arithmetic of the verification report (核对报告), as small pure functions over the
answers the hub holds (issue 12 items 4–5; DESIGN-12 "Hub rules"; acceptance-rules.md).

Nothing here touches a store, a clock or a signature: :mod:`report` verifies the evidence and
hands over :class:`Source` values; every rule is a function of those, so tests build answers by
hand and mutation testing can pin each branch.

What the report concludes:

* **who counts** — each listed member's registry answer: an ``exclude`` value → listed, not
  counted, with the reason and the answer's ``as_of`` as the day; no record → counted, noted;
  not current or unavailable → the counted set is unknown; a caseworker's override wins.
* **complete** only when every needed answer (the registry for every member; income,
  deductions and asset flags for every counted member) is a value, no value or no record, and
  current. Otherwise the report names what is missing and why and shows no total,
  per-capita income, ``below_standard`` or flag: unknown is never zero.
* **per-capita** = Σ (value ÷ months) ÷ counted members, exact (fractions), half-up to 0.01;
  **below** iff strictly less than the standard (exactly the standard is not below).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from hedui.node.verification.rules import AssetFlag, IncomeItem, InfoField, MemberRule, Rules, as_number

__all__ = ["Cell", "Source", "Override", "Counting", "KNOWN", "cell_for", "count_member", "compare", "money",
           "half_up_cents", "per_capita", "below", "reckon"]

_CENT = Decimal("0.01")
#: Answer states the report can conclude on (a real value, nothing to report, not held).
KNOWN = frozenset({"value", "no_value", "no_record"})


@dataclass(frozen=True)
class Cell:
    """One member's answer to one field, or why there is none: ``state`` is an answer state
    (value, no_value, no_record, not_current) or a gap (unavailable, refused, not_answered)."""

    state: str
    value: str = ""
    unit: str = ""
    window: str = ""
    as_of: str = ""
    data_date: str = ""
    evidence: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Source:
    """One provider's outcome for the case: its status and, when ok, every answered cell."""

    status: str
    reason: str = ""
    evidence: str | None = None
    signer: str | None = None
    cells: Mapping[tuple[int, str], Cell] = field(default_factory=dict)


@dataclass(frozen=True)
class Override:
    counted: bool
    reason: str
    operator: str


@dataclass(frozen=True)
class Counting:
    counted: bool | None  # None: the registry answer is not known (not current, unavailable)
    reason: str | None = None  # why not counted (dead, moved_out, or the override's reason)
    day: str | None = None  # the registry answer's as_of for an exclusion
    note: str | None = None  # no_registry_record, override


Sources = Mapping[str, Source]


def cell_for(sources: Mapping[str, Source], provider: str, field_name: str, pos: int) -> Cell:
    """The answer a provider gave for ``field_name`` of member ``pos``, or the gap."""
    src = sources.get(provider)
    if src is None:
        return Cell("not_answered", reason=f"{provider} was not asked (not in the directory)")
    if src.status != "ok":
        state = "refused" if src.status == "refused" else "unavailable"
        return Cell(state, reason=f"{src.status}: {src.reason}" if src.reason else src.status)
    cell = src.cells.get((pos, field_name))
    if cell is None:
        return Cell("not_answered", reason=f"{provider} does not offer {field_name}")
    return cell


def count_member(rule: MemberRule | None, cell: Cell | None, override: Override | None) -> Counting:
    if override is not None:
        return Counting(override.counted, None if override.counted else override.reason, None, "override")
    if rule is None or cell is None:
        return Counting(True)
    if cell.state == "value":
        reason = rule.exclude.get(cell.value.strip())
        return Counting(True) if reason is None else Counting(False, reason, cell.as_of or None)
    if cell.state in ("no_record", "no_value"):
        # The registry does not exclude a person it does not hold (acceptance-rules.md).
        return Counting(True, note="no_registry_record")
    return Counting(None)


def money(cell: Cell) -> Decimal:
    """An income cell's amount: no record and no value are zero (the member has none there)."""
    if cell.state != "value":
        return Decimal(0)
    d = as_number(cell.value)
    if d is None:
        raise ValueError(f"value: got {cell.value[:20]!r}, want a number")
    return d


def compare(value: str, op: str, threshold: Decimal | str | list[str]) -> bool:
    """``value op threshold``: numbers when both sides are numbers, else trimmed text (codes,
    booleans ``true``/``false``); an ordering op needs a number (ValueError otherwise)."""
    if op == "in":
        assert isinstance(threshold, list)
        return any(_equal(value, t) for t in threshold)
    if op == "==":
        return _equal(value, threshold)
    if op == "!=":
        return not _equal(value, threshold)
    v = as_number(value)
    if v is None or not isinstance(threshold, Decimal):
        raise ValueError(f"value: got {value[:20]!r}, want a number for {op}")
    return {">=": v >= threshold, ">": v > threshold, "<=": v <= threshold, "<": v < threshold}[op]


def _equal(value: str, other: Decimal | str | list[str]) -> bool:
    a, b = as_number(value), other if isinstance(other, Decimal) else as_number(str(other))
    if a is not None and b is not None:
        return a == b
    return value.strip() == str(other).strip()


def half_up_cents(x: Fraction) -> Decimal:
    """``x`` rounded half-up (away from zero) to 0.01, exactly: 1009.995 → 1010.00."""
    cents = x * 100
    sign = -1 if cents < 0 else 1
    n = (abs(cents) * 2 + 1) // 2
    return (Decimal(sign * n) / 100).quantize(_CENT)


def per_capita(monthly_total: Fraction, counted: int) -> Decimal:
    return half_up_cents(monthly_total / counted)


def below(per_capita_income: Decimal, standard: Decimal) -> bool:
    return per_capita_income < standard


def _cents(d: Decimal | Fraction) -> str:
    return str(half_up_cents(Fraction(d)))


def _gap(pos: int | None, provider: str, field_name: str, cell: Cell) -> dict:
    return {"member": pos, "provider": provider, "field": field_name, "why": cell.state,
            "reason": cell.reason, "data_date": cell.data_date or None}


def _needed(cell: Cell) -> bool:
    return cell.state in KNOWN


def _item_row(it: IncomeItem | InfoField, cell: Cell) -> dict:
    return {"item": f"{it.provider}.{it.field}", "label": it.label or it.field, "department": it.provider,
            "field": it.field, "state": cell.state, "value": cell.value if cell.state == "value" else None,
            "unit": cell.unit, "window": cell.window or None, "as_of": cell.as_of or None,
            "data_date": cell.data_date or None, "evidence": cell.evidence, "reason": cell.reason or None}


def _sum_items(items: Sequence[IncomeItem], sources: Sources, scope: Iterable[int], missing: list[dict]) -> tuple[Fraction, dict]:
    """Σ value ÷ months over ``scope`` members and every item; per-item sums of the values."""
    monthly, totals = Fraction(0), {}
    for it in items:
        total = Decimal(0)
        for pos in scope:
            cell = cell_for(sources, it.provider, it.field, pos)
            if not _needed(cell):
                missing.append(_gap(pos, it.provider, it.field, cell))
                continue
            try:
                v = money(cell)
            except ValueError as exc:
                missing.append(_gap(pos, it.provider, it.field, Cell("bad_value", reason=str(exc))))
                continue
            total += v
            monthly += Fraction(v) / it.months
        totals[f"{it.provider}.{it.field}"] = total
    return monthly, totals


def _flag(af: AssetFlag, sources: Sources, scope: list[int], missing: list[dict]) -> dict:
    """One asset flag over the counted members; ``state`` set/clear, with who triggered it."""
    row = {"flag": af.flag, "label": af.label, "provider": af.provider, "field": af.field, "op": af.op,
           "threshold": af.threshold if isinstance(af.threshold, list) else str(af.threshold), "scope": af.scope}
    before = len(missing)
    cells = {pos: cell_for(sources, af.provider, af.field, pos) for pos in scope}
    for pos, cell in cells.items():
        if not _needed(cell):
            missing.append(_gap(pos, af.provider, af.field, cell))
    if len(missing) > before:
        return {**row, "state": "unknown", "members": []}
    try:
        if af.scope == "household":
            values = {pos: money(c) for pos, c in cells.items()}
            total = sum(values.values(), Decimal(0))
            hit = compare(str(total), af.op, af.threshold)
            who = [pos for pos, v in values.items() if v != 0]
            return {**row, "state": "set" if hit else "clear", "value": str(total), "members": who if hit else []}
        who = [pos for pos, c in cells.items() if c.state == "value" and compare(c.value, af.op, af.threshold)]
    except ValueError as exc:
        missing.append(_gap(None, af.provider, af.field, Cell("bad_value", reason=str(exc))))
        return {**row, "state": "unknown", "members": []}
    return {**row, "state": "set" if who else "clear", "members": who}


def _undecided(flag: dict) -> dict:
    """A flag of an incomplete report: no state, no members, no household sum (never concluding)."""
    return {**{k: v for k, v in flag.items() if k != "value"}, "state": "unknown", "members": []}


def _info_total(inf: InfoField, sources: Sources, scope: list[int] | None) -> dict:
    row = {"label": inf.label or inf.field, "provider": inf.provider, "field": inf.field, "scope": inf.scope}
    if scope is None:
        return {**row, "value": None, "why": "counted_unknown"}
    cells = [cell_for(sources, inf.provider, inf.field, pos) for pos in scope]
    gaps = [c for c in cells if not _needed(c)]
    if gaps:
        return {**row, "value": None, "why": gaps[0].state, "data_date": gaps[0].data_date or None}
    try:
        return {**row, "value": str(sum((money(c) for c in cells), Decimal(0)))}
    except ValueError as exc:
        return {**row, "value": None, "why": str(exc)}


def _member_rows(rules: Rules, sources: Sources, n: int, counts: list[Counting]) -> list[dict]:
    rows = []
    for pos in range(n):
        c = counts[pos]
        status = None
        if rules.members is not None:
            cell = cell_for(sources, rules.members.provider, rules.members.field, pos)
            status = {"value": cell.value or None, "state": cell.state, "as_of": cell.as_of or None,
                      "data_date": cell.data_date or None, "evidence": cell.evidence}
        rows.append({
            "position": pos, "counted": c.counted, "reason": c.reason, "day": c.day, "note": c.note, "status": status,
            "income": [_item_row(it, cell_for(sources, it.provider, it.field, pos)) for it in rules.income],
            "deductions": [_item_row(it, cell_for(sources, it.provider, it.field, pos)) for it in rules.deductions],
            "info": [_item_row(i, cell_for(sources, i.provider, i.field, pos)) for i in rules.info if i.scope == "member"],
        })
    return rows


def reckon(rules: Rules, sources: Mapping[str, Source], n: int, overrides: Mapping[int, Override],
           standard: Decimal | None, *, conclusion_only: bool = False) -> dict:
    """Every figure of the report for ``n`` listed members (see the module docstring).
    ``conclusion_only``: only ``complete`` and ``missing`` (the same computation, without
    the rows and totals that only the report shows: run_case decides a case's status from
    these two at the end of every run, issue 16)."""
    missing: list[dict] = []
    counts = []
    rule = rules.members
    for pos in range(n):
        cell = None if rule is None else cell_for(sources, rule.provider, rule.field, pos)
        c = count_member(rule, cell, overrides.get(pos))
        if c.counted is None and rule is not None and cell is not None:
            missing.append(_gap(pos, rule.provider, rule.field, cell))
        counts.append(c)
    known = all(c.counted is not None for c in counts)
    counted = [pos for pos, c in enumerate(counts) if c.counted]
    scope = counted if known else [pos for pos, c in enumerate(counts) if c.counted is not False]
    income, totals = _sum_items(rules.income, sources, scope, missing)
    deductions, ded_totals = _sum_items(rules.deductions, sources, scope, missing)
    flags = [_flag(af, sources, scope, missing) for af in rules.assets]
    if known and not counted:
        missing.append({"member": None, "provider": "", "field": "", "why": "no_counted_member",
                        "reason": "every listed member is excluded", "data_date": None})
    if standard is None:
        missing.append({"member": None, "provider": "", "field": "standards", "why": "no_standard",
                        "reason": "no standard in force for the region and reference month", "data_date": None})
    complete = not missing
    if conclusion_only:
        return {"complete": complete, "missing": missing}
    net = max(income - deductions, Fraction(0))
    pc = per_capita(net, len(counted)) if complete else None
    return {
        "complete": complete,
        "missing": missing,
        "counted": counted if known else None,
        "excluded": [{"position": pos, "reason": c.reason, "day": c.day, "note": c.note}
                     for pos, c in enumerate(counts) if c.counted is False],
        "members": _member_rows(rules, sources, n, counts),
        "income": {
            "totals": {k: str(v) for k, v in totals.items()} if complete else None,
            "deduction_totals": {k: str(v) for k, v in ded_totals.items()} if complete else None,
            "total": str(sum(totals.values(), Decimal(0))) if complete else None,
            "monthly_total": _cents(income) if complete else None,
            "monthly_deductions": _cents(deductions) if complete else None,
            "per_capita_monthly": str(pc) if pc is not None else None,
            "standard": str(standard) if standard is not None else None,
            "below_standard": below(pc, standard) if pc is not None and standard is not None else None,
        },
        "assets": flags if complete else [_undecided(f) for f in flags],
        "info": [_info_total(i, sources, counted if known else None) for i in rules.info if i.scope == "household"],
    }
