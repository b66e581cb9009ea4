"""公安户籍 — household registry (an Oracle system exported as is: upper-case names).

Persons belong to a household (户, ``HH``) with a relation to its head (``YHZGX``, Chinese text).
``RYZT`` is the status *as of the extract*; the status on any earlier day comes from the change
records ``RK_BDJL`` (the latest change whose ``BDRQ`` is on or before that day). A death or move
is often entered (``DJSJ``) days after it happened (``BDRQ``).
"""

from __future__ import annotations

from datetime import date

from ._model import Household
from ._sink import Col, Table

KEY = "huji"
TITLE = "公安局户籍管理（人口信息）"

_STATUS_AFTER = {"出生": "正常", "迁入": "正常", "死亡": "死亡", "迁出": "迁出"}

TABLES = (
    Table("HU_JBXX", "户基本信息", (
        Col("HH", "VARCHAR(12)", "户号", key=True),
        Col("HLB", "VARCHAR(10)", "户类别：家庭户/集体户"),
        Col("HZXM", "VARCHAR(50)", "户主姓名"),
        Col("SSXQ", "VARCHAR(6)", "省市县（区）行政区划代码"),
        Col("ZZ", "VARCHAR(200)", "住址"),
        Col("LHRQ", "DATE", "立户日期"),
    )),
    Table("RK_JBXX", "人口基本信息（RYZT 为提取时的状态）", (
        Col("RYNBID", "BIGINT", "人员内部ID", key=True),
        Col("GMSFHM", "VARCHAR(18)", "公民身份号码"),
        Col("XM", "VARCHAR(50)", "姓名"),
        Col("XB", "VARCHAR(1)", "性别：1男 2女"),
        Col("CSRQ", "DATE", "出生日期"),
        Col("HH", "VARCHAR(12)", "户号"),
        Col("YHZGX", "VARCHAR(10)", "与户主关系：户主/配偶/子/女/父/母/孙子/孙女/兄弟姐妹/其他"),
        Col("RYZT", "VARCHAR(4)", "人员状态：正常/死亡/迁出"),
        Col("GXSJ", "TIMESTAMP", "更新时间"),
    ), indexes=(("GMSFHM",), ("HH",))),
    Table("RK_BDJL", "人口变动记录", (
        Col("BDID", "BIGINT", "变动记录ID", key=True),
        Col("RYNBID", "BIGINT", "人员内部ID"),
        Col("GMSFHM", "VARCHAR(18)", "公民身份号码"),
        Col("BDLX", "VARCHAR(4)", "变动类型：出生/迁入/死亡/迁出"),
        Col("BDRQ", "VARCHAR(8)", "变动日期 YYYYMMDD"),
        Col("BDHZT", "VARCHAR(4)", "变动后人员状态：正常/死亡/迁出"),
        Col("DJSJ", "TIMESTAMP", "登记时间"),
    ), indexes=(("RYNBID",), ("GMSFHM",))),
    Table("SJ_TQPC", "数据提取批次", (
        Col("PCH", "VARCHAR(20)", "批次号", key=True),
        Col("TQSJ", "TIMESTAMP", "提取时间"),
        Col("SJJZRQ", "DATE", "数据截止日期"),
    )),
)


def data_date(extract: date) -> date:
    return extract


class Writer:
    def __init__(self, emit, extract: date) -> None:
        until = data_date(extract)
        self.emit, self.until = emit, until
        self.person_id = self.change_id = 0
        emit("SJ_TQPC", (f"HJ{until:%Y%m%d}01", f"{extract.isoformat()} 23:10:00", until.isoformat()))

    def household(self, h: Household) -> None:
        registered = [p for p in h.members if p.events]
        if not registered:
            return
        head = registered[0]
        self.emit("HU_JBXX", (h.hh, "家庭户", head.name, h.hh[:6], h.address, h.established.isoformat()))
        for p in registered:
            events = [e for e in p.events if e.day <= self.until and e.recorded.date() <= self.until]
            if not events:
                continue
            self.person_id += 1
            status = _STATUS_AFTER[events[-1].kind]
            self.emit("RK_JBXX", (self.person_id, p.ident(KEY), p.name, p.sex, p.birth.isoformat(), h.hh,
                                  p.relation, status, events[-1].recorded.isoformat(sep=" ")))
            for e in events:
                self.change_id += 1
                self.emit("RK_BDJL", (self.change_id, self.person_id, p.ident(KEY), e.kind, f"{e.day:%Y%m%d}",
                                      _STATUS_AFTER[e.kind], e.recorded.isoformat(sep=" ")))
