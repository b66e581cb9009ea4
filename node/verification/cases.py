"""Household verification cases on the hub: open, run against every provider, store evidence.

``run_case`` obtains tokens from every provider in parallel (blind → Evaluate → verify the
batched DLEQ proof against the directory's OPRF key → finalise), then sends each provider
one ``Lookup`` with the member tokens and the fields the rules need. A provider that does
not answer within its deadline is retried with the *same* request id (the provider returns
the same signed answer if it had answered); one that still fails is recorded as
``unavailable`` with the reason — never as zero.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import grpc
from sqlalchemy import Engine, bindparam, func, insert, select, update

from hedui.adapters.idnum import normalize
from hedui.common.clock import DEFAULT_ZONE, local_date, zone
from hedui.common.periods import Month, PeriodError, parse_month
from hedui.keys import oprf
from hedui.keys.directory import PURPOSES
from hedui.node.audit.entry import Kind
from hedui.node.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    Unauthenticated,
    VerificationError,
    describe_remote,
    from_rpc_error,
)
from hedui.node.store.db import dialect_insert
from hedui.node.store.raw import Prepared
from hedui.node.verification import consent
from hedui.node.verification.hub_tables import case_answers, case_members, cases, directory_history
from hedui.node.verification.protocol import serialized_request_digest, verify_answer
from hedui.node.verification.rules import Rules
from hedui.v1 import common_pb2, directory_pb2, lookup_pb2, pseudonym_pb2

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["open_case", "run_case", "list_cases", "CaseRun", "record_directory", "consent_digest_of",
           "default_reference_month", "reference_month_of"]

log = logging.getLogger("hedui.hub.cases")
_MAX_MEMBERS = 20


def consent_digest_of(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def default_reference_month(application_day: dt.date) -> Month:
    """The month before the application (acceptance-rules.md "Reference month"); the day is
    the local date in the federation zone."""
    return Month.of(application_day).plus(-1)


def reference_month_of(case, tz: ZoneInfo | None = None) -> Month:
    """A stored case's reference month; cases opened before issue 12 stored none: theirs is
    the month before the local day they were opened."""
    if case.reference_month:
        return parse_month(case.reference_month, field="reference_month")
    return default_reference_month(local_date(case.created_at, tz or zone(DEFAULT_ZONE)))


def _reference_month(value: Month | str | None, rt: Runtime) -> Month:
    if value is None:
        return default_reference_month(rt.clock.today())
    if isinstance(value, Month):
        return value
    try:
        return parse_month(value, field="reference_month")
    except PeriodError as exc:
        raise InvalidArgument(f"reference_month: got {value[:16]!r}, want YYYY-MM") from exc


def open_case(
    rt: Runtime,
    members: list[tuple[str, str]],
    *,
    purpose: str,
    consent_digest: bytes,
    operator: str,
    region: str,
    expenditure: Decimal | None = None,
    reference_month: Month | str | None = None,
) -> str:
    """Validates everything up front, then writes the case and its ``case.opened`` entry in
    one transaction (the act is audited where it happens, whoever opens the case).
    ``reference_month``: the month the verification is made for (default: the month before
    today in the federation zone, from ``rt.clock``)."""
    ref_month = _reference_month(reference_month, rt)
    if purpose not in PURPOSES:
        raise InvalidArgument(f"purpose: got {purpose[:32]!r}, want one of {sorted(PURPOSES)}")
    if len(consent_digest) != 32:
        raise InvalidArgument(f"consent digest: got {len(consent_digest)} bytes, want 32 (SHA-256 of the signed authorisation)")
    if not members:
        raise InvalidArgument("members: got none, want at least one household member")
    if len(members) > _MAX_MEMBERS:
        raise InvalidArgument(f"members: got {len(members)}, want at most {_MAX_MEMBERS}")
    if not operator or len(operator) > 64:
        raise InvalidArgument("operator: got an empty or over-long code, want 1..64 characters")
    if not region.isdigit() or len(region) not in (6, 9, 12):
        raise InvalidArgument(f"region: got {region[:12]!r}, want a 6-, 9- or 12-digit region code")
    if expenditure is not None and (not expenditure.is_finite() or expenditure < 0 or expenditure > Decimal("1e9")):
        raise InvalidArgument("expenditure: got a negative or absurd amount, want 0..1e9 CNY")
    seen: dict[str, int] = {}
    norm: list[tuple[str, str]] = []
    for i, (raw, relation) in enumerate(members):
        try:
            ident = normalize(raw, today=rt.clock.today())
        except InvalidArgument as exc:
            raise InvalidArgument(f"members[{i}]: {exc.message}", reason=exc.reason) from None
        if ident in seen:
            raise InvalidArgument(f"members[{i}]: same person as members[{seen[ident]}], want each member once", reason=Reason.DUPLICATE_MEMBER)
        seen[ident] = i
        norm.append((ident, (relation or "member")[:32]))
    now = rt.clock.now()
    year = rt.clock.today().year  # the case reference's year is the local (federation-zone) year
    with rt.engine.begin() as c:
        consent.refuse_reuse(rt, c, consent_digest, [i for i, _ in norm], operator, purpose)  # issue 18: one 授权书, one household
        ref = _next_ref(c, year)
        _INSERT_CASE.run(c, {
            "case_ref": ref, "purpose": purpose, "consent_digest": consent_digest, "operator": operator, "region": region,
            "expenditure": expenditure, "status": "open", "created_at": now, "run_at": None, "reference_month": str(ref_month),
        })
        _INSERT_MEMBER.run_many(c, [
            {"case_ref": ref, "position": i, "identity": ident, "relation": rel} for i, (ident, rel) in enumerate(norm)
        ])
        # case.opened commits with the case (issue 16: one durable transaction per act).
        seqs = rt.audit.write_in(c, rt.audit.prepare([(Kind.CASE_OPENED, {
            "case_ref": ref, "purpose": purpose, "operator": operator,
            "consent_digest": consent_digest.hex(), "reference_month": str(ref_month)})]))
    rt.audit.committed(seqs)
    return ref


def _next_ref(c, year: int) -> str:
    """The next case reference, ``HUB-<year>-<n+1>`` (six digits at least), ``n`` the number
    of the newest case: read from the primary key's index (the greatest ``HUB-`` reference,
    one index seek) instead of counting every case (a scan that grows with the store; issue
    16). The same numbers as counting the cases for a store whose cases were all numbered
    so; when that reference is taken (references of other shapes, the numbers past 999999
    that do not sort after the six-digit ones) it counts the cases as before, and a taken
    reference is skipped as before."""
    last = c.execute(_LAST_REF).scalar()
    tail = last.rpartition("-")[2] if last is not None else ""
    n = int(tail) if tail.isdigit() else c.execute(_COUNT_CASES).scalar_one()
    ref = f"HUB-{year}-{n + 1:06d}"
    if c.execute(_REF_TAKEN, {"k_case": ref}).first():
        n = max(n, c.execute(_COUNT_CASES).scalar_one())
        ref = f"HUB-{year}-{n + 1:06d}"
        while c.execute(_REF_TAKEN, {"k_case": ref}).first():
            n += 1
            ref = f"HUB-{year}-{n + 1:06d}"
    return ref


# Built once (issue 16 item 3: building a statement per call cost more than running it).
_LAST_REF = (select(cases.c.case_ref).where((cases.c.case_ref >= "HUB-") & (cases.c.case_ref < "HUB."))
             .order_by(cases.c.case_ref.desc()).limit(1))
_COUNT_CASES = select(func.count()).select_from(cases)
_REF_TAKEN = select(cases.c.case_ref).where(cases.c.case_ref == bindparam("k_case"))
_INSERT_CASE = Prepared(insert(cases), column_keys=[col.name for col in cases.c])
_INSERT_MEMBER = Prepared(insert(case_members), column_keys=[col.name for col in case_members.c])


def list_cases(engine: Engine) -> list[dict[str, str]]:
    """Every case on the hub, oldest first: reference, purpose, status, when opened."""
    with engine.connect() as c:
        rows = c.execute(select(cases.c.case_ref, cases.c.purpose, cases.c.status, cases.c.created_at).order_by(cases.c.created_at)).all()
    return [{"case_ref": r.case_ref, "purpose": r.purpose, "status": r.status, "created_at": str(r.created_at)} for r in rows]


#: engine -> the directory versions known to be in its ``directory_history`` (rows are never
#: deleted, so once stored a version need not be looked up again by this process).
_recorded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def record_directory(rt: Runtime) -> None:
    """Keeps a copy of every directory version the hub used, for offline evidence checks."""
    v = rt.directory.version
    known = _recorded.setdefault(rt.engine, set())
    if v in known:
        return
    with rt.engine.begin() as c:
        if c.execute(select(directory_history.c.version).where(directory_history.c.version == v)).first() is None:
            # Concurrent first cases of a version (threads, or hub replicas sharing a store)
            # may all get here: the first insert wins, the others add nothing.
            ins = dialect_insert(c)(directory_history).values(
                version=v, envelope=rt.directory.envelope.SerializeToString(deterministic=True),
                accepted_at=rt.clock.now(),
            )
            c.execute(ins.on_conflict_do_nothing(index_elements=["version"]))
    known.add(v)


@dataclass
class ProviderOutcome:
    provider: str
    status: str
    reason: str = ""
    attempts: int = 0
    #: The answer this run verified (verify_answer) and stored: the envelope's stored bytes
    #: and the parsed answer, so the report built at the end of the run need not verify the
    #: same bytes a second time (report.verified_answers ``known``).
    verified: tuple[bytes, lookup_pb2.LookupAnswer] | None = field(default=None, repr=False)
    #: What run_case stores for this exchange, with the case's others, in one transaction.
    stored: _Pending | None = field(default=None, repr=False)


@dataclass
class CaseRun:
    case_ref: str
    outcomes: list[ProviderOutcome]
    seconds: float
    #: The case's status after the run: "complete" only when its report is (issue 12).
    status: str = ""
    #: When every department answered but the report is incomplete: the report's gaps
    #: (``member``, ``provider``, ``field``, ``why``, ``reason``, ``data_date``), so the
    #: caseworker is told what is missing and why (issue 13, "Honest exits").
    missing: list[dict] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every department asked in this run answered (the report may still be incomplete)."""
        return all(o.status == "ok" for o in self.outcomes)


