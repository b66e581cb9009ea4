"""``hedui audit reconcile``: the hub's "sent" entries against each department's "received"
ones (queries and answers one way, notices and receipts the other), by request id and the
digests of the exact bytes; every query with no counterpart, or no case, is listed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, select

from hedui.node.audit.entry import Kind, decode_entry, utc
from hedui.node.audit.sources import Source, engine_for, is_url, iso, parse_iso
from hedui.node.audit.tables import audit_entries
from hedui.node.errors import NotFound

__all__ = ["ReconcileReport", "reconcile"]


@dataclass
class ReconcileReport:
    """Hub "sent" versus provider "received". Each item is a dict with ``request_id``,
    ``provider``, ``time``, ``purpose``, ``case_ref`` and ``detail``."""

    period: tuple[str | None, str | None]
    sent_not_received: list[dict] = field(default_factory=list)
    received_not_sent: list[dict] = field(default_factory=list)
    request_mismatches: list[dict] = field(default_factory=list)
    answer_mismatches: list[dict] = field(default_factory=list)
    no_case: list[dict] = field(default_factory=list)
    # Discovery notices, the other direction: department "sent" (logged with the receipt it
    # got back) versus hub "received", matched by notice id, notice digest and receipt digest.
    notices_sent_not_received: list[dict] = field(default_factory=list)
    notices_received_not_sent: list[dict] = field(default_factory=list)
    notice_mismatches: list[dict] = field(default_factory=list)
    #: One authorisation (scan digest of ``case.opened``) recorded for several cases (issue
    #: 18): ``{"consent_digest", "cases"}``. Listed for review, not a discrepancy by itself —
    #: a periodic review reuses its household's authorisation; the hub refuses reuse for
    #: another member set (node/verification/consent.py).
    consent_reused: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.sent_not_received or self.received_not_sent or self.request_mismatches
                    or self.answer_mismatches or self.no_case or self.notices_sent_not_received
                    or self.notices_received_not_sent or self.notice_mismatches)

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": list(self.period), "clean": self.clean, "counts": dict(self.counts),
            "sent_not_received": self.sent_not_received, "received_not_sent": self.received_not_sent,
            "request_mismatches": self.request_mismatches, "answer_mismatches": self.answer_mismatches,
            "no_case": self.no_case,
            "notices_sent_not_received": self.notices_sent_not_received,
            "notices_received_not_sent": self.notices_received_not_sent,
            "notice_mismatches": self.notice_mismatches,
            "consent_reused": self.consent_reused,
        }


_HUB_KINDS = (Kind.QUERY_SENT, Kind.ANSWER_RECEIVED, Kind.CASE_OPENED)
_PROVIDER_KINDS = (Kind.QUERY_RECEIVED, Kind.ANSWER_SENT, Kind.REFUSAL)
_NOTICE_KINDS = (Kind.NOTICE_SENT, Kind.NOTICE_RECEIVED, Kind.RECEIPT)


def _iter_decoded(source: Source, kinds: Sequence[str], lo: datetime | None, hi: datetime | None):
    """(time, kind, fields) of the given kinds from a store or export, time in [lo, hi)."""

    def keep(obj: dict) -> tuple[datetime, str, dict] | None:
        if obj.get("kind") not in kinds:
            return None
        t = parse_iso(obj.get("time"))
        if t is None or (lo is not None and t < lo) or (hi is not None and t >= hi):
            return None
        return t, obj["kind"], obj["fields"]

    if isinstance(source, Engine) or is_url(source):
        with engine_for(source) as eng, eng.connect() as conn:
            t = audit_entries
            cond = [t.c.kind.in_(kinds)]
            # The indexed created_at narrows the scan; the entry's own time decides.
            if lo is not None:
                cond.append(t.c.created_at >= lo - timedelta(days=1))
            if hi is not None:
                cond.append(t.c.created_at < hi + timedelta(days=1))
            stmt = select(t.c.entry).where(and_(*cond)).order_by(t.c.seq).execution_options(yield_per=10_000)
            for (data,) in conn.execute(stmt):
                try:
                    k = keep(decode_entry(bytes(data)))
                except ValueError:
                    continue
                if k:
                    yield k
        return
    path = Path(source)
    if not path.is_file():
        raise NotFound(f"no such export file: {path}")
    with open(path, "rb") as f:
        for line in f:
            if b'"type":"entry"' not in line:
                continue
            try:
                k = keep(decode_entry(base64.b64decode(json.loads(line)["entry"])))
            except (ValueError, KeyError, TypeError, binascii.Error):
                continue
            if k:
                yield k


def _reconcile_notices(report, hub_source, provider_sources, in_period, lo, hi, hub_code) -> tuple[int, int]:
    """A department logs ``notice.sent`` with the ``receipt`` the hub signed; the hub logs
    ``notice.received`` and each ``receipt`` it issued (a retried push gets a duplicate
    receipt). Each department's sent notice must appear at the hub with the same notice
    digest, and the receipt the department kept must be one the hub logged."""
    hub_in: dict[str, dict[str, tuple[datetime, dict]]] = defaultdict(dict)
    hub_receipts: dict[str, set] = defaultdict(set)
    for t, kind, f in _iter_decoded(hub_source, _NOTICE_KINDS, lo, hi):
        if kind == Kind.NOTICE_RECEIVED:
            hub_in[str(f.get("peer"))].setdefault(f.get("request_id"), (t, f))
        elif kind == Kind.RECEIPT:
            hub_receipts[f.get("request_id")].add(f.get("answer_digest"))
    n_sent = n_received = 0
    for code, src in provider_sources.items():
        sent: dict[str, tuple[datetime, dict]] = {}
        kept: dict[str, str] = {}
        for t, kind, f in _iter_decoded(src, _NOTICE_KINDS, lo, hi):
            if hub_code is not None and f.get("peer") != hub_code:
                continue
            if kind == Kind.NOTICE_SENT:
                sent[f.get("request_id")] = (t, f)
            elif kind == Kind.RECEIPT:
                kept[f.get("request_id")] = f.get("answer_digest")
        got = hub_in.get(code, {})
        for nid, (t, f) in sent.items():
            if not in_period(t):
                continue
            n_sent += 1
            if nid not in got:
                report.notices_sent_not_received.append(_item(code, t, f, "hub logged no notice.received"))
            elif got[nid][1].get("request_digest") != f.get("request_digest"):
                report.notice_mismatches.append(_item(code, t, f, "notice digests differ"))
            elif kept.get(nid) not in hub_receipts.get(nid, set()):
                report.notice_mismatches.append(_item(code, t, f, "the department's receipt is not one the hub logged"))
        for nid, (t, f) in got.items():
            if not in_period(t):
                continue
            n_received += 1
            if nid not in sent:
                report.notices_received_not_sent.append(_item(code, t, f, "department logged no notice.sent"))
    return n_sent, n_received


def _item(provider: str, t: datetime, f: Mapping[str, Any], detail: str) -> dict:
    return {"request_id": f.get("request_id"), "provider": provider, "time": iso(t),
            "purpose": f.get("purpose"), "case_ref": f.get("case_ref"), "detail": detail}


def reconcile(
    hub_source: Source,
    provider_sources: Mapping[str, Source],
    period: tuple[datetime | None, datetime | None] | None = None,
    *,
    hub_code: str | None = None,
    hub_cases: Iterable[str] | None = None,
    grace: timedelta = timedelta(minutes=10),
) -> ReconcileReport:
    """Matches the hub's ``query.sent`` entries to each provider's ``query.received`` by
    request id and request digest, and the answers' digests. ``provider_sources`` maps a
    provider's member code (the ``peer`` in the hub's entries) to its source. Entries
    within ``grace`` outside the period still count as counterparts, so a query sent at
    23:59:59 and received at 00:00:01 is not reported. Only the hub's queries to the
    given providers are reconciled; ``hub_code`` restricts the providers' entries to
    queries from that hub; ``hub_cases``, if given, is the set of case references that
    exist on the hub (a query citing another one is reported under ``no_case``)."""
    lo, hi = period if period is not None else (None, None)
    lo = utc(lo) if lo is not None else None
    hi = utc(hi) if hi is not None else None
    wide_lo = lo - grace if lo is not None else None
    wide_hi = hi + grace if hi is not None else None

    def in_period(t: datetime) -> bool:
        return (lo is None or t >= lo) and (hi is None or t < hi)

    report = ReconcileReport((iso(lo), iso(hi)))
    cases = set(hub_cases) if hub_cases is not None else None
    sent: dict[str, dict[str, tuple[datetime, dict]]] = defaultdict(dict)
    answers_in: dict[str, tuple[datetime, dict]] = {}
    n_sent = 0
    consents: dict[str, list[str]] = defaultdict(list)
    for t, kind, f in _iter_decoded(hub_source, _HUB_KINDS, None, wide_hi):
        rid = f.get("request_id")
        if kind == Kind.CASE_OPENED:
            # Every case opened up to the period's end: a reuse may span periods.
            consents[str(f.get("consent_digest"))].append(str(f.get("case_ref")))
            continue
        if wide_lo is not None and t < wide_lo:
            continue
        if kind == Kind.QUERY_SENT:
            sent[str(f.get("peer"))][rid] = (t, f)
            if in_period(t):
                n_sent += 1
                case = f.get("case_ref")
                if not case:
                    report.no_case.append(_item(str(f.get("peer")), t, f, "query has no case reference"))
                elif cases is not None and case not in cases:
                    report.no_case.append(_item(str(f.get("peer")), t, f, "case reference unknown on the hub"))
        else:
            answers_in[rid] = (t, f)
    n_received = 0
    for code, src in provider_sources.items():
        received: dict[str, tuple[datetime, dict]] = {}
        answers_out: dict[str, tuple[datetime, dict]] = {}
        refused: dict[str, tuple[datetime, dict]] = {}
        for t, kind, f in _iter_decoded(src, _PROVIDER_KINDS, wide_lo, wide_hi):
            if hub_code is not None and f.get("peer") != hub_code:
                continue
            rid = f.get("request_id")
            {Kind.QUERY_RECEIVED: received, Kind.ANSWER_SENT: answers_out, Kind.REFUSAL: refused}[kind][rid] = (t, f)
        hub_q = sent.get(code, {})
        for rid, (t, f) in hub_q.items():
            if not in_period(t):
                continue
            if rid not in received:
                report.sent_not_received.append(_item(code, t, f, "provider logged no query.received"))
                continue
            pf = received[rid][1]
            diffs = [k for k in ("request_digest", "purpose", "case_ref", "consent") if f.get(k) != pf.get(k)]
            if diffs:
                report.request_mismatches.append(_item(code, t, f, f"differs on {', '.join(diffs)}"))
            ans = answers_in.get(rid)
            out = answers_out.get(rid)
            if out is not None and ans is None:
                report.answer_mismatches.append(_item(code, t, f, "provider sent an answer the hub did not log"))
            elif ans is not None and out is None and rid not in refused and ans[1].get("answer_digest"):
                report.answer_mismatches.append(_item(code, t, f, "hub logged an answer the provider did not send"))
            elif ans is not None and out is not None and ans[1].get("answer_digest") != out[1].get("answer_digest"):
                report.answer_mismatches.append(_item(code, t, f, "answer digests differ"))
        for rid, (t, f) in received.items():
            if not in_period(t):
                continue
            n_received += 1
            if rid not in hub_q:
                report.received_not_sent.append(_item(code, t, f, "hub logged no query.sent"))
    report.consent_reused = [{"consent_digest": d, "cases": sorted(refs)} for d, refs in sorted(consents.items()) if len(refs) > 1]
    n_notices_sent, n_notices_received = _reconcile_notices(
        report, hub_source, provider_sources, in_period, wide_lo, wide_hi, hub_code
    )
    report.counts = {
        "hub_sent": n_sent,
        "provider_received": n_received,
        "notices_sent": n_notices_sent,
        "notices_received": n_notices_received,
        "providers": len(provider_sources),
        "sent_to_other_providers": sum(
            1 for code, q in sent.items() if code not in provider_sources for t, _ in q.values() if in_period(t)
        ),
    }
    return report
