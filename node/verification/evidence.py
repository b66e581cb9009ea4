"""Case evidence: export a case's signed answers with the directories in force, and verify
them offline against the federation authority's key alone."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

from sqlalchemy import select

from hedui.common.errors import HeduiError
from hedui.keys.directory import verify_directory
from hedui.keys.signing import VerifyingKey
from hedui.node.errors import Reason, VerificationError
from hedui.node.verification import consent
from hedui.node.verification.hub_tables import directory_history
from hedui.node.verification.protocol import request_digest, verify_answer
from hedui.node.verification.report import load_case, mask_identity, verified_answers
from hedui.v1 import common_pb2, lookup_pb2

__all__ = ["export_case", "verify_case_data", "verify_export", "EXPORT_FORMAT"]

EXPORT_FORMAT = "hedui-case-evidence-v1"
_EPOCH = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)  # signature only: expiry is judged at the answer's time


def export_case(engine, case_ref: str) -> dict:
    data = load_case(engine, case_ref)
    case = data["case"]
    return {
        "format": EXPORT_FORMAT,
        "case_ref": case.case_ref,
        "purpose": case.purpose,
        "members": [mask_identity(m.identity) for m in data["members"]],
        # Every directory the hub accepted (issue 18): the checker finds the one in force at
        # each answer's signed time, not only the one the hub says it used.
        "directories": {str(v): base64.b64encode(b).decode() for v, b in (data["directories"] | _all_directories(engine)).items()},
        "answers": [
            {
                "provider": a.provider, "status": a.status, "reason": a.reason,
                "request_id": bytes(a.request_id).hex(),
                "request_digest": bytes(a.request_digest).hex() if a.request_digest else None,
                "tokens": base64.b64encode(bytes(a.tokens)).decode() if a.tokens else None,
                "envelope": base64.b64encode(bytes(a.envelope)).decode() if a.envelope else None,
                "directory_version": a.directory_version,
                "epoch": a.epoch,
                "filter_first": a.filter_first,
                # The whole LookupRequest (issue 18): recompute request_digest from it and
                # check the consent record, purpose and case the answer binds.
                "request": base64.b64encode(bytes(a.request)).decode() if getattr(a, "request", None) else None,
            }
            for a in data["answers"]
        ],
    }


class _Row:
    def __init__(self, d: dict) -> None:
        self.provider = d["provider"]
        self.status = d["status"]
        self.reason = d.get("reason") or ""
        self.request_digest = bytes.fromhex(d["request_digest"]) if d.get("request_digest") else b""
        self.tokens = base64.b64decode(d["tokens"]) if d.get("tokens") else b""
        self.envelope = base64.b64decode(d["envelope"]) if d.get("envelope") else b""
        self.directory_version = d.get("directory_version")
        self.epoch = d.get("epoch")
        self.filter_first = d.get("filter_first")
        self.request = base64.b64decode(d["request"]) if d.get("request") else b""


def verify_case_data(data: dict, authority: VerifyingKey) -> list[dict]:
    """Returns one verdict per provider; raises nothing for a bad answer (it is a verdict)."""
    out = []
    rows = {a.provider: a for a in data["answers"]}
    for prov, e in verified_answers(data, authority).items():
        if e["answer"] is not None:
            bad = consent_binding_error(rows[prov], e["answer"]) or directory_in_force_error(
                data["directories"], rows[prov], e["answer"], authority)
            if bad:
                e.update(status="bad_signature", reason=f"evidence does not verify: {bad}", evidence=None)
        out.append({"provider": prov, "status": e["status"], "reason": e["reason"], "evidence": e["evidence"],
                    "signer": e["signer"], "directory_version": e.get("directory_version")})
    return out


def consent_binding_error(row, answer) -> str:
    """Why the exported request does not match the verified answer ("" when it does): the
    request's digest is the one the answer signs, and the answer names the request's consent
    record, purpose and case. An answer exported without its request (older hubs) gets ""
    here: its digest binding was checked by ``verified_answers``."""
    raw = bytes(getattr(row, "request", b"") or b"")
    if not raw:
        return ""
    try:
        req = lookup_pb2.LookupRequest.FromString(raw)
    except Exception:
        return Reason.BAD_EXPORT.value
    if hashlib.sha256(raw).digest() != bytes(row.request_digest) or request_digest(req) != bytes(row.request_digest):
        return Reason.ANSWER_NOT_BOUND.value
    try:
        consent.check_binding(answer, req)
    except VerificationError as exc:
        return exc.reason.value
    return ""


def _all_directories(engine) -> dict[int, bytes]:
    with engine.connect() as c:
        return {int(r.version): bytes(r.envelope) for r in c.execute(select(directory_history.c.version, directory_history.c.envelope))}


def directory_in_force_error(directories: dict[int, bytes], row, answer, authority: VerifyingKey) -> str:
    """Why the answer does not verify under the directory in force when it was signed (""
    when it does). In force at ``t`` (the answer's signed ``issued_at``): the highest version
    issued at or before ``t`` among the authority-signed directories given; it must not have
    expired by ``t``, and the answer must verify under *its* key for the provider — whichever
    version the hub recorded (a provider key the authority replaced before ``t`` no longer
    counts)."""
    t = answer.issued_at.ToDatetime(tzinfo=dt.UTC)
    trusted = {}
    for v, raw in directories.items():
        try:
            td = verify_directory(common_pb2.Envelope.FromString(raw), authority, now=_EPOCH)
        except (HeduiError, ValueError):
            continue  # not the authority's: it cannot be in force
        if td.version == v:
            trusted[v] = td
    candidates = [v for v, td in trusted.items() if td.msg.issued_at.ToDatetime(tzinfo=dt.UTC) <= t]
    if not candidates:
        return f"{Reason.DIRECTORY_NOT_IN_FORCE.value}: no directory issued by {t:%Y-%m-%dT%H:%M:%SZ}"
    td = trusted[max(candidates)]
    if t >= td.expires_at:
        return f"{Reason.DIRECTORY_EXPIRED.value}: v{td.version} expired before the answer was signed"
    if td.version != row.directory_version:
        tokens = [bytes(row.tokens[i:i + 64]) for i in range(0, len(row.tokens), 64)]
        try:
            verify_answer(td.signing_keys(), row.provider, common_pb2.Envelope.FromString(bytes(row.envelope)),
                          bytes(row.request_digest), tokens)
        except (HeduiError, ValueError):
            return (f"{Reason.DIRECTORY_NOT_IN_FORCE.value}: does not verify under v{td.version}, in force at "
                    f"{t:%Y-%m-%dT%H:%M:%SZ} (checked under v{row.directory_version})")
    return ""


def verify_export(path: Path, authority: VerifyingKey) -> list[dict]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("format") != EXPORT_FORMAT:
            raise ValueError("format")
        data = {
            "answers": [_Row(a) for a in doc["answers"]],
            "directories": {int(v): base64.b64decode(b) for v, b in doc["directories"].items()},
        }
    except OSError as exc:
        raise VerificationError(f"case file {path}: {exc.strerror}", reason=Reason.BAD_EXPORT) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise VerificationError(f"case file {path}: got malformed evidence ({type(exc).__name__}), want {EXPORT_FORMAT}", reason=Reason.BAD_EXPORT) from None
    return verify_case_data(data, authority)
