"""人社（社会保险）— social insurance, in the 金保工程 data dictionary's column codes.

Only ``ac01`` carries the identity number (``aac002``); the three payment tables refer to the
person by ``aac001``. Wage contributions (``ac43``) have one row per month *per insurance type*
(110 pension, 210 unemployment, 410 work injury) with the same wage base, in fen, the period
``aae002`` an INTEGER ``YYYYMM``; ``aae100`` '0' marks a voided row. Pensions (``ac84``) are
monthly, period ``aae003`` TEXT ``YYYYMM``, in yuan; ``aae117`` '2' is a payment returned by
the bank (not paid). Unemployment benefit (``jc04``) is one row per award with start and stop
dates, a monthly amount in yuan and status ``ajc093`` ('1' being paid, '2' stopped).
"""

from __future__ import annotations

from datetime import date

from ._model import Household, month_of, months, unit_code, yuan
from ._sink import Col, Table

KEY = "shebao"
TITLE = "人力资源和社会保障局（社会保险）"

TABLES = (
    Table("ac01", "个人基本信息", (
        Col("aac001", "BIGINT", "个人编号", key=True),
        Col("aac002", "VARCHAR(20)", "公民身份号码"),
        Col("aac003", "VARCHAR(50)", "姓名"),
        Col("aac004", "VARCHAR(1)", "性别：1男 2女"),
        Col("aac006", "INTEGER", "出生日期 YYYYMMDD"),
        Col("aac008", "VARCHAR(1)", "人员参保状态：1正常参保 2暂停参保 4终止参保"),
        Col("aae036", "TIMESTAMP", "经办时间"),
    ), indexes=(("aac002",),)),
    Table("ac43", "个人缴费明细（每险种每月一行）", (
        Col("aaz223", "BIGINT", "缴费明细ID", key=True),
        Col("aac001", "BIGINT", "个人编号"),
        Col("aab001", "VARCHAR(12)", "单位编号"),
        Col("aae140", "VARCHAR(3)", "险种类型：110企业职工基本养老保险 210失业保险 410工伤保险"),
        Col("aae002", "INTEGER", "费款所属期 YYYYMM"),
        Col("aic020", "BIGINT", "缴费工资（分）"),
        Col("aae143", "VARCHAR(2)", "缴费类型：10正常应缴 31补缴"),
        Col("aae100", "VARCHAR(1)", "有效标志：1有效 0无效"),
    ), indexes=(("aac001",),)),
    Table("ac84", "养老金发放明细", (
        Col("aaz220", "BIGINT", "发放明细ID", key=True),
        Col("aac001", "BIGINT", "个人编号"),
        Col("aae003", "VARCHAR(6)", "发放所属期 YYYYMM"),
        Col("aae019", "NUMERIC(12,2)", "发放金额（元）"),
        Col("aae117", "VARCHAR(1)", "发放标志：1已发放 2银行退回"),
    ), indexes=(("aac001",),)),
    Table("jc04", "失业保险金待遇核定", (
        Col("aaz159", "BIGINT", "待遇ID", key=True),
        Col("aac001", "BIGINT", "个人编号"),
        Col("ajc090", "NUMERIC(10,2)", "失业保险金月发放标准（元）"),
        Col("aae030", "DATE", "开始日期"),
        Col("aae031", "DATE", "终止日期（空：仍在享受）"),
        Col("ajc093", "VARCHAR(1)", "待遇状态：1享受中 2已停发"),
    ), indexes=(("aac001",),)),
    Table("sjtq", "数据提取记录", (
        Col("pch", "VARCHAR(20)", "批次号", key=True),
        Col("tqsj", "TIMESTAMP", "提取时间"),
        Col("sjjzny", "INTEGER", "数据截止年月 YYYYMM（含）"),
    )),
)


def data_date(extract: date) -> date:
    return extract


class Writer:
    def __init__(self, emit, extract: date) -> None:
        until = data_date(extract)
        self.emit, self.until, self.last = emit, until, month_of(until)
        self.ids = {t.name: 0 for t in TABLES}
        emit("sjtq", (f"SB{until:%Y%m%d}", f"{extract.isoformat()} 22:30:00", self.last))

    def _next(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def household(self, h: Household) -> None:
        for p in h.members:
            if not (p.wages or p.pension or p.benefits or p.void_wages or KEY in p.present):
                continue
            pid = self._next("ac01")
            state = "1" if any(s.last is None for s in p.wages) else ("4" if p.pension else "2")
            enrolled = min(date(p.birth.year + 18, 9, 1), self.until)
            self.emit("ac01", (pid, p.ident(KEY), p.name, p.sex, int(f"{p.birth:%Y%m%d}"), state,
                               f"{enrolled.isoformat()} 09:00:00"))
            unit = unit_code(p.employer)
            for s in p.wages:
                for m in months(s.first, min(s.last or self.last, self.last)):
                    for kind in p.ss_types:
                        self.emit("ac43", (self._next("ac43"), pid, unit, kind, m, s.fen, "10", "1"))
            for m, fen in p.void_wages:
                if m <= self.last:
                    self.emit("ac43", (self._next("ac43"), pid, unit, "110", m, fen, "10", "0"))
            for s in p.pension:
                for m in months(s.first, min(s.last or self.last, self.last)):
                    self.emit("ac84", (self._next("ac84"), pid, str(m), yuan(s.fen), "1"))
            for m in p.pension_returned:
                if m <= self.last:
                    fen = p.pension[-1].fen if p.pension else 0
                    self.emit("ac84", (self._next("ac84"), pid, str(m), yuan(fen), "2"))
            for b in p.benefits:
                if b.start > self.until:
                    continue
                stopped = b.stop is not None and b.stop <= self.until
                self.emit("jc04", (self._next("jc04"), pid, yuan(b.fen), b.start.isoformat(),
                                   b.stop.isoformat() if stopped else None, "2" if stopped else "1"))
