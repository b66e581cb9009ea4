"""税务 — individual income tax returns (自然人税收管理系统 style, lower-case pinyin initials).

Every income line of a withholding or self-filed return is one row of ``sb_grsds_mx`` with the
payee's identity number (``sfzjhm``, exported from a CHAR column: often space-padded), an income item code
(``sdxmdm``, dictionary ``dm_sdxm``), the income in yuan with 2 decimals, the tax period from/to
as ``YYYYMM`` text (monthly for wages and labour, quarterly for business income), the tax year
as an INTEGER and a status: '1' valid, '2' cancelled (作废), '3' superseded by a correction
(已更正; the correcting row names it in ``ypzxh``). ``pzxh`` is a 20-digit voucher number.

Returns for a period are filed by the 15th of the next month, so the extract covers the periods
up to the last month whose deadline has passed (``sj_tqxx.sjjzq``), not the extract's own month.
"""

from __future__ import annotations

from datetime import date, timedelta

from ._model import Household, add_months, first_day, month_of, months, yuan
from ._sink import Col, Table

KEY = "shuiwu"
TITLE = "税务局（个人所得税）"

ITEMS = {
    "0101": "工资薪金所得", "0400": "劳务报酬所得", "0500": "稿酬所得", "0600": "经营所得",
    "0700": "利息、股息、红利所得", "0800": "财产租赁所得",
}

TABLES = (
    Table("zrr_jbxx", "自然人基本信息", (
        Col("zrrdah", "VARCHAR(20)", "自然人档案号", key=True),
        Col("sfzjlx", "VARCHAR(3)", "身份证件类型：201居民身份证"),
        Col("sfzjhm", "VARCHAR(20)", "身份证件号码"),
        Col("xm", "VARCHAR(50)", "姓名"),
        Col("gjdq", "VARCHAR(3)", "国籍（地区）：156中国"),
    ), indexes=(("sfzjhm",),)),
    Table("sb_grsds_mx", "个人所得税申报明细（每个所得项目一行）", (
        Col("mxxh", "BIGINT", "明细序号", key=True),
        Col("pzxh", "VARCHAR(20)", "申报凭证序号"),
        Col("sfzjhm", "VARCHAR(20)", "纳税人身份证件号码（CHAR 导出，常带空格）"),
        Col("xm", "VARCHAR(50)", "纳税人姓名"),
        Col("sdxmdm", "VARCHAR(4)", "所得项目代码（见 dm_sdxm）"),
        Col("sre", "NUMERIC(14,2)", "收入额（元）"),
        Col("skssqq", "VARCHAR(6)", "税款所属期起 YYYYMM"),
        Col("skssqz", "VARCHAR(6)", "税款所属期止 YYYYMM"),
        Col("nd", "INTEGER", "所属年度 YYYY"),
        Col("sbzt", "VARCHAR(1)", "申报状态：1正常 2已作废 3已更正"),
        Col("ypzxh", "VARCHAR(20)", "更正申报时原申报凭证序号"),
        Col("kjywrmc", "VARCHAR(100)", "扣缴义务人名称（自行申报为空）"),
        Col("sbrq", "DATE", "申报日期"),
    ), indexes=(("sfzjhm",),)),
    Table("dm_sdxm", "所得项目代码表", (
        Col("sdxmdm", "VARCHAR(4)", "所得项目代码", key=True),
        Col("sdxmmc", "VARCHAR(50)", "所得项目名称"),
    )),
    Table("sj_tqxx", "数据提取信息", (
        Col("tqrq", "DATE", "提取日期", key=True),
        Col("sjjzq", "VARCHAR(6)", "数据截止所属期 YYYYMM（含）"),
    )),
)


def data_date(extract: date) -> date:
    """The last day of the last period whose filing deadline (the 15th of the next month) has passed."""
    m = add_months(month_of(extract), -1 if extract.day >= 15 else -2)
    return first_day(add_months(m, 1)) - timedelta(days=1)


def _filed(last: int) -> date:
    """Filed between the 1st and the 14th of the next month (varying by period)."""
    return first_day(add_months(last, 1)) + timedelta(days=(last * 7) % 14)


class Writer:
    def __init__(self, emit, extract: date) -> None:
        self.emit, self.until = emit, data_date(extract)
        self.last = month_of(self.until)
        self.row = self.person = 0
        for code, name in ITEMS.items():
            emit("dm_sdxm", (code, name))
        emit("sj_tqxx", (extract.isoformat(), str(self.last)))

    def _line(self, p, code: str, first: int, last: int, fen: int, status: str, original: str | None,
              agent: str) -> str:
        self.row += 1
        filed = _filed(last)
        voucher = f"1{filed:%Y%m%d}{self.row:011d}"
        self.emit("sb_grsds_mx", (self.row, voucher, p.ident(KEY), p.name, code, yuan(fen), str(first), str(last),
                                  last // 100, status, original, agent or None, filed.isoformat()))
        return voucher

    def household(self, h: Household) -> None:
        for p in h.members:
            if not (p.tax_wages or p.tax or KEY in p.present):
                continue
            self.person += 1
            self.emit("zrr_jbxx", (f"1013703{self.person:013d}", "201", p.id18, p.name, "156"))
            for s in p.tax_wages:
                for m in months(s.first, min(s.last or self.last, self.last)):
                    self._line(p, "0101", m, m, s.fen, "1", None, p.employer)
            vouchers: dict[int, str] = {}
            for item in p.tax:
                if item.last > self.last:
                    continue
                original = vouchers.get(id(item.replaces)) if item.replaces else None
                vouchers[id(item)] = self._line(p, item.code, item.first, item.last, item.fen, item.status,
                                                original, item.agent)
