"""Consent as a signed, scoped artefact (issue 18 part B, item 1).

The hub turns each recorded authorisation (授权书; its scan digest is the case's
``consent_digest``) into a :class:`~hedui.v1.common_pb2.ConsentRecord`: the purpose, the case
reference, how many members it names, a validity window, one-off or periodic, the operator;
it signs the record (DSSE, :data:`hedui.keys.dsse.CONSENT`) with its directory key and sends
the envelope in every request's context. A provider (:func:`check_consent`) verifies the
signature against the *caller's* directory key, then the purpose, the case, the validity
window, the member count and the hub's revocation list, and refuses otherwise (a typed
refusal with a ``CONSENT_*`` reason, which ``node/rpc.py`` audits). What it accepted — the
record's digest, purpose and case — goes into the signed answer and both sides' audit entries.

Revocation: the hub keeps an append-only list of revoked record digests
(:data:`consent_revocations`) and pushes the signed list (:data:`hedui.keys.dsse.REVOCATIONS`)
with every request; a provider keeps, in its store, the highest serial it has seen per hub
and every digest revoked, and refuses a request whose list is older (an operator cannot drop
a revocation by sending an old list, nor by waiting for a restart):
:mod:`~hedui.node.verification.consent_state`, which also enforces one-off and periodic use.
``hedui consent revoke CASE_REF`` (:func:`revoke_case`) and ``hedui consent list``
(:func:`list_consents`) are the hub's commands.

Signing is deterministic (Ed25519, RFC 8032 §5.1.6) and the record is built from the stored
case alone, so re-issuing the record of a case gives the same bytes and the same digest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from hedui.adapters import idnum
from hedui.keys import dsse
from hedui.keys.directory import PURPOSE_NAMES, PURPOSES, ROLE_ANSWERS
from hedui.keys.signing import SigningKey, VerifyingKey
from hedui.node.audit.entry import Kind
from hedui.node.errors import InvalidArgument, NotFound, PermissionDenied, Reason, VerificationError
from hedui.node.store.raw import Prepared
from hedui.node.verification.consent_state import RevocationState, verified_payload
from hedui.node.verification.hub_tables import case_members, cases, consent_revocations
from hedui.v1 import common_pb2, lookup_pb2

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from hedui.node.runtime import Runtime

__all__ = [
    "DEFAULT_VALIDITY_DAYS",
    "PERIODIC_INTERVAL_DAYS",
    "Accepted",
    "RevocationState",
    "check_consent",
    "check_reuse",
    "consent_digest",
    "issue",
    "issue_for_case",
    "issue_for_context",
    "revoke",
    "revoke_case",
    "list_consents",
    "revocation_list",
    "sign_revocations",
    "reused_consents",
    "refuse_reuse",
    "check_binding",
    "context_fields",
    "context_fields_of",
    "current_revocations",
    "revocations_in",
]

#: How long a consent record is valid from the case's opening. An authorisation covers one
#: application; 90 days covers the longest statutory processing time of a 低保 application.
DEFAULT_VALIDITY_DAYS = 90
#: 动态复核 reviews at most monthly.
PERIODIC_INTERVAL_DAYS = 28
_PERIODIC = {"periodic_review"}


def consent_digest(env: common_pb2.Envelope) -> bytes:
    """The digest that names a consent record: SHA-256 of its signed payload bytes."""
    return hashlib.sha256(bytes(env.payload)).digest()


def _ts(t: dt.datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    out = Timestamp()
    out.FromDatetime(t.astimezone(dt.UTC))
    return out


def issue(
    signer: SigningKey, *, hub: str, scan_digest: bytes, purpose: str, case_ref: str, max_members: int,
    issued_at: dt.datetime, operator: str, validity_days: int = DEFAULT_VALIDITY_DAYS,
) -> common_pb2.Envelope:
    """Signs the consent record of one authorisation."""
    if purpose not in PURPOSES:
        raise InvalidArgument(f"consent.purpose: got {purpose[:32]!r}, want one of {sorted(PURPOSES)}", reason=Reason.CONSENT_INVALID)
    if len(scan_digest) != 32:
        raise InvalidArgument(f"consent.scan_digest: got {len(scan_digest)} bytes, want 32", reason=Reason.BAD_CONSENT_DIGEST)
    if max_members < 1:
        raise InvalidArgument(f"consent.max_members: got {max_members}, want at least 1", reason=Reason.CONSENT_INVALID)
    periodic = purpose in _PERIODIC
    rec = common_pb2.ConsentRecord(
        hub=hub, scan_digest=scan_digest, purpose=PURPOSES[purpose], case_ref=case_ref, max_members=max_members,
        not_before=_ts(issued_at), not_after=_ts(issued_at + dt.timedelta(days=validity_days)),
        use=common_pb2.CONSENT_USE_PERIODIC if periodic else common_pb2.CONSENT_USE_ONE_OFF,
        min_interval_days=PERIODIC_INTERVAL_DAYS if periodic else 0, operator=operator, issued_at=_ts(issued_at),
    )
    return dsse.sign(dsse.CONSENT, rec.SerializeToString(deterministic=True), [signer])


def issue_for_case(rt: Runtime, case: Any, members: int | None = None) -> common_pb2.Envelope:
    """The hub's record for a stored case row (one call site in ``run_case``); ``members``:
    the case's member count when the caller has just read them (else read here)."""
    n = members
    if n is None:
        with rt.engine.connect() as c:
            n = c.execute(select(func.count()).select_from(case_members).where(case_members.c.case_ref == case.case_ref)).scalar_one()
    created = case.created_at if case.created_at.tzinfo else case.created_at.replace(tzinfo=dt.UTC)
    return issue(rt.signer_for(ROLE_ANSWERS), hub=rt.member, scan_digest=bytes(case.consent_digest), purpose=case.purpose,
                 case_ref=case.case_ref, max_members=int(n), issued_at=created, operator=case.operator)


