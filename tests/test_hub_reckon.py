"""The report's arithmetic (node/verification/reckon.py) on answers built by hand: who counts,
completeness, income composition, exact per-capita rounding, flags over every field type, info.

Expected figures are written out from docs/acceptance-rules.md, never computed by the code
under test."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from hedui.node.verification.reckon import (
    Cell,
    Override,
    Source,
    compare,
    count_member,
    half_up_cents,
    reckon,
)
from hedui.node.verification.rules import parse_rules

RULES = parse_rules('''
[members]
provider = "huji"
field = "registry_status"
exclude = { "死亡" = "dead", "迁出" = "moved_out" }
[[income]]
provider = "shebao"
field = "wages"
months = 12
label = "工资性收入"
[[income]]
provider = "shuiwu"
field = "labour_income"
months = 12
[[assets]]
flag = "vehicle"
provider = "cheguan"
field = "vehicle_max_price"
op = ">="
threshold = "100000.00"
[[assets]]
flag = "properties"
provider = "budongchan"
field = "residential_count"
op = ">="
threshold = 2
scope = "household"
[[info]]
provider = "gongjijin"
field = "fund_balance"
label = "住房公积金余额"
scope = "household"
[[info]]
provider = "canlian"
field = "disability_grade"
scope = "member"
[standards]
default = "1010.00"
''')
STD = Decimal("1010.00")
EVIDENCE = "e" * 16


def v(value: str, **kw) -> Cell:
    return Cell("value", value, evidence=EVIDENCE, **kw)


NR = Cell("no_record")
NV = Cell("no_value")


def src(cells: dict[tuple[int, str], Cell], status: str = "ok", reason: str = "") -> Source:
    return Source(status, reason, EVIDENCE if status == "ok" else None, None, cells)


def household(n: int, *, status=None, wages=None, labour=None, vehicle=None, rooms=None, fund=None, grade=None,
              drop: tuple[str, ...] = (), down: dict[str, str] | None = None) -> dict[str, Source]:
    """Sources for ``n`` members: each argument a list of cells (default: no record)."""
    cols = {
        "huji": ("registry_status", status or [v("正常", as_of="2020-01-01")] * n),
        "shebao": ("wages", wages or [NR] * n),
        "shuiwu": ("labour_income", labour or [NR] * n),
        "cheguan": ("vehicle_max_price", vehicle or [NR] * n),
        "budongchan": ("residential_count", rooms or [NR] * n),
        "gongjijin": ("fund_balance", fund or [NR] * n),
        "canlian": ("disability_grade", grade or [NR] * n),
    }
    out = {}
    for prov, (field, cells) in cols.items():
        if prov in drop:
            continue
        if down and prov in down:
            out[prov] = src({}, down[prov], "deadline exceeded")
            continue
        out[prov] = src({(i, field): c for i, c in enumerate(cells)})
    return out


def run(sources, n, overrides=None, standard=STD, rules=RULES):
    out = reckon(rules, sources, n, overrides or {}, standard)
    # Every case here also checks the conclusion run_case decides a case's status from
    # (issue 16: ``conclusion_only``): the same ``complete`` and ``missing``, gap for gap.
    assert reckon(rules, sources, n, overrides or {}, standard, conclusion_only=True) == {
        "complete": out["complete"], "missing": out["missing"]}
    return out


# ---------------------------------------------------------------- members


def test_excluded_members_with_reason_and_day_and_no_record_counted():
    s = household(4, status=[v("正常", as_of="2001-01-01"), v("死亡", as_of="2026-05-12"), v("迁出", as_of="2025-12-20"), NR],
                  wages=[v("57600.00"), v("9999.00"), v("1.00"), NR])
    r = run(s, 4)
    assert r["complete"] and r["counted"] == [0, 3]
    assert r["excluded"] == [{"position": 1, "reason": "dead", "day": "2026-05-12", "note": None},
                             {"position": 2, "reason": "moved_out", "day": "2025-12-20", "note": None}]
    assert r["members"][3]["note"] == "no_registry_record" and r["members"][3]["counted"] is True
    # Excluded members' income does not count: 57,600 / 12 / 2 = 2,400.00.
    assert r["income"]["total"] == "57600.00" and r["income"]["per_capita_monthly"] == "2400.00"
    assert r["income"]["below_standard"] is False


def test_registry_not_current_concludes_nothing():
    s = household(2, status=[Cell("not_current", data_date="2026-10-31"), v("正常")], wages=[v("100"), v("100")])
    r = run(s, 2)
    assert not r["complete"] and r["counted"] is None
    assert r["missing"][0] == {"member": 0, "provider": "huji", "field": "registry_status", "why": "not_current",
                               "reason": "", "data_date": "2026-10-31"}
    inc = r["income"]
    assert inc["total"] is None and inc["per_capita_monthly"] is None and inc["below_standard"] is None
    assert inc["monthly_total"] is None and inc["totals"] is None
    assert all(a["state"] == "unknown" and a["members"] == [] and "value" not in a for a in r["assets"])
    assert r["info"][0]["value"] is None


def test_override_counts_a_member_the_registry_excludes_and_the_reverse():
    s = household(2, status=[v("死亡", as_of="2026-05-12"), v("正常")], wages=[v("12000"), v("12000")])
    r = run(s, 2, {0: Override(True, "death record is a registry error", "cw01")})
    assert r["counted"] == [0, 1] and r["members"][0]["note"] == "override" and r["excluded"] == []
    assert r["income"]["per_capita_monthly"] == "1000.00"
    r = run(s, 2, {1: Override(False, "lives abroad", "cw01")})
    assert r["counted"] == [] and not r["complete"]
    assert r["excluded"][1] == {"position": 1, "reason": "lives abroad", "day": None, "note": "override"}
    assert any(g["why"] == "no_counted_member" for g in r["missing"])


def test_override_decides_a_member_whose_registry_answer_is_not_current():
    s = household(1, status=[Cell("not_current", data_date="2026-10-31")], wages=[v("12120")])
    assert run(s, 1)["counted"] is None
    r = run(s, 1, {0: Override(True, "household book seen", "cw01")})
    assert r["complete"] and r["income"]["per_capita_monthly"] == "1010.00"


def test_count_member_without_rule_or_on_an_unknown_value():
    assert count_member(None, None, None).counted is True
    rule = RULES.members
    assert count_member(rule, v("正常"), None).counted is True
    assert count_member(rule, v(" 死亡 ", as_of="2026-01-02"), None).reason == "dead"  # trimmed text
    assert count_member(rule, NV, None).note == "no_registry_record"
    assert count_member(rule, Cell("unavailable"), None).counted is None
    assert count_member(rule, Cell("refused"), None).counted is None


# ---------------------------------------------------------------- completeness


@pytest.mark.parametrize("state", ["unavailable", "refused"])
def test_department_down_or_refusing_is_missing_never_zero(state):
    s = household(2, wages=[v("100"), v("100")], down={"shuiwu": state})
    r = run(s, 2)
    assert not r["complete"] and r["income"]["per_capita_monthly"] is None
    gaps = [(g["member"], g["provider"], g["why"]) for g in r["missing"]]
    assert gaps == [(0, "shuiwu", state), (1, "shuiwu", state)]
    assert r["members"][0]["income"][1]["state"] == state


def test_not_current_income_names_its_data_date():
    s = household(1, labour=[Cell("not_current", data_date="2026-09-30")])
    r = run(s, 1)
    assert r["missing"] == [{"member": 0, "provider": "shuiwu", "field": "labour_income", "why": "not_current",
                             "reason": "", "data_date": "2026-09-30"}]
    assert r["income"]["below_standard"] is None


def test_a_field_no_department_offers_is_missing():
    s = household(1, drop=("cheguan",))
    r = run(s, 1)
    assert not r["complete"] and r["missing"][0]["why"] == "not_answered"
    s = household(1)
    s["cheguan"] = src({})  # answered, but not that field
    assert run(s, 1)["missing"][0]["why"] == "not_answered"


def test_excluded_members_answers_are_not_needed():
    s = household(2, status=[v("正常"), v("死亡", as_of="2026-01-01")], labour=[NR, Cell("not_current", data_date="2026-01-31")])
    assert run(s, 2)["complete"]


def test_info_not_current_does_not_make_the_report_incomplete():
    s = household(1, fund=[Cell("not_current", data_date="2026-06-30")], grade=[Cell("not_current")])
    r = run(s, 1)
    assert r["complete"] and r["info"][0]["value"] is None and r["info"][0]["why"] == "not_current"
    assert r["members"][0]["info"][0]["state"] == "not_current"


def test_no_standard_in_force_is_missing():
    r = run(household(1), 1, standard=None)
    assert not r["complete"] and r["missing"][-1]["why"] == "no_standard" and r["income"]["below_standard"] is None


# ---------------------------------------------------------------- per-capita


def test_rounding_boundary_half_up_and_exact_standard_is_not_below():
    # H5d: 21,600 + 12,000 + 2,759.82 = 36,359.82; / 12 / 3 = 1,009.995 → 1,010.00 (float gives 1,009.99).
    s = household(3, wages=[v("21600.00"), v("12000.00"), NR], labour=[NR, NR, v("2759.82")])
    r = run(s, 3)
    assert r["income"]["total"] == "36359.82" and r["income"]["per_capita_monthly"] == "1010.00"
    assert r["income"]["below_standard"] is False
    assert r["income"]["totals"] == {"shebao.wages": "33600.00", "shuiwu.labour_income": "2759.82"}


@pytest.mark.parametrize(("total", "n", "pc", "below"), [
    ("24240.00", 2, "1010.00", False), ("24239.76", 2, "1009.99", True), ("24240.24", 2, "1010.01", False),
    ("0", 3, "0.00", True), ("59000.00", 2, "2458.33", False), ("84200.00", 3, "2338.89", False),
    ("34880.00", 3, "968.89", True),
])
def test_per_capita_figures_of_the_designed_households(total, n, pc, below):
    s = household(n, wages=[v(total)] + [NR] * (n - 1))
    r = run(s, n)
    assert (r["income"]["per_capita_monthly"], r["income"]["below_standard"]) == (pc, below)


def test_half_up_cents_exact():
    assert half_up_cents(Fraction("1009.995")) == Decimal("1010.00")
    assert half_up_cents(Fraction("1009.994999999999")) == Decimal("1009.99")
    assert half_up_cents(Fraction(2, 3)) == Decimal("0.67")
    assert half_up_cents(Fraction(-1, 200)) == Decimal("-0.01")  # away from zero
    assert half_up_cents(Fraction(0)) == Decimal("0.00")


def test_items_with_other_months_are_converted_exactly():
    rules = parse_rules('''
[[income]]
provider = "a"
field = "x"
months = 3
[[income]]
provider = "a"
field = "y"
months = 1
[[deductions]]
provider = "a"
field = "d"
months = 12
[standards]
default = "500"
''')
    s = {"a": src({(0, "x"): v("100"), (0, "y"): v("50"), (0, "d"): v("40"), (1, "x"): v("200"), (1, "y"): NR, (1, "d"): NV})}
    r = run(s, 2, rules=rules, standard=Decimal("500"))
    # (100/3 + 50 + 200/3 − 40/12) / 2 = (100 + 50 − 3.333…) / 2 = 73.333… → 73.33
    assert r["income"]["per_capita_monthly"] == "73.33" and r["income"]["monthly_deductions"] == "3.33"
    assert r["counted"] == [0, 1] and r["income"]["below_standard"] is True


def test_deductions_never_make_income_negative():
    rules = parse_rules('''
[[income]]
provider = "a"
field = "x"
months = 12
[[deductions]]
provider = "a"
field = "d"
months = 12
[standards]
default = "500"
''')
    s = {"a": src({(0, "x"): v("100"), (0, "d"): v("1000")})}
    assert run(s, 1, rules=rules)["income"]["per_capita_monthly"] == "0.00"


def test_unreadable_income_value_is_missing_not_a_crash():
    s = household(1, wages=[v("true")])
    r = run(s, 1)
    assert not r["complete"] and r["missing"][0]["why"] == "bad_value"


# ---------------------------------------------------------------- flags


def test_vehicle_flag_at_exactly_the_threshold_names_the_member():
    s = household(3, vehicle=[v("100000.00"), v("99999.99"), NV])
    (veh, props) = run(s, 3)["assets"]
    assert veh["state"] == "set" and veh["members"] == [0] and veh["op"] == ">=" and veh["threshold"] == "100000.00"
    assert props["state"] == "clear" and props["value"] == "0"


def test_household_scope_sums_counted_members_only():
    s = household(3, status=[v("正常"), v("正常"), v("死亡", as_of="2026-01-01")], rooms=[v("1"), v("1"), v("3")])
    props = run(s, 3)["assets"][1]
    assert props["state"] == "set" and props["value"] == "2" and props["members"] == [0, 1]
    s = household(3, status=[v("正常"), v("迁出"), v("死亡")], rooms=[v("1"), v("1"), v("3")])
    props = run(s, 3)["assets"][1]
    assert props["state"] == "clear" and props["value"] == "1" and props["members"] == []


def test_flag_not_current_for_one_member_is_unknown_and_report_incomplete():
    s = household(2, vehicle=[v("1"), Cell("not_current", data_date="2026-10-31")])
    r = run(s, 2)
    assert not r["complete"] and r["assets"][0]["state"] == "unknown"


def _flag_rules(op: str, threshold: str, scope: str = "member"):
    return parse_rules(f'''
[[income]]
provider = "a"
field = "x"
months = 12
[[assets]]
flag = "f"
provider = "a"
field = "b"
op = "{op}"
threshold = {threshold}
scope = "{scope}"
[standards]
default = "1"
''')


@pytest.mark.parametrize(("op", "threshold", "values", "who"), [
    ("==", "true", ["true", "false", "true"], [0, 2]),          # a boolean field: no InvalidOperation
    ("!=", "true", ["true", "false", "true"], [1]),
    ("==", '"A"', ["A", " A ", "B"], [0, 1]),                  # a code as trimmed text
    ("in", '["A", "C"]', ["A", "B", "C"], [0, 2]),
    ("in", '["01", 2]', ["1", "2.0", "3"], [0, 1]),            # numbers compare as numbers
    (">", "5", ["5", "5.01", "6"], [1, 2]),
    ("<", "5", ["5", "4.99", "-1"], [1, 2]),
    ("<=", "5", ["5", "5.01", "0"], [0, 2]),
    ("==", '"3"', ["3", "3.00", "三级"], [0, 1]),
])
def test_flag_ops_over_every_field_type(op, threshold, values, who):
    rules = _flag_rules(op, threshold)
    s = {"a": src({**{(i, "b"): v(x) for i, x in enumerate(values)}, **{(i, "x"): NR for i in range(3)}})}
    f = run(s, 3, rules=rules)["assets"][0]
    assert f["members"] == who and f["state"] == ("set" if who else "clear")


def test_ordering_op_on_a_text_value_is_missing_not_a_crash():
    rules = _flag_rules(">=", "1")
    s = {"a": src({(0, "b"): v("true"), (0, "x"): NR})}
    r = run(s, 1, rules=rules)
    assert not r["complete"] and r["missing"][0]["why"] == "bad_value"


def test_compare_refuses_order_on_text():
    with pytest.raises(ValueError):
        compare("A", ">=", Decimal(1))
    assert compare("1e2", "==", Decimal(100)) and not compare("100", "!=", Decimal("100.00"))


# ---------------------------------------------------------------- info


def test_info_household_sum_and_member_rows():
    s = household(3, status=[v("正常"), v("正常"), v("死亡")], fund=[v("37089.90"), NV, v("5.00")], grade=[NR, v("3"), NR])
    r = run(s, 3)
    assert r["info"] == [{"label": "住房公积金余额", "provider": "gongjijin", "field": "fund_balance", "scope": "household",
                          "value": "37089.90"}]
    assert r["members"][1]["info"][0]["value"] == "3" and r["members"][0]["info"][0]["state"] == "no_record"
    items = r["members"][0]["income"]
    assert items[0]["evidence"] is None and items[0]["state"] == "no_record"


def test_member_rows_carry_department_window_value_and_evidence():
    s = household(1, wages=[v("57600.00", window="2025-08..2026-07", data_date="2026-10-31", unit="CNY")])
    item = run(s, 1)["members"][0]["income"][0]
    assert item == {"item": "shebao.wages", "label": "工资性收入", "department": "shebao", "field": "wages", "state": "value",
                    "value": "57600.00", "unit": "CNY", "window": "2025-08..2026-07", "as_of": None,
                    "data_date": "2026-10-31", "evidence": EVIDENCE, "reason": None}


# ---------------------------------------------------------------- details the report shows


def test_member_status_row_and_undetermined_members_figures_are_listed():
    s = household(2, status=[Cell("not_current", data_date="2026-10-31"), v("正常", as_of="2001-02-03")],
                  wages=[Cell("not_current", data_date="2026-10-31"), v("1")])
    r = run(s, 2)
    assert r["members"][1]["status"] == {"value": "正常", "state": "value", "as_of": "2001-02-03", "data_date": None,
                                         "evidence": EVIDENCE}
    assert r["members"][0]["status"]["value"] is None and r["members"][0]["status"]["data_date"] == "2026-10-31"
    # The undetermined member's own missing figures are named too (not only the registry's).
    assert [(g["member"], g["provider"]) for g in r["missing"]] == [(0, "huji"), (0, "shebao")]


def test_info_gap_carries_the_data_date_and_unreadable_values_are_cut():
    s = household(1, fund=[Cell("not_current", data_date="2026-06-30")])
    assert run(s, 1)["info"][0]["data_date"] == "2026-06-30"
    from hedui.node.verification.reckon import money

    with pytest.raises(ValueError) as exc:
        money(v("x" * 30))
    assert repr("x" * 20) in str(exc.value) and "x" * 21 not in str(exc.value)


def test_more_details_pinned():
    # a source's reason is carried into the gap; without one, its status alone
    s = household(1, down={"shuiwu": "unavailable"})
    s["cheguan"] = Source("refused")
    gaps = {g["provider"]: g["reason"] for g in run(s, 1)["missing"]}
    assert gaps == {"shuiwu": "unavailable: deadline exceeded", "cheguan": "refused"}
    # an override that counts a member carries no exclusion reason
    s = household(1, status=[v("死亡", as_of="2026-01-01")])
    assert run(s, 1, {0: Override(True, "误登", "cw01")})["members"][0]["reason"] is None
    # ordering on text: the message shows at most 20 characters
    with pytest.raises(ValueError) as exc:
        compare("y" * 30, ">", Decimal(1))
    assert repr("y" * 20) in str(exc.value) and "y" * 21 not in str(exc.value)
    # a row with no value shows none (not an empty string)
    assert run(household(1), 1)["members"][0]["income"][0]["value"] is None
    # a bad value does not stop the other members' checks
    r = run(household(2, wages=[v("abc"), Cell("not_current", data_date="2026-01-31")]), 2)
    assert [(g["member"], g["why"]) for g in r["missing"]] == [(0, "bad_value"), (1, "not_current")]
    # the household info names the first gap's data date
    r = run(household(2, fund=[Cell("not_current", data_date="2026-06-30"), Cell("unavailable")]), 2)
    assert r["info"][0]["data_date"] == "2026-06-30"
    # a member counted while another is undetermined: their missing figures are named as well
    s = household(2, status=[Cell("not_current"), v("正常")], wages=[v("1"), Cell("not_current", data_date="2026-01-31")])
    assert [(g["member"], g["provider"]) for g in run(s, 2)["missing"]] == [(0, "huji"), (1, "shebao")]
    # the monthly total; no standard shows none
    r = run(household(2, wages=[v("57600.00"), v("1.00")]), 2)
    assert r["income"]["monthly_total"] == "4800.08" and r["income"]["monthly_deductions"] == "0.00"
    assert run(household(1), 1, standard=None)["income"]["standard"] is None


def test_full_mutation_run_survivors_pinned():
    import dataclasses

    for obj in (Cell("value"), Source("ok"), Override(True, "r", "o"), count_member(None, None, None)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.reason = "changed"  # type: ignore[misc]
    assert count_member(RULES.members, None, None).counted is True  # a rule but no answer cell: counted
    assert half_up_cents(Fraction(1, 200)) == Decimal("0.01") and half_up_cents(Fraction(1, 201)) == Decimal("0.00")
    # an `in` flag shows its list; a member flag nobody matches is clear
    rules = _flag_rules("in", '["A", "C"]')
    f = run({"a": src({(0, "b"): v("B"), (0, "x"): NR})}, 1, rules=rules)["assets"][0]
    assert f["threshold"] == ["A", "C"] and f["state"] == "clear" and f["members"] == []
    # a household flag names only members with a non-zero value
    s = household(3, rooms=[v("2"), v("0"), NR])
    props = run(s, 3)["assets"][1]
    assert props["state"] == "set" and props["members"] == [0]
    # household info: the first gap's state; an unreadable value says so
    r = run(household(2, fund=[Cell("unavailable"), Cell("not_current", data_date="2026-06-30")]), 2)
    assert r["info"][0]["why"] == "unavailable"
    r = run(household(1, fund=[v("abc")]), 1)
    assert r["info"][0]["value"] is None and "want a number" in r["info"][0]["why"]
    # deductions: totals when complete, none when not; the standard shown whenever known
    rules = parse_rules('[[income]]\nprovider = "a"\nfield = "x"\nmonths = 12\n[[deductions]]\nprovider = "a"\nfield = "d"\n'
                        'months = 12\n[standards]\ndefault = "5"\n')
    r = run({"a": src({(0, "x"): v("120"), (0, "d"): v("24")})}, 1, rules=rules, standard=Decimal("5"))
    assert r["income"]["deduction_totals"] == {"a.d": "24"} and r["income"]["monthly_deductions"] == "2.00"
    assert r["income"]["standard"] == "5" and r["income"]["per_capita_monthly"] == "8.00"
    r = run({"a": src({(0, "x"): v("120"), (0, "d"): Cell("not_current")})}, 1, rules=rules, standard=Decimal("5"))
    assert r["income"]["deduction_totals"] is None and r["income"]["monthly_deductions"] is None
    assert r["income"]["standard"] == "5"
