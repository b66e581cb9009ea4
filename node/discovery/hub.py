"""The hub's discovery workflow: notices in, leads merged per person, referrals out.

- :meth:`Hub.accept_notice` de-duplicates by ``notice_id`` (a replay gets a receipt marked
  duplicate for the first delivery, and changes nothing), merges notices about one person into
  one lead by ``person_key`` (HMAC-SHA256 of the identity under a hub secret), and refers the
  lead to a town or department chosen by the routing table, due in 5 working days.
- :meth:`Hub.add_manual_lead` takes grid workers' same-day reports the same way.
- :meth:`Hub.record_response`, :meth:`Hub.overdue`, :meth:`Hub.escalate` track referrals;
  :meth:`Hub.monthly_report` and :func:`monthly_report_html` count them each month.

The identity is stored only sealed (HPKE) to the hub's own sealing key, in ``leads``;
:meth:`Hub.reveal_identity` opens it on demand for a caseworker.

Routing table (in the hub config, TOML)::

    [[routes]]
    region = "370304001"      # region-code prefix; "" matches every region
    event_type = "*"          # an event type, or "*" for any
    assignee = "370304001"    # town or department code
    assignee_kind = "town"    # town | department
    name = "城东街道"          # display name (optional)

The most specific route wins: an exact event type before ``*``, then the longest region
prefix. One route with ``region = ""`` and ``event_type = "*"`` is required (the catch-all).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from calendar import monthrange
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine, and_, func, select, true, update

from hedui.adapters import idnum
from hedui.adapters.idnum import normalize as normalise_identity
from hedui.common.toml import load_toml
from hedui.keys import sealing
from hedui.node.discovery.calendar import CHINA_TZ, WorkCalendar, local_date
from hedui.node.discovery.outbox import NOTICE_PAYLOAD_TYPE, notice_aad
from hedui.node.discovery.tables import insert_ignore, lead_events, leads, notice_inbox, referrals, utc
from hedui.node.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
)
from hedui.v1 import common_pb2, notice_pb2

__all__ = [
    "Hub",
    "Route",
    "Routing",
    "Acceptance",
    "ReferralView",
    "open_notice",
    "monthly_report_html",
    "OUTCOMES",
    "PROGRAMMES",
]

OUTCOMES = ("found", "assisted", "not_eligible", "unreachable")
PROGRAMMES = (
    "dibao",
    "tekun",
    "temporary_assistance",
    "medical",
    "education",
    "housing",
    "employment",
    "disaster_relief",
)
_CODE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- routing


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    region: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{0,32}$")] = ""
    event_type: Annotated[str, Field(pattern=r"^(\*|[a-z][a-z0-9_.-]{0,63})$")] = "*"
    assignee: Annotated[str, Field(pattern=_CODE)]
    assignee_kind: Literal["town", "department"]
    name: Annotated[str, Field(max_length=100)] = ""


class Routing:
    """Chooses the town or department a lead is referred to."""

    def __init__(self, routes: Sequence[Route]) -> None:
        seen: set[tuple[str, str]] = set()
        for r in routes:
            key = (r.region, r.event_type)
            if key in seen:
                raise ConfigError(
                    f"routes: got region {r.region!r} with event_type {r.event_type!r} twice, want each pair once"
                )
            seen.add(key)
        if ("", "*") not in seen:
            raise ConfigError('routes: got no catch-all route, want one with region = "" and event_type = "*"')
        # Most specific first: exact event type, then longer region prefix.
        self._routes = sorted(routes, key=lambda r: (r.event_type == "*", -len(r.region)))
        self.names = {r.assignee: (r.name or r.assignee) for r in routes}
        self.kinds = {r.assignee: r.assignee_kind for r in routes}

    def route(self, region: str, event_type: str) -> Route:
        for r in self._routes:
            if region.startswith(r.region) and r.event_type in ("*", event_type):
                return r
        raise AssertionError("unreachable: the catch-all route matches everything")  # pragma: no cover


class HubFile(BaseModel):
    """The hub's discovery file as written (see :meth:`Hub.from_config`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    hub: Annotated[str, Field(pattern=_CODE, description="the hub's member code")]
    person_secret_file: Annotated[str, Field(min_length=1, description="a file path")]
    sealing_public_file: Annotated[str, Field(min_length=1, description="a file path")] | None = None
    calendar_overrides: Annotated[str, Field(min_length=1, description="a file path")] | None = None
    referral_workdays: int = 5
    routes: Annotated[list[Route], Field(min_length=1)]


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Acceptance:
    """What accepting a notice or a manual report did."""

    duplicate: bool
    lead_id: int | None
    referral_id: int | None  # None when merged into an open referral, or a duplicate
    new_lead: bool
    receipt: bytes | None  # the signed receipt envelope (notices only)


