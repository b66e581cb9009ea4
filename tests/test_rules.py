"""Detection rules: file format, default rule sets, exactly the detections they define."""

from __future__ import annotations

import re
import string
import tomllib
from datetime import date
from decimal import Decimal

import pytest
import tomli_w
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hedui.adapters.records import Fact, Record
from hedui.node.discovery.calendar import WorkCalendar
from hedui.node.discovery.detect import Detection, detect
from hedui.node.discovery.rules import (
    DEFAULT_DEPARTMENTS,
    RuleSet,
    default_rules,
    load_rules,
    parse_rules,
)
from hedui.node.errors import ConfigError, InvalidArgument

SECRET = b"s" * 32
CAL = WorkCalendar()

def _idn(body17: str) -> str:
    w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body17 + "10X98765432"[sum(int(c) * x for c, x in zip(body17, w)) % 11]


# Valid GB 11643 numbers (check digits computed), used only as test data.
P1 = _idn("11010119900307001")
P2 = _idn("11010119851111002")
P3 = _idn("37030419700101003")
P4 = _idn("37030420100505004")


def stay(identity: str, amount: str, discharged: date, **attrs: str) -> Record:
    return Record(
        identity=identity,
        locator=f"stays:pk={discharged.isoformat()}-{amount}",
        facts=(Fact("inpatient_stay", Decimal(amount), "CNY", discharged, {"hospital": "区人民医院", **attrs}),),
    )


def run(records, department, as_of, provider="370304-medins") -> list[Detection]:
    return detect(records, default_rules(department), as_of, CAL, provider=provider, dedup_secret=SECRET)


# ---------------------------------------------------------------- default rule sets


def test_every_default_department_loads():
    for dept in DEFAULT_DEPARTMENTS:
        rs = default_rules(dept)
        assert isinstance(rs, RuleSet) and rs.department == dept and rs.rules
    ids = [r.id for d in DEFAULT_DEPARTMENTS for r in default_rules(d).rules]
    assert len(ids) == len(set(ids)) == 12


def test_unknown_department():
    with pytest.raises(ConfigError, match="department: got 'police'"):
        default_rules("police")


# ---------------------------------------------------------------- medical insurance


def test_single_stay_threshold_last_month_boundaries():
    as_of = date(2025, 6, 3)
    records = [
        stay(P1, "20000.00", date(2025, 5, 31)),  # exactly the threshold, last day of May: yes
        stay(P2, "19999.99", date(2025, 5, 15)),  # one fen short: no
        stay(P3, "50000", date(2025, 6, 1)),  # discharged this month: not yet
        stay(P4, "30000", date(2025, 4, 30)),  # the month before last: no
        stay(P4, "20000.01", date(2025, 5, 1), region="370304002"),  # first day of May: yes
    ]
    found = [d for d in run(records, "medins", as_of) if d.rule == "medins.inpatient_single_20k"]
    assert sorted((d.identity, d.event_date) for d in found) == sorted([
        (P4, date(2025, 5, 1)),
        (P1, date(2025, 5, 31)),
    ])
    for d in found:
        assert d.period == "2025-05"
        assert d.due_date == date(2025, 6, 5)  # Thursday, a working day
        assert d.event_type == "large_medical_expense"
        assert d.details["hospital"] == "区人民医院"
    by_id = {d.identity: d for d in found}
    assert by_id[P4].region == "370304002"
    assert by_id[P1].details["value"] == "20000.00"


def test_stay_discharged_in_june_counts_in_july_run():
    records = [stay(P3, "50000", date(2025, 6, 1))]
    found = run(records, "medins", date(2025, 7, 1))
    # The single-stay rule reports June; the yearly rule reports the year so far, early.
    assert sorted((d.rule, d.period) for d in found) == [
        ("medins.inpatient_single_20k", "2025-06"),
        ("medins.inpatient_yearly_40k", "2025"),
    ]


