"""CSV and Excel (.xlsx) export adapters.

CSV files are decoded with the declared encoding (UTF-8, UTF-8 with BOM, GBK); bytes that
do not decode make that row a problem rather than stopping the read. ``.xlsx`` workbooks are
read with openpyxl in read-only mode. Columns are named by header text. Locators are
``file.csv:line N`` (the physical line or sheet row where the row starts).

An export is re-read in full when its content changes (the fingerprint covers the file's
digest); the position inside one unchanged file is the last line read, so an interrupted
build resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from hedui.adapters import idnum
from hedui.adapters._convert import RowConverter, is_blank
from hedui.adapters.errors import SourceError
from hedui.adapters.mapping import CsvSource, ExcelSource, Mapping
from hedui.adapters.records import Record, RowProblem

__all__ = ["MAX_NAMED", "CsvAdapter", "ExcelAdapter"]

#: Skipped rows a scan names by locator (all are counted in ``skipped``).
MAX_NAMED = 1000


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _FileAdapter:
    kind = "file"

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self._conv = RowConverter(mapping)
        self._path = mapping.resolved_path()
        self._index: dict[str, int] | None = None
        self._digest: str | None = None
        self._seen: dict[str, int] = {}
        #: Rows the last scan skipped (``source.where`` / ``identity.skip_where``): not problems.
        self.skipped = 0
        #: The first :data:`MAX_NAMED` of those, as ``(locator, filter)`` (issue 13: a run
        #: names skipped rows apart from rows it could not use).
        self.skipped_rows: list[tuple[str, str]] = []
        #: The locator of the row the file ends inside (a truncated export), else None.
        self.truncated: str | None = None
        self._skip_why = ""

    @property
    def source(self) -> str:
        return self.mapping.name

    @property
    def fingerprint(self) -> str:
        if self._digest is None:
            self._digest = _digest(self._path)
        return f"{self.mapping.fingerprint()}:{self._digest}"

    def _resolve(self, headers: list[str]) -> dict[str, int]:
        name = self.mapping.name
        index: dict[str, int] = {}
        for i, h in enumerate(headers):
            index.setdefault(h, i)
        for key, ref in self.mapping.columns():
            if ref not in index:
                shown = ", ".join(repr(h) for h in headers[:30])
                raise SourceError(f"{name}: {key}: got header {ref!r}, want one of the file's headers ({shown})")
            if headers.count(ref) > 1:
                raise SourceError(f"{name}: {key}: got header {ref!r} {headers.count(ref)} times, want it once")
        return index

    def _locator(self, line: int) -> str:
        return f"{self._path.name}:line {line}"

    def data_date(self) -> date | None:
        """How current the export is: ``source.data_date`` as written (None when absent)."""
        return self.mapping.source.data_date  # type: ignore[union-attr]

    def _emit(self, line: int, cells: list[Any], index: dict[str, int]) -> Record | RowProblem | None:
        locator = self._locator(line)
        def get(ref: str) -> Any:
            return cells[index[ref]] if index[ref] < len(cells) else None

        why = self._conv.skip_reason(get)
        if why is not None:
            self._skip_why = why
            return None
        pk_col = getattr(self.mapping.source, "primary_key", None)
        if pk_col:
            key = cells[index[pk_col]] if index[pk_col] < len(cells) else None
            if is_blank(key):
                return RowProblem(locator, "source.primary_key: got an empty cell, want a row key")
            locator = f"{self._path.name}:{pk_col}={str(key).strip()}"
            if idnum.contains(locator):
                return RowProblem(self._locator(line), "source.primary_key: got an identity-shaped key, "
                                  "want a key that is not an identity number")
            first = self._seen.setdefault(locator, line)
            if first != line:
                return RowProblem(locator, f"source.primary_key: got the key of line {first} again, want unique keys")
        return self._conv.convert(locator, get)

    def _skipped(self, line: int) -> None:
        self.skipped += 1
        if len(self.skipped_rows) < MAX_NAMED:
            self.skipped_rows.append((self._locator(line), self._skip_why))

    def _reset(self) -> None:
        self._seen = {}
        self.skipped = 0
        self.skipped_rows = []
        self.truncated = None

    def records(self, since: int | None = None) -> Iterator[Record | RowProblem]:
        for item, _ in self.scan(since):
            yield item

    def scan(self, since: int | None = None) -> Iterator[tuple[Record | RowProblem, int]]:
        """Yields ``(record or problem, its line)``; pass a line as ``since`` to continue after it."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CsvAdapter(_FileAdapter):
    """A CSV export with a header line."""

    kind = "csv"

    def __init__(self, mapping: Mapping) -> None:
        if not isinstance(mapping.source, CsvSource):
            raise SourceError(f"{mapping.name}: source.kind: got {mapping.source.kind!r}, want 'csv'")
        super().__init__(mapping)
        self._src: CsvSource = mapping.source

    def _open(self) -> io.TextIOWrapper:
        try:
            raw = self._path.open("rb")
        except OSError as exc:
            raise SourceError(f"{self.source}: source.path: cannot open {self._path.name} ({exc.strerror})") from None
        return io.TextIOWrapper(raw, encoding=self._src.encoding, errors="surrogateescape", newline="")

    def _header(self, reader) -> list[str]:
        try:
            row = next(reader)
        except StopIteration:
            raise SourceError(f"{self.source}: source.path: got an empty file, want a header line") from None
        except csv.Error as exc:
            raise SourceError(f"{self.source}: source.path: got an unreadable header line ({exc})") from None
        headers = [h.strip().lstrip("\ufeff").strip() for h in row]
        if any("\udc80" <= ch <= "\udcff" for h in headers for ch in h):
            raise SourceError(f"{self.source}: source.encoding: got a header line that is not valid "
                              f"{self._src.encoding}, want the file's real encoding")
        return headers

    def check(self) -> None:
        """Opens the file and checks that every header the mapping names is present."""
        with self._open() as f:
            self._index = self._resolve(self._header(csv.reader(f, delimiter=self._src.delimiter)))

    def _ends_with_line_end(self) -> bool:
        """Whether the file's last byte ends a line (NULs stripped: UTF-16 ``\\n\\0``)."""
        try:
            with self._path.open("rb") as f:
                f.seek(0, io.SEEK_END)
                f.seek(max(0, f.tell() - 4))
                tail = f.read()
        except OSError as exc:
            raise SourceError(f"{self.source}: source.path: cannot read {self._path.name} ({exc.strerror})") from None
        return tail.rstrip(b"\0").endswith((b"\n", b"\r"))

    def scan(self, since: int | None = None) -> Iterator[tuple[Record | RowProblem, int]]:
        # Lines up to ``since`` are parsed again but not yielded: duplicate keys stay detectable.
        start = int(since or 0)
        self._reset()
        clean_end = self._ends_with_line_end()
        with self._open() as f:
            # strict: a quote left open runs to the end of the file and fails there, instead
            # of silently swallowing every later row into one cell (issue 13: 606 rows lost).
            reader = csv.reader(f, delimiter=self._src.delimiter, strict=True)
            header = self._header(reader)
            index = self._index = self._resolve(header)
            line = reader.line_num + 1
            # The last row is held back one step: only at the end is it known whether the file
            # ends inside it (a truncated export).
            held: tuple[Record | RowProblem, int, int] | None = None
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    if held is not None:
                        if held[1] > start:
                            yield held[0], held[1]
                        held = None
                    end = reader.line_num
                    if str(exc) == "unexpected end of data" and end > line:
                        # A quote opened on ``line`` is never closed: every line from there to
                        # the end is lost, and each is counted and named as such.
                        self.truncated = self._locator(line)
                        for n in range(max(line, start + 1), end + 1):
                            yield RowProblem(self._locator(n), f"line: inside a quote opened on line {line} "
                                             "and never closed, want CSV text (a truncated or mis-quoted export)"), n
                        return
                    if line > start:
                        yield RowProblem(self._locator(line), f"line: got malformed CSV ({str(exc)[:80]}), want CSV text"), line
                    line = reader.line_num + 1
                    continue
                this, line = line, reader.line_num + 1
                # Blank lines carry no data; short rows read their missing cells as empty.
                if all(is_blank(c) for c in cells):
                    continue
                item = self._emit(this, cells, index)
                if item is None:
                    if this > start:
                        self._skipped(this)
                    continue
                if held is not None and held[1] > start:
                    yield held[0], held[1]
                held = (item, this, len(cells))
            if held is None:
                return
            item, this, ncells = held
            if not clean_end and ncells < len(header):
                # The file stops inside its last row: rows after it are missing, how many is
                # unknown. The row is not used and the run is told (``truncated``).
                self.truncated = self._locator(this)
                item = RowProblem(self._locator(this), f"line: the file ends inside this row ({ncells} of "
                                  f"{len(header)} cells, no line end), want a complete export (truncated?)")
            if this > start:
                yield item, this


