"""The node's tamper-evident audit log: an RFC 9162 Merkle log in the node store, signed
C2SP checkpoints, proofs, and cross-cosigning of peers' checkpoints.

Entry format (the leaf bytes)
-----------------------------
An entry is canonical JSON, UTF-8, keys sorted, no whitespace, no floats::

    {"fields":{...},"kind":"query.sent","time":"2026-05-04T08:00:00.123456Z","v":1}

The exact bytes are stored (``audit_entries.entry``) and hashed (RFC 9162 §2.1.1 leaf
hash); nothing is ever re-serialised to verify. Field values are str, int, bool, null,
lists or objects of those; bytes must be hex (lower case) — digests are SHA-256 hex.

Entry kinds (:class:`Kind`) and the fields each MUST carry (others are allowed)
-------------------------------------------------------------------------------
==================  =========================================================  =====
kind                required fields                                            side
==================  =========================================================  =====
query.sent          request_id, peer, purpose, case_ref, request_digest         hub
query.received      request_id, peer, purpose, case_ref, request_digest         provider
answer.sent         request_id, peer, answer_digest, outcome                   provider
answer.received     request_id, peer, answer_digest, outcome                   hub
refusal             request_id, peer, outcome (the refusal reason code)        provider
notice.sent         request_id (= notice id), peer, request_digest (notice)    provider
notice.received     request_id (= notice id), peer, request_digest, outcome    hub
receipt             request_id (= notice id), peer, answer_digest (receipt)    both
directory           version, digest                                            any
admin               action, operator                                           any
peer.fork           peer, origin, size_a, size_b, reason                       any
case.opened         case_ref, operator                                         hub
case.run            case_ref, operator                                         hub
case.reviewed       case_ref, operator, decision                               hub
case.members_shown  case_ref, operator, count                                  hub
lead.details_opened operator, reason, leads, count                             hub
referral.responded  referral_id, operator, outcome                             hub
referral.escalated  operator, count                                            hub
console.signin      operator                                                   hub
console.signin_failed  operator ("" if the name is unknown), outcome           hub
console.access_denied  operator, action, outcome                               hub
==================  =========================================================  =====

Common optional fields: ``method`` (gRPC method name), ``count`` (items in a batch),
``outcome`` (``"ok"`` or a reason code such as ``"POLICY_DENIED"``). ``peer`` is the
other side's member code. ``request_id`` is the lower-case hex of the 16-byte request id;
``request_digest`` / ``answer_digest`` / ``digest`` are lower-case hex SHA-256 of the
exact signed bytes. ``purpose`` is the ``hedui.v1.Purpose`` enum name. ``case_ref`` is
the hub's case reference ("" only if there is none — reconciliation reports those).

Entries never hold identity numbers: :data:`IDENTITY_SHAPE` (the one definition) is
checked on every serialised entry and an entry that matches is refused with
:class:`IdentityInEntryError`.

Writes and crashes
------------------
Every write is one transaction that first updates the single ``audit_head`` row (which
serialises writers across threads, processes and replicas), then inserts the entries and
the complete-subtree hashes they finish. kill -9 at any point leaves either all of a
batch or none of it. :meth:`AuditLog.append` is durable on return;
:meth:`AuditLog.submit` hands the entry to a background writer that commits whatever has
queued up in one transaction (group commit) and resolves the future afterwards.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import queue
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import Engine, TextClause, and_, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from hedui.node.audit import merkle
from hedui.node.audit.errors import (
    CheckpointError,
    ConsistencyProofError,
    ForkError,
    IdentityInEntryError,
    InclusionProofError,
    TamperedLogError,
)
from hedui.node.audit.note import Checkpoint, Signer, Verifier, Verifiers, open_checkpoint, split_note
from hedui.node.audit.tables import (
    audit_checkpoints,
    audit_cosignatures,
    audit_entries,
    audit_forks,
    audit_head,
    audit_nodes,
)
from hedui.adapters.idnum import IDNUM_WIDE
from hedui.node.errors import ConfigError, InvalidArgument, NotFound

__all__ = [
    "IDENTITY_SHAPE",
    "contains_identity",
    "Kind",
    "REQUIRED_FIELDS",
    "TIME_EXTENSION",
    "encode_entry",
    "decode_entry",
    "StoredCheckpoint",
    "TreeReader",
    "AuditLog",
    "checkpoint_time",
    "CheckpointScheduler",
]

log = logging.getLogger("hedui.audit")

# "Shaped like a resident identity number" (GB 11643-1999), ASCII or full-width: the one
# definition lives with the identity code.
IDENTITY_SHAPE = IDNUM_WIDE


def contains_identity(text: str | bytes) -> bool:
    """True if ``text`` contains something shaped like an 18-character identity number."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    return IDENTITY_SHAPE.search(text) is not None


