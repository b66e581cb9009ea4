"""The provider's durable notice outbox and its pusher.

- :func:`enqueue` writes a detection's signed, sealed notice into ``notice_outbox`` on the
  caller's connection, so it commits (or not) together with whatever else the caller writes
  in that transaction. Idempotent on ``dedup_key``: a re-run of a period adds nothing and does
  not even call the signer.
- :class:`Pusher` sends pending notices, one per call or in batches (``PushBatch``, issue 16),
  retries with exponential backoff and jitter, checks the hub's receipt with the caller's
  verifier, and marks the row delivered with the receipt and its audit entries in one
  transaction. A row is claimed by bumping ``attempts`` and pushing ``next_attempt_at`` one
  lease ahead (compare-and-set on ``attempts`` for one row; for a batch, one
  ``UPDATE … RETURNING`` whose condition is that the row is still due), so several pushers can
  share a store and a crash mid-send only delays the row. Since the hub is idempotent on
  ``notice_id`` (a resend gets a receipt marked duplicate), the effect is exactly once.

Transport (gRPC ``NoticeService.Push``), sealing and signing (:mod:`~hedui.node.discovery.notice`)
and receipt verification are injected, so the outbox is tested on both stores without a network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, update

from hedui.adapters.idnum import scrub
from hedui.node.discovery.calendar import CHINA_TZ, local_date
from hedui.node.discovery.detect import Detection
from hedui.node.discovery.notice import check_receipt
from hedui.node.discovery.tables import insert_ignore, notice_outbox, utc
from hedui.node.errors import InvalidArgument, Reason, VerificationError
from hedui.node.store.db import dialect_insert
from hedui.v1 import notice_pb2

__all__ = ["enqueue", "enqueue_many", "Pusher", "PushStats", "retry_rejected", "outbox_status"]

log = logging.getLogger(__name__)

SignAndSeal = Callable[[Detection, bytes], bytes]
"""``(detection, notice_id) -> serialised DSSE Envelope of the sealed Notice``."""

SendBatch = Callable[[list[bytes]], list["bytes | BaseException"]]
"""``(envelopes) -> one result per envelope, in order``: the receipt envelope bytes, or the
exception that refused that notice. Raises when the whole call failed."""

Delivered = tuple[bytes, bytes, bytes, notice_pb2.Receipt]
"""``(notice_id, envelope, receipt_bytes, receipt)`` of a notice whose receipt checked out."""

AuditIn = Callable[[Connection, list[Delivered]], "Callable[[], None] | None"]
"""Writes the audit entries of delivered notices on the delivery transaction's connection;
may return a function to run once that transaction has committed."""


#: Batches one pusher keeps in flight at most (``[provider] push_in_flight``).
MAX_IN_FLIGHT = 8

# ---------------------------------------------------------------- outbox

# Statements built once, values as parameters (issue 16: lean statements on the hot path).
_CLAIM = (
    update(notice_outbox)
    .where(
        notice_outbox.c.notice_id.in_(bindparam("ids", expanding=True)),
        notice_outbox.c.status == "pending",
        notice_outbox.c.next_attempt_at <= bindparam("now"),
    )
    .values(attempts=notice_outbox.c.attempts + 1, next_attempt_at=bindparam("until"))
    .returning(notice_outbox.c.notice_id, notice_outbox.c.attempts, notice_outbox.c.envelope)
)
_DUE = (
    select(notice_outbox.c.notice_id)
    .where(notice_outbox.c.status == "pending", notice_outbox.c.next_attempt_at <= bindparam("now"))
    .order_by(notice_outbox.c.next_attempt_at, notice_outbox.c.notice_id)
    .limit(bindparam("n"))
)
_BY_DEDUP = select(notice_outbox.c.notice_id).where(notice_outbox.c.dedup_key == bindparam("k"))
_BY_DEDUPS = select(notice_outbox.c.dedup_key, notice_outbox.c.notice_id).where(
    notice_outbox.c.dedup_key.in_(bindparam("ks", expanding=True))
)
_DELIVER = (
    update(notice_outbox)
    .where(notice_outbox.c.notice_id == bindparam("b_nid"), notice_outbox.c.status == "pending")
    .values(status="delivered", receipt=bindparam("b_receipt"), delivered_at=bindparam("b_at"), last_error=None)
)


def enqueue(
    conn: Connection,
    detection: Detection,
    sign_and_seal: SignAndSeal,
    *,
    hub: str,
    now: datetime,
) -> tuple[bytes, bool]:
    """Puts the notice for ``detection`` in the outbox on ``conn`` (the caller's transaction).
    Returns ``(notice_id, created)``; ``created`` is False when the detection was already
    queued (then ``sign_and_seal`` is not called). ``now``: the caller's clock (DESIGN.md "Time")."""
    existing = conn.execute(_BY_DEDUP, {"k": detection.dedup_key}).scalar_one_or_none()
    if existing is not None:
        return bytes(existing), False
    notice_id = os.urandom(16)
    envelope = sign_and_seal(detection, notice_id)
    if not isinstance(envelope, (bytes, bytearray)) or not envelope:
        raise InvalidArgument(
            f"sign_and_seal: got {type(envelope).__name__}, want the serialised envelope bytes"
        )
    at = now
    inserted = insert_ignore(
        conn,
        notice_outbox,
        {
            "notice_id": notice_id,
            "dedup_key": detection.dedup_key,
            "rule": detection.rule,
            "hub": hub,
            "event_type": detection.event_type,
            "due_date": detection.due_date,
            "envelope": bytes(envelope),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": at,
            "created_at": at,
        },
        ["dedup_key"],
    )
    if inserted:
        return notice_id, True
    # A concurrent run queued the same detection first.
    winner = conn.execute(_BY_DEDUP, {"k": detection.dedup_key}).scalar_one()
    return bytes(winner), False


def enqueue_many(
    conn: Connection,
    detections: Sequence[Detection],
    sign_and_seal: SignAndSeal,
    *,
    hub: str,
    now: datetime,
) -> list[tuple[bytes, bool]]:
    """:func:`enqueue` for several detections, one result each, in order. Every new notice is
    sealed and signed *before* the first write, and the rows go in by one ``executemany``: on
    SQLite the file's write lock (which the node's pusher needs too) is then held for the
    inserts only, not for the signing of the whole batch (issue 16: no busy-handler sleeping
    between detection and pusher). Two detections with one dedup key queue one notice."""
    keys = list(dict.fromkeys(d.dedup_key for d in detections))
    have: dict[str, bytes] = {}
    for k in range(0, len(keys), 500):   # well under SQLite's bound-parameter limit
        have.update((r.dedup_key, bytes(r.notice_id)) for r in conn.execute(_BY_DEDUPS, {"ks": keys[k:k + 500]}))
    rows: dict[str, dict[str, Any]] = {}
    for d in detections:
        if d.dedup_key in have or d.dedup_key in rows:
            continue
        notice_id = os.urandom(16)
        envelope = sign_and_seal(d, notice_id)
        if not isinstance(envelope, (bytes, bytearray)) or not envelope:
            raise InvalidArgument(
                f"sign_and_seal: got {type(envelope).__name__}, want the serialised envelope bytes"
            )
        rows[d.dedup_key] = {
            "notice_id": notice_id, "dedup_key": d.dedup_key, "rule": d.rule, "hub": hub,
            "event_type": d.event_type, "due_date": d.due_date, "envelope": bytes(envelope),
            "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
        }
    created: set[str] = set()
    if rows:
        ins = dialect_insert(conn)(notice_outbox).on_conflict_do_nothing(index_elements=["dedup_key"])
        created = {r.dedup_key for r in conn.execute(ins.returning(notice_outbox.c.dedup_key), list(rows.values()))}
        late = [k for k in rows if k not in created]   # a concurrent run queued them first
        if late:
            have.update((r.dedup_key, bytes(r.notice_id)) for r in conn.execute(_BY_DEDUPS, {"ks": late}))
    out: list[tuple[bytes, bool]] = []
    for d in detections:
        k = d.dedup_key
        if k in created:
            out.append((rows[k]["notice_id"], True))
            created.discard(k)   # a second detection with this key was not created by itself
        else:
            out.append((have[k] if k in have else rows[k]["notice_id"], False))
    return out


@dataclass(frozen=True, slots=True)
class PushStats:
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    duplicates: int = 0


class Pusher:
    """Pushes pending outbox rows to the hub.

    ``send(envelope) -> receipt envelope bytes`` is the transport (raises on failure).
    ``verify(envelope, receipt) -> Receipt`` verifies the hub's signature and returns the parsed
    receipt, raising (or returning ``None``) to reject it. The pusher then checks that the
    receipt names this notice and the SHA-256 of its exact payload.
    ``on_delivered(notice_id, envelope, receipt_bytes, receipt)``, if given, runs after the
    receipt checked out and before the row is marked delivered; if it raises, the attempt
    counts as failed and is retried (the hub answers a duplicate receipt).
    ``audit(conn, delivered)``, if given, writes the audit entries of the delivered notices in
    the same transaction that marks them delivered (issue 16: delivered + audit commit
    together, so a crash leaves both or neither; the hub answers the retry as a duplicate).

    ``send_batch``, if given, is used instead of ``send`` (``NoticeService.PushBatch``): up
    to ``batch`` due rows are claimed in one transaction, sent in one call, and their outcomes
    (delivered + audit, retry or rejected, per notice) recorded in one transaction — two
    commits per batch instead of two or three per notice. A notice the hub refused in the
    batch is handled as a refusal of a single push would be (``permanent`` decides).

    ``in_flight`` (batches only): how many batches one pass keeps in flight at once, each in
    its own lane (a thread: claim, send, record, repeat). With 2 the hub works on one batch
    while this side verifies and records the receipts of the other. Every batch is still
    claimed, sent and recorded on its own, so a crash with several in flight leaves each of
    them leased, to be pushed again when its lease runs out (the hub answers duplicates).
    """

    def __init__(
        self,
        engine: Engine,
        send: Callable[[bytes], bytes],
        verify: Callable[[bytes, bytes], notice_pb2.Receipt | None],
        *,
        base_delay: float = 2.0,
        max_delay: float = 900.0,
        lease: float = 120.0,
        batch: int = 100,
        clock: Callable[[], datetime],
        rng: random.Random | None = None,
        on_delivered: Callable[[bytes, bytes, bytes, notice_pb2.Receipt], None] | None = None,
        permanent: Callable[[BaseException], bool] | None = None,
        send_batch: SendBatch | None = None,
        audit: AuditIn | None = None,
        in_flight: int = 1,
    ) -> None:
        if base_delay <= 0 or max_delay < base_delay or lease <= 0 or batch < 1 or not 1 <= in_flight <= MAX_IN_FLIGHT:
            raise InvalidArgument(
                f"pusher settings: got base_delay={base_delay}, max_delay={max_delay}, lease={lease}, "
                f"batch={batch}, in_flight={in_flight}, want 0 < base_delay <= max_delay, lease > 0, batch >= 1, "
                f"1 <= in_flight <= {MAX_IN_FLIGHT}"
            )
        self._engine = engine
        self._send = send
        self._verify = verify
        self._base = base_delay
        self._max = max_delay
        self._lease = timedelta(seconds=lease)
        self._batch = batch
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_delivered = on_delivered
        self._permanent = permanent or (lambda exc: False)
        self._send_batch = send_batch
        self._audit = audit
        self._in_flight = in_flight
        # The lanes of one pusher take turns at the store's write lock in this process: on
        # SQLite a second writer would otherwise wait in SQLite's busy handler, which sleeps
        # (up to 100 ms a try) instead of waking when the lock is free.
        self._writes: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    def backoff(self, attempts: int) -> timedelta:
        """Delay before the next try after ``attempts`` failures: exponential, capped, with
        "equal jitter" (half fixed, half random) so retries from many rows spread out."""
        d = min(self._max, self._base * (2 ** min(max(attempts - 1, 0), 30)))
        return timedelta(seconds=d / 2 + self._rng.uniform(0, d / 2))

    def push_due(self) -> PushStats:
        """One pass over every pending row whose ``next_attempt_at`` has come."""
        if self._send_batch is None:
            return self._push_singly()
        first = self._claim_due()
        if not first:
            return PushStats()
        if len(first) < self._batch or self._in_flight == 1:
            return _add(self._push_batch(first), self._lane() if len(first) == self._batch else PushStats())
        # More than one batch is due: the other lanes claim and push theirs meanwhile.
        results: list[PushStats] = []
        errors: list[BaseException] = []

        def lane() -> None:
            try:
                results.append(self._lane())
            except BaseException as exc:   # re-raised in the pass's thread below
                errors.append(exc)

        others = [threading.Thread(target=lane, name=f"{threading.current_thread().name}-lane{k}", daemon=True)
                  for k in range(1, self._in_flight)]
        for t in others:
            t.start()
        try:
            mine = _add(self._push_batch(first), self._lane())
        finally:
            for t in others:
                t.join()
        if errors:
            raise errors[0]
        for r in results:
            mine = _add(mine, r)
        return mine

    def _lane(self) -> PushStats:
        """Claims and pushes batches until none is due."""
        stats = PushStats()
        while True:
            claimed = self._claim_due()
            if not claimed:
                return stats
            stats = _add(stats, self._push_batch(claimed))
            if len(claimed) < self._batch:
                return stats

    def _push_singly(self) -> PushStats:
        stats = PushStats()
        while True:
            now = self._clock()
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(notice_outbox.c.notice_id, notice_outbox.c.attempts, notice_outbox.c.envelope)
                    .where(notice_outbox.c.status == "pending", notice_outbox.c.next_attempt_at <= now)
                    .order_by(notice_outbox.c.next_attempt_at, notice_outbox.c.notice_id)
                    .limit(self._batch)
                ).all()
            for row in rows:
                stats = _add(stats, self._push_one(bytes(row.notice_id), row.attempts, bytes(row.envelope)))
            if len(rows) < self._batch:
                return stats

    # ------------------------------------------------------------ internals

    def _push_one(self, notice_id: bytes, attempts: int, envelope: bytes) -> PushStats:
        now = self._clock()
        with self._engine.begin() as conn:
            claimed = conn.execute(
                update(notice_outbox)
                .where(
                    notice_outbox.c.notice_id == notice_id,
                    notice_outbox.c.status == "pending",
                    notice_outbox.c.attempts == attempts,
                )
                .values(attempts=attempts + 1, next_attempt_at=now + self._lease)
            ).rowcount
        if claimed != 1:
            return PushStats()  # another pusher has it, or it was delivered meanwhile
        try:
            receipt_bytes = self._send(envelope)
            receipt = self._check(notice_id, envelope, receipt_bytes)
            if self._on_delivered is not None:
                self._on_delivered(notice_id, envelope, bytes(receipt_bytes), receipt)
        except Exception as exc:
            error = scrub(f"{type(exc).__name__}: {exc}")[:500]
            if self._permanent(exc):
                # The hub refused the notice itself: retrying the same bytes cannot succeed.
                with self._engine.begin() as conn:
                    conn.execute(
                        update(notice_outbox)
                        .where(notice_outbox.c.notice_id == notice_id, notice_outbox.c.status == "pending")
                        .values(status="rejected", last_error=error)
                    )
                log.warning("notice %s: rejected by the hub, not retried: %s", notice_id.hex(), error)
                return PushStats(attempted=1, failed=1)
            retry_at = self._clock() + self.backoff(attempts + 1)
            with self._engine.begin() as conn:
                conn.execute(
                    update(notice_outbox)
                    .where(notice_outbox.c.notice_id == notice_id, notice_outbox.c.status == "pending")
                    .values(next_attempt_at=retry_at, last_error=error)
                )
            log.info("notice %s: push attempt %d failed: %s", notice_id.hex(), attempts + 1, error)
            return PushStats(attempted=1, failed=1)
        marked = self._record([(notice_id, envelope, bytes(receipt_bytes), receipt)], [])
        return PushStats(attempted=1, delivered=len(marked), duplicates=1 if marked and receipt.duplicate else 0)

    def _claim_due(self) -> list[tuple[bytes, int, bytes]]:
        """Claims up to ``batch`` due rows, oldest first: ``(notice_id, attempts before this
        one, envelope)``. The look is a read (an idle pass takes no write lock); one
        ``UPDATE … RETURNING`` whose condition is that the row is still due claims them: a row
        another pusher or lane claimed meanwhile has its ``next_attempt_at`` a lease ahead (and
        a delivered one is no longer pending), so the condition is the compare-and-set, and the
        attempts come back already counted."""
        for _ in range(3):   # what another lane or pusher claimed between look and claim is gone: look again
            # On SQLite the look and the claim are under this pusher's lock (lanes do not race);
            # the look takes no write lock, so an idle pass does not hold up detection.
            with self._writes, self._engine.begin() as conn:
                now = self._clock()
                ids = [bytes(x) for x in conn.execute(_DUE, {"now": now, "n": self._batch}).scalars()]
                if not ids:
                    return []
                got = conn.execute(_CLAIM, {"ids": ids, "now": now, "until": now + self._lease}).all()
            if got:
                break
        else:
            return []
        order = {nid: k for k, nid in enumerate(ids)}
        return sorted(((bytes(r.notice_id), int(r.attempts) - 1, bytes(r.envelope)) for r in got),
                      key=lambda c: order[c[0]])

    def _push_batch(self, claimed: list[tuple[bytes, int, bytes]]) -> PushStats:
        """Sends claimed rows in one call and records every outcome in one transaction."""
        try:
            results = self._send_batch([e for _, _, e in claimed])  # type: ignore[misc]
            if len(results) != len(claimed):
                raise VerificationError(
                    f"push batch: got {len(results)} results for {len(claimed)} notices, want one each",
                    reason=Reason.RECEIPT_INVALID,
                )
        except Exception as exc:   # the whole call failed: every notice of it is retried (or rejected)
            results = [exc] * len(claimed)
        delivered: list[Delivered] = []
        failed: list[tuple[bytes, int, BaseException]] = []
        for (notice_id, attempts, envelope), res in zip(claimed, results, strict=True):
            try:
                if isinstance(res, BaseException):
                    raise res
                receipt = self._check(notice_id, envelope, res)
                if self._on_delivered is not None:
                    self._on_delivered(notice_id, envelope, bytes(res), receipt)
                delivered.append((notice_id, envelope, bytes(res), receipt))
            except Exception as exc:
                failed.append((notice_id, attempts, exc))
        marked = self._record(delivered, failed)
        return PushStats(
            attempted=len(claimed), delivered=len(marked), failed=len(failed),
            duplicates=sum(1 for d in marked if d[3].duplicate),
        )

    def _record(self, delivered: list[Delivered], failed: list[tuple[bytes, int, BaseException]]) -> list[Delivered]:
        """One transaction: delivered rows with their receipts and audit entries, failed rows
        back in the queue after their backoff (or rejected, for a permanent refusal). Returns
        the rows it marked delivered (not those another pusher marked first)."""
        at = self._clock()
        after: Callable[[], None] | None = None
        with self._writes, self._engine.begin() as conn:
            marked: list[Delivered] = []
            if delivered:
                n = conn.execute(_DELIVER, [{"b_nid": d[0], "b_receipt": d[2], "b_at": at} for d in delivered]).rowcount
                if n == len(delivered):
                    marked = delivered
                else:   # another pusher delivered some meanwhile (a lease ran out): audit only ours
                    ours = {bytes(r.notice_id): bytes(r.receipt) for r in conn.execute(
                        select(notice_outbox.c.notice_id, notice_outbox.c.receipt)
                        .where(notice_outbox.c.notice_id.in_([d[0] for d in delivered])))}
                    marked = [d for d in delivered if ours.get(d[0]) == d[2]]
            for notice_id, attempts, exc in failed:
                error = scrub(f"{type(exc).__name__}: {exc}")[:500]
                if self._permanent(exc):
                    values: dict[str, Any] = {"status": "rejected", "last_error": error}
                    log.warning("notice %s: rejected by the hub, not retried: %s", notice_id.hex(), error)
                else:
                    values = {"next_attempt_at": at + self.backoff(attempts + 1), "last_error": error}
                    log.info("notice %s: push attempt %d failed: %s", notice_id.hex(), attempts + 1, error)
                conn.execute(
                    update(notice_outbox)
                    .where(notice_outbox.c.notice_id == notice_id, notice_outbox.c.status == "pending")
                    .values(**values)
                )
            if marked and self._audit is not None:
                after = self._audit(conn, marked)   # entries last, in the same transaction
        if after is not None:
            after()
        return marked

    def _check(self, notice_id: bytes, envelope: bytes, receipt_bytes: bytes) -> notice_pb2.Receipt:
        if not isinstance(receipt_bytes, (bytes, bytearray)) or not receipt_bytes:
            raise VerificationError("receipt: got no bytes, want a signed receipt envelope", reason=Reason.RECEIPT_INVALID)
        receipt = self._verify(envelope, bytes(receipt_bytes))
        if receipt is None:
            raise VerificationError("receipt: got a receipt the verifier rejected", reason=Reason.RECEIPT_INVALID)
        check_receipt(receipt, notice_id, envelope)
        return receipt