class ExcelAdapter(_FileAdapter):
    """An .xlsx workbook: one sheet, a header row, one row per record."""

    kind = "excel"

    def __init__(self, mapping: Mapping) -> None:
        if not isinstance(mapping.source, ExcelSource):
            raise SourceError(f"{mapping.name}: source.kind: got {mapping.source.kind!r}, want 'excel'")
        super().__init__(mapping)
        self._src: ExcelSource = mapping.source

    def _sheet(self):
        import openpyxl  # imported here: only Excel sources need it

        try:
            wb = openpyxl.load_workbook(self._path, read_only=True, data_only=True)
        except FileNotFoundError:
            raise SourceError(f"{self.source}: source.path: got {self._path.name}, want an existing file") from None
        except Exception as exc:
            raise SourceError(f"{self.source}: source.path: got a file that is not a readable .xlsx workbook "
                              f"({type(exc).__name__})") from None
        if self._src.sheet is None:
            return wb, wb.worksheets[0]
        if self._src.sheet not in wb.sheetnames:
            wb.close()
            raise SourceError(f"{self.source}: source.sheet: got {self._src.sheet!r}, want one of {wb.sheetnames}")
        return wb, wb[self._src.sheet]

    def _header(self, ws) -> list[str]:
        for row in ws.iter_rows(min_row=self._src.header_row, max_row=self._src.header_row, values_only=True):
            return ["" if v is None else str(v).strip() for v in row]
        raise SourceError(f"{self.source}: source.header_row: got row {self._src.header_row}, want a row with headers")

    def check(self) -> None:
        wb, ws = self._sheet()
        try:
            self._index = self._resolve(self._header(ws))
        finally:
            wb.close()

    def scan(self, since: int | None = None) -> Iterator[tuple[Record | RowProblem, int]]:
        # Rows up to ``since`` are read again but not yielded: duplicate keys stay detectable.
        start = int(since or 0)
        self._reset()
        wb, ws = self._sheet()
        try:
            index = self._index = self._resolve(self._header(ws))
            first = self._src.header_row + 1
            for line, cells in enumerate(ws.iter_rows(min_row=first, values_only=True), start=first):
                cells = list(cells)
                if all(is_blank(c) for c in cells):
                    continue
                item = self._emit(line, cells, index)
                if line <= start:
                    continue
                if item is None:
                    self._skipped(line)
                else:
                    yield item, line
        finally:
            wb.close()
