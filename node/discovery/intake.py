"""The hub's intake of a batch of verified notices in one transaction (issue 16, item 2):
the same effect as :meth:`Hub.accept_notice` once per notice, in request order, with a few
statements per *batch* instead of six to eight per notice.

What it writes, for the notices that pass and are new (in this order, all on the caller's
connection, so with the caller's audit entries they commit together or not at all):

1. the inbox rows, ``INSERT … ON CONFLICT (notice_id) DO NOTHING RETURNING`` (a row that a
   concurrent batch inserted first is then a duplicate, answered as such);
2. the leads: one ``SELECT`` by person key; people without a lead get one (identity sealed
   to the hub key), people with one have it reopened and touched (one ``UPDATE``);
3. one lead event per notice;
4. a referral for each lead without an open or escalated one (one ``SELECT``, one insert);
   two notices about one person in a batch make one lead and one referral, as they would
   one after the other;
5. the signed receipt and lead id on each inbox row.

Refusals (a malformed public field, an invalid identity, a notice id reused with other
contents) are decided before step 1, per notice: the answer for that notice is the error,
the others go on. A replay (same id, same payload digest) gets a receipt marked duplicate
with the first delivery's time and changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, select, update

from hedui.adapters.idnum import normalize as normalise_identity
from hedui.keys import sealing
from hedui.node.discovery.calendar import local_date
from hedui.node.discovery.notice import NOTICE_PAYLOAD_TYPE, make_receipt, notice_fields
from hedui.node.discovery.tables import lead_events, leads, notice_inbox, referrals, utc
from hedui.node.errors import HeduiError, InvalidArgument, Reason
from hedui.node.store.db import dialect_insert
from hedui.v1 import common_pb2, notice_pb2

if TYPE_CHECKING:
    from hedui.node.discovery.hub import Acceptance, Hub

__all__ = ["Item", "accept_notices"]

Item = tuple[notice_pb2.Notice, notice_pb2.SealedDetails, bytes]
"""``(notice, opened sealed part, serialised envelope as received)``."""

# Statements built once (values as parameters), reused for every batch.
_INBOX_RECEIPT = (
    update(notice_inbox)
    .where(notice_inbox.c.notice_id == bindparam("b_nid"))
    .values(lead_id=bindparam("b_lead"), receipt=bindparam("b_receipt"))
)
_INBOX_SEEN = select(
    notice_inbox.c.notice_id, notice_inbox.c.notice_digest, notice_inbox.c.received_at, notice_inbox.c.lead_id
).where(notice_inbox.c.notice_id.in_(bindparam("ids", expanding=True)))
_LEADS_BY_KEY = select(leads.c.lead_id, leads.c.person_key).where(leads.c.person_key.in_(bindparam("keys", expanding=True)))
_ACTIVE = select(referrals.c.lead_id).where(
    referrals.c.lead_id.in_(bindparam("ids", expanding=True)), referrals.c.status.in_(("open", "escalated"))
)


@dataclass(slots=True)
class _New:
    """A notice that passed its checks and is not a replay, on its way into the store."""

    index: int
    notice: notice_pb2.Notice
    envelope: bytes
    digest: bytes
    meta: dict[str, Any]
    identity: str
    pkey: str
    lead_id: int = 0
    new_lead: bool = False
    referral_id: int | None = None


def accept_notices(
    hub: Hub,
    conn: Connection,
    items: Sequence[Item],
    *,
    sign_receipt: Callable[[notice_pb2.Receipt], bytes],
    now: datetime | None = None,
) -> list[Acceptance | HeduiError]:
    """One result per item, in order: the :class:`Acceptance` with its signed receipt, or
    the refusal of that item (nothing of it written)."""
    from hedui.node.discovery.hub import Acceptance

    at = now or hub.clock.now()
    out: list[Acceptance | HeduiError | None] = [None] * len(items)
    firsts: dict[bytes, tuple[int, bytes]] = {}   # notice id -> (index, digest) of its first passing item
    later: list[tuple[int, bytes, bytes]] = []    # (index, notice id, digest) repeating an earlier item
    fresh: list[_New] = []
    for i, (notice, opened, envelope) in enumerate(items):
        try:
            env = common_pb2.Envelope.FromString(envelope)
            if env.payload_type != NOTICE_PAYLOAD_TYPE:
                raise InvalidArgument(f"envelope.payload_type: got {env.payload_type!r}, want {NOTICE_PAYLOAD_TYPE!r}")
            if notice_pb2.Notice.FromString(env.payload) != notice:
                raise InvalidArgument("notice: got a message that differs from the envelope payload, want its parse")
            digest = hashlib.sha256(env.payload).digest()
            meta = notice_fields(notice, hub.hub)
            identity = normalise_identity(opened.identity)
        except HeduiError as err:
            out[i] = err
            continue
        nid = bytes(notice.notice_id)
        if nid in firsts:
            later.append((i, nid, digest))
            continue
        firsts[nid] = (i, digest)
        fresh.append(_New(i, notice, bytes(envelope), digest, meta, identity, hub.person_key(identity)))

    # Replays of notices stored before: answered from the stored row, nothing written.
    seen = {bytes(r.notice_id): r for r in conn.execute(_INBOX_SEEN, {"ids": list(firsts)})} if firsts else {}

    received: dict[bytes, datetime] = {}   # notice id -> its first delivery's time

    def replay(i: int, nid: bytes, digest: bytes, stored_digest: bytes, received_at: datetime, lead_id: int | None) -> None:
        received[nid] = received_at
        if stored_digest != digest:
            out[i] = InvalidArgument(
                f"notice_id: got {nid.hex()} again with different contents, want a new id for a new notice",
                reason=Reason.NOTICE_ID_REUSED,
            )
            return
        receipt = sign_receipt(make_receipt(hub.hub, nid, digest, received_at, duplicate=True))
        out[i] = Acceptance(True, lead_id, None, False, receipt)

    new: list[_New] = []
    for n in fresh:
        row = seen.get(bytes(n.notice.notice_id))
        if row is not None:
            replay(n.index, bytes(n.notice.notice_id), n.digest, bytes(row.notice_digest), _at(row.received_at), row.lead_id)
        else:
            new.append(n)

    if new:
        # 1. Inbox rows; one a concurrent batch inserted first is answered as a replay.
        ins = dialect_insert(conn)(notice_inbox).on_conflict_do_nothing(index_elements=["notice_id"])
        inserted = {bytes(r[0]) for r in conn.execute(ins.returning(notice_inbox.c.notice_id), [{
            "notice_id": bytes(n.notice.notice_id), "provider": n.notice.provider, "notice_digest": n.digest,
            "rule": n.notice.rule, "event_type": n.notice.event_type, "region": n.notice.region,
            "event_date": n.meta["event_date"], "due_date": n.meta["due_date"], "created_at": n.meta["created_at"],
            "sealed_enc": bytes(n.notice.sealed_enc), "sealed_ciphertext": bytes(n.notice.sealed_ciphertext),
            "sealed_suite": n.notice.sealed_suite, "envelope": n.envelope, "received_at": at,
        } for n in new])}
        raced = [n for n in new if bytes(n.notice.notice_id) not in inserted]
        if raced:
            rows = {bytes(r.notice_id): r for r in conn.execute(_INBOX_SEEN, {"ids": [bytes(n.notice.notice_id) for n in raced]})}
            for n in raced:
                r = rows[bytes(n.notice.notice_id)]
                replay(n.index, bytes(n.notice.notice_id), n.digest, bytes(r.notice_digest), _at(r.received_at), r.lead_id)
            new = [n for n in new if bytes(n.notice.notice_id) in inserted]
    if new:
        _leads(hub, conn, new, at)
        conn.execute(lead_events.insert(), [dict(
            lead_id=n.lead_id, source="notice", notice_id=bytes(n.notice.notice_id), provider=n.notice.provider,
            event_type=n.notice.event_type, event_date=n.meta["event_date"], region=n.notice.region,
            sealed_enc=None, sealed_ciphertext=None, created_at=at,
        ) for n in new])
        _referrals(hub, conn, new, at)
        updates = []
        for n in new:
            receipt = sign_receipt(make_receipt(hub.hub, n.notice.notice_id, n.digest, at, duplicate=False))
            out[n.index] = Acceptance(False, n.lead_id, n.referral_id, n.new_lead, receipt)
            updates.append({"b_nid": bytes(n.notice.notice_id), "b_lead": n.lead_id, "b_receipt": receipt})
        conn.execute(_INBOX_RECEIPT, updates)

    # Repeats inside this batch: a duplicate of the first (same bytes) or a reused id.
    for i, nid, digest in later:
        first = out[firsts[nid][0]]
        if isinstance(first, Acceptance):
            replay(i, nid, digest, firsts[nid][1], received.get(nid, at), first.lead_id)
        else:   # the first was refused: so is its repeat, for the same reason
            out[i] = first
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def _at(value: datetime | None) -> datetime:
    """A stored ``received_at`` (never null for an inbox row) as an aware UTC instant."""
    at = utc(value)
    assert at is not None, "notice_inbox.received_at is NOT NULL"
    return at


def _leads(hub: Hub, conn: Connection, new: list[_New], at: datetime) -> None:
    """Step 2: every notice's lead id; people without a lead get one."""
    keys = list(dict.fromkeys(n.pkey for n in new))
    have = {r.person_key: int(r.lead_id) for r in conn.execute(_LEADS_BY_KEY, {"keys": keys})}
    if have:   # reopened if closed, touched either way (as one notice at a time would)
        conn.execute(update(leads).where(leads.c.lead_id.in_(list(have.values()))).values(status="open", updated_at=at))
    missing = [k for k in keys if k not in have]
    if missing:
        first: dict[str, _New] = {}
        for n in new:
            first.setdefault(n.pkey, n)
        rows = []
        for k in missing:
            n = first[k]
            enc, ct, suite = sealing.seal(hub._public, n.identity.encode(), b"hedui.lead.v1\x00" + k.encode())
            rows.append({"person_key": k, "identity_enc": enc, "identity_ciphertext": ct, "identity_suite": suite,
                         "region": n.notice.region, "status": "open", "created_at": at, "updated_at": at})
        ins = dialect_insert(conn)(leads).on_conflict_do_nothing(index_elements=["person_key"])
        made = {r.person_key: int(r.lead_id) for r in conn.execute(ins.returning(leads.c.lead_id, leads.c.person_key), rows)}
        for k in missing:
            if k in made:
                first[k].new_lead = True
        have.update(made)
        late = [k for k in missing if k not in made]   # a concurrent batch made them first
        if late:
            have.update({r.person_key: int(r.lead_id) for r in conn.execute(_LEADS_BY_KEY, {"keys": late})})
    for n in new:
        n.lead_id = have[n.pkey]


def _referrals(hub: Hub, conn: Connection, new: list[_New], at: datetime) -> None:
    """Step 4: a referral for each lead without an active one, made by its first notice."""
    ids = list(dict.fromkeys(n.lead_id for n in new))
    active = {int(x) for x in conn.execute(_ACTIVE, {"ids": ids}).scalars()}
    due = hub.calendar.add_workdays(local_date(at, hub.clock.zone), hub.referral_workdays)
    makers: dict[int, _New] = {}
    for n in new:
        if n.lead_id not in active and n.lead_id not in makers:
            makers[n.lead_id] = n
    if not makers:
        return
    rows = []
    for lead_id, n in makers.items():
        route = hub.routing.route(n.notice.region, n.notice.event_type)
        rows.append({"lead_id": lead_id, "assignee": route.assignee, "assignee_kind": route.assignee_kind,
                     "event_type": n.notice.event_type, "created_at": at, "due_date": due, "status": "open"})
    for r in conn.execute(referrals.insert().returning(referrals.c.referral_id, referrals.c.lead_id), rows):
        makers[int(r.lead_id)].referral_id = int(r.referral_id)
