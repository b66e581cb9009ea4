"""Issue 16: where the hub's CPU per case goes, phase by phase (thread CPU, not wall time).

The set-up of ``bench_case.py`` (8 ``hedui node serve`` provider processes, the hub runtime in
this process). Each of ``run_case``'s pieces is wrapped to add up the CPU time of the thread
that runs it (``time.thread_time``: waiting on the GIL, a lock or the network costs none), so
the figures hold at any concurrency and do not move with the other processes' load. Also
this process's whole CPU per case (every thread: gRPC's, the group committer's, background
loops) beside the floor's (``--floor``), as ``provider_cpu.py`` reports it.

    python bench/hub_phases.py [--residents 3000] [--cases 48] [--concurrency 1] [--reps 3] [--floor]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_case as bc
from floor_case import FloorFederation

_cpu: dict[str, float] = collections.defaultdict(float)
_calls: dict[str, int] = collections.defaultdict(int)
_lock = threading.Lock()
_local = threading.local()


def _wrap(owner, name: str, label: str) -> None:
    """Replaces ``owner.name`` by a wrapper adding its thread CPU to ``label`` (nested
    wrapped calls are counted in both: each label is inclusive)."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*a, **kw):
        t = time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            d = time.thread_time() - t
            with _lock:
                _cpu[label] += d
                _calls[label] += 1

    setattr(owner, name, timed)


def _instrument() -> None:
    from hedui.keys import oprf
    from hedui.node.crosscheck import fetch
    from hedui.node.verification import cases, consent, report

    _wrap(cases, "run_case", "run_case (caller thread)")
    _wrap(cases, "record_directory", "  record_directory")
    _wrap(report, "load_case_on", "  head: load_case_on")
    _wrap(consent, "revocations_in", "  head: revocations_in")
    _wrap(fetch, "cached_digests", "  head: cached_digests")
    _wrap(consent, "context_fields_of", "  head: context_fields_of (consent record, list)")
    _wrap(cases, "_providers", "  head: _providers")
    _wrap(cases, "_ask_provider", "exchange: _ask_provider (all threads)")
    _wrap(oprf, "blind", "  exchange: oprf.blind")
    _wrap(oprf, "finalize", "  exchange: oprf.finalize")
    _wrap(cases, "_call", "  exchange: _call (grpc, 2 per exchange)")
    _wrap(cases, "filter_first", "  exchange: filter_first")
    _wrap(cases, "verify_answer", "  exchange: verify_answer")
    _wrap(consent, "check_binding", "  exchange: check_binding")
    _wrap(cases, "_observe_checkpoint", "  exchange: _observe_checkpoint")
    _wrap(consent, "consent_digest", "  exchange: consent_digest")
    _wrap(report, "conclusion_of", "  tail: conclusion_of")
    _wrap(cases, "_store_outcomes", "  tail: _store_outcomes")
    _wrap(cases, "open_case", "open_case (outside the timed part in bench_case)")
    from hedui.node.audit import log as audit_log
    from hedui.node.audit import merkle
    from hedui.node.store import group, raw
    from hedui.node.verification import reckon

    _wrap(report, "verified_answers", "    tail: verified_answers")
    _wrap(report, "sources_of", "    tail: sources_of")
    _wrap(report, "reckon", "    tail: reckon")
    _wrap(reckon, "_member_rows", "      tail: reckon._member_rows")
    _wrap(group.GroupCommit, "_commit", "    tail: GroupCommit._commit")
    _wrap(raw.Prepared, "run_many", "Prepared.run_many (anywhere)")
    _wrap(raw.Prepared, "run", "Prepared.run (anywhere)")
    _wrap(raw.Prepared, "rows", "Prepared.rows (anywhere)")
    _wrap(audit_log.AuditLog, "_lock_head", "      tail: audit _lock_head")
    _wrap(audit_log.AuditLog, "_write_nodes", "      tail: audit _write_nodes")
    _wrap(merkle, "leaf_hash", "      tail: merkle.leaf_hash")
    from hedui.node import client

    _wrap(client._LeanUnary, "_start", "  exchange: _LeanUnary._start (pin, traceparent)")
    _wrap(client._LeanUnary, "_count", "  exchange: _LeanUnary._count (metrics)")
    bc.run_case, bc.open_case = cases.run_case, cases.open_case   # bench_case imported them by name


def _instrument_late(hub) -> None:
    """Methods of the hub's own objects (instances made at start)."""
    _wrap(hub.audit, "prepare", "  exchange: audit.prepare (encode entries)")
    _wrap(hub.audit.log, "write_in", "    tail: audit write_in")


