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
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from hedui.node import policy
from hedui.node.audit.entry import Kind
from hedui.node.discovery import notice as notice_
from hedui.node.errors import ConfigError, InvalidArgument, Reason
from hedui.node.rpc import Call, rpc_method
from hedui.v1 import common_pb2, notice_pb2, notice_pb2_grpc

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["NoticeServicer", "PUSH_METHOD"]

log = logging.getLogger("hedui.node.discovery")

PUSH_METHOD = "/hedui.v1.NoticeService/Push"


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

    @rpc_method(PUSH_METHOD, refusal_fields=_push_refusal_fields)
    def Push(self, request: notice_pb2.PushRequest, call: Call) -> notice_pb2.PushResponse:
        rt = self.rt
        caller = call.caller.code
        policy.check_method(rt, caller, PUSH_METHOD)
        if not request.HasField("notice"):
            raise InvalidArgument("notice: got none, want a DSSE envelope of a Notice", reason=Reason.BAD_ENVELOPE)
        payload = notice_.verify_notice(rt.directory, caller, request.notice)
        notice = notice_.read_notice(payload, caller=caller, hub=rt.member)
        opened = notice_.open_notice(notice, self.sealing_key)
        nid = bytes(notice.notice_id).hex()
        # One durable transaction for the notice (issue 16): the lead/referral merge, the
        # signed receipt and the notice.received + receipt entries commit together, entries
        # last (the audit head row lock is held until the commit).
        with rt.engine.begin() as conn:
            acc = self.hub.accept_notice(
                conn, notice, opened, envelope=request.notice.SerializeToString(), sign_receipt=lambda r: notice_.sign_receipt(r, rt.signer_for("answers"))
            )
            receipt = common_pb2.Envelope.FromString(acc.receipt)
            seqs = rt.audit.write_in(conn, rt.audit.prepare([
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
            ]))
        rt.audit.committed(seqs)
        rt.audit.offer_peer_checkpoint(caller, bytes(request.checkpoint.note))  # cosigned in the background
        log.info("notice %s from %s: %s", nid, caller, "duplicate" if acc.duplicate else f"lead {acc.lead_id}")
        return notice_pb2.PushResponse(
            receipt=receipt, checkpoint=common_pb2.SignedCheckpoint(note=rt.audit.latest_checkpoint_note())
        )
