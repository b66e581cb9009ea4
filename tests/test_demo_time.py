"""``hedui demo`` prints the right month on any date (issue 10): the monthly report it shows
is for the month the referrals were made in, in the federation zone (Asia/Shanghai), and it
counts the notices just delivered. On the wall clock: .ci/run repeats this under faketime at
the last day of a month 23:30 UTC (already the 1st in China), 29 February, 31 December
20:00 UTC and a year the holiday package does not cover."""

from __future__ import annotations

import re

import pytest

from hedui.node.testbed.demo import run_demo


@pytest.mark.timesensitive
@pytest.mark.slow
def test_demo_reports_the_month_the_referrals_were_made_in(tmp_path):
    summary = run_demo(tmp_path / "demo", say=lambda *a, **k: None, residents=300)
    steps = {s["name"]: s["result"] for s in summary["steps"]}
    made = re.search(r"made on ([0-9-]+(?:, [0-9-]+)*) \(Asia/Shanghai\)", steps["referrals"])
    assert made, steps["referrals"]
    days = made.group(1).split(", ")
    # The demo runs in seconds: every referral is made on one local day (or two, at midnight).
    assert 1 <= len(days) <= 2
    report = steps["monthly report"]
    period, notices = re.match(r"(\d{4}-\d{2}): (\d+) notice\(s\)", report).groups()  # type: ignore[union-attr]
    assert period == days[-1][:7], (period, days)
    assert int(notices) > 0, report
    # Deadlines in a year without official holiday data are marked as such.
    dues = re.search(r"working days: (.*)$", steps["referrals"]).group(1)  # type: ignore[union-attr]
    import chinese_calendar

    last = max(d.year for d in chinese_calendar.holidays)
    for due in dues.split(", "):
        year = int(due[:4])
        assert ("weekdays-only" in due) == (year > last), due
