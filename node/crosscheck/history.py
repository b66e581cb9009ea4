"""What cross-checks ran on this hub and what they found (issue 15 item 4: the console lists
runs and their hits by reason; issue 14: hits become stop-warning leads).

One ``crosscheck_runs`` row per run (count-only runs too: their counts are the result) and
one ``crosscheck_hits`` row per person hit, holding the **masked** identity only (the first
six and last four characters, as in the CLI report), the town, the reasons with their signed
evidence and the lead the hit became. The full identity stays sealed in the lead (opened only
through the audited lead-details view, node/discovery/worklist.py).

Reading a run's hits is an access to personal data (masked, but a town and a reason such as
"registered dead" are personal facts): :func:`run_hits` records ``crosscheck.viewed`` with
the operator in the audit log, here in the domain, not in the web layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Column, Date, DateTime, ForeignKey, Integer, LargeBinary, String, Table, Text, func, select
from sqlalchemy.engine import Engine

from hedui.common.clock import utc
from hedui.node.audit.entry import Kind
from hedui.node.errors import InvalidArgument, NotFound
from hedui.node.store.schema import metadata

if TYPE_CHECKING:
    from hedui.node.crosscheck.check import Check
    from hedui.node.crosscheck.run import CrossCheckResult
    from hedui.node.runtime import Runtime

__all__ = ["crosscheck_runs", "crosscheck_hits", "RunSummary", "record_run", "list_runs", "run_summary", "run_hits",
           "available_checks", "run_named_check", "MAX_PAGE"]

MAX_PAGE = 200

crosscheck_runs = Table(
    "crosscheck_runs",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("reference_month", String(7), nullable=False),
    Column("as_of", Date, nullable=False),
    # Who ran it: the console's signed-in operator, or the check file's operator (CLI).
    Column("operator", String(64), nullable=False),
    Column("case_ref", String(64), nullable=False),
    # SHA-256 of the check file: the authorisation every request carried.
    Column("digest", LargeBinary(32), nullable=False),
    Column("population", Integer, nullable=False),
    Column("invalid", Integer, nullable=False),
    Column("count_only", Boolean, nullable=False),
    # JSON: criterion -> hits; criterion -> {department, field, op, value}; department -> filter.
    Column("counts", Text, nullable=False),
    Column("criteria", Text, nullable=False),
    Column("filters", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

crosscheck_hits = Table(
    "crosscheck_hits",
    metadata,
    Column("hit_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("crosscheck_runs.run_id"), nullable=False, index=True),
    Column("masked_identity", String(18), nullable=False),
    Column("town", String(12), nullable=False),
    # JSON: sorted criterion names; criterion -> evidence (department, field, value, digest...).
    Column("reasons", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("lead_id", Integer, nullable=True),
)


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    name: str
    reference_month: str
    as_of: date
    operator: str
    population: int
    invalid: int
    count_only: bool
    counts: dict[str, int]
    criteria: dict[str, dict[str, str]]
    filters: dict[str, dict[str, Any]]
    created_at: datetime
    hits: int


def record_run(rt: Runtime, check: Check, result: CrossCheckResult, *, operator: str) -> int:
    """Stores a finished run and its hits in one transaction; returns the run id."""
    from hedui.node.verification.report import mask_identity

    crit = {c.name: {"department": c.department, "field": c.field, "op": c.op, "value": c.value} for c in check.criteria}
    with rt.engine.begin() as c:
        run_id = c.execute(crosscheck_runs.insert().values(
            name=check.name, reference_month=check.reference_month, as_of=check.day, operator=operator,
            case_ref=f"CC-{check.reference_month}-{check.digest.hex()[:12]}", digest=check.digest,
            population=result.population, invalid=len(result.invalid_lines), count_only=result.count_only,
            counts=json.dumps(result.counts, ensure_ascii=False), criteria=json.dumps(crit, ensure_ascii=False),
            filters=json.dumps(result.filters, ensure_ascii=False), created_at=rt.clock.now(),
        ).returning(crosscheck_runs.c.run_id)).scalar_one()
        if result.hits and not result.count_only:
            c.execute(crosscheck_hits.insert(), [
                {"run_id": run_id, "masked_identity": mask_identity(h.identity), "town": h.town,
                 "reasons": json.dumps(sorted(h.reasons)), "evidence": json.dumps(h.reasons, ensure_ascii=False),
                 "lead_id": h.lead_id} for h in result.hits])
    return int(run_id)


def _summary(r: Any, hits: int) -> RunSummary:
    return RunSummary(r.run_id, r.name, r.reference_month, r.as_of, r.operator, r.population, r.invalid, r.count_only,
                      json.loads(r.counts), json.loads(r.criteria), json.loads(r.filters), utc(r.created_at), hits)


def list_runs(engine: Engine, *, limit: int = 50, offset: int = 0) -> list[RunSummary]:
    """Runs, newest first, with their counts by reason (no person in them)."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise InvalidArgument(f"page: got limit {limit}, offset {offset}, want 1..{MAX_PAGE} and >= 0")
    n_hits = (select(crosscheck_hits.c.run_id, func.count().label("n")).group_by(crosscheck_hits.c.run_id).subquery())
    stmt = (select(crosscheck_runs, func.coalesce(n_hits.c.n, 0).label("hits"))
            .outerjoin(n_hits, n_hits.c.run_id == crosscheck_runs.c.run_id)
            .order_by(crosscheck_runs.c.run_id.desc()).limit(limit).offset(offset))
    with engine.connect() as c:
        return [_summary(r, r.hits) for r in c.execute(stmt)]


