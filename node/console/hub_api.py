"""The one door from the console into the hub's domain.

Every domain call the console makes goes through this module, so that when the feature
folders move (``node/hub`` → ``node/verification``, ``discovery/hub.py`` → leads/referrals)
only these imports change. Nothing here decides anything: it forwards, and names what it
forwards in the console's terms.
"""

from __future__ import annotations

import inspect
from datetime import date, datetime
from decimal import Decimal

from hedui.adapters.idnum import InvalidIdentity, normalize
from hedui.node.crosscheck import history as _crosscheck
from hedui.node.discovery import report as _monthly
from hedui.node.discovery import worklist
from hedui.node.discovery.hub import Hub, load_hub
from hedui.node.discovery.referrals import OUTCOMES, PROGRAMMES
from hedui.node.errors import ConfigError
from hedui.node.verification import cases as _cases
from hedui.node.verification import casework
from hedui.node.verification import report as _report
from hedui.v1 import common_pb2, lookup_pb2

__all__ = [
    "CASE_PURPOSES", "SUPPORTS_REFERENCE_MONTH", "consent_digest_of", "normalize", "InvalidIdentity",
    "open_case", "run_case", "departments_to_ask", "report_html", "list_cases", "case_state", "answer_states",
    "review_case", "show_members", "discovery_hub", "lead_row", "sealing_key", "leads_page", "event_types", "open_details",
    "respond", "escalate", "referrals_page", "monthly", "not_current_count", "department_names", "towns",
    "OUTCOMES", "PROGRAMMES", "DECISIONS", "hub_region", "mask_identity",
    "crosscheck_runs", "crosscheck_run", "crosscheck_hits", "crosscheck_files", "run_crosscheck", "crosscheck_rules",
]

CASE_PURPOSES = ("dibao", "tekun", "temporary_assistance", "periodic_review")
DECISIONS = casework.DECISIONS
consent_digest_of = _cases.consent_digest_of
# The reference month field appears on the intake form once open_case takes it (issue 12).
SUPPORTS_REFERENCE_MONTH = "reference_month" in inspect.signature(_cases.open_case).parameters

mask_identity = _report.mask_identity
list_cases = casework.list_cases
case_state = casework.case_state
answer_states = casework.answer_states
leads_page = worklist.leads_page
lead_row = worklist.lead_row
event_types = worklist.event_types
referrals_page = worklist.referrals_page


def open_case(rt, members: list[tuple[str, str]], *, purpose: str, consent_digest: bytes, operator: str, region: str,
              expenditure: Decimal | None, reference_month: str | None = None) -> str:
    kw = {"reference_month": reference_month} if SUPPORTS_REFERENCE_MONTH and reference_month else {}
    # open_case records case.opened itself (the act is audited where it happens).
    return _cases.open_case(rt, members, purpose=purpose, consent_digest=consent_digest, operator=operator,
                            region=region, expenditure=expenditure, **kw)


def run_case(rt, case_ref: str, *, operator: str, timeout: float = 10.0):
    return _cases.run_case(rt, case_ref, operator=operator, timeout=timeout)


def departments_to_ask(rt) -> list[str]:
    """The departments a run asks (those the rules need, in the directory)."""
    return [m.code for m, _ in _cases._providers(rt, _rules(rt))]


def report_html(rt, case_ref: str, lang: str) -> str:
    """The domain's own report document (the console shows it; it does not re-render it)."""
    return _report.render_html(_report.build_report(rt.engine, case_ref, _rules(rt), tz=rt.clock.zone), lang)


def _rules(rt):
    if rt.hub is None:
        raise ConfigError(f"node.roles: got {', '.join(rt.config.node.roles)}, want the hub role for the console")
    return rt.hub.rules


def review_case(rt, case_ref: str, *, reviewer: str, decision: str, note: str, now: datetime) -> dict:
    return casework.review_case(rt.engine, rt.audit, case_ref, reviewer=reviewer, decision=decision, note=note, now=now)


def show_members(rt, case_ref: str, *, operator: str) -> list[dict]:
    return casework.show_members(rt.engine, rt.audit, case_ref, operator=operator)