#: Runtime -> (directory, rules, _providers of them): the same for every case until the
#: directory (a live update replaces the object) or the rules change (issue 16).
_asked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _providers(rt: Runtime, rules: Rules) -> list[tuple[directory_pb2.Member, list[str]]]:
    """The departments a case asks and the fields asked of each."""
    directory = rt.directory
    got = _asked.get(rt)
    if got is not None and got[0] is directory and got[1] is rules:
        return list(got[2])
    out = _providers_of(directory, rt.member, rules)
    _asked[rt] = (directory, rules, out)
    return list(out)


def _providers_of(directory, member: str, rules: Rules) -> list[tuple[directory_pb2.Member, list[str]]]:
    need = rules.fields_by_provider()
    out = []
    for m in directory.members_with(directory_pb2.ROLE_PROVIDER):
        if m.code == member:
            continue
        catalogue = {f.name for f in m.fields}
        fields = [f for f in need.get(m.code, []) if f in catalogue]
        if not fields and m.fields:
            # Ask at least the first catalogue field so the report shows whether the
            # department holds a record of each member.
            fields = [m.fields[0].name]
        if fields:
            out.append((m, fields))
    return out


def run_case(
    rt: Runtime, case_ref: str, *, timeout: float = 10.0, retries: int = 2, rerun_ok: bool = False, operator: str | None = None,
) -> CaseRun:
    """``operator``: the staff member who started this run (recorded as ``case.run``); the
    lookups themselves carry the case's own operator."""
    started = time.monotonic()
    record_directory(rt)
    from hedui.node.crosscheck.fetch import cached_digests
    from hedui.node.verification.report import conclusion_of, load_case_on

    # Everything the run and its report need, read once on one connection (issue 16): the
    # case, its members, stored answers and overrides, the directories of the report, the
    # revocation list, the cached filters' digests. The report at the end is built from
    # this and what the run is about to store, so the case is not read back after the run.
    with rt.engine.connect() as c:
        try:
            data = load_case_on(rt.engine, c, case_ref, (rt.directory.version,))
        except NotFound:
            raise NotFound(f"case: got {case_ref[:32]!r}, want an open case reference") from None
        revoked = consent.revocations_in(c)
        digests = cached_digests(rt, c)
    case = data["case"]
    idents = [m.identity for m in data["members"]]
    stored = {r.provider: r.status for r in data["answers"]}
    done = {p for p, st in stored.items() if st == "ok"}
    if rt.hub is None:
        raise ConfigError(f"node.roles: got {', '.join(rt.config.node.roles)}, want the hub role to run cases")
    if operator is not None:
        rt.audit.record("case.run", {"case_ref": case_ref, "operator": operator})
    rules = rt.hub.rules
    todo = [(m, f) for m, f in _providers(rt, rules) if rerun_ok or m.code not in done]
    # The context every request of the case carries, built once (each request copies it and
    # sets its own request id: issue 16), and the digest of its signed consent record (issue
    # 18), which the query.sent entries name and every answer must bind.
    ctx_base = common_pb2.RequestContext(purpose=PURPOSES[case.purpose], case_ref=case_ref, consent_digest=bytes(case.consent_digest),
                                         operator=case.operator, **consent.context_fields_of(rt, case, len(idents), revoked))
    ctx = _CaseContext(ctx_base, consent.consent_digest(ctx_base.consent))
    month = str(reference_month_of(case, rt.clock.zone))
    pool = _exchange_pool(rt)
    # The last department's exchange runs in this thread, which would otherwise only wait:
    # one hand-off to a pool thread less per case (issue 16: at one case at a time the
    # hand-offs are on the case's critical path).
    futs = [pool.submit(_ask_provider, rt, m, fields, idents, ctx, timeout, retries, month, m.code not in stored, digests)
            for m, fields in todo[:-1]]
    # In an empty context, as a pool thread runs it (no trace or request id of the caller's).
    last = [contextvars.Context().run(_ask_provider, rt, m, fields, idents, ctx, timeout, retries, month, m.code not in stored, digests)
            for m, fields in todo[-1:]]
    outcomes = [f.result() for f in futs] + last
    pending = [o.stored for o in outcomes if o.stored is not None]
    # What will be stored: the rows before this run, each replaced by this run's outcome.
    rows = {r.provider: r for r in data["answers"]}
    rows.update({p.row["provider"]: _as_row(p.row) for p in pending})
    status = "complete" if rows and all(r.status == "ok" for r in rows.values()) else "incomplete"
    missing: list[dict] = []
    if status == "complete":
        # Every department answered; the case is complete only if its report is (issue 12:
        # a needed figure that is not current, or a field no department offers, concludes
        # nothing), so a reviewer cannot approve what the report does not conclude. The
        # report is built from the rows about to be stored (the same a read-back would
        # return), and the answers this run verified are not verified again (same bytes,
        # same directory version: the same outcome); `hedui case report` / `case verify`
        # still verify every stored answer from scratch.
        known = {o.provider: o.verified for o in outcomes if o.verified is not None}
        complete, gaps = conclusion_of({**data, "answers": [rows[p] for p in sorted(rows)]}, rules, tz=rt.clock.zone, known=known)
        if not complete:
            status = "incomplete"
            missing = gaps
    # The exchanges and the case's status in one transaction (one commit per case, issue 16).
    _store_outcomes(rt, pending, (case_ref, status, rt.clock.now()))
    return CaseRun(case_ref, outcomes, time.monotonic() - started, status, missing)


