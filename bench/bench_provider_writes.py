"""Issue 16 item 3: CPU of a provider's exchange writes, on the driver's cursor vs through Core.

One process, one thread, a migrated store (SQLite file, or PostgreSQL with ``--pg URL``):
``--n`` Lookup exchanges (``policy.commit``: quota windows, request id + answer, consent use,
two audit entries and their tree nodes, one transaction through the group committer) each
followed by an Evaluate charge (``policy.charge``: quota + one audit entry). The same work
runs with the statements as shipped (:class:`hedui.node.store.raw.Prepared`, "raw") and with
every ``Prepared`` executed by SQLAlchemy Core as before ("core"), alternated ``--reps`` times
after a warm-up of each; reported: CPU (``time.process_time``) per exchange pair, min / median.
The store is emptied between rounds. Outside the timing: building the requests.

    python bench/bench_provider_writes.py [--n 400] [--reps 3] [--pg postgresql://postgres@127.0.0.1/db]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_store_raw_equivalence as eq  # the scenario's runtime and core mode, shared with the test

from hedui.common.clock import FixedClock
from hedui.node import policy
from hedui.node.audit.entry import Kind
from hedui.node.audit.log import AuditLog
from hedui.node.store import migrate
from hedui.node.store.db import open_engine, sqlite_url
from hedui.node.verification.consent_state import check_use
from hedui.v1 import common_pb2

T0 = datetime(2026, 11, 30, 3, 0, 30, tzinfo=UTC)


def _round(engine, n: int, salt: int) -> float:
    """CPU seconds of ``n`` Lookup commits + ``n`` Evaluate charges."""
    eq._reset(engine)
    clock = FixedClock(T0)
    log = AuditLog(engine, eq.ORIGIN, eq.SIGNER, clock=clock.now)
    rt = eq._runtime(engine, clock, log, per_minute=10**6, per_day=10**6)   # both windows charged, never over
    rec, rec_digest = eq.RECORDS[0]
    work = []
    for i in range(n):
        rid = hashlib.sha256(b"%d request %d" % (salt, i)).digest()[:16]
        ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, request_id=rid, case_ref=rec.case_ref,
                                        consent_digest=rec_digest)
        base = {"peer": "hub", "purpose": "dibao", "case_ref": ctx.case_ref, "request_id": rid.hex()}
        digest = hashlib.sha256(rid).digest()
        work.append((ctx, base, digest, rec, rec_digest))
    tokens = [hashlib.sha512(b"member %d" % t).digest() for t in range(3)]
    try:
        t0 = time.process_time()
        for i, (ctx, base, digest, rec, rec_digest) in enumerate(work):
            clock.set(T0 + timedelta(seconds=i * 0.05))
            grant = policy.check(rt, "hub", eq.LOOKUP, ctx, fields=["income"], batch=3, request_digest=digest)

            def use(c, rec=rec, rec_digest=rec_digest) -> None:
                check_use(c, "hub", rec, rec_digest, rec.case_ref, 1, tokens, clock.now(), reference_month="2026-10", record=True)

            policy.commit(rt, "hub", eq.LOOKUP, ctx, grant, digest, b"signed answer",
                          audit=[(Kind.QUERY_RECEIVED, {**base, "request_digest": digest.hex(), "count": 3}),
                                 (Kind.ANSWER_SENT, {**base, "answer_digest": digest.hex(), "outcome": "ok"})], also=use)
            g = policy.check(rt, "hub", eq.EVALUATE, ctx, batch=3, need_consent=False, replay_guard=False, charge=False)
            policy.charge(rt, "hub", eq.EVALUATE, g, audit=[(Kind.PSEUDONYM_EVALUATED, {**base, "epoch": 1, "count": 3})])
        return time.process_time() - t0
    finally:
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="exchange pairs per round")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pg", default="", help="a PostgreSQL URL (an empty database) instead of a SQLite file")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        engine = open_engine(a.pg or sqlite_url(Path(d) / "store.db"))
        migrate.upgrade(engine)
        out: dict[str, list[float]] = {"core": [], "raw": []}
        import pytest

        def one(mode: str, salt: int) -> float:
            if mode == "raw":
                return _round(engine, a.n, salt)
            with pytest.MonkeyPatch.context() as mp:
                eq._core_mode(mp)
                return _round(engine, a.n, salt)

        one("core", 0), one("raw", 0)   # warm-up
        for rep in range(a.reps):
            for mode in ("core", "raw") if rep % 2 == 0 else ("raw", "core"):
                out[mode].append(one(mode, rep + 1) / a.n)
        for mode, xs in out.items():
            print(f"{engine.dialect.name} {mode}: {min(xs) * 1e6:.0f} / {statistics.median(xs) * 1e6:.0f} µs CPU per "
                  f"exchange pair (min / median of {len(xs)}), rounds {', '.join(f'{x * 1e6:.0f}' for x in xs)}")
        print(f"raw ÷ core, median: {statistics.median(out['raw']) / statistics.median(out['core']):.2f}")
        engine.dispose()


if __name__ == "__main__":
    main()
