"""Catalogue pieces pinned exactly (node/verification/catalogue.py, issue 19): how the facts
of several mappings merge, every check_catalogue refusal's wording, the old keys' bounds, and
the derived properties. Expected values are written out by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import tomli_w

from hedui.common.errors import ConfigError
from hedui.node.verification.catalogue import Catalogue, FactInfo, FieldDef, check_catalogue, facts_of_mappings, load_catalogue


def _fact(name, type_="money", date="d", attrs=None):
    return SimpleNamespace(name=name, type=type_, date=date, attrs=attrs)


def _mapping(name, *facts):
    return SimpleNamespace(name=name, facts=list(facts))


def test_facts_of_several_mappings_merge():
    got = facts_of_mappings([
        _mapping("a", _fact("wage", attrs={"item": "x", "unit": "y"}), _fact("flag", "bool", date=None)),
        _mapping("b", _fact("wage", "integer", attrs={"item": "z"})),
        _mapping("c", _fact("wage", date=None, attrs={"item": "x", "other": "q"})),
        _mapping("b", _fact("wage", attrs={"item": "z"})),
    ])
    assert set(got) == {"wage", "flag"}
    w = got["wage"]
    assert w.types == {"money", "integer"} and w.dated is False and w.attrs == {"item"} and w.sources == ["a", "b", "c"]
    f = got["flag"]
    assert (f.types, f.dated, f.attrs, f.sources) == ({"bool"}, False, set(), ["a"])
    only_dated = facts_of_mappings([_mapping("a", _fact("wage")), _mapping("b", _fact("wage"))])
    assert only_dated["wage"].dated is True


def _info(types=("money",), dated=True, attrs=("item",)):
    return FactInfo(types=set(types), dated=dated, attrs=set(attrs), sources=["m"])


def _check(field: dict, facts: dict[str, FactInfo]):
    check_catalogue(Catalogue(fields=[FieldDef(**field)]), facts, "f.toml")


def _refusal(field: dict, facts: dict[str, FactInfo]) -> str:
    with pytest.raises(ConfigError) as e:
        _check(field, facts)
    return str(e.value)


F = {"name": "f", "type": "money", "facts": ["income"], "agg": "sum"}


def test_check_catalogue_messages():
    assert _refusal({**F, "facts": ["x"]}, {}) == "f.toml: fields['f'].facts: got 'x', want a fact a mapping produces (none)"
    assert _refusal({**F, "facts": ["x"]}, {"b": _info(), "a": _info()}) == \
        "f.toml: fields['f'].facts: got 'x', want a fact a mapping produces (a, b)"
    assert _refusal({**F, "unless": {"fact": "gone", "by": ["item"]}}, {"income": _info()}) == \
        "f.toml: fields['f'].unless.fact: got 'gone', want a fact a mapping produces (income)"
    # A name that is both a fact and the unless fact is reported under "facts".
    assert _refusal({**F, "facts": ["gone"], "unless": {"fact": "gone", "by": ["item"]}}, {"income": _info()}).startswith(
        "f.toml: fields['f'].facts: got 'gone'")
    assert _refusal({**F, "where": {"zz": "1"}}, {"income": _info(attrs=("b", "a"))}) == \
        "f.toml: fields['f'].where: got attribute 'zz', want one fact 'income' keeps (a, b)"
    assert _refusal({**F, "distinct_by": ["zz"]}, {"income": _info(attrs=())}) == \
        "f.toml: fields['f'].distinct_by: got attribute 'zz', want one fact 'income' keeps (none)"
    assert _refusal({**F, "unless": {"fact": "c", "by": ["k"]}}, {"income": _info(attrs=("k",)), "c": _info(attrs=("j",))}) == \
        "f.toml: fields['f'].unless.by: got attribute 'k', want one fact 'c' keeps (j)"
    assert _refusal({**F, "unless": {"fact": "c", "by": ["k"]}}, {"income": _info(attrs=()), "c": _info(attrs=("k",))}) == \
        "f.toml: fields['f'].unless.by: got attribute 'k', want one fact 'income' keeps (none)"
    assert _refusal({**F, "window": {"months_before": 3}}, {"income": _info(dated=False)}) == \
        ("f.toml: fields['f'].window: got months_before=3 over fact 'income' that has no date, "
         "want a date on the fact in every mapping or window all_time")
    assert _refusal({**F, "type": "decimal"}, {"income": _info(types=("money", "code", "decimal"))}) == \
        "f.toml: fields['f'].type: got decimal over fact 'income' of type code, money, want a fact of type decimal or integer"


def test_check_catalogue_accepts():
    _check(F, {"income": _info(dated=False)})                           # all_time needs no date
    _check({**F, "window": "previous_year"}, {"income": _info()})
    _check({**F, "type": "decimal"}, {"income": _info(types=("integer", "decimal"))})
    # count and exists carry no value: the fact's type does not matter.
    _check({**F, "type": "integer", "agg": "count"}, {"income": _info(types=("code",))})
    _check({**F, "type": "boolean", "agg": "exists"}, {"income": _info(types=("money",))})
    _check({**F, "unless": {"fact": "c", "by": ["item"]}}, {"income": _info(), "c": _info(types=("code",), dated=False)})
    with pytest.raises(ConfigError, match="window"):  # sum_per_month needs dated facts, whatever its window
        _check({**F, "agg": "sum_per_month", "window": "year_to_date"}, {"income": _info(dated=False)})


@pytest.mark.parametrize("n,ok", [(0, True), (600, True), (601, False), (-1, False), (True, False), ("6", False)])
def test_window_months_bounds(n, ok):
    doc = {"name": "f", "type": "money", "fact": "income", "agg": "sum", "window_months": n}
    if ok:
        assert FieldDef(**doc).window_text == ("all_time" if n == 0 else f"months_before={n}")
    else:
        with pytest.raises(ValueError, match="window_months"):
            FieldDef(**doc)


def test_window_and_window_months_together_are_refused():
    with pytest.raises(ValueError, match="window_months: got both window_months and window"):
        FieldDef(**{**F, "window_months": 3, "window": "all_time"})


@pytest.mark.parametrize("window,ok", [("year_to_date", True), ("previous_year", True), ({"months_before": 1}, True),
                                       ("as_of_reference", False), ("all_time", False)])
def test_sum_per_month_needs_a_window_of_months(window, ok):
    doc = {**F, "agg": "sum_per_month", "window": window}
    if ok:
        FieldDef(**doc)
    else:
        with pytest.raises(ValueError, match="a window of months for agg sum_per_month"):
            FieldDef(**doc)


@pytest.mark.parametrize("type_,agg,numeric", [
    ("money", "max", True), ("integer", "latest", True), ("decimal", "min", True), ("code", "latest", False),
    ("boolean", "latest", False), ("boolean", "exists", False), ("integer", "count", True),
])
def test_numeric(type_, agg, numeric):
    assert FieldDef(name="f", type=type_, facts=["x"], agg=agg).numeric is numeric


def test_attrs_used_in_order_once_and_directory_fields():
    fd = FieldDef(**{**F, "where": {"b": "1", "a": "2"}, "distinct_by": ["a", "c"]})
    assert fd.attrs_used == ["b", "a", "c"]
    cat = Catalogue(fields=[FieldDef(**{**F, "unit": "CNY", "description": "工资"})])
    assert cat.directory_fields() == [{"name": "f", "type": "money", "unit": "CNY", "description": "工资"}]


def test_duplicate_names_refused(tmp_path):
    p = tmp_path / "fields.toml"
    p.write_text(tomli_w.dumps({"fields": [F, F]}), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_catalogue(p)
    assert str(e.value) == f"{p}: fields.name: got duplicates, want unique names"
