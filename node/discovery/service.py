"""Hub side of active discovery over gRPC: ``NoticeService.Push`` (thin: the wire format
is :mod:`~hedui.node.discovery.notice`, the workflow :mod:`~hedui.node.discovery.hub`).

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

The ``notice.received`` and ``receipt`` entries commit in the same transaction as the
notice (issue 16), so a crash leaves either all of it or none; the hub then answers with the
receipt and its latest signed checkpoint.

Batches (``PushBatch``, issue 16): up to :data:`MAX_BATCH` notices per call, authorised by
the same directory rule as ``Push``. Step 1 and the batch's size (``BATCH_TOO_LARGE``) refuse
the whole call with a status; nothing is stored and the refusal is audited once. Steps 2-4 run
for each notice outside any transaction; then one transaction takes every notice that passed
(step 5; ``NOTICE_ID_REUSED`` refuses that notice only, before anything of it is written),
with the receipts, the ``notice.received`` + ``receipt`` entries of each accepted notice and a
``refusal`` entry (method ``PushBatch``, the notice id it claims, or its payload digest) for
each refused one: one durable commit per batch (group commit). The answer has one result per
notice in request order — a signed receipt, or a ``NoticeRefusal`` with the status code and
``REASON: message`` that ``Push`` would have answered — so one malformed or forged notice
never sinks the good ones beside it. A failure of the transaction itself (the store) fails
the whole call and leaves nothing: the provider pushes the batch again.

The hub's discovery settings come from ``node.toml``::

    [hub]
    sealing_key = "sealing.key"          # encrypted private sealing key (key passphrase)
    routing = "hub-discovery.toml"       # hub code, person-key secret, routes (Hub.from_config)
    calendar_overrides = "calendar.toml" # optional, used when hub-discovery.toml names none

The public sealing key is the one the directory publishes for this member; the private key
must match it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from hedui.node import policy
from hedui.node.audit.entry import Kind
from hedui.node.discovery import notice as notice_
from hedui.node.errors import ConfigError, HeduiError, InvalidArgument, Reason, to_status
from hedui.node.rpc import Call, rpc_method
from hedui.node.store.db import is_sqlite
from hedui.v1 import common_pb2, notice_pb2, notice_pb2_grpc

if TYPE_CHECKING:
    from hedui.node.discovery.hub import Acceptance
    from hedui.node.runtime import Runtime

__all__ = ["NoticeServicer", "PUSH_METHOD", "PUSH_BATCH_METHOD", "MAX_BATCH"]

log = logging.getLogger("hedui.node.discovery")

PUSH_METHOD = "/hedui.v1.NoticeService/Push"
PUSH_BATCH_METHOD = "/hedui.v1.NoticeService/PushBatch"
#: Notices per PushBatch call (about 2 KB each: well under the 32 MiB message limit).
MAX_BATCH = 500


def _push_refusal_fields(request: notice_pb2.PushRequest) -> dict:
    """Audit fields of a refused Push: the notice id the (unverified) payload claims, and the
    digest of the payload bytes."""
    return _refusal_fields(request.notice)


def _refusal_fields(env: common_pb2.Envelope) -> dict:
    """The notice id an (unverified) envelope's payload claims, and the payload's digest; a
    payload that names no usable id is named by its digest (the audit needs a request id)."""
    payload = bytes(env.payload)
    out = {"request_digest": hashlib.sha256(payload).hexdigest()}
    try:
        nid = bytes(notice_pb2.Notice.FromString(payload).notice_id)
    except DecodeError:
        nid = b""
    if 1 <= len(nid) <= 32:
        out["request_id"] = nid.hex()
    return out


class NoticeServicer(notice_pb2_grpc.NoticeServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        # A hub without its discovery file or sealing key cannot take notices: it does not start.
        if rt.hub is None or rt.hub.discovery is None:
            raise ConfigError(
                'hub.routing: got none, want the hub discovery file (hub code, person-key secret, routes), '
                'e.g. routing = "hub-discovery.toml"'
            )
        if rt.hub.sealing_key is None:
            raise ConfigError('hub.sealing_key: got none, want the hub\'s encrypted sealing key, e.g. sealing_key = "sealing.key"')
        self.rt = rt
        self.hub, self.sealing_key = rt.hub.discovery, rt.hub.sealing_key
        # SQLite has one writer at a time, and a writer that finds the file locked sleeps in
        # SQLite's busy handler (steps up to 100 ms) before it tries again: concurrent batches
        # would leave the hub idle between them. They queue here instead and go on the moment
        # the previous one commits. PostgreSQL locks rows, so batches there run side by side.
        self._intake: contextlib.AbstractContextManager = threading.Lock() if is_sqlite(rt.engine) else contextlib.nullcontext()

    def _check(self, caller: str, env: common_pb2.Envelope) -> tuple[bytes, notice_pb2.Notice, notice_pb2.SealedDetails]:
        """Steps 2-4 for one envelope: verified payload, parsed notice, opened sealed part."""
        payload = notice_.verify_notice(self.rt.directory, caller, env)
        notice = notice_.read_notice(payload, caller=caller, hub=self.rt.member)
        return payload, notice, notice_.open_notice(notice, self.sealing_key)

    def _accept(self, conn, caller: str, env: common_pb2.Envelope, payload: bytes, notice: notice_pb2.Notice,
                opened: notice_pb2.SealedDetails) -> tuple[common_pb2.Envelope, list, bool]:
        """Step 5 on ``conn`` (the caller's transaction): the signed receipt and the
        ``notice.received`` + ``receipt`` entries (prepared, to be written in ``conn``)."""
        rt = self.rt
        acc = self.hub.accept_notice(
            conn, notice, opened, envelope=env.SerializeToString(), sign_receipt=lambda r: notice_.sign_receipt(r, rt.signer_for("answers"))
        )
        receipt = common_pb2.Envelope.FromString(acc.receipt)
        return receipt, self._entries(caller, payload, notice, acc, receipt), acc.duplicate

    @staticmethod
    def _entries(caller: str, payload: bytes, notice: notice_pb2.Notice, acc: Acceptance, receipt: common_pb2.Envelope) -> list:
        """The ``notice.received`` and ``receipt`` entries of an accepted notice."""
        nid = bytes(notice.notice_id).hex()
        log.info("notice %s from %s: %s", nid, caller, "duplicate" if acc.duplicate else f"lead {acc.lead_id}")
        return [
            (Kind.NOTICE_RECEIVED, {
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
            (Kind.RECEIPT, {
                "request_id": nid,
                "peer": caller,
                "answer_digest": hashlib.sha256(receipt.payload).hexdigest(),
                "duplicate": acc.duplicate,
            }),
        ]

    @rpc_method(PUSH_METHOD, refusal_fields=_push_refusal_fields)
    def Push(self, request: notice_pb2.PushRequest, call: Call) -> notice_pb2.PushResponse:
        rt = self.rt
        caller = call.caller.code
        policy.check_method(rt, caller, PUSH_METHOD)
        if not request.HasField("notice"):
            raise InvalidArgument("notice: got none, want a DSSE envelope of a Notice", reason=Reason.BAD_ENVELOPE)
        payload, notice, opened = self._check(caller, request.notice)
        # One durable transaction for the notice (issue 16): the lead/referral merge, the
        # signed receipt and the notice.received + receipt entries commit together, entries
        # last (the audit head row lock is held until the commit).
        with self._intake, rt.engine.begin() as conn:
            receipt, entries, _ = self._accept(conn, caller, request.notice, payload, notice, opened)
            seqs = rt.audit.write_in(conn, rt.audit.prepare(entries))
        rt.audit.committed(seqs)
        rt.audit.offer_peer_checkpoint(caller, bytes(request.checkpoint.note))  # cosigned in the background
        return notice_pb2.PushResponse(
            receipt=receipt, checkpoint=common_pb2.SignedCheckpoint(note=rt.audit.latest_checkpoint_note())
        )

    @rpc_method(PUSH_BATCH_METHOD)
    def PushBatch(self, request: notice_pb2.PushBatchRequest, call: Call) -> notice_pb2.PushBatchResponse:
        """Several notices, one transaction (module docstring, "Batches")."""
        rt = self.rt
        caller = call.caller.code
        # A batch is several pushes: the directory's Push rule authorises it.
        policy.check_method(rt, caller, PUSH_METHOD)
        n = len(request.notices)
        if not 1 <= n <= MAX_BATCH:
            raise InvalidArgument(f"notices: got {n}, want 1..{MAX_BATCH} notice envelopes", reason=Reason.BATCH_TOO_LARGE)
        # Signatures and seals are checked outside the transaction (CPU only, no lock held).
        checked: list[tuple[bytes, notice_pb2.Notice, notice_pb2.SealedDetails] | HeduiError] = []
        for env in request.notices:
            try:
                checked.append(self._check(caller, env))
            except HeduiError as err:
                checked.append(err)
        passed = [(j, item) for j, item in enumerate(checked) if not isinstance(item, HeduiError)]
        entries: list = []
        refused = 0
        sign = lambda r: notice_.sign_receipt(r, rt.signer_for("answers"))  # noqa: E731
        with self._intake, rt.engine.begin() as conn:
            accepted = self.hub.accept_notices(
                conn, [(item[1], item[2], request.notices[j].SerializeToString()) for j, item in passed], sign_receipt=sign
            )
            outcome: list = list(checked)
            for (j, item), acc in zip(passed, accepted, strict=True):
                outcome[j] = acc if isinstance(acc, HeduiError) else (item, acc)
            results: list[notice_pb2.PushResult] = []
            for env, res in zip(request.notices, outcome, strict=True):
                if not isinstance(res, HeduiError):
                    (payload, notice, _opened), acc = res
                    receipt = common_pb2.Envelope.FromString(acc.receipt)
                    results.append(notice_pb2.PushResult(receipt=receipt))
                    entries += self._entries(caller, payload, notice, acc, receipt)
                    continue
                refused += 1
                code, details = to_status(res)
                fields = _refusal_fields(env)
                results.append(notice_pb2.PushResult(refusal=notice_pb2.NoticeRefusal(code=code.name, details=details)))
                entries.append((Kind.REFUSAL, {
                    "method": PUSH_BATCH_METHOD, "peer": caller, "code": code.name,
                    "reason": res.reason, "outcome": res.reason,
                    # a payload naming no usable id is named by its digest
                    "request_id": fields.get("request_id") or fields["request_digest"][:32], **fields,
                }))
                rt.metrics.refusals.labels(res.reason.value if res.reason else "UNSPECIFIED").inc()
            # Receipts and entries of the whole batch commit together (group commit): one
            # durable commit for up to MAX_BATCH notices, entries last.
            seqs = rt.audit.write_in(conn, rt.audit.prepare(entries))
        rt.audit.committed(seqs)
        if refused:
            log.info("batch from %s: %d of %d notice(s) refused", caller, refused, n)
        rt.audit.offer_peer_checkpoint(caller, bytes(request.checkpoint.note))
        return notice_pb2.PushBatchResponse(
            results=results, checkpoint=common_pb2.SignedCheckpoint(note=rt.audit.latest_checkpoint_note())
        )
