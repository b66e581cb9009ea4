"""Provider side of active discovery on a node: detection on the rules' schedules, the
durable outbox, and the pusher that delivers notices to the hub over mTLS.

A provider takes part when its ``node.toml`` names rules and a hub::

    [provider]
    mapping = "mapping.toml"       # the department data detection reads (the adapter mapping)
    rules = "rules.toml"           # detection rules (docs/discovery.md)
    hub = "hub"                    # member code of the hub notices go to
    dedup_secret = "dedup.secret"  # optional: default next to a SQLite store, else next to node.toml
    calendar_overrides = "cal.toml"  # optional working-day overrides for due dates
    detect_at = "01:30"            # daily detection run (China time), or "manual"

- :meth:`ProviderNotices.run` reads every record through the mapping's adapter (rows the
  adapter cannot use are counted, never read further), runs the rules, and in **one
  transaction** queues a sealed, signed notice per new detection and records which rule
  periods have run. A re-run of a period queues nothing new (dedup keys).
- The notice's personal part is sealed (HPKE, ML-KEM-768 + X25519) to the hub's sealing key
  as published in the directory, and the notice is DSSE-signed with the node's signing key.
- :meth:`ProviderNotices.push` pushes due outbox rows (:class:`~hedui.node.discovery.outbox.Pusher`:
  claims, retries with exponential backoff and jitter) in batches of ``[provider] push_batch``
  (``PushBatch``; single ``Push`` to a hub that answers UNIMPLEMENTED), verifies each receipt
  against the hub's directory signing key and the SHA-256 of the exact notice payload, and
  marks the rows delivered with their receipts and ``notice.sent`` + ``receipt`` entries in
  one transaction. The hub is idempotent on notice ids, so a crash anywhere repeats at most a
  push, never a notice.

The dedup secret keys the ``dedup_key`` column (HMAC-SHA256 over provider, rule, period,
identity and event). It is created on first use (32 random bytes, encrypted with the key
passphrase like the other node secrets) and must then stay: a new secret gives every
detection a new key, so a re-run of a period already queued would queue it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from hedui.adapters import idnum
from hedui.keys import sealing
from hedui.keys.keyfile import load_secret, save_secret
from hedui.node.audit.entry import Kind
from hedui.node.discovery.calendar import WorkCalendar, local_date
from hedui.node.discovery.detect import Detection, detect
from hedui.node.discovery.doorbell import Doorbell, bell_name, ring
from hedui.node.discovery.notice import permanent_refusal, seal_notice, sign_notice, verify_receipt
from hedui.node.discovery.outbox import Delivered, Pusher, PushStats, enqueue_many
from hedui.node.discovery.rules import Rule, RuleSet, load_rules, period_for
from hedui.node.discovery.runs import MAX_LISTED, DetectionRun, _Counted
from hedui.node.discovery.tables import notice_outbox
from hedui.node.errors import (
    ConfigError,
    HeduiError,
    Reason,
    Unavailable,
    VerificationError,
    describe_remote,
    from_rpc_error,
    from_status,
)
from hedui.node.loops import PeriodicJob
from hedui.node.store.tables import node_state
from hedui.v1 import common_pb2, directory_pb2, notice_pb2

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = [
    "ProviderNotices",
    "DetectionRun",
    "DetectionScheduler",
    "PushLoop",
    "provider_background",
    "dedup_secret_path",
    "load_or_create_dedup_secret",
    "run_key",
    "DEDUP_SECRET_LABEL",
]

log = logging.getLogger("hedui.node.discovery.provider")

DEDUP_SECRET_LABEL = "hedui-dedup-secret"
_RUNS_KEY = "discovery.runs"


# ---------------------------------------------------------------- the dedup secret


def dedup_secret_path(cfg) -> Path:
    """``[provider] dedup_secret``, else ``dedup.secret`` next to a SQLite store file, else
    next to ``node.toml``."""
    p = cfg.provider
    if p is not None and p.dedup_secret is not None:
        return cfg.path(p.dedup_secret)
    url = make_url(cfg.store_url())
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / "dedup.secret"
    return cfg.base / "dedup.secret"


def load_or_create_dedup_secret(path: Path, passphrase: bytes) -> bytes:
    """The secret in ``path``; creates it first (atomically: of two processes creating it at
    once, both end up with the same one) if the file does not exist."""
    path = Path(path)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
        try:
            save_secret(tmp, os.urandom(32), passphrase, label=DEDUP_SECRET_LABEL)
            try:
                os.link(tmp, path)  # fails if another process created it meanwhile
                log.info("created the notice dedup secret %s; keep it with the node's keys", path)
            except FileExistsError:
                pass
        except OSError as exc:
            raise ConfigError(f"provider.dedup_secret {path}: cannot create it ({exc.strerror})") from None
        finally:
            tmp.unlink(missing_ok=True)
    return load_secret(path, passphrase, label=DEDUP_SECRET_LABEL)


# ---------------------------------------------------------------- detection runs


def run_key(rule: Rule, as_of: date) -> str:
    """What one scheduled run of ``rule`` covers: the period for last-week and last-month
    rules (run once per period), the day for rolling and this-year rules (run daily)."""
    if rule.period in ("last_week", "last_month"):
        return period_for(rule, as_of).key
    return as_of.isoformat()


# ---------------------------------------------------------------- the provider's notices


class ProviderNotices:
    """Detection, outbox and pushing for one provider runtime."""

    def __init__(
        self,
        rt: Runtime,
        *,
        clock: Callable[[], datetime] | None = None,
        base_delay: float = 2.0,
        max_delay: float = 900.0,
        lease: float = 120.0,
        timeout: float = 10.0,
        batch: int | None = None,
    ) -> None:
        cfg = rt.config
        p = cfg.provider
        if p is None or p.rules is None:
            raise ConfigError("provider.rules: got none, want a detection rule file (docs/discovery.md)")
        if not p.hub:
            raise ConfigError("provider.hub: got none, want the member code of the hub notices go to")
        if p.mapping is None:
            raise ConfigError("provider.mapping: got none, want the mapping of the department data detection reads")
        self.rt = rt
        self.rules: RuleSet = load_rules(cfg.path(p.rules))
        self.hub = p.hub
        hub_member = rt.directory.member(p.hub)
        if directory_pb2.ROLE_HUB not in hub_member.roles:
            raise ConfigError(f"provider.hub: got {p.hub!r}, a member without the hub role in directory v{rt.directory.version}")
        self.hub_public = bytes(hub_member.sealing_key)
        if len(self.hub_public) != sealing.PUBLIC_KEY_SIZE:
            raise ConfigError(
                f"provider.hub: {p.hub!r} publishes a sealing key of {len(self.hub_public)} bytes in directory "
                f"v{rt.directory.version}, want {sealing.PUBLIC_KEY_SIZE}"
            )
        self.hub_verifier = rt.directory.verifying_key(p.hub)
        self.mapping_path = cfg.path(p.mapping)
        self.calendar = WorkCalendar(cfg.path(p.calendar_overrides) if p.calendar_overrides is not None else None)
        self.secret_path = dedup_secret_path(cfg)
        self._secret: bytes | None = None
        # The runtime's clock (DESIGN.md "Time"); a test may pass its own ``now``.
        self._clock: Callable[[], datetime] = clock or rt.clock.now
        self.zone = rt.clock.zone
        self.timeout = timeout
        self.wake = threading.Event()
        #: The outbox doorbell of this store (docs: :mod:`~hedui.node.discovery.doorbell`).
        self.bell = bell_name(rt.engine)
        batch = p.push_batch if batch is None else batch   # notices per PushBatch; 1: single Push
        self.pusher = Pusher(
            rt.engine, self._send, self._verify,
            base_delay=base_delay, max_delay=max_delay, lease=lease, clock=self._clock, audit=self._audit_in,
            permanent=permanent_refusal, batch=batch, send_batch=self._send_batch if batch > 1 else None,
            in_flight=p.push_in_flight,
        )
        #: False once the hub answered PushBatch with UNIMPLEMENTED (an older hub): single pushes.
        self._hub_batches = True

    # ------------------------------------------------------------ detection

    def dedup_secret(self) -> bytes:
        if self._secret is None:
            self._secret = load_or_create_dedup_secret(self.secret_path, self.rt.passphrase)
        return self._secret

    def due_rules(self, as_of: date) -> tuple[Rule, ...]:
        """Rules whose run for ``as_of`` has not been recorded yet."""
        runs = self._runs()
        return tuple(r for r in self.rules.rules if runs.get(r.id) != run_key(r, as_of))

    def run(self, as_of: date | None = None, *, only_due: bool = False) -> DetectionRun:
        """Runs the rules over the department's records for ``as_of`` (default: today in
        China) and queues the notices; ``only_due`` runs only the rules whose period (or day)
        has not run yet — what the scheduler does."""
        from hedui.adapters import open_adapter

        as_of = as_of or local_date(self._clock(), self.zone)
        rules = self.due_rules(as_of) if only_due else self.rules.rules
        if not rules:
            return DetectionRun(as_of, (), 0, 0, (), 0)
        ruleset = replace(self.rules, rules=rules)
        secret = self.dedup_secret()
        adapter = open_adapter(self.mapping_path)
        try:
            adapter.check()
            counted = _Counted(adapter.records())
            found = detect(counted, ruleset, as_of, self.calendar, provider=self.rt.member, dedup_secret=secret)
        finally:
            adapter.close()
        limit = self.rt.config.provider.max_unusable_share if self.rt.config.provider is not None else 1.0
        # Skipped rows and truncation as the adapter saw them (file adapters name skipped rows;
        # others count them).
        named = tuple((idnum.scrub(loc), why) for loc, why in getattr(adapter, "skipped_rows", ())[:MAX_LISTED])
        truncated = getattr(adapter, "truncated", None)
        result = DetectionRun(as_of, tuple(r.id for r in rules), counted.records, counted.problems, tuple(found), 0,
                              tuple(counted.listed), limit, int(getattr(adapter, "skipped", 0)), named,
                              None if truncated is None else idnum.scrub(truncated))
        now = self._clock()
        with self.rt.engine.begin() as conn:
            queued = sum(created for _, created in enqueue_many(conn, found, self.sign_and_seal, hub=self.hub, now=now))
            # What was found is real and queued (a re-run dedups it); but a run that could not
            # read its data is not the period's run: the next one tries again.
            if not result.too_many_unusable:
                self._record_runs(conn, {r.id: run_key(r, as_of) for r in rules})
        log.log(
            logging.ERROR if result.too_many_unusable else logging.INFO,
            "detection for %s: %d rule(s), %d record(s), %d row(s) unusable (%.1f%%, limit %.1f%%)%s, %d skipped by filters, "
            "%d detection(s), %d newly queued",
            as_of, len(rules), counted.records, counted.problems, 100 * result.unusable_share, 100 * limit,
            f", export truncated at {result.truncated}" if result.truncated else "", result.skipped, len(found), queued,
        )
        if queued:
            self.queued()
        return replace(result, queued=queued)

    def queued(self) -> None:
        """Wakes the pusher after notices were queued (committed): this process's, and the
        serving node's through the outbox doorbell when this is another process."""
        self.wake.set()
        ring(self.bell)

    def run_now(self, as_of: date | None = None) -> DetectionRun:
        """Every rule, now (what ``hedui notices detect --config`` runs); the scheduler runs
        ``run(only_due=True)`` instead."""
        return self.run(as_of)

    def sign_and_seal(self, detection: Detection, notice_id: bytes) -> bytes:
        notice = seal_notice(
            detection, notice_id=notice_id, provider=self.rt.member, hub=self.hub,
            hub_sealing_key=self.hub_public, created_at=self._clock(),
        )
        return sign_notice(notice, self.rt.signer_for("answers"))

    def _runs(self) -> dict[str, str]:
        with self.rt.engine.connect() as conn:
            raw = conn.execute(select(node_state.c.value).where(node_state.c.key == _RUNS_KEY)).scalar()
        return json.loads(raw) if raw else {}

    @staticmethod
    def _record_runs(conn, keys: dict[str, str]) -> None:
        raw = conn.execute(select(node_state.c.value).where(node_state.c.key == _RUNS_KEY)).scalar()
        runs = json.loads(raw) if raw else {}
        runs.update(keys)
        value = json.dumps(runs, sort_keys=True)
        if raw is None:
            conn.execute(node_state.insert().values(key=_RUNS_KEY, value=value))
        else:
            conn.execute(update(node_state).where(node_state.c.key == _RUNS_KEY).values(value=value))

    # ------------------------------------------------------------ pushing

    def push(self, *, retry_now: bool = False) -> PushStats:
        """One pass over the due outbox rows; ``retry_now`` first makes every pending row due
        (an operator's "push now", ignoring the backoff)."""
        if retry_now:
            with self.rt.engine.begin() as conn:
                conn.execute(
                    update(notice_outbox)
                    .where(notice_outbox.c.status == "pending")
                    .values(next_attempt_at=self._clock())
                )
        stats = self.pusher.push_due()
        self._gauge()
        return stats

    def pending(self) -> int:
        with self.rt.engine.connect() as conn:
            return int(conn.execute(
                select(func.count()).select_from(notice_outbox).where(notice_outbox.c.status == "pending")
            ).scalar_one())

    def _gauge(self) -> None:
        m = getattr(self.rt, "metrics", None)
        if m is not None:
            try:
                m.outbox_pending.set(self.pending())
            except Exception:  # metrics never break pushing
                log.debug("outbox gauge not updated", exc_info=True)

    def close(self) -> None:
        """Closes the channel to the hub (cancels an RPC in flight)."""
        self.rt.peers.reset(self.hub)

    def _checkpoint_note(self) -> bytes:
        """The newest checkpoint the node's scheduler signed (every few seconds), for the hub
        to cosign. Signing a fresh one for every push would cost more than the push."""
        try:
            cp = self.rt.audit.log.latest_checkpoint()
            return cp.note.encode() if cp is not None else self.rt.audit.latest_checkpoint_note()
        except Exception:  # the checkpoint is for cosigning; a push goes without it
            log.debug("no checkpoint for the push", exc_info=True)
            return b""

    def _call(self, method: str, req):
        """One rpc to the hub; a failure comes back as the typed error, naming the hub."""
        client = self.rt.peers.get(self.hub)
        try:
            return getattr(client.notice, method)(req, timeout=self.timeout)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            if isinstance(err, Unavailable):
                # Start the next attempt on a fresh channel rather than wait out gRPC's own
                # reconnect backoff, which grows while the hub is away.
                self.rt.peers.reset(self.hub, client)
            err.message = f"hub {self.hub}: {describe_remote(err)}"[:400]
            raise err from None

    def _send(self, envelope: bytes) -> bytes:
        req = notice_pb2.PushRequest(notice=common_pb2.Envelope.FromString(envelope))
        req.checkpoint.note = self._checkpoint_note()
        resp = self._call("Push", req)
        if not resp.HasField("receipt"):
            raise VerificationError("push response: got no receipt, want a signed receipt", reason=Reason.RECEIPT_INVALID)
        # The hub's checkpoint: cosigned in the background (consistency-checked against the
        # last one this node cosigned for the hub), off the push path.
        self.rt.audit.offer_peer_checkpoint(self.hub, bytes(resp.checkpoint.note))
        return resp.receipt.SerializeToString()

    def _send_batch(self, envelopes: list[bytes]) -> list[bytes | BaseException]:
        """``NoticeService.PushBatch``: one result per notice (its receipt, or the hub's
        refusal of it as the typed error). A hub that does not know PushBatch yet (UNIMPLEMENTED)
        gets single pushes from then on."""
        if not self._hub_batches:
            return self._send_each(envelopes)
        req = notice_pb2.PushBatchRequest(notices=[common_pb2.Envelope.FromString(e) for e in envelopes])
        req.checkpoint.note = self._checkpoint_note()
        try:
            resp = self._call("PushBatch", req)
        except HeduiError as err:
            if err.remote_code != "UNIMPLEMENTED":
                raise
            log.warning("hub %s does not take PushBatch; pushing notices one by one", self.hub)
            self._hub_batches = False
            return self._send_each(envelopes)
        self.rt.audit.offer_peer_checkpoint(self.hub, bytes(resp.checkpoint.note))
        out: list[bytes | BaseException] = []
        for r in resp.results:
            which = r.WhichOneof("result")
            if which == "receipt":
                out.append(r.receipt.SerializeToString())
            elif which == "refusal":
                err = from_status(r.refusal.code, r.refusal.details)
                err.message = f"hub {self.hub}: {describe_remote(err)}"[:400]
                out.append(err)
            else:
                out.append(VerificationError("push result: got neither a receipt nor a refusal", reason=Reason.RECEIPT_INVALID))
        return out   # the pusher checks there is one result per notice

    def _send_each(self, envelopes: list[bytes]) -> list[bytes | BaseException]:
        out: list[bytes | BaseException] = []
        for e in envelopes:
            try:
                out.append(self._send(e))
            except Exception as exc:
                out.append(exc)
        return out

    def _verify(self, _envelope: bytes, receipt_bytes: bytes) -> notice_pb2.Receipt:
        return verify_receipt(receipt_bytes, hub=self.hub, verifier=self.hub_verifier)

    def _audit_in(self, conn, delivered: list[Delivered]) -> Callable[[], None]:
        """``notice.sent`` + ``receipt`` per delivered notice, written on the delivery
        transaction's ``conn`` (one commit for the rows and their entries)."""
        items: list[tuple[str, dict]] = []
        for notice_id, envelope, receipt_bytes, receipt in delivered:
            payload = common_pb2.Envelope.FromString(envelope).payload
            notice = notice_pb2.Notice.FromString(payload)
            nid = notice_id.hex()
            items += [
                (Kind.NOTICE_SENT, {
                    "request_id": nid,
                    "peer": self.hub,
                    "request_digest": hashlib.sha256(payload).hexdigest(),
                    "rule": notice.rule,
                    "event_type": notice.event_type,
                    "due_date": notice.due_date,
                }),
                (Kind.RECEIPT, {
                    "request_id": nid,
                    "peer": self.hub,
                    "answer_digest": hashlib.sha256(common_pb2.Envelope.FromString(receipt_bytes).payload).hexdigest(),
                    "duplicate": receipt.duplicate,
                    "received_at": receipt.received_at.ToDatetime(tzinfo=UTC).isoformat(),
                }),
            ]
        seqs = self.rt.audit.write_in(conn, self.rt.audit.prepare(items))
        return lambda: self.rt.audit.committed(seqs)