def test_monthly_due_date_rolls_forward_over_holidays():
    # September's notices are due by 5 October 2025 — inside the National Day holiday
    # (1-8 Oct), so they are due on Thursday 9 October.
    found = run([stay(P1, "25000", date(2025, 9, 30))], "medins", date(2025, 10, 2))
    assert [d.due_date for d in found] == [date(2025, 10, 9)]


def test_yearly_cumulative_threshold():
    as_of = date(2025, 12, 10)
    records = [
        stay(P1, "15000", date(2025, 2, 1)),
        stay(P1, "15000", date(2025, 7, 1)),
        stay(P1, "10000.00", date(2025, 11, 20)),  # 40,000.00 in total: yes
        stay(P2, "20000", date(2025, 3, 1)),
        stay(P2, "19999.99", date(2025, 9, 1)),  # 39,999.99: no
        stay(P3, "39000", date(2024, 12, 31)),  # last year does not count
        stay(P3, "2000", date(2025, 1, 1)),
        stay(P4, "45000", date(2025, 12, 11)),  # after as_of: not yet
    ]
    found = [d for d in run(records, "medins", as_of) if d.rule == "medins.inpatient_yearly_40k"]
    assert [d.identity for d in found] == [P1]
    d = found[0]
    assert d.details["total"] == "40000.00" and d.details["events"] == "3"
    assert d.event_date == date(2025, 11, 20)
    assert d.period == "2025"
    assert d.due_date == date(2025, 12, 31)  # Wednesday


def test_yearly_due_date_moves_back_within_the_year():
    # 31 December 2023 was a Sunday: due Friday 29 December.
    found = [
        d
        for d in run([stay(P1, "41000", date(2023, 6, 1))], "medins", date(2023, 12, 1))
        if d.rule == "medins.inpatient_yearly_40k"
    ]
    assert [d.due_date for d in found] == [date(2023, 12, 29)]


def test_other_units_and_undated_facts_do_not_count():
    records = [
        Record(P1, "x", (Fact("inpatient_stay", Decimal("3000000"), "fen", date(2025, 5, 2)),)),
        Record(P2, "y", (Fact("inpatient_stay", Decimal("30000"), "CNY", None),)),
    ]
    assert run(records, "medins", date(2025, 6, 3)) == []


# ---------------------------------------------------------------- weekly, event and flag rules


def test_disability_newly_certified_last_week_due_monday_rolled_over_holiday():
    # Run on Wed 8 Oct 2025; last week is Mon 29 Sep - Sun 5 Oct; due Monday 6 Oct is a
    # holiday (1-8 Oct), so due Thursday 9 Oct.
    recs = [
        Record(P1, "a", (Fact("disability_certificate", Decimal(2), "code", date(2025, 9, 29), {"grade": "2"}),)),
        Record(P2, "b", (Fact("disability_certificate", Decimal(1), "code", date(2025, 10, 5)),)),
        Record(P3, "c", (Fact("disability_certificate", Decimal(1), "code", date(2025, 9, 28)),)),
        Record(P4, "d", (Fact("disability_certificate", Decimal(1), "code", date(2025, 10, 6)),)),
    ]
    found = run(recs, "disability", date(2025, 10, 8), provider="370304-cl")
    assert sorted(d.identity for d in found) == sorted([P1, P2])
    assert {d.period for d in found} == {"2025-W40"}
    assert {d.due_date for d in found} == {date(2025, 10, 9)}
    assert [d.details.get("grade") for d in found if d.identity == P1] == ["2"]


def test_civil_affairs_filters_programmes():
    recs = [
        Record(P1, "a", (Fact("assistance_admission", Decimal(1), "bool", date(2025, 3, 4), {"programme": "dibao"}),)),
        Record(P2, "b", (Fact("assistance_admission", Decimal(1), "bool", date(2025, 3, 5), {"programme": "pension"}),)),
        Record(P3, "c", (Fact("assistance_admission", Decimal(1), "bool", date(2025, 3, 6)),)),
    ]
    found = run(recs, "civil_affairs", date(2025, 3, 10))
    assert [d.identity for d in found] == [P1]
    assert found[0].due_date == date(2025, 3, 10)


