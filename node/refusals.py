"""Refusals that come by the thousand, counted and audited in aggregate (issue 13 item 6).

A refusal of one well-formed request is one ``refusal`` entry (:mod:`hedui.node.rpc`). But
the refusals below the application — a TLS handshake without a client certificate or with a
foreign CA's, an over-size message, bytes that are not the method's protobuf — and the
node-wide ones (``OVERLOADED`` under load, ``DIRECTORY_EXPIRED`` while the directory is
stale) can come from a flood: one entry each would let an attacker fill the log. Each is
counted here by ``(cause, peer)`` (``hedui_transport_refusals_total{cause}`` at once) and
written as one ``refusal.aggregated`` entry per pair and period — cause, peer, count, first
and last time — by :class:`RefusalFlusher` every ``interval`` seconds and when the node stops.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hedui.node.audit.entry import Kind, format_time
from hedui.node.loops import PeriodicJob

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["Refusals", "RefusalFlusher", "CAUSES"]

log = logging.getLogger("hedui.node.refusals")

#: The causes below the application (the others are Reason values in lower case).
CAUSES = ("no_client_cert", "foreign_ca", "tls_handshake", "oversize", "malformed")

_MAX_PAIRS = 4096  # distinct (cause, peer) pairs kept between flushes; beyond: one "*" peer per cause


@dataclass
class _Tally:
    count: int
    first: dt.datetime
    last: dt.datetime


class Refusals:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._lock = threading.Lock()
        self._tally: dict[tuple[str, str], _Tally] = {}

    def count(self, cause: str, peer: str, n: int = 1) -> None:
        now = self._rt.clock.now()
        self.merge(cause, peer, n, now, now)

    def merge(self, cause: str, peer: str, n: int, first: dt.datetime, last: dt.datetime) -> None:
        """Adds ``n`` refusals first/last seen at the given times: this process's own
        (:meth:`count`) or those counted by the front of a node of several processes
        (node/front/), which has no store."""
        self._rt.metrics.transport_refusals.labels(cause).inc(n)
        with self._lock:
            key = (cause, peer[:128])
            if key not in self._tally and len(self._tally) >= _MAX_PAIRS:
                key = (cause, "*")
            t = self._tally.get(key)
            if t is None:
                self._tally[key] = _Tally(n, first, last)
            else:
                t.count += n
                t.first = min(t.first, first)
                t.last = max(t.last, last)

    def pending(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return {k: t.count for k, t in self._tally.items()}

    def flush(self) -> int:
        """Writes one entry per (cause, peer) counted since the last flush; returns how many."""
        with self._lock:
            tally, self._tally = self._tally, {}
        items: list[tuple[str, dict]] = [
            (Kind.REFUSAL_AGGREGATED.value, {"cause": cause, "peer": peer, "count": t.count,
                                       "first": format_time(t.first), "last": format_time(t.last)})
            for (cause, peer), t in sorted(tally.items())
        ]
        if items:
            try:
                self._rt.audit.record_many(items)
            except Exception:
                log.exception("could not audit %d aggregated refusals", len(items))
                with self._lock:  # keep them for the next flush
                    for (cause, peer), t in tally.items():
                        cur = self._tally.get((cause, peer))
                        if cur is None:
                            self._tally[(cause, peer)] = t
                        else:
                            cur.count += t.count
                            cur.first = min(cur.first, t.first)
                raise
        return len(items)


class RefusalFlusher(PeriodicJob):
    def __init__(self, refusals: Refusals, *, interval: float = 10.0) -> None:
        super().__init__("refusal-flush", interval=interval)
        self._refusals = refusals

    def step(self) -> float | None:
        self._refusals.flush()
        return None

    def final(self) -> None:
        self._refusals.flush()