def issue_for_context(
    signer: SigningKey, hub: str, ctx: common_pb2.RequestContext, *, members: int, issued_at: dt.datetime, **kw: Any,
) -> common_pb2.Envelope:
    """A record covering exactly ``ctx`` (its purpose, case and scan digest): for tools and
    tests that build a request by hand."""
    return issue(signer, hub=hub, scan_digest=bytes(ctx.consent_digest), purpose=PURPOSE_NAMES[ctx.purpose],
                 case_ref=ctx.case_ref, max_members=members, issued_at=issued_at, operator=ctx.operator, **kw)


@dataclass(frozen=True)
class Accepted:
    """What a provider accepted: the record and its digest (bound into the answer)."""

    record: common_pb2.ConsentRecord
    digest: bytes


def check_consent(
    ctx: common_pb2.RequestContext, *, caller: str, directory_keys: dict[str, VerifyingKey], members: int,
    now: dt.datetime, revocations: RevocationState, conn: Connection | None = None,
) -> Accepted:
    """The provider's end: refuses (``CONSENT_*``) unless the caller's signed record covers
    this request — its purpose, its case, ``members`` tokens, at ``now`` — and is not revoked.
    ``conn``: the Lookup's read snapshot, to read the stored revocation serial on (issue 16)."""
    key = {k: v for k, v in directory_keys.items() if v.owner == caller}
    revocations.apply(caller, key, ctx.revocations, now, conn=conn)
    if not ctx.HasField("consent") or not ctx.consent.payload:
        raise PermissionDenied("context.consent: got none, want the hub's signed consent record", reason=Reason.CONSENT_MISSING)
    payload = verified_payload(ctx.consent, key, dsse.CONSENT, "context.consent")
    try:
        rec = common_pb2.ConsentRecord.FromString(payload)
    except Exception:
        raise InvalidArgument("context.consent: signed payload is not a ConsentRecord", reason=Reason.CONSENT_INVALID) from None
    digest = hashlib.sha256(payload).digest()
    if rec.hub != caller:
        raise PermissionDenied(f"consent.hub: got {rec.hub[:32]!r}, want the caller {caller!r}", reason=Reason.CONSENT_FORGED)
    if rec.purpose != ctx.purpose:
        raise PermissionDenied(f"consent.purpose: got {int(rec.purpose)}, want the request's {int(ctx.purpose)}", reason=Reason.CONSENT_WRONG_PURPOSE)
    if rec.case_ref != ctx.case_ref:
        raise PermissionDenied("consent.case_ref: names another case, want the request's", reason=Reason.CONSENT_WRONG_CASE)
    if bytes(rec.scan_digest) != bytes(ctx.consent_digest):
        raise PermissionDenied("consent.scan_digest: differs from context.consent_digest", reason=Reason.CONSENT_INVALID)
    if rec.use == common_pb2.CONSENT_USE_UNSPECIFIED:
        raise InvalidArgument("consent.use: got unspecified, want one-off or periodic", reason=Reason.CONSENT_INVALID)
    lo, hi = rec.not_before.ToDatetime(tzinfo=dt.UTC), rec.not_after.ToDatetime(tzinfo=dt.UTC)
    if not (lo <= now < hi):
        raise PermissionDenied(f"consent: valid {lo.isoformat()} .. {hi.isoformat()}, got a request at {now.isoformat()}",
                               reason=Reason.CONSENT_EXPIRED)
    if members > rec.max_members:
        raise PermissionDenied(f"consent.max_members: got a request for {members}, want at most {rec.max_members}",
                               reason=Reason.CONSENT_OVER_COUNT)
    if revocations.is_revoked(caller, digest):
        raise PermissionDenied(f"consent {digest.hex()[:16]}: revoked by {caller}", reason=Reason.CONSENT_REVOKED)
    return Accepted(rec, digest)