class Kind:
    """Entry kinds (see the module docstring for their fields)."""

    QUERY_SENT = "query.sent"
    QUERY_RECEIVED = "query.received"
    ANSWER_SENT = "answer.sent"
    ANSWER_RECEIVED = "answer.received"
    REFUSAL = "refusal"
    NOTICE_SENT = "notice.sent"
    NOTICE_RECEIVED = "notice.received"
    RECEIPT = "receipt"
    DIRECTORY = "directory"
    ADMIN = "admin"
    PEER_FORK = "peer.fork"
    # Acts of the hub's staff (the web console and the CLI), each with the operator.
    CASE_OPENED = "case.opened"
    CASE_RUN = "case.run"
    CASE_REVIEWED = "case.reviewed"
    CASE_MEMBERS_SHOWN = "case.members_shown"
    LEAD_DETAILS_OPENED = "lead.details_opened"
    REFERRAL_RESPONDED = "referral.responded"
    REFERRAL_ESCALATED = "referral.escalated"
    CONSOLE_SIGNIN = "console.signin"
    CONSOLE_SIGNIN_FAILED = "console.signin_failed"
    CONSOLE_ACCESS_DENIED = "console.access_denied"


_QUERY = frozenset({"request_id", "peer", "purpose", "case_ref", "request_digest"})
REQUIRED_FIELDS: Mapping[str, frozenset[str]] = {
    Kind.QUERY_SENT: _QUERY,
    Kind.QUERY_RECEIVED: _QUERY,
    Kind.ANSWER_SENT: frozenset({"request_id", "peer", "answer_digest", "outcome"}),
    Kind.ANSWER_RECEIVED: frozenset({"request_id", "peer", "answer_digest", "outcome"}),
    Kind.REFUSAL: frozenset({"request_id", "peer", "outcome"}),
    Kind.NOTICE_SENT: frozenset({"request_id", "peer", "request_digest"}),
    Kind.NOTICE_RECEIVED: frozenset({"request_id", "peer", "request_digest", "outcome"}),
    Kind.RECEIPT: frozenset({"request_id", "peer", "answer_digest"}),
    Kind.DIRECTORY: frozenset({"version", "digest"}),
    Kind.ADMIN: frozenset({"action", "operator"}),
    Kind.PEER_FORK: frozenset({"peer", "origin", "size_a", "size_b", "reason"}),
    Kind.CASE_OPENED: frozenset({"case_ref", "operator"}),
    Kind.CASE_RUN: frozenset({"case_ref", "operator"}),
    Kind.CASE_REVIEWED: frozenset({"case_ref", "operator", "decision"}),
    Kind.CASE_MEMBERS_SHOWN: frozenset({"case_ref", "operator", "count"}),
    Kind.LEAD_DETAILS_OPENED: frozenset({"operator", "reason", "leads", "count"}),
    Kind.REFERRAL_RESPONDED: frozenset({"referral_id", "operator", "outcome"}),
    Kind.REFERRAL_ESCALATED: frozenset({"operator", "count"}),
    Kind.CONSOLE_SIGNIN: frozenset({"operator"}),
    Kind.CONSOLE_SIGNIN_FAILED: frozenset({"operator", "outcome"}),
    Kind.CONSOLE_ACCESS_DENIED: frozenset({"operator", "action", "outcome"}),
}