#: Every column of a ``case_answers`` row, for the rows run_case builds in memory.
_ANSWER_COLUMNS = tuple(col.name for col in case_answers.c)


def _as_row(row: dict) -> SimpleNamespace:
    """A pending ``case_answers`` row as the stored row reads (absent columns: NULL)."""
    return SimpleNamespace(**{**dict.fromkeys(_ANSWER_COLUMNS), **row})


#: Runtime -> the threads that run a case's exchanges, one per department and case in flight,
#: kept between cases (a pool per case started and joined 8 threads every case; issue 16).
_pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()
#: Exchanges in flight at once per hub process: 32 concurrent cases x 8 departments (beyond,
#: exchanges wait for a thread; no exchange submits another, so waiting cannot deadlock).
_POOL_THREADS = 256


def _exchange_pool(rt: Runtime) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(rt)
        if pool is None:
            pool = _pools[rt] = ThreadPoolExecutor(max_workers=_POOL_THREADS, thread_name_prefix="hedui-case")
        return pool


def _status_of(err: grpc.RpcError) -> tuple[str, str]:
    """``unavailable`` for a peer that did not answer (or failed internally), ``refused`` for
    a typed refusal; the reason text keeps the status name and the peer's reason."""
    e = from_rpc_error(err)
    refused = isinstance(e, (PermissionDenied, ResourceExhausted, InvalidArgument, Unauthenticated, FailedPrecondition, NotFound))
    return ("refused" if refused else "unavailable"), describe_remote(e)[:300]


