"""The designed cross-check recipients (issue 14): people receiving 低保/特困 whom a bulk
cross-check as of the extract date must flag — dead, holding a vehicle bought for 100,000.00
or more (the boundary itself included), holding two or more current residential properties —
and decoys that must not be flagged. ``Designed.hits`` records the expected hits per recipient.
"""

from __future__ import annotations

from datetime import date

from ._ids import bad_check, fullwidth, legacy15, padded, uscc, uscc_digits
from ._maker import Maker, at
from ._model import Assistance, Event, Household, Owner, Person

DEAD, VEHICLE, PROPERTY = "dead", "vehicle", "property"

_NAMES = {
    "X1": ("孟庆和", "1", date(1941, 3, 3)), "X2": ("耿立新", "1", date(1972, 5, 5)),
    "X3": ("路红梅", "2", date(1969, 9, 9)), "X4": ("田志远", "1", date(1961, 1, 21)),
    "X5": ("葛春生", "1", date(1966, 6, 16)), "X6": ("柴美玲", "2", date(1959, 2, 28)),
    "X7": ("房德胜", "1", date(1964, 12, 12)), "X8": ("邢玉珍", "2", date(1958, 8, 18)),
    "X9": ("牛建军", "1", date(1977, 7, 17)), "X10": ("伊春来", "1", date(1965, 3, 30)),
    "X11": ("霍秀英", "2", date(1939, 10, 1)), "X12": ("綦海涛", "1", date(1983, 11, 11)),
    "X13": ("左凤兰", "2", date(1962, 4, 14)), "X14": ("毕永强", "1", date(1970, 2, 20)),
    "X15": ("齐乐天", "1", date(1980, 10, 10)), "X16": ("翟丽娟", "2", date(1974, 4, 24)),
    "X17": ("雷振华", "1", date(1963, 3, 13)), "X18": ("桑志明", "1", date(1956, 6, 26)),
}

HITS = {"X1": {DEAD}, "X2": {VEHICLE}, "X4": {PROPERTY}, "X9": {VEHICLE}, "X10": {VEHICLE},
        "X11": {DEAD, PROPERTY}, "X15": {VEHICLE}, "X18": {PROPERTY}}


def recipients(mk: Maker, d) -> None:
    people: dict[str, Person] = {}
    for i, (key, (name, sex, born)) in enumerate(_NAMES.items()):
        p = mk.person(name, sex, born, "户主", present={"yibao"})
        h = Household(mk.hh(), mk.address(), [p])
        stopped = key == "X16"
        h.assistance.append(Assistance(f"MZ370303{200 + i:06d}", "特困" if born.year < 1945 else "低保",
                                       202301 if stopped else 202401, 202606 if stopped else None, 95000,
                                       "370303001" if i % 2 else "370303100", [p], [p]))
        d.recipients[key], d.people[key] = h, p
        people[key] = p
    x = people

    x["X1"].events.append(Event(date(2026, 7, 3), "死亡", at(2026, 7, 6, 10, 0)))
    d.recipients["X2"].vehicles.append(mk.vehicle(x["X2"], "10.000000", at(2025, 12, 28, 15, 0)))
    x["X2"].ids["minzheng"] = padded(x["X2"].id18, 20, lead=2)
    d.recipients["X3"].vehicles.append(mk.vehicle(x["X3"], "9.999999", at(2024, 3, 3, 10, 0)))
    d.recipients["X4"].rights += [mk.right([x["X4"]], date(2008, 5, 5)), mk.right([x["X4"]], date(2023, 7, 7))]
    x["X4"].ids["minzheng"] = fullwidth(x["X4"].id18)
    # An institution's car: its all-digit code looks like an identity number; X5 is only the contact.
    org = Owner("淄博市张店区园林绿化服务中心", uscc_digits(mk.rng))
    d.recipients["X5"].vehicles.append(mk.vehicle(org, "31.500000", at(2022, 1, 1, 9, 0),
                                                  contact=Owner(x["X5"].name, x["X5"].id18, x["X5"])))
    d.recipients["X6"].rights += [mk.right([x["X6"]], date(2011, 1, 11)),
                                  mk.right([x["X6"]], date(2001, 1, 1), end=date(2019, 9, 9))]
    # The vehicle is registered under X7's number with a wrong check character: not X7's.
    d.recipients["X7"].vehicles.append(mk.vehicle(Owner(x["X7"].name, bad_check(x["X7"].id18), x["X7"]),
                                                  "18.000000", at(2021, 6, 6, 10, 0)))
    d.recipients["X8"].vehicles.append(mk.vehicle(x["X8"], "20.000000", at(2018, 8, 8, 10, 0),
                                                  end=at(2026, 3, 15, 10, 0), end_status="B"))
    d.recipients["X9"].vehicles.append(mk.vehicle(x["X9"], "12.000000", at(2023, 3, 3, 10, 0), flags="G"))
    x["X10"].ids["cheguan"] = legacy15(x["X10"].id18)
    d.recipients["X10"].vehicles.append(mk.vehicle(x["X10"], "11.000000", at(1999, 9, 9, 10, 0)))
    x["X11"].events.append(Event(date(2026, 2, 14), "死亡", at(2026, 2, 20, 11, 0)))
    d.recipients["X11"].rights += [mk.right([x["X11"]], date(1995, 5, 5)), mk.right([x["X11"]], date(2004, 4, 4))]
    x["X11"].ids["budongchan"] = legacy15(x["X11"].id18)
    x["X12"].events.append(Event(date(2026, 4, 1), "迁出", at(2026, 4, 1, 14, 0)))
    d.recipients["X13"].rights += [mk.right([x["X13"]], date(2009, 9, 9)),
                                   mk.right([x["X13"]], date(2016, 6, 6), end=date(2025, 11, 20))]
    # A typing error in the civil-affairs record: the population entry itself is invalid.
    x["X14"].ids["minzheng"] = bad_check(x["X14"].id18)
    d.recipients["X14"].vehicles.append(mk.vehicle(x["X14"], "15.000000", at(2020, 2, 2, 10, 0)))
    x["X15"].ids["cheguan"] = fullwidth(x["X15"].id18)
    d.recipients["X15"].vehicles.append(mk.vehicle(x["X15"], "10.500000", at(2022, 2, 22, 10, 0)))
    d.recipients["X16"].vehicles.append(mk.vehicle(x["X16"], "20.000000", at(2021, 1, 1, 10, 0)))
    # A home and a garage: one residential property.
    d.recipients["X17"].rights += [mk.right([x["X17"]], date(2010, 1, 1)),
                                   mk.right([x["X17"]], date(2015, 5, 5), area="18.00", use="车库")]
    company = Owner("淄博桑氏建材有限公司", uscc(mk.rng))
    d.recipients["X18"].rights += [mk.right([x["X18"]], date(2000, 10, 10)),
                                   mk.right([x["X18"], company], date(2018, 8, 8), shares="按份共有")]
    d.hits = {k: frozenset(v) for k, v in HITS.items()}
