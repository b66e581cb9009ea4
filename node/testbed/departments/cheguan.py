"""车管所 — motor-vehicle registration (公安交管 六合一 style column names).

One row of ``jdc`` per vehicle and owner: a change of owner ends the old row (status B, 转出,
with ``zxrq``) and starts a new one (``djrq`` the transfer registration). ``zt`` holds the
status letters of the code table ``dm_jdczt`` (A normal, B transferred out, E deregistered, G
unprocessed violations — the owner still holds the vehicle — M compulsorily deregistered).
The owner is a person (``sfzmmc`` 'A', an identity number in ``sfzmhm``) or an organisation
(``sfzmmc`` 'B', a unified social credit code in the same column), in which case a person may
be named as the contact (``lxr``/``lxrsfzmhm``) without owning anything. Purchase price
``gzjg`` is in 万元 (10,000 yuan), six decimals. Dates are datetime text.
"""

from __future__ import annotations

from datetime import date

from ._model import Household
from ._sink import Col, Table

KEY = "cheguan"
TITLE = "公安局交通警察支队车辆管理所"

STATUS = {"A": "正常", "B": "转出", "C": "被盗抢", "D": "停驶", "E": "注销", "G": "违法未处理",
          "M": "强制注销", "Q": "逾期未检验"}

TABLES = (
    Table("jdc", "机动车登记信息", (
        Col("xh", "VARCHAR(14)", "机动车序号", key=True),
        Col("hpzl", "VARCHAR(2)", "号牌种类：02小型汽车 52小型新能源汽车"),
        Col("hphm", "VARCHAR(15)", "号牌号码"),
        Col("clsbdh", "VARCHAR(17)", "车辆识别代号"),
        Col("clpp", "VARCHAR(50)", "中文品牌"),
        Col("cllx", "VARCHAR(3)", "车辆类型：K33轿车 K31小型普通客车"),
        Col("syxz", "VARCHAR(1)", "使用性质：A非营运"),
        Col("syr", "VARCHAR(100)", "机动车所有人"),
        Col("sfzmmc", "VARCHAR(1)", "身份证明名称：A居民身份证 B统一社会信用代码"),
        Col("sfzmhm", "VARCHAR(30)", "身份证明号码"),
        Col("syq", "VARCHAR(1)", "所有权：1单位 2个人"),
        Col("lxr", "VARCHAR(50)", "联系人（单位车辆）"),
        Col("lxrsfzmhm", "VARCHAR(30)", "联系人身份证明号码"),
        Col("gzjg", "NUMERIC(12,6)", "购置价格（万元）"),
        Col("ccdjrq", "VARCHAR(19)", "初次登记日期"),
        Col("djrq", "VARCHAR(19)", "转移登记日期（本所有人取得日期，空则同初次登记）"),
        Col("zt", "VARCHAR(6)", "机动车状态（见 dm_jdczt）"),
        Col("zxrq", "VARCHAR(19)", "转出/注销日期"),
        Col("gxsj", "VARCHAR(19)", "更新时间"),
    ), indexes=(("sfzmhm",), ("lxrsfzmhm",))),
    Table("dm_jdczt", "机动车状态代码", (
        Col("dm", "VARCHAR(1)", "代码", key=True),
        Col("mc", "VARCHAR(20)", "名称"),
    )),
    Table("sjtq", "数据提取", (
        Col("tqsj", "VARCHAR(19)", "提取时间", key=True),
        Col("sjjzrq", "VARCHAR(10)", "数据截止日期 YYYY-MM-DD"),
    )),
)


def data_date(extract: date) -> date:
    return extract


def _dt(d) -> str | None:
    return None if d is None else d.isoformat(sep=" ")


class Writer:
    def __init__(self, emit, extract: date) -> None:
        self.emit, self.until = emit, data_date(extract)
        self.n = 0
        for code, name in STATUS.items():
            emit("dm_jdczt", (code, name))
        emit("sjtq", (f"{extract.isoformat()} 21:00:00", self.until.isoformat()))

    def household(self, h: Household) -> None:
        for v in h.vehicles:
            since = v.since or v.first_reg
            if since.date() > self.until:
                continue
            ended = v.end is not None and v.end.date() <= self.until
            status = v.end_status if ended else (v.flags or "A")
            self.n += 1
            person = v.owner.person is not None
            c = v.contact
            self.emit("jdc", (f"370300{self.n:08d}", "52" if v.model.endswith("EV") else "02", v.plate, v.vin,
                              v.model.removesuffix(" EV"), "K33", "A", v.owner.name, "A" if person else "B",
                              v.owner.ident, "2" if person else "1", c.name if c else None, c.ident if c else None,
                              v.price_wan, _dt(v.first_reg), _dt(v.since), status, _dt(v.end) if ended else None,
                              _dt(v.end if ended else since)))