# -- the hub's end: reuse and revocation ----------------------------------------------------


def check_reuse(c: Connection, scan_digest: bytes, identities: Sequence[str], purpose: str) -> None:
    """Refuses, at case open (``CONSENT_REUSED``), an authorisation already recorded
    (issue 18 "The hub refuses to reuse an authorisation for another member set"):

    - for another member set, whatever the purposes: one 授权书 names one household;
    - for a second one-off case (any purpose but ``periodic_review``): a one-off authorisation
      covers one application. Keyed, like the departments' own check
      (node/verification/consent_state.py), by the authorisation *and its use*: a standing
      authorisation may serve periodic reviews (动态复核) of the same household — each a new case
      — and one one-off case besides; the departments hold each periodic review to its interval.

    Every case recorded under one authorisation is listed by :func:`reused_consents`."""
    want = sorted(identities)
    one_off = purpose not in _PERIODIC
    rows = c.execute(select(cases.c.case_ref, cases.c.purpose).where(cases.c.consent_digest == scan_digest).order_by(cases.c.case_ref))
    for ref, other in rows.all():
        have = sorted(r.identity for r in c.execute(select(case_members.c.identity).where(case_members.c.case_ref == ref)))
        if have != want:
            raise PermissionDenied(f"consent digest: already recorded for case {ref} with another member set, want a new authorisation",
                                   reason=Reason.CONSENT_REUSED)
        if one_off and other not in _PERIODIC:
            raise PermissionDenied(f"consent digest: this one-off authorisation was already used for case {ref} ({other}), "
                                   "want a new authorisation for another case (only periodic_review may reuse one)",
                                   reason=Reason.CONSENT_REUSED)


def refuse_reuse(rt: Runtime, c: Connection, scan_digest: bytes, identities: Sequence[str], operator: str, purpose: str) -> None:
    """:func:`check_reuse`, auditing a refusal (the hub's own refusal has no gRPC call): the
    ``consent.refused`` entry names the digest, the operator, the purpose asked for and why."""
    try:
        check_reuse(c, scan_digest, identities, purpose)
    except PermissionDenied as exc:
        rt.audit.record(Kind.CONSENT_REFUSED, {"consent_digest": scan_digest.hex(), "operator": operator, "purpose": purpose,
                                               "outcome": exc.reason.value, "detail": exc.message[:200]})
        raise


