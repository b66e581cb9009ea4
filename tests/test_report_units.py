"""The verification report's pieces that need no federation (node/verification/report.py,
issue 19): temporary-assistance tiers at and on either side of every threshold, answer
states (including a provider from before issue 12), the evidence annex, department names,
the identity mask. Expected figures are worked by hand in each test, not by the module.
"""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest

from hedui.keys import dsse
from hedui.keys.signing import SigningKey
from hedui.node.verification import report
from hedui.node.verification.reckon import Cell, Source
from hedui.node.verification.rules import parse_rules
from hedui.v1 import directory_pb2, lookup_pb2

# The packaged default's tiers (docs/verification-rules.md), written out so a change to the
# packaged file does not silently change what is tested.
RULES = parse_rules("""
[standards]
default = 1000

[[income]]
provider = "tax"
field = "wages"
months = 12

[temporary_assistance]
provider = "tax"
field = "income_last_year"
tiers = [
  { over = 1, upto = 2, aid = "A", max_cny = 3000 },
  { over = 2, upto = 3, aid = "B", min_cny = 3000, max_cny = 5000 },
  { over = 4, aid = "D" },
]
""")


def _sources(*incomes: str, state: str = "value", status: str = "ok") -> dict[str, Source]:
    cells = {(pos, "income_last_year"): Cell(state, v if state == "value" else "") for pos, v in enumerate(incomes)}
    return {"tax": Source(status, "down" if status != "ok" else "", cells=cells)}


def _ta(expenditure: str | None, *incomes: str, rules=RULES, **kw) -> dict | None:
    case = SimpleNamespace(expenditure=expenditure)
    return report._temporary_assistance(rules, case, _sources(*incomes, **kw), len(incomes))


# Two members with 12000 + 12000 last year: per capita 12000, so the ratio is expenditure / 12000.
@pytest.mark.parametrize("expenditure,ratio,aid", [
    ("12000", "1.000", None),          # ratio 1: not strictly above the first tier's "over"
    ("12000.12", "1.000", "A"),        # 1.00001: just above 1
    ("24000", "2.000", "A"),           # 2: at most the first tier's "upto"
    ("24000.12", "2.000", "B"),        # just above 2
    ("36000", "3.000", "B"),           # 3: at most "upto" 3
    ("36000.12", "3.000", None),       # just above 3: the gap between 3 and 4 has no tier
    ("48000", "4.000", None),          # 4: not strictly above "over" 4
    ("48000.12", "4.000", "D"),        # just above 4: the open-ended tier
    ("6000", "0.500", None),
])
def test_temporary_assistance_tier_boundaries(expenditure, ratio, aid):
    got = _ta(expenditure, "12000", "12000")
    assert got is not None
    assert got["ratio"] == ratio
    assert got["last_year_per_capita"] == "12000.00"
    assert got["expenditure"] == str(Decimal(expenditure).quantize(Decimal("0.01")))
    if aid is None:
        assert got["state"] == "below_tiers" and got["aid"].startswith("支出未超过") and got["min_cny"] is None and got["max_cny"] is None
    else:
        assert got["state"] == "tier" and got["aid"] == aid
    if aid == "A":
        assert (got["min_cny"], got["max_cny"]) == (None, "3000")
    if aid == "B":
        assert (got["min_cny"], got["max_cny"]) == ("3000", "5000")
    if aid == "D":
        assert (got["min_cny"], got["max_cny"]) == (None, None)


def test_temporary_assistance_per_capita_divides_by_every_member_and_rounds_half_up():
    # 10000 + 0 + 5000.03 over three members: 5000.01; 15000.02 / 5000.01 = 3.0000 (2.99999…).
    got = _ta("15000.02", "10000", "0", "5000.03")
    assert got["last_year_per_capita"] == "5000.01"
    assert got["ratio"] == "3.000" and got["aid"] == "B"
    # Half a cent rounds up: 0.01 + 0 over two = 0.005 → "0.01".
    assert _ta("1", "0.01", "0")["last_year_per_capita"] == "0.01"


def test_temporary_assistance_zero_income_takes_the_open_ended_tier():
    # Nobody had income last year: no ratio; only a tier without "upto" applies.
    got = _ta("100", "0", "0")
    assert got["ratio"] is None and got["state"] == "tier" and got["aid"] == "D"
    rules = RULES.model_copy(update={"temporary_assistance": RULES.temporary_assistance.model_copy(
        update={"tiers": RULES.temporary_assistance.tiers[:2]})})
    got = _ta("100", "0", "0", rules=rules)
    assert got["ratio"] is None and got["state"] == "below_tiers"


def test_temporary_assistance_no_record_counts_as_zero_income():
    got = _ta("24000.12", "0", "0", state="no_record")
    assert got["ratio"] is None and got["aid"] == "D"


@pytest.mark.parametrize("kw", [dict(state="not_current"), dict(status="unavailable"), dict(status="refused")])
def test_temporary_assistance_unknown_income_concludes_nothing(kw):
    got = _ta("30000", "12000", "12000", **kw)
    assert got == {"expenditure": "30000", "state": "unknown", "reason": "tax.income_last_year not known"}


def test_temporary_assistance_absent_without_rules_or_expenditure():
    assert _ta(None, "12000") is None
    assert _ta("100", "12000", rules=RULES.model_copy(update={"temporary_assistance": None})) is None


def _fa(field: str, **kw) -> lookup_pb2.FieldAnswer:
    return lookup_pb2.FieldAnswer(field=field, **kw)


