"""A named cross-check (issue 14), read from a TOML file::

    name = "2026-10 在保对象大数据比对"
    reference_month = "2026-10"          # each check is as of that month's end
    operator = "S01"

    [population]
    file = "recipients.csv"              # identity[,town] per line; or
    recipients = "env:HEDUI_DEPT_MINZHENG_URL"   # the civil-affairs recipients in force
    region = "370304001"                 # town for leads when a line names none

    [[criteria]]
    name = "dead"
    department = "huji"
    field = "registry_status"
    op = "=="                            # ==, >=
    value = "死亡"

Errors are ``file: key: got X, want Y``; identity numbers are never echoed (bad population
lines are reported by line number).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sqlalchemy import create_engine, text

from hedui.adapters.idnum import normalize
from hedui.common.errors import Reason
from hedui.node.errors import InvalidArgument

__all__ = ["Criterion", "Check", "Population", "load_check", "read_population", "OPS"]

OPS = ("==", ">=")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class Criterion:
    name: str
    department: str
    field: str
    op: str
    value: str

    def holds(self, value: str) -> bool:
        if self.op == "==":
            return value == self.value
        try:
            return Decimal(value) >= Decimal(self.value)
        except InvalidOperation:
            return False


@dataclass
class Population:
    people: list[str]                                     # canonical identity numbers, once each
    towns: dict[str, str]                                 # identity → town (lead routing)
    invalid: list[int] = field(default_factory=list)      # line numbers (file) or row numbers (registry)


@dataclass(frozen=True)
class Check:
    path: Path
    name: str
    reference_month: str
    operator: str
    criteria: tuple[Criterion, ...]
    population_file: Path | None
    recipients_url: str | None
    region: str
    digest: bytes                                         # SHA-256 of the check file: the authorisation

    @property
    def day(self) -> date:
        y, m = int(self.reference_month[:4]), int(self.reference_month[5:])
        nxt = date(y + (m == 12), m % 12 + 1, 1)
        return date.fromordinal(nxt.toordinal() - 1)


def _bad(path: Path, key: str, got: object, want: str) -> InvalidArgument:
    return InvalidArgument(f"{path.name}: {key}: got {str(got)[:40]!r}, want {want}", reason=Reason.BAD_CRITERION)


def load_check(path: Path) -> Check:
    raw = path.read_bytes()
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"{path.name}: got invalid TOML ({type(exc).__name__}), want a check file") from None
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise _bad(path, "name", name, "a name of 1..100 characters")
    month = doc.get("reference_month")
    if not isinstance(month, str) or not re.fullmatch(r"(19|20)\d\d-(0[1-9]|1[0-2])", month):
        raise _bad(path, "reference_month", month, "YYYY-MM")
    operator = doc.get("operator", "crosscheck")
    if not isinstance(operator, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", operator):
        raise _bad(path, "operator", operator, "a staff code")
    pop = doc.get("population")
    if not isinstance(pop, dict) or ("file" in pop) == ("recipients" in pop):
        raise _bad(path, "population", "", "a table with one of file or recipients")
    region = pop.get("region", "")
    if not isinstance(region, str) or (region and not re.fullmatch(r"\d{6}|\d{9}|\d{12}", region)):
        raise _bad(path, "population.region", region, "a 6-, 9- or 12-digit region code")
    pfile = (path.parent / pop["file"]) if isinstance(pop.get("file"), str) else None
    url = pop.get("recipients")
    if url is not None:
        if not isinstance(url, str):
            raise _bad(path, "population.recipients", url, "a database URL or env:NAME")
        if url.startswith("env:"):
            url = os.environ.get(url[4:])
            if not url:
                raise _bad(path, "population.recipients", pop["recipients"], "an environment variable that is set")
    crits = doc.get("criteria")
    if not isinstance(crits, list) or not crits:
        raise _bad(path, "criteria", "none", "at least one [[criteria]]")
    out: list[Criterion] = []
    for i, c in enumerate(crits):
        if not isinstance(c, dict):
            raise _bad(path, f"criteria[{i}]", c, "a table")
        for k in ("name", "department", "field", "op", "value"):
            if k not in c:
                raise _bad(path, f"criteria[{i}].{k}", "nothing", "a value")
        if not isinstance(c["name"], str) or not _NAME.fullmatch(c["name"]):
            raise _bad(path, f"criteria[{i}].name", c["name"], "a lower-case code like 'vehicle'")
        if c["op"] not in OPS:
            raise _bad(path, f"criteria[{i}].op", c["op"], f"one of {', '.join(OPS)}")
        value = str(c["value"])
        if c["op"] == ">=":
            try:
                Decimal(value)
            except InvalidOperation:
                raise _bad(path, f"criteria[{i}].value", value, "a number for >=") from None
        out.append(Criterion(c["name"], str(c["department"]), str(c["field"]), c["op"], value))
    return Check(path, name, month, operator, tuple(out), pfile, url, region, hashlib.sha256(raw).digest())


_RECIPIENTS = """
    SELECT c.sfzh, j.szxz FROM jz_cy c JOIN jz_jt j ON j.jtbh = c.jtbh
    WHERE c.sfbzdx = '是' AND j.jzlb IN ('低保', '特困') AND CAST(j.ksny AS INTEGER) <= :month
      AND (j.jsny IS NULL OR CAST(j.jsny AS INTEGER) >= :month)
    ORDER BY c.cyid"""


def read_population(check: Check, *, today: date) -> Population:
    """The check's population. File lines are ``identity[,town]`` (a header line and blank
    lines are skipped); an invalid identity is reported by its line number, never echoed."""
    rows: list[tuple[int, str, str]] = []
    if check.population_file is not None:
        try:
            body = check.population_file.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise InvalidArgument(f"{check.path.name}: population.file: got {check.population_file.name!r} ({exc.strerror}), want a readable file") from None
        except UnicodeDecodeError:
            raise InvalidArgument(f"{check.population_file.name}: got bytes that are not UTF-8, want text") from None
        for n, row in enumerate(csv.reader(io.StringIO(body)), start=1):
            if not row or not row[0].strip() or row[0].strip().lower() in ("identity", "身份证号"):
                continue
            rows.append((n, row[0], row[1].strip() if len(row) > 1 else ""))
    else:
        assert check.recipients_url is not None
        eng = create_engine(check.recipients_url)
        try:
            with eng.connect() as c:
                month = int(check.reference_month.replace("-", ""))
                rows = [(n, r[0] or "", r[1] or "") for n, r in enumerate(c.execute(text(_RECIPIENTS), {"month": month}), start=1)]
        finally:
            eng.dispose()
    pop = Population([], {})
    seen: set[str] = set()
    for n, raw, town in rows:
        try:
            ident = normalize(raw, today=today)
        except InvalidArgument:
            pop.invalid.append(n)
            continue
        if ident not in seen:
            seen.add(ident)
            pop.people.append(ident)
            pop.towns[ident] = town or check.region
    if not pop.people:
        where = check.population_file.name if check.population_file else "population.recipients"
        raise InvalidArgument(f"{where}: got an empty population ({len(pop.invalid)} invalid lines), want at least one valid identity",
                              reason=Reason.BAD_POPULATION)
    return pop