# ---------------------------------------------------------------- background jobs


class DetectionScheduler(PeriodicJob):
    """Runs the due rules once a day at ``at`` (China time), and at start if that time has
    passed today: monthly and weekly rules once per period, rolling and this-year rules once
    per day (see :func:`run_key`). A failed run is retried within the hour."""

    def __init__(self, notices: ProviderNotices, *, at: time = time(1, 30), clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(f"detection-{notices.rt.member}", interval=3600.0)
        self.notices = notices
        self.at = at
        self._clock = clock or notices._clock
        self._zone = notices.zone

    def step(self) -> float:
        """Runs the due rules if today's run time has come; returns the seconds to wait
        before the next step (at most an hour)."""
        now = self._clock().astimezone(self._zone)
        today_at = datetime.combine(now.date(), self.at, self._zone)
        if now < today_at:
            return min(3600.0, max(1.0, (today_at - now).total_seconds()))
        self.notices.run(now.date(), only_due=True)
        return min(3600.0, max(1.0, (today_at + timedelta(days=1) - now).total_seconds()))


class PushLoop(PeriodicJob):
    """Pushes due outbox rows every ``poll_interval`` seconds, or at once when a detection
    run queued something (``notices.wake``: a run in this process sets it, a run in another
    process on this host rings the outbox doorbell, which sets it). ``stop()`` closes the
    channel, so an RPC in flight ends now."""

    def __init__(self, notices: ProviderNotices, *, poll_interval: float = 1.0) -> None:
        super().__init__(f"pusher-{notices.rt.member}", interval=poll_interval, wake=notices.wake)
        self.notices = notices
        self.doorbell = Doorbell(notices.bell, notices.wake)

    def start(self) -> None:
        self.doorbell.start()
        super().start()

    def stop(self) -> None:
        super().stop()
        self.doorbell.stop()

    def step(self) -> None:
        self.notices.push()

    def interrupt(self) -> None:
        self.notices.close()

    def final(self) -> None:
        self.notices.close()


def provider_background(rt: Runtime) -> list:
    """Background jobs of a provider node that detects and pushes notices: the daily
    detection scheduler (unless ``detect_at = "manual"``) and the pusher. ``[]`` when the
    provider has no ``[provider] rules``."""
    p = rt.config.provider
    notices = rt.notices
    if p is None or notices is None:
        return []
    jobs: list = []
    if p.detect_at != "manual":
        hh, mm = p.detect_at.split(":")
        jobs.append(DetectionScheduler(notices, at=time(int(hh), int(mm))))
    jobs.append(PushLoop(notices, poll_interval=p.push_interval))
    return jobs
