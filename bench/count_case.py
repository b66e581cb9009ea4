"""Issue 16: how many commits and SQL statements a household case costs, per side.

Builds the same federation as ``bench_case.py`` (hub + 8 providers in this process, 4-member
households), runs ``--cases`` cases one after another after a warm-up, and counts with
SQLAlchemy engine events (``commit`` and ``before_cursor_execute``, on every engine of the
process) what each node's store did while they ran: totals per case, split hub / providers,
and the most frequent statements (``--top``). Opening the cases (``open_case``) is counted
too; ``bench_case.py`` opens them outside its timing. Background loops (checkpoint signing, peer
cosigning) are stopped during the count so the figures are the case path alone.

    python bench/count_case.py [--residents 5000] [--cases 16] [--concurrency 1] [--top 12] [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

from sqlalchemy import Engine, event

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_case import PROVIDERS, _households, _run_hedui, _setup

_lock = threading.Lock()
_counts: collections.Counter = collections.Counter()
_stmts: collections.Counter = collections.Counter()
_side: dict[int, str] = {}   # id(engine) -> "hub" / "provider"
_on = False


def _name(engine) -> str:
    return _side.get(id(engine), "other")


@event.listens_for(Engine, "before_cursor_execute")
def _before(conn, cursor, statement, parameters, context, executemany):
    if not _on:
        return
    side = _name(conn.engine)
    with _lock:
        _counts[(side, "statements")] += 1
        _stmts[(side, " ".join(statement.split())[:110])] += 1


@event.listens_for(Engine, "commit")
def _commit(conn):
    if not _on:
        return
    with _lock:
        _counts[(_name(conn.engine), "commits")] += 1


def main() -> None:
    global _on
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=5000)
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--concurrency", type=int, default=1, help="cases run at once (group commit shares commits)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("HEDUI_BENCH_TMP")) as d:
        tb, _records, _index_s, _key = _setup(Path(d), a.residents)
        tb.start()
        try:
            _side[id(tb.runtime("hub").engine)] = "hub"
            for code in PROVIDERS:
                _side[id(tb.runtime(code).engine)] = "provider"
            _run_hedui(tb.runtime("hub"), _households(4, a.residents), 1)   # warm-up: channels, caches, first checkpoints
            for code in ["hub", *PROVIDERS]:
                rt = tb.runtime(code)
                rt.audit.log.flush()
                rt.audit.scheduler.stop(final=False)
                rt.audit.cosigner.stop()
            hh = _households(a.cases, a.residents)
            _on = True
            _lat, _rate, incomplete = _run_hedui(tb.runtime("hub"), hh, a.concurrency)
            for code in ["hub", *PROVIDERS]:
                tb.runtime(code).audit.log.flush()
            _on = False
        finally:
            tb.stop()
    n = a.cases
    out = {
        "cases": n, "concurrency": a.concurrency, "incomplete": incomplete,
        "per case": {f"{side} {what}": round(v / n, 2) for (side, what), v in sorted(_counts.items())},
        "top statements per case": [
            {"side": side, "per case": round(v / n, 2), "sql": sql} for (side, sql), v in _stmts.most_common(a.top)
        ],
    }
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{n} cases at concurrency {a.concurrency} ({incomplete} incomplete), per case:")
    for k, v in out["per case"].items():
        print(f"  {k:24s} {v:8.2f}")
    print("most frequent statements (per case):")
    for s in out["top statements per case"]:
        print(f"  {s['per case']:7.2f}  {s['side']:8s} {s['sql']}")


if __name__ == "__main__":
    main()