@pytest.mark.parametrize("found,kw,want", [
    (True, dict(state=lookup_pb2.ANSWER_STATE_VALUE, present=True), "value"),
    (True, dict(state=lookup_pb2.ANSWER_STATE_NO_VALUE), "no_value"),
    (False, dict(state=lookup_pb2.ANSWER_STATE_NO_RECORD), "no_record"),
    (True, dict(state=lookup_pb2.ANSWER_STATE_NOT_CURRENT), "not_current"),
    # A provider from before issue 12 sends no state: found/present decide.
    (False, dict(), "no_record"),
    (False, dict(present=True), "no_record"),
    (True, dict(present=True), "value"),
    (True, dict(present=False), "no_value"),
])
def test_answer_state(found, kw, want):
    assert report._state(found, _fa("f", **kw)) == want


def _entry(answer, evidence="ev1", status="ok", reason=""):
    return {"status": status, "reason": reason, "answer": answer, "evidence": evidence, "signer": "k1"}


def test_sources_and_annex_from_verified_answers():
    ans = lookup_pb2.LookupAnswer(members=[
        lookup_pb2.TokenAnswer(found=True, fields=[
            _fa("wages", state=lookup_pb2.ANSWER_STATE_VALUE, present=True, value="100", unit="CNY", window="2025-11..2026-10",
                as_of="2026-10-31", data_date="2026-11-02"),
            _fa("car", state=lookup_pb2.ANSWER_STATE_NO_VALUE, value="ignored"),
        ]),
        lookup_pb2.TokenAnswer(found=False, fields=[_fa("wages", state=lookup_pb2.ANSWER_STATE_NO_RECORD)]),
    ])
    ans_map = {"tax": _entry(ans), "hrss": _entry(None, evidence=None, status="unavailable", reason="deadline")}
    src = report.sources_of(ans_map)
    assert src["hrss"] == Source("unavailable", "deadline", None, "k1", {})
    assert src["tax"].status == "ok" and src["tax"].evidence == "ev1" and src["tax"].signer == "k1"
    assert src["tax"].cells == {
        (0, "wages"): Cell("value", "100", "CNY", "2025-11..2026-10", "2026-10-31", "2026-11-02", "ev1"),
        (0, "car"): Cell("no_value", "", "", "", "", "", "ev1"),  # a value without the value state is not shown
        (1, "wages"): Cell("no_record", "", "", "", "", "", "ev1"),
    }
    table = report._answer_table(ans_map)
    assert [(r["member"], r["provider"], r["field"], r["state"], r["found"], r["present"], r["value"]) for r in table] == [
        (0, "tax", "wages", "value", True, True, "100"),
        (0, "tax", "car", "no_value", True, False, None),
        (1, "tax", "wages", "no_record", False, False, None),
    ]
    assert (table[0]["window"], table[0]["as_of"], table[0]["data_date"], table[0]["unit"]) == (
        "2025-11..2026-10", "2026-10-31", "2026-11-02", "CNY")
    assert (table[1]["window"], table[1]["as_of"], table[1]["data_date"]) == (None, None, None)
    assert {(r["evidence"], r["signer"]) for r in table} == {("ev1", "k1")}


def test_annex_is_ordered_by_department():
    one = lookup_pb2.LookupAnswer(members=[lookup_pb2.TokenAnswer(found=True, fields=[_fa("x", present=True, value="1")])])
    table = report._answer_table({"zz": _entry(one), "aa": _entry(one), "mm": _entry(None)})
    assert [r["provider"] for r in table] == ["aa", "zz"]


def _dir_bytes(version: int, *members: tuple[str, str]) -> bytes:
    msg = directory_pb2.Directory(version=version, members=[directory_pb2.Member(code=c, name=n) for c, n in members])
    return dsse.sign(dsse.DIRECTORY, msg.SerializeToString(), [SigningKey.generate("authority")]).SerializeToString()


def test_department_names_newest_directory_wins_and_bad_bytes_are_skipped():
    dirs = {
        3: _dir_bytes(3, ("tax", "区税务局"), ("hrss", "")),
        1: _dir_bytes(1, ("tax", "老税务局"), ("hrss", "人社局"), ("old", "已撤销")),
        2: b"\xff not an envelope",
    }
    assert report.department_names(dirs) == {"tax": "区税务局", "hrss": "人社局", "old": "已撤销"}
    assert report.department_names({}) == {}


def test_mask_identity_keeps_six_and_four():
    assert report.mask_identity("110105194912310025") == "110105********0025"
    assert len(report.mask_identity("110105194912310025")) == 18


def test_keys_for_trusts_the_hub_store_but_verifies_offline():
    authority = SigningKey.generate("authority")
    member_key = SigningKey.generate("tax")
    msg = directory_pb2.Directory(version=1, members=[directory_pb2.Member(code="tax", signing_key=member_key.public.raw)])
    signed_by_other = dsse.sign(dsse.DIRECTORY, msg.SerializeToString(), [SigningKey.generate("authority")])
    dirs = {1: signed_by_other.SerializeToString()}
    # The hub's own store: accepted when used, not re-verified.
    assert list(report._keys_for(dirs, 1, None)) == [member_key.public.keyid]
    with pytest.raises(Exception) as e:
        report._keys_for(dirs, 1, authority.public)
    assert getattr(e.value, "reason", "") == "UNKNOWN_SIGNER"
