"""Row filters (adapters/filters.py): the syntax of DESIGN-12 parses or is refused with
``key: got X, want Y``; evaluation agrees with an independent reading of the rule (numbers
compare as numbers when both sides are numbers, else trimmed text; null fails everything but
``null = true``); hostile filter tables never crash and never echo an identity number."""

from __future__ import annotations

import unicodedata
from datetime import date
from decimal import Decimal, InvalidOperation

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedui.adapters import idnum
from hedui.adapters.filters import Matcher, matches, parse_where
from hedui.adapters.mapping import parse_mapping
from hedui.common.toml import FieldValueError
from hedui.node.errors import ConfigError


def _ok(where: dict, row: dict) -> bool:
    return matches(parse_where(where), row.get)


@pytest.mark.parametrize("where, row, want", [
    ({"aae100": "1"}, {"aae100": "1"}, True),
    ({"aae100": "1"}, {"aae100": " 1 "}, True),          # trimmed
    ({"aae100": "1"}, {"aae100": 1}, True),
    ({"aae100": "1"}, {"aae100": "01"}, True),           # both numbers: compared as numbers
    ({"aae100": "1"}, {"aae100": "0"}, False),
    ({"aae100": "1"}, {"aae100": None}, False),
    ({"sdxmdm": ["0400", "0600"]}, {"sdxmdm": "0600"}, True),
    ({"sdxmdm": ["0400", "0600"]}, {"sdxmdm": "0101"}, False),
    ({"ghyt": "住宅"}, {"ghyt": "住宅"}, True),
    ({"ghyt": "住宅"}, {"ghyt": "车库"}, False),
    ({"zt": {"in": ["B", "E", "M"]}}, {"zt": "E"}, True),
    ({"zt": {"not_in": ["B", "E", "M"]}}, {"zt": "A"}, True),
    ({"zt": {"not_in": ["B", "E", "M"]}}, {"zt": None}, False),  # null fails every comparison
    ({"zt": {"ne": "A"}}, {"zt": ""}, False),                     # blank is null
    ({"zxsj": {"null": True}}, {"zxsj": None}, True),
    ({"zxsj": {"null": True}}, {"zxsj": "  "}, True),
    ({"zxsj": {"null": False}}, {"zxsj": "20260101"}, True),
    ({"aae002": {"ge": 202511, "le": "202610"}}, {"aae002": 202601}, True),
    ({"aae002": {"ge": 202511, "le": "202610"}}, {"aae002": 202611}, False),
    ({"aae002": {"gt": "99"}}, {"aae002": "100"}, True),          # numbers, not text ("100" < "99")
    ({"kind": {"gt": "b"}}, {"kind": "c"}, True),                 # text order otherwise
    ({"kind": {"lt": "b"}}, {"kind": "10"}, True),                # a number against text: text order
    ({"d": {"ge": "2026-01-01"}}, {"d": date(2026, 3, 1)}, True),  # dates compare as ISO text
    ({"amt": {"lt": 0}}, {"amt": Decimal("-0.01")}, True),
    ({"a": "1", "b": "2"}, {"a": "1", "b": "3"}, False),          # every entry must hold
    ({"x": "１"}, {"x": "1"}, True),                              # full-width digits are digits
])
def test_examples(where, row, want):
    assert _ok(where, row) is want


@pytest.mark.parametrize("where, message", [
    ({"x": {"eqq": "1"}}, "x.eqq: got an unknown operator, want one of eq, ne, in, not_in, ge, gt, le, lt, null"),
    ({"x": 1.5}, "x: got a float, want text or a whole number"),
    ({"x": True}, "x: got a boolean, want text or a whole number"),
    ({"x": []}, "x: got an empty array, want at least one value"),
    ({"x": {"in": "a"}}, "x.in: got 'a', want an array of values"),
    ({"x": {}}, "x: got an empty table, want one of eq"),
    ({"x": {"null": "yes"}}, "x.null: got 'yes', want true or false"),
    ({"x": ["a", {"b": 1}]}, "x[1]: got a table, want text or a whole number"),
    ({"x": "110105194912310021"}, "x: got a value shaped like an identity number, want a code or a short value"),
    ({"x": "9" * 20}, "x: got a value shaped like an identity number"),
    ({"": "1"}, "got column '', want a column name"),
])
def test_bad_filters_name_the_key(where, message):
    with pytest.raises(FieldValueError) as ei:
        parse_where(where)
    assert message in f"{ei.value.key}: got {ei.value.got}, want {ei.value.want}".lstrip(": ")


def test_mapping_reports_the_filter_key():
    base = {"name": "m", "source": {"kind": "sql", "url": "sqlite://", "table": "t", "primary_key": "id"},
            "identity": {"column": "c"}, "facts": [{"name": "f", "column": "v", "type": "code"}]}
    for where_at, data, message in [
        ("source", {"where": {"aae100": {"eq": 1.0}}}, "mapping: source.where.aae100.eq: got a float"),
        ("identity", {"skip_where": {"zjzl": {"not": ["1"]}}}, "mapping: identity.skip_where.zjzl.not: got an unknown operator"),
    ]:
        m = {**base, where_at: {**base[where_at], **data}}
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            parse_mapping(m)
    m = {**base, "facts": [{**base["facts"][0], "where": {"ghyt": []}}]}
    with pytest.raises(ConfigError, match=r"facts\['f'\]\.where\.ghyt: got an empty array"):
        parse_mapping(m)


