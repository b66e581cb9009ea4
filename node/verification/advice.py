"""What a caseworker should do about a department that did not give a usable answer.

Issue 13 ("Honest exits"): ``hedui case run`` on an incomplete case must say *why* per
department, and the advice must fit the cause — a policy refusal is not cured by running
again later (it needs the policy fixed), an unavailable department is (retry), a department
in maintenance is back after its window, and a figure that is not current waits for the
department's newer data. One function so the CLI, its JSON and the docs say the same thing
(docs/caseworker.md "When a case is incomplete").
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from hedui.common.errors import Reason

__all__ = ["Advice", "for_gap", "for_outcome", "reason_code"]

#: A department refused because of how much it is asked right now: asking later helps.
_LATER = frozenset({Reason.QUOTA_EXCEEDED, Reason.OVERLOADED, Reason.REVOCATIONS_STALE})
#: Refusals about the signed authorisation (issue 18): get a valid one, then run again.
_CONSENT = frozenset({
    Reason.CONSENT_MISSING, Reason.BAD_CONSENT_DIGEST, Reason.CONSENT_INVALID, Reason.CONSENT_FORGED,
    Reason.CONSENT_EXPIRED, Reason.CONSENT_REVOKED, Reason.CONSENT_WRONG_PURPOSE, Reason.CONSENT_WRONG_CASE,
    Reason.CONSENT_OVER_COUNT, Reason.CONSENT_REUSED,
})
#: Status names (not refusal reasons): a stored outcome whose reason is one of these carries
#: no reason of ours; "LOCAL" marks a failure on the hub's side of the call.
_GRPC_CODES = frozenset({c.name for c in grpc.StatusCode} | {"LOCAL"})


@dataclass(frozen=True)
class Advice:
    """``kind``: ``retry`` (run the case again later), ``maintenance`` (again after the
    department's maintenance), ``policy`` (fix the access policy first), ``consent`` (a valid
    signed authorisation first), ``security`` (report it), ``not_current`` (wait for the
    department's newer data). ``text`` is the one line shown to the caseworker."""

    kind: str
    text: str


def reason_code(reason: str) -> str:
    """The refusal reason of a stored outcome text (``CODE: REASON: message``, node/errors.py
    ``describe_remote``), or ``""`` when it names none."""
    parts = [p.strip() for p in reason.split(":")]
    if parts and parts[0] in _GRPC_CODES:
        parts = parts[1:]
    return parts[0] if parts and parts[0] in Reason.__members__ else ""


def for_outcome(status: str, reason: str) -> Advice | None:
    """The advice for one department's outcome of a run (``None`` for ``ok``)."""
    if status == "ok":
        return None
    if status == "unavailable":
        return Advice("retry", "unavailable (no answer before the deadline, or down): run the case again later")
    if status == "maintenance":
        return Advice("maintenance", "in maintenance (directory): run the case again after the maintenance window")
    if status in ("bad_signature", "bad_proof"):
        return Advice("security", "its answer did not verify and is not used: report it to the security officer")
    code = reason_code(reason)
    if code in _LATER:
        return Advice("retry", f"refused for now ({code}): run the case again later")
    if code in _CONSENT:
        return Advice("consent", f"refused the authorisation ({code}): get a valid signed authorisation, "
                                 "then run the case again")
    # Every other refusal is a decision of the department's policy or of the directory
    # (purpose, field, method, batch size, membership): asking again gets the same answer.
    return Advice("policy", f"refused by policy ({code or 'no reason given'}): running again will not help; "
                            "ask the federation authority / the department to fix the policy")


def for_gap(why: str) -> Advice:
    """The advice for a gap of a report whose departments all answered (issue 12)."""
    if why == "not_current":
        return Advice("not_current", "its data is not current for the reference month: run the case again once "
                                     "the department has loaded newer data")
    if why == "not_answered":
        return Advice("policy", "no department in the directory offers this field: the rules or the directory "
                                "must change (federation authority)")
    if why == "bad_value":
        return Advice("security", "the department's value could not be read: report it to the department")
    if why in ("no_standard", "no_counted_member"):
        return Advice("policy", "the rules cannot conclude (no standard in force, or no counted member): "
                                "check the region's standard or the household's members")
    return Advice("retry", f"{why}: run the case again later")
