"""Reading a stored audit log: size, roots, RFC 9162 proofs, entries and the checkpoints it
signed. Needs no key, so services that only serve proofs, and the offline tools, use it;
:class:`~hedui.node.audit.log.AuditLog` (the writer) extends it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, TextClause, and_, bindparam, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from hedui.node.audit import merkle
from hedui.node.audit.entry import utc
from hedui.node.audit.errors import ConsistencyProofError, InclusionProofError, TamperedLogError
from hedui.node.audit.note import Checkpoint, split_note
from hedui.node.audit.tables import audit_checkpoints, audit_entries, audit_head, audit_nodes
from hedui.node.errors import ConfigError, InvalidArgument, NotFound

__all__ = ["TreeReader", "StoredCheckpoint", "checkpoint_time", "perfect_root", "TIME_EXTENSION", "DEFAULT_TILE_HEIGHT", "HEAD_ID"]

# Checkpoint extension line carrying the signing time (POSIX seconds), so that a
# re-signed idle checkpoint proves freshness (c2sp.org/tlog-checkpoint "extension lines").
TIME_EXTENSION = "hedui-time"
# Complete subtrees are cached at heights 4, 8, 12, ...: one node row per 15 entries, and a
# proof reads at most 15 stored hashes per 4 levels (measured: tile 4 gives ~35% faster
# proofs than tile 8 at 2*10^5 entries, with the same append rate).
DEFAULT_TILE_HEIGHT = 4
HEAD_ID = 1

# Every append reads the stored hashes its new subtree nodes fold (AuditLog._write_nodes):
# statements built once, values as parameters (issue 16 item 3; building the expression and
# its cache key per call was 3 % of a provider's CPU in a case, bench/bench_case.py profile).
_LEAVES = (select(audit_entries.c.seq, audit_entries.c.leaf_hash)
           .where(and_(audit_entries.c.seq >= bindparam("a"), audit_entries.c.seq < bindparam("b")))
           .order_by(audit_entries.c.seq))
_NODES = (select(audit_nodes.c.idx, audit_nodes.c.hash)
          .where(and_(audit_nodes.c.level == bindparam("level"), audit_nodes.c.idx >= bindparam("a"),
                      audit_nodes.c.idx < bindparam("b")))
          .order_by(audit_nodes.c.idx))


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


class TreeReader:
    """Read-only view of a stored audit tree: size, roots, proofs, entries, checkpoints.
    Needs no key, so services that only serve proofs, and the offline tools, use it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        try:
            with engine.connect() as conn:
                row = conn.execute(select(audit_head).where(audit_head.c.id == HEAD_ID)).first()
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
            return int(conn.execute(select(audit_head.c.size).where(audit_head.c.id == HEAD_ID)).scalar_one())

    @staticmethod
    def _read_level(conn, level: int, a: int, b: int) -> list[bytes]:
        """Hashes of the complete subtrees at ``level`` with indices ``[a, b)``."""
        if level == 0:
            rows = conn.execute(_LEAVES, {"a": a, "b": b}).all()
        else:
            rows = conn.execute(_NODES, {"level": level, "a": a, "b": b}).all()
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
            out.append(perfect_root(hashes[lo - g_lo : hi - g_lo]))
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
        return StoredCheckpoint(int(row.size), bytes(row.root), row.note, utc(row.created_at), checkpoint_time(cp))

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


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a complete subtree from its 2^k leftmost-to-rightmost children."""
    row = list(hashes)
    sha = merkle._sha256
    while len(row) > 1:
        row = [sha(b"\x01" + row[i] + row[i + 1]).digest() for i in range(0, len(row), 2)]
    return row[0]