def test_traffic_within_three_working_days_over_spring_festival():
    recs = [
        Record(P1, "a", (Fact("traffic_accident", Decimal(1), "count", date(2025, 1, 24), {"outcome": "death"}),)),
        Record(P2, "b", (Fact("traffic_accident", Decimal(1), "count", date(2025, 1, 24), {"outcome": "injury"}),)),
        Record(P3, "c", (Fact("traffic_accident", Decimal(1), "count", date(2024, 12, 1), {"outcome": "disability"}),)),
    ]
    found = run(recs, "traffic", date(2025, 1, 27))
    assert [(d.identity, d.due_date, d.period) for d in found] == [(P1, date(2025, 2, 5), "2025-01-24")]


def test_fire_needs_large_loss_mark():
    recs = [
        Record(P1, "a", (Fact("fire", Decimal("80000"), "CNY", date(2025, 3, 7), {"large_loss": "true"}),)),
        Record(P2, "b", (Fact("fire", Decimal("800"), "CNY", date(2025, 3, 7), {"large_loss": "false"}),)),
    ]
    found = run(recs, "fire", date(2025, 3, 7))
    assert [(d.identity, d.due_date) for d in found] == [(P1, date(2025, 3, 12))]


def test_rural_flag_needs_non_zero_value():
    recs = [
        Record(P1, "a", (Fact("return_to_poverty_risk", Decimal(1), "bool", date(2025, 4, 20)),)),
        Record(P2, "b", (Fact("return_to_poverty_risk", Decimal(0), "bool", date(2025, 4, 21)),)),
    ]
    found = run(recs, "rural", date(2025, 5, 2))
    assert [d.identity for d in found] == [P1]
    assert found[0].due_date == date(2025, 5, 6)  # 5 May 2025 is a Labour Day holiday


def test_education_applications_this_year():
    recs = [
        Record(P1, "a", (Fact("education_aid_application", Decimal(1), "bool", date(2025, 9, 1), {"school": "一中"}),)),
        Record(P2, "b", (Fact("education_aid_application", Decimal(1), "bool", date(2024, 9, 1)),)),
    ]
    found = run(recs, "education", date(2025, 12, 1))
    assert [(d.identity, d.due_date) for d in found] == [(P1, date(2025, 12, 31))]


# ---------------------------------------------------------------- determinism and privacy


def test_rerun_is_identical_and_duplicates_collapse():
    # The same stay exported twice is one event: one single-stay detection, and it is counted
    # once towards the yearly total (20,000 + 20,000 would have crossed 40,000).
    records = [stay(P1, "20000", date(2025, 5, 31)), stay(P1, "20000", date(2025, 5, 31))]
    first = run(records, "medins", date(2025, 6, 3))
    again = run(list(reversed(records)), "medins", date(2025, 6, 4))
    assert [d.rule for d in first] == ["medins.inpatient_single_20k"]
    assert [d.dedup_key for d in first] == [d.dedup_key for d in again]


def test_dedup_key_is_keyed_and_scoped():
    records = [stay(P1, "20000", date(2025, 5, 31))]
    base = run(records, "medins", date(2025, 6, 3))[0].dedup_key
    other_secret = detect(records, default_rules("medins"), date(2025, 6, 3), CAL,
                          provider="370304-medins", dedup_secret=b"t" * 32)[0].dedup_key
    other_provider = run(records, "medins", date(2025, 6, 3), provider="370304-health")[0].dedup_key
    assert len({base, other_secret, other_provider}) == 3
    assert P1 not in base


def test_detection_repr_hides_identity_and_details():
    d = run([stay(P1, "20000", date(2025, 5, 31))], "medins", date(2025, 6, 3))[0]
    assert P1 not in repr(d) and "区人民医院" not in repr(d)


