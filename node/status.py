"""``hedui node status``: what an operator asks first (issue 17 item 5) — is the directory
fresh, is each source's index built and how old is its data, how much is waiting in the
outbox, who are the peers. Read-only: no key is opened, no migration runs, so it answers
even while ``serve`` holds the store, and it never needs the passphrase.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from hedui.common.clock import Clock
from hedui.keys.signing import load_public
from hedui.node.config import NodeConfig

__all__ = ["node_status", "ROLE_NAMES"]

ROLE_NAMES = {1: "provider", 2: "hub"}


def _iso(t: dt.datetime | dt.date | None) -> str | None:
    return None if t is None else t.isoformat()


def _aware(t: dt.datetime) -> dt.datetime:
    # SQLite hands timestamps back naive; the store writes them in UTC (node/store/tables.py).
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def directory_status(cfg: NodeConfig, clock: Clock) -> dict[str, Any]:
    """The signed directory as this node would load it: verified against the authority key;
    ``valid`` False with the one-line reason when it would be refused."""
    from hedui.keys.directory import load_directory
    from hedui.node.errors import ConfigError

    now = clock.now()
    out: dict[str, Any] = {"path": str(cfg.path(cfg.directory.path))}
    try:
        td = load_directory(cfg.path(cfg.directory.path), load_public("authority", cfg.path(cfg.directory.authority_key)),
                            now=now)
    except ConfigError as exc:
        out.update(valid=False, error=exc.message, reason=exc.reason.value if exc.reason else None)
        return out
    out.update(valid=True, version=td.version, expires_at=_iso(td.expires_at),
               seconds_to_expiry=int((td.expires_at - now).total_seconds()), federation=td.msg.federation)
    out["peers"] = [
        {"code": m.code, "endpoint": m.endpoint, "roles": [ROLE_NAMES.get(r, str(r)) for r in m.roles],
         "maintenance": bool(getattr(m, "maintenance", False))}
        for m in td.msg.members if m.code != cfg.node.member
    ]
    out["_td"] = td
    return out


def store_status(cfg: NodeConfig, clock: Clock) -> dict[str, Any]:
    """Index state per source and epoch, the outbox, the accepted directory version."""
    from hedui.node.discovery.tables import notice_outbox
    from hedui.node.store.db import open_engine
    from hedui.node.store.tables import node_state
    from hedui.node.verification.index_read import count_tokens
    from hedui.node.verification.index_tables import index_progress

    now = clock.now()
    eng = open_engine(cfg.store_url())
    out: dict[str, Any] = {"dialect": eng.dialect.name}
    try:
        with eng.connect() as c:
            out["reachable"] = True
            v = c.execute(select(node_state.c.value).where(node_state.c.key == "directory_version")).scalar()
            out["accepted_directory_version"] = int(v) if v else None
            epochs = {e for (e,) in c.execute(select(index_progress.c.epoch).distinct())}
            tokens: dict[int, int] = {e: count_tokens(c, e) for e in epochs}   # live builds only
            out["index"] = [
                {"source": r.source, "epoch": r.epoch, "status": r.status, "mode": r.mode, "live_gen": r.live_gen, "rows_read": r.rows_read,
                 "tokens_in_epoch": int(tokens.get(r.epoch, 0)), "data_date": _iso(r.data_date),
                 "updated_at": _iso(_aware(r.updated_at)),
                 "age_seconds": int((now - _aware(r.updated_at)).total_seconds()),
                 "completed_at": _iso(_aware(r.completed_at) if r.completed_at else None)}
                for r in c.execute(select(index_progress).order_by(index_progress.c.source, index_progress.c.epoch))
            ]
            pend = c.execute(select(func.count(), func.min(notice_outbox.c.created_at))
                             .where(notice_outbox.c.status == "pending")).one()
            rejected = c.execute(select(func.count()).where(notice_outbox.c.status == "rejected")).scalar()
            out["outbox"] = {
                "pending": int(pend[0]), "rejected": int(rejected or 0),
                "oldest_pending_age_seconds": int((now - _aware(pend[1])).total_seconds()) if pend[1] else None,
            }
    except Exception as exc:  # a store that is down, not migrated or not ours: say so, keep going
        out.update(reachable=out.get("reachable", False),
                   error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    finally:
        eng.dispose()
    return out


def node_status(cfg: NodeConfig, clock: Clock) -> dict[str, Any]:
    d = directory_status(cfg, clock)
    d.pop("_td", None)
    peers = d.pop("peers", [])
    return {"member": cfg.node.member, "roles": list(cfg.node.roles), "at": clock.now().isoformat(),
            "directory": d, "store": store_status(cfg, clock), "peers": peers}
