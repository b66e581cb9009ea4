"""Audit-log benchmark with side-by-side baselines (figures, not assertions).

    python bench/bench_audit.py [--entries N] [--append-entries M] [--batch B] [--reps R] [--no-verify] [--json] [--no-postgres]

1. Append throughput on SQLite and PostgreSQL: ``AuditLog.append_many`` (batches of B),
   ``AuditLog.submit`` from 4 threads (group commit) and ``AuditLog.append`` one durable
   entry at a time, against a bare batched INSERT of the same rows into a plain table. The
   baseline encodes (canonical JSON, no checks) and hashes its rows inside its timing, and
   the two sides alternate: a warm-up round, then R rounds each (min / median reported).
2. Offline verification of an N-entry export (SQLite-built), against hashing the same
   entry bytes with hashlib alone (leaf hashes only, and leaves + interior nodes).
3. Proof generation at N entries: µs per inclusion / consistency proof from the store.

PostgreSQL runs against a fresh database created on postgresql+psycopg://postgres@127.0.0.1
and dropped afterwards (skipped with a note if the server is unreachable).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import BigInteger, Column, DateTime, LargeBinary, MetaData, String, Table, create_engine, insert, text

import hedui.node.audit.tables  # noqa: F401 - registers the audit tables
from hedui.common.clock import FixedClock as _FixedClock
from hedui.node.audit import export as audit_export
from hedui.node.audit import merkle
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.entry import Kind, format_time
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Signer
from hedui.node.store import schema
from hedui.node.store.db import open_engine, sqlite_url

# Entries and checkpoints are stamped with a fixed instant, never the wall clock.
AUDIT_CLOCK = _FixedClock(_dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC))

PG_ADMIN = os.environ.get("HEDUI_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ORIGIN = "bench.hedui/audit"

_plain_md = MetaData()
bench_plain = Table(
    "bench_plain_entries",
    _plain_md,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("request_id", String(64), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def fields(i: int, rnd: random.Random) -> tuple[str, dict]:
    return Kind.QUERY_RECEIVED, {
        "request_id": rnd.randbytes(16).hex(),
        "peer": "HUB-330100",
        "purpose": "PURPOSE_DIBAO",
        "case_ref": f"HUB-2026-{i:06d}",
        "request_digest": rnd.randbytes(32).hex(),
        "method": "Lookup",
        "count": 1 + i % 7,
    }


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


class Store:
    """A fresh store for one backend; dropped on exit."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        self._admin = None
        if backend == "sqlite":
            self.url = sqlite_url(tmp / f"bench-{uuid.uuid4().hex[:8]}.db")
        else:
            self._admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
            self._name = f"hedui_bench_{uuid.uuid4().hex[:10]}"
            with self._admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{self._name}"'))
            self.url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self._name
        self.engine = open_engine(self.url)
        schema.load_all().create_all(self.engine)
        _plain_md.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        if self._admin is not None:
            with self._admin.connect() as c:
                c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                          {"n": self._name})
                c.execute(text(f'DROP DATABASE IF EXISTS "{self._name}"'))
            self._admin.dispose()


def _bare_rows(items: list[tuple[str, dict]], at: datetime, start: int) -> list[dict]:
    """The baseline's own encoding: the same canonical JSON bytes and leaf hash as an entry,
    with no validation and no identity check (what a bare logger would do)."""
    stamp = format_time(at)
    rows = []
    for i, (kind, f) in enumerate(items):
        data = json.dumps({"fields": f, "kind": kind, "time": stamp, "v": 1}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False).encode()
        rows.append({"seq": start + i, "entry": data, "leaf_hash": hashlib.sha256(b"\x00" + data).digest(),
                     "kind": kind, "request_id": f["request_id"], "created_at": at})
    return rows