def test_detect_checks_its_arguments():
    with pytest.raises(InvalidArgument, match="dedup_secret"):
        detect([], default_rules("medins"), date(2025, 6, 3), CAL, provider="p", dedup_secret=b"short")
    with pytest.raises(InvalidArgument, match="provider"):
        detect([], default_rules("medins"), date(2025, 6, 3), CAL, provider="", dedup_secret=SECRET)


# ---------------------------------------------------------------- rule files

GOOD = """
department = "medins"
[[rules]]
id = "medins.a"
event_type = "large_medical_expense"
fact = "inpatient_stay"
kind = "threshold"
threshold = "20000"
period = "last_month"
schedule = { kind = "monthly", day = 5 }
"""


def test_rule_file_round_trip(tmp_path):
    f = tmp_path / "rules.toml"
    f.write_text(GOOD, encoding="utf-8")
    rs = load_rules(f)
    assert rs.rules[0].threshold == Decimal("20000")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (('kind = "threshold"', 'kind = "threshold"\nthreshhold = 1'), "rules['medins.a'].threshhold: got an unknown key"),
        (('threshold = "20000"', "threshold = 20000.0"), "rules['medins.a'].threshold: got float 20000.0"),
        (('threshold = "20000"', 'threshold = "2e4"'), "rules['medins.a'].threshold: got '2e4'"),
        (('threshold = "20000"', ""), "rules['medins.a'].threshold: got nothing"),
        (("day = 5", "day = 31"), "rules['medins.a'].schedule.day: got 31"),
        (("day = 5", 'day = "5"'), "rules['medins.a'].schedule.day: got '5'"),
        (('kind = "monthly", day = 5', 'kind = "weekly", weekday = "monday"'), "rules['medins.a'].schedule.kind: got 'weekly'"),
        (('period = "last_month"', 'period = "last_quarter"'), "rules['medins.a'].period: got 'last_quarter'"),
        (('period = "last_month"', 'period = "last_month"\nlookback_days = 7'), "rules['medins.a'].lookback_days"),
        (('fact = "inpatient_stay"', ""), "rules['medins.a'].fact: got nothing"),
        (('kind = "threshold"', 'kind = "sum"'), "rules['medins.a'].kind: got 'sum'"),
        (('id = "medins.a"', 'id = "Medins A"'), "rules['Medins A'].id: got 'Medins A'"),
        (('department = "medins"', ""), "department: got nothing"),
        (('department = "medins"', 'department = "medins"\nowner = "x"'), "owner: got an unknown key"),
    ],
)
def test_malformed_rule_file_names_rule_and_key(change, needle):
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigError) as err:
        parse_rules(GOOD.replace(old, new, 1), source="rules-test.toml")
    assert needle in str(err.value)
    assert "rules-test.toml" in str(err.value)


def test_duplicate_rule_ids():
    text = GOOD + GOOD.split("\n", 2)[2]
    with pytest.raises(ConfigError, match=r"rules\['medins.a'\]\.id: got a duplicate"):
        parse_rules(text)


def test_invalid_toml():
    with pytest.raises(ConfigError, match="invalid TOML"):
        parse_rules("department = \n")


# ---------------------------------------------------------------- hostile input

_keys = st.sampled_from(
    ["department", "name", "default_region", "rules", "id", "event_type", "fact", "kind", "threshold", "unit",
     "period", "lookback_days", "schedule", "details", "where", "description", "day", "weekday", "workdays",
     "month", "x", "kind "]
)
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["threshold", "cumulative", "last_month", "rolling", "monthly", "within_workdays", "20000",
                     "medins.a", "inpatient_stay", "CNY", "monday"]),
    st.dates(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=6)),
    max_leaves=25,
)
_docs = st.dictionaries(_keys, _values, max_size=6)
_rules_docs = st.fixed_dictionaries(
    {"department": st.one_of(st.just("medins"), _scalars),
     "rules": st.lists(st.dictionaries(_keys, _values, max_size=12), max_size=3)}
)


