"""The hub's discovery workflow: notices in, leads merged per person, referrals out.

- :meth:`Hub.accept_notice` de-duplicates by ``notice_id`` (a replay gets a receipt marked
  duplicate for the first delivery, and changes nothing), merges notices about one person into
  one lead by ``person_key`` (HMAC-SHA256 of the identity under a hub secret), and refers the
  lead to a town or department chosen by the routing table, due in 5 working days.
- :meth:`Hub.add_manual_lead` takes grid workers' same-day reports the same way.
- :meth:`Hub.record_response`, :meth:`Hub.overdue`, :meth:`Hub.escalate` track referrals;
  :func:`hedui.node.discovery.report.monthly_report` counts them each month.

The identity is stored only sealed (HPKE) to the hub's own sealing key, in ``leads``;
:meth:`Hub.reveal_identity` opens it on demand for a caseworker.

Routing: :mod:`hedui.node.discovery.routing`; lead views: :mod:`~hedui.node.discovery.leads`;
referrals: :mod:`~hedui.node.discovery.referrals`; the monthly report: :mod:`~hedui.node.discovery.report`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, select, update

from hedui.adapters import idnum
from hedui.adapters.idnum import normalize as normalise_identity
from hedui.common.clock import Clock
from hedui.common.toml import load_toml
from hedui.keys import keyfile, sealing
from hedui.keys.directory import TrustedDirectory
from hedui.keys.sealing import SealingKey
from hedui.node.config import NodeConfig
from hedui.node.discovery.calendar import WorkCalendar, local_date
from hedui.node.discovery.intake import accept_notices
from hedui.node.discovery.leads import Leads
from hedui.node.discovery.routing import CODE_PATTERN, HubFile, Routing
from hedui.node.discovery.tables import insert_ignore, lead_events, leads, referrals
from hedui.node.errors import (
    ConfigError,
    HeduiError,
    InvalidArgument,
)
from hedui.v1 import notice_pb2

__all__ = ["Hub", "Acceptance", "load_hub", "load_sealing_key", "read_person_secret"]

log = logging.getLogger("hedui.discovery")

# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Acceptance:
    """What accepting a notice or a manual report did."""

    duplicate: bool
    lead_id: int | None
    referral_id: int | None  # None when merged into an open referral, or a duplicate
    new_lead: bool
    receipt: bytes | None  # the signed receipt envelope (notices only)


# ---------------------------------------------------------------- the hub


class Hub(Leads):
    """Hub-side discovery workflow over the node store: intake here, lead views and
    referrals from its bases (:class:`~hedui.node.discovery.leads.Leads`,
    :class:`~hedui.node.discovery.referrals.Referrals`)."""

    def __init__(
        self,
        engine: Engine,
        *,
        hub: str,
        person_secret: bytes,
        sealing_public: bytes,
        routing: Routing,
        calendar: WorkCalendar,
        clock: Clock,
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
        #: Stamps intake and referrals; its zone gives the local dates (DESIGN.md "Time").
        self.clock = clock
        self.referral_workdays = referral_workdays

    @classmethod
    def from_config(
        cls,
        engine: Engine,
        path: str | Path,
        *,
        sealing_public: bytes | None = None,
        calendar_overrides: str | Path | None = None,
        clock: Clock,
        passphrase: bytes | Callable[[], bytes] | None = None,
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

        The person secret is an encrypted key file (keys/keyfile.py, purpose
        ``hedui-person-secret``) opened with ``passphrase`` (bytes, or a function returning
        them, asked only when needed): with it and a database backup the lead identities
        could be rebuilt by HMAC search (issue 18, finding 4). A plaintext secret (older
        installations) is still read with a warning, and encrypted in place when a
        passphrase is at hand (:func:`read_person_secret`).
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
            person_secret=read_person_secret(rel(doc.person_secret_file), passphrase, what=f"{p}: person_secret_file"),
            sealing_public=public,
            routing=routing,
            calendar=WorkCalendar(rel(doc.calendar_overrides) if doc.calendar_overrides is not None else calendar_overrides),
            clock=clock,
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
        part opened with the hub key (:func:`~hedui.node.discovery.notice.open_notice`). Returns the signed receipt.

        Raises its refusals (``InvalidArgument``, e.g. ``INVALID_IDENTITY``,
        ``NOTICE_ID_REUSED``) before it writes anything, so the caller's transaction may go
        on with other notices. A batch goes through :func:`~hedui.node.discovery.intake.accept_notices`
        (this is its one-notice case)."""
        (result,) = self.accept_notices(conn, [(notice, opened, bytes(envelope))], sign_receipt=sign_receipt, now=now)
        if isinstance(result, HeduiError):
            raise result
        return result

    def accept_notices(
        self,
        conn: Connection,
        items: list[tuple[notice_pb2.Notice, notice_pb2.SealedDetails, bytes]],
        *,
        sign_receipt: Callable[[notice_pb2.Receipt], bytes],
        now: datetime | None = None,
    ) -> list[Acceptance | HeduiError]:
        """A batch of verified notices on ``conn`` (``(notice, opened, envelope)`` each): one
        result per notice, in order — the acceptance with its signed receipt, or the refusal
        of that notice (:func:`~hedui.node.discovery.intake.accept_notices`)."""
        return accept_notices(self, conn, items, sign_receipt=sign_receipt, now=now)

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
        at = now or self.clock.now()
        if not isinstance(region, str) or not re.fullmatch(r"[0-9A-Za-z]{1,32}", region):
            raise InvalidArgument(f"region: got {region!r}, want a region code")
        if not isinstance(event_type, str) or not re.fullmatch(r"[a-z][a-z0-9_.-]{0,63}", event_type):
            raise InvalidArgument(f"event_type: got {event_type!r}, want a lower-case code like 'illness'")
        if not isinstance(reporter, str) or not re.fullmatch(CODE_PATTERN, reporter):
            raise InvalidArgument(f"reporter: got {reporter!r}, want a staff or town code")
        if not isinstance(event_date, date) or event_date > local_date(at, self.clock.zone):
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
        due = self.calendar.add_workdays(local_date(at, self.clock.zone), self.referral_workdays)
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