_KIND_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_HEX_ID = re.compile(r"(?:[0-9a-f]{2}){1,32}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_DIGEST_FIELDS = ("request_digest", "answer_digest", "digest")
_MAX_ENTRY_BYTES = 64 * 1024
ENTRY_VERSION = 1
# Checkpoint extension line carrying the signing time (POSIX seconds), so that a
# re-signed idle checkpoint proves freshness (c2sp.org/tlog-checkpoint "extension lines").
TIME_EXTENSION = "hedui-time"
# Complete subtrees are cached at heights 4, 8, 12, ...: one node row per 15 entries, and a
# proof reads at most 15 stored hashes per 4 levels (measured: tile 4 gives ~35% faster
# proofs than tile 8 at 2*10^5 entries, with the same append rate).
DEFAULT_TILE_HEIGHT = 4
_HEAD_ID = 1


def _canonical(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


_SCALARS = (str, int, bool, type(None))


def _check_value(path: str, v: Any, depth: int = 0) -> None:
    if depth == 0 and isinstance(v, dict) and all(type(x) in _SCALARS for x in v.values()):
        if all(type(k) is str for k in v):
            return  # the common case: a flat object of scalars
    if depth > 8:
        raise InvalidArgument(f"audit entry {path}: nested too deep")
    if v is None or isinstance(v, (bool, str)):
        return
    if isinstance(v, int):
        return
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_value(f"{path}[{i}]", x, depth + 1)
        return
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str):
                raise InvalidArgument(f"audit entry {path}: keys must be strings")
            _check_value(f"{path}.{k}", x, depth + 1)
        return
    hint = " (hex-encode bytes)" if isinstance(v, (bytes, bytearray, memoryview)) else ""
    raise InvalidArgument(
        f"audit entry {path}: got {type(v).__name__}, want str, int, bool, null, list or object{hint}"
    )


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _format_time(t: datetime) -> str:
    if t.tzinfo is not None and t.utcoffset():
        t = t.astimezone(timezone.utc)
    # a naive datetime is UTC (SQLite returns stored UTC times without a zone)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond
    )


def encode_entry(kind: str, fields: Mapping[str, Any], at: datetime) -> bytes:
    """The canonical entry bytes; raises ``InvalidArgument`` / ``IdentityInEntryError``."""
    if not isinstance(kind, str) or len(kind) > 64 or not _KIND_RE.fullmatch(kind):
        raise InvalidArgument(f"audit entry kind: got {kind!r}, want e.g. 'query.sent'")
    if not isinstance(fields, Mapping):
        raise InvalidArgument("audit entry fields: want a mapping")
    _check_value("fields", fields)
    missing = REQUIRED_FIELDS.get(kind, frozenset()) - fields.keys()
    if missing:
        raise InvalidArgument(f"audit entry {kind}: missing fields {sorted(missing)}")
    rid = fields.get("request_id")
    if rid is not None and (not isinstance(rid, str) or not _HEX_ID.fullmatch(rid)):
        raise InvalidArgument(f"audit entry {kind}: request_id must be lower-case hex (1-32 bytes)")
    for name in _DIGEST_FIELDS:
        d = fields.get(name)
        if d is not None and d != "" and (not isinstance(d, str) or not _HEX_DIGEST.fullmatch(d)):
            raise InvalidArgument(f"audit entry {kind}: {name} must be lower-case hex SHA-256")
    try:
        data = _canonical({"fields": dict(fields), "kind": kind, "time": _format_time(at), "v": ENTRY_VERSION})
    except (UnicodeEncodeError, ValueError) as exc:
        raise InvalidArgument(f"audit entry {kind}: not serialisable ({exc})") from None
    if len(data) > _MAX_ENTRY_BYTES:
        raise InvalidArgument(f"audit entry {kind}: {len(data)} bytes, want <= {_MAX_ENTRY_BYTES}")
    if contains_identity(data.decode("utf-8")):
        where = next(
            (k for k, v in fields.items() if contains_identity(k) or contains_identity(_canonical(v).decode())),
            "kind",
        )
        raise IdentityInEntryError(
            f"audit entry {kind}: field {where!r} holds a value shaped like a resident identity "
            "number; log a pseudonym or a digest instead"
        )
    return data


def decode_entry(data: bytes) -> dict[str, Any]:
    """Parses entry bytes into ``{"kind", "time", "fields", "v"}`` (no verification)."""
    obj = json.loads(bytes(data).decode("utf-8"))
    if not isinstance(obj, dict) or not isinstance(obj.get("fields"), dict) or "kind" not in obj:
        raise ValueError("not an audit entry")
    return obj