def retry_rejected(engine: Engine, *, now: datetime) -> int:
    """Puts every rejected notice back in the queue (after the cause was fixed); returns how many."""
    with engine.begin() as conn:
        return conn.execute(
            update(notice_outbox)
            .where(notice_outbox.c.status == "rejected")
            .values(status="pending", next_attempt_at=now, attempts=0)
        ).rowcount


def _add(a: PushStats, b: PushStats) -> PushStats:
    return PushStats(
        a.attempted + b.attempted, a.delivered + b.delivered, a.failed + b.failed, a.duplicates + b.duplicates
    )


def outbox_status(engine: Engine, *, tz: tzinfo = CHINA_TZ, limit: int = 50) -> dict[str, Any]:
    """The outbox at a glance: counts by status, how many were delivered after their due
    date (the local date of delivery in the federation zone ``tz``), and the oldest pending
    notices with their last error (public columns only)."""
    o = notice_outbox
    with engine.connect() as conn:
        counts = dict(conn.execute(select(o.c.status, func.count()).group_by(o.c.status)).all())
        pending = conn.execute(
            select(o.c.notice_id, o.c.rule, o.c.hub, o.c.due_date, o.c.attempts, o.c.next_attempt_at, o.c.last_error)
            .where(o.c.status == "pending")
            .order_by(o.c.created_at)
            .limit(limit)
        ).all()
        late = sum(
            1
            for due, at in conn.execute(select(o.c.due_date, o.c.delivered_at).where(o.c.status == "delivered"))
            if local_date(utc(at), tz) > due  # type: ignore[arg-type]
        )
    return {
        "pending": counts.get("pending", 0),
        "delivered": counts.get("delivered", 0),
        "rejected": counts.get("rejected", 0),
        "delivered_after_due_date": late,
        "oldest_pending": [
            {
                "notice_id": bytes(r.notice_id).hex(),
                "rule": r.rule,
                "hub": r.hub,
                "due_date": r.due_date.isoformat(),
                "attempts": r.attempts,
                "next_attempt_at": utc(r.next_attempt_at).isoformat(),  # type: ignore[union-attr]
                "last_error": r.last_error,
            }
            for r in pending
        ],
    }
