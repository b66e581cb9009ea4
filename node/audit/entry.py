"""Audit entries: the closed vocabulary of kinds, the fields each must carry, and the
canonical bytes that become a leaf of the log's Merkle tree.

Entry format (the leaf bytes)
-----------------------------
An entry is canonical JSON, UTF-8, keys sorted, no whitespace, no floats::

    {"fields":{...},"kind":"query.sent","time":"2026-05-04T08:00:00.123456Z","v":1}

The exact bytes are stored (``audit_entries.entry``) and hashed (RFC 9162 §2.1.1 leaf
hash); nothing is ever re-serialised to verify. Field values are str, int, bool, null,
lists or objects of those; bytes must be hex (lower case) — digests are SHA-256 hex.

Entry kinds (:class:`Kind`) and the fields each MUST carry (others are allowed)
-------------------------------------------------------------------------------
==================  =========================================================  =====
kind                required fields                                            side
==================  =========================================================  =====
query.sent          request_id, peer, purpose, case_ref, request_digest         hub
query.received      request_id, peer, purpose, case_ref, request_digest         provider
answer.sent         request_id, peer, answer_digest, outcome                   provider
answer.received     request_id, peer, answer_digest, outcome                   hub
refusal             request_id, peer, outcome (the refusal reason code)        provider
notice.sent         request_id (= notice id), peer, request_digest (notice)    provider
notice.received     request_id (= notice id), peer, request_digest, outcome    hub
receipt             request_id (= notice id), peer, answer_digest (receipt)    both
query.failed        request_id, peer, status, reason                           hub
pseudonym.evaluated request_id, peer, purpose, case_ref, epoch, count          provider
filter.sent         request_id, peer, purpose, epoch, count                    provider
filter.received     request_id, peer, epoch, count, header_digest              hub
filter.refused      request_id, peer, reason                                   hub
crosscheck.run      check, operator, population, count_only                    hub
crosscheck.viewed   run_id, operator, count (a run's hits read, masked)        hub
case.opened         case_ref, purpose, operator, consent_digest                hub
consent.revoked     consent_digest (of the signed record), operator, serial    hub
consent.refused     consent_digest (of the scan), operator, outcome            hub
case.member_counted case_ref, operator, position, counted (an override)        hub
cosignature         peer, size, cosignature                                    any
directory           version, digest                                            any
admin               action, operator                                           any
peer.fork           peer, origin, size_a, size_b, reason                       any
refusal.aggregated  cause, peer, count, first, last (times as ``time``)        any
==================  =========================================================  =====

The vocabulary is closed: an entry of any other kind, or one missing a required field, is
refused (``InvalidArgument``) before it is written, so a log holds only what a security
officer's tools understand (docs/security-officer.md lists the same table).

Common optional fields: ``method`` (gRPC method name), ``count`` (items in a batch),
``outcome`` (``"ok"`` or a reason code such as ``"POLICY_DENIED"``). ``peer`` is the
other side's member code. ``request_id`` is the lower-case hex of the 16-byte request id;
``request_digest`` / ``answer_digest`` / ``digest`` are lower-case hex SHA-256 of the
exact signed bytes. ``purpose`` is the ``hedui.v1.Purpose`` enum name. ``case_ref`` is
the hub's case reference ("" only if there is none — reconciliation reports those).

Entries never hold identity numbers: the one identity guard (:func:`hedui.adapters.idnum.contains_in_value`)
checks every field name and value of an entry and an entry that matches is refused with
:class:`IdentityInEntryError`.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hedui.adapters import idnum
from hedui.node.audit.errors import IdentityInEntryError
from hedui.node.errors import InvalidArgument

__all__ = ["Kind", "REQUIRED_FIELDS", "ENTRY_VERSION", "encode_entry", "decode_entry", "format_time", "utc"]


class Kind(enum.StrEnum):
    """Entry kinds (see the module docstring for their fields); the value is what is logged."""

    QUERY_SENT = "query.sent"
    QUERY_RECEIVED = "query.received"
    ANSWER_SENT = "answer.sent"
    ANSWER_RECEIVED = "answer.received"
    QUERY_FAILED = "query.failed"
    REFUSAL = "refusal"
    PSEUDONYM_EVALUATED = "pseudonym.evaluated"
    FILTER_SENT = "filter.sent"
    FILTER_RECEIVED = "filter.received"
    FILTER_REFUSED = "filter.refused"
    CROSSCHECK_RUN = "crosscheck.run"
    CROSSCHECK_VIEWED = "crosscheck.viewed"
    NOTICE_SENT = "notice.sent"
    NOTICE_RECEIVED = "notice.received"
    RECEIPT = "receipt"
    CASE_OPENED = "case.opened"
    # Acts of the hub's staff (the web console and the CLI), each with the operator.
    CASE_RUN = "case.run"
    # Consent records (node/verification/consent.py, issue 18).
    CONSENT_REVOKED = "consent.revoked"
    CONSENT_REFUSED = "consent.refused"
    CASE_REVIEWED = "case.reviewed"
    CASE_MEMBERS_SHOWN = "case.members_shown"
    CASE_MEMBER_COUNTED = "case.member_counted"
    LEAD_DETAILS_OPENED = "lead.details_opened"
    REFERRAL_RESPONDED = "referral.responded"
    REFERRAL_ESCALATED = "referral.escalated"
    CONSOLE_SIGNIN = "console.signin"
    CONSOLE_SIGNIN_FAILED = "console.signin_failed"
    CONSOLE_ACCESS_DENIED = "console.access_denied"
    COSIGNATURE = "cosignature"
    DIRECTORY = "directory"
    ADMIN = "admin"
    PEER_FORK = "peer.fork"
    # Refusals that can come by the thousand (below the application, or node-wide), one
    # entry per (cause, peer) and period: node/refusals.py.
    REFUSAL_AGGREGATED = "refusal.aggregated"


_QUERY = frozenset({"request_id", "peer", "purpose", "case_ref", "request_digest"})
REQUIRED_FIELDS: Mapping[Kind, frozenset[str]] = {
    Kind.QUERY_SENT: _QUERY,
    Kind.QUERY_RECEIVED: _QUERY,
    Kind.ANSWER_SENT: frozenset({"request_id", "peer", "answer_digest", "outcome"}),
    Kind.ANSWER_RECEIVED: frozenset({"request_id", "peer", "answer_digest", "outcome"}),
    Kind.QUERY_FAILED: frozenset({"request_id", "peer", "status", "reason"}),
    Kind.REFUSAL: frozenset({"request_id", "peer", "outcome"}),
    Kind.PSEUDONYM_EVALUATED: frozenset({"request_id", "peer", "purpose", "case_ref", "epoch", "count"}),
    Kind.FILTER_SENT: frozenset({"request_id", "peer", "purpose", "epoch", "count"}),
    Kind.FILTER_RECEIVED: frozenset({"request_id", "peer", "epoch", "count", "header_digest"}),
    Kind.FILTER_REFUSED: frozenset({"request_id", "peer", "reason"}),
    Kind.CROSSCHECK_RUN: frozenset({"check", "operator", "population", "count_only"}),
    Kind.CROSSCHECK_VIEWED: frozenset({"run_id", "operator", "count"}),
    Kind.NOTICE_SENT: frozenset({"request_id", "peer", "request_digest"}),
    Kind.NOTICE_RECEIVED: frozenset({"request_id", "peer", "request_digest", "outcome"}),
    Kind.RECEIPT: frozenset({"request_id", "peer", "answer_digest"}),
    Kind.CASE_OPENED: frozenset({"case_ref", "purpose", "operator", "consent_digest"}),
    Kind.CASE_RUN: frozenset({"case_ref", "operator"}),
    Kind.CONSENT_REVOKED: frozenset({"consent_digest", "operator", "serial"}),
    Kind.CONSENT_REFUSED: frozenset({"consent_digest", "operator", "outcome"}),
    Kind.CASE_REVIEWED: frozenset({"case_ref", "operator", "decision"}),
    Kind.CASE_MEMBERS_SHOWN: frozenset({"case_ref", "operator", "count"}),
    Kind.CASE_MEMBER_COUNTED: frozenset({"case_ref", "operator", "position", "counted"}),
    Kind.LEAD_DETAILS_OPENED: frozenset({"operator", "reason", "leads", "count"}),
    Kind.REFERRAL_RESPONDED: frozenset({"referral_id", "operator", "outcome"}),
    Kind.REFERRAL_ESCALATED: frozenset({"operator", "count"}),
    Kind.CONSOLE_SIGNIN: frozenset({"operator"}),
    Kind.CONSOLE_SIGNIN_FAILED: frozenset({"operator", "outcome"}),
    Kind.CONSOLE_ACCESS_DENIED: frozenset({"operator", "action", "outcome"}),
    Kind.COSIGNATURE: frozenset({"peer", "size", "cosignature"}),
    Kind.DIRECTORY: frozenset({"version", "digest"}),
    Kind.ADMIN: frozenset({"action", "operator"}),
    Kind.PEER_FORK: frozenset({"peer", "origin", "size_a", "size_b", "reason"}),
    Kind.REFUSAL_AGGREGATED: frozenset({"cause", "peer", "count", "first", "last"}),
}
assert set(REQUIRED_FIELDS) == set(Kind), "every kind names its required fields"

_HEX_ID = re.compile(r"(?:[0-9a-f]{2}){1,32}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_DIGEST_FIELDS = ("request_digest", "answer_digest", "digest")
_MAX_ENTRY_BYTES = 64 * 1024
ENTRY_VERSION = 1


# One encoder, built once (json.dumps builds one per call when given options).
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_KINDS: Mapping[str, Kind] = {k.value: k for k in Kind}   # a str or a Kind finds its Kind


def _canonical(obj: Any) -> bytes:
    return _ENCODE(obj).encode("utf-8")


_SCALARS = (str, int, bool, type(None))


def _check_value(path: str, v: Any, depth: int = 0) -> None:
    if depth == 0 and type(v) is dict:
        for k, x in v.items():
            if type(k) is not str:
                break
            tx = type(x)
            if tx not in _SCALARS and (tx is not list or any(type(y) not in _SCALARS for y in x)):
                break
        else:
            # The common case: a flat object of scalars and lists of scalars (an exchange's
            # field names), in one pass, no paths built.
            return
    if depth > 8:
        raise InvalidArgument(f"audit entry {path}: nested too deep")
    if v is None or isinstance(v, (bool, str)):
        return
    if isinstance(v, int):
        return
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_value(f"{path}[{i}]", x, depth + 1)
        return
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str):
                raise InvalidArgument(f"audit entry {path}: keys must be strings")
            _check_value(f"{path}.{k}", x, depth + 1)
        return
    hint = " (hex-encode bytes)" if isinstance(v, (bytes, bytearray, memoryview)) else ""
    raise InvalidArgument(
        f"audit entry {path}: got {type(v).__name__}, want str, int, bool, null, list or object{hint}"
    )


_LAST_TIME: list[tuple[datetime | None, str]] = [(None, "")]


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def format_time(t: datetime) -> str:
    last, text = _LAST_TIME[0]
    if last is not None and last == t and last.tzinfo is t.tzinfo:   # entries often share an instant
        return text
    text = _format_time(t)
    _LAST_TIME[0] = (t, text)   # one tuple, replaced whole: safe across threads
    return text


def _format_time(t: datetime) -> str:
    if t.tzinfo is not None and t.utcoffset():
        t = t.astimezone(UTC)
    # a naive datetime is UTC (SQLite returns stored UTC times without a zone)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"


def encode_entry(kind: Kind | str, fields: Mapping[str, Any], at: datetime) -> bytes:
    """The canonical entry bytes; raises ``InvalidArgument`` (an unknown kind, a missing
    required field, a value that is not JSON-able) or ``IdentityInEntryError``."""
    k = _KINDS.get(kind) if isinstance(kind, str) else None
    if k is None:
        raise InvalidArgument(f"audit entry kind: got {str(kind)[:64]!r}, want one of {', '.join(Kind)}") from None
    if not isinstance(fields, Mapping):
        raise InvalidArgument("audit entry fields: want a mapping")
    _check_value("fields", fields)
    kind = k
    required = REQUIRED_FIELDS[kind]
    if not required <= fields.keys():
        missing = required - fields.keys()
        raise InvalidArgument(f"audit entry {kind}: missing fields {sorted(missing)}")
    rid = fields.get("request_id")
    if rid is not None and (not isinstance(rid, str) or not _HEX_ID.fullmatch(rid)):
        raise InvalidArgument(f"audit entry {kind}: request_id must be lower-case hex (1-32 bytes)")
    for name in _DIGEST_FIELDS:
        d = fields.get(name)
        if d is not None and d != "" and (not isinstance(d, str) or not _HEX_DIGEST.fullmatch(d)):
            raise InvalidArgument(f"audit entry {kind}: {name} must be lower-case hex SHA-256")
    try:
        body = fields if type(fields) is dict else dict(fields)
        data = _canonical({"fields": body, "kind": kind, "time": format_time(at), "v": ENTRY_VERSION})
    except (UnicodeEncodeError, ValueError) as exc:
        raise InvalidArgument(f"audit entry {kind}: not serialisable ({exc})") from None
    if len(data) > _MAX_ENTRY_BYTES:
        raise InvalidArgument(f"audit entry {kind}: {len(data)} bytes, want <= {_MAX_ENTRY_BYTES}")
    # The one identity guard, per field value (the kind is from a closed vocabulary and the
    # time is formatted here): cheaper than a scan of the whole entry, and it catches at
    # least what that scan would (adapters/idnum.contains_in_value).
    if idnum.contains_in_value(fields):
        where = next((k for k, v in fields.items() if idnum.contains_in_value({k: v})), "?")
        raise IdentityInEntryError(
            f"audit entry {kind}: field {where!r} holds a value shaped like a resident identity "
            "number; log a pseudonym or a digest instead"
        )
    return data


def decode_entry(data: bytes) -> dict[str, Any]:
    """Parses entry bytes into ``{"kind", "time", "fields", "v"}`` (no verification)."""
    obj = json.loads(bytes(data).decode("utf-8"))
    if not isinstance(obj, dict) or not isinstance(obj.get("fields"), dict) or "kind" not in obj:
        raise ValueError("not an audit entry")
    return obj
