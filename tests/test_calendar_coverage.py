"""Working days beyond the package's data (issue 10): the override file covers a year when it
lists it in ``years``; every deadline says what it rests on (official / override /
weekdays-only); ``hedui calendar check`` says which years are covered and by what."""

from __future__ import annotations

import json
from datetime import date

import chinese_calendar
import pytest
from typer.testing import CliRunner

from hedui.node.cli._app import app
from hedui.node.discovery.calendar import WorkCalendar
from hedui.node.errors import ConfigError

LAST_OFFICIAL = max(d.year for d in chinese_calendar.holidays)  # read from the package's own data
UNCOVERED = 2099  # far beyond any chinesecalendar release

# The 2099 "notice" an operator transcribed (made up, but shaped like the State Council's):
# New Year's Day Thursday 1 January off, Friday 2 January off, Sunday 4 January a make-up day.
OVERRIDE = f"""
years = [{UNCOVERED}]

[[days]]
date = {UNCOVERED}-01-01
workday = false
note = "元旦"

[[days]]
date = {UNCOVERED}-01-02
workday = false

[[days]]
date = {UNCOVERED}-01-04
workday = true
"""


@pytest.fixture
def override_file(tmp_path):
    f = tmp_path / "calendar.toml"
    f.write_text(OVERRIDE, encoding="utf-8")
    return f


def test_year_basis():
    cal = WorkCalendar()
    assert cal.basis(2025) == "official"
    assert cal.basis(LAST_OFFICIAL) == "official"
    assert cal.basis(LAST_OFFICIAL + 1) == "weekdays-only"
    assert cal.basis(UNCOVERED) == "weekdays-only"


def test_override_years_cover_a_year_without_warning(override_file, recwarn):
    cal = WorkCalendar(override_file)
    assert cal.basis(UNCOVERED) == "override" and cal.override_years == {UNCOVERED}
    assert not cal.is_workday(date(UNCOVERED, 1, 1)) and not cal.is_workday(date(UNCOVERED, 1, 2))
    assert cal.is_workday(date(UNCOVERED, 1, 4))  # a Sunday, a make-up day
    assert not cal.is_workday(date(UNCOVERED, 1, 10))  # an ordinary Saturday
    assert cal.is_workday(date(UNCOVERED, 1, 5))  # an ordinary Monday
    assert not [w for w in recwarn if "working-day calendar" in str(w.message)]
    # Wednesday 31 December 2098 + 2 working days: 1 and 2 Jan off, Sun 4 Jan (make-up) = 1, Mon 5 = 2.
    assert cal.add_workdays(date(UNCOVERED - 1, 12, 31), 2) == date(UNCOVERED, 1, 5)
    assert cal.coverage(UNCOVERED).as_dict() == {"year": UNCOVERED, "basis": "override", "official": False,
                                                 "override_days": 3}


def test_deadline_basis_is_the_weakest_year_it_counts():
    cal = WorkCalendar()
    y = LAST_OFFICIAL
    assert cal.basis_between(date(y, 3, 2), date(y, 3, 9)) == "official"
    # From 28 December into January of a year with no data: the count rests on Mon–Fri.
    assert cal.basis_between(date(y, 12, 28), date(y + 1, 1, 5)) == "weekdays-only"
    # The event day is not counted: an event on 31 December due on 31 December counts nothing new.
    assert cal.basis_between(date(y, 12, 31), date(y, 12, 31)) == "official"
    assert cal.basis_between(date(y, 12, 31), date(y + 1, 1, 1)) == "weekdays-only"


def test_override_year_without_days_is_refused(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(f"years = [{UNCOVERED}]\n[[days]]\ndate = 2025-03-03\nworkday = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"years: got {UNCOVERED} with no \\[\\[days\\]\\] in it"):
        WorkCalendar(f)
    f.write_text("years = [1800]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"years\[0\]"):
        WorkCalendar(f)
    f.write_text('years = ["2031"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"years\[0\]: got '2031'"):
        WorkCalendar(f)


runner = CliRunner()


def test_calendar_check_json(override_file):
    r = runner.invoke(app, ["calendar", "check", "2025", str(LAST_OFFICIAL + 1), str(UNCOVERED),
                            "--overrides", str(override_file), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["official"]["last_year"] == LAST_OFFICIAL
    assert out["overrides"]["years"] == [UNCOVERED]
    assert [(y["year"], y["basis"]) for y in out["years"]] == [
        (2025, "official"), (LAST_OFFICIAL + 1, "weekdays-only"), (UNCOVERED, "override")]


def test_calendar_check_text_and_strict(override_file):
    r = runner.invoke(app, ["calendar", "check", str(LAST_OFFICIAL + 1), "--strict"])
    assert r.exit_code == 1
    assert "NOT COVERED" in r.stdout and "list the year in its years" in r.stdout
    r = runner.invoke(app, ["calendar", "check", str(UNCOVERED), "--overrides", str(override_file), "--strict"])
    assert r.exit_code == 0 and "override file" in r.stdout
    r = runner.invoke(app, ["calendar", "check", "3000"])
    assert r.exit_code == 2 and "YEAR: got 3000, want a year 1900..2199" in r.output


@pytest.mark.timesensitive
def test_calendar_check_defaults_to_this_year_and_next():
    """On the wall clock (SystemClock path): the two years checked are consecutive and the
    first is this year in China; never read here, only checked for shape."""
    r = runner.invoke(app, ["calendar", "check", "--json"])
    assert r.exit_code == 0, r.output
    ys = [y["year"] for y in json.loads(r.stdout)["years"]]
    assert len(ys) == 2 and ys[1] == ys[0] + 1 and 2026 <= ys[0] <= 2199
