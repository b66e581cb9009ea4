"""Windows of the reference month and the states of a field answer (DESIGN-12 "Reference month
R, windows"; node/verification/answer.py), at fixed reference months: R = 2026-08 (a window
ending on the 31st), R = 2026-03 (across the year end), R = 2026-11 (after the data date).
Expectations are written out by hand from the contract's table, not computed with the code."""

from __future__ import annotations

import datetime as dt
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedui.adapters import idnum
from hedui.adapters.records import Fact
from hedui.common.periods import Month
from hedui.node.errors import InvalidArgument
from hedui.node.verification.answer import answer_lookup, derive, window_of
from hedui.node.verification.catalogue import FieldDef
from hedui.node.verification.protocol import Query, parse_reference_month
from hedui.v1 import lookup_pb2

AUG, MAR, NOV = Month(2026, 8), Month(2026, 3), Month(2026, 11)
V, NV, NR, NC = (lookup_pb2.ANSWER_STATE_VALUE, lookup_pb2.ANSWER_STATE_NO_VALUE, lookup_pb2.ANSWER_STATE_NO_RECORD,
                 lookup_pb2.ANSWER_STATE_NOT_CURRENT)


def fd(**kw) -> FieldDef:
    base = {"name": "f", "type": "money", "facts": ["wage"], "agg": "sum"}
    return FieldDef(**{**base, **kw})


def wage(y: int, m: int, d: int, amount: str = "100.00", **attrs: str) -> Fact:
    return Fact("wage", Decimal(amount), "CNY", date(y, m, d), attrs)


@pytest.mark.parametrize("window, ref, text, end", [
    ({"months_before": 12}, AUG, "2025-08..2026-07", date(2026, 7, 31)),
    ({"months_before": 12}, MAR, "2025-03..2026-02", date(2026, 2, 28)),
    ({"months_before": 1}, Month(2026, 1), "2025-12..2025-12", date(2025, 12, 31)),
    ("year_to_date", AUG, "2026-01..2026-08", date(2026, 8, 31)),
    ("year_to_date", Month(2026, 1), "2026-01..2026-01", date(2026, 1, 31)),
    ("previous_year", MAR, "2025-01..2025-12", date(2025, 12, 31)),
    ("as_of_reference", AUG, "@2026-08-31", date(2026, 8, 31)),
    ("as_of_reference", Month(2028, 2), "@2028-02-29", date(2028, 2, 29)),
    ("all_time", MAR, "..2026-03-31", date(2026, 3, 31)),
])
def test_window_text_and_end(window, ref, text, end):
    w = window_of(fd(window=window), ref)
    assert (w.text, w.end) == (text, end)


def test_months_before_takes_whole_months_before_r_not_r_itself():
    facts = [wage(2025, 7, 31, "1"), wage(2025, 8, 1, "10"), wage(2026, 7, 31, "100"), wage(2026, 8, 1, "1000")]
    f = fd(window={"months_before": 12})
    assert derive(f, facts, window_of(f, AUG)).value == "110.00"
    # Across the year end: 2025-03-01 .. 2026-02-28.
    facts = [wage(2025, 2, 28, "1"), wage(2025, 3, 1, "10"), wage(2026, 2, 28, "100"), wage(2026, 3, 1, "1000")]
    assert derive(f, facts, window_of(f, MAR)).value == "110.00"


def test_year_to_date_and_previous_year():
    facts = [wage(2025, 12, 31, "1"), wage(2026, 1, 1, "10"), wage(2026, 8, 31, "100"), wage(2026, 9, 1, "1000"),
             wage(2025, 1, 1, "10000"), wage(2024, 12, 31, "100000")]
    ytd, prev = fd(window="year_to_date"), fd(window="previous_year")
    assert derive(ytd, facts, window_of(ytd, AUG)).value == "110.00"
    assert derive(prev, facts, window_of(prev, AUG)).value == "10001.00"


def test_as_of_reference_uses_until_as_the_last_day_held():
    f = fd(type="integer", agg="count", window="as_of_reference", facts=["right"])
    held = [Fact("right", Decimal(1), "count", date(2020, 1, 1), {}, until=date(2026, 8, 31)),   # last day = E: held
            Fact("right", Decimal(1), "count", date(2026, 8, 31), {}),                              # begun on E: held
            Fact("right", Decimal(1), "count", date(2020, 1, 1), {}, until=date(2026, 8, 30)),    # ended the day before
            Fact("right", Decimal(1), "count", date(2026, 9, 1), {}),                              # after E
            Fact("right", Decimal(1), "count", None, {})]                                          # undated: not held
    assert derive(f, held, window_of(f, AUG)).value == "2"


def test_latest_takes_the_newest_and_the_last_read_of_a_day():
    f = fd(type="code", agg="latest", window="as_of_reference", facts=["status"])
    facts = [Fact("status", "正常", "code", date(2000, 1, 1)), Fact("status", "迁出", "code", date(2026, 5, 12)),
             Fact("status", "死亡", "code", date(2026, 5, 12)), Fact("status", "迁入", "code", date(2026, 9, 1))]
    d = derive(f, facts, window_of(f, AUG))
    assert (d.value, d.as_of) == ("死亡", "2026-05-12")
    assert derive(f, facts[:1], window_of(f, MAR)).as_of == "2000-01-01"
    assert derive(f, facts[3:], window_of(f, AUG)).state == NV      # nothing on or before E: no value, not ""


