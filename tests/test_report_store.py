"""The report of a case read back from the store (node/verification/report.py, issue 19):
signed answers stored as the hub stores them (case_answers rows with the DSSE envelope, the
tokens and the request digest; the directory in directory_history), then ``build_report``,
on SQLite and PostgreSQL.

Every expected figure is worked out by hand in the comments, never by the module: the
per-capita income and ``below_standard`` at, and a cent either side of, the standard; asset
flags set and clear at and either side of their thresholds (member and household scope,
excluded members out of scope); the temporary-assistance tier through the stored
expenditure; a department that did not answer, one whose evidence does not verify, and a
directory the authority did not sign, each listed as missing, never counted as zero.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import types
from decimal import Decimal

import pytest
from console.helpers import LogRecorder
from sqlalchemy import insert, select, update

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.keys import dsse
from hedui.keys.signing import SigningKey
from hedui.node.crosscheck import shards
from hedui.node.crosscheck.filterfmt import header_for
from hedui.node.crosscheck.wire import header_digest, sign_header
from hedui.node.verification.cases import consent_digest_of, open_case
from hedui.node.verification.hub_tables import case_answers, cases, directory_history
from hedui.node.verification.report import build_report
from hedui.node.verification.rules import parse_rules
from hedui.v1 import common_pb2, directory_pb2, lookup_pb2

# Opened 2026-11-30 17:00 UTC = 2026-12-01 01:00 China Standard Time; run 20 minutes later.
OPENED = dt.datetime(2026, 11, 30, 17, 0, tzinfo=dt.UTC)
RUN_AT = dt.datetime(2026, 11, 30, 17, 20, tzinfo=dt.UTC)
IDS = [resident(n, 11).id_number for n in (1, 2, 3, 4)]
RELATIONS = ["self", "spouse", "parent", "child"]

RULES = parse_rules('''
[members]
provider = "huji"
field = "registry_status"
exclude = { "死亡" = "dead", "迁出" = "moved_out" }

[[income]]
provider = "shebao"
field = "wages"
months = 12

[[income]]
provider = "shebao"
field = "pension"
months = 1

[[deductions]]
provider = "shebao"
field = "insurance_paid"
months = 12

[[assets]]
flag = "vehicle"
provider = "cheguan"
field = "vehicle_max_price"
op = ">="
threshold = "100000.00"
scope = "member"

[[assets]]
flag = "properties"
provider = "budongchan"
field = "residential_count"
op = ">="
threshold = 2
scope = "household"

[[info]]
provider = "gongjijin"
field = "fund_balance"
scope = "household"

[standards]
default = "800.00"
"370304" = [{ from = "2026-01", amount = "1010.00" }]

[temporary_assistance]
provider = "shuiwu"
field = "income_last_year"
tiers = [
  { over = 1, upto = 2, aid = "A", max_cny = 3000 },
  { over = 2, aid = "B", min_cny = 3000 },
]
''')

V, NV, NR, NC = (lookup_pb2.ANSWER_STATE_VALUE, lookup_pb2.ANSWER_STATE_NO_VALUE, lookup_pb2.ANSWER_STATE_NO_RECORD,
                 lookup_pb2.ANSWER_STATE_NOT_CURRENT)
PROVIDERS = ["budongchan", "cheguan", "gongjijin", "huji", "shebao", "shuiwu"]
KEYS = {p: SigningKey.generate(p) for p in PROVIDERS}
AUTHORITY = SigningKey.generate("authority")
ROGUE = SigningKey.generate("authority")  # signs directory v4: not the federation's authority


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path_factory):
    """One store per backend for the whole file, migrated by the real migrations (each test
    opens its own case in it), so each test takes a fraction of a second."""
    from conftest import scratch_database

    from hedui.node.store import migrate
    from hedui.node.store.db import open_engine, sqlite_url

    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = sqlite_url(tmp_path_factory.mktemp("report") / "node.db")
        else:
            url = stack.enter_context(scratch_database(request.getfixturevalue("pg_admin")))
        eng = open_engine(url)
        migrate.upgrade(eng)
        yield eng
        eng.dispose()


def _answers(wage0: str, car0: str, homes1: str) -> dict[str, dict[str, list[tuple[int, str]]]]:
    """provider → field → one (state, value) per member 0..3. Member 2 is dead (excluded);
    member 3 has no registry record (counted, noted). Member 2's figures are large on
    purpose: an excluded member must not reach the income, the flags or the info total."""
    return {
        "huji": {"registry_status": [(V, "正常"), (V, "正常"), (V, "死亡"), (NR, "")]},
        "shebao": {
            "wages": [(V, wage0), (V, "12000.00"), (V, "99999.00"), (NV, "")],
            "pension": [(NR, ""), (V, "300.00"), (V, "5000.00"), (V, "500.00")],
            "insurance_paid": [(V, "1200.00"), (NV, ""), (V, "600.00"), (NR, "")],
        },
        "cheguan": {"vehicle_max_price": [(V, car0), (NR, ""), (V, "500000.00"), (NV, "")]},
        "budongchan": {"residential_count": [(V, "1"), (V, homes1), (V, "5"), (NR, "")]},
        "gongjijin": {"fund_balance": [(V, "100.50"), (V, "200.25"), (V, "9999.00"), (NR, "")]},
        # Temporary assistance divides by every listed member (last year's household).
        "shuiwu": {"income_last_year": [(V, "24000.00"), (V, "12000.00"), (NR, ""), (V, "12000.00")]},
    }


def _token(provider: str, pos: int) -> bytes:
    return hashlib.sha512(f"{provider}/{pos}".encode()).digest()  # 64 bytes, like an OPRF token


def _signed(provider: str, fields: dict[str, list[tuple[int, str]]], digest: bytes, key: SigningKey,
            positions: list[int] | None = None) -> bytes:
    members = []
    for pos in range(4) if positions is None else positions:
        fas, found = [], False
        for name, cells in fields.items():
            state, value = cells[pos]
            found = found or state != NR
            fas.append(lookup_pb2.FieldAnswer(field=name, state=state, present=state == V, value=value,
                                              unit="CNY", window="2025-08..2026-07" if name == "wages" else "",
                                              as_of="2026-05-03" if value == "死亡" else "", data_date="2026-08-31"))
        members.append(lookup_pb2.TokenAnswer(token=_token(provider, pos), found=found, fields=fas))
    ans = lookup_pb2.LookupAnswer(provider=provider, request_digest=digest, members=members)
    return dsse.sign(dsse.ANSWER, ans.SerializeToString(), [key]).SerializeToString()


def _directory(version: int = 3, authority: SigningKey = AUTHORITY) -> bytes:
    msg = directory_pb2.Directory(version=version, members=[
        directory_pb2.Member(code=p, name=f"区{p}局", signing_key=KEYS[p].public.raw) for p in PROVIDERS])
    msg.issued_at.FromDatetime(dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    msg.expires_at.FromDatetime(dt.datetime(2027, 2, 1, tzinfo=dt.UTC))
    return dsse.sign(dsse.DIRECTORY, msg.SerializeToString(), [authority]).SerializeToString()


#: One authorisation scan per case: a one-off authorisation serves one case only (issue 18).
_SCANS = itertools.count()


def _case(engine, answers, *, purpose="dibao", expenditure=None, down=(), forged=(), version=3, first=None, run=True,
          no_envelope=()):
    """Opens a case with the real ``open_case`` and stores every provider's outcome the way
    the hub's runner does. ``down``: providers that did not answer; ``forged``: answers
    signed by a key the directory does not list; ``version``: the directory the answers cite
    (3, signed by the authority, or 4, signed by ROGUE); ``first``: provider → (the member
    positions its signed filter holds, the filter's data date as cited): a filter-first lookup
    (issue 14) asks only those; ``run=False``: never run; ``no_envelope``: ok rows with no answer."""
    audit = LogRecorder(engine)
    try:
        rt = types.SimpleNamespace(engine=engine, audit=audit, clock=FixedClock(OPENED))
        ref = open_case(rt, list(zip(IDS, RELATIONS, strict=True)), purpose=purpose, expenditure=expenditure,
                        consent_digest=consent_digest_of(f"signed {next(_SCANS)}".encode()), operator="cw07", region="370304",
                        reference_month="2026-08")
    finally:
        audit.close()
    with engine.begin() as c:
        if c.execute(select(directory_history.c.version).where(directory_history.c.version == version)).first() is None:
            env = _directory(version, AUTHORITY if version == 3 else ROGUE)
            c.execute(insert(directory_history).values(version=version, envelope=env, accepted_at=OPENED))
        for p, fields in answers.items():
            digest = hashlib.sha256(f"request {p}".encode()).digest()
            row = dict(case_ref=ref, provider=p, request_id=digest[:16], attempts=1)
            if p in down:
                c.execute(insert(case_answers).values(**row, status="unavailable", reason="UNAVAILABLE: deadline exceeded"))
                continue
            key = SigningKey.generate(p) if p in forged else KEYS[p]
            positions, doc = list(range(4)), None
            if first and p in first:
                positions, cited = first[p]
                content = shards.build([_token(p, pos) for pos in positions] + [_token("someone else", 9)])
                env = sign_header(header_for(content, provider=p, epoch=1, data_date=dt.date(2026, 9, 1)), KEYS[p])
                doc = json.dumps({"positions": positions, "fields": list(fields), "count": 4, "data_date": cited,
                                  "filter": base64.b64encode(env.SerializeToString(deterministic=True)).decode(),
                                  "digest": header_digest(env).hex()})
            c.execute(insert(case_answers).values(
                **row, status="ok", reason="", request_digest=digest, epoch=1, directory_version=version, answered_at=RUN_AT,
                tokens=b"".join(_token(p, pos) for pos in positions), filter_first=doc,
                envelope=None if p in no_envelope else _signed(p, fields, digest, key, positions)))
        if run:
            c.execute(update(cases).where(cases.c.case_ref == ref).values(run_at=RUN_AT, status="complete"))
    return ref


# Counted: members 0, 1 and 3 (2 is dead). Monthly income, by hand:
#   wages ÷ 12:   W/12 + 12000/12 (= 1000) + 0 (no value)
#   pension ÷ 1:  0 (no record) + 300 + 500 = 800
#   deductions:   1200/12 = 100
#   net = W/12 + 1700; per capita = (W/12 + 1700) / 3; the standard for 370304 in 2026-08 is 1010.00.
@pytest.mark.parametrize("wage0,monthly,per_capita,below", [
    ("15960.00", "3130.00", "1010.00", False),   # W/12 = 1330: net 3030 / 3 = 1010 exactly — not below
    ("15959.64", "3129.97", "1009.99", True),    # 1329.97: 3029.97 / 3 = 1009.99 — a cent below
    ("15960.36", "3130.03", "1010.01", False),   # 1330.03: 3030.03 / 3 = 1010.01 — a cent above
    ("15959.88", "3129.99", "1010.00", False),   # 3029.99 / 3 = 1009.99666… rounds half-up to 1010.00
    ("15959.70", "3129.98", "1009.99", True),    # 1329.975: 3029.975 / 3 = 1009.99166… → 1009.99
])
def test_complete_case_income_per_capita_and_the_standard(engine, wage0, monthly, per_capita, below):
    ref = _case(engine, _answers(wage0, "1000.00", "0"))
    rep = build_report(engine, ref, RULES)
    assert rep["conclusion"] == "complete" and rep["complete"] is True and rep["missing"] == [] and rep["unavailable"] == []
    inc = rep["income"]
    # Σ wages over the counted members: W + 12000 (member 2's 99999 is out).
    assert inc["totals"] == {"shebao.wages": str(Decimal(wage0) + Decimal("12000.00")), "shebao.pension": "800.00"}
    assert inc["deduction_totals"] == {"shebao.insurance_paid": "1200.00"}
    assert inc["monthly_total"] == monthly            # wages ÷ 12 + pension, before deductions
    assert inc["monthly_deductions"] == "100.00"
    assert inc["per_capita_monthly"] == per_capita
    assert inc["standard"] == "1010.00"
    assert inc["below_standard"] is below
    assert rep["counted"] == [0, 1, 3]
    assert rep["excluded"] == [{"position": 2, "reason": "dead", "day": "2026-05-03", "note": None}]
    assert [m["note"] for m in rep["members"]] == [None, None, None, "no_registry_record"]
    # Household info over the counted members only: 100.50 + 200.25 (+ no record).
    assert rep["info"] == [{"label": "fund_balance", "provider": "gongjijin", "field": "fund_balance", "scope": "household",
                            "value": "300.75"}]


@pytest.mark.parametrize("car0,homes1,vehicle,vehicle_members,homes,homes_members", [
    ("99999.99", "0", "clear", [], "clear", []),         # a cent under 100000; 1 + 0 homes
    ("100000.00", "1", "set", [0], "set", [0, 1]),       # at the threshold; 1 + 1 = 2 homes
    ("100000.01", "2", "set", [0], "set", [0, 1]),       # above; 1 + 2 = 3
])
def test_complete_case_asset_flags_at_and_either_side_of_the_thresholds(engine, car0, homes1, vehicle, vehicle_members,
                                                                       homes, homes_members):
    # Member 2 (dead, not counted) has a 500000 car and 5 homes: never in scope.
    rep = build_report(engine, _case(engine, _answers("15960.00", car0, homes1)), RULES)
    assert rep["conclusion"] == "complete"
    flags = {f["flag"]: f for f in rep["assets"]}
    assert (flags["vehicle"]["state"], flags["vehicle"]["members"]) == (vehicle, vehicle_members)
    assert (flags["properties"]["state"], flags["properties"]["members"]) == (homes, homes_members)
    assert flags["properties"]["value"] == str(1 + int(homes1))
    assert flags["vehicle"]["threshold"] == "100000.00" and flags["properties"]["threshold"] == "2"


def test_report_header_members_and_evidence_from_the_store(engine):
    ref = _case(engine, _answers("15960.00", "1000.00", "0"))
    rep = build_report(engine, ref, RULES)
    assert (rep["case_ref"], rep["purpose"], rep["region"], rep["operator"]) == (ref, "dibao", "370304", "cw07")
    # Shown in China Standard Time (UTC+8): opened 2026-12-01 01:00, run 01:20.
    assert rep["created_at"] == "2026-12-01 01:00 (UTC+8)" and rep["run_at"] == "2026-12-01 01:20 (UTC+8)"
    assert (rep["reference_month"], rep["income_window"], rep["as_of"]) == ("2026-08", "2025-08..2026-07", "2026-08-31")
    # Offline, under the authority that signed the directory: the same conclusion.
    assert build_report(engine, ref, RULES, authority=AUTHORITY.public)["conclusion"] == "complete"
    assert rep["household_size"] == 4 and rep["temporary_assistance"] is None  # a dibao case has no expenditure
    assert [m["relation"] for m in rep["members"]] == RELATIONS
    assert [m["identity"] for m in rep["members"]] == [i[:6] + "********" + i[-4:] for i in IDS]
    assert all(i not in str(rep) for i in IDS)
    assert rep["departments"] == {p: f"区{p}局" for p in PROVIDERS}
    # Each department's evidence is the first 16 hex digits of SHA-256 over its signed payload.
    for p in PROVIDERS:
        got = rep["providers"][p]
        assert got["status"] == "ok" and got["signer"] == KEYS[p].public.keyid
    with engine.connect() as c:
        stored = {r.provider: common_pb2.Envelope.FromString(bytes(r.envelope)).payload
                  for r in c.execute(select(case_answers).where(case_answers.c.case_ref == ref))}
    assert {p: e["evidence"] for p, e in rep["providers"].items()} == {
        p: hashlib.sha256(payload).hexdigest()[:16] for p, payload in stored.items()}
    # The annex: every answered cell, 4 members × 8 fields of 6 departments, by department.
    assert len(rep["fields"]) == 4 * 8
    assert [r["provider"] for r in rep["fields"]] == sorted(r["provider"] for r in rep["fields"])
    dead = [r for r in rep["fields"] if r["provider"] == "huji" and r["member"] == 2]
    assert dead == [{"member": 2, "provider": "huji", "field": "registry_status", "found": True, "state": "value",
                     "present": True, "value": "死亡", "unit": "CNY", "window": None, "as_of": "2026-05-03",
                     "data_date": "2026-08-31", "evidence": rep["providers"]["huji"]["evidence"],
                     "signer": KEYS["huji"].public.keyid}]


# 24000 + 12000 + 0 (no record) + 12000 = 48000 over 4 listed members = 12000.00 per capita.
@pytest.mark.parametrize("expenditure,ratio,aid", [
    ("12000.00", "1.000", None),    # ratio 1: not above the first tier's "over"
    ("24000.00", "2.000", "A"),     # ratio 2: at most "upto" 2
    ("24000.12", "2.000", "B"),     # 2.00001: the open-ended tier
])
def test_temporary_assistance_tier_from_the_stored_expenditure(engine, expenditure, ratio, aid):
    ref = _case(engine, _answers("15960.00", "1000.00", "0"), purpose="temporary_assistance", expenditure=Decimal(expenditure))
    ta = build_report(engine, ref, RULES)["temporary_assistance"]
    assert ta["expenditure"] == expenditure and ta["last_year_per_capita"] == "12000.00" and ta["ratio"] == ratio
    assert ta["state"] == ("tier" if aid else "below_tiers")
    assert ta["aid"] == aid if aid else ta["aid"].startswith("支出未超过")


def test_missing_departments_are_listed_never_zero(engine):
    # budongchan did not answer; cheguan's answer is signed by a key the directory does not
    # list; gongjijin's (information only) is fine. Nothing concludes: no per-capita, no
    # flag, and exactly the counted members' needed cells of the two departments are missing.
    ref = _case(engine, _answers("15960.00", "1000.00", "0"), down={"budongchan"}, forged={"cheguan"})
    rep = build_report(engine, ref, RULES)
    assert rep["conclusion"] == "incomplete" and rep["complete"] is False
    assert {(g["member"], g["provider"], g["field"], g["why"]) for g in rep["missing"]} == {
        (pos, p, f, "unavailable") for pos in (0, 1, 3)
        for p, f in (("budongchan", "residential_count"), ("cheguan", "vehicle_max_price"))}
    assert len(rep["missing"]) == 6
    inc = rep["income"]
    assert inc["per_capita_monthly"] is None and inc["below_standard"] is None and inc["total"] is None
    assert inc["standard"] == "1010.00"
    assert [(f["flag"], f["state"], f["members"]) for f in rep["assets"]] == [("vehicle", "unknown", []), ("properties", "unknown", [])]
    assert [(u["provider"], u["status"]) for u in rep["unavailable"]] == [("budongchan", "unavailable"), ("cheguan", "bad_signature")]
    assert rep["unavailable"][0]["reason"] == "UNAVAILABLE: deadline exceeded"
    assert rep["unavailable"][1]["reason"].startswith("evidence does not verify: ")
    assert rep["providers"]["cheguan"] == {"status": "bad_signature", "evidence": None, "signer": None}
    assert rep["providers"]["shebao"]["status"] == "ok"
    assert not any(r["provider"] in ("budongchan", "cheguan") for r in rep["fields"])


def test_not_current_answer_is_missing_with_its_data_date(engine):
    answers = _answers("15960.00", "1000.00", "0")
    answers["shebao"]["wages"][1] = (NC, "")
    rep = build_report(engine, _case(engine, answers), RULES)
    assert rep["conclusion"] == "incomplete"
    assert [(g["member"], g["provider"], g["field"], g["why"], g["data_date"]) for g in rep["missing"]] == [
        (1, "shebao", "wages", "not_current", "2026-08-31")]
    assert rep["income"]["per_capita_monthly"] is None and {f["state"] for f in rep["assets"]} == {"unknown"}


def test_offline_check_refuses_a_directory_the_authority_did_not_sign(engine):
    # The hub's store trusts the directory it used; offline, every answer under a directory
    # signed by another key is evidence that does not verify.
    ref = _case(engine, _answers("15960.00", "1000.00", "0"), version=4)
    assert build_report(engine, ref, RULES)["conclusion"] == "complete"
    rep = build_report(engine, ref, RULES, authority=AUTHORITY.public)
    assert rep["conclusion"] == "incomplete"
    assert {p: e["status"] for p, e in rep["providers"].items()} == dict.fromkeys(PROVIDERS, "bad_signature")


def test_filter_first_members_outside_the_signed_filter_have_no_record(engine):
    # cheguan's signed filter (data date 2026-09-01) holds members 0 and 2 only: the hub asked
    # about those two; members 1 and 3 have no record as of the filter's date, with the filter
    # as evidence. Member 0's 100000.00 car sets the flag; 2 is not counted.
    ref = _case(engine, _answers("15960.00", "100000.00", "0"), first={"cheguan": ([0, 2], "2026-09-01")})
    rep = build_report(engine, ref, RULES)
    assert rep["conclusion"] == "complete"
    vehicle = next(f for f in rep["assets"] if f["flag"] == "vehicle")
    assert (vehicle["state"], vehicle["members"]) == ("set", [0])
    rows = {r["member"]: r for r in rep["fields"] if r["provider"] == "cheguan"}
    assert sorted(rows) == [0, 1, 2, 3]
    for pos in (1, 3):
        r = rows[pos]
        assert (r["found"], r["state"], r["present"], r["value"], r["data_date"]) == (False, "no_record", False, None, "2026-09-01")
        assert r["evidence"].startswith("filter:") and len(r["evidence"]) == len("filter:") + 16
    assert (rows[0]["found"], rows[0]["state"], rows[0]["value"]) == (True, "value", "100000.00")
    assert rows[2]["value"] == "500000.00"
    assert rep["providers"]["cheguan"]["status"] == "ok"


def test_filter_first_citing_another_data_date_does_not_verify(engine):
    ref = _case(engine, _answers("15960.00", "100000.00", "0"), first={"cheguan": ([0, 2], "2026-08-31")})
    rep = build_report(engine, ref, RULES)
    assert rep["providers"]["cheguan"]["status"] == "bad_signature" and rep["conclusion"] == "incomplete"
    (u,) = rep["unavailable"]
    assert (u["provider"], u["reason"]) == ("cheguan", "evidence does not verify: VERIFICATION_FAILED")  # not a signature failure


def test_an_ok_row_without_an_answer_is_evidence_that_does_not_verify_and_a_case_never_run(engine):
    ref = _case(engine, _answers("15960.00", "1000.00", "0"), no_envelope={"shebao"}, run=False)
    rep = build_report(engine, ref, RULES)
    assert rep["providers"]["shebao"]["status"] == "bad_signature"
    assert rep["unavailable"] == [{"provider": "shebao", "status": "bad_signature", "reason": "evidence does not verify: ValueError"}]
    assert rep["run_at"] is None and rep["created_at"] == "2026-12-01 01:00 (UTC+8)"


@pytest.mark.parametrize("expenditure", [None, Decimal("24000.12"), Decimal("0.01")])
def test_the_case_row_as_every_run_reads_it_equals_cores(engine, expenditure):
    """``load_case`` reads the case row on the driver's cursor on SQLite (issue 16): the same
    columns and values as a Core read, the stored expenditure a Decimal, times as stored."""
    from hedui.node.verification.report import _CASE, case_row, load_case

    ref = _case(engine, _answers("15960.00", "1000.00", "0"), purpose="temporary_assistance", expenditure=expenditure)
    with engine.connect() as c:
        core = c.execute(_CASE, {"k_case": ref}).first()
        got = case_row(c, {"k_case": ref})
        assert case_row(c, {"k_case": "HUB-1999-000001"}) is None
    assert core is not None and got is not None
    assert tuple(got) == tuple(core) and got._fields == tuple(core._fields)
    assert got.expenditure == expenditure and (expenditure is None or isinstance(got.expenditure, Decimal))
    assert got.run_at is not None and got.created_at is not None
    assert tuple(load_case(engine, ref)["case"]) == tuple(core)
