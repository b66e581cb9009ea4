"""The mapping language on the realistic department databases (docs/department-data.md), on
SQLite and PostgreSQL: filters, joins, declared period formats, text codes, spans (until),
skipped rows, data dates — every figure compared with straight SQL over the same database and
identities canonicalised by the oracle's own GB 11643 code (tests/oracle/ids.py), not Hedui's."""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections import Counter, defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from oracle import canonical
from sqlalchemy import create_engine, text

from hedui.adapters import idnum, open_adapter
from hedui.adapters.mapping import parse_mapping
from hedui.adapters.records import Record, RowProblem
from hedui.node.errors import ConfigError
from hedui.node.testbed.departments import generate

E = date(2026, 10, 31)   # the extract date the generator uses by default


class Depts:
    """The nine databases on one backend: mapping URLs/table names and straight SQL."""

    def __init__(self, kind: str, folder: Path | None = None, pg: str | None = None) -> None:
        self.kind, self.folder, self.pg = kind, folder, pg

    def url(self, dept: str) -> str:
        return f"sqlite:///{self.folder / f'{dept}.sqlite'}" if self.kind == "sqlite" else str(self.pg)

    def t(self, dept: str, table: str) -> str:
        """A table as a mapping names it: schema-qualified on PostgreSQL."""
        return table if self.kind == "sqlite" else f"{dept}.{table}"

    def sql(self, dept: str, query: str) -> list[tuple]:
        if self.kind == "sqlite":
            con = sqlite3.connect(self.folder / f"{dept}.sqlite")
            try:
                return con.execute(query).fetchall()
            finally:
                con.close()
        eng = create_engine(str(self.pg))
        try:
            with eng.connect() as c:
                c.execute(text(f"SET search_path TO {dept}"))
                return [tuple(r) for r in c.execute(text(query)).all()]
        finally:
            eng.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def depts(request, tmp_path_factory):
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("depts")
        generate(folder, residents=200)
        yield Depts("sqlite", folder=folder)
        return
    admin = request.getfixturevalue("pg_admin")
    from conftest import PG_ADMIN_URL

    name = f"hedui_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    generate(None, url, residents=200)
    yield Depts("postgres", pg=url)
    with admin.connect() as c:
        c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


def _scan(depts: Depts, dept: str, m: dict):
    m = {"name": dept, **m}
    m["source"] = {"kind": "sql", "url": depts.url(dept), **m["source"]}
    a = open_adapter(parse_mapping(m))
    a.check()
    items = list(a.records())
    recs = [i for i in items if isinstance(i, Record)]
    probs = [i for i in items if isinstance(i, RowProblem)]
    for p in probs:
        assert not idnum.contains(p.reason) and not idnum.long_digit_run(p.reason), p.reason
    return a, recs, probs


