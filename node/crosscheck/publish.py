"""The provider's side of signed token filters (issue 14): per key epoch and data date, the
sharded Golomb-coded set of every token in the index, its header signed with the node's
directory key. Built once and kept until a build of the epoch goes live or its data date changes (a
re-index changes one of them; ``filterfmt.refresh_plan`` then lets the hub fetch only the
shards that differ)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from hedui.common.errors import Reason
from hedui.node.crosscheck import shards
from hedui.node.crosscheck.filterfmt import FilterHeader, header_for
from hedui.node.crosscheck.wire import sign_header
from hedui.node.errors import FailedPrecondition
from hedui.node.verification.index_read import live_state, live_tokens, require_live, snapshot
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
    """The signed filter of ``epoch``'s live index (built on first use or when a build went
    live). Raises ``UNAVAILABLE``/``INDEX_NOT_READY`` while some source has no complete build
    (issue 13 item 1) and ``FailedPrecondition`` (``NO_FILTER``) while the epoch has no
    indexed token. The live generations, data dates and tokens are read in one snapshot."""
    st = rt.provider
    with snapshot(rt.engine) as conn:
        state = live_state(conn, epoch)
        require_live(state, epoch, st.sources if st is not None else ())
        day = filter_data_date({s: d for s, (_, d) in state.items()}) or rt.clock.today()
        key = (rt.member, str(rt.config.base), epoch, day, tuple(sorted((s, g) for s, (g, _) in state.items())))
        with _LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                return hit
            tokens = b"".join(live_tokens(conn, epoch))
            if not tokens:
                raise FailedPrecondition(f"filter: got no indexed token in epoch {epoch}, want an index built first",
                                         reason=Reason.NO_FILTER)
            content = shards.build(tokens)
            header = header_for(content, provider=rt.member, epoch=epoch, data_date=day)
            pub = Published(header, sign_header(header, rt.signer), content)
            for k in [k for k in _CACHE if k[:3] == key[:3]]:
                del _CACHE[k]
            _CACHE[key] = pub
            return pub
