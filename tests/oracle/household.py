"""The household-verification oracle: every figure of the report, by straight SQL over the
department tables, following docs/acceptance-rules.md (written independently of Hedui's code).

``verify(fed, members, "2026-08")`` → :class:`Report`. A figure whose period or day lies after
the department's data date is ``not_current`` (value ``None``), never zero; a member a
department does not hold is ``no_record`` (income 0.00).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from .db import Federation, fen, month_end, month_index, ym, ymd

STANDARD = Decimal("1010.00")
VEHICLE_FEN = 10_000_000          # 100,000.00 yuan
PROPERTIES = 2

OK, NO_RECORD, NOT_CURRENT = "ok", "no_record", "not_current"

# item → (department, SQL summing fen over the window for the stored forms :raws)
INCOME = {
    "wages": ("shebao", """
        SELECT COALESCE(SUM(w.aic020), 0) FROM shebao.ac43 w JOIN shebao.ac01 p ON p.aac001 = w.aac001
        WHERE p.aac002 IN :raws AND w.aae140 = '110' AND w.aae100 = '1' AND w.aae002 BETWEEN :wf AND :wt"""),
    "pension": ("shebao", f"""
        SELECT COALESCE(SUM({fen('x.aae019')}), 0) FROM shebao.ac84 x JOIN shebao.ac01 p ON p.aac001 = x.aac001
        WHERE p.aac002 IN :raws AND x.aae117 = '1' AND {ym('x.aae003')} BETWEEN :wf AND :wt"""),
    "unemployment": ("shebao", f"""
        SELECT COALESCE(SUM(CASE WHEN e >= s THEN (e - s + 1) * amount ELSE 0 END), 0) FROM (
          SELECT {fen('u.ajc090')} AS amount,
                 CASE WHEN {month_index(ymd('u.aae030') + ' / 100')} > :wfi
                      THEN {month_index(ymd('u.aae030') + ' / 100')} ELSE :wfi END AS s,
                 CASE WHEN u.aae031 IS NOT NULL AND {month_index(ymd('u.aae031') + ' / 100')} < :wti
                      THEN {month_index(ymd('u.aae031') + ' / 100')} ELSE :wti END AS e
          FROM shebao.jc04 u JOIN shebao.ac01 p ON p.aac001 = u.aac001 WHERE p.aac002 IN :raws) x"""),
    "labour": ("shuiwu", f"""
        SELECT COALESCE(SUM({fen('t.sre')}), 0) FROM shuiwu.sb_grsds_mx t
        WHERE t.sfzjhm IN :raws AND t.sdxmdm = '0400' AND t.sbzt = '1' AND {ym('t.skssqz')} BETWEEN :wf AND :wt"""),
    "business": ("shuiwu", f"""
        SELECT COALESCE(SUM({fen('t.sre')}), 0) FROM shuiwu.sb_grsds_mx t
        WHERE t.sfzjhm IN :raws AND t.sdxmdm = '0600' AND t.sbzt = '1' AND {ym('t.skssqz')} BETWEEN :wf AND :wt"""),
}

_STATUS = """
    SELECT b."BDHZT", b."BDRQ" FROM huji."RK_BDJL" b
    WHERE b."GMSFHM" IN :raws AND CAST(b."BDRQ" AS INTEGER) <= :end
    ORDER BY CAST(b."BDRQ" AS INTEGER) DESC, b."BDID" DESC"""
_VEHICLES = f"""
    SELECT COUNT(*) FROM cheguan.jdc v
    WHERE v.sfzmhm IN :raws AND v.sfzmmc = 'A' AND v.syq = '2'
      AND {ymd('COALESCE(v.djrq, v.ccdjrq)')} <= :end
      AND NOT (v.zt IN ('B', 'E', 'M') AND v.zxrq IS NOT NULL AND {ymd('v.zxrq')} <= :end)
      AND {fen('v.gzjg', 1_000_000)} >= :threshold"""
_PROPERTIES = """
    SELECT COUNT(DISTINCT f.ywh) FROM budongchan.fdcq f JOIN budongchan.qlr q ON q.ywh = f.ywh
    WHERE q.zjh IN :raws AND q.zjzl = '1' AND f.ghyt = '住宅' AND CAST(f.djsj AS INTEGER) <= :end
      AND (f.zxsj IS NULL OR CAST(f.zxsj AS INTEGER) > :end)"""
_FUND = f"""
    SELECT COALESCE(SUM((SELECT {fen('m.ye')} FROM gongjijin.grmxz m WHERE m.grzh = a.grzh AND {ymd('m.jzrq')} <= :end
                         ORDER BY {ymd('m.jzrq')} DESC, m.lsh DESC LIMIT 1)), 0)
    FROM gongjijin.grzhxx a WHERE a.zjhm IN :raws"""
_MEDICAL = f"""
    SELECT COUNT(*), COALESCE(SUM(s.psn_pay), 0) FROM yibao.setl_d s JOIN yibao.psn_info p ON p.psn_no = s.psn_no
    WHERE p.certno IN :raws AND s.refd_setl_flag = '0' AND s.vali_flag = '1'
      AND NOT EXISTS (SELECT 1 FROM yibao.setl_d c WHERE c.refd_setl_flag = '1' AND c.init_setl_id = s.setl_id)
      AND {ymd('s.setl_time')} / 100 BETWEEN :wf AND :wt"""
_CERTS = f"""
    SELECT COUNT(DISTINCT f.cjrzh) FROM canlian.cjrz_ffjl f JOIN canlian.cjr_jbxx p ON p.cjrid = f.cjrid
    WHERE p.sfzh IN :raws AND f.zxbz = '0' AND {ymd('f.fzrq')} <= :end"""
_GRADE = f"""
    SELECT f.cjdj FROM canlian.cjrz_ffjl f JOIN canlian.cjr_jbxx p ON p.cjrid = f.cjrid
    WHERE p.sfzh IN :raws AND f.zxbz = '0' AND {ymd('f.fzrq')} <= :end ORDER BY {ymd('f.fzrq')} DESC, f.ffid DESC"""


@dataclass
class Figure:
    department: str
    status: str                       # ok / no_record / not_current
    value: object                     # Decimal yuan, int count, str, or None when not current
    data_date: date
    window: tuple[int, int] | None = None   # YYYYMM from/to, for windowed figures
    as_of: date | None = None               # for statuses at the end of the reference month


@dataclass
class Member:
    id18: str
    counted: bool | None              # None: the registry does not cover the reference month's end
    reason: str | None                # why excluded, or "no registry record"
    registry: Figure
    income: dict[str, Figure]
    vehicles: Figure                  # qualifying vehicles held at the end of the reference month
    properties: Figure                # current residential properties held then
    fund_balance: Figure
    medical_own: Figure
    medical_settlements: Figure
    certificates: Figure
    grade: Figure


@dataclass
class Report:
    ref_month: int
    window: tuple[int, int]
    ref_end: date
    members: list[Member]
    counted: list[str] | None
    totals: dict[str, Decimal | None]
    total: Decimal | None
    per_capita: Decimal | None
    below_standard: bool | None
    vehicle_flag: bool | None
    vehicle_by: list[str]
    property_count: int | None
    property_flag: bool | None
    property_by: list[str]
    fund_balance: Decimal | None
    complete: bool
    missing: list[tuple[str, str, str]] = field(default_factory=list)   # (id18, figure, department)

    def member(self, id18: str) -> Member:
        return next(m for m in self.members if m.id18 == id18)


def _month(ref: int | str) -> int:
    return int(str(ref).replace("-", ""))


def _add(m: int, k: int) -> int:
    y, mo = divmod(m // 100 * 12 + m % 100 - 1 + k, 12)
    return y * 100 + mo + 1


def _yuan(f: int) -> Decimal:
    return (Decimal(f) / 100).quantize(Decimal("0.01"))


def half_up_per_capita(total_fen: int, months: int, members: int) -> Decimal:
    """Σ ÷ months ÷ members, rounded half-up to 0.01 yuan, in integers (no float anywhere)."""
    d = months * members
    return _yuan((2 * total_fen + d) // (2 * d))


def verify(fed: Federation, members: list[str], ref_month: int | str, months: int = 12,
           standard: Decimal = STANDARD) -> Report:
    ref = _month(ref_month)
    wf, wt = _add(ref, -months), _add(ref, -1)
    end = month_end(ref)
    dates = {d: fed.data_date(d) for d in ("huji", "shebao", "shuiwu", "budongchan", "cheguan", "gongjijin",
                                           "yibao", "canlian")}
    w = {"wf": wf, "wt": wt, "wfi": wf // 100 * 12 + wf % 100, "wti": wt // 100 * 12 + wt % 100}
    e = {"end": int(f"{end:%Y%m%d}")}

    def fig(dept: str, sql: str, id18: str, windowed: bool, params: dict, pick=lambda r: r[0][0]) -> Figure:
        covered = (month_end(wt) if windowed else end) <= dates[dept]
        meta = {"window": (wf, wt)} if windowed else {"as_of": end}
        if not covered:
            return Figure(dept, NOT_CURRENT, None, dates[dept], **meta)
        raws = fed.raws(dept, id18)
        if not raws:
            return Figure(dept, NO_RECORD, None, dates[dept], **meta)
        return Figure(dept, OK, pick(fed.rows(sql, raws, **params)), dates[dept], **meta)

    out: list[Member] = []
    for id18 in members:
        reg = fig("huji", _STATUS, id18, False, e, pick=lambda r: r[0] if r else None)
        if reg.status == NOT_CURRENT:
            counted, reason = None, None
        elif reg.status == NO_RECORD or reg.value is None:
            counted, reason = True, "no registry record"
        else:
            status, day = reg.value
            counted = status == "正常"
            word = {"死亡": "dead", "迁出": "moved out"}.get(status, f"status {status}")
            reason = None if counted else f"{word} {day[:4]}-{day[4:6]}-{day[6:]}"
        income = {}
        for item, (dept, sql) in INCOME.items():
            f = fig(dept, sql, id18, True, w)
            income[item] = _money(f)
        vehicles = _zero(fig("cheguan", _VEHICLES, id18, False, {**e, "threshold": VEHICLE_FEN}))
        props = _zero(fig("budongchan", _PROPERTIES, id18, False, e))
        fund = _money(fig("gongjijin", _FUND, id18, False, e))
        med = fig("yibao", _MEDICAL, id18, True, w, pick=lambda r: r[0])
        count, own = med.value if med.status == OK else (0, 0) if med.status == NO_RECORD else (None, None)
        med_n = Figure(med.department, med.status, count, med.data_date, med.window)
        med_own = _money(Figure(med.department, med.status, own, med.data_date, med.window))
        certs = _zero(fig("canlian", _CERTS, id18, False, e))
        grade = fig("canlian", _GRADE, id18, False, e, pick=lambda r: r[0][0] if r else None)
        out.append(Member(id18, counted, reason, reg, income, vehicles, props, fund, med_own, med_n, certs, grade))
    return _household(ref, (wf, wt), end, out, months, standard)


def _money(f: Figure) -> Figure:
    if f.status == NOT_CURRENT:
        return f
    f.value = _yuan(int(f.value or 0))
    return f


def _zero(f: Figure) -> Figure:
    if f.status == NO_RECORD:
        f.value = 0
    return f


def _household(ref, window, end, members: list[Member], months: int, standard: Decimal) -> Report:
    missing: list[tuple[str, str, str]] = []
    if any(m.counted is None for m in members):
        missing += [(m.id18, "registry", "huji") for m in members if m.counted is None]
        counted = None
    else:
        counted = [m for m in members if m.counted]
    scope = counted if counted is not None else members
    totals: dict[str, Decimal | None] = {}
    for item in INCOME:
        figs = [m.income[item] for m in scope]
        missing += [(m.id18, item, m.income[item].department) for m in scope if m.income[item].status == NOT_CURRENT]
        totals[item] = None if counted is None or any(f.value is None for f in figs) else sum(
            (f.value for f in figs), Decimal("0.00"))
    total = None if any(v is None for v in totals.values()) else sum(totals.values(), Decimal("0.00"))
    per_capita = None
    if total is not None and counted:
        per_capita = half_up_per_capita(int(total * 100), months, len(counted))
    below = None if per_capita is None else per_capita < standard

    def flag(attr: str, threshold: int):
        figs = [(m.id18, getattr(m, attr)) for m in scope]
        missing.extend((i, attr, f.department) for i, f in figs if f.status == NOT_CURRENT)
        if counted is None or any(f.value is None for _, f in figs):
            return None, None, []
        n = sum(f.value for _, f in figs)
        return n, n >= threshold, [i for i, f in figs if f.value]

    vehicles, vehicle_flag, vehicle_by = flag("vehicles", 1)
    property_count, property_flag, property_by = flag("properties", PROPERTIES)
    funds = [m.fund_balance.value for m in scope]
    fund = None if counted is None or any(v is None for v in funds) else sum(funds, Decimal("0.00"))
    return Report(ref, window, end, members, None if counted is None else [m.id18 for m in counted], totals, total,
                  per_capita, below, vehicle_flag, vehicle_by, property_count, property_flag, property_by, fund,
                  complete=not missing, missing=missing)
