"""The federation clock: local dates in China, instants shown with their zone, --as-of."""

from __future__ import annotations

import datetime as dt

import pytest

from hedui.common.clock import (
    DEFAULT_ZONE,
    ClockError,
    FixedClock,
    SystemClock,
    fmt_instant,
    local_date,
    parse_as_of,
    utc,
    zone,
)

UTC = dt.UTC
CN = zone(DEFAULT_ZONE)


def test_china_is_utc_plus_eight_all_year():
    # China Standard Time has had no daylight saving since 1991: +8 in winter and summer.
    for month in (1, 7):
        t = dt.datetime(2026, month, 15, 0, 0, tzinfo=UTC)
        assert t.astimezone(CN).utcoffset() == dt.timedelta(hours=8)


@pytest.mark.parametrize(
    "instant, want",
    [
        (dt.datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC), dt.date(2026, 11, 30)),
        (dt.datetime(2026, 11, 30, 16, 0, 0, tzinfo=UTC), dt.date(2026, 12, 1)),  # midnight in China
        (dt.datetime(2026, 12, 31, 20, 0, tzinfo=UTC), dt.date(2027, 1, 1)),      # new year in China
        (dt.datetime(2028, 2, 28, 18, 0, tzinfo=UTC), dt.date(2028, 2, 29)),      # leap day
        (dt.datetime(2026, 11, 30, 18, 40), dt.date(2026, 12, 1)),               # naive = UTC
    ],
)
def test_local_date(instant, want):
    assert local_date(instant, CN) == want
    assert FixedClock(instant).today() == want


def test_fmt_instant_shows_the_zone_and_no_microseconds():
    t = dt.datetime(2026, 11, 30, 18, 40, 12, 345678, tzinfo=UTC)
    assert fmt_instant(t, CN) == "2026-12-01 02:40 (UTC+8)"
    assert fmt_instant(t, CN, seconds=True) == "2026-12-01 02:40:12 (UTC+8)"
    assert fmt_instant(t, zone("UTC")) == "2026-11-30 18:40 (UTC+0)"
    assert fmt_instant(t, zone("Asia/Kolkata")) == "2026-12-01 00:10 (UTC+5:30)"
    assert fmt_instant(None, CN) == ""


def test_fixed_clock_moves_only_when_told():
    c = FixedClock(dt.datetime(2026, 11, 30, 15, 30, tzinfo=UTC))
    assert c.now() == dt.datetime(2026, 11, 30, 15, 30, tzinfo=UTC) and c.today() == dt.date(2026, 11, 30)
    c.advance(dt.timedelta(minutes=30))
    assert c.today() == dt.date(2026, 12, 1)
    c.set(dt.datetime(2027, 1, 1, tzinfo=CN))
    assert c.now() == dt.datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    assert FixedClock.at_local(dt.date(2026, 12, 25)).now() == dt.datetime(2026, 12, 25, 4, 0, tzinfo=UTC)


def test_system_clock_is_aware_utc():
    c = SystemClock()
    assert c.now().tzinfo is not None and c.now().utcoffset() == dt.timedelta(0)
    assert c.zone.key == DEFAULT_ZONE


@pytest.mark.parametrize(
    "text, want",
    [
        ("2026-12-01", dt.datetime(2026, 12, 1, 15, 59, 59, tzinfo=UTC)),   # end of that day in China
        ("2026-11-30T18:40Z", dt.datetime(2026, 11, 30, 18, 40, tzinfo=UTC)),
        ("2026-12-01T02:40+08:00", dt.datetime(2026, 11, 30, 18, 40, tzinfo=UTC)),
    ],
)
def test_parse_as_of(text, want):
    assert parse_as_of(text, CN) == want


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("2026-02-30", "want a real date"),
        ("2026-12-01T02:40", "want one such as"),
        ("yesterday", "want a date YYYY-MM-DD or an instant"),
        ("", "want a date YYYY-MM-DD or an instant"),
    ],
)
def test_parse_as_of_refuses(text, fragment):
    with pytest.raises(ClockError) as exc:
        parse_as_of(text, CN)
    assert exc.value.message.startswith("--as-of: got") and fragment in exc.value.message


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "x" * 80, "Asia/Shanghai\n"])
def test_bad_zone_names(name):
    with pytest.raises(ClockError, match="time_zone: got .*want an IANA zone"):
        zone(name)


def test_utc_keeps_instants():
    t = dt.datetime(2026, 12, 1, 2, 40, tzinfo=CN)
    assert utc(t) == t and utc(t).tzinfo == UTC
