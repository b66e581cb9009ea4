"""The oracle's figures for every designed household equal the hand-computed values of
docs/acceptance-rules.md, on SQLite and PostgreSQL, at fixed reference months; the cross-check
oracle finds exactly the designed recipients."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from conftest import scratch_database
from oracle import NO_RECORD, NOT_CURRENT, OK, Federation, crosscheck, half_up_per_capita, verify

from hedui.node.testbed.departments import designed, generate

D = designed()
ITEMS = ("wages", "pension", "unemployment", "labour", "business")

# R = 2026-08: window 2025-08 … 2026-07, statuses at 2026-08-31. Items not listed are 0.00.
AUG = {
    # H1: A 12 × 4,800 = 57,600 (SS; tax's 5,200/month not counted); D 800 (2025-11) + 600
    # (2026-02) = 1,400 (2026-04 cancelled, 2026-08 is R itself). 59,000 / 12 / 2 = 2,458.333…
    "H1": dict(counted="AD", excluded={"B": "dead 2026-05-12", "C": "moved out 2025-12-20"},
               items={("A", "wages"): "57600.00", ("D", "labour"): "1400.00"}, total="59000.00", pc="2458.33",
               below=False, vehicle=(False, ""), props=(1, False, "A"), fund="37089.90"),
    # H2: quarters ending 2025-09 9,000 + 2025-12 7,500 + 2026-03 6,000 (corrected from 5,000)
    # + 2026-06 8,100 = 30,600; B 4 × 2,000; C (dies 2026-09-10) 12 × 1,650. 58,400 / 36 = 1,622.22
    "H2": dict(counted="ABC", excluded={}, items={("A", "business"): "30600.00", ("B", "labour"): "8000.00",
                                                  ("C", "pension"): "19800.00"},
               total="58400.00", pc="1622.22", below=False, vehicle=(False, ""), props=(0, False, ""), fund="0.00"),
    # H3: A wages 2026-03 … 2026-07 = 5 × 3,500; benefit 2025-08 … 2026-01 = 6 × 1,580 = 9,480;
    # B 12 × 1,320 = 15,840. 42,820 / 36 = 1,189.444… The second property was sold 2026-05-15.
    "H3": dict(counted="ABC", excluded={}, items={("A", "wages"): "17500.00", ("A", "unemployment"): "9480.00",
                                                  ("B", "pension"): "15840.00"},
               total="42820.00", pc="1189.44", below=False, vehicle=(False, ""), props=(1, False, "A"), fund="0.00"),
    "H4": dict(counted="ABC", excluded={}, items={}, total="0.00", pc="0.00", below=True, vehicle=(False, ""),
               props=(1, False, "A"), fund="0.00"),
    # H5a: 12 × 1,500 + 12 × 520.00 = 24,240.00; / 24 = 1,010.00: not below (strictly less).
    "H5a": dict(counted="AB", excluded={}, items={("A", "wages"): "18000.00", ("B", "pension"): "6240.00"},
                total="24240.00", pc="1010.00", below=False, vehicle=(True, "A"), props=(0, False, ""), fund="0.00"),
    "H5b": dict(counted="AB", excluded={}, items={("A", "wages"): "18000.00", ("B", "pension"): "6239.76"},
                total="24239.76", pc="1009.99", below=True, vehicle=(False, ""), props=(0, False, ""), fund="0.00"),
    "H5c": dict(counted="AB", excluded={}, items={("A", "wages"): "18000.00", ("B", "pension"): "6240.24"},
                total="24240.24", pc="1010.01", below=False, vehicle=(False, ""), props=(0, False, ""), fund="0.00"),
    # H5d: 21,600 + 12,000 + 2,759.82 = 36,359.82; / 36 = 1,009.995 → half-up 1,010.00.
    "H5d": dict(counted="ABC", excluded={}, items={("A", "wages"): "21600.00", ("B", "pension"): "12000.00",
                                                   ("C", "labour"): "2759.82"},
                total="36359.82", pc="1010.00", below=False, vehicle=(False, ""), props=(0, False, ""), fund="0.00"),
    # H6: fund 2023-01 … 2026-08 = 44 deposits × 1,440.00 = 63,360.00.
    "H6": dict(counted="AB", excluded={}, items={("A", "wages"): "72000.00"}, total="72000.00", pc="3000.00",
               below=False, vehicle=(True, "A"), props=(2, True, "B"), fund="63360.00"),
    "H7": dict(counted="AB", excluded={}, items={("A", "wages"): "31200.00", ("B", "pension"): "28800.00"},
               total="60000.00", pc="2500.00", below=False, vehicle=(False, ""), props=(0, False, ""), fund="0.00"),
}

# R = 2026-03: window 2025-03 … 2026-02 (across the year end), statuses at 2026-03-31.
MAR = {
    # H1: B alive then: 12 × 2,100 = 25,200. 84,200 / 36 = 2,338.888… Fund: 27 × 1,152 + 15.30 + 210.60.
    "H1": dict(AUG["H1"], counted="ABD", excluded={"C": "moved out 2025-12-20"},
               items={("A", "wages"): "57600.00", ("B", "pension"): "25200.00", ("D", "labour"): "1400.00"},
               total="84200.00", pc="2338.89", fund="31329.90"),
    # H2: quarters ending 2025-03 5,400 + 2025-06 6,600 + 2025-09 9,000 + 2025-12 7,500 = 28,500.
    "H2": dict(AUG["H2"], items={("A", "business"): "28500.00", ("B", "labour"): "4000.00",
                                 ("C", "pension"): "19800.00"}, total="52300.00", pc="1452.78"),
    # H3: wages 2025-03, 2025-04 = 6,400; benefit 2025-06 … 2026-01 = 8 × 1,580 = 12,640;
    # 34,880 / 36 = 968.888… below. Both properties still held on 2026-03-31.
    "H3": dict(AUG["H3"], items={("A", "wages"): "6400.00", ("A", "unemployment"): "12640.00",
                                 ("B", "pension"): "15840.00"}, total="34880.00", pc="968.89", below=True,
               props=(2, True, "A")),
    "H4": AUG["H4"], "H5a": AUG["H5a"], "H5b": AUG["H5b"], "H5c": AUG["H5c"], "H5d": AUG["H5d"],
    "H6": dict(AUG["H6"], fund="56160.00"),
    # H7: the 15.000000 vehicle was transferred out only on 2026-05-20.
    "H7": dict(AUG["H7"], vehicle=(True, "A")),
}


@pytest.fixture(scope="module")
def sqlite_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("depts")
    generate(folder)
    return folder


@pytest.fixture(scope="module")
def pg_depts(pg_admin):
    with scratch_database(pg_admin) as url:
        generate(None, url)
        yield url


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fed(request):
    f = (Federation.sqlite(request.getfixturevalue("sqlite_dir")) if request.param == "sqlite"
         else Federation.postgres(request.getfixturevalue("pg_depts")))
    yield f
    f.close()


def _ids(key: str, roles: str) -> list[str]:
    return [D.people[f"{key}.{r}"].id18 for r in roles]


@pytest.mark.parametrize("ref, expected", [("2026-08", AUG), ("2026-03", MAR)], ids=["2026-08", "2026-03"])
def test_designed_household_figures(fed, ref, expected):
    for key, e in expected.items():
        r = verify(fed, D.members(key), ref)
        assert r.complete and not r.missing, key
        assert r.counted == _ids(key, e["counted"]), key
        for role, reason in e["excluded"].items():
            m = r.member(D.people[f"{key}.{role}"].id18)
            assert (m.counted, m.reason) == (False, reason), (key, role)
        for role in e["counted"]:
            m = r.member(D.people[f"{key}.{role}"].id18)
            for item in ITEMS:
                want = Decimal(e["items"].get((role, item), "0.00"))
                assert m.income[item].value == want, (key, role, item)
        assert r.total == Decimal(e["total"]), key
        assert r.per_capita == Decimal(e["pc"]), key
        assert r.below_standard is e["below"], key
        assert (r.vehicle_flag, r.vehicle_by) == (e["vehicle"][0], _ids(key, e["vehicle"][1])), key
        assert (r.property_count, r.property_flag, r.property_by) == (e["props"][0], e["props"][1],
                                                                      _ids(key, e["props"][2])), key
        assert r.fund_balance == Decimal(e["fund"]), key


def test_windows_and_statuses_carry_their_dates(fed):
    r = verify(fed, D.members("H3"), "2026-03")
    assert r.window == (202503, 202602) and r.ref_end == date(2026, 3, 31)
    a = r.member(D.people["H3.A"].id18)
    assert a.income["wages"].window == (202503, 202602) and a.vehicles.as_of == date(2026, 3, 31)
    assert a.income["labour"].status == NO_RECORD and a.income["labour"].value == Decimal("0.00")
    assert a.income["unemployment"].data_date == date(2026, 10, 31)
    assert a.income["business"].data_date == date(2026, 9, 30)      # tax: periods filed to 2026-09


def test_information_figures(fed):
    b = verify(fed, D.members("H2"), "2026-08").member(D.people["H2.B"].id18)
    # S1 (350.00) cancelled, S2 re-settled 320.00, S3 and S4 same day and amount 120.50 each,
    # inpatient 4,800.00: 4 settlements, 5,361.00.
    assert (b.medical_settlements.value, b.medical_own.value) == (4, Decimal("5361.00"))
    b = verify(fed, D.members("H2"), "2026-03").member(D.people["H2.B"].id18)
    assert (b.medical_settlements.value, b.medical_own.value) == (1, Decimal("4800.00"))
    for ref in ("2026-08", "2026-03"):
        g = verify(fed, D.members("H3"), ref).member(D.people["H3.B"].id18)
        assert (g.certificates.value, g.grade.value) == (1, "三级")     # a replacement, not a 2nd certificate


def test_member_in_no_department_is_counted_with_no_record(fed):
    r = verify(fed, D.members("H4"), "2026-08")
    c = r.member(D.people["H4.C"].id18)
    assert (c.counted, c.reason, c.registry.status) == (True, "no registry record", NO_RECORD)
    assert all(f.status == NO_RECORD for f in (*c.income.values(), c.vehicles, c.properties, c.fund_balance))


def test_reference_month_after_the_extract_is_not_current(fed):
    for key in D.households:
        r = verify(fed, D.members(key), "2026-11")
        assert not r.complete and r.counted is None and r.per_capita is None and r.below_standard is None, key
        assert r.total is None and r.vehicle_flag is None and r.property_flag is None, key
        for m in r.members:
            assert m.registry.status == NOT_CURRENT and m.income["labour"].status == NOT_CURRENT
            assert m.income["wages"].status in (OK, NO_RECORD)          # window 2025-11 … 2026-10: covered
        assert {(d, f) for _, f, d in r.missing} >= {("huji", "registry")}
    a = verify(fed, D.members("H1"), "2026-11").member(D.people["H1.A"].id18)
    assert a.income["wages"].value == Decimal("57600.00") and a.income["labour"].value is None


def test_window_ending_on_the_last_covered_tax_period(fed):
    # R = 2026-10: window 2025-10 … 2026-09, exactly the tax data's last period; H4's wages of
    # 2026-08 and 2026-09 (2 × 3,100) now count: 6,200 / 36 = 172.22.
    r = verify(fed, D.members("H4"), "2026-10")
    assert r.complete and r.total == Decimal("6200.00") and r.per_capita == Decimal("172.22")


def test_crosscheck_finds_exactly_the_designed_recipients(fed):
    cc = crosscheck(fed, date(2026, 10, 31))
    by_id = {p.id18: k for k, p in D.people.items()}
    assert {by_id.get(i, "background"): v for i, v in cc.hits.items()} == {k: set(v) for k, v in D.hits.items()}
    assert cc.counts() == {"dead": 2, "vehicle": 4, "property": 3}
    assert D.people["X16"].id18 not in cc.population                 # assistance stopped 2026-06
    assert D.people["X14"].id18 not in cc.population
    x14_family = D.recipients["X14"].assistance[0].family_no
    assert x14_family in {f for f, _ in cc.invalid}
    assert set(cc.towns) == set(cc.hits) and all(t.startswith("370303") for t in cc.towns.values())


def test_crosscheck_is_as_of_its_day(fed):
    cc = crosscheck(fed, date(2026, 3, 1))
    by_id = {p.id18: k for k, p in D.people.items()}
    hits = {by_id[i]: v for i, v in cc.hits.items() if i in by_id}
    assert hits["X8"] == {"vehicle"}                 # not yet transferred out (2026-03-15)
    assert "X1" not in hits and hits["X11"] == {"dead", "property"}
    assert "X2" in hits                              # bought 2025-12-28


@pytest.mark.parametrize("total, n, want", [(2424000, 2, "1010.00"), (3635982, 3, "1010.00"), (3635946, 3, "1009.99"),
                                            (0, 3, "0.00"), (1, 1, "0.00"), (6, 1, "0.01")])
def test_half_up_per_capita(total, n, want):
    assert half_up_per_capita(total, 12, n) == Decimal(want)
