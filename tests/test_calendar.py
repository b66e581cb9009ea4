"""Working-day calendar: official holidays, make-up workdays, overrides, fallback years."""

from __future__ import annotations

import logging
import warnings
from datetime import UTC, date, timedelta

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


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"days = [1]\n", "days[0]: got 1, want a table with date, workday, note"),
        (b"[[days]]\ndate = 2025-03-03\nworkday = true\nnote = 5\n", "days[0].note: got 5, want a valid string"),
        ("[[days]]\ndate = 2025-03-03\nworkday = true\nnote = '\u6e05\u660e'\n".encode("gbk"), "got non-UTF-8 bytes"),
    ],
)
def test_more_malformed_override_files(tmp_path, content, needle):
    f = tmp_path / "bad.toml"
    f.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        WorkCalendar(f)
    assert needle in str(err.value)


def test_unknown_keys_name_the_first_in_order(tmp_path):
    f = tmp_path / "keys.toml"
    f.write_text("[[days]]\ndate = 2025-03-03\nworkday = true\nzz = 1\nholiday = 1\n", encoding="utf-8")
    # Every unknown key is named, in the order written.
    with pytest.raises(ConfigError, match=r"days\[0\]\.zz: got an unknown key.*; days\[0\]\.holiday: got an unknown key"):
        WorkCalendar(f)
    f.write_text("zz = 1\nday = 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"zz: got an unknown key.*; day: got an unknown key"):
        WorkCalendar(f)


def test_missing_override_file(tmp_path):
    with pytest.raises(ConfigError, match="unreadable"):
        WorkCalendar(tmp_path / "nope.toml")


# ---------------------------------------------------------------- official notices, date by date

# Transcribed from the State Council General Office notices (国务院办公厅关于YYYY年部分节假日安排的
# 通知); each line quotes the notice. "holidays" are inclusive ranges, "workdays" the make-up
# working days (上班). The oracle below knows nothing of chinese_calendar: a day is a working
# day if the notice says 上班, else if it is Monday-Friday and not in a holiday range.
OFFICIAL_NOTICES = {
    # 国办发明电〔2023〕7号, 2023年10月25日
    2024: {
        "holidays": [
            ("2024-01-01", "2024-01-01", 1),  # 元旦：1月1日放假，与周末连休。
            ("2024-02-10", "2024-02-17", 8),  # 春节：2月10日至17日放假调休，共8天。
            ("2024-04-04", "2024-04-06", 3),  # 清明节：4月4日至6日放假调休，共3天。
            ("2024-05-01", "2024-05-05", 5),  # 劳动节：5月1日至5日放假调休，共5天。
            ("2024-06-10", "2024-06-10", 1),  # 端午节：6月10日放假，与周末连休。
            ("2024-09-15", "2024-09-17", 3),  # 中秋节：9月15日至17日放假调休，共3天。
            ("2024-10-01", "2024-10-07", 7),  # 国庆节：10月1日至7日放假调休，共7天。
        ],
        "workdays": [
            "2024-02-04", "2024-02-18",  # 2月4日（星期日）、2月18日（星期日）上班。
            "2024-04-07",  # 4月7日（星期日）上班。
            "2024-04-28", "2024-05-11",  # 4月28日（星期日）、5月11日（星期六）上班。
            "2024-09-14",  # 9月14日（星期六）上班。
            "2024-09-29", "2024-10-12",  # 9月29日（星期日）、10月12日（星期六）上班。
        ],
    },
    # 国办发明电〔2024〕12号, 2024年11月12日
    2025: {
        "holidays": [
            ("2025-01-01", "2025-01-01", 1),  # 元旦：1月1日（周三）放假1天，不调休。
            ("2025-01-28", "2025-02-04", 8),  # 春节：1月28日（农历除夕、周二）至2月4日（农历正月初七、周二）放假调休，共8天。
            ("2025-04-04", "2025-04-06", 3),  # 清明节：4月4日（周五）至6日（周日）放假，共3天。
            ("2025-05-01", "2025-05-05", 5),  # 劳动节：5月1日（周四）至5日（周一）放假调休，共5天。
            ("2025-05-31", "2025-06-02", 3),  # 端午节：5月31日（周六）至6月2日（周一）放假，共3天。
            ("2025-10-01", "2025-10-08", 8),  # 国庆节、中秋节：10月1日（周三）至8日（周三）放假调休，共8天。
        ],
        "workdays": [
            "2025-01-26", "2025-02-08",  # 1月26日（周日）、2月8日（周六）上班。
            "2025-04-27",  # 4月27日（周日）上班。
            "2025-09-28", "2025-10-11",  # 9月28日（周日）、10月11日（周六）上班。
        ],
    },
    # 国务院办公厅关于2026年部分节假日安排的通知, 2025年11月4日
    2026: {
        "holidays": [
            ("2026-01-01", "2026-01-03", 3),  # 元旦：1月1日（周四）至3日（周六）放假调休，共3天。
            ("2026-02-15", "2026-02-23", 9),  # 春节：2月15日（农历腊月二十八、周日）至23日（农历正月初七、周一）放假调休，共9天。
            ("2026-04-04", "2026-04-06", 3),  # 清明节：4月4日（周六）至6日（周一）放假，共3天。
            ("2026-05-01", "2026-05-05", 5),  # 劳动节：5月1日（周五）至5日（周二）放假调休，共5天。
            ("2026-06-19", "2026-06-21", 3),  # 端午节：6月19日（周五）至21日（周日）放假，共3天。
            ("2026-09-25", "2026-09-27", 3),  # 中秋节：9月25日（周五）至27日（周日）放假，共3天。
            ("2026-10-01", "2026-10-07", 7),  # 国庆节：10月1日（周四）至7日（周三）放假调休，共7天。
        ],
        "workdays": [
            "2026-01-04",  # 1月4日（周日）上班。
            "2026-02-14", "2026-02-28",  # 2月14日（周六）、2月28日（周六）上班。
            "2026-05-09",  # 5月9日（周六）上班。
            "2026-09-20", "2026-10-10",  # 9月20日（周日）、10月10日（周六）上班。
        ],
    },
}


def _official_workdays(year: int) -> dict[date, bool]:
    notice = OFFICIAL_NOTICES[year]
    off: set[date] = set()
    for first, last, days in notice["holidays"]:
        a, b = date.fromisoformat(first), date.fromisoformat(last)
        assert (b - a).days + 1 == days  # the notice's own 共N天
        off |= {a + timedelta(days=i) for i in range(days)}
    makeup = {date.fromisoformat(d) for d in notice["workdays"]}
    assert all(d.weekday() >= 5 for d in makeup)  # 上班 days are Saturdays or Sundays
    assert not makeup & off
    out = {}
    d = date(year, 1, 1)
    while d.year == year:
        out[d] = d in makeup or (d.weekday() < 5 and d not in off)
        d += timedelta(days=1)
    return out


@pytest.mark.parametrize("year", sorted(OFFICIAL_NOTICES))
def test_every_day_of_the_year_matches_the_official_notice(cal, year):
    want = _official_workdays(year)
    assert len(want) in (365, 366)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a covered year must not fall back to Monday-Friday
        got = {d: cal.is_workday(d) for d in want}
    wrong = [d.isoformat() for d in want if got[d] != want[d]]
    assert not wrong, f"days that differ from the {year} notice: {wrong}"


def test_the_first_covered_year_uses_official_data(cal):
    # 2004 is chinese_calendar's first year: National Day 2004 (Friday 1 October) is a holiday,
    # not a Monday-Friday fallback working day.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cal.is_workday(date(2004, 10, 1))


def test_official_years_cover_the_notices(cal):
    first, last = cal.official_years
    assert first == 2004  # chinese_calendar starts with 2004
    assert last >= max(OFFICIAL_NOTICES)


# ---------------------------------------------------------------- China's date of an instant


def test_local_date_is_utc_plus_8():
    from datetime import datetime, timezone

    from hedui.node.discovery.calendar import CHINA_TZ, local_date

    assert CHINA_TZ.utcoffset(datetime(2025, 6, 1)) == timedelta(hours=8)
    utc = UTC
    # 16:00 UTC is midnight in China: the last second before is still the old day.
    assert local_date(datetime(2025, 12, 31, 15, 59, 59, tzinfo=utc)) == date(2025, 12, 31)  # +9 says 1 Jan
    assert local_date(datetime(2025, 12, 31, 16, 0, 0, tzinfo=utc)) == date(2026, 1, 1)  # +7 says 31 Dec
    # Naive values are taken as UTC (checked below on a machine set to another zone too).
    assert local_date(datetime(2026, 2, 28, 16, 0)) == date(2026, 3, 1)
    assert local_date(datetime(2026, 2, 28, 15, 59)) == date(2026, 2, 28)
    # Another zone's instant is converted, not re-labelled.
    tokyo = timezone(timedelta(hours=9))
    assert local_date(datetime(2026, 1, 1, 0, 30, tzinfo=tokyo)) == date(2025, 12, 31)


def test_naive_datetimes_are_utc_whatever_the_machine_zone(monkeypatch):
    import time as _time
    from datetime import datetime

    from hedui.node.discovery.calendar import local_date

    # A naive value must not be read in the machine's zone (datetime.astimezone would).
    monkeypatch.setenv("TZ", "America/New_York")
    _time.tzset()
    try:
        assert local_date(datetime(2026, 2, 28, 16, 0)) == date(2026, 3, 1)
        assert local_date(datetime(2026, 2, 28, 15, 59)) == date(2026, 2, 28)
    finally:
        monkeypatch.undo()
        _time.tzset()


# ---------------------------------------------------------------- stepping


def test_previous_and_next_workday_step_one_day_at_a_time(cal):
    # Working days are themselves.
    assert cal.previous_workday(date(2025, 3, 7)) == date(2025, 3, 7)
    assert cal.next_workday(date(2025, 3, 7)) == date(2025, 3, 7)
    # Saturday 8 March 2025: back to Friday 7, forward to Monday 10 (a 2-day step gives Thu 6 / Tue 11).
    assert cal.previous_workday(date(2025, 3, 8)) == date(2025, 3, 7)
    assert cal.next_workday(date(2025, 3, 8)) == date(2025, 3, 10)
    # Sunday 5 October 2025, inside the 1-8 October holiday: Tue 30 Sep / Thu 9 Oct.
    assert cal.previous_workday(date(2025, 10, 5)) == date(2025, 9, 30)
    assert cal.next_workday(date(2025, 10, 5)) == date(2025, 10, 9)
    # Sunday 28 September 2025 is a make-up working day.
    assert cal.previous_workday(date(2025, 9, 28)) == date(2025, 9, 28)


def test_add_workdays_bounds_and_types(cal):
    from hedui.node.discovery.calendar import _MAX_WORKDAYS

    assert cal.add_workdays(date(2025, 3, 7), 1) == date(2025, 3, 10)
    assert cal.add_workdays(date(2025, 3, 7), 1) != date(2025, 3, 8)
    with pytest.warns(CalendarFallbackWarning):  # ten years of working days reach uncovered years
        far = cal.add_workdays(date(2025, 1, 1), _MAX_WORKDAYS)  # the largest count is allowed
    assert cal.workdays_between(date(2025, 1, 1), far) == _MAX_WORKDAYS
    assert _MAX_WORKDAYS == 3660  # the documented bound: ten years of days
    for bad in (3661, -1, 1.0, "3", None):
        with pytest.raises(InvalidArgument, match=r"workdays: got .*, want an integer 0\.\.3660"):
            cal.add_workdays(date(2025, 1, 1), bad)


def test_workdays_between_counts_the_end_not_the_start(cal):
    # (Fri 7 Mar, Mon 10 Mar]: Monday only.
    assert cal.workdays_between(date(2025, 3, 7), date(2025, 3, 10)) == 1
    assert cal.workdays_between(date(2025, 3, 7), date(2025, 3, 7)) == 0
    assert cal.workdays_between(date(2025, 3, 8), date(2025, 3, 9)) == 0
    assert cal.workdays_between(date(2025, 3, 9), date(2025, 3, 10)) == 1
    assert cal.workdays_between(date(2025, 3, 10), date(2025, 3, 7)) == -1


def test_is_workday_refuses_datetimes_and_non_dates(cal):
    from datetime import datetime

    for bad in (datetime(2025, 3, 7, 12, 0), "2025-03-07", 20250307, None):
        with pytest.raises(InvalidArgument, match="date: got"):
            cal.is_workday(bad)


def test_answers_are_stable_across_repeated_calls(cal):
    # The per-date cache must return what was computed, for True and False alike.
    days = [date(2025, 10, 1), date(2025, 10, 11), date(2025, 3, 8), date(2025, 3, 10)]
    first = [cal.is_workday(d) for d in days]
    assert first == [False, True, False, True]
    assert [cal.is_workday(d) for d in days] == first


def test_fallback_warning_points_at_the_caller(cal):
    with pytest.warns(CalendarFallbackWarning) as rec:
        cal.is_workday(date(NO_DATA_YEAR, 3, 3))
    assert rec[0].filename == __file__


# ---------------------------------------------------------------- a year the override covers


def test_a_year_the_override_covers_is_monday_to_friday_plus_its_days(tmp_path):
    # 2031: no official data; the file lists it in `years` and names its exceptions. A day it
    # does not name is a working day exactly when it is Monday to Friday, with no warning.
    f = tmp_path / "days.toml"
    f.write_text("years = [2031]\n[[days]]\ndate = 2031-01-01\nworkday = false\n", encoding="utf-8")
    cal = WorkCalendar(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalendarFallbackWarning)
        week = [cal.is_workday(date(2031, 3, 3) + timedelta(days=i)) for i in range(7)]  # Mon 3 .. Sun 9 March
        assert week == [True, True, True, True, True, False, False]
        assert not cal.is_workday(date(2031, 1, 1))  # a Wednesday the file names as a holiday
    assert cal.basis(2031) == "override"


def test_basis_between_does_not_count_the_day_of_the_event():
    # The official data starts in 2004 (chinese_calendar): an event on 31 December 2003 with
    # its deadline in January 2004 rests on official data only, since the day of the event is
    # not counted; one day earlier, 31 December 2003 itself is counted.
    cal = WorkCalendar()
    assert cal.official_years[0] == 2004
    assert cal.basis_between(date(2003, 12, 31), date(2004, 1, 5)) == "official"
    assert cal.basis_between(date(2003, 12, 30), date(2004, 1, 5)) == "weekdays-only"
    assert cal.basis_between(date(2004, 1, 5), date(2004, 1, 5)) == "official"  # a zero-day span: the day itself
    assert cal.basis_between(date(2003, 12, 31), date(2003, 12, 31)) == "weekdays-only"