def _threads() -> dict[int, float]:
    """CPU seconds of each thread of this process, by thread id."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for t in Path("/proc/self/task").iterdir():
        try:
            f = (t / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(t.name)] = (int(f[11]) + int(f[12])) / tick
    return out


def _by_name(before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU per thread name (digits dropped: a pool's threads together) between two readings."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = collections.defaultdict(float)
    for tid, v in after.items():
        name = names.get(tid)
        if name is None:
            try:
                name = "(native) " + Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            except OSError:
                name = "(gone)"
        out[name.rstrip("0123456789_-")] += v - before.get(tid, 0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=3000)
    ap.add_argument("--cases", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--floor", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, bc.federation(Path(d), a.residents, floor=a.floor) as fed:
        hub, floor = fed.hub, fed.floor
        _instrument()
        _instrument_late(hub)
        if floor is not None:
            _wrap(FloorFederation, "_exchange", "exchange (all threads)")
            for ev, lk, _ in floor.peers:
                _wrap(ev, "Evaluate", "exchange: Evaluate call")
                _wrap(lk, "Lookup", "exchange: Lookup call")
            _wrap(FloorFederation, "run_case", "run_case (caller thread)")
        bc._run_hedui(hub, bc._households(16, a.residents), a.concurrency)   # warm-up
        if floor is not None:
            floor.run(bc._households(16, a.residents), a.concurrency)
        per_round: dict[str, list[float]] = collections.defaultdict(list)
        totals: list[tuple[float, float]] = []
        for rep in range(a.reps):
            _cpu.clear()
            _calls.clear()
            households = bc._households(a.cases, a.residents)
            cpu: list[float] = []
            th0 = _threads()
            bc._run_hedui(hub, households, a.concurrency, cpu)
            for k, v in _by_name(th0, _threads()).items():
                per_round["thread " + k].append(v / a.cases * 1e3)
            for k, v in _cpu.items():
                per_round[k].append(v / a.cases * 1e3)
            fcpu = float("nan")
            if floor is not None:
                _cpu.clear()
                th0 = _threads()
                c0 = time.process_time()
                floor.run(households, a.concurrency)
                fcpu = (time.process_time() - c0) / a.cases
                for k, v in _by_name(th0, _threads()).items():
                    per_round["floor thread " + k].append(v / a.cases * 1e3)
                for k, v in _cpu.items():
                    per_round["floor: " + k.strip()].append(v / a.cases * 1e3)
            totals.append((cpu[0] * 1e3, fcpu * 1e3))
            print(f"round {rep}: hub process {cpu[0] * 1e3:.2f} ms CPU/case (run only), floor {fcpu * 1e3:.2f}", flush=True)
        print(f"\nthread CPU per case, ms (median of {a.reps} rounds; min..max), concurrency {a.concurrency}, pid {os.getpid()}")
        for k in sorted(per_round, key=lambda k: list(_order()).index(k) if k in _order() else 99):
            v = per_round[k]
            print(f"{k:60s} {statistics.median(v):7.3f}  ({min(v):.3f}..{max(v):.3f})")
        h = [t[0] for t in totals]
        f = [t[1] for t in totals]
        print(f"{'hub process, run only':60s} {statistics.median(h):7.3f}  ({min(h):.3f}..{max(h):.3f})")
        if floor is not None:
            print(f"{'floor hub process':60s} {statistics.median(f):7.3f}  ({min(f):.3f}..{max(f):.3f})")


@functools.cache
def _order() -> tuple[str, ...]:
    return (
        "open_case (outside the timed part in bench_case)", "run_case (caller thread)", "  record_directory", "  head: load_case_on",
        "  head: revocations_in", "  head: cached_digests", "  head: context_fields_of (consent record, list)", "  head: _providers",
        "exchange: _ask_provider (all threads)", "  exchange: oprf.blind", "  exchange: oprf.finalize",
        "  exchange: _call (grpc, 2 per exchange)", "  exchange: filter_first", "  exchange: verify_answer",
        "  exchange: check_binding", "  exchange: consent_digest", "  exchange: _observe_checkpoint",
        "  exchange: audit.prepare (encode entries)", "  tail: conclusion_of", "    tail: verified_answers", "    tail: sources_of", "    tail: reckon",
        "      tail: reckon._member_rows", "  tail: _store_outcomes", "    tail: GroupCommit._commit", "    tail: audit write_in",
        "      tail: audit _lock_head", "      tail: merkle.leaf_hash", "      tail: audit _write_nodes",
    )


if __name__ == "__main__":
    main()