def _month(n: int | str) -> date:
    n = int(n)
    return date(n // 100, n % 100, 1)


def _ymd(s: str) -> date:
    return date(int(s[:4]), int(s[4:6]), int(s[6:8]))


# --- shebao: wages (join, filters on text codes, INTEGER YYYYMM, fen) ---------------------------

def test_shebao_wages_join_filter_yyyymm(depts):
    a, recs, probs = _scan(depts, "shebao", {
        "source": {"table": depts.t("shebao", "ac43"), "primary_key": "aaz223",
                   "joins": [{"table": depts.t("shebao", "ac01"), "on": "ac43.aac001 = ac01.aac001"}],
                   "where": {"aae100": "1", "aae140": "110"}, "data_date": {
                       "table": depts.t("shebao", "sjtq"), "column": "sjjzny", "format": "YYYYMM"}},
        "identity": {"column": "ac01.aac002"},
        "facts": [{"name": "wage", "column": "aic020", "type": "money", "unit": "fen",
                   "date": {"column": "aae002", "format": "YYYYMM"}, "attrs": {"insurance": "aae140"}}],
    })
    rows = depts.sql("shebao", "SELECT p.aac002, w.aae002, w.aic020 FROM ac43 w JOIN ac01 p ON p.aac001 = w.aac001 "
                               "WHERE w.aae100 = '1' AND w.aae140 = '110'")
    want: dict[tuple[str, date], Decimal] = defaultdict(Decimal)
    bad = 0
    for idn, period, amount in rows:
        c = canonical(idn)
        if c is None:
            bad += 1
            continue
        want[(c, _month(period))] += Decimal(amount) / 100
    got: dict[tuple[str, date], Decimal] = defaultdict(Decimal)
    for r in recs:
        for f in r.facts:
            assert f.attrs == {"insurance": "110"} and f.unit == "CNY" and f.on and f.on.day == 1
            got[(r.identity, f.on)] += f.value  # type: ignore[operator]
    assert got == want and len(want) > 100
    assert len(probs) == bad
    (total,) = depts.sql("shebao", "SELECT count(*) FROM ac43")[0]
    assert a.skipped == total - len(rows) > 0           # skipped rows are counted, not problems
    assert a.data_date() == date(2026, 10, 31)          # YYYYMM 202610 → its last day


def test_shebao_pensions_text_yyyymm_and_returned_payments(depts):
    _, recs, _ = _scan(depts, "shebao", {
        "source": {"table": depts.t("shebao", "ac84"), "primary_key": "aaz220",
                   "joins": [{"table": depts.t("shebao", "ac01"), "on": "ac84.aac001 = ac01.aac001"}],
                   "where": {"aae117": {"ne": "2"}}},
        "identity": {"column": "ac01.aac002"},
        "facts": [{"name": "pension", "column": "aae019", "type": "money", "unit": "yuan",
                   "date": {"column": "aae003", "format": "YYYYMM"}}],
    })
    rows = depts.sql("shebao", "SELECT p.aac002, sum(CAST(ROUND(b.aae019 * 100) AS BIGINT)) FROM ac84 b "
                               "JOIN ac01 p ON p.aac001 = b.aac001 WHERE b.aae117 = '1' GROUP BY p.aac002")
    want = {canonical(i): Decimal(s) / 100 for i, s in rows if canonical(i)}
    got: dict[str, Decimal] = defaultdict(Decimal)
    for r in recs:
        for f in r.facts:
            got[r.identity] += f.value  # type: ignore[operator]
    assert got == want and want


def test_jc04_until_inclusive(depts):
    _, recs, _ = _scan(depts, "shebao", {
        "source": {"table": depts.t("shebao", "jc04"), "primary_key": "aaz159",
                   "joins": [{"table": depts.t("shebao", "ac01"), "on": "jc04.aac001 = ac01.aac001"}]},
        "identity": {"column": "ac01.aac002"},
        "facts": [{"name": "unemployment_benefit", "column": "ajc090", "type": "money", "unit": "yuan",
                   "date": "aae030", "until": {"column": "aae031", "inclusive": True}}],
    })
    rows = depts.sql("shebao", "SELECT p.aac002, j.aae030, j.aae031, j.ajc090 FROM jc04 j "
                               "JOIN ac01 p ON p.aac001 = j.aac001")
    want = sorted((canonical(i), str(s)[:10], None if u is None else str(u)[:10], Decimal(str(v)).quantize(Decimal("0.01")))
                  for i, s, u, v in rows if canonical(i))
    got = sorted((r.identity, f.on.isoformat(), f.until.isoformat() if f.until else None, f.value)  # type: ignore[union-attr]
                 for r in recs for f in r.facts)
    assert got == want and any(u for *_, u, _v in got)


# --- shuiwu: text item codes, padded identities, a period as YYYYMM text ---------------------

def test_shuiwu_items_keep_their_text(depts):
    a, recs, probs = _scan(depts, "shuiwu", {
        "source": {"table": depts.t("shuiwu", "sb_grsds_mx"), "primary_key": "mxxh", "where": {"sbzt": "1"},
                   "data_date": {"table": depts.t("shuiwu", "sj_tqxx"), "column": "sjjzq", "format": "YYYYMM"}},
        "identity": {"column": "sfzjhm"},
        "facts": [{"name": "income", "column": "sre", "type": "money", "unit": "yuan",
                   "date": {"column": "skssqz", "format": "YYYYMM"}, "attrs": {"item": "sdxmdm", "voucher": "pzxh"}},
                  {"name": "item", "column": "sdxmdm", "type": "code", "where": {"sdxmdm": {"ne": "0101"}}}],
    })
    rows = depts.sql("shuiwu", "SELECT sfzjhm, sdxmdm, sum(CAST(ROUND(sre * 100) AS BIGINT)), count(*) FROM sb_grsds_mx "
                               "WHERE sbzt = '1' GROUP BY sfzjhm, sdxmdm")
    want: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    items: Counter = Counter()
    for i, item, s, n in rows:
        if canonical(i):
            want[(canonical(i), item)] += Decimal(s) / 100
            if item != "0101":
                items[(canonical(i), item)] += n
    got: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    got_items: Counter = Counter()
    for r in recs:
        for f in r.facts:
            if f.name == "income":
                got[(r.identity, f.attrs["item"])] += f.value  # type: ignore[operator]
            else:
                assert f.unit == "code" and isinstance(f.value, str)
                got_items[(r.identity, f.value)] += 1
    assert got == want and {k[1] for k in want} >= {"0101", "0400", "0600"}
    assert got_items == items and "0400" in {k[1] for k in items}   # the leading zero is kept
    assert a.data_date() == date(2026, 9, 30)   # tax is one period behind


# --- budongchan: holders joined to rights, organisations skipped, exclusive until ------------

def test_budongchan_residential_held_on_a_day(depts):
    a, recs, probs = _scan(depts, "budongchan", {
        "source": {"table": depts.t("budongchan", "qlr"), "primary_key": "qlrid",
                   "joins": [{"table": depts.t("budongchan", "fdcq"), "on": "qlr.ywh = fdcq.ywh"}],
                   "data_date": {"table": depts.t("budongchan", "tq_pc"), "column": "jzrq", "format": "YYYYMMDD"}},
        "identity": {"column": "zjh", "skip_where": {"zjzl": {"in": ["7"]}}},
        "facts": [{"name": "residential", "column": "fdcq.jzmj", "type": "decimal", "unit": "m2",
                   "date": {"column": "fdcq.djsj", "format": "YYYYMMDD"},
                   "until": {"column": "fdcq.zxsj", "format": "YYYYMMDD"},
                   "where": {"fdcq.ghyt": "住宅"}, "attrs": {"unit": "fdcq.bdcdyh"}}],
    })
    rows = depts.sql("budongchan", "SELECT q.zjh, f.djsj, f.zxsj, f.bdcdyh FROM qlr q JOIN fdcq f ON f.ywh = q.ywh "
                                   "WHERE f.ghyt = '住宅' AND q.zjzl <> '7'")
    for day in (E, date(2025, 12, 31), date(2026, 1, 1)):
        want = Counter(canonical(i) for i, on, until, _ in rows
                       if canonical(i) and _ymd(on) <= day and (until is None or _ymd(until) > day))
        got = Counter(r.identity for r in recs for f in r.facts
                      if f.on <= day and (f.until is None or f.until >= day))  # type: ignore[operator]
        assert got == want and sum(want.values()) > 10
    # until is the last day held: the cancellation day minus one.
    ends = {(canonical(i), u) for i, _, u, _ in rows if canonical(i) and u}
    assert ends and ends == {(r.identity, (f.until + timedelta(days=1)).strftime("%Y%m%d"))  # type: ignore[operator]
                             for r in recs for f in r.facts if f.until}
    (orgs,) = depts.sql("budongchan", "SELECT count(*) FROM qlr WHERE zjzl = '7'")[0]
    assert a.skipped == orgs > 0
    assert all("identity" in p.reason for p in probs)   # only the identity column is an identity number
    assert a.data_date() == date(2026, 10, 31)


# --- cheguan: organisations' vehicles skipped, datetime text, 万元 -----------------------------

def test_cheguan_vehicles_of_persons(depts):
    a, recs, probs = _scan(depts, "cheguan", {
        "source": {"table": depts.t("cheguan", "jdc"), "primary_key": "xh",
                   "data_date": {"table": depts.t("cheguan", "sjtq"), "column": "sjjzrq"}},
        "identity": {"column": "sfzmhm", "skip_where": {"sfzmmc": {"ne": "A"}}},
        "facts": [{"name": "vehicle", "column": "gzjg", "type": "money", "unit": "wan_yuan",
                   "date": {"column": "djrq", "format": "datetime"}, "optional": False,
                   "until": {"column": "zxrq", "format": "datetime"}, "attrs": {"status": "zt"},
                   "where": {"djrq": {"null": False}}},
                  {"name": "vehicle", "column": "gzjg", "type": "money", "unit": "wan_yuan",
                   "date": {"column": "ccdjrq", "format": "datetime"},
                   "until": {"column": "zxrq", "format": "datetime"}, "attrs": {"status": "zt"},
                   "where": {"djrq": {"null": True}}}],
    })
    rows = depts.sql("cheguan", "SELECT sfzmhm, CAST(round(gzjg * 1000000) AS BIGINT) FROM jdc WHERE sfzmmc = 'A'")
    want = sorted((canonical(i), Decimal(v) / 100) for i, v in rows if canonical(i))
    got = sorted((r.identity, f.value * 100 // 1 / 100) for r in recs for f in r.facts)  # type: ignore[operator]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert all(abs(g[1] - w[1]) < Decimal("0.01") for g, w in zip(got, want))
    assert all(len(r.facts) == 1 for r in recs)   # exactly one of the two facts per row
    (orgs,) = depts.sql("cheguan", "SELECT count(*) FROM jdc WHERE sfzmmc <> 'A'")[0]
    assert a.skipped == orgs > 0 and len(probs) == len(rows) - len(want)
    assert a.data_date() == date(2026, 10, 31)


# --- huji: the change table (YYYYMMDD text), status as a code ---------------------------------

def test_huji_status_on_a_day(depts):
    a, recs, _ = _scan(depts, "huji", {
        "source": {"table": depts.t("huji", "RK_BDJL"), "primary_key": "BDID",
                   "data_date": {"table": depts.t("huji", "SJ_TQPC"), "column": "SJJZRQ"}},
        "identity": {"column": "GMSFHM"},
        "facts": [{"name": "registry_status", "column": "BDHZT", "type": "code",
                   "date": {"column": "BDRQ", "format": "YYYYMMDD"}, "attrs": {"change": "BDLX"}}],
    })
    rows = depts.sql("huji", 'SELECT "GMSFHM", "BDRQ", "BDID", "BDHZT" FROM "RK_BDJL"')
    for day in (E, date(2026, 5, 12), date(2025, 12, 31)):
        latest: dict[str, tuple] = {}
        for i, on, bdid, status in rows:
            if canonical(i) and _ymd(on) <= day:
                latest[canonical(i)] = max(latest.get(canonical(i), ("", 0, "")), (on, bdid, status))
        got: dict[str, tuple] = {}
        for r in recs:
            for f in r.facts:
                if f.on <= day:  # type: ignore[operator]
                    key = (f.on.strftime("%Y%m%d"), int(r.locator.rpartition("=")[2]), f.value)  # type: ignore[union-attr]
                    got[r.identity] = max(got.get(r.identity, ("", 0, "")), key)
        assert {k: v[2] for k, v in got.items()} == {k: v[2] for k, v in latest.items()}
        assert {"正常", "死亡", "迁出"} <= {v[2] for v in latest.values()} or day != E
    assert a.data_date() == E


# --- long numbers that are not identity numbers ----------------------------------------------

def test_long_numbers_in_attributes_are_data(depts):
    _, recs, probs = _scan(depts, "yibao", {
        "source": {"table": depts.t("yibao", "setl_d"), "primary_key": "setl_id",
                   "joins": [{"table": depts.t("yibao", "psn_info"), "on": "setl_d.psn_no = psn_info.psn_no"}]},
        "identity": {"column": "psn_info.certno"},
        "facts": [{"name": "medical", "column": "psn_pay", "type": "money", "unit": "fen",
                   "date": {"column": "setl_time", "format": "datetime"},
                   "attrs": {"settlement": "setl_id", "visit": "mdtrt_id", "cancels": "init_setl_id"}}],
    })
    rows = depts.sql("yibao", "SELECT s.setl_id, i.certno FROM setl_d s JOIN psn_info i ON i.psn_no = s.psn_no")
    ok = {s for s, c in rows if canonical(c)}
    assert len(probs) == len(rows) - len(ok)   # problems are identity problems only
    got = {f.attrs["settlement"] for r in recs for f in r.facts}
    assert got == ok and all(len(s) == 24 for s in got)
    _, recs, probs = _scan(depts, "canlian", {
        "source": {"table": depts.t("canlian", "cjrz_ffjl"), "primary_key": "ffid",
                   "joins": [{"table": depts.t("canlian", "cjr_jbxx"), "on": "cjrz_ffjl.cjrid = cjr_jbxx.cjrid"}],
                   "where": {"zxbz": {"ne": "1"}}},
        "identity": {"column": "cjr_jbxx.sfzh"},
        "facts": [{"name": "certificate", "column": "cjdj", "type": "code", "date": "fzrq",
                   "attrs": {"certificate": "cjrzh", "kind": "cjlb"}}],
    })
    certs = [f.attrs["certificate"] for r in recs for f in r.facts]
    # The certificate number is the holder's identity number and two digits: kept distinct, masked.
    assert certs and all(c.startswith("[id]") and len(c) == 6 for c in certs)
    rows = depts.sql("canlian", "SELECT c.sfzh, count(DISTINCT f.cjrzh) FROM cjrz_ffjl f JOIN cjr_jbxx c "
                                "ON c.cjrid = f.cjrid WHERE f.zxbz <> '1' GROUP BY c.sfzh")
    want = {canonical(i): n for i, n in rows if canonical(i)}
    got_n: dict[str, set] = defaultdict(set)
    for r in recs:
        for f in r.facts:
            got_n[r.identity].add(f.attrs["certificate"])
    assert {k: len(v) for k, v in got_n.items()} == want


# --- check(): every column named anywhere exists ----------------------------------------------

@pytest.mark.parametrize("edit, key", [
    (lambda m: m["source"].update(where={"aae100x": "1"}), "source.where: got column 'aae100x'"),
    (lambda m: m["identity"].update(skip_where={"ac01.nope": "1"}), "identity.skip_where: got column 'nope'"),
    (lambda m: m["facts"][0].update(where={"zz.aae140": "1"}), "facts[0].where: got table 'zz'"),
    (lambda m: m["facts"][0].update(until={"column": "aae031"}), "facts[0].until: got column 'aae031'"),
    (lambda m: m["facts"][0].update(date={"column": "aae003", "format": "YYYYMM"}), "facts[0].date: got column 'aae003'"),
    (lambda m: m["source"].update(data_date={"table": "sjtqx", "column": "sjjzny"}), "source.data_date.table: got 'sjtqx'"),
    (lambda m: m["source"].update(data_date={"table": "sjtq", "column": "jzny"}),
     "source.data_date.column: got column 'jzny'"),
    (lambda m: m["facts"][0].update(until={"column": "ac01.aae036", "format": "YYYYMMDD"}),
     "facts[0].until.format: got 'YYYYMMDD' for the TIMESTAMP column ac01.aae036, want 'date' or 'datetime'"),
    (lambda m: m["source"]["joins"].append({"table": "ac01", "on": "ac43.aac001 = ac01.aac001"}),
     "source.joins[1].as: got nothing for a second ac01"),
    (lambda m: m["source"]["joins"].append({"table": "ac01", "as": "p2", "on": "ac43.aac001 = ac01.aac001"}),
     "source.joins[1].on: got no column of p2"),
])
def test_check_names_every_missing_column(tmp_path, edit, key):
    folder = tmp_path / "d"
    generate(folder, residents=0)
    m = {"name": "w", "source": {"kind": "sql", "url": f"sqlite:///{folder / 'shebao.sqlite'}", "table": "ac43",
                                 "primary_key": "aaz223", "joins": [{"table": "ac01", "on": "ac43.aac001 = ac01.aac001"}]},
         "identity": {"column": "ac01.aac002"},
         "facts": [{"name": "wage", "column": "aic020", "type": "money", "unit": "fen",
                    "date": {"column": "aae002", "format": "YYYYMM"}}]}
    open_adapter(parse_mapping(m)).check()
    edit(m)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("(", r"\(")):
        open_adapter(parse_mapping(m)).check()


def test_bad_periods_are_row_problems_that_name_the_format(tmp_path):
    db = tmp_path / "p.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE pay (id INTEGER PRIMARY KEY, idno TEXT, ym TEXT, amt INTEGER)")
    import random

    from hedui.adapters.idnum import synthetic

    ids = [synthetic(random.Random(i)) for i in range(6)]
    con.executemany("INSERT INTO pay VALUES (?, ?, ?, ?)", [
        (1, ids[0], "202602", 100), (2, ids[1], "202613", 100), (3, ids[2], "00000000", 100),
        (4, ids[3], "２０２４０２", 100), (5, ids[4], ids[5], 100), (6, ids[5], None, 100)])
    con.commit()
    con.close()
    m = parse_mapping({"name": "p", "source": {"kind": "sql", "url": f"sqlite:///{db}", "table": "pay", "primary_key": "id"},
                       "identity": {"column": "idno"},
                       "facts": [{"name": "wage", "column": "amt", "type": "money", "unit": "fen",
                                  "date": {"column": "ym", "format": "YYYYMM"}}]})
    items = {i.locator: i for i in open_adapter(m).records()}
    assert items["pay:id=1"].facts[0].on == date(2026, 2, 1)  # type: ignore[union-attr]
    assert items["pay:id=4"].facts[0].on == date(2024, 2, 1)  # type: ignore[union-attr]  # full-width digits
    assert items["pay:id=2"].reason == "wage.date: got '202613' (no month 13), want YYYYMM"  # type: ignore[union-attr]
    assert items["pay:id=3"].reason == "wage.date: got '00000000', want YYYYMM"  # type: ignore[union-attr]
    assert items["pay:id=5"].reason == "wage.date: got text that is not YYYYMM, want YYYYMM"  # type: ignore[union-attr]
    assert items["pay:id=6"].reason == "wage.date: got an empty cell, want YYYYMM"  # type: ignore[union-attr]


# --- the documented examples work on the department databases as written ----------------------

def test_documented_mappings_run_on_the_department_databases(depts, monkeypatch):
    import re
    import tomllib

    doc = (Path(__file__).resolve().parent.parent / "docs" / "department-it.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Mapping your data"):doc.index("### CSV or Excel export")]
    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", section, re.S)]
    blocks = [b for b in blocks if "source" in b and "name" in b]
    assert len(blocks) >= 7
    for b in blocks:
        dept = b["source"]["url_env"].removesuffix("_URL").lower()
        monkeypatch.setenv(b["source"]["url_env"], depts.url(dept))
        src = b["source"]
        src["table"] = depts.t(dept, src["table"])
        for j in src.get("joins", []):
            j["table"] = depts.t(dept, j["table"])
        if isinstance(src.get("data_date"), dict):
            src["data_date"]["table"] = depts.t(dept, src["data_date"]["table"])
        a = open_adapter(parse_mapping(b, origin=b["name"]))
        a.check()
        items = list(a.records())
        recs = [i for i in items if isinstance(i, Record)]
        assert recs and sum(len(r.facts) for r in recs) > 0, b["name"]
        assert all(i.reason.startswith("identity:") for i in items if isinstance(i, RowProblem)), b["name"]
        assert a.data_date() in (E, date(2026, 9, 30)), b["name"]


