"""Provider-side access policy from the signed directory, enforced before any work.

Order of checks (each refusal has a stable reason): the method is allowed for this caller
(``METHOD_NOT_ALLOWED``), the purpose (``PURPOSE_NOT_ALLOWED``), every field is in the
catalogue (``UNKNOWN_FIELD``) and allowed (``FIELD_NOT_ALLOWED``), consent is present
(``CONSENT_MISSING``), the batch fits (``BATCH_TOO_LARGE``), the request id is fresh
(``REPLAYED_REQUEST``) and the quota holds (``QUOTA_EXCEEDED``). Request ids are stored with
the request digest and the answer, so a retry of the *same* request (same id, same digest)
gets the same signed answer back instead of a refusal, and does not count twice.

Retention (issue 18): an entry, with the signed answer it caches, is kept for the replay
window (``[provider] replay_window_hours``, default 24 h, at least 1 h) and then deleted
(in the transaction that stores the next answer; :func:`prune_replay_cache`). The window
must outlast any retry: a hub retries one request within its call (at most 3 attempts of
10 s, ``node/verification/cases.py``) and uses a fresh request id for every new run, so a
day leaves a wide margin while no longer keeping every answer forever. An id reused after
the window is a new request (charged and audited again); only an authenticated member can
send it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError

from hedui.adapters import idnum
from hedui.keys.directory import MAX_BATCH as DIRECTORY_MAX_BATCH
from hedui.keys.directory import PURPOSE_NAMES
from hedui.node.errors import InvalidArgument, PermissionDenied, Reason, ResourceExhausted
from hedui.node.store.db import dialect_insert
from hedui.node.store.raw import Prepared
from hedui.node.store.tables import quota_counters, seen_requests
from hedui.v1 import common_pb2, directory_pb2

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["Grant", "charge", "check", "check_method", "commit", "release", "DEFAULT_MAX_BATCH", "MAX_BATCH", "prune_replay_cache", "replay_window"]

DEFAULT_MAX_BATCH = DIRECTORY_MAX_BATCH
#: The one batch limit, where the request enters (issue 13 item 3): no directory rule can
#: allow more. Every layer behind it is sized for it — the ``query.received`` entry of a
#: batch this large records a digest of the tokens and their count, not the tokens
#: (node/verification/service.py), so it fits the audit log's 64 KiB entry limit — and
#: tests/test_failsafe_batch.py sends exactly this many tokens end to end.
MAX_BATCH = DIRECTORY_MAX_BATCH
DEFAULT_REPLAY_WINDOW_HOURS = 24
_ID_MIN, _ID_MAX = 16, 32

# The hot path's statements, built once (issue 16 item 3): building a Core expression per call
# (column comparisons, bind parameters, its cache key) cost ~5x executing the cached compiled
# form. Values travel as parameters; the compiled SQL comes from the engine's cache.
_Q = quota_counters.c
_S = seen_requests.c
#: One ``UPDATE … RETURNING`` per quota window, or one for both (the common case): the new
#: counts come back with the update.
#: They run on the driver's cursor (node/store/raw.py, issue 16 item 3): the Core execution
#: path of the exchange's few statements was most of a provider's SQLAlchemy time.
_BUMP = Prepared(update(quota_counters)
                 .where(and_(_Q.caller == bindparam("k_caller"), _Q.method == bindparam("k_method"),
                             _Q.window == bindparam("k_window"), _Q.window_start == bindparam("k_start")))
                 .values(count=_Q.count + 1).returning(_Q.count))
_BUMP_BOTH = Prepared(update(quota_counters)
                      .where(and_(_Q.caller == bindparam("k_caller"), _Q.method == bindparam("k_method"),
                                  or_(and_(_Q.window == "m", _Q.window_start == bindparam("k_m")),
                                      and_(_Q.window == "d", _Q.window_start == bindparam("k_d")))))
                      .values(count=_Q.count + 1).returning(_Q.window, _Q.count))
_UNBUMP = (update(quota_counters)
           .where(and_(_Q.caller == bindparam("k_caller"), _Q.method == bindparam("k_method"),
                       _Q.window == bindparam("k_window"), _Q.window_start == bindparam("k_start"), _Q.count > 0))
           .values(count=_Q.count - 1))
_SEEN = Prepared(seen_requests.insert(),
                 column_keys=["request_id", "caller", "method", "seen_at", "request_digest", "answer"])
#: The replay-cache read of every Lookup, on the driver's cursor of the Lookup's one read
#: snapshot (issue 16 item 3: it took a pool check-out and Core's execution path of its own).
_SEEN_ROW = Prepared(select(_S.caller, _S.method, _S.request_digest, _S.answer, _S.seen_at).where(_S.request_id == bindparam("rid")))
_FORGET = seen_requests.delete().where(_S.request_id == bindparam("rid"))
_FORGET_MINE = seen_requests.delete().where(and_(_S.request_id == bindparam("rid"), _S.caller == bindparam("k_caller"),
                                                 _S.method == bindparam("k_method")))
_PRUNE = Prepared(seen_requests.delete().where(_S.seen_at < bindparam("before")))


class _SeenRow(NamedTuple):
    caller: str
    method: str
    request_digest: bytes | None
    answer: bytes | None
    seen_at: datetime


@dataclass(frozen=True)
class Grant:
    """What the policy allowed: the matching rules, and a cached answer for a retry."""

    rules: tuple[directory_pb2.AccessRule, ...]
    cached_answer: bytes | None = None


def validate_context(ctx: common_pb2.RequestContext, *, need_consent: bool) -> None:
    """Shape checks, messages as ``Field: got X, want Y`` (Trillian validate.go style)."""
    if ctx.purpose == common_pb2.PURPOSE_UNSPECIFIED or ctx.purpose not in PURPOSE_NAMES:
        raise InvalidArgument(f"context.purpose: got {int(ctx.purpose)}, want one of {sorted(PURPOSE_NAMES.values())}", reason=Reason.BAD_PURPOSE)
    if not (_ID_MIN <= len(ctx.request_id) <= _ID_MAX):
        raise InvalidArgument(f"context.request_id: got {len(ctx.request_id)} bytes, want {_ID_MIN}..{_ID_MAX}", reason=Reason.BAD_REQUEST_ID)
    if not ctx.case_ref or len(ctx.case_ref) > 64 or not ctx.case_ref.isprintable():
        raise InvalidArgument(f"context.case_ref: got {len(ctx.case_ref)} characters, want 1..64 printable", reason=Reason.BAD_CASE_REF)
    if idnum.contains(ctx.case_ref) or idnum.contains(ctx.operator):
        # An identity number smuggled into a free-text field: refuse, and never echo it.
        raise InvalidArgument("context: got something shaped like an identity number, want pseudonymous references only", reason=Reason.IDENTITY_IN_REQUEST)
    if len(ctx.operator) > 64:
        raise InvalidArgument(f"context.operator: got {len(ctx.operator)} characters, want at most 64")
    if need_consent:
        if not ctx.consent_digest:
            raise PermissionDenied("context.consent_digest: got none, want the SHA-256 of the signed authorisation", reason=Reason.CONSENT_MISSING)
        if len(ctx.consent_digest) != 32:
            raise InvalidArgument(f"context.consent_digest: got {len(ctx.consent_digest)} bytes, want 32", reason=Reason.BAD_CONSENT_DIGEST)


def check(
    rt: Runtime,
    caller: str,
    method: str,
    ctx: common_pb2.RequestContext,
    *,
    fields: list[str] = (),  # type: ignore[assignment]
    batch: int = 0,
    need_consent: bool = True,
    request_digest: bytes = b"",
    replay_guard: bool = True,
    charge: bool = True,
    conn: Any = None,
) -> Grant:
    """Checks everything a request can be refused for before any work.

    ``conn``: a read connection the caller holds (a Lookup's one snapshot of the store,
    node/verification/index_read.py ``snapshot``) on which the replay cache is read, instead
    of a connection of its own. The replay guard's last word is the request id's primary key
    at :func:`commit` either way; this read only finds a retry's cached answer early.

    With ``replay_guard`` the request id is looked up (a retry of the same request returns
    the cached answer) and the quota is charged later, in the same transaction that stores
    the answer (:func:`commit`). Without it (pseudonym evaluation, which discloses nothing
    and needs no idempotency) the quota is charged here — or, with ``charge=False``, by
    :func:`charge` together with the call's audit entry once the work is done (one commit).
    """
    validate_context(ctx, need_consent=need_consent)
    rules = rt.directory.rules(caller, rt.member, method)
    if not rules:
        raise PermissionDenied(f"policy: {caller} may not call {method} at {rt.member}", reason=Reason.METHOD_NOT_ALLOWED)
    rules = [r for r in rules if ctx.purpose in r.purposes]
    if not rules:
        raise PermissionDenied(
            f"policy: purpose {PURPOSE_NAMES[ctx.purpose]} not allowed for {caller} on {method}", reason=Reason.PURPOSE_NOT_ALLOWED
        )
    if fields:
        catalogue = {f.name for f in rt.directory.member(rt.member).fields}
        allowed = set().union(*(set(r.fields) for r in rules))
        for f in fields:
            if f not in catalogue:
                raise InvalidArgument(f"queries.field: got {f[:64]!r}, want one of {sorted(catalogue)}", reason=Reason.UNKNOWN_FIELD)
            if f not in allowed:
                raise PermissionDenied(f"policy: field {f} not allowed for {caller} with purpose {PURPOSE_NAMES[ctx.purpose]}", reason=Reason.FIELD_NOT_ALLOWED)
    max_batch = min(MAX_BATCH, max((r.max_batch or DEFAULT_MAX_BATCH) for r in rules))
    if batch > max_batch:
        raise ResourceExhausted(f"batch: got {batch} items, want at most {max_batch}", reason=Reason.BATCH_TOO_LARGE)
    grant = Grant(tuple(rules))
    if replay_guard:
        cached = _replay(rt, caller, method, ctx, request_digest, conn=conn)
        if cached is not None:
            return Grant(tuple(rules), cached_answer=cached)
        return grant
    if not charge:
        _refuse_if_known_over(rt, caller, method, grant, rt.clock.now().timestamp())
        return grant
    with rt.engine.begin() as c:
        _charge_quota(c, caller, method, grant, rt.clock.now().timestamp())
    return grant


def charge(rt: Runtime, caller: str, method: str, grant: Grant, audit: Sequence[tuple[str, dict]] = ()) -> None:
    """Charges the quota of a call checked with ``charge=False`` and appends its ``audit``
    entries, in one group-committed transaction (issue 16): nothing is charged or logged
    unless both are, and the caller answers only after the commit. A quota overrun raises
    (``QUOTA_EXCEEDED``) and leaves nothing behind."""
    at = rt.clock.now().timestamp()
    prepared = rt.audit.prepare(list(audit)) if audit else []

    def work(c) -> list[int]:
        _charge_quota(c, caller, method, grant, at)
        return rt.audit.write_in(c, prepared) if prepared else []

    seqs = _transact(rt, work)
    if seqs:
        rt.audit.committed(seqs)


def _transact(rt: Runtime, work):
    """``work(conn)`` in one transaction: the node's group committer when it has an audit
    log (a serving node always does), else a transaction of its own."""
    audit = getattr(rt, "audit", None)
    if audit is not None:
        return audit.transact(work)
    with rt.engine.begin() as c:
        return work(c)


#: engine -> (caller, method) -> the quota windows (window, start) this process saw overrun:
#: a call checked with ``charge=False`` in such a window is refused before its work, as it
#: was when the quota was charged first. Only a hint: the charge in the commit decides.
_over: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _refuse_if_known_over(rt: Runtime, caller: str, method: str, grant: Grant, now: float) -> None:
    seen = _over.get(rt.engine, {}).get((caller, method))
    if not seen:
        return
    per_minute, per_day = _limits(grant.rules)
    for window, start, limit in (("m", int(now // 60), per_minute), ("d", int(now // 86400), per_day)):
        if limit and (window, start) in seen:
            span = "minute" if window == "m" else "day"
            raise ResourceExhausted(f"quota: {caller} is over its limit of {limit} {method} calls this {span}", reason=Reason.QUOTA_EXCEEDED)


def check_method(rt: Runtime, caller: str, method: str) -> tuple[directory_pb2.AccessRule, ...]:
    """For methods without a :class:`RequestContext` (``NoticeService/Push``): the caller
    must have a directory rule for ``method`` whose provider is this node or ``"*"``."""
    rules = rt.directory.rules(caller, rt.member, method)
    if not rules:
        raise PermissionDenied(f"policy: {caller} may not call {method} at {rt.member}", reason=Reason.METHOD_NOT_ALLOWED)
    return tuple(rules)


def _limits(rules) -> tuple[int, int]:
    # The most generous matching rule wins; 0 means unlimited.
    per_minute = max(r.per_minute for r in rules) if all(r.per_minute for r in rules) else 0
    per_day = max(r.per_day for r in rules) if all(r.per_day for r in rules) else 0
    return per_minute, per_day


def _new_counter(c, caller: str, method: str, window: str, start: int) -> int:
    # The window's first call. Node replicas sharing one PostgreSQL store (issue 16) may both
    # get here for the same window: an upsert, so the second adds to the first's row instead
    # of failing on its key (which commit() would misread as a replayed request id).
    ins = dialect_insert(c)(quota_counters).values(
        caller=caller, method=method, window=window, window_start=start, count=1)
    ins = ins.on_conflict_do_update(index_elements=["caller", "method", "window", "window_start"],
                                    set_={"count": quota_counters.c.count + 1})
    return int(c.execute(ins.returning(quota_counters.c.count)).scalar_one())


def _charge_quota(c, caller: str, method: str, grant: Grant, now: float) -> None:
    per_minute, per_day = _limits(grant.rules)
    windows = [(w, s, n) for w, s, n in (("m", int(now // 60), per_minute), ("d", int(now // 86400), per_day)) if n]
    if not windows:
        return
    if len(windows) == 2:
        # Both windows in one UPDATE … RETURNING (a window's first call inserts its row).
        counts = dict(_BUMP_BOTH.run(c, {"k_caller": caller, "k_method": method,
                                             "k_m": windows[0][1], "k_d": windows[1][1]}))
        for window, start, _ in windows:
            if window not in counts:
                counts[window] = _new_counter(c, caller, method, window, start)
    else:
        counts = {w: _bump(c, caller, method, w, s) for w, s, _ in windows}
    for window, start, limit in windows:
        count = int(counts[window])
        if count > limit:
            over = _over.setdefault(c.engine, {}).setdefault((caller, method), set())
            if len(over) > 64:   # old windows: the set only needs the current ones
                over.clear()
            over.add((window, start))
            span = "minute" if window == "m" else "day"
            raise ResourceExhausted(f"quota: {caller} made {count - 1} {method} calls this {span}, limit {limit}", reason=Reason.QUOTA_EXCEEDED)


def commit(rt: Runtime, caller: str, method: str, ctx, grant: Grant, request_digest: bytes, answer: bytes,
           audit: Sequence[tuple[str, dict]] = (), also: Callable[[Any], None] | None = None) -> float:
    """One transaction: charge the quota, record the request id with the digest and the
    signed answer, and append the exchange's ``audit`` entries (issue 16: one durable commit
    per exchange; the entries are validated before it opens). A quota overrun rolls it all
    back (the answer is never sent); a request id that another, concurrent request took first
    is a replay. ``also(connection)`` runs in the same transaction (the consent use of a
    Lookup, node/verification/consent_state.py); a refusal it raises rolls everything back.
    Returns the instant charged (a POSIX timestamp) for :func:`release`."""
    now = rt.clock.now()
    at = now.timestamp()
    prepared = rt.audit.prepare(list(audit)) if audit else []
    window = replay_window(rt)
    prune = _prune_due(rt.engine, at)
    row = {"request_id": bytes(ctx.request_id), "caller": caller, "method": method,
           "seen_at": now, "request_digest": request_digest or None, "answer": answer}

    def work(c) -> list[int]:
        _charge_quota(c, caller, method, grant, at)
        if prune:
            prune_replay_cache(c, now, window)
        _SEEN.run(c, row)
        if also is not None:
            also(c)
        # Last: the audit head row it locks serialises the log's writers until commit.
        return rt.audit.write_in(c, prepared) if prepared else []

    try:
        # Group-committed with concurrent exchanges (node/store/group.py): durable on return.
        seqs = _transact(rt, work)
    except IntegrityError:
        raise PermissionDenied(
            f"context.request_id: {bytes(ctx.request_id).hex()[:32]} was already used, want a fresh id", reason=Reason.REPLAYED_REQUEST
        ) from None
    if seqs:
        rt.audit.committed(seqs)
    return at


def release(rt: Runtime, caller: str, method: str, ctx, grant: Grant, at: float) -> None:
    """Undoes :func:`commit` for a response that was never delivered (a streamed filter whose
    peer went away): the quota charged at ``at`` is given back and the request id freed, so
    the caller's retry with the same id is not a replay and costs it only once."""
    per_minute, per_day = _limits(grant.rules)
    with rt.engine.begin() as c:
        for window, start, limit in (("m", int(at // 60), per_minute), ("d", int(at // 86400), per_day)):
            if limit:
                c.execute(_UNBUMP, {"k_caller": caller, "k_method": method, "k_window": window, "k_start": start})
        c.execute(_FORGET_MINE, {"rid": bytes(ctx.request_id), "k_caller": caller, "k_method": method})


def replay_window(rt: Runtime) -> timedelta:
    p = rt.config.provider
    return timedelta(hours=p.replay_window_hours if p is not None else DEFAULT_REPLAY_WINDOW_HOURS)


def _utc(t: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones.
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


#: How often (node clock seconds) a commit also prunes the replay cache: pruning is a scan of
#: the ``seen_at`` index, and an entry past the window is treated as gone when looked up
#: anyway (``_replay``), so once a minute keeps the table as small as once per answer did.
PRUNE_EVERY = 60.0
_last_prune: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # engine -> instant


def _prune_due(engine, at: float) -> bool:
    last = _last_prune.get(engine)
    if last is not None and 0 <= at - last < PRUNE_EVERY:
        return False
    _last_prune[engine] = at
    return True


def prune_replay_cache(c, now: datetime, window: timedelta) -> int:
    """Deletes replay-cache entries (and their cached answers) older than ``window``."""
    return int(_PRUNE.rowcount(c, {"before": _utc(now) - window}) or 0)


def _replay(rt: Runtime, caller: str, method: str, ctx, request_digest: bytes, *, conn: Any = None) -> bytes | None:
    rid = bytes(ctx.request_id)
    # A read (no write transaction, no commit): the common case is a fresh id. On the caller's
    # connection when it holds one, else on one of its own.
    if conn is not None:
        rows = _SEEN_ROW.run(conn, {"rid": rid})
    else:
        with rt.engine.connect() as c:
            rows = _SEEN_ROW.run(c, {"rid": rid})
    row = _SeenRow(*rows[0]) if rows else None
    if row is not None and _utc(row.seen_at) < _utc(rt.clock.now()) - replay_window(rt):
        # Expired but not yet pruned: it is gone as far as anyone can tell.
        with rt.engine.begin() as c:
            c.execute(_FORGET, {"rid": rid})
        row = None
    if row is None:
        return None
    if row.caller == caller and row.method == method and request_digest and row.request_digest == request_digest and row.answer:
        return bytes(row.answer)
    raise PermissionDenied(
        f"context.request_id: {bytes(ctx.request_id).hex()[:32]} was already used, want a fresh id", reason=Reason.REPLAYED_REQUEST
    )


def _bump(c, caller: str, method: str, window: str, start: int) -> int:
    # One statement per window in the common case: the new count comes back with the update.
    rows = _BUMP.run(c, {"k_caller": caller, "k_method": method, "k_window": window, "k_start": start})
    if not rows:
        return _new_counter(c, caller, method, window, start)
    return int(rows[0][0])
