"""Declared date formats (adapters/dates.py): every format round-trips every day, months and
years take their first or last day, and malformed, hostile and boundary cells are refused
with a reason that never quotes anything long enough to be an identity number."""

from __future__ import annotations

import calendar
from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedui.adapters import idnum
from hedui.adapters.dates import FORMATS, BadDate, parse
from hedui.adapters.idnum import synthetic

DAYS = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))
FW = str.maketrans({str(d): chr(0xFF10 + d) for d in range(10)})


def _last(d: date) -> date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


@given(DAYS)
def test_every_format_round_trips(d):
    assert parse(d, "date") == parse(datetime(d.year, d.month, d.day, 23, 59), "datetime") == d
    assert parse(d.isoformat(), "date") == parse(f"{d.isoformat()} 08:30:00", "datetime") == d
    assert parse(f"{d.isoformat()}T08:30:00.123456", "datetime") == d
    ymd = f"{d.year:04d}{d.month:02d}{d.day:02d}"
    assert parse(ymd, "YYYYMMDD") == parse(int(ymd), "YYYYMMDD") == parse(Decimal(ymd), "YYYYMMDD") == d
    assert parse(ymd.translate(FW), "YYYYMMDD") == d                       # full-width digits
    ym = ymd[:6]
    first, last = d.replace(day=1), _last(d)
    assert parse(ym, "YYYYMM") == parse(int(ym), "YYYYMM") == parse(f" {ym}\u3000", "YYYYMM") == first
    assert parse(ym, "YYYYMM", end=True) == parse(f"{ym[:4]}-{ym[4:]}", "YYYY-MM", end=True) == last
    assert parse(f"{ym[:4]}-{ym[4:]}", "YYYY-MM") == first
    assert parse(ym[:4], "YYYY") == parse(int(ym[:4]), "YYYY") == date(d.year, 1, 1)
    assert parse(ym[:4], "YYYY", end=True) == date(d.year, 12, 31)


@pytest.mark.parametrize("cell, fmt, end, want", [
    ("20240229", "YYYYMMDD", False, date(2024, 2, 29)),
    (202402, "YYYYMM", True, date(2024, 2, 29)),        # a leap February ends on the 29th
    (202302, "YYYYMM", True, date(2023, 2, 28)),
    (202612, "YYYYMM", True, date(2026, 12, 31)),       # across the year boundary
    ("2024-02", "YYYY-MM", True, date(2024, 2, 29)),
    ("2024/01/05", "date", False, date(2024, 1, 5)),     # what older mappings accepted
    ("2024年1月5日", "date", False, date(2024, 1, 5)),
    ("2024-01", "date", True, date(2024, 1, 31)),
    (20240105, "date", False, date(2024, 1, 5)),
    ("2024-01-05 10:00:00", "date", False, date(2024, 1, 5)),
])
def test_boundaries(cell, fmt, end, want):
    assert parse(cell, fmt, end=end) == want


@pytest.mark.parametrize("cell, fmt, got", [
    ("20230229", "YYYYMMDD", "'20230229' (no such day)"),
    ("202613", "YYYYMM", "'202613' (no month 13)"),
    (202600, "YYYYMM", "'202600' (no month 0)"),
    ("00000000", "YYYYMMDD", "'00000000' (a year out of range)"),
    ("99991231", "YYYYMMDD", "'99991231' (a year out of range)"),
    ("2024-2", "YYYY-MM", "'2024-2'"),
    ("20240229", "YYYYMM", "'20240229'"),
    ("2024", "YYYYMM", "'2024'"),
    (2024.5, "YYYY", "a fractional number"),
    (True, "YYYY", "a boolean"),
    (date(2024, 1, 1), "YYYYMM", "a date value"),
    (202401, "datetime", "a whole number"),
    ("2024-01-05", "datetime", "'2024-01-05'"),
    ("", "YYYYMM", "an empty cell"),
    ("二〇二四年", "YYYY", "text that is not YYYY"),
    ("x" * 100, "date", "text of 100 characters"),
    ("abc\udc80", "date", "bytes that are not valid in the declared encoding"),
    (None, "YYYYMMDD", "a NoneType"),
])
def test_malformed_cells_are_refused(cell, fmt, got):
    with pytest.raises(BadDate) as ei:
        parse(cell, fmt)
    assert ei.value.got == got


@given(st.one_of(st.text(max_size=40), st.integers(), st.decimals(allow_nan=True), st.floats(),
                 st.binary(max_size=10), st.none(), st.booleans()),
       st.sampled_from(FORMATS), st.booleans())
def test_anything_is_a_date_or_a_bad_date(cell, fmt, end):
    try:
        d = parse(cell, fmt, end=end)
    except BadDate as bad:
        assert not idnum.contains(bad.got) and not idnum.long_digit_run(bad.got)
    else:
        assert date(1900, 1, 1) <= d <= date(2200, 12, 31)


@given(st.randoms(use_true_random=False), st.sampled_from(FORMATS), st.sampled_from(["", " ", "\u3000"]))
def test_an_identity_number_in_a_date_column_is_never_quoted(rng, fmt, pad):
    n = synthetic(rng)
    for cell in (n, pad + n + pad, n.translate(FW), n[:6] + n[8:17], int(n[:17])):
        with pytest.raises(BadDate) as ei:
            parse(cell, fmt)
        assert not idnum.contains(ei.value.got) and n[6:14] not in ei.value.got


@given(DAYS)
def test_day_values_are_the_same_day_at_either_end(d):
    # A day-precision value names the same day whether it starts or ends something.
    ymd = d.strftime("%Y%m%d")
    assert parse(ymd, "YYYYMMDD", end=True) == parse(ymd, "YYYYMMDD") == d
    assert parse(d.isoformat(), "date", end=True) == d
