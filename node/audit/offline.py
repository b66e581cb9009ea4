"""The security officer's offline tools: export, verify, proof, reconcile.

Sources
-------
A *source* is a node store (an SQLAlchemy ``Engine`` or a database URL such as
``sqlite:///node.db``) or an export file (a path). Nothing here needs the node's private
key; verification needs the trusted verifier keys (``name+hexid+base64``).

Export format (NDJSON, ``hedui-audit-export/v1``)
--------------------------------------------------
One JSON object per line, in this order::

    {"type":"header","format":"hedui-audit-export/v1","origin":...,"start":S,"end":E,
     "tree_size":N,"tile_height":T,"frontier":[base64...],"exported_at":...}
    {"type":"checkpoint","size":...,"note":...,"created_at":...}        every checkpoint S<=size<=E
    {"type":"cosignature","peer":...,"peer_note":...,"cosignature":...,"created_at":...}
    {"type":"fork","peer":...,"origin":...,"reason":...,"size_a":...,"note_a":...,...}
    {"type":"entry","seq":i,"entry":base64(exact entry bytes)}         for S <= i < E
    {"type":"footer","entries":E-S,"checkpoints":c,"cosignatures":k,"forks":f,"sha256":hex}

``frontier`` holds the complete subtrees of D[0:S] (empty when S = 0) so a partial export
can still be re-hashed; a wrong frontier shows up as roots that do not match the signed
checkpoints. The footer's ``sha256`` covers every byte before the footer line, and its
counts make a cut file (no footer, short counts, partial last line) detectable.

Verdicts and exit codes
-----------------------
``OK`` 0 · ``TAMPERED`` 3 · ``TRUNCATED`` 4 · ``FORK`` 5 · ``UNKNOWN_KEY`` 6 · ``STALE`` 7 ·
``EMPTY`` 8 (missing or empty log, or nothing signed: never OK). When several problems
are found the most severe wins: FORK > TAMPERED > TRUNCATED > UNKNOWN_KEY > STALE > EMPTY;
every problem is listed in the report.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import os
import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

from sqlalchemy import Engine, and_, select

from hedui.node.audit import merkle
from hedui.node.audit.errors import (
    AmbiguousKeyError,
    CheckpointError,
    CosignatureError,
    InclusionProofError,
    NoteError,
    ProofFormatError,
    UnknownKeyError,
)
from hedui.node.audit.log import (
    Kind,
    TreeReader,
    _format_time,
    _utc,
    checkpoint_time,
    decode_entry,
)
from hedui.node.audit.note import (
    Checkpoint,
    CosignatureVerifier,
    Note,
    Verifier,
    Verifiers,
    open_checkpoint,
    open_note,
    split_note,
    verify_cosignature,
)
from hedui.node.audit.tables import (
    audit_checkpoints,
    audit_cosignatures,
    audit_entries,
    audit_forks,
    audit_head,
    audit_nodes,
)
from hedui.node.errors import InvalidArgument, NotFound
from hedui.node.store.db import open_engine

__all__ = [
    "EXPORT_FORMAT",
    "PROOF_HEADER",
    "Verdict",
    "Problem",
    "VerifyReport",
    "ExportSummary",
    "ProofResult",
    "ReconcileReport",
    "Source",
    "export",
    "verify",
    "proof",
    "verify_proof",
    "reconcile",
    "load_trusted_keys",
]

EXPORT_FORMAT = "hedui-audit-export/v1"
PROOF_HEADER = "c2sp.org/tlog-proof@v1"
Source = Union[str, os.PathLike, Engine]
Progress = Callable[[int, int], None]
_PROGRESS_EVERY = 20_000


class Verdict(enum.IntEnum):
    """Outcome of :func:`verify`; the value is the CLI exit code."""

    OK = 0
    TAMPERED = 3
    TRUNCATED = 4
    FORK = 5
    UNKNOWN_KEY = 6
    STALE = 7
    EMPTY = 8


_SEVERITY = [Verdict.FORK, Verdict.TAMPERED, Verdict.TRUNCATED, Verdict.UNKNOWN_KEY, Verdict.STALE, Verdict.EMPTY]


@dataclass(frozen=True)
class Problem:
    verdict: Verdict
    message: str


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``verdict`` is the most severe problem, or OK."""

    verdict: Verdict = Verdict.OK
    origin: str | None = None
    start: int = 0
    entries: int = 0
    tree_size: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    cosignatures: int = 0
    latest_checkpoint_size: int | None = None
    latest_checkpoint_time: int | None = None
    unsigned_tail: int = 0
    peer_forks: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def _add(self, verdict: Verdict, message: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(Problem(verdict, message))
        elif not any(p.message.startswith("(more problems") for p in self.problems):
            self.problems.append(Problem(verdict, "(more problems not listed)"))
        if self.verdict is Verdict.OK or _SEVERITY.index(verdict) < _SEVERITY.index(self.verdict):
            self.verdict = verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.name,
            "exit_code": int(self.verdict),
            "origin": self.origin,
            "start": self.start,
            "entries": self.entries,
            "tree_size": self.tree_size,
            "checkpoints": self.checkpoints,
            "checkpoints_verified": self.checkpoints_verified,
            "cosignatures": self.cosignatures,
            "latest_checkpoint_size": self.latest_checkpoint_size,
            "latest_checkpoint_time": self.latest_checkpoint_time,
            "unsigned_tail": self.unsigned_tail,
            "peer_forks": self.peer_forks,
            "problems": [{"verdict": p.verdict.name, "message": p.message} for p in self.problems],
            "notes": list(self.notes),
        }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64d(s: Any) -> bytes:
    if not isinstance(s, str):
        raise ValueError("not base64")
    return base64.b64decode(s, validate=True)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else _format_time(t)