def _retryable(err: grpc.RpcError) -> bool:
    """Unavailable, past its deadline, or shedding load (``OVERLOADED``, node/admission.py:
    "retry with back-off") — a quota refusal is not retried (it lasts the quota's window).
    Retrying the shed call is what keeps one hub's flood from failing another hub's case
    (issue 13, per-caller fairness: the shed hub gets its share on the next attempt)."""
    if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    return err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and from_rpc_error(err).reason == Reason.OVERLOADED


def _call(fn, req, timeout: float, retries: int):
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(req, timeout=timeout), attempt
        except grpc.RpcError as err:
            if attempt > retries or not _retryable(err):
                err.attempts = attempt  # type: ignore[attr-defined]
                raise
            time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))


class _NoLookup(Exception):
    """Every member's token is outside the department's signed filter: nothing to send."""


def filter_first(rt: Runtime, code: str, epoch: int, month: str, tokens: list[bytes],
                 fields: list[str], digests: dict[str, bytes] | None = None) -> tuple[list[bytes], str | None]:
    """``(tokens to send, filter_first JSON or None)``. Uses the hub's cached signed filter of
    ``code`` (node/crosscheck/fetch.py; kept current by cross-checks) when it is for this key
    epoch and speaks for the whole reference month (its data date is at or after the month's
    end); otherwise every token is sent, as before. A false positive (≤ 2^-30 per token) only
    costs a Lookup answered "no record". ``digests``: the cached filters' header digests as
    read once for the whole case (``cached_digests``); a department not in it has none."""
    if digests is not None and code not in digests:
        return tokens, None   # before the imports below: the common case costs a lookup
    import base64
    import json

    from hedui.node.crosscheck import shards
    from hedui.node.crosscheck.fetch import cached_filter

    try:
        filt = cached_filter(rt, code, None if digests is None else digests[code])
    except (VerificationError, InvalidArgument):
        return tokens, None
    if filt is None or filt.header.epoch != epoch or not month:
        return tokens, None
    if filt.header.data_date < parse_month(month).last_day:
        return tokens, None
    held = shards.intersect(tokens, filt.content)
    positions = [i for i, h in enumerate(held) if h]
    doc = {"positions": positions, "fields": list(fields), "count": len(tokens),
           "filter": base64.b64encode(filt.envelope.SerializeToString(deterministic=True)).decode(),
           "data_date": filt.header.data_date.isoformat(), "digest": filt.digest.hex()}
    return [tokens[i] for i in positions], json.dumps(doc, separators=(",", ":"))


