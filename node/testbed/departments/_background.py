"""Background residents: ordinary households with the variety of real data (jobs, pensions,
benefits, returns, properties, vehicles, settlements, certificates, assistance) and its
messiness (padded, legacy, full-width and mistyped identity numbers; blanks).

Streamed one household at a time from one seeded ``random.Random``; identity numbers come from
a bijection of the resident number, so memory does not grow with the population. Background
recipients of assistance are chosen only among households that no cross-check criterion can
flag (nobody dead, no vehicle, at most one property), so a cross-check finds exactly the
designed recipients whatever the seed and size.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta

from ._ids import Background as Ids
from ._ids import bad_check, fullwidth, legacy15, padded, uscc
from ._model import (
    Assistance,
    Benefit,
    Cert,
    Event,
    Fund,
    Household,
    Owner,
    Person,
    Right,
    Settlement,
    Spell,
    TaxItem,
    Temporary,
    Vehicle,
    add_months,
    first_day,
    month_of,
)

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建国玉红梅志海燕丹宁波婷雪辉鑫宇浩然子涵欣怡梓萱诗琪"
_STREETS = ("华光路", "共青团路", "人民路", "柳泉路", "新村路", "金晶大道", "西五路", "南京路", "北京路", "联通路")
_EMPLOYERS = ("淄博第一建筑有限公司", "山东某某科技有限公司", "张店区人民医院", "淄博公交集团", "淄博齐鲁物流有限公司",
              "淄博市第三中学", "山东淄博陶瓷有限公司", "淄博鲁中机械厂")
_HOSPITALS = ("淄博市中心医院", "淄博市第一医院", "张店区人民医院", "淄博市中医院", "淄博市妇幼保健院")
_MODELS = ("大众朗逸", "丰田卡罗拉", "本田思域", "吉利帝豪", "长安逸动", "比亚迪秦 EV", "五菱宏光", "哈弗H6", "宝马3系", "奥迪A4L")
_TOWNS = ("370303001", "370303002", "370303003", "370303100", "370303101", "370303102")


def _ten_years(d: date) -> date:
    """The same day ten years on (a certificate's validity); 29 February becomes 28 February."""
    return d.replace(year=d.year + 10, day=min(d.day, 28 if d.month == 2 else 31))


class Background:
    def __init__(self, seed: int, extract: date, residents: int, recipient_share: float) -> None:
        self.rng = random.Random(f"hedui-departments-background:{seed}")
        self.ids = Ids(seed)
        self.extract, self.month = extract, month_of(extract)
        self.first = add_months(self.month, -21)           # monthly histories start here
        self.first_day = first_day(self.first)
        self.residents = residents
        # About 35% of residents live in eligible households (no vehicle, at most one property,
        # nobody dead or moved out), measured on 20,000 residents.
        self.p_recipient = min(1.0, recipient_share / 0.35)

    # --- people ---------------------------------------------------------------------------

    def _name(self) -> str:
        r = self.rng
        return r.choice(_SURNAMES) + r.choice(_GIVEN) + (r.choice(_GIVEN) if r.random() < 0.6 else "")

    def _day(self, lo: date, hi: date) -> date:
        return date.fromordinal(self.rng.randint(lo.toordinal(), max(lo.toordinal(), hi.toordinal())))

    def _stamp(self, d: date) -> datetime:
        return datetime.combine(d, time(self.rng.randint(8, 17), self.rng.randint(0, 59), self.rng.randint(0, 59)))

    def _forms(self, p: Person) -> None:
        """How each department stores this person's number (most rows clean)."""
        r, n = self.rng, p.id18
        old = n[6:8] == "19"
        if old and p.birth.year < 1965 and r.random() < 0.4:
            p.ids["shebao"] = legacy15(n)
        elif r.random() < 0.1:
            p.ids["shebao"] = padded(n)
        if r.random() < 0.3:
            p.ids["shuiwu"] = padded(n)
        if old and r.random() < 0.05:
            p.ids["budongchan"] = legacy15(n)
        elif r.random() < 0.01:
            p.ids["budongchan"] = ""
        elif r.random() < 0.01:
            p.ids["budongchan"] = bad_check(n)
        if r.random() < 0.02:
            p.ids["cheguan"] = fullwidth(n)
        elif r.random() < 0.01:
            p.ids["cheguan"] = bad_check(n)
        p.ids["gongjijin"] = n.lower()
        if r.random() < 0.005:
            p.ids["yibao"] = bad_check(n)
        if r.random() < 0.05:
            p.ids["canlian"] = fullwidth(n)
        x = r.random()
        if x < 0.1:
            p.ids["minzheng"] = padded(n, 20, lead=r.randint(0, 2))
        elif x < 0.12:
            p.ids["minzheng"] = fullwidth(n)
        elif x < 0.14:
            p.ids["minzheng"] = bad_check(n)

    def _person(self, number: int) -> Person:
        r = self.rng
        n, born = self.ids.number(number)
        sex = "1" if int(n[16]) % 2 else "2"
        p = Person(n, self._name(), sex, born, "", present={"yibao"} if r.random() < 0.96 else set())
        settled = born if r.random() < 0.8 else self._day(born, self.extract)
        p.events = [Event(settled, "出生" if settled == born else "迁入", self._stamp(settled + timedelta(days=r.randint(3, 40))))]
        self._forms(p)
        age = (self.extract - born).days // 365
        x = r.random()
        died = None
        if x < 0.012 and age > 30:
            died = self._day(date(2023, 1, 1), self.extract - timedelta(days=1))
            p.events.append(Event(died, "死亡", self._stamp(died + timedelta(days=r.randint(1, 20)))))
        elif x < 0.032 and age >= 18:
            left = self._day(date(2022, 1, 1), self.extract - timedelta(days=1))
            p.events.append(Event(left, "迁出", self._stamp(left + timedelta(days=r.randint(0, 5)))))
        end = month_of(died) if died else None
        if age >= 60 or (age >= 55 and sex == "2"):
            if r.random() < 0.85:
                p.pension = [Spell(self.first, end, r.randint(1500_00, 4500_00))]
                if died and r.random() < 0.5:
                    p.pension_returned = [add_months(end, 1)]
        elif age >= 18:
            self._working(p, number, end, r.random())
        if r.random() < 0.06 and age >= 18:
            for m in sorted(r.sample(range(21), r.randint(1, 4))):
                mm = add_months(self.first, m)
                p.tax.append(TaxItem("0400", mm, mm, r.randint(500_00, 8000_00), agent=r.choice(_EMPLOYERS)))
        self._medical(p, died)
        if r.random() < 0.025:
            issued = self._day(date(2008, 1, 1), date(2024, 6, 30))
            cat, grade = r.randint(1, 7), r.randint(1, 4)
            p.certs = [Cert(cat, grade, "首次", issued, _ten_years(issued) - timedelta(days=1))]
            if p.certs[0].valid_to < self.extract and r.random() < 0.8:
                again = p.certs[0].valid_to + timedelta(days=r.randint(1, 60))
                p.certs.append(Cert(cat, grade, "换领", again, _ten_years(again)))
        return p

    def _working(self, p: Person, number: int, end: int | None, x: float) -> None:
        r = self.rng
        if x < 0.58:
            fen = int(math.exp(r.gauss(math.log(4200), 0.45))) * 100
            stop = end or (add_months(self.first, r.randint(3, 20)) if r.random() < 0.1 else None)
            p.employer = r.choice(_EMPLOYERS)
            p.wages = [Spell(self.first, stop, fen)]
            p.ss_types = ("110", "210", "410") if r.random() < 0.7 else ("110",)
            if r.random() < 0.7:
                p.tax_wages = [Spell(self.first, stop, fen + r.randint(0, fen // 4))]
            if r.random() < 0.45:
                p.fund = Fund(f"0301{number:011d}", self._day(date(2005, 1, 1), self.first_day), p.employer,
                              Spell(self.first, stop, fen * 24 // 10000 * 100),  # 12% + 12%, whole yuan
                              extra=[(date(y, 6, 30), "结息", r.randint(50_00, 900_00))
                                     for y in range(self.first // 100, self.extract.year + 1)
                                     if date(y, 6, 30) >= self.first_day],
                              sealed=first_day(add_months(stop, 1)) if stop else None)
        elif x < 0.68:
            q = (self.first // 100) * 100 + ((self.first % 100 - 1) // 3) * 3 + 1
            while add_months(q, 2) < self.month:
                p.tax.append(TaxItem("0600", q, add_months(q, 2), r.randint(3000_00, 30000_00)))
                if r.random() < 0.05:
                    p.tax[-1].status = "3"
                    p.tax.append(TaxItem("0600", q, add_months(q, 2), r.randint(3000_00, 30000_00),
                                         replaces=p.tax[-1]))
                q = add_months(q, 3)
        elif x < 0.71:
            start = self._day(self.first_day, self.extract - timedelta(days=60))
            stop = start + timedelta(days=30 * r.randint(3, 18))
            p.benefits = [Benefit(start, None if stop > self.extract else stop, r.randint(1400_00, 1900_00))]
            if month_of(start) > self.first:
                p.employer = r.choice(_EMPLOYERS)
                p.wages = [Spell(self.first, add_months(month_of(start), -1), r.randint(2500, 6000) * 100)]

    def _medical(self, p: Person, died: date | None) -> None:
        r = self.rng
        last = died or self.extract
        if last < self.first_day:
            return
        for _ in range(r.choice((0, 0, 1, 1, 2, 3, 4))):
            when = self._stamp(self._day(self.first_day, last))
            inpatient = r.random() < 0.1
            total = r.randint(500_00, 30000_00) if inpatient else r.randint(20_00, 800_00)
            fund = total * r.randint(40, 75) // 100
            s = Settlement(when, "21" if inpatient else r.choice(("11", "11", "14", "41")), total, fund,
                           total - fund, r.choice(_HOSPITALS))
            p.settlements.append(s)
            if r.random() < 0.04:
                s.cancelled = when + timedelta(minutes=r.randint(5, 600))
                again = s.cancelled + timedelta(minutes=r.randint(5, 60))
                p.settlements.append(Settlement(again, s.med_type, total, fund, total - fund, s.hospital))

    # --- households -----------------------------------------------------------------------

    def households(self) -> Iterator[Household]:
        r, n, i = self.rng, 1, 0
        while n <= self.residents:
            size = min(r.choices((1, 2, 3, 4, 5), (15, 30, 28, 18, 9))[0], self.residents - n + 1)
            members = sorted((self._person(k) for k in range(n, n + size)), key=lambda p: p.birth)
            n, i = n + size, i + 1
            yield self._household(i, members)

    def _household(self, i: int, members: list[Person]) -> Household:
        r = self.rng
        head = members[0]
        head.relation = "户主"
        for p in members[1:]:
            gap = (p.birth - head.birth).days / 365
            if gap < 12 and not any(m.relation == "配偶" for m in members):
                p.relation = "配偶"
            elif gap < 40:
                p.relation = "子" if p.sex == "1" else "女"
            else:
                p.relation = "孙子" if p.sex == "1" else "孙女"
        h = Household(f"{head.id18[:6]}{i:06d}", f"山东省淄博市{r.choice(_STREETS)}{r.randint(1, 400)}号", members,
                      established=max(head.birth, date(1985, 1, 1)))
        adults = [p for p in members if (self.extract - p.birth).days >= 18 * 365]
        if adults:
            self._assets(h, adults)
        eligible = (not h.vehicles and len(h.rights) <= 1
                    and all(e.kind in ("出生", "迁入") for p in members for e in p.events))
        if eligible and r.random() < self.p_recipient:
            kind = "特困" if len(members) == 1 and (self.extract - head.birth).days > 60 * 365 else "低保"
            h.assistance.append(Assistance(f"MZ{i:012d}", kind, add_months(self.month, -r.randint(0, 60)), None,
                                           r.randint(400, 1500) * 100 * len(members) // 2, r.choice(_TOWNS),
                                           members, members))
        elif r.random() < 0.02:
            start = add_months(self.month, -r.randint(24, 60))
            h.assistance.append(Assistance(f"MZ{i:012d}", "低保", start, add_months(start, r.randint(6, 20)),
                                           r.randint(400, 1500) * 100, r.choice(_TOWNS), members, members[:1]))
        if r.random() < 0.01:
            h.temporary.append(Temporary(r.choice(members), self._day(self.first_day, self.extract),
                                         r.randint(5, 50) * 100_00, r.choice(("突发疾病", "火灾", "交通事故"))))
        return h

    def _assets(self, h: Household, adults: list[Person]) -> None:
        r = self.rng
        head = adults[0]
        spouse = next((p for p in adults if p.relation == "配偶"), None)
        for _ in range(r.choices((0, 1, 2, 3), (30, 52, 12, 6))[0]):
            owners = [head, spouse] if spouse and r.random() < 0.4 else [r.choice(adults)]
            start = self._day(date(1995, 1, 1), self.extract)
            h.rights.append(self._right(owners, start))
        if r.random() < 0.12:
            start = self._day(date(1990, 1, 1), date(2015, 1, 1))
            h.rights.append(self._right([head], start, end=self._day(start, self.extract),
                                        ended_as="历史" if r.random() < 0.7 else "注销"))
        for _ in range(r.choices((0, 1, 2), (55, 38, 7))[0]):
            owner = r.choice(adults)
            first = self._stamp(self._day(date(2005, 1, 1), self.extract))
            price = int(math.exp(r.gauss(math.log(12.0), 0.45)) * 10_000) * 100
            v = Vehicle(f"鲁C{r.choice('ABCDEFGHJK')}{r.randint(0, 99999):05d}",
                        f"LFV{r.randint(10**13, 10**14 - 1)}", r.choice(_MODELS),
                        f"{price // 1_000_000}.{price % 1_000_000:06d}", first,
                        Owner(owner.name, owner.ident("cheguan"), owner))
            x = r.random()
            if x < 0.15 and first.date() < self.extract - timedelta(days=400):
                v.since = self._stamp(self._day(first.date(), self.extract))
            if x > 0.95:
                v.flags = "G"
            elif x > 0.85:
                v.end = self._stamp(self._day((v.since or first).date(), self.extract))
                v.end_status = "B" if x > 0.9 else "E"
            h.vehicles.append(v)
        if r.random() < 0.02:
            org = Owner(r.choice(_EMPLOYERS), uscc(r))
            first = self._stamp(self._day(date(2015, 1, 1), self.extract))
            h.vehicles.append(Vehicle(f"鲁C{r.randint(10000, 99999)}", f"LGB{r.randint(10**13, 10**14 - 1)}",
                                      r.choice(_MODELS), f"{r.randint(8, 60)}.000000", first, org,
                                      contact=Owner(head.name, head.id18, head)))

    def _right(self, owners: list[Person], start: date, **kw) -> Right:
        r = self.rng
        unit = f"{owners[0].id18[:6]}{r.randint(1, 999):03d}{r.randint(1, 999):03d}GB{r.randint(1, 99999):05d}" \
               f"F{r.randint(1, 9999):04d}{r.randint(101, 2604):04d}"
        return Right(unit, f"山东省淄博市{r.choice(_STREETS)}{r.randint(1, 400)}号", f"{r.randint(3500, 16000) / 100:.2f}",
                     r.choice(("住宅", "住宅", "住宅", "车库", "商业")), start,
                     [Owner(o.name, o.ident("budongchan"), o) for o in owners],
                     shares="单独所有" if len(owners) == 1 else "共同共有", **kw)
