"""Signed token filter headers on the wire (issue 14): :class:`~filterfmt.FilterHeader` ⇄
``hedui.v1.TokenFilterHeader``, signed as a DSSE envelope of type
:data:`~filterfmt.PAYLOAD_TYPE` by the provider's directory signing key, and verified by the
hub against that key, the member code and the epoch the directory publishes (a filter
signed by another member, or for an epoch other than the one asked, is refused)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date

from hedui.common.errors import Reason
from hedui.keys import dsse
from hedui.keys.errors import SignatureError
from hedui.keys.signing import SigningKey, VerifyingKey
from hedui.node.crosscheck.filterfmt import PAYLOAD_TYPE, FilterFormatError, FilterHeader, ShardEntry
from hedui.node.errors import VerificationError
from hedui.v1 import common_pb2, pseudonym_pb2

__all__ = ["to_proto", "from_proto", "sign_header", "verify_header", "header_digest"]


def to_proto(h: FilterHeader) -> pseudonym_pb2.TokenFilterHeader:
    return pseudonym_pb2.TokenFilterHeader(
        provider=h.provider, epoch=h.epoch, data_date=h.data_date.isoformat(), total=h.total, p=h.p, m=h.m,
        shard_bits=h.shard_bits, layout=h.layout, false_positive_rate=h.false_positive_rate,
        shards=[pseudonym_pb2.TokenFilterShard(index=s.index, count=s.count, size=s.size, sha256=s.sha256) for s in h.shards],
    )


def from_proto(msg: pseudonym_pb2.TokenFilterHeader) -> FilterHeader:
    try:
        day = date.fromisoformat(msg.data_date)
    except ValueError:
        raise FilterFormatError(f"data_date: got {msg.data_date[:16]!r}, want YYYY-MM-DD") from None
    h = FilterHeader(
        msg.provider, msg.epoch, day, msg.total, msg.p, msg.m, msg.shard_bits,
        tuple(ShardEntry(s.index, s.count, s.size, bytes(s.sha256)) for s in msg.shards), msg.layout,
    ).validate()
    if msg.false_positive_rate != h.false_positive_rate:
        raise FilterFormatError(f"false_positive_rate: got {msg.false_positive_rate!r}, want 1/m = {h.false_positive_rate!r}")
    return h


def sign_header(h: FilterHeader, signer: SigningKey) -> common_pb2.Envelope:
    return dsse.sign(PAYLOAD_TYPE, to_proto(h).SerializeToString(deterministic=True), [signer])


def header_digest(env: common_pb2.Envelope) -> bytes:
    """What a report cites: SHA-256 of the signed payload."""
    return hashlib.sha256(env.payload).digest()


def verify_header(env: common_pb2.Envelope, signing_keys: Mapping[str, VerifyingKey], code: str, *, epoch: int) -> FilterHeader:
    """The hub's end: signature by ``code``'s directory key, then the binding to ``code`` and
    ``epoch``. Raises :class:`VerificationError` (``BAD_SIGNATURE``/``UNKNOWN_SIGNER``/
    ``BAD_ENVELOPE``, ``PROVIDER_MISMATCH``, ``FILTER_EPOCH``) or :class:`FilterFormatError`."""
    keys = {k: v for k, v in signing_keys.items() if v.owner == code}
    try:
        payload, _ = dsse.verify(env, keys, payload_type=PAYLOAD_TYPE)
    except SignatureError:
        raise
    try:
        msg = pseudonym_pb2.TokenFilterHeader.FromString(payload)
    except Exception:
        raise FilterFormatError("header: signed payload is not a TokenFilterHeader") from None
    h = from_proto(msg)
    if h.provider != code:
        raise VerificationError(f"header.provider: got {h.provider[:32]!r}, want {code!r}", reason=Reason.PROVIDER_MISMATCH)
    if h.epoch != epoch:
        raise VerificationError(f"header.epoch: got {h.epoch}, want {epoch} (the directory's current key)", reason=Reason.FILTER_EPOCH)
    return h