@dataclass(frozen=True)
class _CaseContext:
    """What every exchange of a case sends: the request context (``request_id`` unset; each
    request copies it and sets its own) and the digest of the consent record it carries."""

    base: common_pb2.RequestContext
    consent_digest: bytes

    @property
    def case_ref(self) -> str:
        return self.base.case_ref


def _ask_provider(rt: Runtime, m, fields, idents, ctx: _CaseContext, timeout, retries, month: str, fresh: bool = False,
                  digests: dict[str, bytes] | None = None) -> ProviderOutcome:
    """One department's exchange of a case; ``fresh``: the case has no row for it yet;
    ``digests``: the cached filters' header digests, read once per case (filter_first)."""
    case_ref = ctx.case_ref
    code = m.code
    peer = rt.peers.get(code)
    epochs = sorted(((k.epoch, bytes(k.public_key)) for k in m.oprf_keys), reverse=True)
    rid = os.urandom(16)
    row = {"case_ref": case_ref, "provider": code, "request_id": rid, "directory_version": rt.directory.version}
    attempts = 0
    if m.maintenance:
        # The authority flagged the member as down for maintenance (issue 17): not called, and
        # the case says so rather than "unavailable"; a later run asks it again.
        row.update(status="maintenance", reason=f"in maintenance (directory v{rt.directory.version})", attempts=0)
        out = ProviderOutcome(code, "maintenance", row["reason"], 0)
        out.stored = _Pending(row, rt.audit.prepare([(Kind.QUERY_FAILED, {
            "peer": code, "case_ref": case_ref, "request_id": rid.hex(), "status": "maintenance", "reason": "MAINTENANCE"})]), fresh)
        return out
    # The exchange's audit entries, committed with its case_answers row — and the case's other
    # exchanges — in one transaction once every exchange of the case ended (issue 16: at most
    # one durable commit per exchange on each side). Not earlier: the query.sent entry was never
    # durable before the request left (it was queued), and a case is acknowledged only once
    # run_case returns, after this commit.
    entries: list[tuple[str, dict]] = []
    verified: tuple[bytes, lookup_pb2.LookupAnswer] | None = None
    try:
        if not epochs:
            raise VerificationError(f"directory: {code} publishes no OPRF key", reason=Reason.NO_OPRF_KEY)
        epoch, pub = epochs[0]
        state = oprf.blind(idents)
        ev_req = pseudonym_pb2.EvaluateRequest(context=ctx.base, epoch=epoch, blinded_elements=state.blinded)
        ev_req.context.request_id = os.urandom(16)
        ev, n = _call(peer.pseudonym.Evaluate, ev_req, timeout, retries)
        attempts += n
        if ev.epoch != epoch:
            raise VerificationError(f"evaluate: got epoch {ev.epoch}, want {epoch}", reason=Reason.BAD_EPOCH)
        tokens = oprf.finalize(state, list(ev.evaluated_elements), ev.proof, pub)
        # Filter-first (issue 14): with a current signed filter of this department, only the
        # tokens it holds are sent; the others are "no record as of the filter's data date".
        tokens, first = filter_first(rt, code, epoch, month, tokens, fields, digests)
        row.update(filter_first=first)
        if not tokens:
            # Nobody of the household is held: no Lookup at all, the signed filter is the answer.
            row.update(status="ok", reason="", epoch=epoch, tokens=b"", answered_at=rt.clock.now())
            raise _NoLookup
        req = lookup_pb2.LookupRequest(
            context=ctx.base, epoch=epoch, tokens=tokens,
            queries=[lookup_pb2.FieldQuery(field=f) for f in fields], reference_month=month,
        )
        req.context.request_id = rid
        raw_req = req.SerializeToString(deterministic=True)   # stored, and what the digest hashes
        digest = serialized_request_digest(raw_req)
        row.update(request_digest=digest, epoch=epoch, tokens=b"".join(tokens), request=raw_req)
        entries.append((Kind.QUERY_SENT, {
            "peer": code, "purpose": int(req.context.purpose), "case_ref": req.context.case_ref,
            "request_id": rid.hex(), "request_digest": digest.hex(), "count": len(tokens), "fields": fields,
            "consent": ctx.consent_digest.hex(),
        }))
        resp, n = _call(peer.lookup.Lookup, req, timeout, retries)
        attempts += n
        trusted = rt.directory   # one version for the keys and for what the report may reuse
        answer = verify_answer(trusted.signing_keys_of(code), code, resp.answer, digest, tokens)
        consent.check_binding(answer, req, ctx.consent_digest)
        _observe_checkpoint(rt, code, resp.checkpoint)
        stored_env = resp.answer.SerializeToString(deterministic=True)
        row.update(status="ok", reason="", envelope=stored_env, answered_at=rt.clock.now())
        if trusted.version == row["directory_version"]:   # the version stored with the answer
            verified = (stored_env, answer)
        entries.append((Kind.ANSWER_RECEIVED, {
            "peer": code, "case_ref": req.context.case_ref, "request_id": rid.hex(), "request_digest": digest.hex(),
            "answer_digest": hashlib.sha256(resp.answer.payload).hexdigest(), "outcome": "ok",
            "found": sum(1 for a in answer.members if a.found), "consent": bytes(answer.consent_digest).hex(),
        }))
    except _NoLookup:
        pass
    except grpc.RpcError as err:
        attempts += getattr(err, "attempts", 1)
        status, reason = _status_of(err)
        row.update(status=status, reason=reason)
        entries.append((Kind.QUERY_FAILED, {"peer": code, "case_ref": case_ref, "request_id": rid.hex(), "status": status, "reason": reason[:120]}))
    except VerificationError as exc:
        status = "bad_proof" if exc.reason == Reason.BAD_PROOF else "bad_signature"
        # One line per failure, never a trace (issue 18): the audit entry has the rest.
        log.warning("case %s: %s refused from %s: %s", case_ref, status, code, exc.reason)
        row.update(status=status, reason=f"{exc.reason}: {exc.message}"[:300])
        entries.append((Kind.QUERY_FAILED, {"peer": code, "case_ref": case_ref, "request_id": rid.hex(), "status": status, "reason": exc.reason}))
    row["attempts"] = attempts
    out = ProviderOutcome(code, row["status"], row.get("reason", ""), attempts, verified)
    # Validated and encoded here, in the exchange's own thread, while the case's other
    # exchanges still wait on their providers (issue 16: the case's one transaction at the end
    # then only writes bytes). Each exchange's entries carry the instant it ended.
    out.stored = _Pending(row, rt.audit.prepare(entries), fresh)
    return out


