"""Issue 16: a provider's CPU per call, Hedui's servicers against ``floor_case``'s, in one process.

What only moves the case ÷ floor ratio is the work Hedui's provider does and the floor's does
not (audit, policy and quota, replay cache, consent, the rpc layer, transactions). This
measures exactly that, without gRPC, TLS or the hub: one provider runtime of the bench
federation (``bench_case.py``'s set-up, its store and index), its ``PseudonymServicer.Evaluate``
and ``LookupServicer.Lookup`` called directly with a stand-in servicer context (the hub's
certificate, a ``traceparent``) — the whole method as served, from ``node/rpc.py``'s wrapper
on — against ``floor_case._Provider``'s two methods on the same runtime and store. Requests
are built outside the timing as the hub builds them (the hub's signed consent record and
revocation list as the tree's hub sends it, blinded elements, tokens). One thread; ``--cases`` exchange pairs
per round, Hedui and the floor alternated ``--reps`` times after a warm-up; reported: µs of
this process's CPU per Evaluate + Lookup pair (min / median) and their difference, and per
method (Evaluate and Lookup apart, Hedui's and the floor's) the CPU and wall µs per call
(min / median of the rounds' means): wall minus CPU is what a call waits for (the store's
syncs, the other processes on the cores).

    python bench/provider_calls.py [--residents 3000] [--cases 300] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_case as bc
from floor_case import _md as floor_tables
from floor_case import _Provider

from hedui.common.periods import Month
from hedui.keys import oprf
from hedui.keys.directory import ROLE_ANSWERS
from hedui.node.runtime import Runtime
from hedui.node.verification import consent
from hedui.node.verification.catalogue import load_catalogue
from hedui.node.verification.service import LookupServicer, PseudonymServicer
from hedui.v1 import lookup_pb2, pseudonym_pb2


class _Context:
    """What the servicers ask of gRPC's servicer context: the peer's certificate, the call's
    metadata; an abort raises (no call here is meant to be refused)."""

    def __init__(self, pem: bytes) -> None:
        self._auth = {"x509_pem_cert": [pem]}
        self._md = (("traceparent", f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"),)

    def auth_context(self):
        return self._auth

    def invocation_metadata(self):
        return self._md

    def abort(self, code, details):
        raise RuntimeError(f"aborted: {code} {details}")


def _requests(hub, key, households: list[list[str]]) -> list[tuple]:
    out = []
    for h in households:
        ids = list(dict.fromkeys(h))
        ctx = bc._bare_context(hub, len(ids), f"PC-{os.urandom(6).hex()}")
        if hasattr(consent, "current_revocations"):   # the hub's list as the tree's hub sends it
            ctx.revocations.CopyFrom(consent.current_revocations(hub.signer_for(ROLE_ANSWERS), hub.member, [], hub.clock.now()))
        ev = pseudonym_pb2.EvaluateRequest(context=ctx, epoch=1, blinded_elements=oprf.blind(ids).blinded)
        lctx = type(ctx)()
        lctx.CopyFrom(ctx)
        lctx.request_id = os.urandom(16)
        lk = lookup_pb2.LookupRequest(context=lctx, epoch=1, tokens=[key.token(i) for i in ids], reference_month=bc.REFERENCE_MONTH,
                                      queries=[lookup_pb2.FieldQuery(field="income_last_year")])
        out.append((ev, lk))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=3000)
    ap.add_argument("--cases", type=int, default=300, help="exchange pairs per round")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cprofile", default="", help="after the rounds, profile one Hedui round (cProfile) into this file")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tb, _, _, key = bc._setup(Path(d), a.residents)
        hub = Runtime.open(tb.config_path("hub"))
        rt = Runtime.open(tb.config_path("p1"))
        try:
            bc.REFERENCE_MONTH = str(Month.of(hub.clock.today()).plus(-1))
            ev_svc, lk_svc = PseudonymServicer(rt), LookupServicer(rt)
            floor_tables.create_all(rt.engine)
            floor = _Provider(rt, key, load_catalogue(tb.member_dir("p1") / "fields.toml"))
            ctx = _Context(hub.tls_cert_pem)

            split: dict[str, list[float]] = {}   # path.method -> [cpu s, wall s] summed over the round

            def timed(key: str, fn, req):
                c0, w0 = time.process_time(), time.perf_counter()
                out = fn(req, ctx)
                acc = split.setdefault(key, [0.0, 0.0])
                acc[0] += time.process_time() - c0
                acc[1] += time.perf_counter() - w0
                return out

            def hedui(reqs) -> None:
                for ev, lk in reqs:
                    r = timed("hedui.Evaluate", ev_svc.Evaluate, ev)
                    assert len(r.evaluated_elements) == len(ev.blinded_elements)
                    assert timed("hedui.Lookup", lk_svc.Lookup, lk).answer.payload

            def floor_path(reqs) -> None:
                for ev, lk in reqs:
                    timed("floor.Evaluate", floor.Evaluate, ev)
                    assert timed("floor.Lookup", floor.Lookup, lk).answer.payload

            paths = {"hedui": hedui, "floor": floor_path}
            for fn in paths.values():   # warm-up
                fn(_requests(hub, key, bc._households(20, a.residents)))
            cpu: dict[str, list[float]] = {k: [] for k in paths}
            per_call: dict[str, list[tuple[float, float]]] = {}
            for rep in range(a.reps):
                for name in ("hedui", "floor") if rep % 2 == 0 else ("floor", "hedui"):
                    reqs = _requests(hub, key, bc._households(a.cases, a.residents))
                    split.clear()
                    c0 = time.process_time()
                    paths[name](reqs)
                    cpu[name].append((time.process_time() - c0) / a.cases * 1e6)
                    for k, (c, w) in split.items():
                        per_call.setdefault(k, []).append((c / a.cases * 1e6, w / a.cases * 1e6))
            for name, xs in cpu.items():
                print(f"{name}: {min(xs):.0f} / {statistics.median(xs):.0f} µs CPU per Evaluate + Lookup "
                      f"(min / median of {len(xs)}), rounds {', '.join(f'{x:.0f}' for x in xs)}")
            for k, xs in sorted(per_call.items()):
                cs, ws = [c for c, _ in xs], [w for _, w in xs]
                print(f"  {k}: CPU {min(cs):.0f} / {statistics.median(cs):.0f} µs, wall {min(ws):.0f} / "
                      f"{statistics.median(ws):.0f} µs per call (min / median)")
            h, f = statistics.median(cpu["hedui"]), statistics.median(cpu["floor"])
            print(f"Hedui-only: {h - f:.0f} µs per pair (median), hedui ÷ floor CPU {h / f:.2f}")
            if a.cprofile:
                import cProfile

                reqs = _requests(hub, key, bc._households(a.cases, a.residents))
                prof = cProfile.Profile(time.process_time)
                prof.runcall(hedui, reqs)
                prof.dump_stats(a.cprofile)
        finally:
            rt.close()
            hub.close()


if __name__ == "__main__":
    main()
