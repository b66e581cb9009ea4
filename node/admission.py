"""Load shedding: a cap on the RPCs a node handles at once, and a share per caller
(issue 13 item 10; after Envoy's ``max_requests`` circuit breaker and gRPC's
``maximum_concurrent_rpcs``, but per caller).

A call beyond ``[node] max_concurrent_rpcs`` — or beyond its caller's share — is refused at
once with ``RESOURCE_EXHAUSTED`` / ``OVERLOADED`` instead of queueing behind the handler
threads: the caller's retry with back-off is cheaper than a queue whose every member misses
its deadline. A caller's share is ``max_concurrent_per_caller`` (default: the cap less a
quarter of it, at least one slot, so from a cap of 2 up one hub can never take every slot —
three quarters alone reserved nothing below a cap of 4, measured in docs/performance.md,
"which gate refuses the second hub"), and while other callers hold slots no caller may
hold more than an equal split of the cap (``cap // callers``), so one hub flooding cannot
starve another.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hedui.node.errors import Reason, ResourceExhausted

if TYPE_CHECKING:
    from hedui.node.config import NodeSection

__all__ = ["Admission"]


class Admission:
    def __init__(self, cap: int, per_caller: int = 0) -> None:
        if cap < 1:
            raise ValueError(f"max_concurrent_rpcs: got {cap}, want >= 1")
        self.cap = cap
        self.per_caller = per_caller if per_caller > 0 else max(1, cap - max(1, cap // 4))
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._total = 0

    @classmethod
    def of(cls, node: NodeSection) -> Admission:
        """The node's admission: ``[node] max_concurrent_rpcs`` (0: as many as the handler
        threads) and ``max_concurrent_per_caller`` — one process's or a front's alike."""
        return cls(node.max_concurrent_rpcs or node.workers, node.max_concurrent_per_caller)

    @property
    def in_flight(self) -> int:
        return self._total

    def held(self, caller: str) -> int:
        return self._held.get(caller, 0)

    def try_acquire(self, caller: str) -> None:
        with self._lock:
            mine = self._held.get(caller, 0)
            others = sum(1 for c, n in self._held.items() if n and c != caller)
            share = self.per_caller if not others else min(self.per_caller, max(1, self.cap // (others + 1)))
            if self._total >= self.cap:
                raise ResourceExhausted(
                    f"node: {self._total} calls in progress, capacity {self.cap}; retry with back-off", reason=Reason.OVERLOADED)
            if mine >= share:
                raise ResourceExhausted(
                    f"node: {caller} holds {mine} of {self.cap} call slots, its share is {share}; retry with back-off",
                    reason=Reason.OVERLOADED)
            self._held[caller] = mine + 1
            self._total += 1

    def release(self, caller: str) -> None:
        with self._lock:
            n = self._held.get(caller, 0) - 1
            if n > 0:
                self._held[caller] = n
            else:
                self._held.pop(caller, None)
            self._total -= 1

    @contextmanager
    def slot(self, caller: str) -> Iterator[None]:
        self.try_acquire(caller)
        try:
            yield
        finally:
            self.release(caller)
