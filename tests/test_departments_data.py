"""The testbed department databases: deterministic, identical on both backends, the designed
households have the properties docs/acceptance-rules.md claims (checked by SQL), hostile
identity forms are present as designed, and bad input is refused with nothing written."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import IDENTITY_COLUMNS, Federation, canonical
from sqlalchemy import create_engine, text

from hedui.adapters.idnum import InvalidIdentity, contains, normalize
from hedui.node.testbed.departments import DEPARTMENTS, GenerateError, designed, generate
from hedui.node.testbed.departments.__main__ import main
from hedui.node.testbed.departments._ids import bad_check, fullwidth, legacy15, padded, resident_id

ROOT = Path(__file__).resolve().parent.parent
D = designed()


def _q(name: str) -> str:
    return f'"{name}"'


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    f = tmp_path_factory.mktemp("depts")
    generate(f, residents=300)
    return f


@pytest.fixture(scope="module")
def fed(folder):
    f = Federation.sqlite(folder)
    yield f
    f.close()


def _sql(folder: Path, dept: str, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(folder / f"{dept}.sqlite")
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _digest(folder: Path) -> dict[str, str]:
    return {k: hashlib.sha256((folder / f"{k}.sqlite").read_bytes()).hexdigest() for k in DEPARTMENTS}


def test_same_seed_same_bytes_other_seed_other_background(tmp_path, folder):
    generate(tmp_path / "a", residents=300)
    assert _digest(tmp_path / "a") == _digest(folder)
    s = generate(tmp_path / "b", residents=300, seed=7)
    assert _digest(tmp_path / "b") != _digest(folder)
    # The designed households do not depend on the seed.
    q = 'SELECT "GMSFHM", "RYZT" FROM "RK_JBXX" WHERE "HH" LIKE \'3703039%\' ORDER BY 1'
    assert _sql(tmp_path / "b", "huji", q) == _sql(folder, "huji", q)
    assert s.residents == 300 and sum(s.rows["huji"].values()) > 300


def _normal(value, declared: str):
    """One representation per declared type, whatever the backend returned."""
    if value is None:
        return None
    if declared.startswith("NUMERIC"):
        scale = int(declared.rstrip(")").split(",")[1])
        return Decimal(str(value)).quantize(Decimal(1).scaleb(-scale))
    if declared in ("INTEGER", "BIGINT"):
        return int(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return value


@pytest.mark.postgres
def test_sqlite_and_postgres_hold_identical_content(tmp_path, pg_url):
    s = generate(tmp_path, pg_url, residents=120)
    eng = create_engine(pg_url)
    try:
        with eng.connect() as pg:
            for key, mod in DEPARTMENTS.items():
                for t in mod.TABLES:
                    order = _q(t.cols[0].name)
                    lite = _sql(tmp_path, key, f"SELECT * FROM {_q(t.name)} ORDER BY {order}")
                    rows = pg.execute(text(f"SELECT * FROM {key}.{_q(t.name)} ORDER BY {order}")).all()
                    assert len(lite) == len(rows) == s.rows[key][t.name] > 0, (key, t.name)
                    types = [c.type for c in t.cols]
                    for a, b in zip(lite, rows):
                        assert [_normal(v, ty) for v, ty in zip(a, types)] == \
                               [_normal(v, ty) for v, ty in zip(b, types)], (key, t.name)
            comment = pg.execute(text("SELECT col_description('cheguan.jdc'::regclass, 14)")).scalar()
            assert comment == "购置价格（万元）"
    finally:
        eng.dispose()


def test_designed_households_have_the_claimed_properties(folder):
    p = D.people
    changes = 'SELECT "BDLX", "BDRQ" FROM "RK_BDJL" WHERE "GMSFHM" = ? ORDER BY "BDID"'
    assert _sql(folder, "huji", changes, p["H1.B"].id18)[-1] == ("死亡", "20260512")
    assert _sql(folder, "huji", changes, p["H1.C"].id18)[-1] == ("迁出", "20251220")
    assert _sql(folder, "huji", changes, p["H2.C"].id18)[-1] == ("死亡", "20260910")
    # H1.A: the same month's wages in social security (three insurance types) and in tax.
    ss = _sql(folder, "shebao", "SELECT w.aae140, w.aic020, w.aae100 FROM ac43 w JOIN ac01 p USING (aac001) "
                                "WHERE trim(p.aac002) = ? AND w.aae002 = 202603 ORDER BY 1, 3", p["H1.A"].id18)
    assert ss == [("110", 520000, "0"), ("110", 480000, "1"), ("210", 480000, "1"), ("410", 480000, "1")]
    tax = _sql(folder, "shuiwu", "SELECT sdxmdm, sre FROM sb_grsds_mx WHERE sfzjhm = ? AND skssqq = '202603'",
               p["H1.A"].id18)
    assert tax == [("0101", 5200)]
    # H2.A: only in tax; a corrected quarterly return names the return it corrects.
    assert not _sql(folder, "shebao", "SELECT 1 FROM ac01 WHERE trim(aac002) = ?", p["H2.A"].id18)
    q = _sql(folder, "shuiwu", "SELECT sbzt, sre, pzxh, ypzxh FROM sb_grsds_mx WHERE trim(sfzjhm) = ? AND "
                               "skssqz = '202603' ORDER BY mxxh", p["H2.A"].id18)
    assert [(s, v) for s, v, _, _ in q] == [("3", 5000), ("1", 6000)] and q[1][3] == q[0][2]
    # H3: a stopped benefit; the 15-digit number at social security; a sold property.
    assert _sql(folder, "shebao", "SELECT u.aae030, u.aae031, u.ajc093, u.ajc090 FROM jc04 u JOIN ac01 p "
                                  "USING (aac001) WHERE p.aac002 = ?", p["H3.A"].id18) == \
        [("2025-06-18", "2026-01-14", "2", 1580)]
    assert _sql(folder, "shebao", "SELECT length(aac002) FROM ac01 WHERE aac002 = ?",
                legacy15(p["H3.B"].id18)) == [(15,)]
    sold = _sql(folder, "budongchan", "SELECT f.bdcdyh, f.qszt, f.zxsj FROM fdcq f JOIN qlr q USING (ywh) "
                                      "WHERE q.zjh = ? AND f.zxsj IS NOT NULL", p["H3.A"].id18)
    assert [(s, z) for _, s, z in sold] == [("历史", "20260515")]
    buyer = _sql(folder, "budongchan", "SELECT q.zjh, f.qszt, f.djsj FROM fdcq f JOIN qlr q USING (ywh) "
                                       "WHERE f.bdcdyh = ? AND f.qszt = '现势'", sold[0][0])
    assert buyer == [(p["S1"].id18, "现势", "20260515")]
    certs = _sql(folder, "canlian", "SELECT f.cjrzh, f.lzlx, f.cjdj FROM cjrz_ffjl f JOIN cjr_jbxx c USING (cjrid) "
                                    "WHERE c.sfzh = ? ORDER BY f.fzrq", fullwidth(p["H3.B"].id18))
    assert [(k, g) for _, k, g in certs] == [("首次", "三级"), ("换领", "三级")] and len({c for c, _, _ in certs}) == 1
    # H5a/H5b/H6/H7: vehicle prices at the boundary, in 万元; an organisation's vehicle.
    price = "SELECT gzjg FROM jdc WHERE sfzmhm = ? ORDER BY xh"
    assert _sql(folder, "cheguan", price, p["H5a.A"].id18) == [(10,)]
    assert _sql(folder, "cheguan", price, p["H5b.B"].id18) == [(9.999999,)]
    assert _sql(folder, "cheguan", price, fullwidth(p["H6.A"].id18)) == [(10,)]
    org = _sql(folder, "cheguan", "SELECT sfzmmc, syq, length(sfzmhm), lxr FROM jdc WHERE lxrsfzmhm = ?",
               p["H7.A"].id18)
    assert org == [("B", "1", 18, p["H7.A"].name)]
    # H2.B: a cancellation row names the original; the re-settlement and a same-day pair are new ids.
    rows = _sql(folder, "yibao", "SELECT s.setl_id, s.refd_setl_flag, s.init_setl_id, s.psn_pay, s.setl_time "
                                 "FROM setl_d s JOIN psn_info p USING (psn_no) WHERE p.certno = ? "
                                 "ORDER BY s.setl_time", p["H2.B"].id18)
    cancel = [r for r in rows if r[1] == "1"]
    assert len(cancel) == 1 and cancel[0][3] == -35000 and cancel[0][2] in {r[0] for r in rows if r[1] == "0"}
    pair = [r for r in rows if r[4].startswith("2026-06-02")]
    assert len(pair) == 2 and pair[0][3] == pair[1][3] and pair[0][0] != pair[1][0]
    assert all(len(r[0]) == 24 for r in rows)


def test_member_in_no_department_is_nowhere(fed):
    c = D.people["H4.C"].id18
    assert all(not fed.raws(dept, c) for dept in IDENTITY_COLUMNS)


def test_extracts_record_their_data_dates(fed):
    assert {k: fed.data_date(k) for k in DEPARTMENTS} == {
        **{k: date(2026, 10, 31) for k in DEPARTMENTS}, "shuiwu": date(2026, 9, 30)}


def test_hostile_identity_forms_are_present(folder):
    def column(dept, table, col):
        t = _q(table)
        return [v for (v,) in _sql(folder, dept, f"SELECT {_q(col)} FROM {t} WHERE {_q(col)} IS NOT NULL")]

    forms = {}
    for dept, cols in {**IDENTITY_COLUMNS, "cheguan": (("jdc", "sfzmhm"), ("jdc", "lxrsfzmhm"))}.items():
        for table, col in cols:
            for v in column(dept, table, col):
                stripped = v.strip()
                kind = ("blank" if not stripped else "padded" if v != stripped else
                        "fullwidth" if not v.isascii() else "lower_x" if v.endswith("x") else
                        "legacy15" if len(v) == 15 else "org" if not v.isdigit() and not v[:17].isdigit() else
                        "invalid" if canonical(v) is None else "clean")
                forms.setdefault(kind, set()).add(dept)
    assert {"shebao", "shuiwu", "minzheng"} <= forms["padded"]
    assert {"cheguan", "canlian", "minzheng"} <= forms["fullwidth"]
    assert "gongjijin" in forms["lower_x"]
    assert {"shebao", "cheguan", "budongchan"} <= forms["legacy15"]
    assert {"cheguan", "minzheng"} <= forms["invalid"]
    assert {"budongchan", "cheguan"} <= forms["org"]
    assert "budongchan" in forms["blank"]
    assert "huji" in forms["clean"] and all("huji" not in s for k, s in forms.items() if k != "clean")
    # The institution's all-digit code has an identity number's shape but is nobody's number.
    code = _sql(folder, "cheguan", "SELECT sfzmhm FROM jdc WHERE sfzmmc = 'B' AND sfzmhm GLOB '12*'")[0][0]
    assert len(code) == 18 and contains(code) and canonical(code) is None
    with pytest.raises(InvalidIdentity):
        normalize(code)


def test_long_numbers_are_not_identity_numbers(folder):
    for (sid, visit) in _sql(folder, "yibao", "SELECT setl_id, mdtrt_id FROM setl_d"):
        assert len(sid) == 24 and len(visit) == 20 and not contains(sid + " " + visit)
    for (voucher,) in _sql(folder, "shuiwu", "SELECT pzxh FROM sb_grsds_mx"):
        assert len(voucher) == 20 and voucher.isdigit() and not contains(voucher)
    # The disability certificate number embeds the holder's number (docs warn not to carry it).
    b = D.people["H3.B"].id18
    assert _sql(folder, "canlian", "SELECT DISTINCT cjrzh FROM cjrz_ffjl WHERE cjrzh LIKE ?", b + "%") == [(b + "43",)]


@settings(max_examples=200, deadline=None)
@given(born=st.dates(date(1900, 1, 1), date(1999, 12, 31)), seq=st.integers(0, 999),
       region=st.sampled_from(["370303", "370304", "110101"]))
def test_oracle_normaliser_reads_every_stored_form(born, seq, region):
    n = resident_id(region, born, seq)
    assert normalize(n) == n                                     # the generator's numbers are valid
    for form in (n, padded(n), padded(n, 20, lead=2), n.lower(), fullwidth(n), legacy15(n)):
        assert canonical(form) == n == normalize(form)
    assert canonical(bad_check(n)) is None and canonical("") is None and canonical(n[:17]) is None


def test_an_earlier_extract_holds_nothing_later(tmp_path):
    s = generate(tmp_path, residents=50, extract_date=date(2026, 3, 31))
    assert s.data_dates["shuiwu"] == date(2026, 2, 28) and s.data_dates["huji"] == date(2026, 3, 31)
    assert _sql(tmp_path, "shebao", "SELECT MAX(aae002) FROM ac43") == [(202603,)]
    assert _sql(tmp_path, "shuiwu", "SELECT MAX(skssqz) FROM sb_grsds_mx") == [("202602",)]
    assert _sql(tmp_path, "huji", 'SELECT "RYZT" FROM "RK_JBXX" WHERE "GMSFHM" = ?', D.people["H1.B"].id18) == [("正常",)]
    assert _sql(tmp_path, "yibao", "SELECT MAX(setl_time) FROM setl_d")[0][0] < "2026-04-01"
    assert _sql(tmp_path, "cheguan", "SELECT COUNT(*) FROM jdc WHERE zxrq > '2026-03-31'") == [(0,)]


def test_bad_input_is_refused_and_nothing_is_written(tmp_path, capsys):
    generate(tmp_path / "x", residents=10)
    before = _digest(tmp_path / "x")
    with pytest.raises(GenerateError, match="exists"):
        generate(tmp_path / "x", residents=20)
    assert _digest(tmp_path / "x") == before
    for kwargs, msg in (({"residents": -1}, "residents"), ({"residents": True}, "residents"),
                        ({"extract_date": date(1999, 1, 1)}, "extract_date"), ({"recipient_share": 2.0}, "share")):
        with pytest.raises(GenerateError, match=msg):
            generate(tmp_path / "y", **kwargs)
    with pytest.raises(GenerateError, match="neither"):
        generate()
    assert not (tmp_path / "y").exists()
    assert main(["--sqlite", str(tmp_path / "x"), "--residents", "5"]) == 2
    assert main(["--sqlite", str(tmp_path / "z"), "--extract-date", "2026-02-30"]) == 2
    assert main(["--pg", "postgresql+psycopg://nobody@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err) and not (tmp_path / "z").exists()


def test_cli_writes_and_reports_json(tmp_path, capsys):
    import json

    assert main(["--sqlite", str(tmp_path), "--residents", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data_dates"]["shuiwu"] == "2026-09-30" and out["rows"]["huji"]["RK_JBXX"] > 20


def test_docs_describe_every_table_and_column():
    doc = (ROOT / "docs" / "department-data.md").read_text(encoding="utf-8")
    for key, mod in DEPARTMENTS.items():
        assert f"## `{key}`" in doc
        for t in mod.TABLES:
            assert f"`{t.name}` —" in doc, t.name
            for c in t.cols:
                assert f"| `{c.name}` | {c.type}" in doc, (t.name, c.name)


def _ymd(col: str) -> str:
    return f"replace(substr({col}, 1, 10), '-', '')"


# Every dated column as integer YYYYMMDD: (department, table, expression, bound). Facts are
# bounded by the department's data date; a tax return's filing date by the extract date.
_DATED = [
    ("huji", "RK_BDJL", '"BDRQ"', "data"), ("huji", "RK_BDJL", _ymd('"DJSJ"'), "data"),
    ("shebao", "ac43", "aae002 * 100 + 1", "data"), ("shebao", "ac84", "aae003 || '01'", "data"),
    ("shebao", "jc04", _ymd("aae030"), "data"), ("shebao", "ac01", _ymd("aae036"), "data"),
    ("shuiwu", "sb_grsds_mx", "skssqz || '01'", "data"), ("shuiwu", "sb_grsds_mx", _ymd("sbrq"), "extract"),
    ("budongchan", "fdcq", "djsj", "data"), ("budongchan", "fdcq", "zxsj", "data"),
    ("cheguan", "jdc", _ymd("coalesce(djrq, ccdjrq)"), "data"), ("cheguan", "jdc", _ymd("zxrq"), "data"),
    ("cheguan", "jdc", _ymd("gxsj"), "data"), ("gongjijin", "grmxz", _ymd("jzrq"), "data"),
    ("gongjijin", "grmxz", "replace(hjny, '-', '') || '01'", "data"), ("gongjijin", "grzhxx", _ymd("khrq"), "data"),
    ("yibao", "setl_d", _ymd("setl_time"), "data"), ("canlian", "cjrz_ffjl", _ymd("fzrq"), "data"),
    ("minzheng", "jz_jt", "ksny || '01'", "data"), ("minzheng", "jz_lsjz", _ymd("jzrq"), "data"),
]


@settings(max_examples=4, deadline=None)
@given(extract=st.dates(date(2024, 1, 1), date(2027, 12, 31)))
def test_no_row_is_dated_after_its_extract(tmp_path_factory, extract):
    folder = tmp_path_factory.mktemp("extract")
    s = generate(folder, residents=40, extract_date=extract, seed=extract.toordinal())
    for dept, table, expr, bound in _DATED:
        until = int(f"{s.data_dates[dept] if bound == 'data' else extract:%Y%m%d}")
        (latest,) = _sql(folder, dept, f"SELECT MAX(CAST({expr} AS INTEGER)) FROM {_q(table)}")[0]
        assert latest is None or latest <= until, (extract, dept, expr, latest)
    assert s.data_dates["shuiwu"] < extract
