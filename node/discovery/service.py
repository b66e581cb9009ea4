"""Hub side of active discovery over gRPC: ``NoticeService.Push`` and the escalation job.

``Push`` takes one notice through these steps, in this order; each refusal is a typed error
with a stable reason (the gRPC details start with it), the :func:`~hedui.node.rpc.rpc_method`
wrapper audits it as a ``refusal`` entry, and nothing is stored:

1. the caller is a directory member (its mTLS certificate; ``NOT_A_MEMBER``) with a directory
   rule for ``/hedui.v1.NoticeService/Push`` at this hub or ``*`` (``METHOD_NOT_ALLOWED``);
2. the DSSE envelope verifies over its exact payload bytes against the *caller's* signing key
   from the directory (``BAD_ENVELOPE``, ``UNKNOWN_SIGNER``, ``BAD_SIGNATURE``): a notice
   signed by another member, or by any key that is not the caller's, is refused;
3. only then is the payload parsed as a ``Notice`` (``BAD_NOTICE``), which must name the caller
   as provider (``PROVIDER_MISMATCH``) and this node as hub (``WRONG_HUB``);
4. the sealed part opens with the hub's private sealing key, bound to the public metadata
   (``SEAL_OPEN_FAILED``), and carries a valid identity number (``INVALID_IDENTITY``);
5. :meth:`~hedui.node.discovery.hub.Hub.accept_notice` runs in one transaction: inbox row,
   the lead merged by person key, a referral if the lead has no open one, and the signed
   receipt. It is idempotent on ``notice_id``: a replay gets a receipt marked ``duplicate``
   for the first delivery and changes nothing (a reused id with other contents is refused,
   ``NOTICE_ID_REUSED``).

After the commit the hub audits ``notice.received`` and ``receipt`` and answers with the
receipt and its latest signed checkpoint. (The audit log has its own transactions: if the hub
dies between the commit and the audit entries, the provider got no receipt, pushes again, and
the duplicate is audited then.)

The hub's discovery settings come from ``node.toml``::

    [hub]
    sealing_key = "sealing.key"          # encrypted private sealing key (key passphrase)
    routing = "hub-discovery.toml"       # hub code, person-key secret, routes (Hub.from_config)
    calendar_overrides = "calendar.toml" # optional, used when hub-discovery.toml names none

The public sealing key is the one the directory publishes for this member; the private key
must match it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Callable

from google.protobuf.message import DecodeError

from hedui.adapters.idnum import scrub
from hedui.keys import dsse, sealing
from hedui.keys.sealing import SealingKey
from hedui.node import policy
from hedui.node.discovery.calendar import CHINA_TZ, local_date
from hedui.node.discovery.hub import Hub, ReferralView, open_notice
from hedui.node.errors import ConfigError, InvalidArgument, PermissionDenied, Reason, VerificationError
from hedui.node.rpc import Call, rpc_method
from hedui.v1 import common_pb2, notice_pb2, notice_pb2_grpc

__all__ = ["NoticeServicer", "hub_background", "hub_state", "load_hub", "HubState", "EscalationJob", "PUSH_METHOD"]

log = logging.getLogger("hedui.node.verification")

PUSH_METHOD = "/hedui.v1.NoticeService/Push"
_STATE_LOCK = threading.Lock()


@dataclass(frozen=True)
class HubState:
    hub: Hub
    sealing_key: SealingKey


def load_hub(cfg, engine, directory) -> Hub:
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
    hub = Hub.from_config(engine, cfg.path(h.routing), sealing_public=public, calendar_overrides=overrides)
    if hub.hub != cfg.node.member:
        raise ConfigError(f"hub.routing {h.routing}: hub: got {hub.hub!r}, want this node's member code {cfg.node.member!r}")
    return hub


def hub_state(rt) -> HubState:
    """The hub's discovery state (loaded once per runtime): the Hub and the private key."""
    with _STATE_LOCK:
        st = rt.extras.get("discovery.hub")
        if st is None:
            hub = load_hub(rt.config, rt.engine, rt.directory)
            if rt.config.hub.sealing_key is None:
                raise ConfigError('hub.sealing_key: got none, want the hub\'s encrypted sealing key, e.g. sealing_key = "sealing.key"')
            key = SealingKey.load(rt.config.path(rt.config.hub.sealing_key), rt.passphrase)
            if key.public_bytes() != bytes(rt.directory.member(rt.member).sealing_key):
                raise ConfigError(
                    f"hub.sealing_key: public part differs from the sealing key in directory v{rt.directory.version}, "
                    "want the key the directory publishes"
                )
            st = rt.extras["discovery.hub"] = HubState(hub, key)
    return st


def _push_refusal_fields(request: notice_pb2.PushRequest) -> dict:
    """Audit fields of a refused Push: the notice id the (unverified) payload claims, and the
    digest of the payload bytes."""
    payload = bytes(request.notice.payload)
    out = {"request_digest": hashlib.sha256(payload).hexdigest()}
    try:
        nid = bytes(notice_pb2.Notice.FromString(payload).notice_id)
    except DecodeError:
        nid = b""
    if 1 <= len(nid) <= 32:
        out["request_id"] = nid.hex()
    return out


def verify_notice(directory, caller: str, env: common_pb2.Envelope) -> bytes:
    """The envelope's payload once it verifies against ``caller``'s directory key."""
    vk = directory.verifying_key(caller)
    try:
        payload, _ = dsse.verify(env, {vk.keyid: vk}, payload_type=dsse.NOTICE)
    except VerificationError as exc:
        if exc.reason == Reason.UNKNOWN_SIGNER:
            raise VerificationError(
                f"notice envelope: signed by {', '.join(s.keyid[:60] for s in env.signatures)}, "
                f"want the caller's key {vk.keyid}",
                reason=Reason.UNKNOWN_SIGNER,
            ) from None
        raise
    return payload


