"""Both ends of ``NoticeService.Push`` (``notice.proto``): a notice and its receipt.

Provider end: :func:`seal_notice` builds the :class:`~hedui.v1.notice_pb2.Notice` for a
detection (public metadata in clear; identity and details HPKE-sealed to the hub's key,
RFC 9180, with the metadata bound in by :func:`notice_aad`), :func:`sign_notice` wraps it in a
DSSE envelope, :func:`verify_receipt` and :func:`check_receipt` accept the hub's signed
receipt, and :func:`permanent_refusal` tells a refusal of the notice itself from a passing one.

Hub end: :func:`verify_notice` checks the envelope over its exact bytes against the caller's
directory key before anything is parsed (DESIGN.md "Signed messages"), :func:`read_notice`
parses it and checks who it is from and to, :func:`notice_fields` checks its public fields,
:func:`open_notice` opens the sealed part, :func:`make_receipt` and :func:`sign_receipt`
answer it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from hedui.keys import dsse, sealing
from hedui.keys.directory import TrustedDirectory
from hedui.keys.signing import SigningKey, VerifyingKey
from hedui.node.discovery.detect import Detection
from hedui.node.errors import HeduiError, InvalidArgument, PermissionDenied, Reason, VerificationError, from_rpc_error
from hedui.v1 import common_pb2, notice_pb2

__all__ = [
    "NOTICE_PAYLOAD_TYPE",
    "RECEIPT_PAYLOAD_TYPE",
    "PERMANENT_REASONS",
    "notice_aad",
    "seal_notice",
    "sign_notice",
    "verify_notice",
    "read_notice",
    "notice_fields",
    "open_notice",
    "make_receipt",
    "sign_receipt",
    "verify_receipt",
    "check_receipt",
    "permanent_refusal",
]

NOTICE_PAYLOAD_TYPE = dsse.NOTICE
RECEIPT_PAYLOAD_TYPE = dsse.RECEIPT
_NOTICE_ID_SIZE = 16


# ---------------------------------------------------------------- the notice


def notice_aad(notice: notice_pb2.Notice) -> bytes:
    """The public metadata a notice's sealed part is bound to: every public field except the
    sealed ones, length-prefixed, in field order."""
    parts = [
        notice.notice_id,
        notice.provider.encode(),
        notice.hub.encode(),
        notice.rule.encode(),
        notice.event_type.encode(),
        notice.region.encode(),
        notice.event_date.encode(),
        notice.due_date.encode(),
        f"{notice.created_at.seconds}.{notice.created_at.nanos:09d}".encode(),
    ]
    out = bytearray(b"hedui.notice.v1")
    for p in parts:
        out += len(p).to_bytes(4, "big") + p
    return bytes(out)


def seal_notice(
    detection: Detection,
    *,
    notice_id: bytes,
    provider: str,
    hub: str,
    hub_sealing_key: bytes,
    created_at: datetime,
    name: str = "",
) -> notice_pb2.Notice:
    """The notice for ``detection``: public metadata in clear, identity and details sealed to
    ``hub_sealing_key`` (the hub's published 1,216-byte key). The caller signs its bytes."""
    if len(notice_id) != _NOTICE_ID_SIZE:
        raise InvalidArgument(f"notice_id: got {len(notice_id)} bytes, want {_NOTICE_ID_SIZE}")
    notice = notice_pb2.Notice(
        notice_id=notice_id,
        provider=provider,
        hub=hub,
        rule=detection.rule,
        event_type=detection.event_type,
        region=detection.region,
        event_date=detection.event_date.isoformat(),
        due_date=detection.due_date.isoformat(),
    )
    notice.created_at.FromDatetime(created_at.astimezone(UTC))
    details = notice_pb2.SealedDetails(identity=detection.identity, name=name, details=dict(detection.details))
    enc, ct, suite = sealing.seal(hub_sealing_key, details.SerializeToString(), notice_aad(notice))
    notice.sealed_enc = enc
    notice.sealed_ciphertext = ct
    notice.sealed_suite = suite
    return notice


def sign_notice(notice: notice_pb2.Notice, signer: SigningKey) -> bytes:
    """The serialised DSSE envelope of ``notice`` signed by the provider."""
    return dsse.sign(NOTICE_PAYLOAD_TYPE, notice.SerializeToString(), [signer]).SerializeToString()


def verify_notice(directory: TrustedDirectory, caller: str, env: common_pb2.Envelope) -> bytes:
    """The envelope's payload once it verifies against ``caller``'s directory key: a notice
    signed by another member, or by any key that is not the caller's, is refused."""
    vk = directory.verifying_key(caller)
    try:
        payload, _ = dsse.verify(env, {vk.keyid: vk}, payload_type=NOTICE_PAYLOAD_TYPE)
    except VerificationError as exc:
        if exc.reason == Reason.UNKNOWN_SIGNER:
            raise VerificationError(
                f"notice envelope: signed by {', '.join(s.keyid[:60] for s in env.signatures)}, "
                f"want the caller's key {vk.keyid}",
                reason=Reason.UNKNOWN_SIGNER,
            ) from None
        raise
    return payload


def read_notice(payload: bytes, *, caller: str, hub: str) -> notice_pb2.Notice:
    """The verified payload parsed as a notice from ``caller`` to ``hub``."""
    try:
        notice = notice_pb2.Notice.FromString(payload)
    except DecodeError:
        raise InvalidArgument("notice: signed payload is not a Notice message", reason=Reason.BAD_NOTICE) from None
    if notice.provider != caller:
        raise PermissionDenied(
            f"notice.provider: got {notice.provider[:64]!r}, want the caller {caller!r}", reason=Reason.PROVIDER_MISMATCH
        )
    if notice.hub != hub:
        raise InvalidArgument(f"notice.hub: got {notice.hub[:64]!r}, want {hub!r}", reason=Reason.WRONG_HUB)
    return notice


def notice_fields(n: notice_pb2.Notice, hub: str) -> dict[str, Any]:
    """The public fields' shape checks; returns the parsed ``event_date``, ``due_date`` and
    ``created_at``."""
    if len(n.notice_id) != _NOTICE_ID_SIZE:
        raise InvalidArgument(f"notice.notice_id: got {len(n.notice_id)} bytes, want {_NOTICE_ID_SIZE}")
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
    out["created_at"] = n.created_at.ToDatetime(tzinfo=UTC)
    return out


def open_notice(notice: notice_pb2.Notice, key: sealing.SealingKey) -> notice_pb2.SealedDetails:
    """Opens a notice's sealed part with the hub's private key (checks the bound metadata)."""
    plain = sealing.open(
        key, bytes(notice.sealed_enc), bytes(notice.sealed_ciphertext), notice_aad(notice), suite=notice.sealed_suite
    )
    try:
        return notice_pb2.SealedDetails.FromString(plain)
    except Exception:
        raise InvalidArgument("sealed details: got bytes that are not a SealedDetails message") from None


# ---------------------------------------------------------------- the receipt


def make_receipt(hub: str, notice_id: bytes, digest: bytes, received_at: datetime, *, duplicate: bool) -> notice_pb2.Receipt:
    """The hub's receipt for the notice whose payload has SHA-256 ``digest``."""
    r = notice_pb2.Receipt(hub=hub, notice_id=bytes(notice_id), notice_digest=digest, duplicate=duplicate)
    r.received_at.FromDatetime(received_at.astimezone(UTC))
    return r


def sign_receipt(receipt: notice_pb2.Receipt, signer: SigningKey) -> bytes:
    """The serialised DSSE envelope of ``receipt`` signed by the hub."""
    return dsse.sign(RECEIPT_PAYLOAD_TYPE, receipt.SerializeToString(), [signer]).SerializeToString()


def verify_receipt(receipt_bytes: bytes, *, hub: str, verifier: VerifyingKey) -> notice_pb2.Receipt:
    """The provider's end: a receipt envelope verified against the hub's directory key, then
    parsed, naming ``hub``."""
    try:
        env = common_pb2.Envelope.FromString(receipt_bytes)
    except DecodeError:
        raise VerificationError("receipt: got bytes that are not an envelope", reason=Reason.RECEIPT_INVALID) from None
    payload, _ = dsse.verify(env, {verifier.keyid: verifier}, payload_type=RECEIPT_PAYLOAD_TYPE)
    try:
        receipt = notice_pb2.Receipt.FromString(payload)
    except DecodeError:
        raise VerificationError("receipt: signed payload is not a Receipt", reason=Reason.RECEIPT_INVALID) from None
    if receipt.hub != hub:
        raise VerificationError(f"receipt.hub: got {receipt.hub[:64]!r}, want {hub!r}", reason=Reason.RECEIPT_MISMATCH)
    return receipt


def check_receipt(receipt: notice_pb2.Receipt, notice_id: bytes, envelope: bytes) -> None:
    """A receipt must name this notice and the SHA-256 of its exact payload bytes."""
    if bytes(receipt.notice_id) != notice_id:
        raise VerificationError(
            f"receipt.notice_id: got {bytes(receipt.notice_id).hex()}, want {notice_id.hex()}",
            reason=Reason.RECEIPT_MISMATCH,
        )
    digest = hashlib.sha256(common_pb2.Envelope.FromString(envelope).payload).digest()
    if bytes(receipt.notice_digest) != digest:
        raise VerificationError(
            f"receipt.notice_digest: got {bytes(receipt.notice_digest).hex()[:16]}…, want {digest.hex()[:16]}…",
            reason=Reason.RECEIPT_MISMATCH,
        )


# ---------------------------------------------------------------- refusals

# Refusals about the notice itself: the same bytes can never be accepted. Policy, membership
# and signature refusals are not here — they may be a directory not yet updated at the hub.
PERMANENT_REASONS = frozenset({
    Reason.BAD_NOTICE, Reason.PROVIDER_MISMATCH, Reason.WRONG_HUB, Reason.NOTICE_ID_REUSED,
    Reason.SEAL_OPEN_FAILED, Reason.INVALID_IDENTITY,
})


def permanent_refusal(exc: BaseException) -> bool:
    """True for the hub's refusal of the notice itself (``INVALID_ARGUMENT`` with one of
    :data:`PERMANENT_REASONS`), whether given as the raw status or as the typed error."""
    err: BaseException | HeduiError = from_rpc_error(exc) if isinstance(exc, grpc.RpcError) else exc
    return isinstance(err, InvalidArgument) and err.remote_code is not None and err.reason in PERMANENT_REASONS
