"""``hedui crosscheck run`` on the hub (issue 14): a named check over a population.

Per target department, under the check's purpose (``bulk_cross_check``), the same policy,
quotas and audit as cases:

1. its signed token filter, refreshed if the provider's header changed (``fetch``);
2. the population OPRF-evaluated in batches (the provider learns only the batch sizes);
3. the tokens intersected with the filter locally: the department never sees a token of a
   person it holds no record of (a false positive, rate ≤ 2^-30, only costs a "no record");
4. ``Lookup`` of the fields the criteria name, for the matches only, each answer signed;
5. the criteria applied to the signed answers.

The result lists each hit with its reasons and evidence (the answer digest, value and the
filter digest of "no record" for the others), counts by reason, and the population lines
that were not valid identities (by number). Unless ``count_only``, each hit becomes a
stop-warning lead (``stop.<criterion>``) routed to the person's town with the discovery
referral deadlines — a lead for review, never an automatic removal. ``count_only`` returns
only the number of hits per criterion and keeps nobody's identity.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any

import numpy as np

from hedui.common.errors import Reason
from hedui.keys import oprf
from hedui.keys.directory import PURPOSES, ROLE_ANSWERS
from hedui.node.audit.entry import Kind
from hedui.node.crosscheck import shards
from hedui.node.crosscheck.check import Check, Population, read_population
from hedui.node.crosscheck.fetch import CachedFilter, current_filter, member_epoch
from hedui.node.errors import ConfigError, InvalidArgument, VerificationError
from hedui.node.verification import consent
from hedui.node.verification.protocol import request_digest, verify_answer
from hedui.v1 import common_pb2, directory_pb2, lookup_pb2, pseudonym_pb2

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["Hit", "CrossCheckResult", "run_check", "PURPOSE", "BATCH"]

PURPOSE = "bulk_cross_check"
#: Tokens per Evaluate and per Lookup (the testbed policy's max_batch).
BATCH = 4096

Progress = Callable[[str, int, int], None]


@dataclass
class Hit:
    identity: str
    town: str
    reasons: dict[str, dict[str, Any]] = field(default_factory=dict)   # criterion → evidence
    lead_id: int | None = None


@dataclass
class CrossCheckResult:
    name: str
    reference_month: str
    day: date
    population: int
    invalid_lines: list[int]
    matched: dict[str, int]                    # department → |population ∩ filter|
    filters: dict[str, dict[str, Any]]         # department → data date, count, header digest
    counts: dict[str, int]                     # criterion → hits
    hits: list[Hit]
    count_only: bool
    #: The stored run (node/crosscheck/history.py): what the console lists.
    run_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        from hedui.node.verification.report import mask_identity

        return {
            "name": self.name, "reference_month": self.reference_month, "as_of": self.day.isoformat(),
            "population": self.population, "invalid_lines": self.invalid_lines, "matched": self.matched,
            "filters": self.filters, "counts": self.counts, "count_only": self.count_only, "run_id": self.run_id,
            "hits": [] if self.count_only else [
                {"identity": mask_identity(h.identity), "town": h.town, "lead_id": h.lead_id,
                 "reasons": sorted(h.reasons), "evidence": h.reasons} for h in self.hits],
        }


def _member(rt: Runtime, code: str) -> directory_pb2.Member:
    for m in rt.directory.members_with(directory_pb2.ROLE_PROVIDER):
        if m.code == code:
            return m
    raise InvalidArgument(f"criteria: department: got {code[:32]!r}, want a provider in the directory", reason=Reason.BAD_CRITERION)


def _validate(rt: Runtime, check: Check) -> dict[str, directory_pb2.Member]:
    out: dict[str, directory_pb2.Member] = {}
    for i, c in enumerate(check.criteria):
        m = out.get(c.department) or _member(rt, c.department)
        names = {f.name for f in m.fields}
        if c.field not in names:
            raise InvalidArgument(f"{check.path.name}: criteria[{i}].field: got {c.field[:40]!r}, want one of "
                                  f"{c.department}'s fields {sorted(names)}", reason=Reason.UNKNOWN_FIELD)
        out[c.department] = m
    return out


def _tokens(rt: Runtime, m: directory_pb2.Member, ctx_base: dict, people: list[str], progress: Progress | None, timeout: float) -> list[bytes]:
    epoch = member_epoch(m)
    pub = next(bytes(k.public_key) for k in m.oprf_keys if k.epoch == epoch)
    peer = rt.peers.get(m.code)
    out: list[bytes] = []
    for i in range(0, len(people), BATCH):
        state = oprf.blind(people[i: i + BATCH])
        req = pseudonym_pb2.EvaluateRequest(context=common_pb2.RequestContext(request_id=os.urandom(16), **ctx_base),
                                            epoch=epoch, blinded_elements=state.blinded)
        ev = peer.pseudonym.Evaluate(req, timeout=timeout)
        if ev.epoch != epoch:
            raise VerificationError(f"evaluate: got epoch {ev.epoch}, want {epoch}", reason=Reason.BAD_EPOCH)
        out += oprf.finalize(state, list(ev.evaluated_elements), ev.proof, pub)
        if progress:
            progress(f"{m.code}: pseudonyms", len(out), len(people))
    return out


def _lookup(rt: Runtime, m: directory_pb2.Member, ctx_base: dict, tokens: list[bytes], fields: list[str], month: str, timeout: float,
            progress: Progress | None) -> list[tuple[lookup_pb2.TokenAnswer, str]]:
    peer = rt.peers.get(m.code)
    out: list[tuple[lookup_pb2.TokenAnswer, str]] = []
    for i in range(0, len(tokens), BATCH):
        part = tokens[i: i + BATCH]
        rid = os.urandom(16)
        req = lookup_pb2.LookupRequest(context=common_pb2.RequestContext(request_id=rid, **ctx_base), epoch=member_epoch(m),
                                       tokens=part, queries=[lookup_pb2.FieldQuery(field=f) for f in fields], reference_month=month)
        digest = request_digest(req)
        rt.audit.record(Kind.QUERY_SENT, {"peer": m.code, "purpose": int(req.context.purpose), "case_ref": req.context.case_ref,
                                          "request_id": rid.hex(), "request_digest": digest.hex(), "count": len(part),
                                          "fields": fields}, wait=False)
        resp = peer.lookup.Lookup(req, timeout=timeout)
        answer = verify_answer(rt.directory.signing_keys(), m.code, resp.answer, digest, part)
        adigest = hashlib.sha256(resp.answer.payload).hexdigest()
        rt.audit.record(Kind.ANSWER_RECEIVED, {"peer": m.code, "case_ref": req.context.case_ref, "request_id": rid.hex(),
                                               "request_digest": digest.hex(), "answer_digest": adigest, "outcome": "ok",
                                               "found": sum(1 for a in answer.members if a.found)})
        out += [(a, adigest) for a in answer.members]
        if progress:
            progress(f"{m.code}: lookups", len(out), len(tokens))
    return out


def _start_of_day(rt: Runtime) -> datetime:
    # A check run as of day D (``--as-of``) is authorised from the start of D in the federation
    # zone: the departments' clocks need not agree with the hub's to the second.
    return datetime.combine(rt.clock.today(), time.min, tzinfo=rt.clock.zone)


def run_check(rt: Runtime, check: Check, *, count_only: bool = False, progress: Progress | None = None,
              timeout: float = 60.0, executor: Executor | None = None) -> CrossCheckResult:
    """Runs ``check``; see the module docstring. Nothing is written (no lead) unless every
    department answered and every answer verified."""
    if rt.hub is None:
        raise ConfigError(f"node.roles: got {', '.join(rt.config.node.roles)}, want the hub role to run cross-checks")
    members = _validate(rt, check)
    pop: Population = read_population(check, today=rt.clock.today())
    case_ref = f"CC-{check.reference_month}-{check.digest.hex()[:12]}"
    ctx_base = dict(purpose=PURPOSES[PURPOSE], case_ref=case_ref, consent_digest=check.digest, operator=check.operator)
    # Issue 18: every Lookup carries a signed record of what authorises it. For a cross-check
    # that is the named check itself (its file's digest, purpose, reference and population
    # size), issued by the hub now; departments verify it like a household's authorisation.
    ctx_base.update(consent=consent.issue(
        rt.signer_for(ROLE_ANSWERS), hub=rt.member, scan_digest=check.digest, purpose=PURPOSE, case_ref=case_ref,
        max_members=max(1, len(pop.people)), issued_at=_start_of_day(rt), operator=check.operator),
        revocations=consent.sign_revocations(rt.signer_for(ROLE_ANSWERS), rt.member, consent.revocation_list(rt.engine),
                                             rt.clock.now()))
    filters: dict[str, CachedFilter] = {code: current_filter(rt, m, ctx_base, timeout=timeout) for code, m in members.items()}
    found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)     # identity → criterion → evidence
    matched: dict[str, int] = {}
    for code, m in members.items():
        crits = [c for c in check.criteria if c.department == code]
        fields = sorted({c.field for c in crits})
        tokens = _tokens(rt, m, ctx_base, pop.people, progress, timeout)
        filt = filters[code]
        hit = shards.intersect(tokens, filt.content, executor=executor)
        idx = [int(i) for i in np.flatnonzero(hit)]
        matched[code] = len(idx)
        if progress:
            progress(f"{code}: filter ∩", len(idx), len(tokens))
        answers = _lookup(rt, m, ctx_base, [tokens[i] for i in idx], fields, check.reference_month, timeout, progress) if idx else []
        for i, (ans, adigest) in zip(idx, answers):
            if not ans.found:
                continue
            by_field = {f.field: f for f in ans.fields}
            for c in crits:
                fa = by_field.get(c.field)
                if fa is not None and fa.state == lookup_pb2.ANSWER_STATE_VALUE and c.holds(fa.value):
                    found[pop.people[i]][c.name] = {
                        "department": code, "field": c.field, "value": fa.value, "op": c.op, "threshold": c.value,
                        "answer_digest": adigest, "data_date": fa.data_date,
                    }
    counts = {c.name: 0 for c in check.criteria}
    for reasons in found.values():
        for r in reasons:
            counts[r] += 1
    hits = [] if count_only else [Hit(i, pop.towns.get(i, ""), found[i]) for i in pop.people if i in found]
    if not count_only and hits:
        _leads(rt, check, hits)
    result = CrossCheckResult(
        check.name, check.reference_month, check.day, len(pop.people), pop.invalid, matched,
        {c: {"data_date": f.header.data_date.isoformat(), "count": f.header.total, "epoch": f.header.epoch,
             "header_digest": f.digest.hex(), "false_positive_rate": f.header.false_positive_rate} for c, f in filters.items()},
        counts, hits, count_only,
    )
    # Kept for the console's list of runs and hits (issue 15 item 4): masked identities only.
    from hedui.node.crosscheck.history import record_run

    result.run_id = record_run(rt, check, result, operator=check.operator)
    rt.audit.record(Kind.CROSSCHECK_RUN, {"check": check.name, "operator": check.operator, "population": len(pop.people),
                                          "count_only": count_only, "case_ref": case_ref, "hits": len(found),
                                          "invalid": len(pop.invalid), "digest": check.digest.hex(), "run_id": result.run_id})
    return result


def _leads(rt: Runtime, check: Check, hits: list[Hit]) -> None:
    """Stop-warning leads (拒止类预警), one event per reason, routed to the person's town
    with the discovery referral deadlines (``Hub.add_manual_lead``)."""
    assert rt.hub is not None
    hub = rt.hub.discovery
    if hub is None:
        raise ConfigError("hub.routing: got none, want the discovery routing (stop-warning leads go to the towns)")
    for h in hits:
        if not h.town:
            raise InvalidArgument("population: got a hit with no town, want population.region or a town per line")
    for h in hits:
        for reason in sorted(h.reasons):
            acc = hub.add_manual_lead(identity=h.identity, region=h.town, event_type=f"stop.{reason}", event_date=check.day,
                                      reporter="crosscheck", note=f"{check.name}: {reason}")
            h.lead_id = acc.lead_id
