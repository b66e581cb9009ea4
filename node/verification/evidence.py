"""Case evidence: export a case's signed answers with the directories in force, and verify
them offline against the federation authority's key alone."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from hedui.keys.signing import VerifyingKey
from hedui.node.errors import Reason, VerificationError
from hedui.node.verification import consent
from hedui.node.verification.protocol import request_digest
from hedui.node.verification.report import load_case, mask_identity, verified_answers
from hedui.v1 import lookup_pb2

__all__ = ["export_case", "verify_case_data", "verify_export", "EXPORT_FORMAT"]

EXPORT_FORMAT = "hedui-case-evidence-v1"


def export_case(engine, case_ref: str) -> dict:
    data = load_case(engine, case_ref)
    case = data["case"]
    return {
        "format": EXPORT_FORMAT,
        "case_ref": case.case_ref,
        "purpose": case.purpose,
        "members": [mask_identity(m.identity) for m in data["members"]],
        "directories": {str(v): base64.b64encode(b).decode() for v, b in data["directories"].items()},
        "answers": [
            {
                "provider": a.provider, "status": a.status, "reason": a.reason,
                "request_id": bytes(a.request_id).hex(),
                "request_digest": bytes(a.request_digest).hex() if a.request_digest else None,
                "tokens": base64.b64encode(bytes(a.tokens)).decode() if a.tokens else None,
                "envelope": base64.b64encode(bytes(a.envelope)).decode() if a.envelope else None,
                "directory_version": a.directory_version,
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
        self.request = base64.b64decode(d["request"]) if d.get("request") else b""


def verify_case_data(data: dict, authority: VerifyingKey) -> list[dict]:
    """Returns one verdict per provider; raises nothing for a bad answer (it is a verdict)."""
    out = []
    rows = {a.provider: a for a in data["answers"]}
    for prov, e in verified_answers(data, authority).items():
        if e["answer"] is not None:
            bad = consent_binding_error(rows[prov], e["answer"])
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
