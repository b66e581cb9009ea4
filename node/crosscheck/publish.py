"""The provider's side of signed token filters (issue 14): per key epoch and data date, the
sharded Golomb-coded set of every token in the index, its header signed with the node's
directory key. Built once and kept until the epoch's token count or data date changes (a
re-index changes one of them; ``filterfmt.refresh_plan`` then lets the hub fetch only the
shards that differ)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from hedui.common.errors import Reason
from hedui.node.crosscheck import shards
from hedui.node.crosscheck.filterfmt import FilterHeader, header_for
from hedui.node.crosscheck.wire import sign_header
from hedui.node.errors import FailedPrecondition
from hedui.node.verification.index import all_tokens, data_dates
from hedui.node.verification.index_tables import token_index
from hedui.v1 import common_pb2

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["Published", "published_filter", "filter_data_date"]


@dataclass(frozen=True)
class Published:
    header: FilterHeader
    envelope: common_pb2.Envelope
    content: shards.ShardedSet


_LOCK = threading.Lock()
_CACHE: dict[tuple, Published] = {}


def filter_data_date(dates: dict[str, date | None]) -> date | None:
    """The day the filter speaks for: the earliest data date of the epoch's sources (a
    token absent from the filter is absent from every source as of that day at least)."""
    known = [d for d in dates.values() if d is not None]
    return min(known) if known else None


def published_filter(rt: Runtime, epoch: int) -> Published:
    """The signed filter of ``epoch`` (built on first use or when the index changed).
    Raises ``FailedPrecondition`` (``NO_FILTER``) while the epoch has no indexed token."""
    with rt.engine.connect() as c:
        count = c.execute(select(func.count()).select_from(token_index).where(token_index.c.epoch == epoch)).scalar_one()
    if not count:
        raise FailedPrecondition(f"filter: got no indexed token in epoch {epoch}, want an index built first", reason=Reason.NO_FILTER)
    day = filter_data_date(data_dates(rt.engine, epoch)) or rt.clock.today()
    key = (rt.member, str(rt.config.base), epoch, day, count)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        content = shards.build(b"".join(all_tokens(rt.engine, epoch)))
        header = header_for(content, provider=rt.member, epoch=epoch, data_date=day)
        pub = Published(header, sign_header(header, rt.signer), content)
        for k in [k for k in _CACHE if k[:3] == key[:3]]:
            del _CACHE[k]
        _CACHE[key] = pub
        return pub
