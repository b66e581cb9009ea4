"""Reference periods: parsing, printing and the window arithmetic, against hand-written dates."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedui.common.periods import (
    DateRange,
    Month,
    PeriodError,
    Week,
    Year,
    end_of,
    months_before,
    parse_month,
    parse_period,
    previous_year,
    week_before,
    year_to_date,
)

D = dt.date


@pytest.mark.parametrize(
    "text, want, first, last",
    [
        ("2025-09", Month(2025, 9), D(2025, 9, 1), D(2025, 9, 30)),
        ("2024-02", Month(2024, 2), D(2024, 2, 1), D(2024, 2, 29)),  # leap year
        ("2100-02", Month(2100, 2), D(2100, 2, 1), D(2100, 2, 28)),  # not a leap year (÷100)
        ("2000-02", Month(2000, 2), D(2000, 2, 1), D(2000, 2, 29)),  # leap year (÷400)
        ("2026-12", Month(2026, 12), D(2026, 12, 1), D(2026, 12, 31)),
        ("2025", Year(2025), D(2025, 1, 1), D(2025, 12, 31)),
        ("2025-W36", Week(D(2025, 9, 1)), D(2025, 9, 1), D(2025, 9, 7)),
        ("2026-W01", Week(D(2025, 12, 29)), D(2025, 12, 29), D(2026, 1, 4)),  # ISO week 1 starts in December
        ("2020-W53", Week(D(2020, 12, 28)), D(2020, 12, 28), D(2021, 1, 3)),  # a 53-week year
        ("2025-01-15..2025-03-31", DateRange(D(2025, 1, 15), D(2025, 3, 31)), D(2025, 1, 15), D(2025, 3, 31)),
        ("2025-03-01..2025-03-01", DateRange(D(2025, 3, 1), D(2025, 3, 1)), D(2025, 3, 1), D(2025, 3, 1)),
    ],
)
def test_parse_print_and_bounds(text, want, first, last):
    p = parse_period(text)
    assert p == want
    assert str(p) == text  # printed the one way it is parsed
    assert (p.first_day, p.last_day) == (first, last)
    assert first in p and last in p
    assert first - dt.timedelta(days=1) not in p and last + dt.timedelta(days=1) not in p


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("2025-13", "want a month 01..12"),
        ("2025-00", "want a month 01..12"),
        ("2025-9", "want a month 2025-09"),
        ("202509", "want a month 2025-09"),
        ("1899-12", "want a year between 1900 and 2199"),
        ("2025-W54", "want a week that exists in 2025"),
        ("2025-W00", "want a week that exists in 2025"),
        ("2021-W53", "want a week that exists in 2021"),  # 2021 has 52 ISO weeks
        ("2025-02-30..2025-03-01", "want real dates"),
        ("2025-03-02..2025-03-01", "want a start on or before the end"),
        ("", "want a month 2025-09"),
        ("２０２５-０９", "want a month 2025-09"),  # full-width digits are not a period
        ("2025-09; DROP TABLE", "want a month 2025-09"),
    ],
)
def test_bad_periods_say_what_they_got_and_want(text, fragment):
    with pytest.raises(PeriodError) as exc:
        parse_period(text, field="reference_month")
    assert exc.value.message.startswith("reference_month: got ")
    assert fragment in exc.value.message


def test_parse_month_refuses_other_kinds():
    assert parse_month("2026-03") == Month(2026, 3)
    for text in ("2026", "2026-W10", "2026-01-01..2026-01-31"):
        with pytest.raises(PeriodError, match="want a month such as 2025-09"):
            parse_month(text)


def test_month_arithmetic_by_hand():
    assert Month(2026, 3).plus(-12) == Month(2025, 3)
    assert Month(2026, 1).plus(-1) == Month(2025, 12)
    assert Month(2025, 12).plus(1) == Month(2026, 1)
    assert Month(2026, 8).plus(0) == Month(2026, 8)
    assert Month(2026, 8).plus(-25) == Month(2024, 7)


def test_windows_relative_to_a_reference_month():
    # 12 whole months before 2026-03: March 2025 .. February 2026 (crosses a year boundary).
    assert months_before(Month(2026, 3), 12) == DateRange(D(2025, 3, 1), D(2026, 2, 28))
    # A reference month whose previous month ends on the 31st.
    assert months_before(Month(2026, 9), 12) == DateRange(D(2025, 9, 1), D(2026, 8, 31))
    assert months_before(Month(2026, 9), 3) == DateRange(D(2026, 6, 1), D(2026, 8, 31))
    # A leap February at the end of the window.
    assert months_before(Month(2024, 3), 1) == DateRange(D(2024, 2, 1), D(2024, 2, 29))
    assert year_to_date(Month(2026, 8)) == DateRange(D(2026, 1, 1), D(2026, 8, 31))
    assert year_to_date(Month(2026, 1)) == DateRange(D(2026, 1, 1), D(2026, 1, 31))
    assert previous_year(Month(2026, 1)) == DateRange(D(2025, 1, 1), D(2025, 12, 31))
    assert week_before(D(2026, 12, 7)) == DateRange(D(2026, 11, 30), D(2026, 12, 6))
    assert end_of(Month(2026, 2)) == D(2026, 2, 28)
    with pytest.raises(PeriodError, match="want a Monday"):
        week_before(D(2026, 12, 8))
    with pytest.raises(PeriodError, match="months_before: got 0, want 1..600"):
        months_before(Month(2026, 3), 0)


def test_range_relations():
    w = months_before(Month(2026, 3), 12)
    assert w.covers(Month(2025, 3)) and w.covers(Month(2026, 2)) and not w.covers(Month(2026, 3))
    assert w.overlaps(Year(2025)) and not w.covers(Year(2025))
    assert w.days() == 365
    assert not DateRange(D(2025, 1, 1), D(2025, 1, 31)).overlaps(Month(2025, 2))


@given(st.dates(min_value=D(1901, 1, 1), max_value=D(2198, 12, 31)))
def test_every_day_lies_in_exactly_its_month_week_and_year(d):
    m, w, y = Month.of(d), Week.of(d), Year(d.year)
    assert d in m and d in w and d in y
    assert parse_period(str(m)) == m and parse_period(str(w)) == w and parse_period(str(y)) == y
    assert m.first_day.day == 1 and (m.last_day + dt.timedelta(days=1)).day == 1
    assert w.first_day.weekday() == 0 and w.last_day.weekday() == 6


@given(st.integers(1911, 2197), st.integers(1, 12), st.integers(1, 120))
def test_months_before_is_n_whole_months_ending_the_day_before(y, mo, n):
    ref = Month(y, mo)
    r = months_before(ref, n)
    assert r.end == ref.first_day - dt.timedelta(days=1)
    assert r.start.day == 1
    months = (r.end.year * 12 + r.end.month) - (r.start.year * 12 + r.start.month) + 1
    assert months == n


@given(st.text(max_size=40))
def test_parse_never_crashes(text):
    try:
        p = parse_period(text)
    except PeriodError as exc:
        assert exc.message.startswith("period: got ")
    else:
        assert str(p) == text.strip()
