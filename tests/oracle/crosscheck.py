"""The cross-check oracle (issue 14): which current recipients of assistance hit which criterion
on a given day, by set-based SQL over the department tables (scales to a million residents).

Population: members marked as recipients (``sfbzdx`` 是) of 低保/特困 families in force in the
day's month; entries whose identity number is not valid are reported, never checked.
Criteria, each as of the day: ``dead`` (household registry), ``vehicle`` (holds a person-owned
vehicle bought for 100,000.00 or more), ``property`` (holds two or more current residential
properties).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from .db import Federation, fen, ymd
from .household import PROPERTIES, VEHICLE_FEN
from .ids import canonical

DEAD, VEHICLE, PROPERTY = "dead", "vehicle", "property"

_POPULATION = """
    SELECT c.cyid, c.jtbh, c.sfzh, j.szxz FROM minzheng.jz_cy c JOIN minzheng.jz_jt j ON j.jtbh = c.jtbh
    WHERE c.sfbzdx = '是' AND j.jzlb IN ('低保', '特困') AND CAST(j.ksny AS INTEGER) <= :month
      AND (j.jsny IS NULL OR CAST(j.jsny AS INTEGER) >= :month)"""
# The latest registry change on or before the day, per person, is a death.
_DEAD = """
    SELECT b."GMSFHM" FROM huji."RK_BDJL" b
    WHERE b."BDHZT" = '死亡' AND CAST(b."BDRQ" AS INTEGER) <= :day
      AND NOT EXISTS (SELECT 1 FROM huji."RK_BDJL" l WHERE l."RYNBID" = b."RYNBID"
                        AND CAST(l."BDRQ" AS INTEGER) <= :day
                        AND (CAST(l."BDRQ" AS INTEGER) > CAST(b."BDRQ" AS INTEGER)
                             OR (l."BDRQ" = b."BDRQ" AND l."BDID" > b."BDID")))"""
_VEHICLE = f"""
    SELECT v.sfzmhm FROM cheguan.jdc v
    WHERE v.sfzmmc = 'A' AND v.syq = '2' AND {ymd('COALESCE(v.djrq, v.ccdjrq)')} <= :day
      AND NOT (v.zt IN ('B', 'E', 'M') AND v.zxrq IS NOT NULL AND {ymd('v.zxrq')} <= :day)
      AND {fen('v.gzjg', 1_000_000)} >= :threshold"""
_PROPERTY = """
    SELECT q.zjh, f.ywh FROM budongchan.fdcq f JOIN budongchan.qlr q ON q.ywh = f.ywh
    WHERE q.zjzl = '1' AND f.ghyt = '住宅' AND CAST(f.djsj AS INTEGER) <= :day
      AND (f.zxsj IS NULL OR CAST(f.zxsj AS INTEGER) > :day)"""


@dataclass
class CrossCheck:
    day: date
    population: set[str]                                   # valid identity numbers checked
    invalid: list[tuple[str, int]]                         # (family number, member id) not checkable
    hits: dict[str, set[str]] = field(default_factory=dict)    # id18 → criteria hit
    towns: dict[str, str] = field(default_factory=dict)        # id18 → town code (where leads go)

    def counts(self) -> dict[str, int]:
        c = {DEAD: 0, VEHICLE: 0, PROPERTY: 0}
        for crit in self.hits.values():
            for k in crit:
                c[k] += 1
        return c


def crosscheck(fed: Federation, day: date) -> CrossCheck:
    d = int(f"{day:%Y%m%d}")
    population: set[str] = set()
    invalid: list[tuple[str, int]] = []
    towns: dict[str, str] = {}
    for cyid, family, raw, town in fed.rows(_POPULATION, month=d // 100):
        n = canonical(raw)
        if n is None:
            invalid.append((family, cyid))
        else:
            population.add(n)
            towns[n] = town
    hits: dict[str, set[str]] = defaultdict(set)
    for (raw,) in fed.rows(_DEAD, day=d):
        n = canonical(raw)
        if n in population:
            hits[n].add(DEAD)
    for (raw,) in fed.rows(_VEHICLE, day=d, threshold=VEHICLE_FEN):
        n = canonical(raw)
        if n in population:
            hits[n].add(VEHICLE)
    held: dict[str, set[str]] = defaultdict(set)
    for raw, right in fed.rows(_PROPERTY, day=d):
        n = canonical(raw)
        if n in population:
            held[n].add(right)
    for n, rights in held.items():
        if len(rights) >= PROPERTIES:
            hits[n].add(PROPERTY)
    return CrossCheck(day, population, sorted(invalid), dict(hits), {n: towns[n] for n in hits})
