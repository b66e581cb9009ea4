"""Every figure of the acceptance rules can be expressed in the mapping language: mappings of
the nine department databases (no SQL views), their facts aggregated here in the plainest way
(a window sum, a count held on a day, the latest by date), compared with the independent
oracle's figures (tests/oracle/, straight SQL) for every designed applicant at both reference
months of docs/acceptance-rules.md, on SQLite and PostgreSQL.

The aggregation here stands in for the catalogue (node/verification, issue 12 p12b): the point
is that the facts carry what it needs — periods, spans, codes, attributes, valid rows only."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

import pytest
from oracle import OK, Federation, verify
from test_adapter_departments import Depts, depts  # noqa: F401  (the module fixture)

from hedui.adapters import open_adapter
from hedui.adapters.mapping import parse_mapping
from hedui.adapters.records import Fact, Record
from hedui.node.testbed.departments import designed

D = designed()
HOUSEHOLDS = ["H1", "H2", "H3", "H4", "H5a", "H5b", "H5c", "H5d", "H6", "H7"]


def _mappings(t) -> list[dict]:
    ss_join = lambda tb: [{"table": t("shebao", "ac01"), "on": f"{tb}.aac001 = ac01.aac001"}]  # noqa: E731
    vehicle = {"name": "vehicle", "column": "gzjg", "type": "money", "unit": "wan_yuan"}
    ended = ["B", "E", "M"]
    return [
        {"name": "wages", "department": "shebao",
         "source": {"table": t("shebao", "ac43"), "primary_key": "aaz223", "joins": ss_join("ac43"),
                    "where": {"aae100": "1", "aae140": "110"}},
         "identity": {"column": "ac01.aac002"},
         "facts": [{"name": "wage", "column": "aic020", "type": "money", "unit": "fen",
                    "date": {"column": "aae002", "format": "YYYYMM"}}]},
        {"name": "pensions", "department": "shebao",
         "source": {"table": t("shebao", "ac84"), "primary_key": "aaz220", "joins": ss_join("ac84"),
                    "where": {"aae117": "1"}},
         "identity": {"column": "ac01.aac002"},
         "facts": [{"name": "pension", "column": "aae019", "type": "money", "unit": "yuan",
                    "date": {"column": "aae003", "format": "YYYYMM"}}]},
        {"name": "unemployment", "department": "shebao",
         "source": {"table": t("shebao", "jc04"), "primary_key": "aaz159", "joins": ss_join("jc04")},
         "identity": {"column": "ac01.aac002"},
         "facts": [{"name": "unemployment_benefit", "column": "ajc090", "type": "money", "unit": "yuan",
                    "date": "aae030", "until": {"column": "aae031", "inclusive": True}}]},
        {"name": "tax", "department": "shuiwu",
         "source": {"table": t("shuiwu", "sb_grsds_mx"), "primary_key": "mxxh", "where": {"sbzt": "1"}},
         "identity": {"column": "sfzjhm"},
         "facts": [{"name": "tax_income", "column": "sre", "type": "money", "unit": "yuan",
                    "date": {"column": "skssqz", "format": "YYYYMM"}, "attrs": {"item": "sdxmdm"}}]},
        {"name": "vehicles", "department": "cheguan",
         "source": {"table": t("cheguan", "jdc"), "primary_key": "xh", "where": {"syq": "2"}},
         "identity": {"column": "sfzmhm", "skip_where": {"sfzmmc": {"ne": "A"}}},
         "facts": [
             {**vehicle, "date": {"column": "djrq", "format": "datetime"},
              "until": {"column": "zxrq", "format": "datetime"}, "where": {"djrq": {"null": False}, "zt": ended}},
             {**vehicle, "date": {"column": "djrq", "format": "datetime"},
              "where": {"djrq": {"null": False}, "zt": {"not_in": ended}}},
             {**vehicle, "date": {"column": "ccdjrq", "format": "datetime"},
              "until": {"column": "zxrq", "format": "datetime"}, "where": {"djrq": {"null": True}, "zt": ended}},
             {**vehicle, "date": {"column": "ccdjrq", "format": "datetime"},
              "where": {"djrq": {"null": True}, "zt": {"not_in": ended}}}]},
        {"name": "properties", "department": "budongchan",
         "source": {"table": t("budongchan", "qlr"), "primary_key": "qlrid",
                    "joins": [{"table": t("budongchan", "fdcq"), "on": "qlr.ywh = fdcq.ywh"}],
                    "where": {"fdcq.ghyt": "住宅"}},
         "identity": {"column": "zjh", "skip_where": {"zjzl": {"ne": "1"}}},
         "facts": [{"name": "residential", "column": "fdcq.jzmj", "type": "decimal", "unit": "m2",
                    "date": {"column": "fdcq.djsj", "format": "YYYYMMDD"},
                    "until": {"column": "fdcq.zxsj", "format": "YYYYMMDD"}, "attrs": {"right": "fdcq.ywh"}}]},
        {"name": "fund", "department": "gongjijin",
         "source": {"table": t("gongjijin", "grmxz"), "primary_key": "lsh",
                    "joins": [{"table": t("gongjijin", "grzhxx"), "on": "grmxz.grzh = grzhxx.grzh"}]},
         "identity": {"column": "grzhxx.zjhm"},
         "facts": [{"name": "fund_balance", "column": "ye", "type": "money", "unit": "yuan", "date": "jzrq",
                    "attrs": {"account": "grmxz.grzh", "seq": "lsh"}}]},
        {"name": "medical", "department": "yibao",
         "source": {"table": t("yibao", "setl_d"), "primary_key": "setl_id",
                    "joins": [{"table": t("yibao", "psn_info"), "on": "setl_d.psn_no = psn_info.psn_no"},
                              {"table": t("yibao", "setl_d"), "as": "cx", "on": "setl_d.setl_id = cx.init_setl_id"}],
                    "where": {"refd_setl_flag": "0", "vali_flag": "1", "cx.setl_id": {"null": True}}},
         "identity": {"column": "psn_info.certno"},
         "facts": [{"name": "medical_own", "column": "setl_d.psn_pay", "type": "money", "unit": "fen",
                    "date": {"column": "setl_d.setl_time", "format": "datetime"},
                    "attrs": {"settlement": "setl_d.setl_id"}}]},
        {"name": "certificates", "department": "canlian",
         "source": {"table": t("canlian", "cjrz_ffjl"), "primary_key": "ffid",
                    "joins": [{"table": t("canlian", "cjr_jbxx"), "on": "cjrz_ffjl.cjrid = cjr_jbxx.cjrid"}],
                    "where": {"zxbz": "0"}},
         "identity": {"column": "cjr_jbxx.sfzh"},
         "facts": [{"name": "disability_grade", "column": "cjdj", "type": "code", "date": "fzrq",
                    "attrs": {"certificate": "cjrzh", "seq": "ffid"}}]},
        {"name": "registry", "department": "huji",
         "source": {"table": t("huji", "RK_BDJL"), "primary_key": "BDID"},
         "identity": {"column": "GMSFHM"},
         "facts": [{"name": "registry_status", "column": "BDHZT", "type": "code",
                    "date": {"column": "BDRQ", "format": "YYYYMMDD"}, "attrs": {"seq": "BDID"}}]},
    ]


@pytest.fixture(scope="module")
def facts(depts):  # noqa: F811
    out: dict[str, list[Fact]] = defaultdict(list)
    for m in _mappings(depts.t):
        m["source"] = {"kind": "sql", "url": depts.url(m["department"]), **m["source"]}
        a = open_adapter(parse_mapping(m))
        a.check()
        for item in a.records():
            if isinstance(item, Record):
                out[item.identity].extend(item.facts)
    return out


@pytest.fixture(scope="module")
def fed(depts):  # noqa: F811
    f = Federation.sqlite(depts.folder) if depts.kind == "sqlite" else Federation.postgres(depts.pg)
    yield f
    f.close()


def _ym(d: date) -> int:
    return d.year * 100 + d.month


def _add(m: int, k: int) -> int:
    y, mo = divmod(m // 100 * 12 + m % 100 - 1 + k, 12)
    return y * 100 + mo + 1


def _held(f: Fact, day: date) -> bool:
    return f.on is not None and f.on <= day and (f.until is None or f.until >= day)


def _latest(fs: list[Fact], day: date) -> Fact | None:
    on_or_before = [f for f in fs if f.on is not None and f.on <= day]
    return max(on_or_before, key=lambda f: (f.on, int(f.attrs["seq"])), default=None)


@pytest.mark.parametrize("ref", [202608, 202603])
def test_every_acceptance_figure_from_facts(facts, fed, ref):
    wf, wt = _add(ref, -12), _add(ref, -1)
    y, mo = divmod(ref, 100)
    end = date(y + mo // 12, mo % 12 + 1, 1) - timedelta(days=1)     # the last day of R
    months = [_add(wf, k) for k in range(12)]
    checked = 0
    for h in HOUSEHOLDS:
        report = verify(fed, D.members(h), ref)
        for m in report.members:
            fs = facts.get(m.id18, [])
            by = defaultdict(list)
            for f in fs:
                by[f.name].append(f)

            def window_sum(name: str, item: str | None = None, by: dict = by) -> Decimal:
                return sum((f.value for f in by[name] if f.on and wf <= _ym(f.on) <= wt  # type: ignore[misc]
                            and (item is None or f.attrs.get("item") == item)), Decimal("0.00"))

            got_income = {
                "wages": window_sum("wage"), "pension": window_sum("pension"),
                "labour": window_sum("tax_income", "0400"), "business": window_sum("tax_income", "0600"),
                "unemployment": sum((f.value * sum(1 for mo in months if _ym(f.on) <= mo  # type: ignore[operator,arg-type]
                                                   and (f.until is None or mo <= _ym(f.until)))
                                     for f in by["unemployment_benefit"]), Decimal("0.00")),
            }
            for item, fig in m.income.items():
                if fig.status == OK:
                    assert got_income[item] == fig.value, (h, m.id18[-4:], item)
                    checked += 1
            if m.registry.status == OK:
                last = _latest(by["registry_status"], end)
                shown = (last.value, last.on.strftime("%Y%m%d")) if last and last.on else None
                assert shown == (tuple(m.registry.value) if m.registry.value else None), (h, m.id18[-4:])
                checked += 1
            if m.vehicles.status == OK:
                assert sum(1 for f in by["vehicle"] if _held(f, end) and f.value >= 100000) == m.vehicles.value
                checked += 1
            if m.properties.status == OK:
                held = {f.attrs["right"] for f in by["residential"] if _held(f, end)}
                assert len(held) == m.properties.value
                checked += 1
            if m.fund_balance.status == OK:
                accounts = {f.attrs["account"] for f in by["fund_balance"]}
                bal = sum((_latest([f for f in by["fund_balance"] if f.attrs["account"] == a], end).value  # type: ignore[union-attr]
                           for a in accounts if _latest([f for f in by["fund_balance"] if f.attrs["account"] == a], end)),
                          Decimal("0.00"))
                assert bal == m.fund_balance.value
                checked += 1
            if m.medical_settlements.status == OK:
                med = [f for f in by["medical_own"] if wf <= _ym(f.on) <= wt]  # type: ignore[arg-type]
                assert len({f.attrs["settlement"] for f in med}) == m.medical_settlements.value
                assert sum((f.value for f in med), Decimal("0.00")) == m.medical_own.value
                checked += 1
            if m.certificates.status == OK:
                certs = {f.attrs["certificate"] for f in by["disability_grade"] if f.on <= end}  # type: ignore[operator]
                assert len(certs) == m.certificates.value
                last = _latest(by["disability_grade"], end)
                assert (last.value if last else None) == m.grade.value
                checked += 1
    assert checked >= 120   # every member's figures held by a department, not a few