def bench_append(backend: str, m: int, batch: int, tmp: Path, reps: int = 3) -> dict:
    """Interleaved: a warm-up round, then ``reps`` rounds of (bare INSERT, append_many), each
    side encoding, hashing and inserting the same ``m`` entries in batches of ``batch``
    inside its timing; min and median per side and of the per-round ratio."""
    rnd = random.Random(1)
    items = [fields(i, rnd) for i in range(m)]
    out: dict = {"backend": backend, "entries": m, "batch": batch, "reps": reps}
    store = Store(backend, tmp)
    try:
        now = AUDIT_CLOCK.now()
        log = AuditLog(store.engine, ORIGIN, Signer.generate(ORIGIN), clock=AUDIT_CLOCK.now)
        seq = 0
        bare_t: list[float] = []
        many_t: list[float] = []
        for r in range(reps + 1):   # round 0 warms both paths up (statement caches, pages)
            n = m if r else min(m, 2 * batch)
            t = time.perf_counter()
            for k in range(0, n, batch):
                rows = _bare_rows(items[k : k + batch], now, seq)
                seq += len(rows)
                with store.engine.begin() as conn:
                    conn.execute(insert(bench_plain), rows)
            if r:
                bare_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            for k in range(0, n, batch):
                log.append_many(items[k : k + batch])
            if r:
                many_t.append(time.perf_counter() - t)
        ratios = [b / a for a, b in zip(many_t, bare_t)]   # rate ratio = time ratio inverted
        out["bare_insert_per_s_max"] = rate(m, min(bare_t))
        out["bare_insert_per_s_median"] = rate(m, statistics.median(bare_t))
        out["append_many_per_s_max"] = rate(m, min(many_t))
        out["append_many_per_s_median"] = rate(m, statistics.median(many_t))
        out["ratio_min"] = min(ratios)
        out["ratio_median"] = statistics.median(ratios)
        out["ratio_max"] = max(ratios)
        out["bare_insert_per_s"] = out["bare_insert_per_s_median"]
        out["append_many_per_s"] = out["append_many_per_s_median"]
        out["ratio_append_many_vs_bare"] = out["ratio_median"]

        t = time.perf_counter()
        futures = []
        lock = threading.Lock()

        def worker(part):
            fs = [log.submit(kind, f) for kind, f in part]
            with lock:
                futures.extend(fs)

        threads = [threading.Thread(target=worker, args=(items[w::4],)) for w in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for f in futures:
            f.result()
        out["submit_4_threads_per_s"] = rate(m, time.perf_counter() - t)

        single = min(m, 2000)
        t = time.perf_counter()
        for kind, f in items[:single]:
            log.append(kind, f)
        out["append_one_durable_per_s"] = rate(single, time.perf_counter() - t)
        t = time.perf_counter()
        log.checkpoint()
        out["checkpoint_ms"] = (time.perf_counter() - t) * 1000
        log.close()
    finally:
        store.close()
    return out


def bench_verify_and_proofs(n: int, tmp: Path, progress: bool) -> dict:
    out: dict = {"entries": n}
    rnd = random.Random(2)
    store = Store("sqlite", tmp)
    try:
        signer = Signer.generate(ORIGIN)
        log = AuditLog(store.engine, ORIGIN, signer, clock=AUDIT_CLOCK.now)
        t = time.perf_counter()
        step = 5000
        for k in range(0, n, step):
            log.append_many(fields(i, rnd) for i in range(k, min(n, k + step)))
            if progress and (k // step) % 20 == 0:
                print(f"  loading {k}/{n}", file=sys.stderr, flush=True)
        out["load_append_many_per_s"] = rate(n, time.perf_counter() - t)
        log.checkpoint()
        path = tmp / "bench-export.ndjson"
        t = time.perf_counter()
        audit_export.export(store.engine, 0, None, path, now=AUDIT_CLOCK.now())
        out["export_s"] = time.perf_counter() - t
        out["export_mb"] = path.stat().st_size / 1e6

        t = time.perf_counter()
        r = audit_verify.verify(path, [signer.vkey])
        out["verify_export_s"] = time.perf_counter() - t
        out["verify_export_verdict"] = r.verdict.name
        t = time.perf_counter()
        r = audit_verify.verify(store.engine, [signer.vkey])
        out["verify_db_s"] = time.perf_counter() - t
        out["verify_db_verdict"] = r.verdict.name

        # Baselines: the same entry bytes, in memory, hashed with hashlib alone.
        from sqlalchemy import select

        from hedui.node.audit.tables import audit_entries

        with store.engine.connect() as conn:
            datas = [bytes(d) for (d,) in conn.execute(select(audit_entries.c.entry).order_by(audit_entries.c.seq))]
        sha = hashlib.sha256
        t = time.perf_counter()
        leaves = [sha(b"\x00" + d).digest() for d in datas]
        out["hashlib_leaves_s"] = time.perf_counter() - t
        t = time.perf_counter()
        leaves = [sha(b"\x00" + d).digest() for d in datas]
        level = leaves
        while len(level) > 1:  # interior nodes too (same hash count as the RFC 9162 tree)
            nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        out["hashlib_tree_s"] = time.perf_counter() - t
        del datas, leaves, level
        out["verify_export_vs_hashlib_tree"] = out["verify_export_s"] / out["hashlib_tree_s"]

        # Proof generation from the store at size n.
        size = n
        reader = AuditLog(store.engine, ORIGIN, signer, clock=AUDIT_CLOCK.now)
        k = 1000
        idx = [rnd.randrange(size) for _ in range(k)]
        t = time.perf_counter()
        for i in idx[:200]:
            reader.inclusion_proof(i, size)
        out["inclusion_proof_cold_us"] = (time.perf_counter() - t) / 200 * 1e6
        t = time.perf_counter()
        for i in idx:
            reader.inclusion_proof(i, size)
        out["inclusion_proof_us"] = (time.perf_counter() - t) / k * 1e6
        pairs = [tuple(sorted((rnd.randint(1, size), rnd.randint(1, size)))) for _ in range(k)]
        t = time.perf_counter()
        for a, b in pairs:
            reader.consistency_proof(a, b)
        out["consistency_proof_us"] = (time.perf_counter() - t) / k * 1e6
        tree_root = reader.root(size)
        t = time.perf_counter()
        for i in idx[:200]:
            p = reader.inclusion_proof(i, size)
            merkle.verify_inclusion(merkle.leaf_hash(reader.entry(i)), i, size, p, tree_root)
        out["inclusion_proof_plus_verify_us"] = (time.perf_counter() - t) / 200 * 1e6
        reader.close()
        log.close()
    finally:
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000, help="entries for verify/proof (default 10^6)")
    ap.add_argument("--append-entries", type=int, default=20_000, help="entries per append run (default 20000)")
    ap.add_argument("--batch", type=int, default=500, help="batch size for append_many and the bare INSERT")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions per side (after a warm-up)")
    ap.add_argument("--no-verify", action="store_true", help="append figures only (skip verify/proofs)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    args = ap.parse_args()

    results: dict = {"append": [], "verify": None, "notes": []}
    with tempfile.TemporaryDirectory(prefix="hedui-bench-") as d:
        tmp = Path(d)
        backends = ["sqlite"] + ([] if args.no_postgres else ["postgres"])
        for b in backends:
            try:
                results["append"].append(bench_append(b, args.append_entries, args.batch, tmp, args.reps))
            except Exception as exc:
                results["notes"].append(f"{b}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        if not args.no_verify:
            results["verify"] = bench_verify_and_proofs(args.entries, tmp, progress=not args.json)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"\nAppend throughput ({args.append_entries} entries, batch {args.batch}), entries/s")
    print(f"interleaved, {args.reps} rounds after a warm-up; rates best / median; ratio = append_many / bare "
          "per round, min / median")
    print(f"{'backend':10} {'bare INSERT':>17} {'append_many':>17} {'ratio':>11} {'submit x4':>10} "
          f"{'append (1)':>11} {'checkpoint':>11}")
    for a in results["append"]:
        print(f"{a['backend']:10} {a['bare_insert_per_s_max']:8,.0f}/{a['bare_insert_per_s_median']:<8,.0f} "
              f"{a['append_many_per_s_max']:8,.0f}/{a['append_many_per_s_median']:<8,.0f} "
              f"{a['ratio_min']:5.2f}/{a['ratio_median']:<5.2f} {a['submit_4_threads_per_s']:10,.0f} "
              f"{a['append_one_durable_per_s']:11,.0f} {a['checkpoint_ms']:9.1f}ms")
    for n in results["notes"]:
        print(f"note: {n}")
    v = results["verify"]
    if v is None:
        return
    print(f"\nOffline verification, {v['entries']:,} entries (SQLite store, export {v['export_mb']:.0f} MB)")
    print(f"  load via append_many        {v['load_append_many_per_s']:12,.0f} entries/s")
    print(f"  export                      {v['export_s']:12.2f} s")
    print(f"  verify export file          {v['verify_export_s']:12.2f} s   ({v['verify_export_verdict']})")
    print(f"  verify node database        {v['verify_db_s']:12.2f} s   ({v['verify_db_verdict']})")
    print(f"  hashlib, leaf hashes only   {v['hashlib_leaves_s']:12.2f} s")
    print(f"  hashlib, leaves + nodes     {v['hashlib_tree_s']:12.2f} s   "
          f"(verify/hashlib = {v['verify_export_vs_hashlib_tree']:.1f}x)")
    print(f"\nProof generation at {v['entries']:,} entries (SQLite store), µs per proof")
    print(f"  inclusion (cold cache)      {v['inclusion_proof_cold_us']:12.0f}")
    print(f"  inclusion (warm)            {v['inclusion_proof_us']:12.0f}")
    print(f"  consistency                 {v['consistency_proof_us']:12.0f}")
    print(f"  inclusion + read + verify   {v['inclusion_proof_plus_verify_us']:12.0f}")
    for n in results["notes"]:
        print(f"note: {n}")


if __name__ == "__main__":
    main()