def check_binding(answer: lookup_pb2.LookupAnswer, req: lookup_pb2.LookupRequest, sent: bytes | None = None) -> None:
    """The hub's and the evidence checker's end: the signed answer names the consent record,
    purpose and case the request carried (``ANSWER_NOT_BOUND`` otherwise). ``sent``: the
    :func:`consent_digest` of ``req.context.consent`` when the caller has it (run_case
    computes it once per case: every request of the case carries the same record)."""
    want = consent_digest(req.context.consent) if sent is None else sent
    if bytes(answer.consent_digest) != want:
        raise VerificationError("answer.consent_digest: does not name the consent record sent", reason=Reason.ANSWER_NOT_BOUND)
    if answer.purpose != req.context.purpose or answer.case_ref != req.context.case_ref:
        raise VerificationError("answer.purpose/case_ref: differ from the request's", reason=Reason.ANSWER_NOT_BOUND)


def reused_consents(engine: Engine) -> list[dict]:
    """Authorisations recorded for more than one case (for ``audit reconcile``)."""
    with engine.connect() as c:
        rows = c.execute(select(cases.c.consent_digest, cases.c.case_ref).order_by(cases.c.consent_digest, cases.c.case_ref)).all()
    by: dict[bytes, list[str]] = {}
    for d, ref in rows:
        by.setdefault(bytes(d), []).append(ref)
    return [{"consent_digest": d.hex(), "cases": refs} for d, refs in by.items() if len(refs) > 1]


def revoke(rt: Runtime, digest: bytes, *, operator: str, case_ref: str | None = None, reason: str | None = None) -> int:
    """Appends a record digest to the hub's revocation list; returns the new serial. The row
    and its ``consent.revoked`` audit entry commit in one transaction (none without the
    other). Revoking a digest already revoked changes nothing but is audited again."""
    if len(digest) != 32:
        raise InvalidArgument(f"consent digest: got {len(digest)} bytes, want 32", reason=Reason.BAD_CONSENT_DIGEST)
    if not operator or len(operator) > 64 or not operator.isprintable():
        raise InvalidArgument(f"operator: got {len(operator)} characters, want a staff code of 1..64 printable")
    if reason is not None and (not reason.strip() or len(reason) > 300 or not reason.isprintable()):
        raise InvalidArgument(f"reason: got {len(reason)} characters, want 1..300 printable on one line (why the consent is revoked)")
    if idnum.contains(operator) or (reason is not None and idnum.contains(reason)):
        raise InvalidArgument("operator/reason: got text containing an identity number, want none", reason=Reason.IDENTITY_IN_TEXT)
    with rt.engine.begin() as c:
        if c.execute(select(consent_revocations.c.consent_digest).where(consent_revocations.c.consent_digest == digest)).first() is None:
            c.execute(consent_revocations.insert().values(consent_digest=digest, revoked_at=rt.clock.now(), operator=operator,
                                                          case_ref=case_ref, reason=reason))
        serial = int(c.execute(select(func.count()).select_from(consent_revocations)).scalar_one())
        fields: dict[str, Any] = {"consent_digest": digest.hex(), "operator": operator, "serial": serial}
        if case_ref is not None:
            fields["case_ref"] = case_ref
        seqs = rt.audit.write_in(c, rt.audit.prepare([(Kind.CONSENT_REVOKED, fields)]))
    rt.audit.committed(seqs)
    return serial


def revoke_case(rt: Runtime, case_ref: str, *, reason: str, operator: str) -> dict:
    """``hedui consent revoke``: revokes the consent record of an open case (the household
    withdrew its authorisation, or it was recorded in error). Every later request of this hub
    carries the new list, and providers refuse the record from then on (``CONSENT_REVOKED``)."""
    if not case_ref or len(case_ref) > 64 or not case_ref.isprintable() or idnum.contains(case_ref):
        raise InvalidArgument(f"case: got {len(case_ref)} characters, want a case reference (1..64 printable)", reason=Reason.BAD_CASE_REF)
    with rt.engine.connect() as c:
        case = c.execute(select(cases).where(cases.c.case_ref == case_ref)).first()
    if case is None:
        raise NotFound(f"case: got {case_ref[:32]!r}, want an open case reference")
    digest = consent_digest(issue_for_case(rt, case))
    serial = revoke(rt, digest, operator=operator, case_ref=case_ref, reason=reason)
    return {"case_ref": case_ref, "consent_digest": digest.hex(), "serial": serial}