def test_sum_per_month_counts_window_months_held_at_least_a_day():
    f = fd(agg="sum_per_month", window={"months_before": 12}, facts=["award"])
    award = Fact("award", Decimal("1580.00"), "CNY", date(2025, 6, 18), {}, until=date(2026, 1, 14))
    assert derive(f, [award], window_of(f, AUG)).value == "9480.00"     # 2025-08 .. 2026-01: 6 months
    assert derive(f, [award], window_of(f, MAR)).value == "12640.00"    # 2025-06 .. 2026-01: 8 months
    running = Fact("award", Decimal("100.00"), "CNY", date(2026, 7, 31), {})
    assert derive(f, [running], window_of(f, AUG)).value == "100.00"    # one day in July is July
    ended_on_first = Fact("award", Decimal("100.00"), "CNY", date(2025, 1, 1), {}, until=date(2025, 8, 1))
    assert derive(f, [ended_on_first], window_of(f, AUG)).value == "100.00"


def test_where_distinct_by_and_unless():
    f = fd(window={"months_before": 12}, where={"item": ["0400", "0600"]})
    facts = [wage(2026, 1, 1, "1", item="0400"), wage(2026, 1, 1, "10", item="0101"), wage(2026, 2, 1, "100", item="600")]
    assert derive(f, facts, window_of(f, AUG)).value == "101.00"       # "600" equals "0600" as numbers
    g = fd(type="integer", agg="count", window={"months_before": 12}, facts=["setl"], distinct_by=["id"],
           unless={"fact": "cancel", "by": ["id"]})
    setl = [Fact("setl", Decimal("5"), "CNY", date(2026, 1, 5), {"id": i}) for i in ("a", "b", "b", "c")]
    cancel = [Fact("cancel", Decimal("-5"), "CNY", date(2026, 10, 1), {"id": "c"})]   # after the window: still cancels
    assert derive(g, setl + cancel, window_of(g, AUG)).value == "2"


def _ask(f: FieldDef, facts, ref: Month, dates):
    tok = b"t" * 64
    ans = answer_lookup({tok: facts} if facts is not None else {}, [tok], [Query(f, "", None)], provider="p",
                        digest=b"", directory_version=1, reference_month=ref, now=dt.datetime(2026, 11, 20),
                        data_dates=dates, sources_of={"wage": ["s"]})
    return ans.members[0].fields[0]


def test_states_and_precedence():
    dates = {"s": date(2026, 10, 31)}
    f = fd(window={"months_before": 12})
    a = _ask(f, [], AUG, dates)
    assert (a.state, a.value, a.present, a.data_date, a.as_of) == (V, "0.00", True, "2026-10-31", "")   # a real zero
    a = _ask(f, None, AUG, dates)
    assert (a.state, a.value, a.present, a.data_date) == (NR, "", False, "")
    # R = 2026-11: a 12-month window ends 2026-10-31, covered; a status at 2026-11-30 is not.
    assert _ask(f, None, NOV, dates).state == NR
    s = fd(window="as_of_reference", agg="max")
    a = _ask(s, None, NOV, dates)
    assert (a.state, a.value, a.data_date, a.window) == (NC, "", "2026-10-31", "@2026-11-30")   # beats NO_RECORD
    assert _ask(s, [wage(2026, 1, 1)], NOV, dates).state == NC
    assert _ask(s, [], AUG, dates).state == NV
    assert _ask(f, [], AUG, {"s": None}).state == NC     # a source with no data date is never current


def test_window_months_listed_by_hand():
    # 3 months before 2026-08: May, June, July; 1 month before 2026-01: December 2025.
    assert window_of(fd(window={"months_before": 3}), AUG).months() == [Month(2026, 5), Month(2026, 6), Month(2026, 7)]
    assert window_of(fd(window={"months_before": 1}), Month(2026, 1)).months() == [Month(2025, 12)]
    assert window_of(fd(window="as_of_reference"), AUG).months() == []  # a point has no months


# --- properties -----------------------------------------------------------------------------------

_months = st.builds(Month, st.integers(1950, 2150), st.integers(1, 12))


@given(ref=_months, n=st.integers(1, 600))
def test_months_before_is_n_whole_months_ending_the_day_before_r(ref, n):
    w = window_of(fd(window={"months_before": n}), ref)
    assert len(w.months()) == n and w.last == ref.plus(-1) and w.end == ref.first_day - dt.timedelta(days=1)
    assert w.start is not None and w.start.day == 1 and w.text == f"{ref.plus(-n)}..{ref.plus(-1)}"


@given(text=st.one_of(st.text(max_size=24), st.from_regex(r"\d{4}-\d{2}", fullmatch=True),
                      st.from_regex(r"\d{15,18}", fullmatch=True)))
def test_reference_month_parses_or_is_refused_without_echoing_an_identity(text):
    try:
        m = parse_reference_month(text)
    except InvalidArgument as e:
        assert e.reason == "BAD_REFERENCE_MONTH" and e.message.startswith("reference_month: got ")
        assert not idnum.contains(e.message)
    else:
        assert str(m) == text.strip()