def _parse_iso(s: Any) -> datetime | None:
    if not isinstance(s, str):
        return None
    try:
        return _utc(datetime.fromisoformat(s.replace("Z", "+00:00")))
    except ValueError:
        return None


def _is_url(source: Source) -> bool:
    return isinstance(source, str) and "://" in source


@contextmanager
def _engine_for(source: Source) -> Iterator[Engine]:
    if isinstance(source, Engine):
        yield source
        return
    if not _is_url(source):
        raise InvalidArgument(f"source: got {source!r}, want a database URL or an Engine")
    eng = open_engine(str(source))
    try:
        yield eng
    finally:
        eng.dispose()


def load_trusted_keys(values: Iterable[str]) -> Verifiers:
    """Verifier keys from strings or files (one key per line, ``#`` comments). Raises
    :class:`~hedui.node.audit.errors.KeyFormatError` for a malformed key."""
    keys: list[str] = []
    for v in values:
        p = Path(v)
        if p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.append(line)
        else:
            keys.append(v.strip())
    return Verifiers(keys)


def _cosigners(trusted: Verifiers) -> Verifiers:
    out = Verifiers()
    for v in trusted:
        out.add(v if isinstance(v, CosignatureVerifier) else CosignatureVerifier(v.name, v.public_key))
    return out


# -- export ----------------------------------------------------------------------------


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
    progress: Progress | None = None,
) -> ExportSummary:
    """Writes entries ``[start, end)`` with their checkpoints, all cosignatures and fork
    evidence to an NDJSON file (written to ``<out>.part``, then renamed). ``end``
    defaults to the latest checkpoint's size, so every exported entry is signed."""
    out = Path(out_path)
    with _engine_for(engine) as eng:
        tree = TreeReader(eng)
        size = tree.size()
        if end is None:
            latest = tree.latest_checkpoint()
            end = latest.size if latest is not None else size
        if not 0 <= start <= end <= size:
            raise InvalidArgument(f"range: got [{start}, {end}), want 0 <= start <= end <= {size}")
        frontier = tree.compact_range(start)
        digest = hashlib.sha256()
        counts = {"checkpoint": 0, "cosignature": 0, "fork": 0}
        tmp = out.with_name(out.name + ".part")
        with open(tmp, "wb") as f, eng.connect() as conn:

            def emit(obj: Mapping[str, Any]) -> None:
                b = _line(obj)
                digest.update(b)
                f.write(b)

            emit({
                "type": "header", "format": EXPORT_FORMAT, "origin": tree.origin, "start": start,
                "end": end, "tree_size": size, "tile_height": tree.tile_height,
                "frontier": [_b64(h) for h in frontier], "exported_at": _iso(datetime.now(timezone.utc)),
            })
            t = audit_checkpoints
            for r in conn.execute(
                select(t).where(and_(t.c.size >= start, t.c.size <= end)).order_by(t.c.id)
            ):
                emit({"type": "checkpoint", "size": int(r.size), "note": r.note, "created_at": _iso(_utc(r.created_at))})
                counts["checkpoint"] += 1
            t = audit_cosignatures
            for r in conn.execute(select(t).order_by(t.c.id)):
                emit({"type": "cosignature", "peer": r.peer, "peer_note": r.peer_note,
                      "cosignature": r.cosignature, "created_at": _iso(_utc(r.created_at))})
                counts["cosignature"] += 1
            t = audit_forks
            for r in conn.execute(select(t).order_by(t.c.id)):
                emit({"type": "fork", "peer": r.peer, "origin": r.origin, "reason": r.reason,
                      "size_a": int(r.size_a), "note_a": r.note_a, "size_b": int(r.size_b),
                      "note_b": r.note_b, "proof": r.proof, "created_at": _iso(_utc(r.created_at))})
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
                if progress and n % _PROGRESS_EVERY == 0:
                    progress(n, end - start)
            if n != end - start:
                raise NotFound(f"the store has {n} entries in [{start}, {end}), want {end - start}")
            sha = digest.hexdigest()
            f.write(_line({"type": "footer", "entries": n, "checkpoints": counts["checkpoint"],
                           "cosignatures": counts["cosignature"], "forks": counts["fork"], "sha256": sha}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        if progress:
            progress(end - start, end - start)
        return ExportSummary(out, tree.origin, start, end, n, counts["checkpoint"], counts["cosignature"],
                             counts["fork"], sha)


# -- verify ----------------------------------------------------------------------------


@dataclass
class _Meta:
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


class _FileReader:
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

    def meta(self) -> _Meta | None:
        first = self._next()
        if first is None:
            return None
        try:
            h = json.loads(first)
            assert isinstance(h, dict) and h.get("type") == "header" and h.get("format") == EXPORT_FORMAT
            m = _Meta(origin=str(h["origin"]), start=int(h["start"]), end=int(h["end"]),
                      frontier=[_b64d(x) for x in h.get("frontier") or []],
                      tile_height=h.get("tile_height"))
        except (ValueError, KeyError, TypeError, AssertionError, binascii.Error):
            if self.cut:
                self._report._add(Verdict.TRUNCATED, "export file is cut inside its header")
            else:
                self._report._add(Verdict.TAMPERED, "line 1 is not a hedui-audit-export/v1 header")
            return _Meta(end=0)
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


def _db_meta(eng: Engine, report: VerifyReport) -> _Meta | None:
    with eng.connect() as conn:
        head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
        if head is None:
            return None
        m = _Meta(origin=head.origin, start=0, end=int(head.size), tile_height=int(head.tile_height))
        for r in conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.id)):
            m.checkpoints.append({"size": int(r.size), "root": bytes(r.root), "note": r.note,
                                  "created_at": _iso(_utc(r.created_at))})
        for r in conn.execute(select(audit_cosignatures).order_by(audit_cosignatures.c.id)):
            m.cosignatures.append({"peer": r.peer, "peer_note": r.peer_note, "cosignature": r.cosignature,
                                   "size": int(r.size), "root": bytes(r.root)})
        for r in conn.execute(select(audit_forks).order_by(audit_forks.c.id)):
            m.forks.append({"peer": r.peer, "origin": r.origin, "reason": r.reason})
        m.nodes = {(int(r.level), int(r.idx)): bytes(r.hash)
                   for r in conn.execute(select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash))}
    return m


