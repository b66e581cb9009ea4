"""Lookups read the token index from a PostgreSQL streaming replica when one is configured
(``[store] read_database_url``; issue 16 item 6, docs/department-it.md).

What goes where, and why:

- the facts and data dates of a lookup: the replica, in one REPEATABLE READ transaction, so
  both come from one snapshot of the primary's history (a hot standby replays the primary's
  WAL in commit order: every snapshot it shows is a state the primary was in);
- the quota, the replay cache and the audit log: the primary (node/policy.py,
  node/audit/log.py use ``rt.engine``). They must see this node's — and the other node
  replicas' — own writes at once; a replica's snapshot may lag by the replay delay.

Every read, on either store, takes only the live generation of each source (issue 13:
node/verification/index_read.py), so a replica answers while a build runs on the primary
exactly as the primary would: it shows the previous complete build until the swap's commit
is replayed. A replica answer therefore equals the answer the primary gave at some instant
within the replay lag (``pg_stat_replication.replay_lag``, usually milliseconds). A replica
that is down or refuses (recovery conflict), or has not yet replayed the first complete
build (``INDEX_NOT_READY`` there), costs one read: the lookup then reads the primary and the
metric ``hedui_index_reads_total{store="primary",reason=…}`` counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from hedui.common.errors import Reason, Unavailable
from hedui.node.verification.index_read import Live, read_live, read_live_in

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from hedui.node.runtime import Runtime

__all__ = ["read_index"]

log = logging.getLogger("hedui.replica")


def read_index(rt: Runtime, epoch: int, tokens: Sequence[bytes], sources: Sequence[str] = (), *,
               conn: Connection | None = None) -> Live:
    """The live facts of ``tokens`` in ``epoch`` and each source's data date, from the replica
    when one is configured and answers, else from the primary — on ``conn`` when given (a
    :func:`~hedui.node.verification.index_read.snapshot` of the primary the Lookup holds:
    one connection per Lookup, issue 16 item 3)."""
    eng = rt.read_engine
    reason = "no_replica"
    if eng is not None:
        try:
            live = read_live(eng, epoch, tokens, sources)
            rt.metrics.child(rt.metrics.index_reads, "replica", "").inc()
            return live
        except Unavailable as exc:
            if exc.reason is not Reason.INDEX_NOT_READY:
                raise
            reason = "replica_not_ready"
        except DBAPIError as exc:
            reason = "replica_failed"
            log.warning("index read on the replica failed, reading the primary (%s)", type(exc.orig).__name__)
    rt.metrics.child(rt.metrics.index_reads, "primary", reason).inc()
    if conn is not None:
        return read_live_in(conn, epoch, tokens, sources)
    return read_live(rt.engine, epoch, tokens, sources)