def run_summary(engine: Engine, run_id: int) -> RunSummary:
    with engine.connect() as c:
        r = c.execute(select(crosscheck_runs).where(crosscheck_runs.c.run_id == run_id)).first()
        if r is None:
            raise NotFound(f"cross-check run: got {run_id}, want an existing run")
        n = c.execute(select(func.count()).select_from(crosscheck_hits).where(crosscheck_hits.c.run_id == run_id)).scalar_one()
    return _summary(r, n)


def run_hits(rt: Runtime, run_id: int, *, operator: str, reason: str | None = None, limit: int = 100,
             offset: int = 0) -> list[dict[str, Any]]:
    """A page of the hits of run ``run_id`` (masked identities), optionally only those with
    ``reason``, each with its lead's id and status; audited as ``crosscheck.viewed`` with the
    operator and how many were shown."""
    from hedui.node.discovery.tables import leads

    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise InvalidArgument(f"page: got limit {limit}, offset {offset}, want 1..{MAX_PAGE} and >= 0")
    summary = run_summary(rt.engine, run_id)
    if reason is not None and reason not in summary.counts:
        raise InvalidArgument(f"reason: got {reason[:32]!r}, want one of the run's criteria {sorted(summary.counts)}")
    stmt = (select(crosscheck_hits, leads.c.status.label("lead_status"))
            .outerjoin(leads, leads.c.lead_id == crosscheck_hits.c.lead_id)
            .where(crosscheck_hits.c.run_id == run_id))
    if reason is not None:
        # reasons is a JSON list of criterion codes: the quoted code matches exactly one entry.
        stmt = stmt.where(crosscheck_hits.c.reasons.contains(f'"{reason}"', autoescape=True))
    stmt = stmt.order_by(crosscheck_hits.c.hit_id).limit(limit).offset(offset)
    with rt.engine.connect() as c:
        rows = c.execute(stmt).all()
    out = [{"hit_id": r.hit_id, "identity": r.masked_identity, "town": r.town, "reasons": json.loads(r.reasons),
            "evidence": json.loads(r.evidence), "lead_id": r.lead_id, "lead_status": r.lead_status} for r in rows]
    rt.audit.record(Kind.CROSSCHECK_VIEWED, {"operator": operator, "run_id": run_id, "check": summary.name,
                                             "reason": reason or "", "count": len(out), "offset": offset})
    return out


def available_checks(folder: Path | None) -> list[str]:
    """The check files an operator may run from the console: ``*.toml`` directly in the
    configured folder, by file name (the console never takes a path from a form)."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.glob("*.toml") if p.is_file())


def run_named_check(rt: Runtime, folder: Path | None, file_name: str, *, operator: str, count_only: bool = False,
                    progress: Callable[[str, int, int], None] | None = None, timeout: float = 60.0) -> int:
    """Runs the check file ``file_name`` of ``folder`` as ``operator`` (who ordered it: every
    request carries them, the run and its leads are recorded under them); returns the run id.
    A name not in :func:`available_checks` is refused, so no path reaches the file system."""
    from dataclasses import replace

    from hedui.node.crosscheck.check import load_check
    from hedui.node.crosscheck.run import run_check

    names = available_checks(folder)
    if file_name not in names:
        raise InvalidArgument(f"check: got {file_name[:64]!r}, want one of {names or 'the configured check files'}")
    assert folder is not None
    check = replace(load_check(folder / file_name), operator=operator)
    result = run_check(rt, check, count_only=count_only, progress=progress, timeout=timeout)
    assert result.run_id is not None
    return result.run_id