def _db_entries(eng: Engine, report: VerifyReport) -> Iterator[tuple[int, bytes, bytes | None]]:
    t = audit_entries
    stmt = (
        select(t.c.seq, t.c.entry, t.c.leaf_hash, t.c.kind, t.c.request_id, t.c.created_at)
        .order_by(t.c.seq)
        .execution_options(yield_per=10_000)
    )
    bad = 0
    with eng.connect() as conn:
        for seq, data, leaf, kind, rid, created in conn.execute(stmt):
            data = bytes(data)
            # The indexed copies must agree with the entry bytes (reconcile relies on them).
            try:
                obj = json.loads(data)
                same = (obj["kind"] == kind and obj["fields"].get("request_id") == rid
                        and obj["time"] == _format_time(created))
            except (ValueError, KeyError, TypeError):
                same = False
            if not same and bad < 20:
                bad += 1
                report._add(Verdict.TAMPERED, f"entry {seq}: kind/request_id/created_at columns disagree with its bytes")
            yield int(seq), data, bytes(leaf)


def _verify_entries(
    entries: Iterable[tuple[int, bytes, bytes | None]],
    meta: _Meta,
    targets: Sequence[int],
    report: VerifyReport,
    progress: Progress | None,
) -> tuple[int, dict[int, bytes]]:
    """Re-derives the tree; returns (entries seen, {size: root} for each target size)."""
    T = meta.tile_height
    nodes = meta.nodes
    node_bad = [0]

    def on_node(height: int, index: int, h: bytes) -> None:
        if height % T == 0:
            stored = nodes.pop((height, index), None)
            if stored != h and node_bad[0] < 20:
                node_bad[0] += 1
                what = "missing" if stored is None else "wrong"
                report._add(Verdict.TAMPERED, f"stored subtree hash ({height}, {index}) is {what}")

    cr = merkle.CompactRange(meta.start, meta.frontier, on_node if nodes is not None and T else None)
    roots: dict[int, bytes] = {}
    want = sorted(set(s for s in targets if s >= meta.start))
    ti = 0
    while ti < len(want) and want[ti] == meta.start:
        roots[meta.start] = cr.root()
        ti += 1
    nxt = want[ti] if ti < len(want) else -1
    expected = meta.start
    total = (meta.end or 0) - meta.start
    sha = hashlib.sha256
    leaf_bad = 0
    for seq, data, stored in entries:
        if seq != expected:
            report._add(Verdict.TAMPERED, f"entry {expected} is missing or out of order (found seq {seq} instead)")
            break
        h = sha(b"\x00" + data).digest()
        if stored is not None and stored != h and leaf_bad < 20:
            leaf_bad += 1
            report._add(Verdict.TAMPERED, f"entry {seq}: stored leaf hash does not match its bytes")
        cr.append(h)
        expected += 1
        if expected == nxt:
            roots[expected] = cr.root()
            ti += 1
            nxt = want[ti] if ti < len(want) else -1
        if progress and (expected - meta.start) % _PROGRESS_EVERY == 0:
            progress(expected - meta.start, total)
    if progress:
        progress(expected - meta.start, total)
    return expected - meta.start, roots


