"""Deterministic synthetic department data for demos, tests and benchmarks.

``write_sql(url, residents=N, seed=S)`` writes the tables of six departments (tax, social
security, real estate, vehicles, medical insurance, disability federation) plus a resident
register into any SQLAlchemy URL; ``write_csv(directory, …)`` writes the same data as CSV
exports. Both also write one mapping TOML per source and return their paths. The same
``(residents, seed, as_of)`` always produces the same data, whatever subset of departments
is asked for (each department draws from its own random stream).

Identity numbers are valid and unique (a bijection of the resident number), so a test can
recompute any resident's number with :func:`resident`. ``dirty`` is the share of department
rows whose identity is written in a messy but valid form (lower-case x, padding, full-width
digits, legacy 15 digits) or, for a fifth of those, an invalid one.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, Date, DateTime, Integer, MetaData, Numeric, String, Table, create_engine
from sqlalchemy.engine import make_url

from hedui.adapters.idnum import _check_char
from hedui.common.errors import InvalidArgument

__all__ = ["DEPARTMENTS", "Resident", "resident", "residents", "write_sql", "write_csv"]

DEPARTMENTS = ("tax", "social_security", "real_estate", "vehicles", "medical", "disability")
AS_OF = date(2025, 6, 30)

_REGIONS = ("110101", "110105", "310104", "310115", "320106", "320113", "330106", "370304", "420111",
            "421202", "440106", "440305", "441302", "500103", "510107", "610113", "360702", "360721")
_BORN_FROM = date(1930, 1, 1).toordinal()
_DAYS = date(2020, 12, 31).toordinal() - _BORN_FROM + 1
_SPACE = len(_REGIONS) * _DAYS * 1000
_MULT = 2_654_435_761  # odd, not divisible by 3, 7 or 11: coprime to _SPACE
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国建华玉兰红梅志强海燕丹宁波婷雪辉鑫宇浩然子涵欣怡梓萱诗琪"
_EMPLOYERS = ("市第一建筑公司", "某某科技有限公司", "区人民医院", "市公交集团", "个体工商户", "县农业合作社", "某某物流公司", "市第三中学")
_HOSPITALS = ("市人民医院", "市中医院", "区第二人民医院", "省肿瘤医院", "县人民医院")
_PLATE_PREFIX = ("京A", "沪B", "苏A", "浙A", "鲁C", "鄂A", "粤A", "渝A", "川A", "陕A", "赣B")


@dataclass(frozen=True, slots=True)
class Resident:
    number: int          # 1-based resident number (the register's primary key)
    id_number: str
    name: str
    sex: str             # "M" or "F" (from the sequence digit's parity, as GB 11643 says)
    birth: date
    region: str


def _identity(number: int, seed: int) -> tuple[str, date, str]:
    key = (number * _MULT + seed * 7919) % _SPACE
    key, seq = divmod(key, 1000)
    region_i, day = divmod(key, _DAYS)
    born = date.fromordinal(_BORN_FROM + day)
    body = f"{_REGIONS[region_i]}{born:%Y%m%d}{seq:03d}"
    return body + _check_char(body), born, _REGIONS[region_i]


_MASK64 = (1 << 64) - 1


def resident(number: int, seed: int = 0) -> Resident:
    """Resident ``number`` (1-based) of the population generated with ``seed``."""
    idn, born, region = _identity(number, seed)
    h = ((number + seed * 0x632BE5AB) * 0x9E3779B97F4A7C15) & _MASK64
    h ^= h >> 29
    h, s = divmod(h, len(_SURNAMES))
    h, g1 = divmod(h, len(_GIVEN))
    h, g2 = divmod(h, len(_GIVEN))
    name = _SURNAMES[s] + _GIVEN[g1] + (_GIVEN[g2] if h & 1 else "")
    return Resident(number, idn, name, "M" if int(idn[16]) % 2 else "F", born, region)


def residents(n: int, seed: int = 0) -> Iterator[Resident]:
    """Residents 1..n; identity numbers are unique for n up to about 6 * 10^8."""
    if not 0 <= n <= _SPACE:
        raise InvalidArgument(f"residents: got {n}, want 0 to {_SPACE}")
    for i in range(1, n + 1):
        yield resident(i, seed)


_residents = residents


# --- departments -----------------------------------------------------------------------------

def _age(r: Resident, on: date) -> int:
    return on.year - r.birth.year - ((on.month, on.day) < (r.birth.month, r.birth.day))


def _month_ends(as_of: date, months: int) -> list[str]:
    """The last days of the ``months`` whole months before ``as_of``, oldest first."""
    first = as_of.replace(day=1)
    out = []
    for _ in range(months):
        out.append((first - timedelta(days=1)).isoformat())
        first = (first - timedelta(days=1)).replace(day=1)
    return out[::-1]


def _yuan(fen: int) -> str:
    sign, fen = ("-", -fen) if fen < 0 else ("", fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def _day(lo: int, hi: int, rng: random.Random) -> str:
    return date.fromordinal(rng.randint(lo, hi)).isoformat()


def _messy(idn: str, rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return idn.lower() if idn.endswith("X") else " " + idn + " "
    if kind == 1:
        return "\u3000" + idn
    if kind == 2:
        return idn.translate({ord(str(d)): 0xFF10 + d for d in range(10)})
    if kind == 3 and idn[6:8] == "19":
        return idn[:6] + idn[8:17]
    return idn[:17] + ("0" if idn[17] != "0" else "1")  # wrong check character: invalid


class _Dept:
    """One department: its tables, row generator and mapping. Rows hold ints, str and None
    only (dates ISO, amounts as decimal text), which every sink writes as is."""

    name: str
    tables: tuple[str, ...]
    columns: dict[str, list[tuple[str, Any, str | None]]]
    main: str
    identity: str
    default_share = 1.0

    def __init__(self, seed: int, as_of: date, dirty: float, share: float | None, months: int, years: int) -> None:
        self.rng = random.Random(f"hedui-synthetic:{seed}:{self.name}")
        self.as_of, self.dirty, self.months, self.years = as_of, dirty, months, years
        self.today = as_of.toordinal()
        self.share = self.default_share if share is None else share
        self.stamp = f"{as_of.isoformat()} 20:00:00.000000"
        self.next_id = {t: 1 for t in self.tables}

    def idn(self, r: Resident) -> str:
        if self.dirty and self.rng.random() < self.dirty:
            return _messy(r.id_number, self.rng)
        return r.id_number

    def take(self, table: str) -> int:
        i = self.next_id[table]
        self.next_id[table] = i + 1
        return i

    def rows(self, r: Resident) -> Iterable[tuple[str, tuple]]:
        raise NotImplementedError

    def facts(self, c) -> list[dict[str, Any]]:
        raise NotImplementedError


class _Tax(_Dept):
    name, tables, default_share = "tax", ("tax_annual",), 0.45
    columns = {"tax_annual": [("id", Integer, "编号"), ("taxpayer_idno", String(24), "纳税人身份证号"),
                              ("tax_year", Integer, "纳税年度"), ("taxable_income", Numeric(14, 2), "应纳税所得额(元)"),
                              ("filed_on", Date, "申报日期"), ("updated_at", DateTime, "更新时间")]}
    main, identity = "tax_annual", "taxpayer_idno"

    def rows(self, r):
        rng = self.rng
        if _age(r, self.as_of) < 18 or rng.random() >= self.share:
            return
        base = rng.lognormvariate(10.8, 0.7) * 100
        idn = self.idn(r)
        for year in range(self.as_of.year - self.years, self.as_of.year):
            filed = date(year + 1, 3, 1).toordinal()
            yield "tax_annual", (self.take("tax_annual"), idn, year, _yuan(int(base * rng.uniform(0.85, 1.2))),
                                 _day(filed, filed + 89, rng), self.stamp)

    def facts(self, c):
        return [{"name": "annual_taxable_income", "column": c("taxable_income"), "type": "money", "unit": "yuan",
                 "date": c("filed_on"), "attrs": {"tax_year": c("tax_year")}}]


class _Social(_Dept):
    name, tables, default_share = "social_security", ("ss_person", "ss_monthly"), 0.55
    columns = {
        "ss_person": [("id", Integer, None), ("id_number", String(24), None), ("name", String(32), None),
                      ("region", String(6), None), ("updated_at", DateTime, None)],
        "ss_monthly": [("id", Integer, "编号"), ("person_id", Integer, None), ("month", Date, "缴费月份"),
                       ("wage_fen", BigInteger, "工资(分)"), ("pension_yuan", Numeric(10, 2), "养老金(元)"),
                       ("unemployment_yuan", Numeric(10, 2), "失业金(元)"), ("employer", String(64), "单位"),
                       ("updated_at", DateTime, "更新时间")],
    }
    main, identity = "ss_monthly", "ss_person.id_number"
    joins = [{"table": "ss_person", "on": "ss_monthly.person_id = ss_person.id"}]
    csv_identity = "身份证号"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.month_ends = _month_ends(self.as_of, self.months)

    def rows(self, r):
        rng = self.rng
        age = _age(r, self.as_of)
        if age < 16 or rng.random() >= self.share:
            return
        pid = self.take("ss_person")
        yield "ss_person", (pid, self.idn(r), r.name, r.region, self.stamp)
        retired = age >= (60 if r.sex == "M" else 55)
        employer = rng.choice(_EMPLOYERS)
        wage = rng.lognormvariate(8.6, 0.45) * 100                   # fen
        pension = _yuan(rng.randint(180_000, 520_000))
        unemployed_from = rng.randrange(self.months) if not retired and rng.random() < 0.04 else None
        stamp, rnd = self.stamp, rng.random
        for k, month in enumerate(self.month_ends):
            i = self.take("ss_monthly")
            if retired:
                yield "ss_monthly", (i, pid, month, None, pension, None, None, stamp)
            elif unemployed_from is not None and k >= unemployed_from:
                yield "ss_monthly", (i, pid, month, None, None, "1850.00", None, stamp)
            else:
                yield "ss_monthly", (i, pid, month, int(wage * (0.9 + 0.25 * rnd())), None, None, employer, stamp)

    def facts(self, c):
        return [
            {"name": "wage", "column": c("wage_fen"), "type": "money", "unit": "fen", "date": c("month"),
             "optional": True, "attrs": {"employer": c("employer")}},
            {"name": "pension", "column": c("pension_yuan"), "type": "money", "unit": "yuan", "date": c("month"), "optional": True},
            {"name": "unemployment_benefit", "column": c("unemployment_yuan"), "type": "money", "unit": "yuan",
             "date": c("month"), "optional": True},
        ]


class _RealEstate(_Dept):
    name, tables, default_share = "real_estate", ("re_property",), 0.5
    columns = {"re_property": [("id", Integer, "编号"), ("owner_idno", String(24), "权利人证件号"),
                               ("cert_no", String(40), "不动产权证号"), ("region", String(6), "区划"),
                               ("area_m2", Numeric(10, 2), "建筑面积"), ("assessed_wan", Numeric(12, 4), "评估价值(万元)"),
                               ("registered_on", Date, "登记日期"), ("updated_at", DateTime, "更新时间")]}
    main, identity = "re_property", "owner_idno"

    def rows(self, r):
        rng = self.rng
        if _age(r, self.as_of) < 22 or rng.random() >= self.share:
            return
        idn = self.idn(r)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            area = rng.randint(3_000, 18_000)                       # hundredths of m2
            value = area * rng.randint(6_000, 65_000) // 100        # yuan = 10^-4 of 10k yuan
            reg = _day(730_120, self.today, rng)                    # since 2000-01-01
            pid = self.take("re_property")
            yield "re_property", (pid, idn, f"不动产权第{reg[:4]}{pid:07d}号", r.region, _yuan(area),
                                  f"{value // 10_000}.{value % 10_000:04d}", reg, self.stamp)

    def facts(self, c):
        return [{"name": "property_area", "column": c("area_m2"), "type": "decimal", "unit": "m2",
                 "date": c("registered_on"), "attrs": {"cert_no": c("cert_no")}},
                {"name": "property_value", "column": c("assessed_wan"), "type": "money", "unit": "wan_yuan",
                 "date": c("registered_on"), "attrs": {"cert_no": c("cert_no")}}]


class _Vehicles(_Dept):
    name, tables, default_share = "vehicles", ("vehicle",), 0.3
    columns = {"vehicle": [("id", Integer, "编号"), ("owner_idno", String(24), "所有人身份证明号码"),
                           ("plate", String(12), "号牌号码"), ("vehicle_type", String(16), "车辆类型"),
                           ("purchase_price_fen", BigInteger, "购置价格(分)"), ("registered_on", Date, "初次登记日期"),
                           ("updated_at", DateTime, "更新时间")]}
    main, identity = "vehicle", "owner_idno"

    def rows(self, r):
        rng = self.rng
        if _age(r, self.as_of) < 18 or rng.random() >= self.share:
            return
        idn = self.idn(r)
        for _ in range(rng.choice((1, 1, 1, 2))):
            plate = f"{rng.choice(_PLATE_PREFIX)}{rng.randrange(36**5):05X}"[:7]
            kind = rng.choice(("小型轿车", "小型轿车", "小型越野车", "二轮摩托车", "轻型货车"))
            price = int(rng.lognormvariate(11.8, 0.5) * 100)         # fen
            yield "vehicle", (self.take("vehicle"), idn, plate, kind, price,
                              _day(732_677, self.today, rng), self.stamp)   # since 2007-01-01

    def facts(self, c):
        return [{"name": "vehicle", "column": c("purchase_price_fen"), "type": "money", "unit": "fen",
                 "date": c("registered_on"), "attrs": {"plate": c("plate"), "vehicle_type": c("vehicle_type")}}]


class _Medical(_Dept):
    name, tables, default_share = "medical", ("med_stay",), 0.08
    columns = {"med_stay": [("id", Integer, "编号"), ("patient_idno", String(24), "患者身份证号"),
                            ("hospital", String(32), "医疗机构"), ("admitted_on", Date, "入院日期"),
                            ("discharged_on", Date, "出院日期"), ("total_cost_yuan", Numeric(12, 2), "总费用(元)"),
                            ("oop_compliant_yuan", Numeric(12, 2), "政策范围内自付(元)"), ("updated_at", DateTime, "更新时间")]}
    main, identity = "med_stay", "patient_idno"

    def rows(self, r):
        rng = self.rng
        if rng.random() >= self.share:
            return
        idn = self.idn(r)
        for _ in range(rng.choice((1, 1, 2, 3))):
            adm = rng.randint(self.today - 730, self.today - 30)
            total = int(rng.lognormvariate(9.4, 0.9) * 100)          # fen
            oop = int(total * rng.uniform(0.15, 0.45))
            yield "med_stay", (self.take("med_stay"), idn, rng.choice(_HOSPITALS), date.fromordinal(adm).isoformat(),
                               date.fromordinal(adm + rng.randint(1, 40)).isoformat(), _yuan(total), _yuan(oop),
                               self.stamp)

    def facts(self, c):
        attrs = {"admitted_on": {"column": c("admitted_on"), "type": "date"}, "hospital": c("hospital")}
        return [{"name": "inpatient_out_of_pocket", "column": c("oop_compliant_yuan"), "type": "money", "unit": "yuan",
                 "date": c("discharged_on"), "attrs": attrs},
                {"name": "inpatient_total_cost", "column": c("total_cost_yuan"), "type": "money", "unit": "yuan",
                 "date": c("discharged_on"), "attrs": attrs}]


class _Disability(_Dept):
    name, tables, default_share = "disability", ("disability_cert",), 0.06
    columns = {"disability_cert": [("id", Integer, "编号"), ("idno", String(24), "身份证号"),
                                   ("cert_no", String(24), "残疾人证号"), ("kind", Integer, "残疾类别"),
                                   ("grade", Integer, "残疾等级"), ("issued_on", Date, "发证日期"),
                                   ("updated_at", DateTime, "更新时间")]}
    main, identity = "disability_cert", "idno"

    def rows(self, r):
        rng = self.rng
        if rng.random() >= self.share:
            return
        cid = self.take("disability_cert")
        issued = _day(max(r.birth.toordinal(), 733_042), self.today, rng)    # since 2008-01-01
        yield "disability_cert", (cid, self.idn(r), f"CDPF-{issued[:4]}-{cid:06d}", rng.randint(1, 7),
                                  rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 4, 4)), issued, self.stamp)

    def facts(self, c):
        return [{"name": "disability", "column": c("grade"), "type": "code", "date": c("issued_on"),
                 "attrs": {"kind": c("kind"), "cert_no": c("cert_no")}}]


_DEPTS: dict[str, type[_Dept]] = {d.name: d for d in (_Tax, _Social, _RealEstate, _Vehicles, _Medical, _Disability)}


def _depts(departments: Iterable[str], seed: int, as_of: date, dirty: float,
           share: dict[str, float] | None, months: int, years: int) -> list[_Dept]:
    out = []
    for d in departments:
        if d not in _DEPTS:
            raise InvalidArgument(f"departments: got {d!r}, want some of {', '.join(DEPARTMENTS)}")
        out.append(_DEPTS[d](seed, as_of, dirty, (share or {}).get(d), months, years))
    if not 0.0 <= dirty <= 1.0:
        raise InvalidArgument(f"dirty: got {dirty}, want a share between 0 and 1")
    return out


# --- mapping files -----------------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _to_toml(m: dict[str, Any]) -> str:
    lines = ["# Generated by hedui.adapters.synthetic — synthetic data, not real people.",
             "version = 1", f"name = {_toml_value(m['name'])}", f"department = {_toml_value(m['department'])}", "",
             "[source]"]
    src = dict(m["source"])
    joins = src.pop("joins", [])
    lines += [f"{k} = {_toml_value(v)}" for k, v in src.items()]
    for j in joins:
        lines += ["", "[[source.joins]]"] + [f"{k} = {_toml_value(v)}" for k, v in j.items()]
    lines += ["", "[identity]"] + [f"{k} = {_toml_value(v)}" for k, v in m["identity"].items()]
    for f in m["facts"]:
        lines += ["", "[[facts]]"] + [f"{k} = {_toml_value(v)}" for k, v in f.items()]
    return "\n".join(lines) + "\n"


def _sql_mapping(d: _Dept, url: str | None) -> dict[str, Any]:
    src: dict[str, Any] = {"kind": "sql", "url": url, "table": d.main, "primary_key": "id", "watermark": "updated_at"}
    if getattr(d, "joins", None):
        src["joins"] = d.joins
    return {"name": d.name, "department": d.name, "source": src, "identity": {"column": d.identity},
            "facts": d.facts(lambda c: c)}


def _csv_mapping(d: _Dept, path: str, encoding: str) -> dict[str, Any]:
    header = {n: h for n, _, h in d.columns[d.main]}
    ident = getattr(d, "csv_identity", None) or header[d.identity]
    return {"name": d.name, "department": d.name,
            "source": {"kind": "csv", "path": path, "encoding": encoding},
            "identity": {"column": ident}, "facts": d.facts(header.__getitem__)}


# --- writers -------------------------------------------------------------------------------

_FLUSH = 20_000


def _tables(depts: list[_Dept]) -> tuple[MetaData, dict[str, Table]]:
    md = MetaData()
    out = {}
    for d in depts:
        for t in d.tables:
            out[t] = Table(t, md, *[Column(n, typ, primary_key=(n == "id")) for n, typ, _ in d.columns[t]])
    return md, out


_PARSERS = {Date: date.fromisoformat, DateTime: datetime.fromisoformat, Numeric: Decimal}


class _SqlSink:
    def __init__(self, url: str, tables: dict[str, Table]) -> None:
        u = make_url(url)
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        self.engine = create_engine(u)
        self.tables = tables
        self.kind = self.engine.dialect.name
        self.raw = self.engine.raw_connection()
        if self.kind == "sqlite":
            self.raw.execute("PRAGMA journal_mode=WAL")
            self.raw.execute("PRAGMA synchronous=OFF")

    def write(self, table: str, rows: list[tuple]) -> None:
        t = self.tables[table]
        names = [c.name for c in t.columns]
        if self.kind == "postgresql":
            cur = self.raw.cursor()
            with cur.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            cur.close()
        elif self.kind == "sqlite":
            # Text dates and "YYYY-MM-DD HH:MM:SS.ffffff" stamps: how SQLAlchemy stores them.
            self.raw.cursor().executemany(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", rows)
        else:
            parse = [_PARSERS.get(type(c.type)) for c in t.columns]
            with self.engine.begin() as conn:
                conn.execute(t.insert(), [{n: (p(v) if p and v is not None else v) for n, p, v in zip(names, parse, r)}
                                          for r in rows])
            return
        self.raw.commit()

    def close(self) -> None:
        self.raw.close()
        self.engine.dispose()


def _drive(depts: list[_Dept], n: int, seed: int, write) -> dict[str, int]:
    buffers: dict[str, list[tuple]] = {t: [] for d in depts for t in d.tables}
    counts = dict.fromkeys(buffers, 0)
    for r in residents(n, seed):
        for d in depts:
            for table, row in d.rows(r):
                buf = buffers[table]
                buf.append(row)
                if len(buf) >= _FLUSH:
                    write(table, buf)
                    counts[table] += len(buf)
                    buffers[table] = []
    for table, buf in buffers.items():
        if buf:
            write(table, buf)
            counts[table] += len(buf)
    return counts


def write_sql(url: str, *, residents: int, seed: int = 0, departments: Iterable[str] = DEPARTMENTS,
              mapping_dir: str | Path | None = None, mapping_url: str | None = None, dirty: float = 0.0,
              share: dict[str, float] | None = None, as_of: date = AS_OF, months: int = 12, years: int = 2,
              register: bool = False) -> dict[str, Path]:
    """Creates the departments' tables in ``url`` and fills them (bulk insert; COPY on
    PostgreSQL). Writes ``<department>.toml`` mappings into ``mapping_dir`` (URL
    ``mapping_url`` or ``url``) and returns their paths. ``share`` overrides the share of
    residents a department has rows for (e.g. ``{"tax": 1.0}``); ``months`` is the social
    security history, ``years`` the tax years per earner; ``register`` also writes the
    ``resident`` table (number, identity number, name, sex, birth, region)."""
    depts = _depts(departments, seed, as_of, dirty, share, months, years)
    md, tables = _tables(depts)
    if register:
        tables["resident"] = Table("resident", md, Column("id", Integer, primary_key=True),
                                   Column("id_number", String(24)), Column("name", String(32)),
                                   Column("sex", String(1)), Column("birth", Date), Column("region", String(6)))
    sink = _SqlSink(url, tables)
    try:
        md.create_all(sink.engine)
        if register:
            buf: list[tuple] = []
            for r in _residents(residents, seed):
                buf.append((r.number, r.id_number, r.name, r.sex, r.birth.isoformat(), r.region))
                if len(buf) >= _FLUSH:
                    sink.write("resident", buf)
                    buf = []
            if buf:
                sink.write("resident", buf)
        _drive(depts, residents, seed, sink.write)
    finally:
        sink.close()
    return _write_mappings(mapping_dir, {d.name: _sql_mapping(d, mapping_url or url) for d in depts})


def write_csv(directory: str | Path, *, residents: int, seed: int = 0, departments: Iterable[str] = DEPARTMENTS,
              encoding: str = "utf-8", dirty: float = 0.0, share: dict[str, float] | None = None,
              as_of: date = AS_OF, months: int = 12, years: int = 2) -> dict[str, Path]:
    """Writes one CSV export per department (Chinese headers, identity inline) and its
    mapping into ``directory``; returns the mapping paths. Same data as :func:`write_sql`."""
    if encoding not in ("utf-8", "utf-8-sig", "gbk"):
        raise InvalidArgument(f"encoding: got {encoding!r}, want utf-8, utf-8-sig or gbk")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    depts = _depts(departments, seed, as_of, dirty, share, months, years)
    files, writers, people = {}, {}, {}
    try:
        for d in depts:
            f = (out / f"{d.name}.csv").open("w", encoding=encoding, newline="")
            files[d.name] = f
            writers[d.main] = csv.writer(f)
            heads = [h for _, _, h in d.columns[d.main]]
            if d.name == "social_security":
                heads = [heads[0], "身份证号"] + heads[2:]   # person_id replaced by the identity
            writers[d.main].writerow(heads)

        def write(table: str, rows: list[tuple]) -> None:
            if table == "ss_person":
                people.clear()   # person rows precede their monthly rows within a flush
                people.update({r[0]: r[1] for r in rows})
                return
            w = writers[table]
            for r in rows:
                if table == "ss_monthly":
                    r = (r[0], people.get(r[1], ""), *r[2:])
                w.writerow(r)

        _drive_csv(depts, residents, seed, write)
    finally:
        for f in files.values():
            f.close()
    return _write_mappings(out, {d.name: _csv_mapping(d, f"{d.name}.csv", encoding) for d in depts})


def _drive_csv(depts: list[_Dept], n: int, seed: int, write) -> None:
    # Row by row so that a monthly row always finds its person (no flush boundary between).
    for r in residents(n, seed):
        for d in depts:
            rows = list(d.rows(r))
            by_table: dict[str, list[tuple]] = {}
            for table, row in rows:
                by_table.setdefault(table, []).append(row)
            for table in d.tables:
                if table in by_table:
                    write(table, by_table[table])


def _write_mappings(directory: str | Path | None, mappings: dict[str, dict[str, Any]]) -> dict[str, Path]:
    if directory is None:
        return {}
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, m in mappings.items():
        p = out / f"{name}.toml"
        p.write_text(_to_toml(m), encoding="utf-8")
        paths[name] = p
    return paths
