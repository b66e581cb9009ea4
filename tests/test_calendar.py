"""Working-day calendar: official holidays, make-up workdays, overrides, fallback years."""

from __future__ import annotations

import logging
import warnings
from datetime import date, timedelta

import pytest

from hedui.node.discovery.calendar import CalendarFallbackWarning, WorkCalendar
from hedui.node.errors import ConfigError, InvalidArgument

NO_DATA_YEAR = 2099  # far beyond any chinesecalendar release


@pytest.fixture
def cal() -> WorkCalendar:
    return WorkCalendar()


def test_spring_festival_2024_holidays_and_makeup_sunday(cal):
    assert cal.is_workday(date(2024, 2, 4))  # Sunday, make-up workday
    assert not cal.is_workday(date(2024, 2, 12))  # Monday, Spring Festival holiday
    assert cal.is_workday(date(2024, 2, 18))  # Sunday, make-up workday
    assert cal.is_workday(date(2024, 2, 19))  # first ordinary Monday after


def test_2025_makeup_saturday_and_national_day(cal):
    assert cal.is_workday(date(2025, 2, 8))  # Saturday, make-up workday
    assert cal.is_workday(date(2025, 10, 11))  # Saturday, make-up workday
    for d in range(1, 9):
        assert not cal.is_workday(date(2025, 10, d)), d
    assert not cal.is_workday(date(2025, 3, 1))  # an ordinary Saturday


def test_add_workdays_across_spring_festival_2025(cal):
    # Friday 24 Jan 2025: Sun 26 (make-up) = 1, Mon 27 = 2, 28 Jan - 4 Feb holiday, Wed 5 Feb = 3.
    assert cal.add_workdays(date(2025, 1, 24), 3) == date(2025, 2, 5)
    assert cal.add_workdays(date(2025, 1, 24), 0) == date(2025, 1, 24)
    # An ordinary week: Friday + 3 working days = Wednesday.
    assert cal.add_workdays(date(2025, 3, 7), 3) == date(2025, 3, 12)


def test_workdays_between_is_inverse_of_add(cal):
    start = date(2024, 9, 27)
    for n in (0, 1, 5, 12, 40):
        assert cal.workdays_between(start, cal.add_workdays(start, n)) == n
    assert cal.workdays_between(date(2025, 2, 5), date(2025, 1, 24)) == -3
    # 1-8 Oct 2025 are all holidays.
    assert cal.workdays_between(date(2025, 9, 30), date(2025, 10, 8)) == 0


def test_add_workdays_rejects_bad_counts(cal):
    with pytest.raises(InvalidArgument, match="workdays: got -1"):
        cal.add_workdays(date(2025, 1, 1), -1)
    with pytest.raises(InvalidArgument):
        cal.add_workdays(date(2025, 1, 1), True)


def test_year_without_data_falls_back_with_warning(cal, caplog):
    monday = date(NO_DATA_YEAR, 1, 5)
    assert monday.weekday() == 0
    with caplog.at_level(logging.WARNING), pytest.warns(CalendarFallbackWarning, match=str(NO_DATA_YEAR)):
        assert cal.is_workday(monday)
    assert any(str(NO_DATA_YEAR) in r.getMessage() for r in caplog.records)
    # Warned once per year, not per call.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cal.is_workday(monday + timedelta(days=5))  # Saturday
        assert cal.add_workdays(monday + timedelta(days=4), 1) == monday + timedelta(days=7)


def test_overrides_win_over_official_data_and_fill_fallback_years(tmp_path):
    f = tmp_path / "days.toml"
    f.write_text(
        f"""
[[days]]
date = 2025-03-03
workday = false
note = "local flood closure"

[[days]]
date = "2025-03-01"
workday = true

[[days]]
date = {NO_DATA_YEAR}-01-01
workday = false
""",
        encoding="utf-8",
    )
    cal = WorkCalendar(f)
    assert not cal.is_workday(date(2025, 3, 3))  # an official Monday, overridden
    assert cal.is_workday(date(2025, 3, 1))  # a Saturday, overridden
    with pytest.warns(CalendarFallbackWarning):
        assert cal.is_workday(date(NO_DATA_YEAR, 1, 2))
    assert not cal.is_workday(date(NO_DATA_YEAR, 1, 1))  # weekday, but override says holiday


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[days]]\ndate = 2025-13-01\nworkday = true\n", "invalid TOML"),
        ('[[days]]\ndate = "2025-02-30"\nworkday = true\n', "days[0].date: got '2025-02-30'"),
        ("[[days]]\ndate = 2025-03-03\n", "days[0].workday: got nothing"),
        ('[[days]]\ndate = 2025-03-03\nworkday = "no"\n', "days[0].workday: got 'no', want a valid boolean"),
        ("[[days]]\ndate = 2025-03-03\nworkday = true\nholiday = 1\n", "days[0].holiday: got an unknown key"),
        ("[[days]]\nworkday = true\n", "days[0].date: got nothing"),
        ("days = 3\n", "days: got 3, want a valid list"),
        ("[[day]]\ndate = 2025-03-03\nworkday = true\n", "day: got an unknown key"),
        (
            "[[days]]\ndate = 2025-03-03\nworkday = true\n[[days]]\ndate = 2025-03-03\nworkday = false\n",
            "days[1].date: got 2025-03-03 twice",
        ),
        ("[[days]]\ndate = 2025-03-03T08:00:00\nworkday = true\n", "days[0].date: got the date-time"),
    ],
)
def test_malformed_override_file_is_a_clear_config_error(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        WorkCalendar(f)
    assert needle in str(err.value)
    assert str(f) in str(err.value)


def test_missing_override_file(tmp_path):
    with pytest.raises(ConfigError, match="unreadable"):
        WorkCalendar(tmp_path / "nope.toml")
