"""Lookups read the token index from a PostgreSQL streaming replica when one is configured
(``[store] read_database_url``; issue 16 item 6, docs/department-it.md).

What goes where, and why:

- the facts and data dates of a lookup: the replica, in one REPEATABLE READ transaction, so
  both come from one snapshot of the primary's history (a hot standby replays the primary's
  WAL in commit order: every snapshot it shows is a state the primary was in);
- the quota, the replay cache and the audit log: the primary (node/policy.py,
  node/audit/log.py use ``rt.engine``). They must see this node's — and the other node
  replicas' — own writes at once; a replica's snapshot may lag by the replay delay.

The replica is used for an epoch only while its index is at rest there: every source of the
epoch has status ``done`` in the replica's ``index_progress``. While a build runs (on the
primary, hence visible on the replica as ``running``) lookups read the primary, exactly as
without a replica. So a replica answer equals the answer the primary gave at some instant
within the replay lag (``pg_stat_replication.replay_lag``, usually milliseconds). A replica
that is down or refuses (recovery conflict) costs one failed read: the lookup then reads the
primary and the metric ``hedui_index_reads_total{store="primary",reason="replica_failed"}``
counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from hedui.adapters.records import Fact
from hedui.node.verification.index import data_dates, facts_for_tokens
from hedui.node.verification.index_tables import index_progress

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["read_index"]

log = logging.getLogger("hedui.replica")


def read_index(rt: Runtime, epoch: int, tokens: Sequence[bytes]) -> tuple[dict[bytes, list[Fact]], dict[str, date | None]]:
    """The facts of ``tokens`` in ``epoch`` and each source's data date, from the replica
    when one is configured and the epoch's index is at rest there, else from the primary."""
    eng = rt.read_engine
    reason = "no_replica"
    if eng is not None:
        try:
            with eng.connect() as conn:
                conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    states = conn.execute(select(index_progress.c.status)
                                          .where(index_progress.c.epoch == epoch)).scalars().all()
                    if states and all(s == "done" for s in states):
                        facts, dates = facts_for_tokens(conn, epoch, tokens), data_dates(conn, epoch)
                        rt.metrics.index_reads.labels("replica", "").inc()
                        return facts, dates
                    reason = "building"
        except DBAPIError as exc:
            reason = "replica_failed"
            log.warning("index read on the replica failed, reading the primary (%s)", type(exc.orig).__name__)
    rt.metrics.index_reads.labels("primary", reason).inc()
    return facts_for_tokens(rt.engine, epoch, tokens), data_dates(rt.engine, epoch)