def test_self_join_keeps_valid_settlements_only(depts):
    """yibao: a cancellation is a separate row naming the settlement it cancels; a valid
    settlement is neither (acceptance-rules.md "Shown for information"): a self-join under
    another name (``as``) and a null test on it."""
    a, recs, probs = _scan(depts, "yibao", {
        "source": {"table": depts.t("yibao", "setl_d"), "primary_key": "setl_id",
                   "joins": [{"table": depts.t("yibao", "psn_info"), "on": "setl_d.psn_no = psn_info.psn_no"},
                             {"table": depts.t("yibao", "setl_d"), "as": "cx", "on": "setl_d.setl_id = cx.init_setl_id"}],
                   "where": {"refd_setl_flag": "0", "vali_flag": "1", "cx.setl_id": {"null": True}}},
        "identity": {"column": "psn_info.certno"},
        "facts": [{"name": "medical_own", "column": "setl_d.psn_pay", "type": "money", "unit": "fen",
                   "date": {"column": "setl_d.setl_time", "format": "datetime"},
                   "attrs": {"settlement": "setl_d.setl_id"}}],
    })
    rows = depts.sql("yibao", "SELECT i.certno, s.setl_id, s.psn_pay FROM setl_d s JOIN psn_info i ON i.psn_no = s.psn_no "
                              "WHERE s.refd_setl_flag = '0' AND s.vali_flag = '1' AND NOT EXISTS "
                              "(SELECT 1 FROM setl_d c WHERE c.init_setl_id = s.setl_id)")
    want = sorted((canonical(i), s, Decimal(p) / 100) for i, s, p in rows if canonical(i))
    got = sorted((r.identity, f.attrs["settlement"], f.value) for r in recs for f in r.facts)
    assert got == want and len(want) > 20
    (n,) = depts.sql("yibao", "SELECT count(*) FROM setl_d")[0]
    assert a.skipped + len(rows) == n and a.skipped > 28   # the cancellations and what they cancel
    assert len(probs) == len(rows) - len(want)


