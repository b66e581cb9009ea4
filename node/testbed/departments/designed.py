"""The designed applicant households: each tests named rules (docs/acceptance-rules.md has the
table and the hand-computed figures). Dates are fixed; what a department's extract cannot
contain yet is dropped by that department's writer, not here.

Reference months used by the tests: 2026-08 (window 2025-08..2026-07, statuses at 2026-08-31),
2026-03 (window 2025-03..2026-02, across a year end) and 2026-11 (not covered by an extract
of 2026-10-31).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from ._ids import fullwidth, legacy15, padded, uscc
from ._maker import Maker, at
from ._model import Assistance, Benefit, Cert, Event, Fund, Household, Owner, Person, Settlement, Spell, TaxItem, Temporary

__all__ = ["Designed", "build"]

_HOSPITAL = ("淄博市中心医院", "淄博市第一医院", "张店区人民医院")


@dataclass
class Designed:
    households: dict[str, Household] = field(default_factory=dict)    # applicant households H1…H7
    recipients: dict[str, Household] = field(default_factory=dict)    # cross-check recipients X1…
    side: list[Household] = field(default_factory=list)               # buyers and co-owners
    people: dict[str, Person] = field(default_factory=dict)           # "H1.A", "X7", "S1" …
    hits: dict[str, frozenset[str]] = field(default_factory=dict)     # expected cross-check hits

    def members(self, key: str) -> list[str]:
        """The identity numbers an applicant lists for household ``key`` (every member)."""
        return [p.id18 for p in self.households[key].members]

    def all(self) -> list[Household]:
        return [*self.households.values(), *self.side, *self.recipients.values()]


def _died(p: Person, day: date, recorded: datetime) -> None:
    p.events.append(Event(day, "死亡", recorded))


def _moved(p: Person, day: date, recorded: datetime) -> None:
    p.events.append(Event(day, "迁出", recorded))


def _household(mk: Maker, d: Designed, key: str, members: dict[str, Person], **kw) -> Household:
    h = Household(mk.hh(), mk.address(), list(members.values()), **kw)
    for role, p in members.items():
        d.people[f"{key}.{role}"] = p
    d.households[key] = h
    return h


def _side(mk: Maker, d: Designed, key: str, p: Person) -> Person:
    d.side.append(Household(mk.hh(), mk.address(), [p]))
    d.people[key] = p
    return p


def build() -> Designed:
    mk, d = Maker(), Designed()
    _applicants(mk, d)
    from .designed_crosscheck import recipients

    recipients(mk, d)
    return d


def _applicants(mk: Maker, d: Designed) -> None:
    p = mk.person
    # H1: wages in social security and in tax (counted once); a member dead between the two
    # reference months; a member moved out before both; labour income in the reference month itself.
    a = p("张建国", "1", date(1976, 3, 14), "户主", employer="淄博张店城市建设有限公司",
          wages=[Spell(202301, None, 480000)], void_wages=[(202603, 520000)], tax_wages=[Spell(202301, None, 520000)],
          fund=Fund("030200000000101", date(2024, 1, 5), "淄博张店城市建设有限公司", Spell(202401, None, 115200),
                    extra=[(date(2024, 6, 30), "结息", 1530), (date(2025, 6, 30), "结息", 21060)]),
          present={"yibao", "shuiwu"})
    a.ids["shebao"] = padded(a.id18)
    b = p("王秀兰", "2", date(1951, 9, 2), "配偶", pension=[Spell(202301, 202605, 210000)], pension_returned=[202606])
    _died(b, date(2026, 5, 12), at(2026, 5, 20, 10, 12))
    c = p("张伟", "1", date(2000, 11, 20), "子", employer="淄博齐鲁物流有限公司", wages=[Spell(202407, None, 300000)])
    _moved(c, date(2025, 12, 20), at(2025, 12, 22, 15, 3))
    agent = "淄博博山文化传媒有限公司"
    dd = p("张静", "2", date(2008, 4, 9), "女", tax=[
        TaxItem("0400", 202511, 202511, 80000, agent=agent), TaxItem("0400", 202602, 202602, 60000, agent=agent),
        TaxItem("0400", 202604, 202604, 100000, status="2", agent=agent),
        TaxItem("0400", 202608, 202608, 50000, agent=agent)])
    h1 = _household(mk, d, "H1", {"A": a, "B": b, "C": c, "D": dd})
    h1.rights.append(mk.right([a], date(2005, 6, 18), area="96.40"))

    # H2: labour and business income only in tax (a quarterly return corrected); a member who
    # dies after the reference month; cancelled and re-settled medical settlements.
    q = [(202501, 202503, 540000), (202504, 202506, 660000), (202507, 202509, 900000), (202510, 202512, 750000)]
    first = TaxItem("0600", 202601, 202603, 500000, status="3")
    items = [TaxItem("0600", f, t, fen) for f, t, fen in q] + [first, TaxItem("0600", 202601, 202603, 600000,
                                                                                replaces=first)]
    items += [TaxItem("0600", 202604, 202606, 810000), TaxItem("0600", 202607, 202609, 930000)]
    a = p("李强", "1", date(1980, 6, 21), "户主", tax=items)
    a.ids["shuiwu"] = padded(a.id18, 20, lead=1)
    agent = "淄博华信咨询服务有限公司"
    b = p("刘芳", "2", date(1982, 2, 11), "配偶", tax=[
        *(TaxItem("0400", m, m, 200000, agent=agent) for m in (202509, 202512, 202603, 202606)),
        TaxItem("0500", 202601, 202601, 30000, agent="山东画报出版社")], settlements=[
        Settlement(at(2026, 4, 10, 9, 15, 22), "11", 52000, 17000, 35000, _HOSPITAL[0], cancelled=at(2026, 4, 10, 15, 40, 5)),
        Settlement(at(2026, 4, 10, 15, 52, 31), "11", 48000, 16000, 32000, _HOSPITAL[0]),
        Settlement(at(2026, 6, 2, 10, 3, 11), "11", 18050, 6000, 12050, _HOSPITAL[1]),
        Settlement(at(2026, 6, 2, 16, 20, 45), "11", 18050, 6000, 12050, _HOSPITAL[1]),
        Settlement(at(2026, 1, 15, 11, 0), "21", 1580000, 1100000, 480000, _HOSPITAL[2])])
    c = p("李德明", "1", date(1948, 1, 30), "父", pension=[Spell(202301, 202609, 165000)])
    _died(c, date(2026, 9, 10), at(2026, 9, 15, 9, 0))
    _household(mk, d, "H2", {"A": a, "B": b, "C": c})

    # H3: unemployment benefit stopped mid-window; pension under a 15-digit number at social
    # security; a property transferred between the reference months; a certificate replacement.
    a = p("王磊", "1", date(1985, 10, 8), "户主", employer="淄博鲁中机械厂",
          wages=[Spell(202301, 202504, 320000), Spell(202603, None, 350000)],
          benefits=[Benefit(date(2025, 6, 18), date(2026, 1, 14), 158000)])
    b = p("孙桂英", "2", date(1957, 5, 17), "配偶", pension=[Spell(202301, None, 132000)], certs=[
        Cert(4, 3, "首次", date(2015, 3, 10), date(2025, 3, 9)),
        Cert(4, 3, "换领", date(2025, 3, 20), date(2035, 3, 19))])
    b.ids["shebao"] = legacy15(b.id18)
    b.ids["canlian"] = fullwidth(b.id18)
    c = p("王子涵", "1", date(2012, 7, 1), "子")
    h3 = _household(mk, d, "H3", {"A": a, "B": b, "C": c})
    buyer = _side(mk, d, "S1", p("高峰", "1", date(1990, 2, 2), "户主"))
    h3.rights += [mk.right([a], date(2015, 3, 20)),
                  mk.right([a], date(2019, 6, 18), end=date(2026, 5, 15), area="72.15")]
    d.side[-1].rights.append(mk.right([buyer], date(2026, 5, 15), after=h3.rights[-1]))

    # H4: all income outside the window (and in the reference month itself); a member present
    # in no department at all; one current and one historical property; assistance is not income.
    a = p("赵志刚", "1", date(1970, 12, 5), "户主", employer="淄博张店环卫所",
          wages=[Spell(202301, 202502, 290000), Spell(202608, None, 310000)])
    b = p("钱丽", "2", date(1973, 3, 18), "配偶")
    c = p("赵梓萱", "2", date(2019, 9, 9), "女", registered=False)
    h4 = _household(mk, d, "H4", {"A": a, "B": b, "C": c})
    buyer = _side(mk, d, "S2", p("孔令辉", "1", date(1968, 8, 8), "户主"))
    # The old (2005) registration recorded B as co-holder without an identity number: a blank.
    h4.rights += [mk.right([a], date(2010, 8, 9), area="62.30"),
                  mk.right([a, Owner(b.name, "", b)], date(2005, 4, 12), end=date(2010, 8, 9))]
    d.side[-1].rights.append(mk.right([buyer], date(2010, 8, 9), after=h4.rights[-1]))
    h4.temporary.append(Temporary(a, date(2026, 1, 20), 300000, "突发重大疾病"))
    h4.assistance.append(Assistance("MZ370303000101", "低保", 202407, None, 120000, "370303001", [a, b], [a, b]))

    # H5a/b/c: per-capita exactly at the standard 1,010.00 and one cent either side; H5d:
    # 1,009.995 rounds half-up to 1,010.00. Vehicles at 100,000.00 and 99,999.99.
    for key, pension, names in (("H5a", 52000, ("周明", "吴红")), ("H5b", 51998, ("郑立", "何敏")),
                                ("H5c", 52002, ("冯涛", "曹燕"))):
        a = p(names[0], "1", date(1978, 2, 2), "户主", employer="淄博张店商贸城", wages=[Spell(202301, None, 150000)])
        b = p(names[1], "2", date(1955, 6, 6), "配偶", pension=[Spell(202301, None, pension)])
        h = _household(mk, d, key, {"A": a, "B": b})
        if key == "H5a":
            h.vehicles.append(mk.vehicle(a, "10.000000", at(2021, 5, 20, 14, 22, 8)))
        if key == "H5b":
            h.vehicles.append(mk.vehicle(b, "9.999999", at(2022, 11, 3, 9, 41, 30)))
    a = p("韩冰", "1", date(1975, 7, 7), "户主", employer="淄博新华书店", wages=[Spell(202301, None, 180000)])
    b = p("彭丽", "2", date(1958, 8, 8), "配偶", pension=[Spell(202301, None, 100000)])
    c = p("韩雪", "2", date(2001, 1, 1), "女", tax=[TaxItem("0400", 202601, 202601, 275982, agent="淄博翻译服务中心")])
    _household(mk, d, "H5d", {"A": a, "B": b, "C": c})

    # H6: a vehicle at exactly 100,000.00 (stored with full-width digits); two current
    # properties (one co-owned with a sibling outside the household).
    a = p("陈国华", "1", date(1983, 8, 15), "户主", x=True, employer="淄博齐鲁石化配件厂",
          wages=[Spell(202301, None, 600000)],
          fund=Fund("030200000000606", date(2012, 7, 1), "淄博齐鲁石化配件厂", Spell(202301, None, 144000)))
    a.ids["cheguan"] = fullwidth(a.id18)
    a.ids["gongjijin"] = a.id18.lower()
    b = p("林小燕", "2", date(1985, 12, 25), "配偶")
    h6 = _household(mk, d, "H6", {"A": a, "B": b})
    sibling = _side(mk, d, "S3", p("林小军", "1", date(1988, 4, 4), "户主"))
    h6.vehicles.append(mk.vehicle(a, "10.000000", at(2024, 9, 1, 10, 30)))
    h6.rights += [mk.right([b], date(2012, 6, 1), area="120.00"),
                  mk.right([b, sibling], date(2021, 3, 10), area="88.00", shares="按份共有")]

    # H7: vehicles that do not count — 99,999.99; an organisation's vehicle with a member as
    # contact; transferred out (held at 2026-03, not at 2026-08); deregistered; bought after 2026-08.
    a = p("刘洋", "1", date(1979, 4, 4), "户主", employer="淄博鲁泰纺织有限公司",
          wages=[Spell(202301, None, 260000)], tax_wages=[Spell(202301, None, 260000)])
    b = p("马丽", "2", date(1960, 1, 10), "配偶", pension=[Spell(202301, None, 240000)])
    h7 = _household(mk, d, "H7", {"A": a, "B": b})
    org = Owner("淄博鲁泰纺织有限公司", uscc(mk.rng))
    h7.vehicles += [
        mk.vehicle(a, "9.999999", at(2020, 3, 3, 8, 55)),
        mk.vehicle(org, "25.800000", at(2023, 4, 18, 16, 5), contact=Owner(a.name, a.id18, a)),
        mk.vehicle(a, "15.000000", at(2019, 8, 8, 11, 11), end=at(2026, 5, 20, 9, 30), end_status="B"),
        mk.vehicle(a, "30.000000", at(2012, 2, 2, 10, 0), end=at(2024, 2, 1, 15, 0), end_status="E"),
        mk.vehicle(a, "12.500000", at(2026, 9, 5, 10, 20))]
