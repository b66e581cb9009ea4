"""Mapping files: the documented examples validate and check; bad files fail with one clear
error naming the key."""

from __future__ import annotations

import csv

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedui.adapters import idnum, open_adapter
from hedui.adapters.idnum import mask_embedded, synthetic
from hedui.adapters.mapping import load_mapping, parse_mapping
from hedui.adapters.records import Record
from hedui.adapters.synthetic import write_sql
from hedui.node.errors import ConfigError

SQL_EXAMPLE = '''
# Social security: monthly payments, one row per person and month.
version = 1
name = "social_security"            # stable source name: index progress and row keys use it
department = "人社局"

[source]
kind = "sql"
url_env = "HEDUI_SS_DB_URL"         # or: url = "postgresql+psycopg://reader@db.example/ss"
table = "ss_monthly"                # the table read row by row ("schema.table" allowed)
primary_key = "id"                  # unique row key; never the identity column
watermark = "updated_at"            # grows on insert/update: later builds read only newer rows
page_size = 5000                    # rows per keyset page (optional)

[[source.joins]]                    # many-to-one LEFT JOINs, in order
table = "ss_person"
on = "ss_monthly.person_id = ss_person.id"

[identity]
column = "ss_person.id_number"      # "table.column", or a bare column of source.table
format = "gb11643"                  # 18 or 15 characters; normalised and checked

[[facts]]
name = "wage"
column = "wage_fen"
type = "money"                      # money | decimal | integer | code | bool
unit = "fen"                        # money: fen | yuan | wan_yuan, always stored as yuan (CNY)
date = "month"                      # the date the fact describes
optional = true                     # empty cell: no wage that month (otherwise a row problem)
attrs = { employer = "employer" }   # further columns kept with the fact, as text

[[facts]]
name = "pension"
column = "pension_yuan"
type = "money"
unit = "yuan"
date = "month"
optional = true
'''

CSV_EXAMPLE = '''
# Medical insurance: inpatient settlements exported as CSV (GBK, Chinese headers).
version = 1
name = "medical_stays"
department = "医保局"

[source]
kind = "csv"
path = "exports/住院结算.csv"         # relative to this mapping file
encoding = "gbk"                    # utf-8 | utf-8-sig | gbk
delimiter = ","
primary_key = "结算单号"             # optional: rows are named by this key, else by line number

[identity]
column = "患者身份证号"

[[facts]]
name = "inpatient_out_of_pocket"
column = "政策范围内自付(元)"
type = "money"
unit = "yuan"
date = "出院日期"
attrs = { hospital = "医疗机构", admitted_on = { column = "入院日期", type = "date" } }

[[facts]]
name = "inpatient_total_cost"
column = "总费用(万元)"
type = "money"
unit = "wan_yuan"
date = "出院日期"
'''

EXCEL_EXAMPLE = '''
version = 1
name = "disability"

[source]
kind = "excel"
path = "残疾人证.xlsx"
sheet = "持证人员"                    # the first sheet when absent
header_row = 2                      # the row holding the headers (default 1)

[identity]
column = "身份证号"

[[facts]]
name = "disability"
column = "残疾等级"
type = "code"
date = "发证日期"
attrs = { kind = "残疾类别" }
'''


def test_sql_example_checks_against_a_database(tmp_path, monkeypatch):
    write_sql(f"sqlite:///{tmp_path / 'ss.db'}", residents=50, departments=["social_security"])
    (tmp_path / "ss.toml").write_text(SQL_EXAMPLE, encoding="utf-8")
    monkeypatch.setenv("HEDUI_SS_DB_URL", f"sqlite:///{tmp_path / 'ss.db'}")
    adapter = open_adapter(tmp_path / "ss.toml")
    adapter.check()
    items = list(adapter.records())
    assert items and all(isinstance(i, Record) for i in items)
    monkeypatch.delenv("HEDUI_SS_DB_URL")
    with pytest.raises(ConfigError, match="source.url_env: got 'HEDUI_SS_DB_URL' unset or empty"):
        open_adapter(tmp_path / "ss.toml").check()


