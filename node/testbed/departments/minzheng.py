"""民政局 — social assistance (低保/特困 families and temporary assistance).

``jz_jt`` has one row per assisted family: kind 低保 or 特困, status 在保 (in force) or 停保
(stopped), first and last month as ``YYYYMM`` text (``jsny`` empty while in force), the
family's monthly amount in yuan and its town (乡镇/街道, where a stop warning is routed).
``jz_cy`` lists every family member and whether they are a recipient (``sfbzdx`` 是/否);
identity numbers here are typed by hand: padded, full-width, or mistyped. ``jz_lsjz`` holds
one-off temporary assistance. None of these payments is income.
"""

from __future__ import annotations

from datetime import date

from ._model import Household, month_of, yuan
from ._sink import Col, Table

KEY = "minzheng"
TITLE = "民政局（社会救助）"

TOWNS = {"370303001": "车站街道", "370303002": "公园街道", "370303003": "杏园街道", "370303100": "湖田镇",
         "370303101": "中埠镇", "370303102": "房镇镇"}

TABLES = (
    Table("jz_jt", "救助家庭", (
        Col("jtbh", "VARCHAR(20)", "家庭编号", key=True),
        Col("hzxm", "VARCHAR(50)", "户主姓名"),
        Col("hzsfzh", "VARCHAR(20)", "户主身份证号"),
        Col("jzlb", "VARCHAR(4)", "救助类别：低保/特困"),
        Col("jzzt", "VARCHAR(4)", "救助状态：在保/停保"),
        Col("ksny", "VARCHAR(6)", "开始年月 YYYYMM"),
        Col("jsny", "VARCHAR(6)", "结束年月 YYYYMM（在保为空）"),
        Col("bzrs", "INTEGER", "保障人数"),
        Col("yjzje", "NUMERIC(10,2)", "月救助金额（元，全家）"),
        Col("szxz", "VARCHAR(9)", "所在乡镇（街道）代码"),
        Col("xzmc", "VARCHAR(20)", "乡镇（街道）名称"),
    )),
    Table("jz_cy", "救助家庭成员", (
        Col("cyid", "BIGINT", "成员ID", key=True),
        Col("jtbh", "VARCHAR(20)", "家庭编号"),
        Col("xm", "VARCHAR(50)", "姓名"),
        Col("sfzh", "VARCHAR(20)", "身份证号"),
        Col("yhzgx", "VARCHAR(10)", "与户主关系"),
        Col("sfbzdx", "VARCHAR(2)", "是否保障对象：是/否"),
    ), indexes=(("jtbh",), ("sfzh",))),
    Table("jz_lsjz", "临时救助", (
        Col("lsjzid", "BIGINT", "临时救助ID", key=True),
        Col("sfzh", "VARCHAR(20)", "身份证号"),
        Col("xm", "VARCHAR(50)", "姓名"),
        Col("jzje", "NUMERIC(10,2)", "救助金额（元）"),
        Col("jzrq", "DATE", "救助日期"),
        Col("jzyy", "VARCHAR(100)", "救助原因"),
    )),
    Table("sjtq", "数据提取", (
        Col("jzrq", "DATE", "数据截止日期", key=True),
    )),
)


def data_date(extract: date) -> date:
    return extract


class Writer:
    def __init__(self, emit, extract: date) -> None:
        self.emit, self.until = emit, data_date(extract)
        self.month = month_of(self.until)
        self.member = self.temporary = 0
        emit("sjtq", (self.until.isoformat(),))

    def household(self, h: Household) -> None:
        for a in h.assistance:
            if a.first > self.month:
                continue
            stopped = a.last is not None and a.last <= self.month
            head = a.members[0]
            self.emit("jz_jt", (a.family_no, head.name, head.ident(KEY), a.kind, "停保" if stopped else "在保",
                                str(a.first), str(a.last) if stopped else None, len(a.recipients), yuan(a.fen),
                                a.town, TOWNS[a.town]))
            for p in a.members:
                self.member += 1
                self.emit("jz_cy", (self.member, a.family_no, p.name, p.ident(KEY), p.relation,
                                    "是" if any(p is r for r in a.recipients) else "否"))
        for t in h.temporary:
            if t.day <= self.until:
                self.temporary += 1
                self.emit("jz_lsjz", (self.temporary, t.person.ident(KEY), t.person.name, yuan(t.fen),
                                      t.day.isoformat(), t.reason))
