"""Both ends of the audit export format: the writer (:func:`export`) and the reader the
verifier uses (:class:`ExportReader`).

Export format (NDJSON, ``hedui-audit-export/v1``)
--------------------------------------------------
One JSON object per line, in this order::

    {"type":"header","format":"hedui-audit-export/v1","origin":...,"start":S,"end":E,
     "tree_size":N,"tile_height":T,"frontier":[base64...],"exported_at":...,
     "time_zone":"Asia/Shanghai","exported_at_local":"2026-12-01 02:40:00 (UTC+8)"}
    {"type":"checkpoint","size":...,"note":...,"created_at":...}        every checkpoint S<=size<=E
    {"type":"cosignature","peer":...,"peer_note":...,"cosignature":...,"created_at":...}
    {"type":"fork","peer":...,"origin":...,"reason":...,"size_a":...,"note_a":...,...}
    {"type":"entry","seq":i,"entry":base64(exact entry bytes)}         for S <= i < E
    {"type":"footer","entries":E-S,"checkpoints":c,"cosignatures":k,"forks":f,"sha256":hex}

``frontier`` holds the complete subtrees of D[0:S] (empty when S = 0) so a partial export
can still be re-hashed; a wrong frontier shows up as roots that do not match the signed
checkpoints. The footer's ``sha256`` covers every byte before the footer line, and its
counts make a cut file (no footer, short counts, partial last line) detectable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, select

from hedui.common.clock import DEFAULT_ZONE, fmt_instant, zone
from hedui.node.audit.entry import utc
from hedui.node.audit.sources import PROGRESS_EVERY, Progress, Source, b64, b64d, engine_for, iso
from hedui.node.audit.tables import audit_checkpoints, audit_cosignatures, audit_entries, audit_forks
from hedui.node.audit.tree import TreeReader
from hedui.node.audit.verdict import Verdict, VerifyReport
from hedui.node.errors import InvalidArgument, NotFound

__all__ = ["EXPORT_FORMAT", "ExportSummary", "export", "LogMeta", "ExportReader"]

EXPORT_FORMAT = "hedui-audit-export/v1"


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    origin: str
    start: int
    end: int
    entries: int
    checkpoints: int
    cosignatures: int
    forks: int
    sha256: str


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def export(
    engine: Source,
    start: int,
    end: int | None,
    out_path: str | os.PathLike,
    *,
    now: datetime,
    tz: ZoneInfo | None = None,
    progress: Progress | None = None,
) -> ExportSummary:
    """Writes entries ``[start, end)`` with their checkpoints, all cosignatures and fork
    evidence to an NDJSON file (written to ``<out>.part``, then renamed). ``end``
    defaults to the latest checkpoint's size, so every exported entry is signed. The header
    says when, in UTC and as a person reads it in the federation zone ``tz`` (default
    Asia/Shanghai; docs/time.md)."""
    zone_ = tz if tz is not None else zone(DEFAULT_ZONE)
    out = Path(out_path)
    with engine_for(engine) as eng:
        tree = TreeReader(eng)
        size = tree.size()
        if end is None:
            latest = tree.latest_checkpoint()
            end = latest.size if latest is not None else size
        if not 0 <= start <= end <= size:
            raise InvalidArgument(f"range: got [{start}, {end}), want 0 <= start <= end <= {size}")
        frontier = tree.compact_range(start)
        tmp = out.with_name(out.name + ".part")
        try:
            summary = _write(eng, tree, tmp, start, end, size, frontier, now, zone_, progress)
        except BaseException:
            # Nothing half-written stays behind (issue 13: a full disk mid-export).
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, out)
        if progress:
            progress(end - start, end - start)
        return ExportSummary(out, *summary)


def _write(eng: Engine, tree: TreeReader, tmp: Path, start: int, end: int, size: int, frontier: list[bytes],
           now: datetime, zone_: ZoneInfo, progress: Progress | None) -> tuple[str, int, int, int, int, int, int, str]:
    """Writes the export to ``tmp`` (fsynced); returns the summary's fields after ``path``."""
    digest = hashlib.sha256()
    counts = {"checkpoint": 0, "cosignature": 0, "fork": 0}
    with open(tmp, "wb") as f, eng.connect() as conn:

        def emit(obj: Mapping[str, Any]) -> None:
            b = _line(obj)
            digest.update(b)
            f.write(b)

        emit({
            "type": "header", "format": EXPORT_FORMAT, "origin": tree.origin, "start": start,
            "end": end, "tree_size": size, "tile_height": tree.tile_height,
            "frontier": [b64(h) for h in frontier], "exported_at": iso(now),
            "time_zone": zone_.key, "exported_at_local": fmt_instant(now, zone_, seconds=True),
        })
        t = audit_checkpoints
        for r in conn.execute(
            select(t).where(and_(t.c.size >= start, t.c.size <= end)).order_by(t.c.id)
        ):
            emit({"type": "checkpoint", "size": int(r.size), "note": r.note, "created_at": iso(utc(r.created_at))})
            counts["checkpoint"] += 1
        t = audit_cosignatures
        for r in conn.execute(select(t).order_by(t.c.id)):
            emit({"type": "cosignature", "peer": r.peer, "peer_note": r.peer_note,
                  "cosignature": r.cosignature, "created_at": iso(utc(r.created_at))})
            counts["cosignature"] += 1
        t = audit_forks
        for r in conn.execute(select(t).order_by(t.c.id)):
            emit({"type": "fork", "peer": r.peer, "origin": r.origin, "reason": r.reason,
                  "size_a": int(r.size_a), "note_a": r.note_a, "size_b": int(r.size_b),
                  "note_b": r.note_b, "proof": r.proof, "created_at": iso(utc(r.created_at))})
            counts["fork"] += 1
        t = audit_entries
        n = 0
        stmt = (
            select(t.c.seq, t.c.entry)
            .where(and_(t.c.seq >= start, t.c.seq < end))
            .order_by(t.c.seq)
            .execution_options(yield_per=10_000)
        )
        for seq, data in conn.execute(stmt):
            b = b'{"type":"entry","seq":%d,"entry":"%s"}\n' % (seq, base64.b64encode(data))
            digest.update(b)
            f.write(b)
            n += 1
            if progress and n % PROGRESS_EVERY == 0:
                progress(n, end - start)
        if n != end - start:
            raise NotFound(f"the store has {n} entries in [{start}, {end}), want {end - start}")
        sha = digest.hexdigest()
        f.write(_line({"type": "footer", "entries": n, "checkpoints": counts["checkpoint"],
                       "cosignatures": counts["cosignature"], "forks": counts["fork"], "sha256": sha}))
        f.flush()
        os.fsync(f.fileno())
    return (tree.origin, start, end, n, counts["checkpoint"], counts["cosignature"], counts["fork"], sha)


