"""Whether this node may serve at all, checked on every call while it runs (issue 13 item 5).

At start :class:`~hedui.node.runtime.Runtime` refuses an expired or rolled-back directory;
a node that keeps running must refuse just the same once that becomes true. The directory's
``expires_at`` is compared with the node's :class:`~hedui.common.clock.Clock` on every call
(no wall clock: tests advance a FixedClock), and the newest directory version this node's
store has accepted (``node_state.directory_version``, raised by any process of the node that
accepted a newer directory, the CLI included) is re-read at most every ``recheck`` seconds
of the node's clock. Either makes every call ``UNAVAILABLE`` with reason
``DIRECTORY_EXPIRED`` / ``DIRECTORY_ROLLBACK``, health NOT_SERVING for every service, and
``hedui_directory_refusing{reason}`` 1 (DESIGN.md "Directory": a member never acts on an
expired or superseded directory).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from hedui.node.errors import Reason, Unavailable
from hedui.node.store.raw import Prepared
from hedui.node.store.tables import node_state

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["ServingGuard"]

_RECHECK = dt.timedelta(seconds=5)


class ServingGuard:
    """``check()`` raises :class:`Unavailable` while the node must not serve; listeners (the
    health servicer) hear every change of state."""

    def __init__(self, rt: Runtime, *, recheck: dt.timedelta = _RECHECK) -> None:
        self._rt = rt
        self._recheck = recheck
        self._lock = threading.Lock()
        self._next_read: dt.datetime | None = None
        self._accepted = rt.directory.version
        self._refusing: Reason | None = None
        self._listeners: list[Callable[[Reason | None], None]] = []
        for r in (Reason.DIRECTORY_EXPIRED, Reason.DIRECTORY_ROLLBACK):
            rt.metrics.directory_refusing.labels(r.value).set(0)

    def on_change(self, fn: Callable[[Reason | None], None]) -> None:
        self._listeners.append(fn)
        fn(self._refusing)

    @property
    def refusing(self) -> Reason | None:
        return self._refusing

    def state(self) -> Reason | None:
        """The reason the node must refuse now, or ``None``; updates metrics and listeners."""
        rt = self._rt
        now = rt.clock.now()
        with self._lock:
            if self._next_read is None or now >= self._next_read:
                self._next_read = now + self._recheck
                self._accepted = max(self._accepted, _accepted_version(rt))
            if rt.directory.expires_at <= now:
                why: Reason | None = Reason.DIRECTORY_EXPIRED
            elif self._accepted > rt.directory.version:
                why = Reason.DIRECTORY_ROLLBACK
            else:
                why = None
            changed, self._refusing = why != self._refusing, why
        if changed:
            for r in (Reason.DIRECTORY_EXPIRED, Reason.DIRECTORY_ROLLBACK):
                rt.metrics.directory_refusing.labels(r.value).set(1 if r == why else 0)
            for fn in self._listeners:
                fn(why)
        return why

    def check(self) -> None:
        why = self.state()
        if why is None:
            return
        d = self._rt.directory
        if why == Reason.DIRECTORY_EXPIRED:
            msg = f"directory v{d.version}: expired at {d.expires_at:%Y-%m-%dT%H:%M:%SZ}, want a current one (the node refuses every call)"
        else:
            msg = f"directory version: serving v{d.version}, want >= {self._accepted} (a newer one was accepted; restart the node)"
        raise Unavailable(msg, reason=why)


# Built once and run on the driver's cursor (issue 16 item 3): building the select per read
# showed in the provider's profile (node/store/raw.py).
_ACCEPTED = Prepared(select(node_state.c.value).where(node_state.c.key == "directory_version"))


def _accepted_version(rt: Runtime) -> int:
    try:
        with rt.engine.connect() as c:
            rows = _ACCEPTED.run(c)
    except Exception:  # the store briefly away: keep what we knew
        return 0
    v = rows[0][0] if rows else None
    return int(v) if v else 0
