"""Field catalogue parsing and its validation against the node's mappings (DESIGN-12
"Catalogue"): every key, the old keys, refusals worded ``file: key: got X, want Y``, and
hypothesis over arbitrary catalogue documents (nothing but a ConfigError escapes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedui.adapters.filters import matches, parse_where
from hedui.adapters.mapping import parse_mapping
from hedui.common.errors import ConfigError
from hedui.node.verification.catalogue import MonthsBefore, check_catalogue, facts_of_mappings, load_catalogue

MAPPING = {
    "name": "tax", "source": {"kind": "csv", "path": "x.csv", "encoding": "utf-8"},
    "identity": {"column": "id"},
    "facts": [
        {"name": "income", "column": "sre", "type": "money", "unit": "yuan", "date": "d", "attrs": {"item": "dm"}},
        {"name": "status", "column": "zt", "type": "code"},
        {"name": "area", "column": "mj", "type": "decimal", "unit": "m2", "date": "d"},
    ],
}


def _load(tmp_path: Path, *fields: dict):
    p = tmp_path / "fields.toml"
    p.write_text(tomli_w.dumps({"fields": list(fields)}), encoding="utf-8")
    cat = load_catalogue(p)
    check_catalogue(cat, facts_of_mappings([parse_mapping(MAPPING)]), p)
    return cat


def _field(**kw) -> dict:
    return {"name": "f", "type": "money", "facts": ["income"], "agg": "sum", **kw}


def test_every_key_and_the_old_ones(tmp_path):
    cat = _load(tmp_path, _field(window={"months_before": 12}, where={"item": ["0400"]}, distinct_by=["item"],
                                 unit="CNY", description="劳务报酬"),
                {"name": "old", "type": "money", "fact": "income", "agg": "sum", "window_months": 6},
                {"name": "all", "type": "money", "fact": "income", "agg": "sum", "window_months": 0},
                {"name": "st", "type": "code", "fact": "status", "agg": "latest"})
    f = cat.by_name()
    assert f["f"].window == MonthsBefore(months_before=12) and f["f"].attrs_used == ["item"]
    assert f["old"].facts == ["income"] and f["old"].window == MonthsBefore(months_before=6)
    assert f["all"].window == "all_time" and f["st"].window == "all_time"


@pytest.mark.parametrize("field, key, want", [
    (_field(facts=["incom"]), "fields['f'].facts: got 'incom'", "want a fact a mapping produces"),
    (_field(where={"itme": "0400"}), "fields['f'].where: got attribute 'itme'", "want one fact 'income' keeps"),
    (_field(distinct_by=["x"]), "fields['f'].distinct_by: got attribute 'x'", "want one fact"),
    ({"name": "f", "type": "code", "facts": ["status"], "agg": "latest", "window": "as_of_reference"},
     "fields['f'].window: got as_of_reference over fact 'status' that has no date", "want a date"),
    (_field(type="integer", facts=["area"]), "fields['f'].type: got integer over fact 'area' of type decimal", "want"),
    (_field(unless={"fact": "gone", "by": ["item"]}), "fields['f'].unless.fact: got 'gone'", "want a fact"),
])
def test_refused_against_the_mappings(tmp_path, field, key, want):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, field)
    assert f"fields.toml: {key}" in str(e.value) and want in str(e.value)


@pytest.mark.parametrize("field, needle", [
    (_field(agg="count"), "type: got 'money', want one of ['integer'] for agg count"),
    (_field(agg="sum_per_month"), "window: got 'all_time', want a window of months"),
    (_field(window={"months_before": 0}), "months_before"),
    (_field(window="last_week"), "window"),
    (_field(where={"item": {"like": "04%"}}), "where.item.like: got an unknown operator"),
    (_field(fact="income"), "fact: got both fact and facts"),
    (_field(window_months=-1), "window_months: got -1"),
    ({**_field(), "name": "f", "extra": 1}, "extra"),
])
def test_refused_by_shape(tmp_path, field, needle):
    p = tmp_path / "fields.toml"
    p.write_text(tomli_w.dumps({"fields": [field]}), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_catalogue(p)
    assert str(e.value).startswith(str(p)) and needle in str(e.value)


def test_filters_compare_numbers_as_numbers_and_text_as_text():
    c = parse_where({"item": ["0400"], "n": {"ge": "10", "lt": 20}, "x": {"null": True}, "t": {"ne": "住宅"}})
    assert matches(c, {"item": "400", "n": "10.0", "t": "商业"}.get)
    assert not matches(c, {"item": "0400", "n": "20", "t": "商业"}.get)
    assert not matches(c, {"item": "0400", "n": "15", "x": "v", "t": "商业"}.get)
    assert not matches(c, {"item": "0400", "n": "15"}.get)            # a null t fails ne (never matches by accident)


_scalar = st.one_of(st.text(max_size=8), st.integers(-5, 700), st.booleans())
_value = st.recursive(_scalar, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)),
                      max_leaves=8)
_keys = st.sampled_from(["name", "type", "unit", "description", "fact", "facts", "agg", "window", "window_months",
                         "where", "distinct_by", "unless", "other"])
_good = {"name": st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
         "type": st.sampled_from(["money", "integer", "decimal", "boolean", "code", "text"]),
         "agg": st.sampled_from(["sum", "count", "max", "min", "latest", "exists", "sum_per_month", "avg"]),
         "facts": st.lists(st.sampled_from(["income", "status", "area", "nope"]), max_size=2),
         "window": st.one_of(st.sampled_from(["year_to_date", "previous_year", "as_of_reference", "all_time", "x"]),
                             st.fixed_dictionaries({"months_before": st.integers(-1, 700)})),
         "where": st.dictionaries(st.sampled_from(["item", "zz"]), _value, max_size=2),
         "distinct_by": st.lists(st.sampled_from(["item", "zz"]), max_size=2)}


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(field=st.one_of(st.fixed_dictionaries({}, optional=_good),
                       st.dictionaries(_keys, _value, max_size=6)))
def test_any_document_loads_or_is_refused_with_a_config_error(tmp_path, field):
    try:
        _load(tmp_path, field)
    except ConfigError as e:
        assert str(e).startswith(str(tmp_path / "fields.toml") + ": ")
        assert "\n" not in str(e).strip()


def test_documented_catalogue_examples_load():
    import re
    import tomllib

    from hedui.node.verification.catalogue import Catalogue

    doc = (Path(__file__).resolve().parent.parent / "docs" / "department-it.md").read_text(encoding="utf-8")
    section = doc[doc.index("### Field catalogue"):doc.index("### Rotating the OPRF key")]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) >= 5
    for b in blocks:
        Catalogue.model_validate(tomllib.loads(b))


def test_acceptance_catalogues_fit_their_mappings():
    from hedui.adapters.mapping import load_mapping
    from hedui.node.testbed.departments.federation import CONFIG_DIR

    depts = sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir())
    assert len(depts) == 9
    for d in depts:
        check_catalogue(load_catalogue(d / "fields.toml"),
                        facts_of_mappings([load_mapping(m) for m in sorted(d.glob("mapping-*.toml"))]), d / "fields.toml")
