"""The node's tamper-evident audit log: an RFC 9162 Merkle log in the node store (the writer),
signed C2SP checkpoints, and cross-cosigning of peers' checkpoints.

Entries and their kinds: :mod:`hedui.node.audit.entry`; reading the tree and proofs:
:mod:`hedui.node.audit.tree`.

Writes and crashes
------------------
Every write is one transaction that first updates the single ``audit_head`` row (which
serialises writers across threads, processes and replicas), then inserts the entries and
the complete-subtree hashes they finish. kill -9 at any point leaves either all of a
batch or none of it. :meth:`AuditLog.append` is durable on return;
:meth:`AuditLog.submit` hands the entry to a background writer that commits whatever has
queued up in one transaction and resolves the future afterwards. Every write goes through
the store's group committer (:mod:`hedui.node.store.group`, shared with the node's other
hot-path writes): a synchronous :meth:`AuditLog.append` runs in the caller's own thread —
no hand-off to the writer thread unless entries it queued are still pending, whose order it
must keep — and shares its commit with whatever other threads write meanwhile.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from hedui.node.audit import merkle
from hedui.node.audit.entry import Kind, encode_entry, utc
from hedui.node.audit.errors import CheckpointError, ConsistencyProofError, ForkError, TamperedLogError
from hedui.node.audit.note import Checkpoint, Signer, Verifier, Verifiers, open_checkpoint
from hedui.node.audit.tables import audit_checkpoints, audit_cosignatures, audit_entries, audit_forks, audit_head, audit_nodes
from hedui.node.audit.tree import DEFAULT_TILE_HEIGHT, HEAD_ID, TIME_EXTENSION, StoredCheckpoint, TreeReader, perfect_root
from hedui.node.errors import ConfigError, InvalidArgument
from hedui.node.loops import PeriodicJob
from hedui.node.store.group import GroupCommit, on_commit
from hedui.node.store.raw import Prepared

__all__ = ["AuditLog", "CheckpointScheduler"]

log = logging.getLogger("hedui.audit")


@dataclass(slots=True)
class _Prepared:
    kind: str
    request_id: str | None
    created_at: datetime
    data: bytes


_STOP = object()

# Statements of every append, built once (issue 16 item 3: building them per call cost more
# than running them); the values travel as parameters. They run on the driver's cursor in
# the caller's transaction (node/store/raw.py): every exchange appends, and the Core
# execution path of these statements was a large part of a node's SQLAlchemy time.
_GROW_HEAD = Prepared(update(audit_head).where(audit_head.c.id == bindparam("head"))
                      .values(size=audit_head.c.size + bindparam("grow")).returning(audit_head.c.size))
_INSERT_ENTRY = Prepared(insert(audit_entries), column_keys=["seq", "entry", "leaf_hash", "kind", "request_id", "created_at"])
_INSERT_NODE = Prepared(insert(audit_nodes), column_keys=["level", "idx", "hash"])


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
        clock: Callable[[], datetime],
        tile_height: int | None = None,
        max_batch: int = 1000,
        cosigner: Signer | None = None,
    ) -> None:
        """``clock``: the instant of each entry and checkpoint (the node's Clock.now).
        ``cosigner``: the key cosigning other logs (issue 18: a role of its own); by default
        ``signer``, the checkpoint key."""
        if not isinstance(signer, Signer):
            raise ConfigError("audit signer: want a hedui.node.audit.note.Signer")
        if signer.name != origin:
            raise ConfigError(f"audit origin {origin!r} must equal the signer key name {signer.name!r}")
        Checkpoint(origin, 0, merkle.EMPTY_ROOT)  # validates the origin line
        self._engine = engine
        #: The store's group committer: every write of this log, and the node's other
        #: hot-path writes that append entries in their own transaction, go through it.
        self.group = GroupCommit(engine)
        self._origin = origin
        self._signer = signer
        self._cosigner = cosigner if cosigner is not None else signer
        self._max_batch = max(1, max_batch)
        self._clock = clock
        self._ensure_head(tile_height)
        super().__init__(engine)
        self._queue: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._closed = False
        # The newest checkpoint this log signed or read (every answer carries one): kept
        # here so the hot path does not read and parse it per call. Another process that
        # signs a newer one is seen at this log's next checkpoint(); until then answers
        # carry this one, which is as valid (an older signed size of the same tree).
        self._signed: StoredCheckpoint | None = None
        #: The committed hashes of each stored level's incomplete tile: level -> (index of
        #: its first hash, the hashes), as this process last committed them (see
        #: :meth:`_tails_in`). Replaced whole after each commit, never changed in place.
        self._tails: dict[int, tuple[int, list[bytes]]] = {}

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
                        .where(audit_head.c.id == HEAD_ID)
                    ).first()
                    if row is None:
                        if conn.execute(select(audit_entries.c.seq).limit(1)).first() is not None:
                            raise TamperedLogError("audit_entries has rows but audit_head is missing")
                if row is not None:
                    break
                try:
                    with self._engine.begin() as conn:
                        conn.execute(insert(audit_head).values(
                            id=HEAD_ID, origin=self._origin, size=0,
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

    def _prepare(self, kind: str, fields: Mapping[str, Any], at: datetime | None = None) -> _Prepared:
        if at is None:
            at = utc(self._clock())
        data = encode_entry(kind, fields, at)
        rid = fields.get("request_id")
        return _Prepared(kind, rid if isinstance(rid, str) else None, at, data)

    def append(self, kind: str, fields: Mapping[str, Any]) -> int:
        """Appends one entry and returns its sequence number once it is committed."""
        return self.append_prepared([self._prepare(kind, fields)])[0]

    def append_prepared(self, prepared: Sequence[_Prepared]) -> list[int]:
        """Appends :meth:`prepare_many`'d entries, durable on return. In the caller's thread
        through the group committer (no hand-off), unless entries queued with :meth:`submit`
        are still pending: then behind them, through the writer, to keep their order."""
        if not prepared:
            return []
        if self._writer is not None and self._queue.unfinished_tasks:
            futs: list[Future[int]] = []
            for p in prepared:
                fut: Future[int] = Future()
                self._queue.put((p, fut))
                futs.append(fut)
            return [f.result() for f in futs]
        if self._closed:
            raise InvalidArgument("audit log is closed")
        first = self._write(prepared)
        return list(range(first, first + len(prepared)))

    def submit(self, kind: str, fields: Mapping[str, Any]) -> Future[int]:
        """Validates the entry now and queues it for the background writer; the future
        resolves to its sequence number after the commit (or to the database error)."""
        prepared = self._prepare(kind, fields)
        fut: Future[int] = Future()
        self._start_writer()
        self._queue.put((prepared, fut))
        return fut

    def append_many(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[int]:
        """Appends a batch in one transaction; returns the sequence numbers in order."""
        # One instant for the batch: its entries are appended together, in one transaction.
        at = utc(self._clock())
        prepared = [self._prepare(k, f, at) for k, f in items]
        if not prepared:
            return []
        first = self._write(prepared)
        return list(range(first, first + len(prepared)))

    def prepare_many(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[_Prepared]:
        """Validates and encodes entries (one instant for all) for :meth:`write_in`; raises
        what :func:`encode_entry` raises, before any transaction is open."""
        at = utc(self._clock())
        return [self._prepare(k, f, at) for k, f in items]

    def write_in(self, conn, prepared: Sequence[_Prepared]) -> list[int]:
        """Appends prepared entries inside the caller's transaction ``conn``: they are durable
        exactly when that transaction commits, and gone if it rolls back (issue 16: one
        durable transaction per exchange). Call it last in the transaction, the head row it
        locks serialises all writers of this log until the commit."""
        if not prepared:
            return []
        first = self._write_conn(conn, prepared)
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
        self.group.close()   # the group committer's kept connection back to the pool

    def __enter__(self) -> AuditLog:
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
            except BaseException as exc:
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
        # The first statement of every write of the log: takes the row lock (PostgreSQL)
        # or the database write lock (SQLite) and returns the new size.
        rows = _GROW_HEAD.run(conn, {"head": HEAD_ID, "grow": grow})
        if len(rows) != 1:
            raise TamperedLogError(f"audit_head: got {len(rows)} rows for the log's head, want 1")
        return int(rows[0][0])

    def _write(self, items: Sequence[_Prepared]) -> int:
        return self.group.run(lambda conn: self._write_conn(conn, items))

    def _write_conn(self, conn, items: Sequence[_Prepared]) -> int:
        leaves = [merkle.leaf_hash(p.data) for p in items]
        start = self._lock_head(conn, len(items)) - len(items)
        _INSERT_ENTRY.run_many(
            conn,
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

    def _tails_in(self, conn) -> dict[int, tuple[int, list[bytes]]] | None:
        """This transaction's view of the incomplete tiles' hashes (``_tails``): the
        committed ones plus what this transaction appended, which become the committed ones
        once it commits (node/store/group.py ``on_commit``; a rollback drops them). None for
        a transaction not run by a group committer: it reads the stored hashes, as before.

        Why (issue 16, the case at one at a time): a write that completes a tile read the
        tile's earlier leaves back from the store — a query in ~every transaction of the hub's
        case and 1.5 per provider and case. Committed entries never change (append-only), so
        hashes this process committed can be reused; a cached tile is used only if it ends
        exactly where the new entries start, so entries another process or connection
        appended meanwhile make it miss (the store is read, as before)."""
        key = ("hedui.audit.tails", id(self))
        txn = conn.get_transaction()
        got = conn.info.get(key)
        if got is not None and got[0] is txn:
            return got[1]
        tails = dict(self._tails)

        def committed() -> None:
            self._tails = tails

        if not on_commit(conn, committed):
            return None
        conn.info[key] = (txn, tails)
        return tails

    def _write_nodes(self, conn, start: int, new: list[bytes]) -> None:
        """Stores every complete subtree at heights T, 2T, ... that the new leaves
        ``[start, start + len(new))`` finish (RFC 9162 §2.1.1 node hashes)."""
        T, level, lo = self._tile, 0, start
        tails = self._tails_in(conn)
        while True:
            first, end = lo >> T, (lo + len(new)) >> T
            base = first << T
            prev = _cached(tails, level, base, lo)
            if end <= first:
                if tails is not None:   # the tile grows; unknown if its start is not known
                    if prev is None:
                        tails.pop(level, None)
                    else:
                        tails[level] = (base, prev + new)
                return
            if prev is None:
                prev = self._read_level(conn, level, base, lo)
            children = prev + new
            parents = [perfect_root(children[(p << T) - base : ((p + 1) << T) - base]) for p in range(first, end)]
            if tails is not None:   # what is left of this level after its complete tiles
                tails[level] = (end << T, children[(end << T) - base:])
            level += T
            _INSERT_NODE.run_many(conn, [{"level": level, "idx": first + i, "hash": h} for i, h in enumerate(parents)])
            lo, new = first, parents

    def checkpoint(self, *, max_idle: float | None = None) -> StoredCheckpoint:
        """Signs a checkpoint of the current tree if it grew since the last one (or if
        there is none, or the last one is older than ``max_idle`` seconds); returns the
        latest checkpoint either way. Before signing it re-derives the root at the last
        signed size and refuses (``TamperedLogError``) if it differs: a log MUST NOT sign
        a checkpoint inconsistent with one it signed before (c2sp.org/tlog-checkpoint)."""
        now_dt = utc(self._clock())
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
                    self._signed = latest
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
        self._signed = StoredCheckpoint(size, root, note, now_dt, now)
        return self._signed

    def latest_signed(self) -> StoredCheckpoint | None:
        """The newest checkpoint known to this log object without a read once it has signed
        or seen one (see ``_signed``); None if the log has none yet."""
        if self._signed is None:
            self._signed = self.latest_checkpoint()
        return self._signed

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
        # Origin first (issue 18): the log's signature must be by a key named as its origin,
        # and a single peer verifier names exactly the origin this peer's log has — checked
        # before the first cosignature, not only against the previous one.
        want = peer_verifier.name if isinstance(peer_verifier, Verifier) else None
        cp, note = open_checkpoint(note_text, peer_verifier, origin=want)
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
        now_dt = utc(self._clock())
        sig = self._cosigner.cosign(note.text, int(now_dt.timestamp()))
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
                    size_b=size_b, note_b=note_b, proof=proof_text, created_at=utc(self._clock()),
                )
            )
        log.warning("AUDIT FORK: peer %s (%s) signed inconsistent checkpoints %d and %d: %s",
                    peer, origin, size_a, size_b, reason)
        try:
            self.append_many([(Kind.PEER_FORK, {"peer": peer, "origin": origin, "size_a": size_a,
                                                 "size_b": size_b, "reason": reason[:500]})])
        except Exception:
            log.exception("could not log the fork of peer %s in the audit log", peer)
        raise ForkError(f"peer {peer} ({origin}): {reason}")


class CheckpointScheduler(PeriodicJob):
    """Calls :meth:`AuditLog.checkpoint` every ``interval`` seconds (a new checkpoint is
    signed only if the tree grew) and re-signs an unchanged tree every ``idle_interval``
    seconds so its checkpoints stay fresh; :meth:`stop` signs one last checkpoint if the
    tree grew."""

    def __init__(self, audit_log: AuditLog, *, interval: float = 5.0, idle_interval: float = 3600.0) -> None:
        if interval <= 0 or idle_interval <= 0:
            raise ConfigError("checkpoint intervals must be > 0")
        super().__init__("audit-checkpoints", interval=interval, join_timeout=60.0)
        self._log = audit_log
        self._idle = idle_interval
        self._final = True

    def step(self) -> None:
        self._log.flush()
        self._log.checkpoint(max_idle=self._idle)

    def stop(self, *, final: bool = True) -> None:
        """Stops the thread; with ``final`` signs one last checkpoint if the tree grew."""
        self._final = final
        super().stop()

    def final(self) -> None:
        if self._final:
            self.tick()


def _cached(tails: dict[int, tuple[int, list[bytes]]] | None, level: int, base: int, lo: int) -> list[bytes] | None:
    """The hashes of ``level`` at ``[base, lo)`` from ``tails`` (``[]`` when the range is
    empty), or None when they are not all there: the cached run must end exactly at ``lo``."""
    if base >= lo:
        return []
    got = tails.get(level) if tails is not None else None
    if got is None:
        return None
    first, hashes = got
    if first > base or first + len(hashes) != lo:
        return None
    return hashes[base - first:]