# ---------------------------------------------------------------- on a node


def read_person_secret(path: Path, passphrase: bytes | Callable[[], bytes] | None, *, what: str) -> bytes:
    """The hub's person secret from ``path``: an encrypted key file, or (older installations)
    raw bytes, which are then encrypted in place (temp file + rename, 0600) if a passphrase
    is at hand, and otherwise used with a warning."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: got an unreadable file {path} ({exc.strerror}), want a file") from None

    def pw() -> bytes:
        if passphrase is None:
            raise ConfigError(f"{what}: {path} is encrypted; want the key passphrase (--config, or --passphrase-file)")
        return passphrase() if callable(passphrase) else passphrase

    if keyfile.is_current(data):
        return keyfile.decrypt(data, pw(), purpose=keyfile.PURPOSE_PERSON_SECRET, source=f"{what} {path}")
    try:
        key = pw()
    except ConfigError:  # no passphrase here (e.g. --db --hub-config): use it, say so
        log.warning("%s: %s is stored in plaintext; start the node or run `hedui keys rekey` to encrypt it", what, path)
        return data
    keyfile.save_secret(path, data, key, label=keyfile.PURPOSE_PERSON_SECRET)
    log.warning("%s: %s was stored in plaintext; encrypted it in place with the key passphrase", what, path)
    return data


def load_hub(
    cfg: NodeConfig,
    engine: Engine,
    directory: TrustedDirectory,
    clock: Clock,
    passphrase: bytes | Callable[[], bytes] | None = None,
) -> Hub:
    """The discovery :class:`Hub` of a hub node from its config, without its private key
    (what the ``leads``/``referrals``/``report`` commands need)."""
    h = cfg.hub
    if h is None or h.routing is None:
        raise ConfigError(
            'hub.routing: got none, want the hub discovery file (hub code, person-key secret, routes), '
            'e.g. routing = "hub-discovery.toml"'
        )
    me = directory.member(cfg.node.member)
    public = bytes(me.sealing_key)
    if len(public) != sealing.PUBLIC_KEY_SIZE:
        raise ConfigError(
            f"directory v{directory.version}: member {cfg.node.member!r} publishes a sealing key of {len(public)} bytes, "
            f"want the hub's {sealing.PUBLIC_KEY_SIZE}-byte key (sealing_key_hex in the directory spec)"
        )
    overrides = cfg.path(h.calendar_overrides) if h.calendar_overrides is not None else None
    hub = Hub.from_config(
        engine, cfg.path(h.routing), sealing_public=public, calendar_overrides=overrides, clock=clock, passphrase=passphrase
    )
    if hub.hub != cfg.node.member:
        raise ConfigError(f"hub.routing {h.routing}: hub: got {hub.hub!r}, want this node's member code {cfg.node.member!r}")
    return hub


def load_sealing_key(cfg: NodeConfig, directory: TrustedDirectory, passphrase: bytes) -> SealingKey:
    """The hub's private sealing key (``[hub] sealing_key``), which must be the one the
    directory publishes for this member."""
    h = cfg.hub
    if h is None or h.sealing_key is None:
        raise ConfigError('hub.sealing_key: got none, want the hub\'s encrypted sealing key, e.g. sealing_key = "sealing.key"')
    key = SealingKey.load(cfg.path(h.sealing_key), passphrase, allow_legacy=cfg.keys.allow_legacy)
    if key.public_bytes() != bytes(directory.member(cfg.node.member).sealing_key):
        raise ConfigError(
            f"hub.sealing_key: public part differs from the sealing key in directory v{directory.version}, "
            "want the key the directory publishes"
        )
    return key