def verify(
    source: Source,
    trusted_keys: Verifiers | Iterable[Verifier | str],
    last_trusted_checkpoint: str | None = None,
    *,
    max_age: timedelta | float | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Re-derives the tree from an export file or node store and checks every checkpoint
    signature and root, every cosignature, consistency with ``last_trusted_checkpoint``
    (a signed checkpoint note from an earlier verification) and, with ``max_age``, that
    the latest checkpoint is fresh. Returns a :class:`VerifyReport` (``.verdict``)."""
    trusted = trusted_keys if isinstance(trusted_keys, Verifiers) else Verifiers(trusted_keys)
    report = VerifyReport()
    reader: _FileReader | None = None
    eng_ctx = None
    try:
        if isinstance(source, Engine) or _is_url(source):
            eng_ctx = _engine_for(source)
            eng = eng_ctx.__enter__()
            try:
                meta = _db_meta(eng, report)
            except Exception as exc:  # noqa: BLE001 - no tables, unreachable server...
                report._add(Verdict.EMPTY, f"cannot read an audit log from the store ({type(exc).__name__})")
                return report
            entries = _db_entries(eng, report) if meta is not None else iter(())
        else:
            path = Path(source)
            if not path.is_file():
                report._add(Verdict.EMPTY, f"no such export file: {path}")
                return report
            reader = _FileReader(path, report)
            meta = reader.meta()
            entries = reader.entries() if meta is not None else iter(())
        if meta is None:
            report._add(Verdict.EMPTY, "the source holds no audit log")
            return report
        _verify_all(meta, entries, reader, trusted, last_trusted_checkpoint, max_age, now, progress, report)
        return report
    finally:
        if reader is not None:
            reader.close()
        if eng_ctx is not None:
            eng_ctx.__exit__(None, None, None)


def _verify_all(
    meta: _Meta,
    entries: Iterable[tuple[int, bytes, bytes | None]],
    reader: _FileReader | None,
    trusted: Verifiers,
    last_trusted: str | None,
    max_age: timedelta | float | None,
    now: datetime | None,
    progress: Progress | None,
    report: VerifyReport,
) -> None:
    report.origin, report.start = meta.origin, meta.start
    # 1. Checkpoints: signatures (c2sp.org/signed-note), bodies (c2sp.org/tlog-checkpoint).
    valid: list[tuple[Checkpoint, int | None]] = []
    report.checkpoints = len(meta.checkpoints)
    for i, rec in enumerate(meta.checkpoints):
        try:
            cp, _note = open_checkpoint(rec.get("note", ""), trusted, origin=meta.origin)
        except UnknownKeyError as exc:
            report._add(Verdict.UNKNOWN_KEY, f"checkpoint #{i + 1}: {exc}")
            continue
        except (NoteError, CheckpointError, TypeError) as exc:
            report._add(Verdict.TAMPERED, f"checkpoint #{i + 1}: {exc}")
            continue
        if rec.get("size") != cp.size or ("root" in rec and rec["root"] != cp.root):
            report._add(Verdict.TAMPERED, f"checkpoint #{i + 1}: stored size/root differ from its signed body")
            continue
        t = checkpoint_time(cp)
        if t is None:
            created = _parse_iso(rec.get("created_at"))
            t = int(created.timestamp()) if created else None
        valid.append((cp, t))
    report.checkpoints_verified = len(valid)
    # 2. Forks among our own checkpoints: same size, other root.
    by_size: dict[int, set[bytes]] = defaultdict(set)
    for cp, _t in valid:
        by_size[cp.size].add(cp.root)
    for size, roots in sorted(by_size.items()):
        if len(roots) > 1:
            report._add(Verdict.FORK, f"{len(roots)} different roots signed for tree size {size}")
    # 3. The officer's last trusted checkpoint.
    trusted_cp: Checkpoint | None = None
    if last_trusted:
        try:
            trusted_cp, _ = open_checkpoint(last_trusted, trusted, origin=meta.origin)
        except UnknownKeyError as exc:
            report._add(Verdict.UNKNOWN_KEY, f"last trusted checkpoint: {exc}")
        except (NoteError, CheckpointError) as exc:
            report._add(Verdict.TAMPERED, f"last trusted checkpoint: {exc}")
    # 4. Re-derive the tree and the root at every checkpointed size.
    targets = [cp.size for cp, _ in valid] + ([trusted_cp.size] if trusted_cp else [])
    seen, roots = _verify_entries(entries, meta, targets, report, progress)
    end = meta.start + seen
    report.entries, report.tree_size = seen, end
    if reader is not None:
        _check_file_tail(reader, meta, seen, len(meta.checkpoints), report)
    elif meta.end is not None and meta.end != end:
        report._add(Verdict.TRUNCATED if end < meta.end else Verdict.TAMPERED,
                    f"audit_head says {meta.end} entries, the store holds {end} in sequence")
    if meta.nodes:  # cached subtrees never visited: beyond the last entry, or invented
        beyond = sum(1 for lvl, idx in meta.nodes if (idx + 1) << lvl > end)
        if beyond:
            report._add(Verdict.TRUNCATED, f"{beyond} stored subtree hashes cover entries after the last one")
        if len(meta.nodes) > beyond:
            report._add(Verdict.TAMPERED, f"{len(meta.nodes) - beyond} stored subtree hashes match no entries")
    # 5. Every checkpoint root must match the entries.
    good_sizes = sorted(cp.size for cp, _ in valid if roots.get(cp.size) == cp.root)
    for cp, _t in valid:
        if cp.size < meta.start:
            report.notes.append(f"checkpoint {cp.size} predates the export start {meta.start}; root not re-derived")
        elif cp.size > end:
            report._add(Verdict.TRUNCATED, f"checkpoint {cp.size} is signed but only {end} entries are present")
        elif roots.get(cp.size) != cp.root:
            before = [s for s in good_sizes if s < cp.size]
            lo = before[-1] if before else meta.start
            report._add(Verdict.TAMPERED,
                        f"entries do not match checkpoint {cp.size}: an entry in [{lo}, {cp.size}) was changed, "
                        "removed, inserted or reordered")
    if trusted_cp is not None:
        if trusted_cp.size < meta.start:
            report._add(Verdict.TRUNCATED, f"the export starts at {meta.start}, after the last trusted "
                        f"checkpoint {trusted_cp.size}; export from {trusted_cp.size} or earlier")
        elif trusted_cp.size > end:
            report._add(Verdict.TRUNCATED, f"the last trusted checkpoint has {trusted_cp.size} entries, "
                        f"the log only {end}")
        elif roots.get(trusted_cp.size) != trusted_cp.root:
            report._add(Verdict.FORK, f"the log's history differs from the last trusted checkpoint "
                        f"(size {trusted_cp.size})")
    # 6. Cosignatures this node made of peers' checkpoints.
    _check_cosignatures(meta, trusted, report)
    report.peer_forks = len(meta.forks)
    for f in meta.forks:
        report.notes.append(f"peer {f.get('peer')} ({f.get('origin')}) fork evidence: {f.get('reason')}")
    # 7. Freshness and emptiness.
    if valid:
        latest_cp, latest_t = valid[-1]
        report.latest_checkpoint_size, report.latest_checkpoint_time = latest_cp.size, latest_t
        report.unsigned_tail = max(0, end - max(cp.size for cp, _ in valid))
        if max_age is not None:
            limit = max_age.total_seconds() if isinstance(max_age, timedelta) else float(max_age)
            t_now = (now or datetime.now(timezone.utc)).timestamp()
            if latest_t is None or t_now - latest_t > limit:
                age = "unknown" if latest_t is None else f"{int(t_now - latest_t)} s"
                report._add(Verdict.STALE, f"the latest checkpoint is {age} old, more than {int(limit)} s")
    if not meta.checkpoints:
        report._add(Verdict.EMPTY, "no checkpoint: nothing in this log is signed" if end else "the log is empty")
    elif end == 0 and not any(cp.size for cp, _ in valid) and report.verdict is Verdict.OK:
        report._add(Verdict.EMPTY, "the log is empty")


def _check_file_tail(reader: _FileReader, meta: _Meta, seen: int, n_cp: int, report: VerifyReport) -> None:
    want = (meta.end or 0) - meta.start
    if reader.bad_line is not None:
        report._add(Verdict.TAMPERED, f"export line {reader.bad_line} is not a valid record")
    if reader.footer is None:
        if reader.bad_line is None:
            report._add(Verdict.TRUNCATED, f"export file is cut: no footer after {seen} of {want} entries")
        return
    f = reader.footer
    if reader.trailing:
        report._add(Verdict.TAMPERED, "data after the export footer")
    counts_ok = (f.get("entries") == want == seen and f.get("checkpoints") == n_cp
                 and f.get("cosignatures") == len(meta.cosignatures) and f.get("forks") == len(meta.forks))
    if not counts_ok:
        v = Verdict.TRUNCATED if seen < want else Verdict.TAMPERED
        report._add(v, f"export counts differ from the footer: {seen} entries, header wants {want}, "
                    f"footer says {f.get('entries')}")
    if f.get("sha256") != reader.footer_digest:
        report._add(Verdict.TAMPERED, "export file was altered after it was written (footer digest)")


def _check_cosignatures(meta: _Meta, trusted: Verifiers, report: VerifyReport) -> None:
    cosigners = _cosigners(trusted)
    for i, rec in enumerate(meta.cosignatures):
        peer_note, line = rec.get("peer_note"), rec.get("cosignature")
        try:
            text, _ = split_note(peer_note)
            peer_cp = Checkpoint.parse(text)
            _, sigs = split_note("x\n\n" + line.rstrip("\n") + "\n")
            sig = sigs[0]
            v = cosigners.lookup(sig.name, sig.key_id)
            verify_cosignature(v, text, sig)
        except UnknownKeyError as exc:
            report._add(Verdict.UNKNOWN_KEY, f"cosignature #{i + 1} (peer {rec.get('peer')}): {exc}")
            continue
        except (NoteError, CheckpointError, CosignatureError, AmbiguousKeyError, AttributeError, TypeError) as exc:
            report._add(Verdict.TAMPERED, f"cosignature #{i + 1} (peer {rec.get('peer')}): {exc}")
            continue
        if "size" in rec and (rec["size"] != peer_cp.size or rec["root"] != peer_cp.root):
            report._add(Verdict.TAMPERED, f"cosignature #{i + 1}: stored size/root differ from the peer note")
            continue
        try:
            open_note(peer_note, trusted)
        except UnknownKeyError:
            pass  # the peer's key was not given: its own signature is not checked here
        except NoteError as exc:
            report._add(Verdict.TAMPERED, f"cosignature #{i + 1}: peer note signature: {exc}")
            continue
        report.cosignatures += 1


# -- proofs (c2sp.org/tlog-proof) ------------------------------------------------------


@dataclass(frozen=True)
class ProofResult:
    index: int
    entry: bytes | None
    checkpoint: Checkpoint
    note: Note


def proof(engine: Source, seq: int, *, size: int | None = None) -> str:
    """A c2sp.org/tlog-proof for entry ``seq`` against the latest checkpoint (or the one
    at ``size``); the entry bytes go in the ``extra`` line."""
    with _engine_for(engine) as eng:
        tree = TreeReader(eng)
        cp = tree.latest_checkpoint() if size is None else tree.checkpoint_at(size)
        if cp is None:
            raise NotFound("no checkpoint" + ("" if size is None else f" at size {size}"))
        if not 0 <= seq < cp.size:
            raise InvalidArgument(
                f"seq: got {seq}, want 0..{cp.size - 1} (entries after the last checkpoint "
                "need the next checkpoint)"
            )
        hashes = tree.inclusion_proof(seq, cp.size)
        entry = tree.entry(seq)
    lines = [PROOF_HEADER, f"extra {_b64(entry)}", f"index {seq}", *(_b64(h) for h in hashes)]
    return "\n".join(lines) + "\n\n" + cp.note


_INDEX = re.compile(r"index (0|[1-9][0-9]*)")


def verify_proof(
    text: str | bytes,
    trusted_keys: Verifiers | Iterable[Verifier | str],
    *,
    origin: str | None = None,
    entry: bytes | None = None,
) -> ProofResult:
    """Verifies a c2sp.org/tlog-proof: the checkpoint's signature by a trusted key, then
    the inclusion of the entry (from ``extra``, or ``entry``; both must agree if given).
    Raises :class:`ProofFormatError`, :class:`InclusionProofError` or the note errors."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProofFormatError("tlog-proof: not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ProofFormatError("tlog-proof: no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise ProofFormatError(f"tlog-proof: first line must be {PROOF_HEADER}")
    i = 1
    extra: bytes | None = None
    if i < len(lines) and lines[i].startswith("extra "):
        try:
            extra = _b64d(lines[i][6:])
        except (ValueError, binascii.Error):
            raise ProofFormatError("tlog-proof: extra is not base64") from None
        i += 1
    m = _INDEX.fullmatch(lines[i]) if i < len(lines) else None
    if not m:
        raise ProofFormatError("tlog-proof: want an 'index N' line")
    index = int(m.group(1))
    hashes = []
    for j, line in enumerate(lines[i + 1 :]):
        try:
            h = _b64d(line)
        except (ValueError, binascii.Error):
            raise ProofFormatError(f"tlog-proof: hash line {j + 1} is not base64") from None
        if len(h) != merkle.HASH_SIZE or _b64(h) != line:
            raise ProofFormatError(f"tlog-proof: hash line {j + 1} is not a base64 SHA-256 hash")
        hashes.append(h)
    trusted = trusted_keys if isinstance(trusted_keys, Verifiers) else Verifiers(trusted_keys)
    cp, opened = open_checkpoint(note, trusted, origin=origin)
    if extra is not None and entry is not None and extra != entry:
        raise InclusionProofError("tlog-proof: the given entry differs from the proof's extra data")
    data = entry if entry is not None else extra
    if data is None:
        raise ProofFormatError("tlog-proof: no extra data and no entry given")
    merkle.verify_inclusion(merkle.leaf_hash(data), index, cp.size, hashes, cp.root)
    return ProofResult(index, data, cp, opened)


# -- reconcile -------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    """Hub "sent" versus provider "received". Each item is a dict with ``request_id``,
    ``provider``, ``time``, ``purpose``, ``case_ref`` and ``detail``."""

    period: tuple[str | None, str | None]
    sent_not_received: list[dict] = field(default_factory=list)
    received_not_sent: list[dict] = field(default_factory=list)
    request_mismatches: list[dict] = field(default_factory=list)
    answer_mismatches: list[dict] = field(default_factory=list)
    no_case: list[dict] = field(default_factory=list)
    # Discovery notices, the other direction: department "sent" (logged with the receipt it
    # got back) versus hub "received", matched by notice id, notice digest and receipt digest.
    notices_sent_not_received: list[dict] = field(default_factory=list)
    notices_received_not_sent: list[dict] = field(default_factory=list)
    notice_mismatches: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.sent_not_received or self.received_not_sent or self.request_mismatches
                    or self.answer_mismatches or self.no_case or self.notices_sent_not_received
                    or self.notices_received_not_sent or self.notice_mismatches)

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": list(self.period), "clean": self.clean, "counts": dict(self.counts),
            "sent_not_received": self.sent_not_received, "received_not_sent": self.received_not_sent,
            "request_mismatches": self.request_mismatches, "answer_mismatches": self.answer_mismatches,
            "no_case": self.no_case,
            "notices_sent_not_received": self.notices_sent_not_received,
            "notices_received_not_sent": self.notices_received_not_sent,
            "notice_mismatches": self.notice_mismatches,
        }


_HUB_KINDS = (Kind.QUERY_SENT, Kind.ANSWER_RECEIVED)
_PROVIDER_KINDS = (Kind.QUERY_RECEIVED, Kind.ANSWER_SENT, Kind.REFUSAL)
_NOTICE_KINDS = (Kind.NOTICE_SENT, Kind.NOTICE_RECEIVED, Kind.RECEIPT)


def _iter_decoded(source: Source, kinds: Sequence[str], lo: datetime | None, hi: datetime | None):
    """(time, kind, fields) of the given kinds from a store or export, time in [lo, hi)."""

    def keep(obj: dict) -> tuple[datetime, str, dict] | None:
        if obj.get("kind") not in kinds:
            return None
        t = _parse_iso(obj.get("time"))
        if t is None or (lo is not None and t < lo) or (hi is not None and t >= hi):
            return None
        return t, obj["kind"], obj["fields"]

    if isinstance(source, Engine) or _is_url(source):
        with _engine_for(source) as eng, eng.connect() as conn:
            t = audit_entries
            cond = [t.c.kind.in_(kinds)]
            # The indexed created_at narrows the scan; the entry's own time decides.
            if lo is not None:
                cond.append(t.c.created_at >= lo - timedelta(days=1))
            if hi is not None:
                cond.append(t.c.created_at < hi + timedelta(days=1))
            stmt = select(t.c.entry).where(and_(*cond)).order_by(t.c.seq).execution_options(yield_per=10_000)
            for (data,) in conn.execute(stmt):
                try:
                    k = keep(decode_entry(bytes(data)))
                except ValueError:
                    continue
                if k:
                    yield k
        return
    path = Path(source)
    if not path.is_file():
        raise NotFound(f"no such export file: {path}")
    with open(path, "rb") as f:
        for line in f:
            if b'"type":"entry"' not in line:
                continue
            try:
                k = keep(decode_entry(base64.b64decode(json.loads(line)["entry"])))
            except (ValueError, KeyError, TypeError, binascii.Error):
                continue
            if k:
                yield k


def _reconcile_notices(report, hub_source, provider_sources, in_period, lo, hi, hub_code) -> tuple[int, int]:
    """A department logs ``notice.sent`` with the ``receipt`` the hub signed; the hub logs
    ``notice.received`` and each ``receipt`` it issued (a retried push gets a duplicate
    receipt). Each department's sent notice must appear at the hub with the same notice
    digest, and the receipt the department kept must be one the hub logged."""
    hub_in: dict[str, dict[str, tuple[datetime, dict]]] = defaultdict(dict)
    hub_receipts: dict[str, set] = defaultdict(set)
    for t, kind, f in _iter_decoded(hub_source, _NOTICE_KINDS, lo, hi):
        if kind == Kind.NOTICE_RECEIVED:
            hub_in[str(f.get("peer"))].setdefault(f.get("request_id"), (t, f))
        elif kind == Kind.RECEIPT:
            hub_receipts[f.get("request_id")].add(f.get("answer_digest"))
    n_sent = n_received = 0
    for code, src in provider_sources.items():
        sent: dict[str, tuple[datetime, dict]] = {}
        kept: dict[str, str] = {}
        for t, kind, f in _iter_decoded(src, _NOTICE_KINDS, lo, hi):
            if hub_code is not None and f.get("peer") != hub_code:
                continue
            if kind == Kind.NOTICE_SENT:
                sent[f.get("request_id")] = (t, f)
            elif kind == Kind.RECEIPT:
                kept[f.get("request_id")] = f.get("answer_digest")
        got = hub_in.get(code, {})
        for nid, (t, f) in sent.items():
            if not in_period(t):
                continue
            n_sent += 1
            if nid not in got:
                report.notices_sent_not_received.append(_item(code, t, f, "hub logged no notice.received"))
            elif got[nid][1].get("request_digest") != f.get("request_digest"):
                report.notice_mismatches.append(_item(code, t, f, "notice digests differ"))
            elif kept.get(nid) not in hub_receipts.get(nid, set()):
                report.notice_mismatches.append(_item(code, t, f, "the department's receipt is not one the hub logged"))
        for nid, (t, f) in got.items():
            if not in_period(t):
                continue
            n_received += 1
            if nid not in sent:
                report.notices_received_not_sent.append(_item(code, t, f, "department logged no notice.sent"))
    return n_sent, n_received


def _item(provider: str, t: datetime, f: Mapping[str, Any], detail: str) -> dict:
    return {"request_id": f.get("request_id"), "provider": provider, "time": _iso(t),
            "purpose": f.get("purpose"), "case_ref": f.get("case_ref"), "detail": detail}


def reconcile(
    hub_source: Source,
    provider_sources: Mapping[str, Source],
    period: tuple[datetime | None, datetime | None] | None = None,
    *,
    hub_code: str | None = None,
    hub_cases: Iterable[str] | None = None,
    grace: timedelta = timedelta(minutes=10),
) -> ReconcileReport:
    """Matches the hub's ``query.sent`` entries to each provider's ``query.received`` by
    request id and request digest, and the answers' digests. ``provider_sources`` maps a
    provider's member code (the ``peer`` in the hub's entries) to its source. Entries
    within ``grace`` outside the period still count as counterparts, so a query sent at
    23:59:59 and received at 00:00:01 is not reported. Only the hub's queries to the
    given providers are reconciled; ``hub_code`` restricts the providers' entries to
    queries from that hub; ``hub_cases``, if given, is the set of case references that
    exist on the hub (a query citing another one is reported under ``no_case``)."""
    lo, hi = period if period is not None else (None, None)
    lo = _utc(lo) if lo is not None else None
    hi = _utc(hi) if hi is not None else None
    wide_lo = lo - grace if lo is not None else None
    wide_hi = hi + grace if hi is not None else None

    def in_period(t: datetime) -> bool:
        return (lo is None or t >= lo) and (hi is None or t < hi)

    report = ReconcileReport((_iso(lo), _iso(hi)))
    cases = set(hub_cases) if hub_cases is not None else None
    sent: dict[str, dict[str, tuple[datetime, dict]]] = defaultdict(dict)
    answers_in: dict[str, tuple[datetime, dict]] = {}
    n_sent = 0
    for t, kind, f in _iter_decoded(hub_source, _HUB_KINDS, wide_lo, wide_hi):
        rid = f.get("request_id")
        if kind == Kind.QUERY_SENT:
            sent[str(f.get("peer"))][rid] = (t, f)
            if in_period(t):
                n_sent += 1
                case = f.get("case_ref")
                if not case:
                    report.no_case.append(_item(str(f.get("peer")), t, f, "query has no case reference"))
                elif cases is not None and case not in cases:
                    report.no_case.append(_item(str(f.get("peer")), t, f, "case reference unknown on the hub"))
        else:
            answers_in[rid] = (t, f)
    n_received = 0
    for code, src in provider_sources.items():
        received: dict[str, tuple[datetime, dict]] = {}
        answers_out: dict[str, tuple[datetime, dict]] = {}
        refused: dict[str, tuple[datetime, dict]] = {}
        for t, kind, f in _iter_decoded(src, _PROVIDER_KINDS, wide_lo, wide_hi):
            if hub_code is not None and f.get("peer") != hub_code:
                continue
            rid = f.get("request_id")
            {Kind.QUERY_RECEIVED: received, Kind.ANSWER_SENT: answers_out, Kind.REFUSAL: refused}[kind][rid] = (t, f)
        hub_q = sent.get(code, {})
        for rid, (t, f) in hub_q.items():
            if not in_period(t):
                continue
            if rid not in received:
                report.sent_not_received.append(_item(code, t, f, "provider logged no query.received"))
                continue
            pf = received[rid][1]
            diffs = [k for k in ("request_digest", "purpose", "case_ref") if f.get(k) != pf.get(k)]
            if diffs:
                report.request_mismatches.append(_item(code, t, f, f"differs on {', '.join(diffs)}"))
            ans = answers_in.get(rid)
            out = answers_out.get(rid)
            if out is not None and ans is None:
                report.answer_mismatches.append(_item(code, t, f, "provider sent an answer the hub did not log"))
            elif ans is not None and out is None and rid not in refused and ans[1].get("answer_digest"):
                report.answer_mismatches.append(_item(code, t, f, "hub logged an answer the provider did not send"))
            elif ans is not None and out is not None and ans[1].get("answer_digest") != out[1].get("answer_digest"):
                report.answer_mismatches.append(_item(code, t, f, "answer digests differ"))
        for rid, (t, f) in received.items():
            if not in_period(t):
                continue
            n_received += 1
            if rid not in hub_q:
                report.received_not_sent.append(_item(code, t, f, "hub logged no query.sent"))
    n_notices_sent, n_notices_received = _reconcile_notices(
        report, hub_source, provider_sources, in_period, wide_lo, wide_hi, hub_code
    )
    report.counts = {
        "hub_sent": n_sent,
        "provider_received": n_received,
        "notices_sent": n_notices_sent,
        "notices_received": n_notices_received,
        "providers": len(provider_sources),
        "sent_to_other_providers": sum(
            1 for code, q in sent.items() if code not in provider_sources for t, _ in q.values() if in_period(t)
        ),
    }
    return report