@dataclass(frozen=True)
class _Prepared:
    kind: str
    request_id: str | None
    created_at: datetime
    data: bytes


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint this log signed."""

    size: int
    root: bytes
    note: str
    created_at: datetime
    time: int | None  # the signed ``hedui-time`` extension, if any

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint.parse(split_note(self.note)[0])


def checkpoint_time(cp: Checkpoint) -> int | None:
    """The signed ``hedui-time`` extension of a checkpoint, if present."""
    for line in cp.extensions:
        name, _, value = line.partition(" ")
        if name == TIME_EXTENSION and value.isdigit():
            return int(value)
    return None


_STOP = object()


class TreeReader:
    """Read-only view of a stored audit tree: size, roots, proofs, entries, checkpoints.
    Needs no key, so services that only serve proofs, and the offline tools, use it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        try:
            with engine.connect() as conn:
                row = conn.execute(select(audit_head).where(audit_head.c.id == _HEAD_ID)).first()
        except (OperationalError, ProgrammingError) as exc:
            raise ConfigError(f"audit tables are missing or unreadable; run the migrations ({exc.orig})") from None
        if row is None:
            raise NotFound("this store has no audit log yet")
        self._origin = str(row.origin)
        self._tile = int(row.tile_height)
        self._subtrees = merkle.SubtreeCache(self._load_subtrees)
        self._known_size = 0

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def tile_height(self) -> int:
        return self._tile

    @property
    def subtrees(self) -> merkle.SubtreeHashes:
        """The cached :data:`merkle.SubtreeHashes` source over this store."""
        return self._subtrees

    def size(self) -> int:
        """The current tree size (number of committed entries)."""
        with self._engine.connect() as conn:
            return int(conn.execute(select(audit_head.c.size).where(audit_head.c.id == _HEAD_ID)).scalar_one())

    @staticmethod
    def _read_level(conn, level: int, a: int, b: int) -> list[bytes]:
        """Hashes of the complete subtrees at ``level`` with indices ``[a, b)``."""
        if level == 0:
            t = audit_entries
            stmt = select(t.c.seq, t.c.leaf_hash).where(and_(t.c.seq >= a, t.c.seq < b)).order_by(t.c.seq)
        else:
            t = audit_nodes
            stmt = (
                select(t.c.idx, t.c.hash)
                .where(and_(t.c.level == level, t.c.idx >= a, t.c.idx < b))
                .order_by(t.c.idx)
            )
        rows = conn.execute(stmt).all()
        if len(rows) != b - a or any(r[0] != a + i for i, r in enumerate(rows)):
            raise TamperedLogError(f"audit tree level {level} is missing nodes in [{a}, {b})")
        return [bytes(r[1]) for r in rows]

    def _load_subtrees(self, ranges: Sequence[merkle.Range]) -> list[bytes]:
        """:data:`merkle.SubtreeHashes` over the store: a complete subtree of height h is
        folded from at most 2^(T-1) stored hashes at height T*floor(h/T). All the stored
        hashes one call needs are read with at most two queries (leaves, cached nodes)."""
        T = self._tile
        plans = []
        groups: dict[tuple[int, int], list[int]] = {}  # (level, tile) -> [lo, hi)
        for a, b in ranges:
            h = (b - a).bit_length() - 1
            base = (h // T) * T
            lo, hi = a >> base, b >> base
            plans.append((base, lo, hi))
            g = groups.setdefault((base, lo >> T), [lo, hi])
            g[0], g[1] = min(g[0], lo), max(g[1], hi)
        with self._engine.connect() as conn:
            got = self._read_groups(conn, groups)
        out = []
        for base, lo, hi in plans:
            g_lo = groups[(base, lo >> T)][0]
            hashes = got[(base, lo >> T)]
            out.append(_perfect_root(hashes[lo - g_lo : hi - g_lo]))
        return out

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _range_query(kind: str, n: int) -> TextClause:
        # Plain SQL (cached per shape): building expression trees cost more than the reads.
        if kind == "leaf":
            terms = " OR ".join(f"(seq >= :lo{i} AND seq < :hi{i})" for i in range(n))
            return text(f"SELECT 0, seq, leaf_hash FROM audit_entries WHERE {terms}")
        terms = " OR ".join(f"(level = :lv{i} AND idx >= :lo{i} AND idx < :hi{i})" for i in range(n))
        return text(f"SELECT level, idx, hash FROM audit_nodes WHERE {terms}")

    @classmethod
    def _read_groups(cls, conn, groups: Mapping[tuple[int, int], Sequence[int]]) -> dict[tuple[int, int], list[bytes]]:
        """Reads several ``(level, key) -> [lo, hi)`` index ranges in two queries at most."""
        found: dict[tuple[int, int], dict[int, bytes]] = {k: {} for k in groups}
        for kind in ("leaf", "node"):
            part = [(k, lo, hi) for k, (lo, hi) in groups.items() if (k[0] == 0) == (kind == "leaf")]
            if not part:
                continue
            params: dict[str, int] = {}
            for i, (k, lo, hi) in enumerate(part):
                params[f"lo{i}"], params[f"hi{i}"] = lo, hi
                if kind == "node":
                    params[f"lv{i}"] = k[0]
            for level, idx, h in conn.execute(cls._range_query(kind, len(part)), params):
                for k, lo, hi in part:
                    if k[0] == level and lo <= idx < hi:
                        found[k][idx] = bytes(h)
        out: dict[tuple[int, int], list[bytes]] = {}
        for k, (lo, hi) in groups.items():
            have = found[k]
            if len(have) != hi - lo:
                raise TamperedLogError(f"audit tree level {k[0]} is missing nodes in [{lo}, {hi})")
            out[k] = [have[i] for i in range(lo, hi)]
        return out

    def _check_size(self, size: int) -> None:
        # The tree only grows: a size seen before needs no query.
        if 0 <= size <= self._known_size:
            return
        current = self._known_size = self.size()
        if not 0 <= size <= current:
            raise InvalidArgument(f"tree_size: got {size}, want 0..{current}")

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[0:size]) (the current size by default)."""
        if size is None:
            size = self.size()
        else:
            self._check_size(size)
        return merkle.root_at(size, self._subtrees)

    def entry(self, seq: int) -> bytes:
        """The stored bytes of entry ``seq``."""
        with self._engine.connect() as conn:
            data = conn.execute(select(audit_entries.c.entry).where(audit_entries.c.seq == seq)).scalar()
        if data is None:
            raise InvalidArgument(f"seq: got {seq}, no such entry")
        return bytes(data)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 proof that leaf ``index`` is in the tree of ``size``."""
        self._check_size(size)
        if not 0 <= index < size:
            raise InclusionProofError(f"index: got {index}, want 0 <= index < {size}")
        return merkle.inclusion_proof(index, size, self._subtrees)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 proof that the tree of ``size2`` extends that of ``size1``."""
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise ConsistencyProofError(f"sizes: got {size1} -> {size2}, want 0 < size1 <= size2")
        return merkle.consistency_proof(size1, size2, self._subtrees)

    # -- checkpoints -------------------------------------------------------------------

    @staticmethod
    def _row_to_checkpoint(row) -> StoredCheckpoint:
        cp = Checkpoint.parse(split_note(row.note)[0])
        return StoredCheckpoint(int(row.size), bytes(row.root), row.note, _utc(row.created_at), checkpoint_time(cp))

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The most recently signed checkpoint, or None."""
        with self._engine.connect() as conn:
            return self._latest(conn)

    def _latest(self, conn) -> StoredCheckpoint | None:
        t = audit_checkpoints
        row = conn.execute(select(t).order_by(t.c.id.desc()).limit(1)).first()
        return None if row is None else self._row_to_checkpoint(row)

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        """The latest checkpoint signed at exactly ``size``, or None."""
        t = audit_checkpoints
        with self._engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.size == size).order_by(t.c.id.desc()).limit(1)).first()
        return None if row is None else self._row_to_checkpoint(row)

    def compact_range(self, size: int) -> list[bytes]:
        """The complete subtrees D[0:size] splits into (largest first): the state a
        :class:`merkle.CompactRange` needs to continue hashing from ``size``."""
        self._check_size(size)
        pieces = merkle.perfect_pieces(0, size)
        return list(self._subtrees(pieces)) if pieces else []