def _observe_checkpoint(rt: Runtime, code: str, cp) -> None:
    rt.audit.offer_peer_checkpoint(code, bytes(cp.note) if cp is not None else b"")


@dataclass
class _Pending:
    """An exchange's ``case_answers`` row and audit entries (validated and encoded:
    ``NodeAudit.prepare``), not yet stored; ``fresh``: the case has no row for the
    department yet (inserted without trying an update first)."""

    row: dict
    entries: Sequence
    fresh: bool


def _store_outcomes(rt: Runtime, pending: Sequence[_Pending], status: tuple[str, str, dt.datetime]) -> None:
    """The case's exchanges — each one's outcome row and audit entries — and the case's
    ``status`` (case_ref, status, run_at) in one transaction (entries last: the audit head row
    lock is held until the commit), group-committed with any concurrent write
    (node/store/group.py); durable on return, before run_case returns (a case is
    acknowledged only then). One transaction and a few statements per case instead of one
    transaction and three or more statements per department, and no second transaction for
    the status (issue 16)."""
    prepared = [e for p in pending for e in p.entries]
    # A fresh exchange (the case has no row for its department yet) is inserted; any other is
    # updated, or inserted if its row is gone. Rows built here, once, not per run of the unit.
    fresh = [_full_row(p.row) for p in pending if p.fresh]
    rerun = [(_full_row(p.row), _update_values(p.row)) for p in pending if not p.fresh]
    case_ref, st, run_at = status

    def unit(c) -> list[int]:
        # Touches nothing but ``c``: a unit may run twice (node/store/group.py).
        inserts = fresh + [row for row, vals in rerun if c.execute(_UPDATE_ANSWER, vals).rowcount == 0]
        _INSERT_ANSWER.run_many(c, inserts)   # one executemany on the driver's cursor
        _SET_STATUS.run(c, {"k_case": case_ref, "status": st, "run_at": run_at})
        return rt.audit.write_in(c, prepared) if prepared else []

    seqs = rt.audit.transact(unit)
    if seqs:
        rt.audit.committed(seqs)