# --- source.where pushed into SQL where it cannot change the result ----------------------------

def test_integer_filters_are_pushed_into_sql(depts):
    m = {"source": {"table": depts.t("shebao", "ac43"), "primary_key": "aaz223",
                    "joins": [{"table": depts.t("shebao", "ac01"), "on": "ac43.aac001 = ac01.aac001"}],
                    "where": {"aae002": {"ge": 202511, "lt": "202611"}, "aae100": "1", "aae140": ["110"]}},
         "identity": {"column": "ac01.aac002"},
         "facts": [{"name": "wage", "column": "aic020", "type": "money", "unit": "fen",
                    "date": {"column": "aae002", "format": "YYYYMM"}}]}
    a, recs, probs = _scan(depts, "shebao", m)
    stmt = str(a._plan["stmt"])   # type: ignore[attr-defined]
    assert "aae002 >=" in stmt and "aae002 <" in stmt and "aae100" not in stmt.split("WHERE", 1)[-1]
    rows = depts.sql("shebao", "SELECT p.aac002, w.aic020 FROM ac43 w JOIN ac01 p ON p.aac001 = w.aac001 "
                               "WHERE w.aae100 = '1' AND w.aae140 = '110' AND w.aae002 >= 202511 AND w.aae002 < 202611")
    want = sorted((canonical(i), Decimal(v) / 100) for i, v in rows if canonical(i))
    assert sorted((r.identity, f.value) for r in recs for f in r.facts) == want and want
    (total,) = depts.sql("shebao", "SELECT count(*) FROM ac43")[0]
    assert a.skipped == total - len(rows) and len(probs) == len(rows) - len(want)
    # Resuming from any position counts what lies after it.
    items = list(a.scan())
    cut = len(items) // 2
    rest = list(a.scan(items[cut][1]))
    assert [i for i, _ in rest] == [i for i, _ in items[cut + 1:]]
    (after,) = depts.sql("shebao", f"SELECT count(*) FROM ac43 WHERE aaz223 > {int(items[cut][1]['pk'])}")[0]
    assert a.skipped == after - len(rest)


