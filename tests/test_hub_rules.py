"""The hub's verification rules file (node/verification/rules.py): old files still load, every
new key, refusals as ``file: key: got X, want Y``, and hypothesis over the parser (any TOML
value in any key is a ConfigError or a valid Rules, never another exception)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedui.common.periods import Month
from hedui.node.errors import ConfigError
from hedui.node.verification.rules import default_rules, load_rules, parse_rules

INCOME = '[[income]]\nprovider = "shebao"\nfield = "wages"\nmonths = 12\n'
OLD = '''
[standards]
default = 950
"370304" = 1010
[[income]]
provider = "hrss"
field = "wages_12m"
months = 12
[[deductions]]
provider = "hrss"
field = "paid"
months = 12
[[assets]]
flag = "vehicle"
provider = "vehicles"
field = "vehicle_max_price"
op = ">="
threshold = 50000
[[assets]]
flag = "second_property"
provider = "realestate"
field = "property_count"
op = "=="
threshold = 2
scope = "household"
'''


def test_old_rules_files_still_load_and_mean_the_same():
    r = parse_rules(OLD)
    assert r.members is None and r.info == []
    assert r.standard_for("370304") == Decimal("1010") and r.standard_for("110101") == Decimal("950")
    assert r.standard_for("370304", Month(2026, 8)) == Decimal("1010")
    assert r.assets[0].threshold == Decimal("50000") and r.assets[1].op == "=="
    assert r.fields_by_provider() == {"hrss": ["wages_12m", "paid"], "vehicles": ["vehicle_max_price"],
                                      "realestate": ["property_count"]}
    assert default_rules().standard_for("370304") == Decimal("1010")


def test_acceptance_file_asks_every_contract_field():
    from hedui.node.testbed.departments.federation import CONFIG_DIR

    r = load_rules(CONFIG_DIR / "hub-rules.toml")
    assert r.fields_by_provider() == {
        "huji": ["registry_status"], "shebao": ["wages", "pension", "unemployment_benefit"],
        "shuiwu": ["labour_income", "business_income"], "cheguan": ["vehicle_max_price"],
        "budongchan": ["residential_count"], "gongjijin": ["fund_balance"],
        "yibao": ["medical_count", "medical_own"], "canlian": ["certificate_count", "disability_grade"]}
    assert r.members is not None and r.members.exclude == {"死亡": "dead", "迁出": "moved_out"}
    assert r.standard_for("370304", Month(2026, 3)) == Decimal("1010.00")


def test_new_keys():
    r = parse_rules('''
[members]
provider = "huji"
field = "registry_status"
exclude = { "死亡" = "dead" }
''' + INCOME + '''
[[assets]]
flag = "b"
provider = "x"
field = "recipient"
op = "=="
threshold = true
[[assets]]
flag = "c"
provider = "x"
field = "grade"
op = "in"
threshold = ["1", 2, "三级"]
[[info]]
provider = "gongjijin"
field = "fund_balance"
scope = "household"
[standards]
default = "1010.00"
"370304" = [{ from = "2026-01", amount = "1010.00" }, { from = "2025-01", amount = "950" }]
''')
    assert r.assets[0].threshold == "true" and r.assets[1].threshold == ["1", "2", "三级"]
    assert r.standard_for("370304", Month(2025, 12)) == Decimal("950")
    assert r.standard_for("370304", Month(2026, 1)) == Decimal("1010.00")
    assert r.standard_for("370304", Month(2024, 12)) == Decimal("1010.00")  # none started: the default
    assert list(r.fields_by_provider()) == ["huji", "shebao", "x", "gongjijin"]


@pytest.mark.parametrize(("body", "message"), [
    (INCOME + '[standards]\n"370304" = 1010\n', "standards.default: got nothing, want the fallback monthly standard"),
    (INCOME + '[standards]\ndefault = 1010\n"37x" = 1\n', "standards.37x: got '37x', want 'default' or a 6-, 9- or 12-digit"),
    (INCOME + '[standards]\ndefault = 1010\n"370304" = [{ from = "2026-13", amount = 1 }]\n', "from: got '2026-13', want a month YYYY-MM"),
    (INCOME + '[standards]\ndefault = 1010\n"370304" = [{ from = "2026-01", amount = 1 }, { from = "2026-01", amount = 2 }]\n',
     "want each 'from' month once"),
    (INCOME + '[standards]\ndefault = 1010\n"370304" = []\n', "want at least one { from, amount }"),
    (INCOME + '[standards]\ndefault = -1\n', "standards.default: got -1, want a positive monthly amount"),
    (INCOME + '[standards]\ndefault = 1\n[[assets]]\nflag = "v"\nprovider = "a"\nfield = "b"\nop = ">="\nthreshold = "A"\n',
     "assets[0].threshold: got 'A', want a number for op '>='"),
    (INCOME + '[standards]\ndefault = 1\n[[assets]]\nflag = "v"\nprovider = "a"\nfield = "b"\nop = "in"\nthreshold = 3\n',
     "assets[0].threshold: got Decimal('3'), want a list of values for op 'in'"),
    (INCOME + '[standards]\ndefault = 1\n[[assets]]\nflag = "v"\nprovider = "a"\nfield = "b"\nop = "=="\nthreshold = ["A"]\n',
     "assets[0].op: got '==', want 'in' for a list threshold"),
    (INCOME + '[standards]\ndefault = 1\n[[assets]]\nflag = "v"\nprovider = "a"\nfield = "b"\nop = "~"\nthreshold = 1\n',
     "assets[0].op: got '~', want one of"),
    (INCOME + '[standards]\ndefault = 1\n[[assets]]\nflag = "v"\nprovider = "a"\nfield = "b"\nop = "=="\nthreshold = "A"\n'
     'scope = "household"\n', "want a number for scope 'household'"),
    (INCOME + '[standards]\ndefault = 1\n[[assets]]\nflag = "v"\nprovider = "a"\nfield = "b"\nthreshold = 1\n'
     '[[assets]]\nflag = "v"\nprovider = "a"\nfield = "c"\nthreshold = 1\n', "want each flag name once"),
    (INCOME + '[standards]\ndefault = 1\n[members]\nprovider = "huji"\nfield = "s"\nexclude = { "死亡" = "" }\n',
     "members.exclude.死亡: got '', want a non-empty status value and reason"),
    (INCOME + '[standards]\ndefault = 1\n[members]\nprovider = "huji"\nfield = "s"\n', "members.exclude: got nothing"),
    (INCOME + '[standards]\ndefault = 1\n[[info]]\nprovider = "a"\nfield = "b"\nscope = "all"\n', "info[0].scope: got 'all'"),
    (INCOME + '[standards]\ndefault = 1\n[[info]]\nprovider = "a"\nfield = "b"\nwindow = 3\n', "info[0].window: got an unknown key"),
    ('[[income]]\nprovider = "a"\nfield = "b"\nmonths = 0\n[standards]\ndefault = 1\n', "income[0].months: got 0"),
    ('income = []\n[standards]\ndefault = 1\n', "income: got an array of 0, want list should have at least 1 item"),
])
def test_refusals_name_the_file_and_key(body, message):
    with pytest.raises(ConfigError) as exc:
        parse_rules(body, source="hub-rules.toml")
    assert str(exc.value).startswith("hub-rules.toml: ") and message in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)


def test_load_rules_names_the_path(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(INCOME + '[standards]\ndefault = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{p}: standards.default"):
        load_rules(p)


# ---------------------------------------------------------------- hypothesis

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=8),
                    st.floats(allow_nan=False, allow_infinity=False), st.lists(st.text(max_size=3), max_size=3),
                    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))


def _valid() -> dict:
    return {
        "members": {"provider": "huji", "field": "registry_status", "exclude": {"死亡": "dead"}},
        "income": [{"provider": "shebao", "field": "wages", "months": 12}],
        "assets": [{"flag": "v", "provider": "cheguan", "field": "p", "op": ">=", "threshold": "100000.00"}],
        "info": [{"provider": "g", "field": "f", "scope": "household"}],
        "standards": {"default": "1010.00", "370304": [{"from": "2026-01", "amount": "1010.00"}]},
    }


_PATHS = [("members", "provider"), ("members", "exclude"), ("income", 0, "months"), ("income", 0, "field"),
          ("assets", 0, "op"), ("assets", 0, "threshold"), ("assets", 0, "scope"), ("info", 0, "scope"),
          ("standards", "default"), ("standards", "370304"), ("standards", "370304", 0, "from"),
          ("standards", "370304", 0, "amount"), ("members",), ("income",), ("standards",)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(_PATHS), _scalar)
def test_any_value_in_any_key_is_valid_or_one_config_error(path, value):
    data = _valid()
    node = data
    for k in path[:-1]:
        node = node[k]
    if value is None:
        if isinstance(node, dict):
            node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError):
        return
    try:
        r = parse_rules(text, source="r.toml")
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("r.toml: ") and ": got " in msg and "\n" not in msg
        return
    assert "default" in r.standards and r.income


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.tuples(st.integers(2020, 2030), st.integers(1, 12)),
                       st.decimals(min_value=1, max_value=5000, places=2), min_size=1, max_size=6),
       st.tuples(st.integers(2019, 2031), st.integers(1, 12)))
def test_standard_in_force_is_the_latest_started(periods, month):
    entries = [{"from": f"{y:04d}-{m:02d}", "amount": str(a)} for (y, m), a in periods.items()]
    r = parse_rules(tomli_w.dumps({"income": [{"provider": "a", "field": "b", "months": 12}],
                                   "standards": {"default": "1.00", "370304": entries}}))
    started = sorted((ym, a) for ym, a in periods.items() if ym <= month)
    want = started[-1][1] if started else Decimal("1.00")
    assert r.standard_for("370304", Month(*month)) == want
    assert r.standard_for("110101", Month(*month)) == Decimal("1.00")


def test_unknown_fields_against_the_directory():
    r = parse_rules(OLD)
    offered = {"hrss": ["wages_12m", "paid"], "vehicles": ["vehicle_count"]}
    assert r.unknown_fields(offered) == [
        "assets[0].field: got 'vehicle_max_price', want one of vehicles's fields (vehicle_count)",
        "assets[1].provider: got 'realestate', want a department in the directory (hrss, vehicles)"]
    assert r.unknown_fields({**offered, "vehicles": ["vehicle_max_price"], "realestate": ["property_count"]}) == []


def test_mutation_survivors_pinned():
    from pydantic import ValidationError

    from hedui.node.verification.rules import as_number

    assert as_number("Infinity") is None and as_number("NaN") is None and as_number(" 3 ") == Decimal(3)
    r = parse_rules(INCOME + '[standards]\ndefault = 1\n"370304001" = [{ from = "2025-01", amount = 2 }, { from = "2026-01", amount = 3 }]\n'
                    '[[assets]]\nflag = "f"\nprovider = "a"\nfield = "b"\nthreshold = 0.1\n')
    with pytest.raises(ValidationError):
        r.income[0].months = 3  # type: ignore[misc]  # rules are frozen once loaded
    assert r.standard_for("370304001") == Decimal(3)  # no month given: the latest entry
    assert r.assets[0].threshold == Decimal("0.1")
    for bad, key in (('flag = ""', "assets[0].flag"), ('field = ""', "assets[0].field")):
        body = INCOME + '[standards]\ndefault = 1\n[[assets]]\nflag = "f"\nprovider = "a"\nfield = "b"\nthreshold = 1\n'
        with pytest.raises(ConfigError, match=re.escape(key)):
            parse_rules(body.replace(bad.split(" = ")[0] + ' = "' + ("f" if bad.startswith("flag") else "b") + '"', bad))
    for n in (8, 10):
        with pytest.raises(ConfigError):
            parse_rules(INCOME + f'[standards]\ndefault = 1\n"{"3" * n}" = 1\n')
    long = "1234567890abcdefXYZ"
    with pytest.raises(ConfigError) as exc:
        parse_rules(INCOME + f'[standards]\ndefault = 1\n"{long}" = 1\n')
    assert f"standards.{long[:16]}: got {long[:16]!r}" in str(exc.value) and long[:17] not in str(exc.value)
