"""One SQL connection over the nine department databases, the same SQL text on both backends.

SQLite: the nine files are ATTACHed under their department keys, so ``shebao.ac01`` names the
same table as the PostgreSQL schema-qualified ``shebao.ac01``. The SQL fragments below turn each
department's own date and money formats into integers (``YYYYMMDD``, ``YYYYMM``, fen), so
comparisons are exact and collation-free on both backends.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import bindparam, create_engine, text

from .ids import canonical

DEPARTMENTS = ("huji", "shebao", "shuiwu", "budongchan", "cheguan", "gongjijin", "yibao", "canlian", "minzheng")

# Where each department keeps identity numbers that make a record "its" (docs/department-data.md).
IDENTITY_COLUMNS = {
    "huji": (("RK_JBXX", "GMSFHM"),),
    "shebao": (("ac01", "aac002"),),
    "shuiwu": (("zrr_jbxx", "sfzjhm"), ("sb_grsds_mx", "sfzjhm")),
    "budongchan": (("qlr", "zjh"),),
    "cheguan": (("jdc", "sfzmhm"),),
    "gongjijin": (("grzhxx", "zjhm"),),
    "yibao": (("psn_info", "certno"),),
    "canlian": (("cjr_jbxx", "sfzh"),),
    "minzheng": (("jz_cy", "sfzh"), ("jz_lsjz", "sfzh")),
}

# How current each extract is: the SQL giving its last covered day as YYYYMMDD.
_DATA_DATE = {
    "huji": 'SELECT MAX({ymd}) FROM huji."SJ_TQPC"',
    "shebao": "SELECT MAX(sjjzny) * 100 + 1 FROM shebao.sjtq",             # a month: its last day below
    "shuiwu": "SELECT MAX(CAST(sjjzq AS INTEGER)) * 100 + 1 FROM shuiwu.sj_tqxx",
    "budongchan": "SELECT MAX(CAST(jzrq AS INTEGER)) FROM budongchan.tq_pc",
    "cheguan": "SELECT MAX({ymd}) FROM cheguan.sjtq",
    "gongjijin": "SELECT MAX({ymd}) FROM gongjijin.sjtq",
    "yibao": "SELECT MAX({ymd}) FROM yibao.etl_batch",
    "canlian": "SELECT MAX({ymd}) FROM canlian.sjtq",
    "minzheng": "SELECT MAX({ymd}) FROM minzheng.sjtq",
}
_DATA_DATE_COL = {"huji": '"SJJZRQ"', "cheguan": "sjjzrq", "gongjijin": "jzrq", "yibao": "data_until",
                  "canlian": "jzrq", "minzheng": "jzrq"}
_MONTHLY = {"shebao", "shuiwu"}


def ymd(expr: str) -> str:
    """DATE, TIMESTAMP, 'YYYY-MM-DD[ …]' or 'YYYYMMDD' text → integer YYYYMMDD."""
    return f"CAST(REPLACE(SUBSTR(CAST({expr} AS VARCHAR(30)), 1, 10), '-', '') AS INTEGER)"


def ym(expr: str) -> str:
    """INTEGER YYYYMM, 'YYYYMM' or 'YYYY-MM' text → integer YYYYMM."""
    return f"CAST(REPLACE(CAST({expr} AS VARCHAR(10)), '-', '') AS INTEGER)"


def month_index(ym_sql: str) -> str:
    return f"(({ym_sql}) / 100 * 12 + ({ym_sql}) % 100)"


def fen(expr: str, scale: int = 100) -> str:
    """A decimal amount (yuan; 万元 with scale 1,000,000) → whole fen."""
    return f"CAST(ROUND({expr} * {scale}) AS BIGINT)"


def to_date(n: int) -> date:
    return date(n // 10000, n // 100 % 100, n % 100)


def month_end(m: int) -> date:
    y, mo = divmod(m // 100 * 12 + m % 100, 12)
    return date(y, mo + 1, 1) - timedelta(days=1)


class Federation:
    """The department databases, read-only. ``raws(dept, id18)`` lists the stored forms that
    are this person's in a department; queries then match those exact stored values."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.conn = engine.connect()
        self._index: dict[str, dict[str, set[str]]] = {}

    @classmethod
    def sqlite(cls, folder: Path | str) -> Federation:
        folder = Path(folder)
        missing = [k for k in DEPARTMENTS if not (folder / f"{k}.sqlite").is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: no {missing[0]}.sqlite")
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(":memory:", uri=True)
            for k in DEPARTMENTS:
                conn.execute(f"ATTACH DATABASE 'file:{(folder / k).resolve()}.sqlite?mode=ro' AS {k}")
            return conn

        return cls(create_engine("sqlite://", creator=connect))

    @classmethod
    def postgres(cls, url: str) -> Federation:
        return cls(create_engine(url))

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()

    def rows(self, sql: str, raws: list[str] | None = None, **params) -> list[tuple]:
        stmt = text(sql)
        if raws is not None:
            stmt = stmt.bindparams(bindparam("raws", expanding=True))
            params["raws"] = raws
        return [tuple(r) for r in self.conn.execute(stmt, params)]

    def one(self, sql: str, raws: list[str] | None = None, **params):
        rows = self.rows(sql, raws, **params)
        return rows[0][0] if rows else None

    def data_date(self, dept: str) -> date:
        sql = _DATA_DATE[dept].format(ymd=ymd(_DATA_DATE_COL.get(dept, "")))
        n = int(self.one(sql))
        return month_end(n // 100) if dept in _MONTHLY else to_date(n)

    def _load(self, dept: str) -> dict[str, set[str]]:
        if dept not in self._index:
            idx: dict[str, set[str]] = defaultdict(set)
            for table, col in IDENTITY_COLUMNS[dept]:
                t = f'"{table}"' if table.isupper() else table
                c = f'"{col}"' if col.isupper() else col
                for (raw,) in self.rows(f"SELECT DISTINCT {c} FROM {dept}.{t} WHERE {c} IS NOT NULL"):
                    n = canonical(raw)
                    if n is not None:
                        idx[n].add(raw)
            self._index[dept] = idx
        return self._index[dept]

    def raws(self, dept: str, id18: str) -> list[str]:
        """Every stored form of ``id18`` in the department (padded, legacy, full-width …)."""
        return sorted(self._load(dept).get(id18, ()))

    def holders(self, dept: str) -> dict[str, set[str]]:
        return self._load(dept)