def test_prefilter_on_sqlite_integer_columns_holding_anything(tmp_path):
    """SQLite keeps text, reals and NULLs in an INTEGER column: the prefilter leaves those to
    the filter's own rule, so the result is what the rule says for every cell."""
    from hedui.adapters.filters import matches, parse_where

    db = tmp_path / "h.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE h (id INTEGER PRIMARY KEY, idno TEXT, n INTEGER)")
    cells = [5, 6, 7, "7", "07", "abc", "７", 6.5, 7.0, None, "", " 8 ", -1, 10**12, "1e1", b"\x07"]
    ids = [idnum.synthetic(random.Random(i)) for i in range(len(cells))]
    con.executemany("INSERT INTO h VALUES (?, ?, ?)", [(i + 1, ids[i], c) for i, c in enumerate(cells)])
    con.commit()
    stored = con.execute("SELECT id, n FROM h").fetchall()
    con.close()
    for where in ({"n": {"ge": 6}}, {"n": {"gt": 6, "le": 8}}, {"n": [7, 8]}, {"n": {"not_in": [7]}},
                  {"n": {"ne": 6}}, {"n": {"lt": "7"}}, {"n": {"null": False}}, {"n": {"eq": "abc"}}):
        m = parse_mapping({"name": "h", "source": {"kind": "sql", "url": f"sqlite:///{db}", "table": "h",
                                                   "primary_key": "id", "where": where},
                           "identity": {"column": "idno"}, "facts": []})
        a = open_adapter(m)
        got = sorted(int(i.locator.rpartition("=")[2]) for i in a.records())
        want = sorted(rid for rid, n in stored if matches(parse_where(where), {"n": n}.get))
        assert got == want, where
        assert a.skipped == len(cells) - len(want)