def test_csv_example_checks_against_an_export(tmp_path):
    (tmp_path / "exports").mkdir()
    with (tmp_path / "exports" / "住院结算.csv").open("w", encoding="gbk", newline="") as f:
        w = csv.writer(f)
        w.writerow(["结算单号", "患者身份证号", "医疗机构", "入院日期", "出院日期", "总费用(万元)", "政策范围内自付(元)"])
        w.writerow(["JS0001", "11010519491231002X", "市人民医院", "2025/01/03", "2025/01/20", "6.5", "21000.5"])
    (tmp_path / "med.toml").write_text(CSV_EXAMPLE, encoding="utf-8")
    adapter = open_adapter(tmp_path / "med.toml")
    adapter.check()
    (rec,) = adapter.records()
    assert rec.locator == "住院结算.csv:结算单号=JS0001"
    assert [(f.name, str(f.value)) for f in rec.facts] == [("inpatient_out_of_pocket", "21000.50"),
                                                            ("inpatient_total_cost", "65000.00")]
    assert rec.facts[0].attrs == {"hospital": "市人民医院", "admitted_on": "2025-01-03"}


def test_excel_example_checks_against_a_workbook(tmp_path):
    import datetime

    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "持证人员"
    ws.append(["某区残联 2025 年持证人员"])
    ws.append(["身份证号", "残疾类别", "残疾等级", "发证日期"])
    ws.append(["11010519491231002X", 4, 2, datetime.date(2024, 5, 1)])
    wb.save(tmp_path / "残疾人证.xlsx")
    (tmp_path / "dis.toml").write_text(EXCEL_EXAMPLE, encoding="utf-8")
    adapter = open_adapter(tmp_path / "dis.toml")
    adapter.check()
    (rec,) = adapter.records()
    assert rec.locator == "残疾人证.xlsx:line 3"
    assert rec.facts[0].value == "2" and rec.facts[0].attrs == {"kind": "4"}   # codes keep their text


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('type = "money"', 'type = "currency"', 1),
     "facts['wage'].type: got 'currency', want one of 'money', 'decimal', 'integer', 'code' or 'bool'"),
    (lambda t: t.replace('unit = "fen"', 'unit = "cents"'),
     "facts['wage'].unit: got 'cents', want one of 'fen', 'yuan', 'wan_yuan' for type money"),
    (lambda t: t.replace("page_size = 5000", 'page_size = "5000"'), "source.page_size: got '5000', want a valid integer"),
    (lambda t: t.replace("optional = true", "optionl = true", 1), "facts['wage'].optionl: got an unknown key"),
    (lambda t: t.replace('kind = "sql"', 'kind = "mysql"'), "source.kind: got 'mysql', want one of 'sql', 'csv', 'excel'"),
    (lambda t: t.replace('on = "ss_monthly.person_id = ss_person.id"', 'on = "person_id"'),
     "source.joins[0].on: got 'person_id', want 'table.column = table.column'"),
    (lambda t: t.replace('url_env = "HEDUI_SS_DB_URL"', ""), "source.url: got neither, want exactly one of 'url' and 'url_env'"),
    (lambda t: t.replace('name = "social_security"', 'name = "Social Security"'),
     "name: got 'Social Security', want lower_snake_case"),
    (lambda t: t.replace('date = "month"', 'date = { column = "month", fmt = "YYYYMM" }', 1),
     "facts['wage'].date.fmt: got an unknown key, want one of column, format"),
    (lambda t: t.replace('date = "month"', 'date = { column = "month", format = "YYMM" }', 1),
     "facts['wage'].date.format: got 'YYMM', want one of 'date', 'datetime', 'YYYYMMDD', 'YYYYMM', 'YYYY-MM' or 'YYYY'"),
    (lambda t: t.replace('date = "month"', 'date = "month"\nuntil = { column = "end", inclusive = "yes" }', 1),
     "facts['wage'].until.inclusive: got 'yes', want a valid boolean"),
    (lambda t: t.replace('page_size = 5000', 'page_size = 5000\nwhere = { aae100 = { in = "1" } }'),
     "source.where.aae100.in: got '1', want an array of values"),
    (lambda t: t.replace('format = "gb11643"', 'format = "gb11643"\nskip_where = ["zjzl"]'),
     "identity.skip_where: got an array of 1, want a table"),
    (lambda t: t.replace('page_size = 5000', 'page_size = 5000\ndata_date = "31.10.2026"'),
     "source.data_date: got '31.10.2026', want a date YYYY-MM-DD"),
    (lambda t: t.replace('on = "ss_monthly.person_id = ss_person.id"', 'on = "ss_monthly.person_id = p.id"\nas = "p q"'),
     "source.joins[0].as: got 'p q', want a short name such as cx"),
])
def test_bad_mapping_names_the_key(tmp_path, edit, message):
    p = tmp_path / "m.toml"
    p.write_text(edit(SQL_EXAMPLE), encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_mapping(p)
    assert str(ei.value).startswith(f"{p}: ")
    assert message in str(ei.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: got an unreadable file"):
        load_mapping(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("name = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.toml: got invalid TOML"):
        load_mapping(tmp_path / "bad.toml")


def test_fingerprint_ignores_url_but_not_facts(tmp_path):
    import tomllib

    data = tomllib.loads(SQL_EXAMPLE)
    a = parse_mapping(data)
    data["source"] = {**data["source"], "url_env": "OTHER"}
    assert parse_mapping(data).fingerprint() == a.fingerprint()
    data["facts"][0] = {**data["facts"][0], "unit": "yuan"}
    assert parse_mapping(data).fingerprint() != a.fingerprint()


def test_primary_key_may_not_be_the_identity(tmp_path):
    write_sql(f"sqlite:///{tmp_path / 'ss.db'}", residents=20, departments=["tax"])
    m = {"name": "t", "source": {"kind": "sql", "url": f"sqlite:///{tmp_path / 'ss.db'}", "table": "tax_annual",
                                 "primary_key": "taxpayer_idno"}, "identity": {"column": "taxpayer_idno"}}
    with pytest.raises(ConfigError, match="source.primary_key: got the identity column"):
        open_adapter(parse_mapping(m)).check()


# --- long numbers outside the identity column (issue 12 "Bad input") ----------------------------

@given(st.randoms(use_true_random=False), st.text(alphabet="0123456789", max_size=6),
       st.text(alphabet="0123456789", max_size=6), st.sampled_from(["", "证号", "x ", "ＡＢ"]))
def test_embedded_identity_numbers_are_masked_other_digits_kept(rng, before, after, label):
    n = synthetic(rng)
    for shown in (n, n[:17] + n[17].lower(), n.translate({ord(str(d)): 0xFF10 + d for d in range(10)})):
        out = mask_embedded(label + before + shown + after)
        assert "[id]" in out and n[:17] not in out and not idnum.contains(out)
        assert out.startswith(label)


@given(st.integers(10**14, 10**30))
def test_long_numbers_without_a_valid_identity_are_kept(k):
    s = str(k)
    windows = [s[i:i + 18] for i in range(len(s) - 17)] + ([s] if len(s) == 15 else [])
    out = mask_embedded(s)
    if len(s) in (15, 18):          # shaped like an identity number, valid or not: masked
        assert out == "[id]"
    elif not any(_valid(w) for w in windows):
        assert out == s             # a settlement id, a voucher number: data, kept
    else:
        assert "[id]" in out and len(out) == len(s) - 18 + 4


def _valid(w: str) -> bool:
    try:
        idnum.normalize(w)
    except Exception:
        return False
    return True


def test_data_date_literal_table_or_none(tmp_path):
    import sqlite3
    from datetime import date

    db = tmp_path / "d.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, idno TEXT)")
    con.execute("CREATE TABLE batch (n INTEGER, ym TEXT)")
    con.commit()
    base = {"name": "t", "source": {"kind": "sql", "url": f"sqlite:///{db}", "table": "t", "primary_key": "id"},
            "identity": {"column": "idno"}}

    def data_date(dd):
        return open_adapter(parse_mapping({**base, "source": {**base["source"], **dd}})).data_date()

    assert data_date({}) is None
    assert data_date({"data_date": "2026-10-31"}) == date(2026, 10, 31)
    with pytest.raises(ConfigError, match="source.data_date: got no value in batch.ym"):
        data_date({"data_date": {"table": "batch", "column": "ym", "format": "YYYY-MM"}})
    con.executemany("INSERT INTO batch VALUES (?, ?)", [(1, "2026-08"), (2, "2026-09"), (3, None), (4, " ")])
    con.commit()
    assert data_date({"data_date": {"table": "batch", "column": "ym", "format": "YYYY-MM"}}) == date(2026, 9, 30)
    con.execute("INSERT INTO batch VALUES (5, '2026-13')")
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match=r"source.data_date: got '2026-13' \(no month 13\) in batch.ym, want YYYY-MM"):
        data_date({"data_date": {"table": "batch", "column": "ym", "format": "YYYY-MM"}})
    csv_m = parse_mapping({"name": "c", "source": {"kind": "csv", "path": "x.csv", "encoding": "utf-8",
                                                   "data_date": "2026-09-30"}, "identity": {"column": "身份证号"}})
    assert open_adapter(csv_m).data_date() == date(2026, 9, 30)
    with pytest.raises(ConfigError, match="source.data_date: got a table, want a valid date"):
        parse_mapping({"name": "c", "source": {"kind": "csv", "path": "x.csv", "encoding": "utf-8",
                                               "data_date": {"table": "t", "column": "c"}}, "identity": {"column": "x"}})