class NoticeServicer(notice_pb2_grpc.NoticeServiceServicer):
    def __init__(self, rt) -> None:
        self.rt = rt
        self.state = hub_state(rt)  # a bad hub config stops the node at start

    def _sign_receipt(self, receipt: notice_pb2.Receipt) -> bytes:
        return dsse.sign(dsse.RECEIPT, receipt.SerializeToString(), [self.rt.signer]).SerializeToString()

    @rpc_method(PUSH_METHOD, refusal_fields=_push_refusal_fields)
    def Push(self, request: notice_pb2.PushRequest, call: Call) -> notice_pb2.PushResponse:
        rt, st = self.rt, self.state
        caller = call.caller.code
        policy.check_method(rt, caller, PUSH_METHOD)
        if not request.HasField("notice"):
            raise InvalidArgument("notice: got none, want a DSSE envelope of a Notice", reason=Reason.BAD_ENVELOPE)
        payload = verify_notice(rt.directory, caller, request.notice)
        try:
            notice = notice_pb2.Notice.FromString(payload)
        except DecodeError:
            raise InvalidArgument("notice: signed payload is not a Notice message", reason=Reason.BAD_NOTICE) from None
        if notice.provider != caller:
            raise PermissionDenied(
                f"notice.provider: got {notice.provider[:64]!r}, want the caller {caller!r}", reason=Reason.PROVIDER_MISMATCH
            )
        if notice.hub != rt.member:
            raise InvalidArgument(f"notice.hub: got {notice.hub[:64]!r}, want {rt.member!r}", reason=Reason.WRONG_HUB)
        opened = open_notice(notice, st.sealing_key)
        with rt.engine.begin() as conn:
            acc = st.hub.accept_notice(
                conn, notice, opened, envelope=request.notice.SerializeToString(), sign_receipt=self._sign_receipt
            )
        receipt = common_pb2.Envelope.FromString(acc.receipt)
        nid = bytes(notice.notice_id).hex()
        rt.audit.record_many([
            ("notice.received", {
                "request_id": nid,
                "peer": caller,
                "request_digest": hashlib.sha256(payload).hexdigest(),
                "outcome": "duplicate" if acc.duplicate else "ok",
                "rule": notice.rule,
                "event_type": notice.event_type,
                "lead_id": acc.lead_id,
                "new_lead": acc.new_lead,
                "referral_id": acc.referral_id,
            }),
            ("receipt", {
                "request_id": nid,
                "peer": caller,
                "answer_digest": hashlib.sha256(receipt.payload).hexdigest(),
                "duplicate": acc.duplicate,
            }),
        ])
        rt.audit.offer_peer_checkpoint(caller, bytes(request.checkpoint.note))  # cosigned in the background
        log.info("notice %s from %s: %s", nid, caller, "duplicate" if acc.duplicate else f"lead {acc.lead_id}")
        return notice_pb2.PushResponse(
            receipt=receipt, checkpoint=common_pb2.SignedCheckpoint(note=rt.audit.latest_checkpoint_note())
        )


# ---------------------------------------------------------------- background


def _now() -> datetime:
    return datetime.now(timezone.utc)


class EscalationJob:
    """Escalates overdue referrals (通报督办) once a day at ``at`` (China time), and once at
    start to catch up; each run that escalates something is audited (``admin`` entry,
    action ``referrals.escalate``). ``stop()`` returns promptly."""

    def __init__(self, rt, *, at: time = time(8, 0), clock: Callable[[], datetime] = _now) -> None:
        self.rt = rt
        self.at = at
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, as_of=None) -> list[ReferralView]:
        """Escalates every open referral due before ``as_of`` (default: today in China)."""
        hub = hub_state(self.rt).hub
        as_of = as_of or local_date(self._clock())
        views = hub.escalate(as_of)
        if views:
            self.rt.audit.record("admin", {
                "action": "referrals.escalate",
                "operator": "hedui/escalation-job",
                "as_of": as_of.isoformat(),
                "count": len(views),
                "referral_ids": [v.referral_id for v in views],
            })
            log.warning("escalated %d overdue referral(s) as of %s", len(views), as_of)
        return views

    def _seconds_to_next(self) -> float:
        now = self._clock().astimezone(CHINA_TZ)
        nxt = datetime.combine(now.date(), self.at, CHINA_TZ)
        if nxt <= now:
            nxt += timedelta(days=1)
        return (nxt - now).total_seconds()

    def _run(self) -> None:
        last = None  # the China date of the last successful run; None: run at start
        while not self._stop.is_set():
            now = self._clock().astimezone(CHINA_TZ)
            if last is None or (now.date() != last and now.time() >= self.at):
                try:
                    self.run_once(now.date())
                    last = now.date()
                except Exception as exc:  # keep the job alive; the store may be briefly away
                    log.error("referral escalation failed: %s", scrub(f"{type(exc).__name__}: {exc}")[:300])
            # Wake at least hourly, so a failed run is retried and a changed clock is noticed.
            self._stop.wait(min(self._seconds_to_next(), 3600.0))

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"escalation-{self.rt.member}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        t, self._thread = self._thread, None
        self._stop.set()
        if t is not None:
            t.join(timeout=10)


def hub_background(rt) -> list:
    """Background jobs of a hub node: the daily overdue-referral escalation."""
    hub_state(rt)
    return [EscalationJob(rt)]
