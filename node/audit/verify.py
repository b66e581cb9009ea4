"""``hedui audit verify``: re-derive a log's Merkle tree (RFC 9162) from a node store or an
export file and check every checkpoint (c2sp.org/tlog-checkpoint), cosignature
(c2sp.org/tlog-cosignature) and stored subtree hash; one :class:`~hedui.node.audit.verdict.Verdict`.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from hedui.node.audit import merkle
from hedui.node.audit.entry import format_time, utc
from hedui.node.audit.errors import AmbiguousKeyError, CheckpointError, CosignatureError, NoteError, UnknownKeyError
from hedui.node.audit.export import ExportReader, LogMeta
from hedui.node.audit.note import Checkpoint, Verifier, Verifiers, open_checkpoint, open_note, split_note, verify_cosignature
from hedui.node.audit.sources import PROGRESS_EVERY, Progress, Source, cosigners, engine_for, is_url, iso, parse_iso
from hedui.node.audit.tables import audit_checkpoints, audit_cosignatures, audit_entries, audit_forks, audit_head, audit_nodes
from hedui.node.audit.tree import checkpoint_time
from hedui.node.audit.verdict import Verdict, VerifyReport
from hedui.node.audit.witness import Witnessed, peer_cosigned

__all__ = ["verify"]


def _db_meta(eng: Engine, report: VerifyReport) -> LogMeta | None:
    with eng.connect() as conn:
        head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
        if head is None:
            return None
        m = LogMeta(origin=head.origin, start=0, end=int(head.size), tile_height=int(head.tile_height))
        for r in conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.id)):
            m.checkpoints.append({"size": int(r.size), "root": bytes(r.root), "note": r.note,
                                  "created_at": iso(utc(r.created_at))})
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
                        and obj["time"] == format_time(created))
            except (ValueError, KeyError, TypeError):
                same = False
            if not same and bad < 20:
                bad += 1
                report._add(Verdict.TAMPERED, f"entry {seq}: kind/request_id/created_at columns disagree with its bytes")
            yield int(seq), data, bytes(leaf)


def _verify_entries(
    entries: Iterable[tuple[int, bytes, bytes | None]],
    meta: LogMeta,
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
        if progress and (expected - meta.start) % PROGRESS_EVERY == 0:
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
    peers: Sequence[Source] = (),
) -> VerifyReport:
    """Re-derives the tree from an export file or node store and checks every checkpoint
    signature and root, every cosignature, consistency with ``last_trusted_checkpoint``
    (a signed checkpoint note from an earlier verification) and, with ``max_age``, that
    the latest checkpoint is fresh. ``peers``: other members' exports or stores, whose
    cosignatures of this log's checkpoints are trusted sizes (:mod:`~hedui.node.audit.witness`).
    Returns a :class:`VerifyReport` (``.verdict``)."""
    trusted = trusted_keys if isinstance(trusted_keys, Verifiers) else Verifiers(trusted_keys)
    report = VerifyReport()
    reader: ExportReader | None = None
    eng_ctx = None
    try:
        if isinstance(source, Engine) or is_url(source):
            eng_ctx = engine_for(source)
            eng = eng_ctx.__enter__()
            try:
                meta = _db_meta(eng, report)
            except Exception as exc:
                report._add(Verdict.EMPTY, f"cannot read an audit log from the store ({type(exc).__name__})")
                return report
            entries = _db_entries(eng, report) if meta is not None else iter(())
        else:
            path = Path(source)
            if not path.is_file():
                report._add(Verdict.EMPTY, f"no such export file: {path}")
                return report
            reader = ExportReader(path, report)
            meta = reader.meta()
            entries = reader.entries() if meta is not None else iter(())
        if meta is None:
            report._add(Verdict.EMPTY, "the source holds no audit log")
            return report
        witnessed, notes = peer_cosigned(peers, meta.origin, trusted)
        report.notes.extend(notes)
        _verify_all(meta, entries, reader, trusted, last_trusted_checkpoint, max_age, now, progress, report, witnessed)
        return report
    finally:
        if reader is not None:
            reader.close()
        if eng_ctx is not None:
            eng_ctx.__exit__(None, None, None)


def _verify_all(
    meta: LogMeta,
    entries: Iterable[tuple[int, bytes, bytes | None]],
    reader: ExportReader | None,
    trusted: Verifiers,
    last_trusted: str | None,
    max_age: timedelta | float | None,
    now: datetime | None,
    progress: Progress | None,
    report: VerifyReport,
    witnessed: Sequence[Witnessed] = (),
) -> None:
    report.origin, report.start = meta.origin, meta.start
    # 1. Checkpoints: signatures (c2sp.org/signed-note), bodies (c2sp.org/tlog-checkpoint).
    valid: list[tuple[Checkpoint, int | None]] = []
    notes: list[str] = []  # the signed note of each valid checkpoint (the one to keep, below)
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
            created = parse_iso(rec.get("created_at"))
            t = int(created.timestamp()) if created else None
        valid.append((cp, t))
        notes.append(rec.get("note", ""))
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
    targets = [cp.size for cp, _ in valid] + ([trusted_cp.size] if trusted_cp else []) + [w.checkpoint.size for w in witnessed]
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
    # 5b. What peers cosigned of this log: trusted sizes (issue 13: deleting the tail and the
    # checkpoints covering it must not verify as OK).
    _check_witnessed(witnessed, valid, roots, meta.start, end, report)
    # 6. Cosignatures this node made of peers' checkpoints.
    _check_cosignatures(meta, trusted, report)
    report.peer_forks = len(meta.forks)
    for f in meta.forks:
        report.notes.append(f"peer {f.get('peer')} ({f.get('origin')}) fork evidence: {f.get('reason')}")
    # 7. Freshness and emptiness.
    if valid:
        latest_cp, latest_t = valid[-1]
        report.latest_checkpoint_size, report.latest_checkpoint_time = latest_cp.size, latest_t
        if roots.get(latest_cp.size) == latest_cp.root:
            # What the officer keeps and passes as --trusted-checkpoint next time: only a
            # checkpoint whose root the entries re-derived.
            report.latest_checkpoint_note = notes[-1]
        report.unsigned_tail = max(0, end - max(cp.size for cp, _ in valid))
        if report.unsigned_tail:
            report._add(Verdict.UNSIGNED_TAIL, f"{report.unsigned_tail} entries after the newest signed checkpoint "
                        f"({max(cp.size for cp, _ in valid)}): nothing vouches for them yet — have the node sign a "
                        "checkpoint (it does every few seconds while running, and every process before it exits)")
        if max_age is not None:
            limit = max_age.total_seconds() if isinstance(max_age, timedelta) else float(max_age)
            if now is None:
                raise ValueError("verify: max_age needs now (the clock's instant)")
            t_now = now.timestamp()
            if latest_t is None or t_now - latest_t > limit:
                age = "unknown" if latest_t is None else f"{int(t_now - latest_t)} s"
                report._add(Verdict.STALE, f"the latest checkpoint is {age} old, more than {int(limit)} s")
    if not meta.checkpoints:
        report._add(Verdict.EMPTY, "no checkpoint: nothing in this log is signed" if end else "the log is empty")
    elif end == 0 and not any(cp.size for cp, _ in valid) and report.verdict is Verdict.OK:
        report._add(Verdict.EMPTY, "the log is empty")


def _check_witnessed(witnessed: Sequence[Witnessed], valid: list, roots: dict[int, bytes], start: int, end: int,
                     report: VerifyReport) -> None:
    newest = max((cp.size for cp, _ in valid), default=0)
    for w in witnessed:
        size = w.checkpoint.size
        if size > end:
            report._add(Verdict.TRUNCATED, f"peer {w.witness} cosigned checkpoint {size} of this log, "
                        f"which holds only {end} entries")
        elif size >= start and roots.get(size) != w.checkpoint.root:
            report._add(Verdict.FORK, f"peer {w.witness} cosigned a different root for size {size}")
        elif size > newest:
            report._add(Verdict.TRUNCATED, f"peer {w.witness} cosigned checkpoint {size}, newer than the log's "
                        f"newest checkpoint {newest}: checkpoints were removed")
        else:
            report.witnessed += 1


def _check_file_tail(reader: ExportReader, meta: LogMeta, seen: int, n_cp: int, report: VerifyReport) -> None:
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


def _check_cosignatures(meta: LogMeta, trusted: Verifiers, report: VerifyReport) -> None:
    cosigning_keys = cosigners(trusted)
    for i, rec in enumerate(meta.cosignatures):
        peer_note, line = rec.get("peer_note"), rec.get("cosignature")
        try:
            text, _ = split_note(peer_note)
            peer_cp = Checkpoint.parse(text)
            _, sigs = split_note("x\n\n" + line.rstrip("\n") + "\n")
            sig = sigs[0]
            v = cosigning_keys.lookup(sig.name, sig.key_id)
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