# --- an independent reading of the rule --------------------------------------------------------

def _num(t: str) -> Decimal | None:
    if not t or t.strip("+-") == "" or any(c not in "0123456789.+-" for c in t) or t.count(".") > 1 \
            or "+" in t[1:] or "-" in t[1:] or t in ("+.", "-.", "."):
        return None
    try:
        return Decimal(t)
    except InvalidOperation:
        return None


def _oracle(op: str, operand: str, cell: object) -> bool:
    if cell is None:
        return False
    text = unicodedata.normalize("NFKC", str(cell)).strip(" \t\r\n\u00a0\u3000\ufeff")
    if not text:
        return False
    o = unicodedata.normalize("NFKC", operand).strip(" \t\r\n\u00a0\u3000\ufeff")
    a, b = _num(text), _num(o)
    pair: tuple = (a, b) if a is not None and b is not None else (text, o)
    return {"eq": pair[0] == pair[1], "ne": pair[0] != pair[1], "ge": pair[0] >= pair[1],
            "gt": pair[0] > pair[1], "le": pair[0] <= pair[1], "lt": pair[0] < pair[1]}[op]


VALUES = st.one_of(st.sampled_from(["0", "1", "01", "10", "2", "-1", "0.5", ".5", "1.", "a", "B", "住宅", "1e3", " 7 ",
                                    "１", "+3", "--1", "", " "]),
                   st.text(alphabet="0123456789ab.-+ ", max_size=6))


@given(st.sampled_from(["eq", "ne", "ge", "gt", "le", "lt"]), VALUES.filter(lambda v: v.strip() != ""),
       st.one_of(VALUES, st.none(), st.integers(-20, 20)))
def test_comparisons_agree_with_an_independent_reading(op, operand, cell):
    assert _ok({"c": {op: operand}}, {"c": cell}) is _oracle(op, operand, cell)


@given(st.lists(VALUES.filter(lambda v: v.strip() != ""), min_size=1, max_size=4), st.one_of(VALUES, st.none()))
def test_in_and_not_in(values, cell):
    inside = any(_oracle("eq", v, cell) for v in values)
    assert _ok({"c": values}, {"c": cell}) is inside
    assert _ok({"c": {"not_in": values}}, {"c": cell}) is (cell is not None and bool(str(cell).strip())
                                                           and not inside)


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                       lambda inner: st.one_of(st.lists(inner, max_size=4),
                                               st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                       max_leaves=12)


@given(st.one_of(JSONISH, st.dictionaries(st.text(max_size=10), JSONISH, max_size=4)),
       st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.text(max_size=10), st.integers()), max_size=4))
def test_hostile_filters_parse_or_are_refused(where, row):
    try:
        conditions = parse_where(where)
    except FieldValueError as err:
        assert not idnum.contains(str(err))
        return
    assert isinstance(matches(conditions, row.get), bool)


@given(st.randoms(use_true_random=False))
def test_identity_numbers_are_never_filter_values(rng):
    n = idnum.synthetic(rng)
    for v in (n, f" {n}", [n], {"in": ["1", n]}, {"ne": n[:15]}):
        with pytest.raises(FieldValueError) as ei:
            parse_where({"zjh": v})
        assert not idnum.contains(str(ei.value)) and n[6:14] not in str(ei.value)


@given(st.sampled_from(["eq", "ne", "ge", "gt", "le", "lt"]), VALUES.filter(lambda v: v.strip() != ""),
       st.lists(st.one_of(VALUES, st.none(), st.integers(-3, 3), st.booleans(), st.floats(-3, 3),
                          st.decimals(-3, 3, places=2)), min_size=1, max_size=30))
def test_the_remembering_matcher_agrees_row_by_row(op, operand, cells):
    # Equal keys that are different cells: -0.0 vs 0.0 against "-0.0b" compare as text.
    conditions = parse_where({"c": {op: operand}})
    m = Matcher(conditions)
    cells += [0.0, -0.0, Decimal("0"), Decimal("-0"), Decimal("1.0"), Decimal("1"), 1, True]
    for cell in cells + cells[::-1]:   # repeated cells come from the memo
        assert m({"c": cell}.get) is matches(conditions, {"c": cell}.get)


def test_the_matcher_tells_equal_keys_apart():
    m = Matcher(parse_where({"c": {"lt": "-0.0b"}}))
    assert [m({"c": v}.get) for v in (0.0, -0.0, 0.0, -0.0)] == [False, True, False, True]
    m = Matcher(parse_where({"c": {"eq": "1.0"}}))     # "1.0" is a number: 1 equals it
    assert [m({"c": v}.get) for v in (Decimal("1"), Decimal("1.0"), 1, True, "1")] == [True] * 5
    m = Matcher(parse_where({"c": {"ge": "1.0x"}}))    # text: "1.0" >= "1.0x" is false, "1.5" is not
    assert [m({"c": v}.get) for v in (Decimal("1.0"), Decimal("1.5"), Decimal("1.0"))] == [False, True, False]
