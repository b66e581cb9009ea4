"""A provider's durable consent state (issue 18c): revocations learned from each hub, and the
use of each authorisation — one-off or periodic with a maximum frequency (动态复核).

**Revocations.** A hub pushes its signed, append-only revocation list with every request
(``RequestContext.revocations``, node/verification/consent.py). That is enough for
publication: a record can only be used by the hub that signed it, and every request of that
hub carries the hub's current list, so a provider always holds the newest list at the moment
it could be asked to honour a revoked record. No separate channel or fetch rpc is needed. What
the provider must not do is *forget*: :class:`RevocationState` stores the highest serial and
every revoked digest per hub (``consent_lists_seen``, ``consent_revoked_seen``), so an older
list — or none — is refused (``REVOCATIONS_STALE``) after a restart too, and a digest once
revoked stays revoked even if a later list omits it.

**Use.** :func:`check_use` refuses, per (hub, authorisation scan digest, one-off/periodic):

- a one-off authorisation used for a second case (``CONSENT_REUSED``): the record of each case
  names its case, but a hub could open another case under the same scan and sign a new record;
- more distinct members, over all uses here, than the record names (``CONSENT_REUSED``:
  another member set) — members are counted per OPRF key epoch, by a digest of the token;
- a periodic authorisation used again sooner than its ``min_interval_days`` after its last
  use here (``CONSENT_TOO_SOON``) — unless it is *the same review* again (below).

**The same review is the same use** (issue 18d). A hub that crashes after a department
answered but before it stored the answer runs the case again with a new request id, so the
replay cache (keyed by request id) does not recognise it. A request under the *same consent
record digest* for the *same reference month* as the last recorded use is that review again,
not a new one: it is not held to the interval and does not count as a use (neither ``uses``
nor ``last_used_at`` move, so the next period is still measured from the first answer). Why
this key and nothing wider or narrower: the record digest fixes the hub, the authorisation,
the case, the purpose and the member count (the record is built from the stored case alone,
node/verification/consent.py), and each periodic review (动态复核) is a new case with a new
record; the reference month is the one thing a request adds that the record does not fix,
and it is what a review is *about* — the same case asked about another month is a new look
at the household and is held to the interval. A re-run can only re-ask the question already
answered: the member limit still applies over all uses. One-off records are keyed by case
already (a re-run of the same case is allowed whatever the month; its record names it).

The Lookup runs it inside the transaction that stores the answer
(:func:`hedui.node.policy.commit`), where the row is created if missing and locked, so two
concurrent requests cannot both take one period and a refused or failed exchange uses
nothing. (``record=False`` is a read-only check, for tools.) A retry of the same request (its
cached answer) is not a new use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hedui.common.errors import HeduiError
from hedui.keys import dsse
from hedui.keys.signing import VerifyingKey
from hedui.node.errors import InvalidArgument, PermissionDenied, Reason
from hedui.node.store.raw import Prepared
from hedui.node.verification.consent_tables import consent_lists_seen, consent_revoked_seen, consent_uses
from hedui.v1 import common_pb2

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["RevocationState", "check_use", "member_entries", "verified_payload"]

_ENTRY = 4 + 32  # one member: 4-byte epoch, SHA-256 of its token
_VERIFIED_KEPT = 32  # verified revocation lists kept per provider (RevocationState._verified)


def _utc(t: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones.
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def verified_payload(env: common_pb2.Envelope, key: dict[str, VerifyingKey], payload_type: str, what: str) -> bytes:
    """The DSSE payload of ``env`` under ``key`` (the caller's keys), or ``CONSENT_FORGED``."""
    try:
        payload, _ = dsse.verify(env, key, payload_type=payload_type)
    except HeduiError as exc:
        raise PermissionDenied(f"{what}: {exc.message}", reason=Reason.CONSENT_FORGED) from None
    return payload


class RevocationState:
    """Each hub's revocation list as this provider learned it, in the node store.

    The store is the truth (several replicas may share it); each request reads the stored
    serial once. The revoked digests for a serial never change (only ever added to, with a
    higher serial), so they are cached per hub with the serial they were read at and read
    again only when the stored serial moved (bench/bench_consent.py)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[int, frozenset[bytes]]] = {}
        self._lock = threading.Lock()
        #: Lists already verified and checked, by (hub, the envelope's bytes, the keys it was
        #: verified under) -> (serial, revoked): the hub sends the same signed list with every
        #: request until its list changes (node/verification/consent.py), so each provider
        #: verifies its signature once, not once per Lookup (issue 16). Only what verified is
        #: kept; the stored serial is still read and compared on every request.
        self._verified: dict[tuple, tuple[int, frozenset[bytes]]] = {}

    def _remember(self, c: Connection, hub: str, serial: int) -> None:
        with self._lock:
            have = self._cache.get(hub)
            if have is not None and have[0] >= serial:
                return
        got = frozenset(bytes(r[0]) for r in c.execute(_REVOKED_OF, {"hub": hub}))
        with self._lock:
            have = self._cache.get(hub)
            if have is None or have[0] < serial:
                self._cache[hub] = (serial, got)

    def apply(self, hub: str, key: dict[str, VerifyingKey], env: common_pb2.Envelope, now: dt.datetime,
              conn: Connection | None = None) -> None:
        """Verifies and takes ``env`` (a hub's pushed list); refuses one older than seen.

        ``conn``: a read connection of the caller's (a Lookup's one snapshot, issue 16 item 3)
        to read the stored serial on; a newer list is still written in a transaction of its own."""
        if not env.payload and not env.signatures:
            with _reading(self.engine, conn) as c:
                seen = _serial(c, hub)
            if seen:
                raise PermissionDenied(f"context.revocations: got none, want serial >= {seen}", reason=Reason.REVOCATIONS_STALE)
            return
        serial, revoked = self._verify(hub, key, env)
        with _reading(self.engine, conn) as c:
            seen = _serial(c, hub)
            if serial < seen:
                raise PermissionDenied(f"context.revocations.serial: got {serial}, want >= {seen} (an older list)",
                                       reason=Reason.REVOCATIONS_STALE)
            if serial == seen:
                self._remember(c, hub, seen)
                return  # the list it already holds: the common case, no write
        with self.engine.begin() as c:
            # Re-read under the write: a concurrent request may have stored a newer list.
            seen = _serial(c, hub, lock=True)
            if serial < seen:
                raise PermissionDenied(f"context.revocations.serial: got {serial}, want >= {seen} (an older list)",
                                       reason=Reason.REVOCATIONS_STALE)
            if serial == seen:
                self._remember(c, hub, seen)
                return
            known = {bytes(r[0]) for r in c.execute(_REVOKED_OF, {"hub": hub})}
            new = sorted(revoked - known)
            if new:
                c.execute(consent_revoked_seen.insert(), [{"hub": hub, "consent_digest": d, "learned_at": now} for d in new])
            if seen:
                c.execute(update(consent_lists_seen).where(consent_lists_seen.c.hub == hub).values(serial=serial, received_at=now))
            else:
                c.execute(consent_lists_seen.insert().values(hub=hub, serial=serial, received_at=now))
            self._remember(c, hub, serial)

    def _verify(self, hub: str, key: dict[str, VerifyingKey], env: common_pb2.Envelope) -> tuple[int, frozenset[bytes]]:
        """The serial and revoked digests of ``env``, a list signed by ``hub`` under ``key``;
        refuses a forged or malformed one. A list verified before under the same keys is
        not verified again (see ``_verified``)."""
        ck = (hub, env.SerializeToString(deterministic=True), tuple(sorted((k, v.owner, v.raw) for k, v in key.items())))
        with self._lock:
            got = self._verified.get(ck)
        if got is not None:
            return got
        payload = verified_payload(env, key, dsse.REVOCATIONS, "context.revocations")
        try:
            lst = common_pb2.ConsentRevocations.FromString(payload)
        except Exception:
            raise InvalidArgument("context.revocations: signed payload is not a ConsentRevocations", reason=Reason.CONSENT_INVALID) from None
        if lst.hub != hub:
            raise PermissionDenied(f"context.revocations.hub: got {lst.hub[:32]!r}, want {hub!r}", reason=Reason.CONSENT_FORGED)
        revoked = frozenset(bytes(d) for d in lst.revoked)
        if lst.serial != len(lst.revoked) or len(revoked) != len(lst.revoked) or any(len(d) != 32 for d in revoked):
            raise InvalidArgument(f"context.revocations.serial: got {lst.serial}, want {len(lst.revoked)} distinct 32-byte digests",
                                  reason=Reason.CONSENT_INVALID)
        got = (int(lst.serial), revoked)
        with self._lock:
            if len(self._verified) >= _VERIFIED_KEPT:
                self._verified.clear()   # lists change rarely: the current few are all it needs
            self._verified[ck] = got
        return got

    def is_revoked(self, hub: str, digest: bytes) -> bool:
        """Against what :meth:`apply` last read for ``hub`` (each request applies first)."""
        with self._lock:
            have = self._cache.get(hub)
        if have is not None:
            return digest in have[1]
        with self.engine.connect() as c:
            return c.execute(select(consent_revoked_seen.c.hub).where(and_(
                consent_revoked_seen.c.hub == hub, consent_revoked_seen.c.consent_digest == digest))).first() is not None

    def serial(self, hub: str) -> int:
        with self.engine.connect() as c:
            return _serial(c, hub)


# Statements built once (per-request construction was most of the cost, bench/bench_consent.py).
_SERIAL = select(consent_lists_seen.c.serial).where(consent_lists_seen.c.hub == bindparam("hub"))
_SERIAL_LOCKED = _SERIAL.with_for_update()
_REVOKED_OF = select(consent_revoked_seen.c.consent_digest).where(consent_revoked_seen.c.hub == bindparam("hub"))
_USE_KEY = and_(consent_uses.c.hub == bindparam("k_hub"), consent_uses.c.scan_digest == bindparam("k_scan"),
                consent_uses.c.use == bindparam("k_use"))
_USE_ROW = select(consent_uses).where(_USE_KEY)
# The two writes of every Lookup run on the driver's cursor in the exchange's transaction
# (node/store/raw.py, issue 16 item 3: the Core execution path was most of their cost).
_USE_UPDATE = Prepared(update(consent_uses).where(_USE_KEY).values(
    case_ref=bindparam("case_ref"), record_digest=bindparam("record_digest"), last_used_at=bindparam("last_used_at"),
    uses=consent_uses.c.uses + bindparam("add"), members=bindparam("members"), first_used_at=bindparam("first_used_at"),
    reference_month=bindparam("reference_month")))
# Creates the row if missing and returns it, locked on PostgreSQL (the no-op ``DO UPDATE``
# takes the row lock that ``SELECT … FOR UPDATE`` would): one round trip instead of two.
_PK = [consent_uses.c.hub, consent_uses.c.scan_digest, consent_uses.c.use]
_USE_COLUMNS = [c.key for c in consent_uses.c]
_TAKE_ROW = {
    "postgresql": Prepared(pg_insert(consent_uses).on_conflict_do_update(index_elements=_PK, set_={"uses": consent_uses.c.uses})
                           .returning(*consent_uses.c), column_keys=_USE_COLUMNS),
    "sqlite": Prepared(sqlite_insert(consent_uses).on_conflict_do_update(index_elements=_PK, set_={"uses": consent_uses.c.uses})
                       .returning(*consent_uses.c), column_keys=_USE_COLUMNS),
}


# The first use of an authorisation here (every case's Lookup: a one-off authorisation is
# used once per department), written whole in one statement; a conflict (the row exists, or a
# concurrent request is writing it: PostgreSQL waits for that one's outcome) inserts nothing,
# and the use then takes the row as above (issue 16: one statement instead of two).
_INSERT_FIRST = {
    "postgresql": Prepared(pg_insert(consent_uses).on_conflict_do_nothing(index_elements=_PK), column_keys=_USE_COLUMNS),
    "sqlite": Prepared(sqlite_insert(consent_uses).on_conflict_do_nothing(index_elements=_PK), column_keys=_USE_COLUMNS),
}


# The consent-list serial, read by every Lookup on the driver's cursor (issue 16 item 3).
_SERIAL_RAW = Prepared(_SERIAL)


class _UseRow(NamedTuple):
    """A consent_uses row as ``_TAKE_ROW`` returns it (its columns in table order)."""

    hub: str
    scan_digest: bytes
    use: int
    case_ref: str
    record_digest: bytes
    first_used_at: dt.datetime
    last_used_at: dt.datetime
    uses: int
    members: bytes
    reference_month: str | None


assert list(_UseRow._fields) == [c.key for c in consent_uses.c]


@contextmanager
def _reading(engine: Engine, conn: Connection | None) -> Iterator[Connection]:
    if conn is not None:
        yield conn
        return
    with engine.connect() as c:
        yield c


def _serial(c: Connection, hub: str, *, lock: bool = False) -> int:
    if lock and c.dialect.name == "postgresql":
        v = c.execute(_SERIAL_LOCKED, {"hub": hub}).scalar_one_or_none()
    else:
        rows = _SERIAL_RAW.run(c, {"hub": hub})
        v = rows[0][0] if rows else None
    return int(v) if v is not None else 0


def member_entries(epoch: int, tokens: Sequence[bytes]) -> set[bytes]:
    """The members of a request as stored: epoch (4 bytes) + SHA-256 of each token."""
    e = int(epoch).to_bytes(4, "big")
    return {e + hashlib.sha256(bytes(t)).digest() for t in tokens}


def _members(blob: bytes) -> set[bytes]:
    return {blob[i:i + _ENTRY] for i in range(0, len(blob), _ENTRY)}


def _most_per_epoch(members: set[bytes]) -> int:
    counts: dict[bytes, int] = {}
    for m in members:
        counts[m[:4]] = counts.get(m[:4], 0) + 1
    return max(counts.values(), default=0)


def same_review(row: Any, record_digest: bytes, reference_month: str) -> bool:
    """The request repeats the last recorded use: same record, same reference month (see the
    module docstring for why this key). Rows stored before issue 18d have no month: never."""
    return (row is not None and bool(row.uses) and row.reference_month is not None
            and bytes(row.record_digest) == record_digest and row.reference_month == reference_month)


def _decide(row: Any, rec: common_pb2.ConsentRecord, case_ref: str, members: set[bytes], now: dt.datetime,
            *, again: bool = False) -> set[bytes]:
    """Refuses the use, or returns the members recorded after it. ``again``: the same review
    as the last use (:func:`same_review`), not held to the interval."""
    if row is None or not row.uses:
        have: set[bytes] = set()
    else:
        have = _members(bytes(row.members))
        if rec.use == common_pb2.CONSENT_USE_ONE_OFF and row.case_ref != case_ref:
            raise PermissionDenied(f"consent: this one-off authorisation was already used here for case {row.case_ref}, "
                                   "want a new authorisation for another case", reason=Reason.CONSENT_REUSED)
        if rec.use == common_pb2.CONSENT_USE_PERIODIC and rec.min_interval_days and not again:
            nxt = _utc(row.last_used_at) + dt.timedelta(days=int(rec.min_interval_days))
            if now < nxt:
                raise PermissionDenied(f"consent: periodic authorisation last used here {_utc(row.last_used_at).isoformat()}, "
                                       f"at most every {rec.min_interval_days} days, want no earlier than {nxt.isoformat()}",
                                       reason=Reason.CONSENT_TOO_SOON)
    after = have | members
    if _most_per_epoch(after) > rec.max_members:
        raise PermissionDenied(f"consent: {_most_per_epoch(after)} distinct members asked about under this authorisation here, "
                               f"want at most {rec.max_members} (another member set)", reason=Reason.CONSENT_REUSED)
    return after


def _key(hub: str, rec: common_pb2.ConsentRecord) -> dict[str, Any]:
    return {"k_hub": hub, "k_scan": bytes(rec.scan_digest), "k_use": int(rec.use)}


def check_use(c: Connection, hub: str, rec: common_pb2.ConsentRecord, record_digest: bytes, case_ref: str, epoch: int,
              tokens: Sequence[bytes], now: dt.datetime, *, reference_month: str, record: bool) -> None:
    """Refuses a use of ``rec`` that its kind does not allow (see the module docstring).
    With ``record`` (inside the answer's transaction) the use is written, the row created
    if missing and locked in the same statement (``INSERT … ON CONFLICT DO UPDATE …
    RETURNING``) so concurrent requests take turns. ``reference_month``: the request's
    (``YYYY-MM``); with the record digest it names the review (:func:`same_review`)."""
    members = member_entries(epoch, tokens)
    key = _key(hub, rec)
    if not record:
        row = c.execute(_USE_ROW, key).first()
        _decide(row, rec, case_ref, members, now, again=same_review(row, record_digest, reference_month))
        return
    # A first use (no row: nothing used before) needs only the member limit, and is written
    # whole, as the take-row + update below would leave it.
    if _most_per_epoch(members) <= rec.max_members and _INSERT_FIRST[c.dialect.name].rowcount(c, {
            "hub": hub, "scan_digest": bytes(rec.scan_digest), "use": int(rec.use), "case_ref": case_ref,
            "record_digest": record_digest, "first_used_at": now, "last_used_at": now, "uses": 1,
            "members": b"".join(sorted(members)), "reference_month": reference_month}) == 1:
        return
    rows = _TAKE_ROW[c.dialect.name].run(c, {
        "hub": hub, "scan_digest": bytes(rec.scan_digest), "use": int(rec.use), "case_ref": case_ref,
        "record_digest": record_digest, "first_used_at": now, "last_used_at": now, "uses": 0, "members": b"",
        "reference_month": reference_month})
    if len(rows) != 1:
        raise RuntimeError(f"consent_uses: the upsert returned {len(rows)} rows, want 1")
    used = _UseRow(*rows[0])
    again = same_review(used, record_digest, reference_month)
    after = _decide(used, rec, case_ref, members, now, again=again)
    if again:  # the same use: only members it may add (still within the limit) are written
        _USE_UPDATE.run(c, {**key, "case_ref": used.case_ref, "record_digest": record_digest, "last_used_at": used.last_used_at,
                            "members": b"".join(sorted(after)), "first_used_at": used.first_used_at, "add": 0,
                            "reference_month": reference_month})
        return
    _USE_UPDATE.run(c, {**key, "case_ref": case_ref, "record_digest": record_digest, "last_used_at": now,
                        "members": b"".join(sorted(after)), "first_used_at": now if not used.uses else used.first_used_at,
                        "add": 1, "reference_month": reference_month})
