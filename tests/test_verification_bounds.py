"""Bounds and predicates of the verification modules pinned by hand (issue 19, sampled
mutation survivors): catalogue and rules limits at and either side, evaluate_predicate,
value formatting by field type."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hedui.node.verification.answer import NO_VALUE, VALUE, Derived, _fmt, evaluate_predicate
from hedui.node.verification.catalogue import FieldDef, MonthsBefore, Unless
from hedui.node.verification.rules import InfoField, parse_rules


@pytest.mark.parametrize("n,ok", [(0, False), (1, True), (600, True), (601, False)])
def test_months_before_bounds(n, ok):
    if ok:
        assert MonthsBefore(months_before=n).months_before == n
    else:
        with pytest.raises(ValueError):
            MonthsBefore(months_before=n)


def test_unless_and_facts_need_one_entry():
    with pytest.raises(ValueError):
        Unless(fact="c", by=[])
    assert Unless(fact="c", by=["k"]).by == ["k"]
    with pytest.raises(ValueError):
        FieldDef(name="f", type="money", facts=[], agg="sum")


def test_info_field_needs_a_field():
    with pytest.raises(ValueError):
        InfoField(provider="tax", field="")
    assert InfoField(provider="tax", field="x").field == "x"


_RULES = '[standards]\ndefault = 1000\n"{region}" = 900\n[[income]]\nprovider = "tax"\nfield = "wages"\nmonths = 12\n'


@pytest.mark.parametrize("region,ok", [("370304", True), ("370304001", True), ("370304001001", True),
                                       ("3703040", False), ("3703040010010", False), ("37030", False), ("37030a", False)])
def test_region_codes_of_6_9_or_12_digits(region, ok):
    text = _RULES.format(region=region)
    if ok:
        assert parse_rules(text).standard_for(region) == Decimal(900)
    else:
        with pytest.raises(Exception, match="region code"):
            parse_rules(text)


NUM = FieldDef(name="n", type="money", facts=["x"], agg="sum")
CODE = FieldDef(name="c", type="code", facts=["x"], agg="latest")


def test_evaluate_predicate():
    assert evaluate_predicate(NUM, "ge", Decimal("100"), Derived(VALUE, "100.00")) is True
    assert evaluate_predicate(NUM, "ge", Decimal("100"), Derived(VALUE, "99.99")) is False
    assert evaluate_predicate(NUM, "eq", Decimal("100"), Derived(VALUE, "100.00")) is True    # numbers, not text
    assert evaluate_predicate(NUM, "eq", Decimal("100"), Derived(VALUE, "100.01")) is False
    assert evaluate_predicate(CODE, "eq", "0400", Derived(VALUE, "0400")) is True
    assert evaluate_predicate(CODE, "eq", "400", Derived(VALUE, "0400")) is False             # text, not numbers
    assert evaluate_predicate(NUM, "ge", Decimal("1"), Derived(NO_VALUE)) is None
    assert evaluate_predicate(CODE, "eq", "A", Derived(NO_VALUE)) is None
    with pytest.raises(Exception) as e:
        evaluate_predicate(CODE, "ge", "A", Derived(VALUE, "B"))
    assert getattr(e.value, "reason", "") == "BAD_PREDICATE"


@pytest.mark.parametrize("type_,agg,value,want", [
    ("money", "sum", Decimal("12.5"), "12.50"),
    ("integer", "max", Decimal("7"), "7"),
    ("integer", "count", Decimal("3"), "3"),
    ("decimal", "max", Decimal("2.500"), "2.5"),
    ("decimal", "max", Decimal("1E+2"), "100"),
    ("boolean", "latest", Decimal(1), "true"),
    ("boolean", "latest", Decimal(0), "false"),
    ("code", "latest", "0400", "0400"),
])
def test_format_by_type(type_, agg, value, want):
    assert _fmt(value, FieldDef(name="f", type=type_, facts=["x"], agg=agg)) == want


def test_one_character_names_are_names():
    from hedui.node.verification.rules import IncomeItem

    assert IncomeItem(provider="t", field="w", months=1).field == "w"
    assert InfoField(provider="t", field="w").field == "w"
    with pytest.raises(ValueError):
        IncomeItem(provider="t", field="", months=1)
    for provider, field in (("t", ""), ("", "w")):  # an information field names both
        with pytest.raises(ValueError):
            InfoField(provider=provider, field=field)
    for months, ok in ((0, False), (1, True), (120, True), (121, False)):
        if ok:
            assert IncomeItem(provider="t", field="w", months=months).months == months
        else:
            with pytest.raises(ValueError):
                IncomeItem(provider="t", field="w", months=months)


def test_answer_lookup_truth_unknown_and_the_field_sources_data_date():
    import datetime as dt

    from hedui.common.periods import Month
    from hedui.node.verification.answer import answer_lookup
    from hedui.v1 import lookup_pb2

    code = FieldDef(name="c", type="code", facts=["x"], agg="latest", window="as_of_reference")
    # Only source "s" produces fact x: its data date (2026-12-01) decides, not "other"'s older one.
    ans = answer_lookup({b"t": []}, [b"t", b"u"], [(code, "eq", "A")], provider="p", digest=b"", directory_version=1,
                        reference_month=Month(2026, 8), now=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
                        data_dates={"s": dt.date(2026, 12, 1), "other": dt.date(2026, 1, 1)}, sources_of={"x": ["s"]})
    t, u = ans.members
    assert (t.found, t.fields[0].state, t.fields[0].truth, t.fields[0].data_date) == (
        True, lookup_pb2.ANSWER_STATE_NO_VALUE, lookup_pb2.TRUTH_UNKNOWN, "2026-12-01")
    assert (u.found, u.fields[0].state, u.fields[0].truth) == (False, lookup_pb2.ANSWER_STATE_NO_RECORD, lookup_pb2.TRUTH_UNKNOWN)
