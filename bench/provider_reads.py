"""Issue 16 item 3: the store reads of one provider Lookup, in-process, on SQLite or PostgreSQL.

What a Lookup reads: the replay cache (node/policy.py ``_replay``: a fresh request id), the
hub's stored revocation serial (node/verification/consent_state.py) and the index's live
state and facts for its tokens (node/verification/index_read.py). Where the tree's
``policy._replay`` takes ``conn`` the replay cache is read on the Lookup's snapshot, else on a
connection of its own (as the tree's Lookup does). Run under two trees to compare them: where the
tree has ``read_live_in`` (one snapshot connection for all of it, statements on the driver's
cursor) that path is timed, else the former one (a connection for the serial, a snapshot for
the index, through Core). µs per Lookup (wall, and this process's CPU: on PostgreSQL the
server's work is elsewhere), min / median of ``--reps`` rounds of ``--calls``.

    python bench/provider_reads.py [--store sqlite|postgres] [--tokens 4] [--calls 2000] [--reps 5]
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import text

from hedui.common.clock import FixedClock
from hedui.node import policy
from hedui.node.store import migrate
from hedui.node.store.db import open_engine
from hedui.node.verification import consent_state, index_read
from hedui.node.verification.consent_tables import consent_lists_seen
from hedui.node.verification.index_tables import index_progress, token_index
from hedui.v1 import common_pb2

_T = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def _setup(url: str, n_tokens: int) -> tuple:
    eng = open_engine(url)
    migrate.upgrade(eng)
    toks = [i.to_bytes(4, "big") * 16 for i in range(1, 2001)]
    fact = {"name": "wage", "value": "10.00", "unit": "CNY", "on": "2026-10-01", "attrs": {}}
    with eng.begin() as c:
        c.execute(index_progress.insert(), {"epoch": 1, "source": "tax", "run": 1, "mode": "full", "status": "done",
                                            "fingerprint": "x", "rows_read": 0, "started_at": _T, "updated_at": _T,
                                            "completed_at": _T, "data_date": date(2026, 10, 31), "live_gen": 1})
        c.execute(token_index.insert(), [{"epoch": 1, "source": "tax", "token": t, "gen": 1, "part": 0, "row_count": 1,
                                          "facts": json.dumps({f"t:id={i}": [fact, fact]})} for i, t in enumerate(toks)])
        c.execute(consent_lists_seen.insert(), {"hub": "hub", "serial": 3, "received_at": _T})
    return eng, toks[:n_tokens]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="sqlite", choices=["sqlite", "postgres"])
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/hedui_bench_reads")
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if a.store == "sqlite":
            url = f"sqlite:///{Path(d) / 'node.db'}"
        else:
            admin = open_engine(a.pg.rsplit("/", 1)[0] + "/postgres")
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text(f"DROP DATABASE IF EXISTS {a.pg.rsplit('/', 1)[1]}"))
                c.execute(text(f"CREATE DATABASE {a.pg.rsplit('/', 1)[1]}"))
            admin.dispose()
            url = a.pg
        eng, toks = _setup(url, a.tokens)
        new = hasattr(index_read, "read_live_in")
        on_snapshot = "conn" in inspect.signature(policy._replay).parameters
        rt = SimpleNamespace(engine=eng, clock=FixedClock(_T), config=SimpleNamespace(provider=None))
        ids = itertools.count()

        def replay(c=None) -> None:
            ctx = common_pb2.RequestContext(request_id=next(ids).to_bytes(16, "big"))
            if c is None:
                assert policy._replay(rt, "hub", "Lookup", ctx, b"d" * 32) is None
            else:
                assert policy._replay(rt, "hub", "Lookup", ctx, b"d" * 32, conn=c) is None

        def one() -> None:
            if not on_snapshot:
                replay()
            if new:
                with index_read.snapshot(eng) as c:
                    if on_snapshot:
                        replay(c)
                    consent_state._serial(c, "hub")
                    live = index_read.read_live_in(c, 1, toks, ["tax"])
            else:
                with eng.connect() as c:
                    consent_state._serial(c, "hub")
                live = index_read.read_live(eng, 1, toks, ["tax"])
            assert len(live.facts) == len(toks)

        for _ in range(200):   # warm-up: pool, compiled statements
            one()
        wall, cpu = [], []
        for _ in range(a.reps):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(a.calls):
                one()
            wall.append((time.perf_counter() - t0) / a.calls * 1e6)
            cpu.append((time.process_time() - c0) / a.calls * 1e6)
        eng.dispose()
        what = ("replay cache, serial and index on one snapshot" if on_snapshot else
                "replay cache on its own connection, serial and index on one snapshot" if new else
                "replay cache, serial, index: three connections through Core")
        print(f"{what} ({a.store}, {a.tokens} tokens), "
              f"µs per Lookup's reads, min / median of {a.reps}: wall {min(wall):.0f} / {statistics.median(wall):.0f}, "
              f"this process's CPU {min(cpu):.0f} / {statistics.median(cpu):.0f}")


if __name__ == "__main__":
    main()
