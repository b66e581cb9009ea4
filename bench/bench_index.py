"""Token index build rate against the crypto floor, and pseudonym micro-benchmarks.

    python bench/bench_index.py [--residents N] [--workers W] [--json] [--no-postgres] [--no-sqlite] [--reps R]

1. Floor: bare OPRF evaluations (RFC 9497 §3.3.1 Evaluate, via ``ServerKey.token``) per
   second with W processes, nothing else: the rate no index build can beat. Measured again
   right before each build, which is compared with its own floor.
2. Read/evaluate/write floor (:func:`floor_rw`): the same department rows read with one
   streaming SELECT, normalised, tokenised and serialised in W processes and bulk-inserted
   into a plain table: what any build must do. After ``--warmup`` untimed pairs, builds and
   floors alternate (``--reps`` rounds, the order within a round alternating), each build
   into a fresh store; min/median of each and of the per-round ratio, and every round with
   its wall and CPU seconds (this process, and the reaped workers) and load average.
3. Build: synthetic residents (one tax record per adult resident) in a department database,
   ``build_index`` into a fresh node store, W token workers; on SQLite (files in a temporary
   directory) and on PostgreSQL (fresh databases, dropped afterwards). Reported as records
   per second and as a share of the floor.
4. Micro: provider ``evaluate_batch`` tokens/s for batches of 4, 64 and 4096 (one process,
   proof included); hub-side blind and verify+finalise cost per token.

Results are figures, not assertions. The machine's other load shows in them: run it on a
quiet machine and say what else was running.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

from sqlalchemy import create_engine, text

import hedui.node.verification.index_tables  # noqa: F401  (tables on the shared metadata)
from hedui.adapters import open_adapter
from hedui.adapters.synthetic import residents as synthetic_residents
from hedui.adapters.synthetic import write_sql
from hedui.common.clock import FixedClock
from hedui.keys import oprf
from hedui.keys.oprf import ServerKey
from hedui.node.store import schema
from hedui.node.store.db import open_engine, sqlite_url
from hedui.node.verification.index import build_index

SEED = bytes(range(32))
CLOCK = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))  # a fixed instant: builds are stamped with it
PG_ADMIN = os.environ.get("HEDUI_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

_key: ServerKey | None = None


def _init(key: ServerKey) -> None:
    global _key
    _key = key


def _eval(ids: list[str]) -> int:
    assert _key is not None
    for i in ids:
        _key.token(i)
    return len(ids)


def floor(ids: list[str], workers: int) -> float:
    """OPRF evaluations per second with ``workers`` processes (inline when 0)."""
    key = ServerKey.derive(SEED, 1)
    if workers == 0:
        t = time.perf_counter()
        for i in ids:
            key.token(i)
        return len(ids) / (time.perf_counter() - t)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init, initargs=(key,)) as pool:
        list(pool.map(_eval, [ids[:50]] * workers))                   # warm the workers up
        chunk = 2000
        t = time.perf_counter()
        n = sum(pool.map(_eval, [ids[i:i + chunk] for i in range(0, len(ids), chunk)]))
        return n / (time.perf_counter() - t)


def _eval_rows(rows: list[tuple]) -> list[tuple[bytes, bytes]]:
    """Worker side of the read/evaluate/write floor: normalise the identity number, derive
    the token and serialise the rest of the row, as a minimal index build must."""
    assert _key is not None
    from hedui.adapters.idnum import normalize

    out = []
    for r in rows:
        out.append((_key.token(normalize(r[1])), json.dumps([str(x) for x in r[2:]]).encode()))
    return out


def floor_rw(source_url: str, store_url: str, workers: int) -> dict:
    """The floor that does what a build must do and nothing else: one streaming SELECT of the
    department rows, normalise + F(k, id) + serialise in ``workers`` processes, and a bulk
    INSERT (executemany, one transaction per 20,000 rows) of (token, record) into a plain table
    with its primary key only. Runs against the same source database as the build."""
    key = ServerKey.derive(SEED, 1)
    src = create_engine(source_url if "+" in source_url or source_url.startswith("sqlite") else
                        source_url.replace("postgresql://", "postgresql+psycopg://"))
    dst = open_engine(store_url)
    table = f"floor_rw_{uuid.uuid4().hex[:6]}"
    with dst.begin() as c:
        blob = "BYTEA" if dst.dialect.name == "postgresql" else "BLOB"
        c.execute(text(f"CREATE TABLE {table} (seq BIGINT PRIMARY KEY, token {blob} NOT NULL, record {blob} NOT NULL)"))
    n = 0
    t = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init, initargs=(key,)) as pool:
        list(pool.map(_eval, [[r.id_number for r in synthetic_residents(2, seed=3)]] * workers))  # start workers (untimed)
        t = time.perf_counter()
        with src.connect() as rc:
            res = rc.execution_options(stream_results=True, yield_per=2000).execute(
                text("SELECT id, taxpayer_idno, tax_year, taxable_income, filed_on, updated_at FROM tax_annual"))
            chunks = (list(part) for part in res.partitions(2000))
            pending: list[tuple[bytes, bytes]] = []
            for done in pool.map(_eval_rows, chunks):
                pending.extend(done)
                if len(pending) >= 20_000:
                    n = _floor_write(dst, table, pending, n)
                    pending = []
            n = _floor_write(dst, table, pending, n)
    seconds = time.perf_counter() - t
    with dst.begin() as c:
        c.execute(text(f"DROP TABLE {table}"))
    src.dispose()
    dst.dispose()
    return {"records": n, "seconds": round(seconds, 2), "records_per_s": round(n / seconds)}


def _floor_write(dst, table: str, rows: list[tuple[bytes, bytes]], start: int) -> int:
    if rows:
        with dst.begin() as c:
            c.execute(text(f"INSERT INTO {table} (seq, token, record) VALUES (:s, :t, :r)"),
                      [{"s": start + i, "t": tok, "r": rec} for i, (tok, rec) in enumerate(rows)])
    return start + len(rows)


class PeakRss:
    """Peak resident memory (MiB) of this process and of its largest child while in use,
    sampled from /proc every 0.2 s: the build's own peak, apart from the data generation and
    the floor that share the process (``ru_maxrss`` covers the whole run). Linux only; zeros
    elsewhere."""

    def __init__(self) -> None:
        self.main = self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="peak-rss", daemon=True)

    @staticmethod
    def _rss(pid: int | str) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
        except OSError:
            pass
        return 0

    def _watch(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.2):
            self.main = max(self.main, self._rss(me))
            kids: list[str] = []
            for task in Path(f"/proc/{me}/task").glob("*/children"):
                try:
                    kids += task.read_text().split()
                except OSError:
                    pass
            self.worker = max([self.worker, *(self._rss(k) for k in kids)])

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _fresh_tables(engine, partitions: int) -> None:
    """The node's tables; on PostgreSQL with ``partitions`` the token index partitioned by
    token prefix as migration 0009pg16 makes it (issue 16 item 6)."""
    schema.load_all().create_all(engine)
    if partitions and engine.dialect.name == "postgresql":
        from hedui.node.verification.index_tables import token_index_pg_ddl

        with engine.begin() as c:
            c.execute(text("DROP TABLE token_index"))
            for stmt in token_index_pg_ddl(partitions):
                c.execute(text(stmt))


def _bytes_per_token(engine) -> float | None:
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as c:
        # pg_partition_tree lists nothing for a plain table (PostgreSQL 15).
        size = c.execute(text("SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM "
                              "pg_partition_tree('token_index')), pg_total_relation_size('token_index'))")).scalar()
        n = c.execute(text("SELECT count(*) FROM token_index")).scalar()
    return round(int(size) / n) if n else None


def _cpu() -> tuple[float, float]:
    """CPU seconds so far: this process, and its children that have been reaped (a build's
    and a floor's workers are joined before either returns)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _timed(fn) -> tuple[object, dict]:
    """Runs ``fn`` and returns its result and what it cost: wall seconds, CPU seconds of this
    process and of the workers it reaped, the 1-minute load average before. A round whose
    wall time rose but whose CPU did not waited for the cores (other work), not for itself."""
    load = os.getloadavg()[0]
    c0 = _cpu()
    t = time.perf_counter()
    got = fn()
    wall = time.perf_counter() - t
    c1 = _cpu()
    return got, {"wall": round(wall, 3), "cpu_main": round(c1[0] - c0[0], 3), "cpu_workers": round(c1[1] - c0[1], 3),
                 "load": round(load, 2)}


def build(source_url: str, store_url: str, residents: int, workers: int, tmp: Path, reps: int = 3,
          partitions: int = 0, warmup: int = 1) -> dict:
    t = time.perf_counter()
    maps = write_sql(source_url, residents=residents, seed=1, departments=["tax"], share={"tax": 1.0}, years=1,
                     mapping_dir=tmp / f"maps-{uuid.uuid4().hex[:6]}")
    generated = time.perf_counter() - t
    if source_url.startswith("postgresql"):
        # The source as a department's table at rest: vacuumed, analysed, checkpointed, so that
        # autovacuum of the rows just generated does not run during the first timed round.
        eng = create_engine(source_url.replace("postgresql://", "postgresql+psycopg://")
                            if "+" not in source_url else source_url, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text("VACUUM ANALYZE"))
            c.execute(text("CHECKPOINT"))
        eng.dispose()

    def one_build(peak: PeakRss | None = None):
        engine = open_engine(store_url)
        schema.load_all().drop_all(engine)
        _fresh_tables(engine, partitions)
        try:
            if peak is None:
                rep = build_index(engine, open_adapter(maps["tax"]), ServerKey.derive(SEED, 1), 1, workers=workers,
                                  clock=CLOCK)
            else:
                with peak:
                    rep = build_index(engine, open_adapter(maps["tax"]), ServerKey.derive(SEED, 1), 1,
                                      workers=workers, clock=CLOCK)
            return rep, _bytes_per_token(engine)
        finally:
            engine.dispose()

    # Warm-up (untimed): one build and one floor, so that neither side's first timed round
    # pays for cold caches (imports, page cache, the store's first file growth).
    for _ in range(warmup):
        one_build()
        floor_rw(source_url, store_url, workers)
    # Interleaved, in alternating order (build then floor, floor then build, ...) so that
    # neither side always runs right after the other; a round's ratio is floor ÷ build of
    # the pair.
    rounds: list[dict] = []
    peak = PeakRss()
    report = None
    per_token = None
    for i in range(reps):
        def b(i: int = i):
            nonlocal report, per_token
            rep, pt = one_build(peak if i == 0 else None)
            if i == 0:
                report, per_token = rep, pt
            return rep
        order = ("build", "floor") if i % 2 == 0 else ("floor", "build")
        got: dict = {}
        for side in order:
            if side == "build":
                rep, got["build"] = _timed(b)
                got["build"]["seconds"] = round(rep.seconds, 3)   # build_index's own timing
            else:
                fl, got["floor"] = _timed(lambda: floor_rw(source_url, store_url, workers))
                got["floor"]["seconds"] = fl["seconds"]
                got["floor"]["records"] = fl["records"]
        got["ratio"] = round(got["floor"]["seconds"] / got["build"]["seconds"], 3)
        got["order"] = order[0]
        rounds.append(got)
        print(f"round {i + 1}: build {got['build']['seconds']:.2f} s (cpu {got['build']['cpu_main']:.2f} + "
              f"{got['build']['cpu_workers']:.2f}), floor {got['floor']['seconds']:.2f} s (cpu "
              f"{got['floor']['cpu_main']:.2f} + {got['floor']['cpu_workers']:.2f}), ratio {got['ratio']:.2f}, "
              f"load {got['build']['load']}", file=sys.stderr, flush=True)
    assert report is not None
    builds = [r["build"]["seconds"] for r in rounds]
    fs = [r["floor"]["seconds"] for r in rounds]
    ratios = [r["ratio"] for r in rounds]
    out = {"records": report.records, "seconds": round(report.seconds, 2), "records_per_s": round(report.rate),
           "tokens": report.tokens, "generate_seconds": round(generated, 2),
           "build_peak_rss_mib": {"main": peak.main, "largest_worker": peak.worker}}
    if per_token is not None:
        out["store_bytes_per_token"] = per_token
        out["partitions"] = partitions
    out["build_seconds_min_median"] = [round(min(builds), 2), round(statistics.median(builds), 2)]
    out["rw_floor_seconds_min_median"] = [round(min(fs), 2), round(statistics.median(fs), 2)]
    out["rw_floor_records"] = rounds[0]["floor"]["records"]
    out["build_records_per_s_median"] = round(report.records / statistics.median(builds))
    out["share_of_rw_floor_min_median"] = [round(min(ratios), 2), round(statistics.median(ratios), 2)]
    out["rounds"] = rounds
    return out


def micro() -> dict:
    key = ServerKey.derive(SEED, 1)
    ids = [r.id_number for r in synthetic_residents(4096, seed=2)]
    out: dict = {"evaluate_batch_tokens_per_s": {}}
    for size in (4, 64, 4096):
        state = oprf.blind(ids[:size])
        reps = max(1, 8192 // size)
        t = time.perf_counter()
        for _ in range(reps):
            key.evaluate_batch(state.blinded)
        out["evaluate_batch_tokens_per_s"][size] = round(size * reps / (time.perf_counter() - t))
    for size in (64, 4096):
        reps = max(1, 4096 // size)
        tb = tf = 0.0
        for _ in range(reps):
            batch = ids[:size]
            t = time.perf_counter()
            state = oprf.blind(batch)
            tb += time.perf_counter() - t
            elements, proof = key.evaluate_batch(state.blinded)
            t = time.perf_counter()
            oprf.finalize(state, elements, proof, key.public_key_bytes)
            tf += time.perf_counter() - t
        out[f"hub_blind_us_per_token_batch_{size}"] = round(tb / (size * reps) * 1e6, 1)
        out[f"hub_verify_finalize_us_per_token_batch_{size}"] = round(tf / (size * reps) * 1e6, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--residents", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only (e.g. for 10^6 residents)")
    ap.add_argument("--pg-partitions", type=int, default=0,
                    help="PostgreSQL token index partitioned by token prefix into N (0: one table)")
    ap.add_argument("--reps", type=int, default=3, help="builds and read/evaluate/write floors, interleaved")
    ap.add_argument("--warmup", type=int, default=1, help="untimed build + floor pairs before the timed rounds")
    ap.add_argument("--no-micro", action="store_true", help="skip the pseudonym micro-benchmarks")
    args = ap.parse_args(argv)

    res: dict = {"residents": args.residents, "workers": args.workers, "cpus": os.cpu_count(),
                 "python": platform.python_version(), "loadavg_before": os.getloadavg()[0]}
    # The floor is measured again right before each build: on a shared machine the load
    # drifts, and a build is compared with the floor of its own minute.
    floor_ids = [r.id_number for r in synthetic_residents(min(args.residents, 100_000), seed=3)]
    res["floor_tokens_per_s"] = round(floor(floor_ids, args.workers))
    res["floor_inline_tokens_per_s"] = round(floor(floor_ids[:20_000], 0))
    with tempfile.TemporaryDirectory(prefix="hedui-bench-") as d:
        tmp = Path(d)
        if not args.no_sqlite:
            sqlite_floor = floor(floor_ids, args.workers)
            res["sqlite"] = build(f"sqlite:///{tmp / 'dept.db'}", sqlite_url(tmp / "node.db"), args.residents,
                                  args.workers, tmp, args.reps, warmup=args.warmup)
        if not args.no_postgres:
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            names = [f"hedui_bench_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("src", "store")]
            try:
                with admin.connect() as c:
                    for n in names:
                        c.execute(text(f'CREATE DATABASE "{n}"'))
                base = PG_ADMIN.rsplit("/", 1)[0]
                pg_floor = floor(floor_ids, args.workers)
                res["postgres"] = build(f"{base}/{names[0]}", f"{base}/{names[1]}", args.residents, args.workers, tmp,
                                        args.reps, args.pg_partitions, args.warmup)
            finally:
                with admin.connect() as c:
                    for n in names:
                        c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": n})
                        c.execute(text(f'DROP DATABASE IF EXISTS "{n}"'))
                admin.dispose()
        if "sqlite" in res:
            res["sqlite"]["floor_tokens_per_s"] = round(sqlite_floor)
        if "postgres" in res:
            res["postgres"]["floor_tokens_per_s"] = round(pg_floor)
    for kind in ("sqlite", "postgres"):
        if kind in res:
            res[kind]["share_of_floor"] = round(res[kind]["records_per_s"] / res[kind]["floor_tokens_per_s"], 2)
    if not args.no_micro:
        res["micro"] = micro()
    res["loadavg_after"] = os.getloadavg()[0]
    # Peak resident memory over the whole run (Linux ru_maxrss is in KiB: data generation and
    # floors included): this process and the largest child that ended. The build's own peak
    # is each store's build_peak_rss_mib (PeakRss).
    res["peak_rss_mib_main"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    res["peak_rss_mib_largest_worker"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)

    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console(width=110)
    t = Table(title=f"Token index build, {args.residents:,} residents, {args.workers} token workers "
                    f"({res['cpus']} CPUs, load {res['loadavg_before']:.1f} → {res['loadavg_after']:.1f}); "
                    "floor = bare F(k, id) rate with as many processes, measured just before")
    t.add_column("", no_wrap=True)
    for col in ("records", "s", "records/s", "floor/s", "÷ floor", "build s min/med", "r/e/w floor s min/med",
                "÷ r/e/w floor min/med"):
        t.add_column(col, justify="right")
    for kind in ("sqlite", "postgres"):
        if kind in res:
            r = res[kind]
            t.add_row(f"build, {kind}", f"{r['records']:,}", f"{r['seconds']}", f"{r['records_per_s']:,}",
                      f"{r['floor_tokens_per_s']:,}", f"{r['share_of_floor']:.2f}",
                      "/".join(map(str, r["build_seconds_min_median"])), "/".join(map(str, r["rw_floor_seconds_min_median"])),
                      "/".join(map(str, r["share_of_rw_floor_min_median"])))
    con.print(t)
    print(f"peak memory: main process {res['peak_rss_mib_main']} MiB, largest worker {res['peak_rss_mib_largest_worker']} MiB")
    if "micro" not in res:
        return 0
    m = res["micro"]
    t2 = Table(title="Pseudonym crypto, one process")
    t2.add_column("measure")
    t2.add_column("value", justify="right")
    t2.add_row(f"F(k, id) with {args.workers} processes (floor, at start)", f"{res['floor_tokens_per_s']:,} tokens/s")
    t2.add_row("F(k, id) inline (token index path)", f"{res['floor_inline_tokens_per_s']:,} tokens/s")
    for size, rate in m["evaluate_batch_tokens_per_s"].items():
        t2.add_row(f"provider evaluate_batch, batch {size}", f"{rate:,} tokens/s")
    for size in (64, 4096):
        t2.add_row(f"hub blind, batch {size}", f"{m[f'hub_blind_us_per_token_batch_{size}']} µs/token")
        t2.add_row(f"hub verify + finalise, batch {size}", f"{m[f'hub_verify_finalize_us_per_token_batch_{size}']} µs/token")
    con.print(t2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
