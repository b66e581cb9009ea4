"""残疾人联合会 — disability certificates (第二代残疾人证).

``cjr_jbxx`` holds the person (sex as the words 男/女, identity in ``sfzh``, sometimes typed in
full-width digits); ``cjrz_ffjl`` one row per *issue* of a certificate: 首次 (first issue), 换领
(replacement at expiry) or 补领 (reissue after loss). A replacement keeps the certificate number,
so the number of certificates a person holds is the number of distinct ``cjrzh``, not of rows.
The certificate number is the holder's 18-character identity number followed by the category
digit and the grade digit: it must never be carried or shown. Category and grade are Chinese
text (视力残疾…多重残疾, 一级…四级).
"""

from __future__ import annotations

from datetime import date

from ._model import Household
from ._sink import Col, Table

KEY = "canlian"
TITLE = "残疾人联合会"

CATEGORIES = {1: "视力残疾", 2: "听力残疾", 3: "言语残疾", 4: "肢体残疾", 5: "智力残疾", 6: "精神残疾", 7: "多重残疾"}
GRADES = {1: "一级", 2: "二级", 3: "三级", 4: "四级"}

TABLES = (
    Table("cjr_jbxx", "残疾人基本信息", (
        Col("cjrid", "BIGINT", "残疾人ID", key=True),
        Col("xm", "VARCHAR(50)", "姓名"),
        Col("xb", "VARCHAR(2)", "性别：男/女"),
        Col("sfzh", "VARCHAR(20)", "身份证号"),
        Col("csrq", "DATE", "出生日期"),
    ), indexes=(("sfzh",),)),
    Table("cjrz_ffjl", "残疾人证发放记录（每次发证一行）", (
        Col("ffid", "BIGINT", "发放记录ID", key=True),
        Col("cjrid", "BIGINT", "残疾人ID"),
        Col("cjrzh", "VARCHAR(20)", "残疾人证号（身份证号+类别+等级）"),
        Col("cjlb", "VARCHAR(10)", "残疾类别：视力/听力/言语/肢体/智力/精神/多重残疾"),
        Col("cjdj", "VARCHAR(4)", "残疾等级：一级/二级/三级/四级"),
        Col("lzlx", "VARCHAR(4)", "领证类型：首次/换领/补领"),
        Col("fzrq", "DATE", "发证日期"),
        Col("yxqz", "DATE", "有效期至"),
        Col("zxbz", "VARCHAR(1)", "注销标志：0正常 1已注销"),
    ), indexes=(("cjrid",),)),
    Table("sjtq", "数据提取", (
        Col("jzrq", "DATE", "数据截止日期", key=True),
    )),
)


def data_date(extract: date) -> date:
    return extract


class Writer:
    def __init__(self, emit, extract: date) -> None:
        self.emit, self.until = emit, data_date(extract)
        self.person = self.issue = 0
        emit("sjtq", (self.until.isoformat(),))

    def household(self, h: Household) -> None:
        for p in h.members:
            certs = [c for c in p.certs if c.issued <= self.until]
            if not certs:
                continue
            self.person += 1
            self.emit("cjr_jbxx", (self.person, p.name, "男" if p.sex == "1" else "女", p.ident(KEY),
                                   p.birth.isoformat()))
            for c in certs:
                self.issue += 1
                self.emit("cjrz_ffjl", (self.issue, self.person, f"{p.id18}{c.category}{c.grade}",
                                        CATEGORIES[c.category], GRADES[c.grade], c.kind, c.issued.isoformat(),
                                        c.valid_to.isoformat(), "1" if c.cancelled else "0"))
