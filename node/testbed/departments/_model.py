"""The department-neutral facts of a household, before any department writes them its own way.

A :class:`Household` (designed or background) is handed to every department module, which
renders the facts it holds into its own tables, units and codes, and drops what its extract
could not yet contain (anything dated after its data date). Months are ``YYYYMM`` integers;
money is whole fen (分) so that no figure is ever a float.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

__all__ = ["month_of", "add_months", "months", "first_day", "last_day", "yuan", "unit_code", "Event", "Spell", "Benefit",
           "TaxItem", "Fund", "Settlement", "Cert", "Owner", "Right", "Vehicle", "Person", "Assistance",
           "Temporary", "Household"]


def month_of(d: date) -> int:
    return d.year * 100 + d.month


def add_months(m: int, k: int) -> int:
    y, mo = divmod(m // 100 * 12 + m % 100 - 1 + k, 12)
    return y * 100 + mo + 1


def months(first: int, last: int) -> list[int]:
    out, m = [], first
    while m <= last:
        out.append(m)
        m = add_months(m, 1)
    return out


def first_day(m: int) -> date:
    return date(m // 100, m % 100, 1)


def last_day(m: int) -> date:
    return first_day(add_months(m, 1)) - timedelta(days=1)


def unit_code(name: str, prefix: str = "37") -> str:
    """A stable employer/unit number derived from its name (same name, same number)."""
    return f"{prefix}{zlib.crc32(name.encode('utf-8')) % 10**8:08d}" if name else ""


def yuan(fen: int) -> str:
    """Exact decimal text, in yuan, of a fen amount."""
    sign, fen = ("-", -fen) if fen < 0 else ("", fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


@dataclass
class Event:
    """A household-registry change: 出生/迁入 (→ 正常), 死亡, 迁出. ``recorded`` is when the
    police station entered it, usually some days after ``day``."""
    day: date
    kind: str
    recorded: datetime


@dataclass
class Spell:
    """A monthly amount paid for every month ``first``..``last`` (``None``: up to the data month)."""
    first: int
    last: int | None
    fen: int


@dataclass
class Benefit:
    """Unemployment benefit in force from ``start`` to ``stop`` (``None``: still paid)."""
    start: date
    stop: date | None
    fen: int


@dataclass
class TaxItem:
    """One income line of an individual income-tax return. ``status`` '1' valid, '2' cancelled
    (作废), '3' superseded by a correction (已更正); a correction names the line it replaces."""
    code: str
    first: int
    last: int
    fen: int
    status: str = "1"
    replaces: TaxItem | None = None
    agent: str = ""


@dataclass
class Fund:
    """A housing-fund account: monthly deposits, plus dated interest (结息) and withdrawals (提取)."""
    account: str
    opened: date
    employer: str
    deposits: Spell
    extra: list[tuple[date, str, int]] = field(default_factory=list)
    sealed: date | None = None


@dataclass
class Settlement:
    """A medical-insurance settlement; ``cancelled`` is when a cancellation row reversed it."""
    when: datetime
    med_type: str
    total: int
    fund: int
    own: int
    hospital: str
    cancelled: datetime | None = None


@dataclass
class Cert:
    """One issue of a disability certificate (首次 first issue, 换领 replacement, 补领 reissue)."""
    category: int
    grade: int
    kind: str
    issued: date
    valid_to: date
    cancelled: bool = False


@dataclass
class Owner:
    """A rights holder as the department records it: a person (``person`` set) or an organisation."""
    name: str
    ident: str
    person: Person | None = None


@dataclass
class Right:
    """A real-estate right: held from ``start`` until ``end`` (then 历史 or 注销, per ``ended_as``)."""
    unit: str
    address: str
    area: str
    use: str
    start: date
    owners: list[Owner]
    end: date | None = None
    ended_as: str = "历史"
    shares: str = "单独所有"


@dataclass
class Vehicle:
    """A registered vehicle and its owner from ``since`` (first registration or transfer) until
    ``end`` (status ``end_status``: B transferred out, E deregistered); price in 万元 text."""
    plate: str
    vin: str
    model: str
    price_wan: str
    first_reg: datetime
    owner: Owner
    since: datetime | None = None
    end: datetime | None = None
    end_status: str = "B"
    flags: str = ""                 # e.g. "G": unprocessed violations, still held
    contact: Owner | None = None


@dataclass
class Person:
    id18: str
    name: str
    sex: str                        # "1" male, "2" female (GB/T 2261.1)
    birth: date
    relation: str                   # 与户主关系 as the household registry writes it
    events: list[Event] | None = None  # None: no household-registry record at all
    ids: dict[str, str] = field(default_factory=dict)  # department -> identity as stored there
    present: set[str] = field(default_factory=set)     # departments holding a record without facts
    employer: str = ""
    wages: list[Spell] = field(default_factory=list)
    ss_types: tuple[str, ...] = ("110", "210", "410")
    void_wages: list[tuple[int, int]] = field(default_factory=list)
    tax_wages: list[Spell] = field(default_factory=list)
    pension: list[Spell] = field(default_factory=list)
    pension_returned: list[int] = field(default_factory=list)
    benefits: list[Benefit] = field(default_factory=list)
    tax: list[TaxItem] = field(default_factory=list)
    fund: Fund | None = None
    settlements: list[Settlement] = field(default_factory=list)
    certs: list[Cert] = field(default_factory=list)

    def ident(self, dept: str) -> str:
        return self.ids.get(dept, self.id18)


@dataclass
class Assistance:
    """A civil-affairs assistance family (低保/特困) and which members are recipients."""
    family_no: str
    kind: str
    first: int
    last: int | None
    fen: int
    town: str
    members: list[Person]
    recipients: list[Person]


@dataclass
class Temporary:
    person: Person
    day: date
    fen: int
    reason: str


@dataclass
class Household:
    hh: str
    address: str
    members: list[Person]
    rights: list[Right] = field(default_factory=list)
    vehicles: list[Vehicle] = field(default_factory=list)
    assistance: list[Assistance] = field(default_factory=list)
    temporary: list[Temporary] = field(default_factory=list)
    established: date = date(1998, 7, 1)
