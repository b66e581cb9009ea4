"""DSSE v1 envelopes: sign bytes, verify bytes, then parse.

Implements the DSSE protocol (secure-systems-lab/dsse, ``protocol.md``): the signature is
over ``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` with lengths
as ASCII decimal. Verification happens over the envelope's exact payload bytes; callers parse
the payload only after :func:`verify` returns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hedui.common.errors import Reason, VerificationError
from hedui.keys.errors import SignatureError
from hedui.keys.signing import SigningKey, VerifyingKey
from hedui.v1 import common_pb2

__all__ = ["pae", "sign", "verify", "ANSWER", "NOTICE", "RECEIPT", "DIRECTORY", "CONSENT", "REVOCATIONS"]

ANSWER = "application/vnd.hedui.answer.v1+proto"
NOTICE = "application/vnd.hedui.notice.v1+proto"
RECEIPT = "application/vnd.hedui.receipt.v1+proto"
DIRECTORY = "application/vnd.hedui.directory.v1+proto"
#: A hub's consent record (issue 18): one authorisation, scoped and signed.
CONSENT = "application/vnd.hedui.consent.v1+proto"
#: A hub's list of revoked consent records.
REVOCATIONS = "application/vnd.hedui.revocations.v1+proto"


def pae(payload_type: str, payload: bytes) -> bytes:
    # DSSE protocol.md "Signature definition": PAE over the UTF-8 type and raw body.
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign(payload_type: str, payload: bytes, signers: Iterable[SigningKey]) -> common_pb2.Envelope:
    msg = pae(payload_type, payload)
    env = common_pb2.Envelope(payload_type=payload_type, payload=payload)
    for s in signers:
        env.signatures.add(keyid=s.keyid, sig=s.sign(msg))
    if not env.signatures:
        raise ValueError("dsse.sign: got no signer, want at least one")
    return env


def verify(
    env: common_pb2.Envelope,
    trusted: Mapping[str, VerifyingKey],
    *,
    payload_type: str,
    threshold: int = 1,
) -> tuple[bytes, list[VerifyingKey]]:
    """Returns ``(payload, signers)`` once ``threshold`` distinct trusted keys verify.

    Raises :class:`~hedui.keys.errors.SignatureError` (reason ``BAD_ENVELOPE`` / ``UNKNOWN_SIGNER`` /
    ``BAD_SIGNATURE``) otherwise.
    """
    if env.payload_type != payload_type:
        raise SignatureError(
            f"envelope.payload_type: got {env.payload_type[:80]!r}, want {payload_type!r}",
            reason=Reason.BAD_ENVELOPE,
        )
    if not env.signatures:
        raise SignatureError("envelope.signatures: got none, want at least one", reason=Reason.BAD_ENVELOPE)
    msg = pae(env.payload_type, env.payload)
    good: dict[str, VerifyingKey] = {}
    unknown = 0
    for s in env.signatures:
        key = trusted.get(s.keyid)
        if key is None:
            unknown += 1
            continue
        try:
            key.verify(s.sig, msg)
        except VerificationError:
            continue
        good[key.keyid] = key
    if len(good) >= threshold:
        return env.payload, list(good.values())
    if unknown == len(env.signatures):
        raise SignatureError(
            f"envelope: signed by {', '.join(s.keyid[:60] for s in env.signatures)}, want a trusted key",
            reason=Reason.UNKNOWN_SIGNER,
        )
    raise SignatureError("envelope: signature does not verify", reason=Reason.BAD_SIGNATURE)


def to_json(env: common_pb2.Envelope) -> str:
    """The DSSE JSON envelope encoding (``payloadType``, ``payload``, ``signatures``)."""
    import base64
    import json

    return json.dumps(
        {
            "payloadType": env.payload_type,
            "payload": base64.b64encode(env.payload).decode(),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in env.signatures
            ],
        },
        indent=1,
    )


def from_json(text: str | bytes) -> common_pb2.Envelope:
    """Parses the DSSE JSON envelope (envelope.md "Parsing rules": ``keyid`` is optional and
    unset means empty; standard or URL-safe base64; unrecognised fields are ignored)."""
    import binascii
    import json

    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc["signatures"], list):
            raise TypeError("envelope")
        if not isinstance(doc["payloadType"], str):
            raise TypeError("payloadType")
        env = common_pb2.Envelope(payload_type=doc["payloadType"], payload=_b64decode(doc["payload"]))
        for s in doc["signatures"]:
            keyid = s.get("keyid") if isinstance(s, dict) else None
            if not isinstance(s, dict) or not isinstance("" if keyid is None else keyid, str):
                raise TypeError("signature")
            env.signatures.add(keyid=keyid or "", sig=_b64decode(s["sig"]))
        return env
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(
            f"envelope: got malformed DSSE JSON, want payloadType/payload/signatures ({type(exc).__name__})",
            reason=Reason.BAD_ENVELOPE,
        ) from None


def _b64decode(s: object) -> bytes:
    # envelope.md: "Either standard or URL-safe encoding is allowed" (RFC 4648 §4 or §5).
    import base64

    if not isinstance(s, str):
        raise TypeError("base64")
    alt = b"-_" if ("-" in s or "_" in s) else None
    return base64.b64decode(s, altchars=alt, validate=True)
