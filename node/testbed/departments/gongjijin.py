"""住房公积金管理中心 — housing-fund accounts and their ledger.

``grzhxx`` holds one account per person (identity in ``zjhm``; this system stores a final
``x`` in lower case), its status 正常 or 封存 (sealed: the employer stopped depositing) and the
balance as of the extract. The ledger ``grmxz`` has one row per posting: monthly deposits
(汇缴, period ``hjny`` as ``YYYY-MM`` text), interest (结息) and withdrawals (提取). ``fse`` is
always positive — the type says whether it adds or subtracts — and ``ye`` is the balance after
the posting, so the balance on a day is ``ye`` of the last posting on or before it.
"""

from __future__ import annotations

from datetime import date

from ._model import Household, add_months, month_of, months, unit_code, yuan
from ._sink import Col, Table

KEY = "gongjijin"
TITLE = "住房公积金管理中心"

TABLES = (
    Table("grzhxx", "个人账户信息", (
        Col("grzh", "VARCHAR(20)", "个人账号", key=True),
        Col("xingming", "VARCHAR(50)", "姓名"),
        Col("zjlx", "VARCHAR(2)", "证件类型：01身份证"),
        Col("zjhm", "VARCHAR(20)", "证件号码"),
        Col("dwzh", "VARCHAR(20)", "单位账号"),
        Col("khrq", "DATE", "开户日期"),
        Col("grzhzt", "VARCHAR(4)", "个人账户状态：正常/封存"),
        Col("fcrq", "DATE", "封存日期"),
        Col("yjce", "NUMERIC(12,2)", "月缴存额（元，单位+个人）"),
        Col("grzhye", "NUMERIC(14,2)", "个人账户余额（元，提取时）"),
    ), indexes=(("zjhm",),)),
    Table("grmxz", "个人明细账", (
        Col("lsh", "BIGINT", "流水号", key=True),
        Col("grzh", "VARCHAR(20)", "个人账号"),
        Col("ywlx", "VARCHAR(4)", "业务类型：汇缴/补缴/提取/结息"),
        Col("hjny", "VARCHAR(7)", "汇缴年月 YYYY-MM（缴存时）"),
        Col("fse", "NUMERIC(14,2)", "发生额（元，均为正数，按业务类型增减）"),
        Col("ye", "NUMERIC(14,2)", "余额（元）"),
        Col("jzrq", "DATE", "记账日期"),
    ), indexes=(("grzh",),)),
    Table("sjtq", "数据提取", (
        Col("jzrq", "DATE", "数据截止日期", key=True),
    )),
)


def data_date(extract: date) -> date:
    return extract


class Writer:
    def __init__(self, emit, extract: date) -> None:
        self.emit, self.until = emit, data_date(extract)
        self.lsh = 0
        emit("sjtq", (self.until.isoformat(),))

    def household(self, h: Household) -> None:
        for p in h.members:
            f = p.fund
            if f is None or f.opened > self.until:
                continue
            sealed = f.sealed is not None and f.sealed <= self.until
            last = min(f.deposits.last or 999912, month_of(self.until))
            if sealed:
                last = min(last, add_months(month_of(f.sealed), -1))
            posts = [(date(m // 100, m % 100, 15), 0, "汇缴", f"{m // 100}-{m % 100:02d}", f.deposits.fen)
                     for m in months(f.deposits.first, last)]
            posts += [(d, 1, kind, None, fen) for d, kind, fen in f.extra]
            balance, rows = 0, []
            for day, _, kind, period, fen in sorted(posts, key=lambda x: (x[0], x[1])):
                if day > self.until:
                    continue
                balance += -fen if kind == "提取" else fen
                rows.append((kind, period, fen, balance, day))
            ident = p.ident(KEY)
            self.emit("grzhxx", (f.account, p.name, "01", ident, unit_code(f.employer, "0301"),
                                 f.opened.isoformat(), "封存" if sealed else "正常",
                                 f.sealed.isoformat() if sealed else None, yuan(f.deposits.fen), yuan(balance)))
            for kind, period, fen, bal, day in rows:
                self.lsh += 1
                self.emit("grmxz", (self.lsh, f.account, kind, period, yuan(fen), yuan(bal), day.isoformat()))
