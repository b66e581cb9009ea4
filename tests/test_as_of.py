"""``--as-of`` on the command line (issue 10): a date means the end of that local day, an
instant needs its offset, and where acting in the future makes no sense a future value is
refused. Property tests over dates and offsets; the wall clock is a FixedClock."""

from __future__ import annotations

import datetime as dt

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.common.clock import FixedClock
from hedui.node.cli._common import as_of_clock

UTC = dt.UTC
CN = dt.timezone(dt.timedelta(hours=8))  # an independent +8, not the product's ZoneInfo
# 30 November 2026 23:30 UTC: already 1 December in China.
WALL = FixedClock(dt.datetime(2026, 11, 30, 23, 30, tzinfo=UTC))
TODAY_CN = dt.date(2026, 12, 1)


def test_default_is_the_wall_clock():
    assert as_of_clock(None, wall=WALL) is WALL


@settings(max_examples=200, deadline=None)
# From 1992: China kept daylight saving in 1986-1991 (UTC+9 in summer), which the product
# follows (tzdata) and this fixed +8 oracle does not.
@given(st.dates(min_value=dt.date(1992, 1, 1), max_value=dt.date(2150, 12, 31)))
def test_a_date_is_the_end_of_that_local_day(d):
    c = as_of_clock(d.isoformat(), wall=WALL)
    assert c.today() == d
    assert c.now() == dt.datetime(d.year, d.month, d.day, 23, 59, 59, tzinfo=CN)
    if d <= TODAY_CN:
        assert as_of_clock(d.isoformat(), wall=WALL, future=False).today() == d
    else:
        with pytest.raises(typer.Exit) as e:
            as_of_clock(d.isoformat(), wall=WALL, future=False)
        assert e.value.exit_code == 2


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1992, 1, 2), max_value=dt.datetime(2100, 1, 1)),
       st.integers(min_value=-12 * 4, max_value=14 * 4))
def test_an_instant_keeps_its_offset(naive, quarters):
    tz = dt.timezone(dt.timedelta(minutes=15 * quarters))
    t = naive.replace(microsecond=0, tzinfo=tz)
    c = as_of_clock(t.isoformat(), wall=WALL)
    assert c.now() == t and c.now().utcoffset() == dt.timedelta(0)
    assert c.today() == t.astimezone(CN).date()
    if t <= WALL.now():
        assert as_of_clock(t.isoformat(), wall=WALL, future=False).now() == t
    else:
        with pytest.raises(typer.Exit):
            as_of_clock(t.isoformat(), wall=WALL, future=False)


@pytest.mark.parametrize("text", ["2026-12-01T02:40", "yesterday", "2026-02-30", "2026-13-01", "", "2026-12-01 02:40"])
def test_bad_values_are_refused(text, capsys):
    with pytest.raises(typer.Exit) as e:
        as_of_clock(text, wall=WALL)
    assert e.value.exit_code == 2
    assert "--as-of: got" in capsys.readouterr().err


def test_today_in_china_is_not_the_future_although_it_is_tomorrow_in_utc(capsys):
    # 1 December is today in China at 23:30 UTC on 30 November: allowed; 2 December is not.
    assert as_of_clock("2026-12-01", wall=WALL, future=False).today() == TODAY_CN
    with pytest.raises(typer.Exit):
        as_of_clock("2026-12-02", wall=WALL, future=False)
    err = capsys.readouterr().err
    assert "--as-of: got 2026-12-02, in the future (now 2026-12-01 07:30 (UTC+8))" in " ".join(err.split())


def test_reports_show_instants_in_the_federation_zone_without_microseconds():
    from hedui.node.html import _instant

    assert _instant("2026-11-30T18:40:12.123456+00:00") == "2026-12-01 02:40 (UTC+8)"
    assert _instant(dt.datetime(2026, 11, 30, 18, 40, 59, 999999, tzinfo=UTC)) == "2026-12-01 02:40 (UTC+8)"
    assert _instant("2026-11-30T18:40:00Z", "Asia/Kathmandu") == "2026-12-01 00:25 (UTC+5:45)"
    assert _instant(None) == "" and _instant("") == ""
