"""Readiness of a running node (issue 17 item 2): what ``/readyz`` answers and what gRPC
health reports per service.

Five checks, each ``(ok, detail)``:

- ``directory`` — the serving guard lets the node serve (not expired, not superseded; node/guard.py);
- ``store`` — a ``SELECT 1`` on the node's store answers;
- ``clock`` — the node's clock is not before the directory's ``issued_at`` (less a slack): a
  clock behind the authority's would accept expired material and date audit entries wrongly;
- ``maintenance`` — the directory does not flag this node's own member as in maintenance
  (issue 17: "its health says so"; peers skip it meanwhile, so load balancers and probes
  should too — X-Road's health check fails in maintenance mode the same way);
- ``index`` — providers only: every source of the current OPRF epoch has completed a build at
  least once (a rebuild in progress still answers from the previous run; node/verification/index.py).

Services that answer from the token index (PseudonymService, LookupService) need all of
them; every other service needs all but ``index``. ``/healthz`` only says the process is up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import func, select, text

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["Readiness", "INDEX_SERVICES"]

#: Services whose answers come from the token index.
INDEX_SERVICES = frozenset({"hedui.v1.PseudonymService", "hedui.v1.LookupService"})

#: How far the node's clock may be behind the directory's issue time (clock skew between the
#: authority and the node, NTP-disciplined on both).
CLOCK_SLACK = dt.timedelta(minutes=5)

Check = tuple[bool, str]


class Readiness:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        #: The live directory's pull state (node/directory_live.py), when the node pulls one.
        self.pull_state: Callable[[], dict[str, object]] | None = None

    def info(self) -> dict[str, object]:
        """What ``/readyz`` reports without deciding readiness: a directory source that is down
        does not make the node unready while its current directory is valid (it serves until
        expiry), but an operator must see it (issue 17: "reported in health and metrics")."""
        out: dict[str, object] = {}
        if self.pull_state is not None:
            out["directory_pull"] = self.pull_state()
        return out

    def checks(self) -> dict[str, Check]:
        rt = self._rt
        out: dict[str, Check] = {}
        why = rt.guard.state()
        out["directory"] = (why is None, f"v{rt.directory.version} until {rt.directory.expires_at:%Y-%m-%dT%H:%M:%SZ}"
                            if why is None else why.value)
        try:
            with rt.engine.connect() as c:
                c.execute(text("SELECT 1"))
            out["store"] = (True, rt.engine.dialect.name)
        except Exception as exc:
            out["store"] = (False, type(exc).__name__)
        now = rt.clock.now()
        issued = rt.directory.msg.issued_at.ToDatetime(tzinfo=dt.UTC)
        out["clock"] = ((now >= issued - CLOCK_SLACK),
                        f"now {now:%Y-%m-%dT%H:%M:%SZ}, directory issued {issued:%Y-%m-%dT%H:%M:%SZ}")
        me = rt.directory.by_code.get(rt.member)
        flagged = bool(me is not None and me.maintenance)
        out["maintenance"] = (not flagged, f"in maintenance by directory v{rt.directory.version}" if flagged else "no")
        if rt.provider is not None:
            out["index"] = self._index(out["store"][0])
        return out

    def _index(self, store_ok: bool) -> Check:
        if not store_ok:
            return (False, "store unreachable")
        from hedui.node.verification.index_tables import index_progress

        assert self._rt.config.provider is not None
        epoch = self._rt.config.provider.epoch
        try:
            with self._rt.engine.connect() as c:
                total, done = c.execute(
                    select(func.count(), func.count(index_progress.c.completed_at)).where(index_progress.c.epoch == epoch)
                ).one()
        except Exception as exc:
            return (False, type(exc).__name__)
        if not total:
            return (False, f"epoch {epoch}: no index built (run `hedui node index`)")
        return (done == total, f"epoch {epoch}: {done} of {total} sources built")

    def ready(self, service: str = "") -> tuple[bool, dict[str, Check]]:
        cs = self.checks()
        need = [k for k in cs if k != "index" or service in INDEX_SERVICES or service == ""]
        return all(cs[k][0] for k in need), cs

    def by_service(self, services: list[str]) -> dict[str, bool]:
        """Serving or not, per service name ("" = the node as a whole) from one evaluation."""
        cs = self.checks()
        base = all(ok for k, (ok, _) in cs.items() if k != "index")
        idx = cs.get("index", (True, ""))[0]
        return {s: base and (idx or (s not in INDEX_SERVICES and s != "")) for s in ["", *services]}