def list_consents(rt: Runtime) -> list[dict]:
    """``hedui consent list``: each case's consent record (digest, use, validity) and whether
    and why it was revoked."""
    with rt.engine.connect() as c:
        rows = c.execute(select(cases).order_by(cases.c.created_at, cases.c.case_ref)).all()
        revoked = {bytes(r.consent_digest): r for r in c.execute(select(consent_revocations))}
    out = []
    for case in rows:
        env = issue_for_case(rt, case)
        rec = common_pb2.ConsentRecord.FromString(env.payload)
        d = consent_digest(env)
        r = revoked.get(d)
        out.append({
            "case_ref": case.case_ref, "purpose": case.purpose, "consent_digest": d.hex(),
            "use": "periodic" if rec.use == common_pb2.CONSENT_USE_PERIODIC else "one-off",
            "min_interval_days": int(rec.min_interval_days), "max_members": int(rec.max_members),
            "not_after": rec.not_after.ToDatetime(tzinfo=dt.UTC).isoformat(),
            "revoked": r is not None,
            "revoked_at": _utc(r.revoked_at).isoformat() if r is not None else None,
            "revoked_by": r.operator if r is not None else None,
            "reason": r.reason if r is not None else None,
        })
    return out


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def revocation_list(engine: Engine) -> list[bytes]:
    with engine.connect() as c:
        return revocations_in(c)


def revocations_in(c: Connection) -> list[bytes]:
    """:func:`revocation_list` on an open connection (run_case reads it with the case)."""
    return [bytes(r[0]) for r in _REVOKED.run(c)]


# On the driver's cursor (node/store/raw.py): read at the start of every case (issue 16).
_REVOKED = Prepared(select(consent_revocations.c.consent_digest)
                    .order_by(consent_revocations.c.revoked_at, consent_revocations.c.consent_digest))


def sign_revocations(signer: SigningKey, hub: str, revoked: Sequence[bytes], now: dt.datetime) -> common_pb2.Envelope:
    lst = common_pb2.ConsentRevocations(hub=hub, serial=len(revoked), issued_at=_ts(now), revoked=list(revoked))
    return dsse.sign(dsse.REVOCATIONS, lst.SerializeToString(deterministic=True), [signer])


def context_fields(rt: Runtime, case: Any) -> dict:
    """The consent fields of a hub request's context: the case's record and the current list."""
    return context_fields_of(rt, case, None, revocation_list(rt.engine))


#: How long (node clock) the hub sends one signed revocation list before signing it anew
#: while its content stays the same (issue 16).
LIST_REUSE = dt.timedelta(seconds=60)
_signed_lists: dict[tuple, tuple[dt.datetime, common_pb2.Envelope]] = {}
_signed_lock = threading.Lock()


def current_revocations(signer: SigningKey, hub: str, revoked: Sequence[bytes], now: dt.datetime) -> common_pb2.Envelope:
    """The hub's signed revocation list of ``revoked``: the one signed before while the list
    is the same and was signed less than :data:`LIST_REUSE` ago, else a new one (issue 16).
    A provider checks a list's hub, signature and serial, never its age (consent_state.py),
    so the same signed bytes serve every case meanwhile, and each provider verifies them
    once instead of on every Lookup. A revocation changes the list: signed at once."""
    k = (signer.keyid, signer.public.raw, hub, tuple(bytes(d) for d in revoked))
    with _signed_lock:
        have = _signed_lists.get(k)
    if have is not None and have[0] <= now < have[0] + LIST_REUSE:
        return have[1]
    env = sign_revocations(signer, hub, revoked, now)
    with _signed_lock:
        if len(_signed_lists) >= 16:
            _signed_lists.clear()
        _signed_lists[k] = (now, env)
    return env


def context_fields_of(rt: Runtime, case: Any, members: int | None, revoked: Sequence[bytes]) -> dict:
    """:func:`context_fields` from what the caller has just read: the case's member count and
    the hub's revocation list (:func:`revocations_in`)."""
    return {"consent": issue_for_case(rt, case, members),
            "revocations": current_revocations(rt.signer_for(ROLE_ANSWERS), rt.member, revoked, rt.clock.now())}
