"""State metrics read at scrape time (issue 17 item 3): the directory, the node's
certificate, the token index per source, the outbox, the audit log's checkpoints.

A Prometheus custom collector on the node's own registry, so a scrape reads the current
state (no background job keeping gauges in step) and several nodes in one process (tests,
the demo) keep separate figures. Every age is measured on the node's
:class:`~hedui.common.clock.Clock` (never the wall clock: tests move a FixedClock).

Labels: source names (a mapping's ``source``, e.g. ``tax_income``), OPRF epochs, member codes
and the build's versions only; never a token, case reference or identity.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["NodeCollector", "CERT_WARN"]

log = logging.getLogger("hedui.node.metrics")

#: A certificate closer than this to its expiry sets ``hedui_certificate_expiring`` (issue 17
#: item 6: warn 30 days ahead, time to issue a new one from a CSR and publish it).
CERT_WARN = dt.timedelta(days=30)


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


class NodeCollector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        from hedui.keys.describe import cert_not_after

        self._cert_not_after = cert_not_after(rt.tls_cert_pem)

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        from hedui.node.buildinfo import build_info

        rt = self._rt
        now = rt.clock.now()
        yield InfoMetricFamily("hedui_build", "The running build", value=build_info())
        d = rt.directory
        yield _g("hedui_directory_version", "Version of the directory the node serves with", d.version)
        yield _g("hedui_directory_expiry_seconds", "Seconds until the directory expires (negative: expired)",
                 (d.expires_at - now).total_seconds())
        left = (self._cert_not_after - now).total_seconds()
        yield _g("hedui_certificate_expiry_seconds", "Seconds until this node's TLS certificate expires", left)
        yield _g("hedui_certificate_expiring", "1 when the TLS certificate expires within 30 days (renew it)",
                 1 if left < CERT_WARN.total_seconds() else 0)
        try:
            yield from self._store(now)
        except Exception as exc:  # a scrape must not fail because the store is away
            log.warning("metrics: store unreadable (%s)", type(exc).__name__)
            yield _g("hedui_store_up", "1 when the store answered this scrape", 0)
        else:
            yield _g("hedui_store_up", "1 when the store answered this scrape", 1)

    def _store(self, now: dt.datetime) -> Iterator[GaugeMetricFamily]:
        from hedui.node.audit.tables import audit_checkpoints, audit_cosignatures
        from hedui.node.discovery.tables import notice_outbox
        from hedui.node.verification.index_tables import index_progress, index_rows

        rt = self._rt
        age = GaugeMetricFamily("hedui_index_age_seconds", "Seconds since the source's index was last updated",
                                labels=["source", "epoch"])
        rows = GaugeMetricFamily("hedui_index_rows", "Source rows filed in the index", labels=["source", "epoch"])
        done = GaugeMetricFamily("hedui_index_complete", "1 once a complete build of the source is live",
                                 labels=["source", "epoch"])
        with rt.engine.connect() as c:
            counts = {(r.source, r.epoch): r.n for r in c.execute(
                select(index_rows.c.source, index_rows.c.epoch, func.count().label("n"))
                .group_by(index_rows.c.source, index_rows.c.epoch))}
            for r in c.execute(select(index_progress)):
                lab = [r.source, str(r.epoch)]
                age.add_metric(lab, (now - _aware(r.updated_at)).total_seconds())
                rows.add_metric(lab, counts.get((r.source, r.epoch), 0))
                done.add_metric(lab, 1 if r.live_gen is not None else 0)   # a complete build is live
            n, oldest = c.execute(select(func.count(), func.min(notice_outbox.c.created_at))
                                  .where(notice_outbox.c.status == "pending")).one()
            cp = c.execute(select(audit_checkpoints.c.size, audit_checkpoints.c.created_at)
                           .order_by(audit_checkpoints.c.id.desc()).limit(1)).first()
            cos = c.execute(select(audit_cosignatures.c.peer, func.max(audit_cosignatures.c.created_at),
                                   func.max(audit_cosignatures.c.size)).group_by(audit_cosignatures.c.peer)).all()
        # Witnessing (DESIGN.md "Audit"): how long since this node last cosigned each peer's
        # checkpoint; a growing age means the peer's log is no longer being witnessed here.
        lag = GaugeMetricFamily("hedui_audit_cosigned_age_seconds",
                                "Seconds since this node last cosigned the peer's checkpoint", labels=["peer"])
        size = GaugeMetricFamily("hedui_audit_cosigned_size", "Size of the peer's log this node last cosigned",
                                 labels=["peer"])
        for peer, at, n in cos:
            lag.add_metric([peer], (now - _aware(at)).total_seconds())
            size.add_metric([peer], n)
        yield from (age, rows, done, lag, size)
        yield _g("hedui_outbox_depth", "Notices waiting to be delivered", n)
        yield _g("hedui_outbox_oldest_age_seconds", "Age of the oldest undelivered notice (0: none)",
                 (now - _aware(oldest)).total_seconds() if oldest is not None else 0)
        yield _g("hedui_audit_checkpoint_age_seconds", "Seconds since the last signed audit checkpoint (-1: none)",
                 (now - _aware(cp.created_at)).total_seconds() if cp is not None else -1)
        yield _g("hedui_audit_checkpoint_size", "Entries covered by the last signed checkpoint",
                 cp.size if cp is not None else 0)


def _g(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