def _update_values(row: dict) -> dict:
    """The parameters of :data:`_UPDATE_ANSWER` for an exchange's ``row``."""
    vals = {k: v for k, v in row.items() if k not in ("case_ref", "provider")}
    vals.update(k_case=row["case_ref"], k_provider=row["provider"])
    return vals


def _full_row(row: dict) -> dict:
    """``row`` with every column of ``case_answers`` (the insert below names them all): a
    column the exchange did not set is NULL, as when it is left out, and ``reason`` /
    ``attempts`` take their column defaults."""
    return {**_ROW_DEFAULTS, **row}


#: What an insert leaving a column out stores: NULL, or the column's (scalar) default.
_ROW_DEFAULTS = {col.name: col.default.arg if col.default is not None else None for col in case_answers.c}

# Built once (issue 16 item 3). The case's writes run on the driver's cursor of the group
# committer's transaction (node/store/raw.py: compiled once per dialect, SQLAlchemy's own
# bind processors; same transaction, same commit). A rerun's update of an existing row
# keeps Core: its SET clause follows the outcome's columns.
_INSERT_ANSWER = Prepared(insert(case_answers), column_keys=_ANSWER_COLUMNS)
_UPDATE_ANSWER = update(case_answers).where(
    (case_answers.c.case_ref == bindparam("k_case")) & (case_answers.c.provider == bindparam("k_provider")))
_SET_STATUS = Prepared(update(cases).values(status=bindparam("status"), run_at=bindparam("run_at"))
                       .where(cases.c.case_ref == bindparam("k_case")))
