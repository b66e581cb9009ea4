"""不动产登记 — real-estate rights (names after the 不动产登记数据库 standard's abbreviations).

One row of ``fdcq`` per right (a property held by one or more holders). ``qszt`` is the status
as of the extract: 现势 (current), 历史 (superseded, e.g. the seller's right after a transfer;
``zxsj`` is the day it ended), 注销 (cancelled, e.g. demolished). Dates are ``YYYYMMDD`` text.
Holders are in the join table ``qlr``: persons with an identity number (``zjzl`` '1'), or
organisations with an 18-character unified social credit code in the *same* column (``zjzl``
'7'); holders of records from before 2000 often carry a 15-digit legacy number.
"""

from __future__ import annotations

from datetime import date

from ._model import Household
from ._sink import Col, Table

KEY = "budongchan"
TITLE = "自然资源和规划局（不动产登记中心）"

TABLES = (
    Table("fdcq", "房地产权（房屋所有权）", (
        Col("ywh", "VARCHAR(20)", "业务号", key=True),
        Col("bdcdyh", "VARCHAR(28)", "不动产单元号"),
        Col("bdcqzh", "VARCHAR(60)", "不动产权证号（2016年前为房屋所有权证号）"),
        Col("zl", "VARCHAR(200)", "坐落"),
        Col("jzmj", "NUMERIC(10,2)", "建筑面积（平方米）"),
        Col("ghyt", "VARCHAR(10)", "规划用途：住宅/商业/车库"),
        Col("gyfs", "VARCHAR(10)", "共有方式：单独所有/共同共有/按份共有"),
        Col("djsj", "VARCHAR(8)", "登簿日期 YYYYMMDD"),
        Col("zxsj", "VARCHAR(8)", "注销（转为历史）日期 YYYYMMDD"),
        Col("qszt", "VARCHAR(4)", "权属状态：现势/历史/注销"),
    ), indexes=(("bdcdyh",),)),
    Table("qlr", "权利人", (
        Col("qlrid", "BIGINT", "权利人记录ID", key=True),
        Col("ywh", "VARCHAR(20)", "业务号"),
        Col("qlrmc", "VARCHAR(100)", "权利人名称"),
        Col("zjzl", "VARCHAR(2)", "证件种类：1身份证 7统一社会信用代码 99其他"),
        Col("zjh", "VARCHAR(30)", "证件号"),
        Col("qlrlx", "VARCHAR(10)", "权利人类型：个人/企业/事业单位"),
        Col("qlbl", "VARCHAR(10)", "权利比例（按份共有时）"),
    ), indexes=(("ywh",), ("zjh",))),
    Table("tq_pc", "提取批次", (
        Col("pcbh", "VARCHAR(20)", "批次编号", key=True),
        Col("jzrq", "VARCHAR(8)", "数据截止日期 YYYYMMDD"),
    )),
)


def data_date(extract: date) -> date:
    return extract


class Writer:
    def __init__(self, emit, extract: date) -> None:
        self.emit, self.until = emit, data_date(extract)
        self.right = self.holder = 0
        emit("tq_pc", (f"BDC{extract:%Y%m%d}", f"{self.until:%Y%m%d}"))

    def household(self, h: Household) -> None:
        for r in h.rights:
            if r.start > self.until:
                continue
            ended = r.end is not None and r.end <= self.until
            self.right += 1
            ywh = f"{r.start:%Y%m%d}{self.right:08d}"
            cert = (f"鲁({r.start.year})淄博市不动产权第{self.right:07d}号" if r.start.year >= 2016
                    else f"淄房权证张店字第{self.right:08d}号")
            self.emit("fdcq", (ywh, r.unit, cert, r.address, r.area, r.use, r.shares, f"{r.start:%Y%m%d}",
                               f"{r.end:%Y%m%d}" if ended else None, r.ended_as if ended else "现势"))
            share = f"{100 // len(r.owners)}%" if r.shares == "按份共有" else None
            for o in r.owners:
                self.holder += 1
                if o.person is not None:
                    kind, doc = "个人", ("1" if o.ident.strip() else "99")
                else:
                    kind, doc = ("事业单位" if o.ident.startswith("12") else "企业"), "7"
                self.emit("qlr", (self.holder, ywh, o.name, doc, o.ident, kind, share))
