"""Runs ``hedui node index`` and SIGKILLs itself at a named phase of the build (a test
helper for tests/test_index_failsafe.py, issue 13 item 1; kept out of the product: it wraps
the build's own steps from outside).

    python tests/index_kill.py PHASE node index --config node.toml [...]

PHASE is one of
  ``start``     after the run is registered, before any token row is written;
  ``tokens:N``  after the N-th batch has committed (in the token phase);
  ``batch:N``   inside the N-th batch's transaction, after its token rows are written;
  ``preswap``   after the last batch, before the swap;
  ``swap``      inside the swap's transaction, after ``live_gen`` is set, before the commit;
  ``none``      no kill (the same wrapping, run to the end).
Batches are 40 rows here, so that a small test source has several.
"""

from __future__ import annotations

import os
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    phase, args = sys.argv[1], sys.argv[2:]
    name, _, n = phase.partition(":")
    at = int(n) if n else 0
    from sqlalchemy import Engine, event

    from hedui.node.verification import index

    counts = {"batches": 0, "writes": 0}
    real_start, real_batch, real_swap = index._start, index._write_batch, index._swap
    real_full, real_inc, real_ready = index._write_full, index._write_incremental, index._write_ready
    real_build = index.build_index

    def start(*a, **kw):
        run = real_start(*a, **kw)
        if name == "start":
            _die()
        return run

    def write_batch(*a, **kw):
        real_batch(*a, **kw)
        counts["batches"] += 1
        if name == "tokens" and counts["batches"] == at:
            _die()

    def written(real):
        def wrapper(*a, **kw):
            got = real(*a, **kw)
            counts["writes"] += 1
            if name == "batch" and counts["writes"] == at:
                _die()     # the batch's token rows are written, not committed
            return got
        return wrapper

    def swap(*a, **kw):
        if name == "preswap":
            _die()
        return real_swap(*a, **kw)

    @event.listens_for(Engine, "after_cursor_execute")
    def _in_swap(conn, cursor, statement, parameters, context, executemany):
        if name == "swap" and statement.startswith("UPDATE index_progress SET status") and "live_gen" in statement:
            _die()         # the run is marked live in the open transaction, not committed

    def build(*a, **kw):
        kw["batch_size"] = 40
        kw["commit_rows"] = 80   # a fresh run commits two batches together (as SQLite groups them)
        return real_build(*a, **kw)

    index._start, index._write_batch, index._swap = start, write_batch, swap
    index._write_full, index._write_incremental = written(real_full), written(real_inc)
    index._write_ready = written(real_ready)   # a fresh full run's batches (workers made the rows ready)
    index.build_index = build
    sys.argv = ["hedui", *args]
    from hedui.node.cli import main as cli

    cli()


if __name__ == "__main__":   # spawned token workers re-import this file: no patching there
    main()