# -- reading an export -------------------------------------------------------------------


@dataclass
class LogMeta:
    origin: str | None = None
    start: int = 0
    end: int | None = None  # file: the header's end; db: head size
    frontier: list[bytes] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    cosignatures: list[dict] = field(default_factory=list)
    forks: list[dict] = field(default_factory=list)
    tile_height: int | None = None
    nodes: dict[tuple[int, int], bytes] | None = None


# An entry line exactly as export() writes it (anything else goes through json.loads).
_ENTRY_LINE = re.compile(rb'\{"type":"entry","seq":(0|[1-9][0-9]{0,18}),"entry":"([A-Za-z0-9+/]*={0,2})"\}\n')


class ExportReader:
    """Reads an export file line by line: meta records first, then entries."""

    def __init__(self, path: Path, report: VerifyReport) -> None:
        self._f = open(path, "rb")
        self._report = report
        self._digest = hashlib.sha256()
        self._prev: bytes | None = None
        self._pending: bytes | None = None
        self.lineno = 0
        self.cut = False  # the last line has no newline: the file was cut
        self.footer: dict | None = None
        self.footer_digest: str | None = None
        self.bad_line: int | None = None
        self.trailing = False

    def close(self) -> None:
        self._f.close()

    def _next(self) -> bytes | None:
        line = self._f.readline()
        if not line:
            return None
        self.lineno += 1
        if self._prev is not None:
            self._digest.update(self._prev)
        self._prev = line
        if not line.endswith(b"\n"):
            self.cut = True
        return line

    def meta(self) -> LogMeta | None:
        first = self._next()
        if first is None:
            return None
        try:
            h = json.loads(first)
            assert isinstance(h, dict) and h.get("type") == "header" and h.get("format") == EXPORT_FORMAT
            m = LogMeta(origin=str(h["origin"]), start=int(h["start"]), end=int(h["end"]),
                      frontier=[b64d(x) for x in h.get("frontier") or []],
                      tile_height=h.get("tile_height"))
        except (ValueError, KeyError, TypeError, AssertionError, binascii.Error):
            if self.cut:
                self._report._add(Verdict.TRUNCATED, "export file is cut inside its header")
            else:
                self._report._add(Verdict.TAMPERED, "line 1 is not a hedui-audit-export/v1 header")
            return LogMeta(end=0)
        while True:
            line = self._next()
            if line is None:
                return m
            try:
                rec = json.loads(line)
                kind = rec.get("type")
            except (ValueError, AttributeError):
                self._bad(line)
                return m
            if kind == "checkpoint":
                m.checkpoints.append(rec)
            elif kind == "cosignature":
                m.cosignatures.append(rec)
            elif kind == "fork":
                m.forks.append(rec)
            else:
                self._pending = line
                return m

    def _bad(self, line: bytes) -> None:
        if self.cut and self._f.read(1) == b"":
            return  # a partial last line: truncation, reported from the footer check
        self.bad_line = self.lineno

    def entries(self) -> Iterator[tuple[int, bytes, bytes | None]]:
        line, self._pending = self._pending, None
        loads, b64d, fast = json.loads, base64.b64decode, _ENTRY_LINE.fullmatch
        while line is not None:
            m = fast(line)
            if m is not None:  # the exporter's exact layout: no JSON parser needed
                try:
                    data = b64d(m.group(2), validate=True)
                except (ValueError, binascii.Error):
                    self._bad(line)
                    return
                yield int(m.group(1)), data, None
                line = self._next()
                continue
            try:
                rec = loads(line)
                t = rec["type"]
                if t == "entry":
                    seq, data = rec["seq"], b64d(rec["entry"], validate=True)
                    if type(seq) is not int:
                        raise ValueError
                elif t == "footer":
                    self.footer = rec
                    self.footer_digest = self._digest.hexdigest()
                    if self._f.read(1):
                        self.trailing = True
                    return
                else:
                    raise ValueError
            except (ValueError, KeyError, TypeError, binascii.Error):
                self._bad(line)
                return
            yield seq, data, None
            line = self._next()
