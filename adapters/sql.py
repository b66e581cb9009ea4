"""SQL adapter: reads one department table (plus many-to-one joins) through SQLAlchemy.

Read-only by construction: SQLite files are opened with ``mode=ro``; PostgreSQL sessions
are ``READ ONLY``; only SELECTs are issued. Rows are read in keyset pages ordered by
``(watermark, primary key)`` (or by primary key alone), each page streamed with a
server-side cursor, so a resume position is just the last key read and a table of any size
is read in constant memory.

Rows whose watermark is NULL are read first, ordered by primary key, in a full scan only
(an incremental scan cannot tell whether they changed).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from sqlalchemy import Column, Date, DateTime, Engine, MetaData, String, Table, Time, and_, create_engine, func, inspect, not_, or_, select, true, type_coerce
from sqlalchemy.engine import make_url
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from hedui.adapters import dates, idnum
from hedui.adapters._convert import ConvPlan, RowConverter, is_blank
from hedui.adapters.errors import SourceError
from hedui.adapters.filters import parse_where
from hedui.adapters.mapping import DataDateSpec, Mapping, SqlSource
from hedui.adapters.records import RawRow, Record, RowProblem
from hedui.adapters.sql_filter import prefilter

__all__ = ["SqlAdapter"]

_YIELD_PER = 1000
_SHORT_INT = 10 ** 14   # integers below this in magnitude have at most 14 digits


def _raw(col: Column) -> Any:
    """The column as stored, for ordering and resume positions. SQLite keeps dates and
    timestamps as text in whatever format the department wrote; comparing that text with a
    re-formatted bound value would skip or repeat rows, so positions keep the stored text."""
    if isinstance(col.type, (Date, DateTime, Time)) and _is_sqlite(col):
        return type_coerce(col, String())
    return col


def _is_sqlite(col: Column) -> bool:
    table = getattr(col.table, "element", col.table)   # a join's alias ("as") wraps its table
    return bool(getattr(table, "info", {}).get("sqlite"))


def _encode(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, datetime):
        return {"$dt": v.isoformat()}
    if isinstance(v, date):
        return {"$d": v.isoformat()}
    if isinstance(v, Decimal):
        return {"$dec": str(v)}
    if isinstance(v, float):
        return {"$f": repr(v)}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$b": bytes(v).hex()}
    raise SourceError(f"source.primary_key: got values of type {type(v).__name__}, want integers, text, dates or decimals")


def _decode(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    (tag, s), = v.items()
    return {"$dt": datetime.fromisoformat, "$d": date.fromisoformat, "$dec": Decimal,
            "$f": float, "$b": bytes.fromhex}[tag](s)


class SqlAdapter:
    """Yields canonical records from a SQL source described by a :class:`Mapping`."""

    kind = "sql"

    def __init__(self, mapping: Mapping) -> None:
        if not isinstance(mapping.source, SqlSource):
            raise SourceError(f"{mapping.name}: source.kind: got {mapping.source.kind!r}, want 'sql'")
        self.mapping = mapping
        self._src: SqlSource = mapping.source
        self._conv = RowConverter(mapping)
        self._engine: Engine | None = None
        self._plan: dict[str, Any] | None = None
        self._dd_col: Column | None = None
        #: Rows the last scan skipped (``source.where`` / ``identity.skip_where``): not problems.
        self.skipped = 0
        self._raw = False

    @property
    def source(self) -> str:
        return self.mapping.name

    @property
    def fingerprint(self) -> str:
        return self.mapping.fingerprint()

    # --- connection and schema ------------------------------------------------------------

    def _open(self) -> Engine:
        if self._engine is not None:
            return self._engine
        url_text = self._src.resolved_url()
        try:
            url = make_url(url_text)
        except Exception:
            raise SourceError(f"{self.source}: source.url: got an unparseable URL, want a SQLAlchemy URL") from None
        backend = url.get_backend_name()
        try:
            if backend == "sqlite" and url.database and url.database != ":memory:":
                path = url.database

                def _ro() -> sqlite3.Connection:
                    return sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, check_same_thread=False)

                self._engine = create_engine("sqlite://", creator=_ro, poolclass=NullPool)
            else:
                if url.drivername == "postgresql":
                    url = url.set(drivername="postgresql+psycopg")
                self._engine = create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError) as exc:
            raise SourceError(f"{self.source}: source.url: cannot use {url.render_as_string(hide_password=True)} ({type(exc).__name__})") from None
        return self._engine

    def _connect(self):
        conn = self._open().connect()
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(postgresql_readonly=True)
        return conn

    def _reflect(self, conn: Any, md: MetaData, key: str, tname: str) -> Table:
        if tname in md.tables:   # joined twice (under another name): one reflection
            return md.tables[tname]
        schema, _, bare = tname.rpartition(".")
        try:
            return Table(bare, md, autoload_with=conn, schema=schema or None,
                         info={"sqlite": conn.dialect.name == "sqlite"})
        except NoSuchTableError:
            known = sorted(inspect(conn).get_table_names(schema=schema or None))
            raise SourceError(f"{self.source}: {key}: got {tname!r}, want an existing table "
                              f"({', '.join(known[:20]) or 'none found'})") from None

    def check(self) -> None:
        """Connects, reflects the tables and checks every column the mapping names (row
        columns, filters, dates, attributes, joins and the data-date table).
        Raises :class:`~hedui.adapters.errors.SourceError` naming the mapping key; reads no rows."""
        src, name = self._src, self.source
        tables: dict[str, Table] = {}
        md = MetaData()
        dd = src.data_date if isinstance(src.data_date, DataDateSpec) else None
        try:
            with self._connect() as conn:
                tables[src.table] = self._reflect(conn, md, "source.table", src.table)
                for i, j in enumerate(src.joins):
                    if j.name in tables:
                        raise SourceError(f"{name}: source.joins[{i}].as: got nothing for a second {j.table}, "
                                          "want a name of its own (as = \"x\"), used as x.column")
                    t = self._reflect(conn, md, f"source.joins[{i}].table", j.table)
                    tables[j.name] = t.alias(j.as_) if j.as_ else t
                if dd is not None:
                    t = self._reflect(conn, MetaData(), "source.data_date.table", dd.table)
                    if dd.column not in t.c:
                        raise SourceError(f"{name}: source.data_date.column: got column {dd.column!r}, want a column "
                                          f"of {dd.table} ({', '.join(c.name for c in t.c)})")
                    self._dd_col = t.c[dd.column]
        except SourceError:
            raise
        except SQLAlchemyError as exc:
            raise SourceError(f"{name}: source.url: cannot read the database ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]})") from None
        # A schema-qualified table ("shebao.ac43") may be named by its bare name in column
        # references ("ac43.aac001") when that is unambiguous.
        bare: dict[str, list[str]] = {}
        for tname in tables:
            bare.setdefault(tname.rpartition(".")[2], []).append(tname)

        def col(key: str, ref: str) -> Column:
            tname, _, cname = ref.rpartition(".")
            tname = tname or src.table
            if tname not in tables and len(bare.get(tname, [])) == 1:
                tname = bare[tname][0]
            if tname not in tables:
                raise SourceError(f"{name}: {key}: got table {tname!r}, want {src.table!r} or a joined table")
            t = tables[tname]
            if cname not in t.c:
                raise SourceError(f"{name}: {key}: got column {cname!r}, want a column of {tname} "
                                  f"({', '.join(c.name for c in t.c)})")
            return t.c[cname]

        cols = {ref: col(key, ref) for key, ref in self.mapping.columns()}
        self._check_formats(cols)
        pk = cols[src.primary_key]
        ident = cols[self.mapping.identity.column]
        if pk is ident:
            raise SourceError(f"{name}: source.primary_key: got the identity column, want a row key that is "
                              "not an identity number (locators must not contain identities)")
        if pk.table is not tables[src.table]:
            raise SourceError(f"{name}: source.primary_key: got a column of a joined table, want one of {src.table}")
        joined = tables[src.table]
        for i, j in enumerate(src.joins):
            a, b = (cols[r] for r in j.pair)
            if b.table is not tables[j.name]:
                a, b = b, a
            if b.table is not tables[j.name]:
                raise SourceError(f"{name}: source.joins[{i}].on: got no column of {j.name}, want 'earlier.col = {j.name}.col'")
            joined = joined.outerjoin(tables[j.name], a == b)  # LEFT JOIN: no row is dropped
        labels = {ref: f"c{i}" for i, ref in enumerate(cols)}
        wm = cols[src.watermark] if src.watermark else None
        stmt = select(*[_raw(c).label(labels[r]) for r, c in cols.items()],
                      _raw(pk).label("_pk"), *([_raw(wm).label("_wm")] if wm is not None else []),
                      ).select_from(joined)
        pre = prefilter(parse_where(src.where), cols, "sqlite" if tables[src.table].info.get("sqlite") else "other")
        self._plan = {
            "labels": labels,
            # Dates as stored (_raw): SQLite keeps them as text, and the mapping's declared
            # format parses them; SQLAlchemy's own parsing would stop the scan at a bad cell.
            "stmt": stmt.where(and_(*pre)) if pre else stmt,
            # Rows the prefilter drops are skipped rows too: counted per scan phase.
            "excluded": select(func.count()).select_from(joined).where(not_(and_(*pre))) if pre else None,
            "pk": _raw(pk),
            "pk_name": pk.name,
            "wm": _raw(wm) if wm is not None else None,
            "table": src.table.rpartition(".")[2],
        }

    def _check_formats(self, cols: dict[str, Column]) -> None:
        """A period format declared on a DATE/TIMESTAMP column would make every row a problem:
        refuse it now, naming the key (the column's values are days, not YYYYMM numbers)."""
        specs: list[tuple[str, str, str]] = []
        for i, f in enumerate(self.mapping.facts):
            specs += [(f"facts[{i}].{k}.format", s.column, s.format)
                      for k, s in (("date", f.date), ("until", f.until)) if s is not None]
        for key, ref, fmt in specs:
            if fmt not in ("date", "datetime") and isinstance(cols[ref].type, (Date, DateTime)):
                raise SourceError(f"{self.source}: {key}: got {fmt!r} for the {cols[ref].type} column {ref}, "
                                  "want 'date' or 'datetime'")
        dd = self._src.data_date
        if isinstance(dd, DataDateSpec) and self._dd_col is not None and dd.format not in ("date", "datetime") \
                and isinstance(self._dd_col.type, (Date, DateTime)):
            raise SourceError(f"{self.source}: source.data_date.format: got {dd.format!r} for the "
                              f"{self._dd_col.type} column {dd.column}, want 'date' or 'datetime'")

    # --- reading ----------------------------------------------------------------------------

    def _pages(self, where, order) -> Iterator[Any]:
        """Rows of ``stmt WHERE where(last_row) ORDER BY order`` in keyset pages."""
        plan = self._plan
        assert plan is not None
        last = None
        with self._connect() as conn:
            while True:
                stmt = plan["stmt"].where(where(last)).order_by(*order).limit(self._src.page_size)
                n = 0
                with conn.begin():
                    result = conn.execution_options(stream_results=True, yield_per=_YIELD_PER).execute(stmt)
                    for row in result:
                        n += 1
                        last = row
                        yield row
                if n < self._src.page_size:
                    return

    def scan(self, since: Any = None) -> Iterator[tuple[Record | RowProblem, Any]]:
        """Yields ``(record or problem, position after it)``; a position is a JSON value.
        Pass one back as ``since`` to continue after it (resume, or an incremental run)."""
        if self._plan is None:
            self.check()
        plan = self._plan
        assert plan is not None
        pk, wm, labels, table = plan["pk"], plan["wm"], plan["labels"], plan["table"]
        pk_l, wm_l, pk_name = "_pk", "_wm", plan["pk_name"]
        pos = since or None
        self.skipped = 0
        raw = len(labels) if self._raw else 0
        # By position, not row._mapping (a mapping object per access): the mapping's columns,
        # then the key, then the watermark (the plan's select list).
        ipk, iwm = len(labels), len(labels) + 1

        prev: list[Any] = [object()]
        prefix_holds = idnum.contains(f"{table}:{pk_name}=")

        def emit(row) -> Record | RowProblem | None:
            key = row[ipk]
            locator = f"{table}:{pk_name}={key}"
            # An integer key of fewer than 15 digits cannot hold an identity number's shape, and
            # none can span the "=" before it: then only the prefix (checked once) could.
            if (prefix_holds if type(key) is int and -_SHORT_INT < key < _SHORT_INT else idnum.contains(locator)):
                return RowProblem(f"{table}:{pk_name}=<withheld>", "source.primary_key: got an identity-shaped "
                                  "key, want a key that is not an identity number")
            if key == prev[0]:  # a one-to-many join repeated the row
                return RowProblem(locator, "source.joins: got several joined rows for one row, want "
                                  "many-to-one joins")
            prev[0] = key
            if raw:   # converted later, elsewhere (raw_scan): the mapping's columns come first, in order
                return RawRow(locator, tuple(row[:raw]))
            m = row._mapping
            return self._conv.convert(locator, lambda ref: m[labels[ref]])

        def excluded(range_: Any) -> None:
            if plan["excluded"] is not None:
                with self._connect() as conn, conn.begin():
                    self.skipped += int(conn.execute(plan["excluded"].where(range_)).scalar_one())

        def after_pk(start: Any):
            def where(last):
                if last is not None:
                    return pk > last._mapping[pk_l]
                return pk > _decode(start) if start is not None else true()
            return where

        if wm is None:
            start = pos["pk"] if pos else None
            excluded(after_pk(start)(None))
            for row in self._pages(after_pk(start), [pk]):
                if (item := emit(row)) is None:
                    self.skipped += 1
                else:
                    yield item, {"pk": _encode(row[ipk])}
            return
        if pos is None or pos.get("phase") == "null":
            start = pos["pk"] if pos else None
            null_where = after_pk(start)
            excluded(and_(wm.is_(None), null_where(None)))
            for row in self._pages(lambda last: and_(wm.is_(None), null_where(last)), [pk]):
                if (item := emit(row)) is None:
                    self.skipped += 1
                else:
                    yield item, {"phase": "null", "pk": _encode(row[ipk])}
            pos = None

        def after_wm(last):
            if last is None and pos is None:
                return wm.isnot(None)
            w, p = (_decode(pos["wm"]), _decode(pos["pk"])) if last is None else (last._mapping[wm_l], last._mapping[pk_l])
            return or_(wm > w, and_(wm == w, pk > p))

        excluded(after_wm(None))
        for row in self._pages(after_wm, [wm, pk]):
            if (item := emit(row)) is None:
                self.skipped += 1
            else:
                yield item, {"wm": _encode(row[iwm]), "pk": _encode(row[ipk])}

    def data_date(self) -> date | None:
        """How current the source is: ``source.data_date`` as written, or the largest value of
        ``{table, column}`` in the declared format (a month or year is its last day); None when
        the mapping declares none. Raises SourceError if the column holds no usable date."""
        dd = self._src.data_date
        if dd is None or isinstance(dd, date):
            return dd
        if self._plan is None:
            self.check()
        col = self._dd_col
        assert col is not None
        key = f"{self.source}: source.data_date"
        try:
            with self._connect() as conn, conn.begin():
                values = conn.execute(select(_raw(col)).where(col.isnot(None)).distinct().limit(10_000)).scalars().all()
        except SQLAlchemyError as exc:
            raise SourceError(f"{key}: cannot read {dd.table}.{dd.column} ({type(exc).__name__})") from None
        days = []
        for v in values:
            if is_blank(v):
                continue
            try:
                days.append(dates.parse(v, dd.format, end=True))
            except dates.BadDate as bad:
                raise SourceError(f"{key}: got {bad.got} in {dd.table}.{dd.column}, want {dates.want(dd.format)}") from None
        if not days:
            raise SourceError(f"{key}: got no value in {dd.table}.{dd.column}, want the extract's data date")
        return max(days)

    def records(self, since: Any = None) -> Iterator[Record | RowProblem]:
        for item, _ in self.scan(since):
            yield item

    def raw_converter(self) -> tuple[ConvPlan, tuple[str, ...]]:
        """What converts a :class:`RawRow` elsewhere: the mapping as a plain
        :class:`~hedui.adapters._convert.ConvPlan` (for a ``RowConverter``; a worker process
        unpickles it without importing pydantic) and the column references its values stand
        for, in order."""
        if self._plan is None:
            self.check()
        assert self._plan is not None
        return ConvPlan.of(self.mapping), tuple(self._plan["labels"])

    def raw_scan(self, since: Any = None) -> Iterator[tuple[RawRow | RowProblem, Any]]:
        """:meth:`scan` without the conversion: rows as :class:`RawRow` (problems found while
        reading — repeated or identity-shaped keys — as they are), for conversion in other
        processes. Rows the mapping skips are then counted by whoever converts them."""
        self._raw = True
        try:
            yield from self.scan(since)
        finally:
            self._raw = False

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> SqlAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