_TOP_KEYS = {"department", "name", "default_region", "rules"}
_RULE_KEYS = {"id", "event_type", "fact", "kind", "threshold", "unit", "period", "lookback_days", "schedule",
              "details", "where", "description"}


def _top_level_problem(doc: dict) -> str | None:
    """The first top-level problem the rule-file format (rules.py docstring) forbids, found
    without the parser: the key the ConfigError must name, or None."""
    extra = sorted(set(doc) - _TOP_KEYS)
    if extra:
        return extra[0]
    dept = doc.get("department")
    if not isinstance(dept, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", dept):
        return "department"
    if not isinstance(doc.get("name", ""), str) or len(doc.get("name", "")) > 200:
        return "name"
    region = doc.get("default_region", "")
    if not isinstance(region, str) or not re.fullmatch(r"[0-9A-Za-z]{0,32}", region):
        return "default_region"
    if not isinstance(doc.get("rules"), list) or not doc["rules"]:
        return "rules"
    return None


def _only_config_errors(text: str) -> None:
    """Hostile input gives a ConfigError naming the offending key, or a RuleSet that is exactly
    what the text says; which of the two is decided independently of the parser."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        with pytest.raises(ConfigError, match=r"^<rules>: got invalid TOML"):
            parse_rules(text)
        return
    problem = _top_level_problem(doc)
    if problem is not None:
        with pytest.raises(ConfigError) as err:
            parse_rules(text)
        msg = str(err.value)
        # One line naming every problem; the top-level one decided above is among them.
        assert msg.startswith("<rules>: ") and "\n" not in msg, msg
        assert re.match(r"^<rules>: [a-z_\[\]'.0-9]+: got ", msg), msg
        named = f"<rules>: {problem}: got" in msg or f"; {problem}: got" in msg
        assert named or re.search(r"\(and \d+ more\)$", msg), (problem, msg)
        return
    rules = doc["rules"]
    bad_shape = any(not isinstance(r, dict) or set(r) - _RULE_KEYS for r in rules)
    try:
        rs = parse_rules(text)
    except ConfigError as exc:
        # Past the top level, a refusal names a rule (by id or position) and one line.
        msg = str(exc)
        assert re.match(r"^<rules>: rules(\['[^']+'\]|\[\d+\])[.:]", msg), msg
        assert "\n" not in msg
        return
    assert not bad_shape, "a rule with an unknown key or that is not a table was accepted"
    assert rs.department == doc["department"]
    assert rs.name == doc.get("name", doc["department"])
    assert rs.default_region == doc.get("default_region", "")
    assert [r.id for r in rs.rules] == [r["id"] for r in rules]
    assert len({r.id for r in rs.rules}) == len(rs.rules)
    for got, raw in zip(rs.rules, rules):
        assert (got.event_type, got.fact, got.kind, got.period) == (raw["event_type"], raw["fact"], raw["kind"], raw["period"])
        if "threshold" in raw:
            assert got.threshold == Decimal(str(raw["threshold"]).strip().replace(",", ""))
        assert got.schedule.kind == raw["schedule"]["kind"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_docs, _rules_docs))
def test_hostile_structures_give_config_errors(doc):
    _only_config_errors(tomli_w.dumps(doc))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "[]{}=\"'#\u4e2d\x00", max_size=200))
def test_hostile_text_gives_config_errors(text):
    _only_config_errors(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(GOOD.splitlines()), max_size=15))
@example(GOOD.splitlines())  # the good file itself: must parse, and to exactly what it says
@example(GOOD.splitlines()[:2])  # department only: "rules" is named
def test_shuffled_good_lines_give_config_errors_or_rules(lines):
    _only_config_errors("\n".join(lines))