def discovery_hub(rt) -> Hub:
    """The discovery workflow without the private key (listing needs none)."""
    return load_hub(rt.config, rt.engine, rt.directory, rt.clock, rt.passphrase)


def sealing_key(rt):
    """The hub's private sealing key, loaded once per process (a memory-hard KDF: ~1.5 s)."""
    if rt.hub is None or rt.hub.sealing_key is None:
        raise ConfigError("hub.sealing_key: got none, want the hub's encrypted sealing key to open sealed details")
    return rt.hub.sealing_key


def open_details(rt, hub: Hub, lead_ids: list[int], *, operator: str, reason: str) -> dict:
    return worklist.open_details(hub, sealing_key(rt), rt.audit, lead_ids, operator=operator, reason=reason)


def respond(rt, hub: Hub, referral_id: int, *, outcome: str, programme: str | None, operator: str, now: datetime):
    return worklist.respond(hub, rt.audit, referral_id, outcome=outcome, programme=programme, operator=operator, now=now)


def escalate(rt, hub: Hub, as_of: date, *, operator: str, now: datetime):
    return worklist.escalate(hub, rt.audit, as_of, operator=operator, now=now)


def monthly(hub: Hub, year: int, month: int) -> tuple[dict, str]:
    rep = _monthly.monthly_report(hub, year, month)
    return rep, _monthly.render_html(rep)


_NOT_CURRENT = (lookup_pb2.FieldAnswer.DESCRIPTOR.fields_by_name.get("state"),
                getattr(lookup_pb2, "ANSWER_STATE_NOT_CURRENT", None))


def not_current_count(envelope: bytes | None) -> int:
    """Fields a department answered "not current" (its data does not cover the window). Zero
    until the answer format carries the state (issue 12)."""
    field, value = _NOT_CURRENT
    if envelope is None or field is None or value is None:
        return 0
    answer = lookup_pb2.LookupAnswer.FromString(common_pb2.Envelope.FromString(envelope).payload)
    return sum(1 for m in answer.members for f in m.fields if getattr(f, "state") == value)  # noqa: B009 - in the proto from issue 12 on


def department_names(rt) -> dict[str, str]:
    return {m.code: m.name for m in rt.directory.msg.members}


def towns(hub: Hub) -> list[tuple[str, str]]:
    return sorted((code, name) for code, name in hub.routing.names.items() if hub.routing.kinds.get(code) == "town")


def hub_region(rt) -> str:
    me = rt.directory.by_code.get(rt.member)
    return getattr(me, "region", "") if me is not None else ""



# -- cross-checks (issue 15 item 4; node/crosscheck/history.py) --------------------------------

crosscheck_files = _crosscheck.available_checks


def crosscheck_runs(rt, *, limit: int, offset: int) -> list[_crosscheck.RunSummary]:
    return _crosscheck.list_runs(rt.engine, limit=limit, offset=offset)


def crosscheck_run(rt, run_id: int) -> _crosscheck.RunSummary:
    return _crosscheck.run_summary(rt.engine, run_id)


def crosscheck_hits(rt, run_id: int, *, operator: str, reason: str | None, limit: int, offset: int) -> list[dict]:
    # run_hits records crosscheck.viewed with the operator (audited in the domain).
    return _crosscheck.run_hits(rt, run_id, operator=operator, reason=reason, limit=limit, offset=offset)


def run_crosscheck(rt, folder, file_name: str, *, operator: str, count_only: bool, timeout: float) -> int:
    # run_check records crosscheck.run (and every provider call) with the operator.
    return _crosscheck.run_named_check(rt, folder, file_name, operator=operator, count_only=count_only, timeout=timeout)


def crosscheck_rules(rt, summary: _crosscheck.RunSummary) -> dict[str, tuple[str, str]]:
    """criterion -> (field description, "description ≥ value") in the words of the
    department's catalogue (the signed directory), for people reading the page."""
    out = {}
    for name, c in summary.criteria.items():
        m = rt.directory.by_code.get(c["department"])
        desc = next((f.description for f in m.fields if f.name == c["field"]), "") if m is not None else ""
        op = "≥" if c["op"] == ">=" else "="
        out[name] = (desc or c["field"], f"{desc or c['field']} {op} {c['value']}")
    return out
