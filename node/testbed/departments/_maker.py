"""Small builders for the designed households: identity numbers in the designed region, people,
properties and vehicles with realistic numbers, all from one fixed random stream (the designed
data does not depend on the background seed)."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta

from ._ids import resident_id
from ._model import Event, Owner, Person, Right, Vehicle

REGION = "370303"  # 张店区: only designed people are born here; background regions differ
ADDRESS = "山东省淄博市张店区"
_STREETS = ("华光路", "共青团西路", "人民西路", "柳泉路", "新村西路", "金晶大道", "西五路", "南京路")


class Maker:
    def __init__(self) -> None:
        self.rng = random.Random("hedui-departments-designed-v1")
        self.used: set[str] = set()
        self.n_unit = self.n_vehicle = self.n_hh = 0

    def ident(self, born: date, sex: str, x: bool = False) -> str:
        """A new valid number for someone born on ``born``; sex from the sequence digit's parity
        (GB 11643 §4.3: odd male); ``x`` asks for a check character X."""
        while True:
            seq = self.rng.randrange(100, 1000)
            if (seq % 2 == 1) != (sex == "1"):
                continue
            n = resident_id(REGION, born, seq)
            if n not in self.used and n.endswith("X") == x:
                self.used.add(n)
                return n

    def person(self, name: str, sex: str, born: date, relation: str, *, x: bool = False,
               registered: bool = True, **facts) -> Person:
        events = [Event(born, "出生", datetime.combine(born + timedelta(days=20), time(9, 30)))] if registered else None
        present = facts.pop("present", {"yibao"} if registered else set())
        return Person(self.ident(born, sex, x), name, sex, born, relation, events=events, present=present, **facts)

    def address(self) -> str:
        s = self.rng.choice(_STREETS)
        return f"{ADDRESS}{s}{self.rng.randint(1, 300)}号{self.rng.randint(1, 30)}号楼{self.rng.randint(1, 6)}单元" \
               f"{self.rng.randint(1, 18)}0{self.rng.randint(1, 4)}室"

    def hh(self) -> str:
        self.n_hh += 1
        return f"{REGION}{900000 + self.n_hh}"

    def right(self, owners: list[Person | Owner], start: date, *, end: date | None = None, ended_as: str = "历史",
              area: str = "89.50", use: str = "住宅", shares: str | None = None, after: Right | None = None) -> Right:
        """A right; ``after`` is the right it follows on the same property (the seller's, in a sale)."""
        self.n_unit += 1
        unit = f"{REGION}{self.n_unit:03d}{self.rng.randint(1, 999):03d}GB{self.rng.randint(1, 99999):05d}" \
               f"F{self.rng.randint(1, 9999):04d}{self.rng.randint(101, 2604):04d}"
        address = self.address()
        if after is not None:
            unit, address, area, use = after.unit, after.address, after.area, after.use
        held = [o if isinstance(o, Owner) else Owner(o.name, o.ident("budongchan"), o) for o in owners]
        return Right(unit, address, area, use, start, held, end=end, ended_as=ended_as,
                     shares=shares or ("单独所有" if len(held) == 1 else "共同共有"))

    def vehicle(self, owner: Person | Owner, price_wan: str, first_reg: datetime, **kw) -> Vehicle:
        self.n_vehicle += 1
        letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
        plate = f"鲁C{self.rng.choice(letters)}{self.rng.randint(0, 9999):04d}"
        vin = f"LSV{self.rng.choice(letters)}{self.rng.randint(10000, 99999)}{self.rng.choice('KLMNP')}" \
              f"{self.rng.randint(1000000, 9999999)}"
        o = owner if isinstance(owner, Owner) else Owner(owner.name, owner.ident("cheguan"), owner)
        model = kw.pop("model", self.rng.choice(("大众朗逸", "丰田凯美瑞", "本田雅阁", "比亚迪汉 EV", "别克君越")))
        return Vehicle(plate, vin, model, price_wan, first_reg, o, **kw)


def at(y: int, m: int, d: int, hh: int = 10, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, m, d, hh, mi, s)
