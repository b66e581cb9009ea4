"""医疗保障局 — medical-insurance settlements (国家医保信息平台 English-abbreviation columns).

``psn_info`` holds the insured (identity in ``certno``); ``setl_d`` one row per settlement
with a 24-digit ``setl_id`` and a 20-digit ``mdtrt_id`` (long numbers that are not identity
numbers), the medical type (``med_type``: 11 outpatient, 14 chronic-disease outpatient, 21
inpatient), the settlement time, and amounts in fen: total cost, fund payment and the part the
patient paid (``psn_pay``). A cancelled settlement stays as it was; a cancellation row
(``refd_setl_flag`` '1') with negated amounts names it in ``init_setl_id``; a re-settlement is a
new settlement with a new id. Two settlements on the same day for the same amount are two
settlements when their ids differ.
"""

from __future__ import annotations

from datetime import date

from ._model import Household
from ._sink import Col, Table

KEY = "yibao"
TITLE = "医疗保障局"

MED_TYPES = {"11": "普通门诊", "14": "门诊慢特病", "21": "普通住院", "41": "定点药店购药"}

TABLES = (
    Table("psn_info", "人员基本信息", (
        Col("psn_no", "VARCHAR(30)", "人员编号", key=True),
        Col("psn_cert_type", "VARCHAR(6)", "人员证件类型：01居民身份证"),
        Col("certno", "VARCHAR(50)", "证件号码"),
        Col("psn_name", "VARCHAR(50)", "人员姓名"),
        Col("gend", "VARCHAR(1)", "性别：1男 2女"),
        Col("brdy", "DATE", "出生日期"),
        Col("insutype", "VARCHAR(6)", "险种类型：310职工基本医疗保险 390城乡居民基本医疗保险"),
    ), indexes=(("certno",),)),
    Table("setl_d", "结算信息", (
        Col("setl_id", "VARCHAR(30)", "结算ID", key=True),
        Col("mdtrt_id", "VARCHAR(30)", "就诊ID"),
        Col("psn_no", "VARCHAR(30)", "人员编号"),
        Col("med_type", "VARCHAR(6)", "医疗类别（见 dm_med_type）"),
        Col("setl_time", "TIMESTAMP", "结算时间"),
        Col("medfee_sumamt", "BIGINT", "医疗费总额（分）"),
        Col("fund_pay_sumamt", "BIGINT", "基金支付总额（分）"),
        Col("psn_pay", "BIGINT", "个人负担金额（分）"),
        Col("fixmedins_name", "VARCHAR(100)", "定点医药机构名称"),
        Col("refd_setl_flag", "VARCHAR(1)", "退费结算标志：0否 1是（冲销行）"),
        Col("init_setl_id", "VARCHAR(30)", "原结算ID（冲销行）"),
        Col("vali_flag", "VARCHAR(1)", "有效标志：1有效"),
    ), indexes=(("psn_no",), ("init_setl_id",))),
    Table("dm_med_type", "医疗类别代码", (
        Col("code", "VARCHAR(6)", "代码", key=True),
        Col("name", "VARCHAR(20)", "名称"),
    )),
    Table("etl_batch", "数据抽取批次", (
        Col("batch_id", "VARCHAR(20)", "批次号", key=True),
        Col("extract_time", "TIMESTAMP", "抽取时间"),
        Col("data_until", "DATE", "数据截止日期"),
    )),
)


def data_date(extract: date) -> date:
    return extract


class Writer:
    def __init__(self, emit, extract: date) -> None:
        self.emit, self.until = emit, data_date(extract)
        self.person = self.setl = 0
        for code, name in MED_TYPES.items():
            emit("dm_med_type", (code, name))
        emit("etl_batch", (f"YB{extract:%Y%m%d}", f"{extract.isoformat()} 20:45:00", self.until.isoformat()))

    def _id(self, when) -> str:
        self.setl += 1
        return f"{when:%Y%m%d%H%M%S}3703{self.setl:06d}"

    def household(self, h: Household) -> None:
        for p in h.members:
            if not (p.settlements or KEY in p.present):
                continue
            self.person += 1
            psn = f"3703{self.person:016d}"
            insutype = "310" if p.wages else "390"
            self.emit("psn_info", (psn, "01", p.ident(KEY), p.name, p.sex, p.birth.isoformat(), insutype))
            for s in p.settlements:
                if s.when.date() > self.until:
                    continue
                sid = self._id(s.when)
                visit = f"{s.when:%Y%m%d}{self.setl:012d}"
                self.emit("setl_d", (sid, visit, psn, s.med_type, s.when.isoformat(sep=" "), s.total, s.fund,
                                     s.own, s.hospital, "0", None, "1"))
                if s.cancelled is not None and s.cancelled.date() <= self.until:
                    self.emit("setl_d", (self._id(s.cancelled), visit, psn, s.med_type,
                                         s.cancelled.isoformat(sep=" "), -s.total, -s.fund, -s.own, s.hospital,
                                         "1", sid, "1"))