class AuditLog(TreeReader):
    """One node's audit log in its store.

    ``origin`` is the checkpoint origin line and MUST equal the signer's key name
    (c2sp.org/tlog-checkpoint: "The log's key name ... SHOULD match the origin line").
    The store must be a file or server database (not SQLite ``:memory:``): proofs read on
    their own connections.
    """

    def __init__(
        self,
        engine: Engine,
        origin: str,
        signer: Signer,
        *,
        tile_height: int | None = None,
        max_batch: int = 1000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not isinstance(signer, Signer):
            raise ConfigError("audit signer: want a hedui.node.audit.note.Signer")
        if signer.name != origin:
            raise ConfigError(f"audit origin {origin!r} must equal the signer key name {signer.name!r}")
        Checkpoint(origin, 0, merkle.EMPTY_ROOT)  # validates the origin line
        self._engine = engine
        self._origin = origin
        self._signer = signer
        self._max_batch = max(1, max_batch)
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._ensure_head(tile_height)
        super().__init__(engine)
        self._queue: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._closed = False

    # -- set-up ------------------------------------------------------------------------

    def _ensure_head(self, tile_height: int | None) -> None:
        """Creates the ``audit_head`` row of a new log, or checks an existing one: same
        origin, same tile height, and a size that matches the stored entries."""
        if tile_height is not None and not 1 <= tile_height <= 16:
            raise ConfigError(f"audit tile_height: got {tile_height}, want 1..16")
        try:
            for _attempt in range(2):
                with self._engine.connect() as conn:
                    # One statement, so the head and the entries come from the same snapshot.
                    top = select(func.max(audit_entries.c.seq)).scalar_subquery()
                    row = conn.execute(
                        select(audit_head.c.origin, audit_head.c.size, audit_head.c.tile_height, top)
                        .where(audit_head.c.id == _HEAD_ID)
                    ).first()
                    if row is None:
                        if conn.execute(select(audit_entries.c.seq).limit(1)).first() is not None:
                            raise TamperedLogError("audit_entries has rows but audit_head is missing")
                if row is not None:
                    break
                try:
                    with self._engine.begin() as conn:
                        conn.execute(insert(audit_head).values(
                            id=_HEAD_ID, origin=self._origin, size=0,
                            tile_height=tile_height or DEFAULT_TILE_HEIGHT,
                        ))
                    return
                except IntegrityError:
                    continue  # another process created it just now: check that one
            else:
                raise ConfigError("audit_head could not be created")
        except (OperationalError, ProgrammingError) as exc:
            raise ConfigError(f"audit tables are missing or unreadable; run the migrations ({exc.orig})") from None
        origin, size, tile, last = row
        if origin != self._origin:
            raise ConfigError(f"audit log origin is {origin!r}, not {self._origin!r}")
        if tile_height is not None and tile_height != tile:
            raise ConfigError(f"audit log tile height is {tile}, not {tile_height}")
        if (last if last is not None else -1) + 1 != size:
            raise TamperedLogError(f"audit head says {size} entries, but the last stored seq is {last}")

    @property
    def signer(self) -> Signer:
        return self._signer

    @property
    def verifier(self) -> Verifier:
        return self._signer.verifier()

    # -- appending ---------------------------------------------------------------------

    def _prepare(self, kind: str, fields: Mapping[str, Any]) -> _Prepared:
        at = _utc(self._clock())
        data = encode_entry(kind, fields, at)
        rid = fields.get("request_id")
        return _Prepared(kind, rid if isinstance(rid, str) else None, at, data)

    def append(self, kind: str, fields: Mapping[str, Any]) -> int:
        """Appends one entry and returns its sequence number once it is committed."""
        return self.submit(kind, fields).result()

    def submit(self, kind: str, fields: Mapping[str, Any]) -> "Future[int]":
        """Validates the entry now and queues it for the background writer; the future
        resolves to its sequence number after the commit (or to the database error)."""
        prepared = self._prepare(kind, fields)
        fut: Future[int] = Future()
        self._start_writer()
        self._queue.put((prepared, fut))
        return fut

    def append_many(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[int]:
        """Appends a batch in one transaction; returns the sequence numbers in order."""
        prepared = [self._prepare(k, f) for k, f in items]
        if not prepared:
            return []
        first = self._write(prepared)
        return list(range(first, first + len(prepared)))

    def flush(self) -> None:
        """Blocks until everything submitted so far is committed (or failed)."""
        if self._writer is not None:
            self._queue.join()

    def close(self) -> None:
        """Flushes and stops the background writer."""
        with self._writer_lock:
            w, self._writer = self._writer, None
            self._closed = True
        if w is not None:
            self._queue.put(_STOP)
            w.join()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_writer(self) -> None:
        if self._writer is not None:
            return
        with self._writer_lock:
            if self._closed:
                raise InvalidArgument("audit log is closed")
            if self._writer is None:
                self._writer = threading.Thread(target=self._writer_loop, name="audit-writer", daemon=True)
                self._writer.start()

    def _writer_loop(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if item is _STOP:
                q.task_done()
                return
            batch = [item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            try:
                first = self._write([p for p, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                for _, fut in batch:
                    fut.set_exception(exc)
            else:
                for i, (_, fut) in enumerate(batch):
                    fut.set_result(first + i)
            for _ in batch:
                q.task_done()
            if stop:
                q.task_done()
                return

    def _lock_head(self, conn, grow: int = 0) -> int:
        # The first statement of every write transaction: takes the row lock (PostgreSQL)
        # or the database write lock (SQLite) and returns the new size.
        stmt = (
            update(audit_head)
            .where(audit_head.c.id == _HEAD_ID)
            .values(size=audit_head.c.size + grow)
            .returning(audit_head.c.size)
        )
        return int(conn.execute(stmt).scalar_one())

    def _write(self, items: Sequence[_Prepared]) -> int:
        leaves = [merkle.leaf_hash(p.data) for p in items]
        with self._engine.begin() as conn:
            start = self._lock_head(conn, len(items)) - len(items)
            conn.execute(
                insert(audit_entries),
                [
                    {
                        "seq": start + i,
                        "entry": p.data,
                        "leaf_hash": h,
                        "kind": p.kind,
                        "request_id": p.request_id,
                        "created_at": p.created_at,
                    }
                    for i, (p, h) in enumerate(zip(items, leaves))
                ],
            )
            self._write_nodes(conn, start, leaves)
        return start

    def _write_nodes(self, conn, start: int, new: list[bytes]) -> None:
        """Stores every complete subtree at heights T, 2T, ... that the new leaves
        ``[start, start + len(new))`` finish (RFC 9162 §2.1.1 node hashes)."""
        T, level, lo = self._tile, 0, start
        while True:
            first, end = lo >> T, (lo + len(new)) >> T
            if end <= first:
                return
            base = first << T
            children = (self._read_level(conn, level, base, lo) if base < lo else []) + new
            parents = [_perfect_root(children[(p << T) - base : ((p + 1) << T) - base]) for p in range(first, end)]
            level += T
            conn.execute(
                insert(audit_nodes),
                [{"level": level, "idx": first + i, "hash": h} for i, h in enumerate(parents)],
            )
            lo, new = first, parents

    def checkpoint(self, *, max_idle: float | None = None) -> StoredCheckpoint:
        """Signs a checkpoint of the current tree if it grew since the last one (or if
        there is none, or the last one is older than ``max_idle`` seconds); returns the
        latest checkpoint either way. Before signing it re-derives the root at the last
        signed size and refuses (``TamperedLogError``) if it differs: a log MUST NOT sign
        a checkpoint inconsistent with one it signed before (c2sp.org/tlog-checkpoint)."""
        now_dt = _utc(self._clock())
        now = int(now_dt.timestamp())
        with self._engine.begin() as conn:
            size = self._lock_head(conn)
            latest = self._latest(conn)
            if latest is not None:
                if latest.size > size:
                    raise TamperedLogError(
                        f"the last checkpoint has size {latest.size} but the log has {size} entries"
                    )
                signed_at = latest.time if latest.time is not None else int(latest.created_at.timestamp())
                idle = max_idle is not None and now - signed_at >= max_idle
                if latest.size == size and not idle:
                    return latest
                if latest.size > 0 and merkle.root_at(latest.size, self._subtrees) != latest.root:
                    log.error("audit log %s: stored tree disagrees with checkpoint %d", self._origin, latest.size)
                    raise TamperedLogError(
                        f"the stored tree no longer matches checkpoint {latest.size}; refusing to sign"
                    )
            root = merkle.root_at(size, self._subtrees)
            cp = Checkpoint(self._origin, size, root, (f"{TIME_EXTENSION} {now}",))
            note = cp.sign(self._signer)
            conn.execute(insert(audit_checkpoints).values(size=size, root=root, note=note, created_at=now_dt))
        return StoredCheckpoint(size, root, note, now_dt, now)

    # -- peers -------------------------------------------------------------------------

    def observe_peer_checkpoint(
        self,
        peer_code: str,
        note_text: str | bytes,
        peer_verifier: Verifier | Verifiers | str,
        consistency_proof_fetcher: Callable[[int, int], Sequence[bytes]],
    ) -> str:
        """Verifies a peer's signed checkpoint, checks it is consistent with the last one
        this node cosigned for that peer, cosigns it (c2sp.org/tlog-cosignature
        ``cosignature/v1``) and stores the cosignature. Returns the cosignature line
        (without the final newline).

        ``consistency_proof_fetcher(size1, size2)`` asks the peer for an RFC 9162
        consistency proof. Raises the note errors for a bad signature,
        :class:`CheckpointError` for an unacceptable checkpoint (other origin, older than
        the last one cosigned), and :class:`ForkError` — after storing the evidence in
        ``audit_forks``, logging a warning and appending a ``peer.fork`` entry — when the
        peer signed two checkpoints that cannot both hold."""
        if not peer_code or not isinstance(peer_code, str):
            raise InvalidArgument("peer_code: want a member code")
        note_str = note_text.decode("utf-8", "replace") if isinstance(note_text, bytes) else note_text
        cp, note = open_checkpoint(note_text, peer_verifier)
        t = audit_cosignatures
        with self._engine.connect() as conn:
            prev = conn.execute(
                select(t).where(t.c.peer == peer_code).order_by(t.c.size.desc(), t.c.id.desc()).limit(1)
            ).first()
        if prev is not None:
            if prev.origin != cp.origin:
                raise CheckpointError(f"peer {peer_code}: origin {cp.origin!r}, previously {prev.origin!r}")
            p_size, p_root = int(prev.size), bytes(prev.root)
            if cp.size == p_size:
                if cp.root != p_root:
                    self._fork(peer_code, cp.origin, prev.peer_note, p_size, note_str, cp.size, None,
                               "same tree size, different root")
            else:
                small, big = (p_size, cp.size) if cp.size > p_size else (cp.size, p_size)
                r_small, r_big = (p_root, cp.root) if cp.size > p_size else (cp.root, p_root)
                if small > 0:
                    proof = list(consistency_proof_fetcher(small, big))
                    try:
                        merkle.verify_consistency(small, big, proof, r_small, r_big)
                    except ConsistencyProofError as exc:
                        self._fork(peer_code, cp.origin, prev.peer_note, p_size, note_str, cp.size, proof,
                                   f"no valid consistency proof between sizes {small} and {big}: {exc}")
                if cp.size < p_size:
                    raise CheckpointError(
                        f"peer {peer_code}: checkpoint size {cp.size} is older than the last cosigned {p_size}"
                    )
        now_dt = _utc(self._clock())
        sig = self._signer.cosign(note.text, int(now_dt.timestamp()))
        line = sig.line.rstrip("\n")
        with self._engine.begin() as conn:
            conn.execute(
                insert(t).values(
                    peer=peer_code, origin=cp.origin, size=cp.size, root=cp.root,
                    peer_note=note_str, cosignature=line, created_at=now_dt,
                )
            )
        return line

    def last_cosigned(self, peer_code: str) -> tuple[int, bytes] | None:
        """(size, root) of the largest checkpoint of ``peer_code`` this node cosigned: the
        size a peer's consistency proof must start from (``CosignRequest.consistency``)."""
        t = audit_cosignatures
        with self._engine.connect() as conn:
            row = conn.execute(
                select(t.c.size, t.c.root).where(t.c.peer == peer_code).order_by(t.c.size.desc()).limit(1)
            ).first()
        return None if row is None else (int(row.size), bytes(row.root))

    def _fork(self, peer: str, origin: str, note_a: str, size_a: int, note_b: str, size_b: int,
              proof: Sequence[bytes] | None, reason: str) -> None:
        proof_text = None if proof is None else "\n".join(base64.b64encode(p).decode() for p in proof)
        with self._engine.begin() as conn:
            conn.execute(
                insert(audit_forks).values(
                    peer=peer, origin=origin, reason=reason, size_a=size_a, note_a=note_a,
                    size_b=size_b, note_b=note_b, proof=proof_text, created_at=_utc(self._clock()),
                )
            )
        log.warning("AUDIT FORK: peer %s (%s) signed inconsistent checkpoints %d and %d: %s",
                    peer, origin, size_a, size_b, reason)
        try:
            self.append_many([(Kind.PEER_FORK, {"peer": peer, "origin": origin, "size_a": size_a,
                                                 "size_b": size_b, "reason": reason[:500]})])
        except Exception:  # noqa: BLE001 - the evidence row is already stored
            log.exception("could not log the fork of peer %s in the audit log", peer)
        raise ForkError(f"peer {peer} ({origin}): {reason}")


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a complete subtree from its 2^k leftmost-to-rightmost children."""
    row = list(hashes)
    sha = merkle._sha256
    while len(row) > 1:
        row = [sha(b"\x01" + row[i] + row[i + 1]).digest() for i in range(0, len(row), 2)]
    return row[0]


class CheckpointScheduler:
    """Calls :meth:`AuditLog.checkpoint` every ``interval`` seconds (a new checkpoint is
    signed only if the tree grew) and re-signs an unchanged tree every ``idle_interval``
    seconds so its checkpoints stay fresh. ``start()`` / ``stop()``."""

    def __init__(self, audit_log: AuditLog, *, interval: float = 5.0, idle_interval: float = 3600.0) -> None:
        if interval <= 0 or idle_interval <= 0:
            raise ConfigError("checkpoint intervals must be > 0")
        self._log = audit_log
        self._interval = interval
        self._idle = idle_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
        self._thread.start()

    def stop(self, *, final: bool = True) -> None:
        """Stops the thread; with ``final`` signs one last checkpoint if the tree grew."""
        t, self._thread = self._thread, None
        if t is None:
            return
        self._stop.set()
        t.join()
        if final:
            self._tick()

    def _tick(self) -> None:
        try:
            self._log.flush()
            self._log.checkpoint(max_idle=self._idle)
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - keep the scheduler alive, report loudly
            self.last_error = exc
            log.error("audit checkpoint failed: %s", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(self._interval)

    def __enter__(self) -> "CheckpointScheduler":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