@dataclass(frozen=True, slots=True)
class ReferralView:
    referral_id: int
    lead_id: int
    assignee: str
    assignee_kind: str
    event_type: str
    region: str
    created_at: datetime
    due_date: date
    status: str
    outcome: str | None
    programme: str | None
    responded_at: datetime | None
    escalated_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "referral_id": self.referral_id,
            "lead_id": self.lead_id,
            "assignee": self.assignee,
            "assignee_kind": self.assignee_kind,
            "event_type": self.event_type,
            "region": self.region,
            "created_at": self.created_at.isoformat(),
            "due_date": self.due_date.isoformat(),
            "status": self.status,
            "outcome": self.outcome,
            "programme": self.programme,
            "responded_at": self.responded_at.isoformat() if self.responded_at else None,
            "escalated_at": self.escalated_at.isoformat() if self.escalated_at else None,
        }


# ---------------------------------------------------------------- the hub


class Hub:
    """Hub-side discovery workflow over the node store."""

    def __init__(
        self,
        engine: Engine,
        *,
        hub: str,
        person_secret: bytes,
        sealing_public: bytes,
        routing: Routing,
        calendar: WorkCalendar,
        referral_workdays: int = 5,
    ) -> None:
        if not isinstance(person_secret, (bytes, bytearray)) or len(person_secret) < 32:
            raise ConfigError("person secret: got fewer than 32 bytes, want 32 random bytes")
        if len(sealing_public) != sealing.PUBLIC_KEY_SIZE:
            raise ConfigError(
                f"hub sealing public key: got {len(sealing_public)} bytes, want {sealing.PUBLIC_KEY_SIZE}"
            )
        if not 1 <= referral_workdays <= 60:
            raise ConfigError(f"referral_workdays: got {referral_workdays}, want 1..60")
        self.engine = engine
        self.hub = hub
        self._secret = bytes(person_secret)
        self._public = bytes(sealing_public)
        self.routing = routing
        self.calendar = calendar
        self.referral_workdays = referral_workdays

    @classmethod
    def from_config(
        cls,
        engine: Engine,
        path: str | Path,
        *,
        sealing_public: bytes | None = None,
        calendar_overrides: str | Path | None = None,
    ) -> Hub:
        """Builds a hub from a TOML config file (paths in it are relative to the file)::

            hub = "370304-mz"
            person_secret_file = "person.secret"   # 32+ random bytes
            sealing_public_file = "sealing.pub"    # the hub's own 1,216-byte public key
            calendar_overrides = "calendar.toml"   # optional
            referral_workdays = 5                  # optional
            [[routes]] ...

        A node passes ``sealing_public`` (its key as published in the directory; then
        ``sealing_public_file`` may be left out, and must match if given) and its
        ``[hub] calendar_overrides`` (used when the file names none).
        """
        p = Path(path)
        doc = load_toml(p, HubFile, what="a hub discovery file (hub, person_secret_file, routes)")

        def rel(v: str) -> Path:
            q = Path(v)
            return q if q.is_absolute() else p.parent / q

        def read(key: str, v: str) -> bytes:
            try:
                return rel(v).read_bytes()
            except OSError as exc:
                raise ConfigError(f"{p}: {key}: got an unreadable file {rel(v)} ({exc.strerror}), want a file") from None

        public = sealing_public
        if public is None or doc.sealing_public_file is not None:
            if doc.sealing_public_file is None:
                raise ConfigError(f"{p}: sealing_public_file: got nothing, want the hub's public sealing key file")
            from_file = read("sealing_public_file", doc.sealing_public_file)
            if public is not None and bytes(public) != from_file:
                raise ConfigError(
                    f"{p}: sealing_public_file: got a key that differs from the hub's published "
                    "sealing key, want the same key (or leave the line out)"
                )
            public = from_file
        try:
            routing = Routing(doc.routes)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc.message}") from None
        return cls(
            engine,
            hub=doc.hub,
            person_secret=read("person_secret_file", doc.person_secret_file),
            sealing_public=public,
            routing=routing,
            calendar=WorkCalendar(rel(doc.calendar_overrides) if doc.calendar_overrides is not None else calendar_overrides),
            referral_workdays=doc.referral_workdays,
        )

    # ------------------------------------------------------------ intake

    def person_key(self, identity: str) -> str:
        """The hub-local keyed hash that merges a person's notices."""
        norm = normalise_identity(identity)
        return hmac.new(self._secret, b"hedui.person.v1\x00" + norm.encode(), hashlib.sha256).hexdigest()

    def accept_notice(
        self,
        conn: Connection,
        notice: notice_pb2.Notice,
        opened: notice_pb2.SealedDetails,
        *,
        envelope: bytes,
        sign_receipt: Callable[[notice_pb2.Receipt], bytes],
        now: datetime | None = None,
    ) -> Acceptance:
        """Takes one verified notice on ``conn`` (the caller's transaction, which should also
        hold the audit entry). ``envelope`` is the serialised DSSE envelope exactly as
        received and already verified; ``notice`` its parsed payload; ``opened`` its sealed
        part opened with the hub key (see :func:`open_notice`). Returns the signed receipt."""
        at = now or _now()
        env = common_pb2.Envelope.FromString(envelope)
        if env.payload_type != NOTICE_PAYLOAD_TYPE:
            raise InvalidArgument(f"envelope.payload_type: got {env.payload_type!r}, want {NOTICE_PAYLOAD_TYPE!r}")
        if notice_pb2.Notice.FromString(env.payload) != notice:
            raise InvalidArgument("notice: got a message that differs from the envelope payload, want its parse")
        digest = hashlib.sha256(env.payload).digest()
        meta = _check_notice(notice, self.hub)

        inserted = insert_ignore(
            conn,
            notice_inbox,
            {
                "notice_id": bytes(notice.notice_id),
                "provider": notice.provider,
                "notice_digest": digest,
                "rule": notice.rule,
                "event_type": notice.event_type,
                "region": notice.region,
                "event_date": meta["event_date"],
                "due_date": meta["due_date"],
                "created_at": meta["created_at"],
                "sealed_enc": bytes(notice.sealed_enc),
                "sealed_ciphertext": bytes(notice.sealed_ciphertext),
                "sealed_suite": notice.sealed_suite,
                "envelope": bytes(envelope),
                "received_at": at,
            },
            ["notice_id"],
        )
        if not inserted:
            row = conn.execute(
                select(notice_inbox.c.notice_digest, notice_inbox.c.received_at, notice_inbox.c.lead_id)
                .where(notice_inbox.c.notice_id == bytes(notice.notice_id))
            ).one()
            if bytes(row.notice_digest) != digest:
                raise InvalidArgument(
                    f"notice_id: got {bytes(notice.notice_id).hex()} again with different contents, "
                    "want a new id for a new notice",
                    reason=Reason.NOTICE_ID_REUSED,
                )
            receipt = sign_receipt(self._receipt(notice.notice_id, digest, utc(row.received_at), duplicate=True))
            return Acceptance(True, row.lead_id, None, False, receipt)

        lead_id, new_lead, referral_id = self._attach(
            conn,
            identity=opened.identity,
            region=notice.region,
            event_type=notice.event_type,
            event_date=meta["event_date"],
            provider=notice.provider,
            source="notice",
            notice_id=bytes(notice.notice_id),
            sealed=None,
            at=at,
        )
        receipt = sign_receipt(self._receipt(notice.notice_id, digest, at, duplicate=False))
        conn.execute(
            update(notice_inbox)
            .where(notice_inbox.c.notice_id == bytes(notice.notice_id))
            .values(lead_id=lead_id, receipt=receipt)
        )
        return Acceptance(False, lead_id, referral_id, new_lead, receipt)

    def add_manual_lead(
        self,
        *,
        identity: str,
        region: str,
        event_type: str,
        event_date: date,
        reporter: str,
        note: str = "",
        now: datetime | None = None,
    ) -> Acceptance:
        """A grid worker's or aide's report (same day as found). ``note`` is sealed with the
        identity; it must not itself contain an identity number."""
        at = now or _now()
        if not isinstance(region, str) or not re.fullmatch(r"[0-9A-Za-z]{1,32}", region):
            raise InvalidArgument(f"region: got {region!r}, want a region code")
        if not isinstance(event_type, str) or not re.fullmatch(r"[a-z][a-z0-9_.-]{0,63}", event_type):
            raise InvalidArgument(f"event_type: got {event_type!r}, want a lower-case code like 'illness'")
        if not isinstance(reporter, str) or not re.fullmatch(_CODE, reporter):
            raise InvalidArgument(f"reporter: got {reporter!r}, want a staff or town code")
        if not isinstance(event_date, date) or event_date > local_date(at):
            raise InvalidArgument(f"event_date: got {event_date}, want a date not after today")
        if len(note) > 2000:
            raise InvalidArgument(f"note: got {len(note)} characters, want at most 2000")
        if idnum.contains(note):
            raise InvalidArgument("note: got text containing an identity number, want none (it is sealed separately)")
        pkey = self.person_key(identity)
        details = notice_pb2.SealedDetails(
            identity=normalise_identity(identity), details={"note": note, "reporter": reporter}
        )
        enc, ct, _ = sealing.seal(self._public, details.SerializeToString(), b"hedui.manual.v1\x00" + pkey.encode())
        with self.engine.begin() as conn:
            lead_id, new_lead, referral_id = self._attach(
                conn,
                identity=identity,
                region=region,
                event_type=event_type,
                event_date=event_date,
                provider=reporter,
                source="manual",
                notice_id=None,
                sealed=(enc, ct),
                at=at,
            )
        return Acceptance(False, lead_id, referral_id, new_lead, None)

    def _attach(
        self,
        conn: Connection,
        *,
        identity: str,
        region: str,
        event_type: str,
        event_date: date,
        provider: str,
        source: str,
        notice_id: bytes | None,
        sealed: tuple[bytes, bytes] | None,
        at: datetime,
    ) -> tuple[int, bool, int | None]:
        norm = normalise_identity(identity)
        pkey = self.person_key(norm)
        lead = conn.execute(select(leads.c.lead_id, leads.c.status).where(leads.c.person_key == pkey)).one_or_none()
        new_lead = False
        if lead is None:
            enc, ct, suite = sealing.seal(self._public, norm.encode(), b"hedui.lead.v1\x00" + pkey.encode())
            new_lead = insert_ignore(
                conn,
                leads,
                {
                    "person_key": pkey,
                    "identity_enc": enc,
                    "identity_ciphertext": ct,
                    "identity_suite": suite,
                    "region": region,
                    "status": "open",
                    "created_at": at,
                    "updated_at": at,
                },
                ["person_key"],
            )
            lead = conn.execute(select(leads.c.lead_id, leads.c.status).where(leads.c.person_key == pkey)).one()
        lead_id = int(lead.lead_id)
        if lead.status != "open":
            conn.execute(update(leads).where(leads.c.lead_id == lead_id).values(status="open", updated_at=at))
        elif not new_lead:
            conn.execute(update(leads).where(leads.c.lead_id == lead_id).values(updated_at=at))
        conn.execute(
            lead_events.insert(),  # values as parameters: one compiled statement for every call
            dict(
                lead_id=lead_id,
                source=source,
                notice_id=notice_id,
                provider=provider,
                event_type=event_type,
                event_date=event_date,
                region=region,
                sealed_enc=sealed[0] if sealed else None,
                sealed_ciphertext=sealed[1] if sealed else None,
                created_at=at,
            ),
        )
        active = conn.execute(
            select(referrals.c.referral_id)
            .where(referrals.c.lead_id == lead_id, referrals.c.status.in_(("open", "escalated")))
            .limit(1)
        ).scalar_one_or_none()
        if active is not None:
            return lead_id, new_lead, None
        route = self.routing.route(region, event_type)
        due = self.calendar.add_workdays(local_date(at), self.referral_workdays)
        result = conn.execute(
            referrals.insert(),
            dict(
                lead_id=lead_id,
                assignee=route.assignee,
                assignee_kind=route.assignee_kind,
                event_type=event_type,
                created_at=at,
                due_date=due,
                status="open",
            ),
        )
        return lead_id, new_lead, int(result.inserted_primary_key[0])

    def _receipt(self, notice_id: bytes, digest: bytes, received_at: datetime, *, duplicate: bool) -> notice_pb2.Receipt:
        r = notice_pb2.Receipt(hub=self.hub, notice_id=bytes(notice_id), notice_digest=digest, duplicate=duplicate)
        r.received_at.FromDatetime(received_at.astimezone(timezone.utc))
        return r

    # ------------------------------------------------------------ referrals

    def record_response(
        self,
        referral_id: int,
        *,
        outcome: str,
        programme: str | None = None,
        now: datetime | None = None,
    ) -> ReferralView:
        """The assignee's answer. ``assisted`` needs the programme the person was placed in."""
        at = now or _now()
        if outcome not in OUTCOMES:
            raise InvalidArgument(f"outcome: got {outcome!r}, want one of {', '.join(OUTCOMES)}")
        if outcome == "assisted" and programme not in PROGRAMMES:
            raise InvalidArgument(f"programme: got {programme!r}, want one of {', '.join(PROGRAMMES)}")
        if outcome != "assisted" and programme is not None:
            raise InvalidArgument(f"programme: got {programme!r}, want none unless outcome is 'assisted'")
        with self.engine.begin() as conn:
            row = conn.execute(
                select(referrals.c.status, referrals.c.lead_id).where(referrals.c.referral_id == referral_id)
            ).one_or_none()
            if row is None:
                raise NotFound(f"referral: got {referral_id}, want an existing referral id")
            if row.status == "responded":
                raise FailedPrecondition(
                    f"referral {referral_id} status: got 'responded', want 'open' or 'escalated'",
                    reason=Reason.ALREADY_RESPONDED,
                )
            conn.execute(
                update(referrals)
                .where(referrals.c.referral_id == referral_id)
                .values(status="responded", outcome=outcome, programme=programme, responded_at=at)
            )
            still = conn.execute(
                select(func.count())
                .select_from(referrals)
                .where(referrals.c.lead_id == row.lead_id, referrals.c.status.in_(("open", "escalated")))
            ).scalar_one()
            if not still:
                conn.execute(update(leads).where(leads.c.lead_id == row.lead_id).values(status="closed", updated_at=at))
        return self.referral(referral_id)

    def referral(self, referral_id: int) -> ReferralView:
        found = self.referrals_where(referrals.c.referral_id == referral_id)
        if not found:
            raise NotFound(f"referral: got {referral_id}, want an existing referral id")
        return found[0]

    def list_referrals(self, *, status: str | None = None, assignee: str | None = None) -> list[ReferralView]:
        conds = []
        if status is not None:
            if status not in ("open", "responded", "escalated"):
                raise InvalidArgument(f"status: got {status!r}, want open, responded or escalated")
            conds.append(referrals.c.status == status)
        if assignee is not None:
            conds.append(referrals.c.assignee == assignee)
        return self.referrals_where(*conds)

    def overdue(self, as_of: date) -> list[ReferralView]:
        """Referrals not answered whose due date is before ``as_of``."""
        return self.referrals_where(
            referrals.c.status.in_(("open", "escalated")), referrals.c.due_date < as_of
        )

    def escalate(self, as_of: date, *, now: datetime | None = None) -> list[ReferralView]:
        """Marks open overdue referrals escalated (reported to the leading group's office and
        chased); returns the ones escalated by this call."""
        at = now or _now()
        with self.engine.begin() as conn:
            ids = conn.execute(
                select(referrals.c.referral_id).where(referrals.c.status == "open", referrals.c.due_date < as_of)
            ).scalars().all()
            if ids:
                conn.execute(
                    update(referrals)
                    .where(referrals.c.referral_id.in_(ids), referrals.c.status == "open")
                    .values(status="escalated", escalated_at=at)
                )
        return self.referrals_where(referrals.c.referral_id.in_(ids)) if ids else []

    def referrals_where(self, *conds: Any) -> list[ReferralView]:
        stmt = (
            select(referrals, leads.c.region)
            .join(leads, leads.c.lead_id == referrals.c.lead_id)
            .where(and_(true(), *conds))
            .order_by(referrals.c.referral_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            ReferralView(
                referral_id=r.referral_id,
                lead_id=r.lead_id,
                assignee=r.assignee,
                assignee_kind=r.assignee_kind,
                event_type=r.event_type,
                region=r.region,
                created_at=utc(r.created_at),  # type: ignore[arg-type]
                due_date=r.due_date,
                status=r.status,
                outcome=r.outcome,
                programme=r.programme,
                responded_at=utc(r.responded_at),
                escalated_at=utc(r.escalated_at),
            )
            for r in rows
        ]

    # ------------------------------------------------------------ leads

    def list_leads(self, *, status: str | None = None, region: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Leads, newest first, with how many events and sources each has (no identity)."""
        n_events = func.count(lead_events.c.event_id)
        n_sources = func.count(func.distinct(lead_events.c.provider))
        stmt = (
            select(leads.c.lead_id, leads.c.region, leads.c.status, leads.c.created_at, leads.c.updated_at,
                   n_events.label("events"), n_sources.label("sources"))
            .select_from(leads.outerjoin(lead_events, lead_events.c.lead_id == leads.c.lead_id))
            .group_by(leads.c.lead_id, leads.c.region, leads.c.status, leads.c.created_at, leads.c.updated_at)
            .order_by(leads.c.lead_id.desc())
            .limit(limit)
        )
        if status is not None:
            if status not in ("open", "closed"):
                raise InvalidArgument(f"status: got {status!r}, want open or closed")
            stmt = stmt.where(leads.c.status == status)
        if region is not None:
            stmt = stmt.where(leads.c.region.startswith(region, autoescape=True))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            {
                "lead_id": r.lead_id,
                "region": r.region,
                "status": r.status,
                "created_at": utc(r.created_at).isoformat(),  # type: ignore[union-attr]
                "updated_at": utc(r.updated_at).isoformat(),  # type: ignore[union-attr]
                "events": r.events,
                "sources": r.sources,
            }
            for r in rows
        ]

    def lead(self, lead_id: int) -> dict[str, Any]:
        """One lead: public fields, its events (which notices and reports merged into it) and
        its referrals. No identity: see :meth:`reveal_identity`."""
        with self.engine.connect() as conn:
            row = conn.execute(select(leads).where(leads.c.lead_id == lead_id)).one_or_none()
            if row is None:
                raise NotFound(f"lead: got {lead_id}, want an existing lead id")
            events = conn.execute(
                select(lead_events).where(lead_events.c.lead_id == lead_id).order_by(lead_events.c.event_id)
            ).all()
        return {
            "lead_id": row.lead_id,
            "region": row.region,
            "status": row.status,
            "created_at": utc(row.created_at).isoformat(),  # type: ignore[union-attr]
            "updated_at": utc(row.updated_at).isoformat(),  # type: ignore[union-attr]
            "events": [
                {
                    "source": e.source,
                    "notice_id": bytes(e.notice_id).hex() if e.notice_id is not None else None,
                    "provider": e.provider,
                    "event_type": e.event_type,
                    "event_date": e.event_date.isoformat(),
                    "region": e.region,
                    "received_at": utc(e.created_at).isoformat(),  # type: ignore[union-attr]
                }
                for e in events
            ],
            "providers": sorted({e.provider for e in events}),
            "referrals": [v.as_dict() for v in self.referrals_where(referrals.c.lead_id == lead_id)],
        }

    def merged_leads(self) -> list[dict[str, Any]]:
        """Leads into which more than one notice or report was merged."""
        return [d for d in self.list_leads(limit=100_000) if d["events"] > 1]

    def reveal_identity(self, lead_id: int, key: sealing.SealingKey) -> str:
        """Opens a lead's sealed identity with the hub's private sealing key (caseworker use)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(leads).where(leads.c.lead_id == lead_id)).one_or_none()
        if row is None:
            raise NotFound(f"lead: got {lead_id}, want an existing lead id")
        plain = sealing.open(
            key,
            bytes(row.identity_enc),
            bytes(row.identity_ciphertext),
            b"hedui.lead.v1\x00" + row.person_key.encode(),
            suite=row.identity_suite,
        )
        return plain.decode()

    # ------------------------------------------------------------ reporting

    def monthly_report(self, year: int, month: int) -> dict[str, Any]:
        """Counts for one calendar month (China time), as at the end of that month:
        ``referred == completed_on_time + completed_late + overdue + pending``."""
        if not (2000 <= year <= 2100) or not (1 <= month <= 12):
            raise InvalidArgument(f"month: got {year}-{month}, want a year 2000..2100 and a month 1..12")
        first = date(year, month, 1)
        last = date(year, month, monthrange(year, month)[1])
        start = datetime.combine(first, time(), CHINA_TZ).astimezone(timezone.utc)
        cutoff = datetime.combine(last + timedelta(days=1), time(), CHINA_TZ).astimezone(timezone.utc)
        with self.engine.connect() as conn:
            events = conn.execute(
                select(lead_events.c.source, lead_events.c.provider).where(
                    lead_events.c.created_at >= start, lead_events.c.created_at < cutoff
                )
            ).all()
            new_leads = conn.execute(
                select(func.count()).select_from(leads).where(leads.c.created_at >= start, leads.c.created_at < cutoff)
            ).scalar_one()
            refs = conn.execute(
                select(
                    referrals.c.assignee,
                    referrals.c.assignee_kind,
                    referrals.c.due_date,
                    referrals.c.responded_at,
                    referrals.c.escalated_at,
                ).where(referrals.c.created_at >= start, referrals.c.created_at < cutoff)
            ).all()
        by_provider = Counter(e.provider for e in events if e.source == "notice")
        by_reporter = Counter(e.provider for e in events if e.source == "manual")
        zero = {"referred": 0, "completed_on_time": 0, "completed_late": 0, "overdue": 0, "pending": 0, "escalated": 0}
        totals = dict(zero)
        groups: dict[str, dict[str, dict[str, Any]]] = {"department": {}, "town": {}}
        for r in refs:
            responded = utc(r.responded_at)
            escalated = utc(r.escalated_at)
            if responded is not None and responded < cutoff:
                state = "completed_on_time" if local_date(responded) <= r.due_date else "completed_late"
            elif r.due_date <= last:
                state = "overdue"
            else:
                state = "pending"
            g = groups[r.assignee_kind].setdefault(
                r.assignee, {"name": self.routing.names.get(r.assignee, r.assignee), **zero}
            )
            for bucket in (totals, g):
                bucket["referred"] += 1
                bucket[state] += 1
                if escalated is not None and escalated < cutoff:
                    bucket["escalated"] += 1
        return {
            "year": year,
            "month": month,
            "period": f"{year:04d}-{month:02d}",
            "received": {
                "total": len(events),
                "notices": sum(by_provider.values()),
                "manual": sum(by_reporter.values()),
                "new_leads": new_leads,
                "by_provider": dict(sorted(by_provider.items())),
                "by_reporter": dict(sorted(by_reporter.items())),
            },
            **totals,
            "by_department": dict(sorted(groups["department"].items())),
            "by_town": dict(sorted(groups["town"].items())),
        }


# ---------------------------------------------------------------- notices


def open_notice(notice: notice_pb2.Notice, key: sealing.SealingKey) -> notice_pb2.SealedDetails:
    """Opens a notice's sealed part with the hub's private key (checks the bound metadata)."""
    plain = sealing.open(
        key, bytes(notice.sealed_enc), bytes(notice.sealed_ciphertext), notice_aad(notice), suite=notice.sealed_suite
    )
    try:
        return notice_pb2.SealedDetails.FromString(plain)
    except Exception:
        raise InvalidArgument("sealed details: got bytes that are not a SealedDetails message") from None


def _check_notice(n: notice_pb2.Notice, hub: str) -> dict[str, Any]:
    if len(n.notice_id) != 16:
        raise InvalidArgument(f"notice.notice_id: got {len(n.notice_id)} bytes, want 16")
    if n.hub != hub:
        raise InvalidArgument(f"notice.hub: got {n.hub!r}, want {hub!r}")
    for name in ("provider", "rule", "event_type"):
        v = getattr(n, name)
        if not v or len(v) > 64:
            raise InvalidArgument(f"notice.{name}: got {v[:64]!r}, want 1..64 characters")
    if len(n.region) > 32:
        raise InvalidArgument(f"notice.region: got {len(n.region)} characters, want at most 32")
    out: dict[str, Any] = {}
    for name in ("event_date", "due_date"):
        v = getattr(n, name)
        try:
            out[name] = date.fromisoformat(v)
        except ValueError:
            raise InvalidArgument(f"notice.{name}: got {v[:32]!r}, want an ISO date") from None
    out["created_at"] = n.created_at.ToDatetime(tzinfo=timezone.utc)
    return out


# ---------------------------------------------------------------- HTML


_LABELS = {
    "referred": "转办",
    "completed_on_time": "按时办结",
    "completed_late": "逾期办结",
    "overdue": "逾期未办结",
    "pending": "办理中",
    "escalated": "督办",
}
_COLOURS = {"referred": "#4e79a7", "completed_on_time": "#59a14f", "overdue": "#e15759"}


def monthly_report_html(report: dict[str, Any]) -> str:
    """A printable, self-contained HTML page (Chinese labels, inline SVG bar chart)."""
    e = html.escape
    y, m = int(report["year"]), int(report["month"])
    rec = report["received"]
    summary_rows = [
        ("收到线索", rec["total"]),
        ("其中:部门推送", rec["notices"]),
        ("其中:网格员上报", rec["manual"]),
        ("新建线索档案", rec["new_leads"]),
    ] + [(_LABELS[k], report[k]) for k in _LABELS]
    summary = "".join(f"<tr><th>{e(k)}</th><td>{int(v)}</td></tr>" for k, v in summary_rows)

    def group_table(title: str, groups: dict[str, dict[str, Any]]) -> str:
        head = "".join(f"<th>{e(_LABELS[k])}</th>" for k in _LABELS)
        if not groups:
            body = f'<tr><td colspan="{len(_LABELS) + 1}">无</td></tr>'
        else:
            body = "".join(
                f"<tr><td>{e(str(g.get('name') or code))}</td>"
                + "".join(f"<td>{int(g[k])}</td>" for k in _LABELS)
                + "</tr>"
                for code, g in groups.items()
            )
        return f"<h2>{e(title)}</h2><table><thead><tr><th>承办单位</th>{head}</tr></thead><tbody>{body}</tbody></table>"

    providers = "".join(
        f"<tr><td>{e(str(k))}</td><td>{int(v)}</td></tr>" for k, v in rec["by_provider"].items()
    ) or '<tr><td colspan="2">无</td></tr>'
    chart = _bar_chart({**report["by_department"], **report["by_town"]})
    return f"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>社会救助主动发现工作月报 {y}年{m}月</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "Microsoft YaHei", "SimSun", sans-serif; margin: 2em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 1.5em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #999; padding: 0.3em 0.8em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.note {{ color: #555; font-size: 0.9em; }}
@media print {{ body {{ margin: 1cm; }} h2 {{ page-break-after: avoid; }} table, svg {{ page-break-inside: avoid; }} }}
</style>
</head>
<body>
<h1>社会救助主动发现工作月报 {y}年{m}月</h1>
<p class="note">统计口径:本月收到的线索与本月转办的线索转办单;办结情况截至{y}年{m}月末。转办单须在5个工作日内反馈。</p>
<h2>总体情况</h2>
<table><tbody>{summary}</tbody></table>
<h2>各部门推送线索</h2>
<table><thead><tr><th>部门</th><th>线索数</th></tr></thead><tbody>{providers}</tbody></table>
{group_table("按部门统计", report["by_department"])}
{group_table("按镇(街道)统计", report["by_town"])}
<h2>转办与办结情况</h2>
{chart}
</body>
</html>
"""


def _bar_chart(groups: dict[str, dict[str, Any]]) -> str:
    e = html.escape
    keys = list(_COLOURS)
    if not groups:
        return '<p class="note">本月无转办。</p>'
    peak = max(max(int(g[k]) for k in keys) for g in groups.values()) or 1
    bar_h, gap, label_w, plot_w = 14, 10, 160, 420
    group_h = bar_h * len(keys) + gap
    height = group_h * len(groups) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 60}" height="{height}" '
        f'role="img" aria-label="转办与办结情况">'
    ]
    for i, (code, g) in enumerate(groups.items()):
        y0 = i * group_h
        name = str(g.get("name") or code)
        parts.append(
            f'<text x="{label_w - 8}" y="{y0 + bar_h * len(keys) / 2 + 4}" text-anchor="end" font-size="12">{e(name)}</text>'
        )
        for j, k in enumerate(keys):
            v = int(g[k])
            w = round(plot_w * v / peak, 1)
            y = y0 + j * bar_h
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h - 2}" fill="{_COLOURS[k]}"/>')
            parts.append(f'<text x="{label_w + w + 4}" y="{y + bar_h - 4}" font-size="10">{v}</text>')
    ly = height - 20
    for j, k in enumerate(keys):
        lx = label_w + j * 120
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{_COLOURS[k]}"/>')
        parts.append(f'<text x="{lx + 16}" y="{ly + 10}" font-size="11">{e(_LABELS[k])}</text>')
    parts.append("</svg>")
    return "".join(parts)
