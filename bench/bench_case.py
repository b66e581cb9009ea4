"""Issue 5 benchmark: household verification cases against 8 provider nodes on loopback.

Hedui path: a 4-member household case run by the hub — blind, Evaluate (batched VOPRF with
DLEQ proof) and verify at each provider, then one signed Lookup per provider with policy,
replay guard, quota and audit on both sides, all over mTLS — versus a baseline that performs
the same lookups (same tokens, same index, same field derivation) as plaintext gRPC calls
with no OPRF, signing, policy or audit, measured in the same run. Every provider runs as
its own process (issue 16 item 5, deployment shape = benchmark shape): Hedui's as ``hedui node
serve`` (node/testbed/procs.py), the floor's and the bare baseline's as one server process per
provider; the hub side of all three runs in this process (as ``hedui case run`` or the
console runs beside a hub node), so all paths share the 2 cores alike. The third path is the case floor
(``bench/floor_case.py``): the same protocol (same crypto, same rpcs over mTLS, signed
answers) with one commit per side per exchange and nothing else. The three paths alternate
in ``--reps`` rounds per concurrency level after a warm-up; rates min/median per round, and
the median CPU per case of this process (the hub's side) for Hedui's rounds and the floor's.

The 8 providers serve the same synthetic department data (tax, ~0.8 records per resident):
one index of N residents is built once and copied to the 8 provider stores with the same
OPRF key (building 8 identical indexes would only cost time; the lookup cost does not depend
on whose key made the tokens).

    python bench/bench_case.py [--residents 100000] [--cases 64] [--concurrency 1,8,32] [--reps 3] [--admit 32] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, report
from floor_case import FloorFederation

from hedui.adapters.synthetic import resident
from hedui.common.periods import Month, parse_month
from hedui.keys import dsse
from hedui.keys.directory import ROLE_ANSWERS
from hedui.keys.keyfile import PASSPHRASE_ENV, load_secret
from hedui.keys.oprf import ServerKey
from hedui.node.runtime import Runtime
from hedui.node.server import server_options
from hedui.node.store.db import open_engine
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.testbed import provider as testbed_provider
from hedui.node.testbed.procs import NodeProcess
from hedui.node.verification import consent
from hedui.node.verification.answer import derive, window_of
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.catalogue import load_catalogue
from hedui.node.verification.index import facts_for_tokens
from hedui.node.verification.provider import OPRF_SEED_LABEL
from hedui.v1 import common_pb2, lookup_pb2, lookup_pb2_grpc

PROVIDERS = [f"p{i}" for i in range(1, 9)]
SEED = 7
REFERENCE_MONTH = ""   # the month the hub's cases are for (set in main from the hub's clock)


class _BareLookup(lookup_pb2_grpc.LookupServiceServicer):
    """The baseline: same index, same derivation, nothing else."""

    def __init__(self, url: str, catalogue) -> None:
        self.engine = open_engine(url)
        self.cat = catalogue.by_name()

    def Lookup(self, request, context):
        facts = facts_for_tokens(self.engine, request.epoch, list(request.tokens))
        ans = lookup_pb2.LookupAnswer(provider="bare")
        ref = parse_month(request.reference_month)   # the same windows as the provider's
        for tok in request.tokens:
            have = facts.get(bytes(tok))
            ta = ans.members.add(token=tok, found=have is not None)
            for q in request.queries:
                fd = self.cat[q.field]
                fa = ta.fields.add(field=q.field)
                if have is not None:
                    d = derive(fd, have, window_of(fd, ref))
                    fa.state, fa.present, fa.value, fa.as_of = d.state, d.present, d.value, d.as_of
        return lookup_pb2.LookupResponse(answer=common_pb2.Envelope(payload_type=dsse.ANSWER, payload=ans.SerializeToString()))


#: Calls each node admits at once (``[node] max_concurrent_rpcs`` and the hub's share of them;
#: 0: the testbed's default of 8, a share of 6). The floor's servers never shed, so with the
#: default a node refuses part of 8 or 32 concurrent cases at once (OVERLOADED), those cases
#: end incomplete and cost less than a complete one: the rates would not compare like with
#: like. With 32 no case is shed at the measured levels (the extra handler threads are a cost
#: on Hedui's side, not a help).
ADMIT = 32


def _setup(root: Path, residents: int):
    for code in PROVIDERS:
        testbed_provider.DEPARTMENT_OF[code] = "tax"
        testbed_provider.CATALOGUES[code] = testbed_provider.CATALOGUES["tax"]
    admit = {"node": {"max_concurrent_rpcs": ADMIT, "max_concurrent_per_caller": ADMIT}} if ADMIT else {}
    members = ([MemberPlan("hub", "hub", ["hub"], extra_config=admit)]
               + [MemberPlan(c, c, ["provider"], extra_config=admit) for c in PROVIDERS])
    tb = Testbed(root / "fed", members, residents=residents, data_seed=SEED)
    # Generate the department data once (p1), then share it: the hook writes per member, so
    # give it a tiny population for p2..p8 and copy p1's files over afterwards.
    tb.create()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    t0 = time.perf_counter()
    built = tb.build_indexes(["p1"], workers=os.cpu_count() or 1)
    index_s = time.perf_counter() - t0
    p1 = tb.member_dir("p1")
    for code in PROVIDERS[1:]:
        d = tb.member_dir(code)
        for name in ("oprf-epoch1.seed", "node.db", "dept.db"):
            shutil.copyfile(p1 / name, d / name)
        for extra in ("node.db-wal", "node.db-shm"):
            (d / extra).unlink(missing_ok=True)
    seed = load_secret(p1 / "oprf-epoch1.seed", tb.passphrase.encode(), label=OPRF_SEED_LABEL)
    pub = ServerKey.derive(seed, 1).public_key_bytes
    for m in tb.members:
        if m.code in PROVIDERS:
            m.oprf_public = pub
    tb.sign_directory()
    return tb, built["p1"], index_s, ServerKey.derive(seed, 1)


@dataclass
class Federation:
    """:func:`_setup`'s federation running as deployed (each provider a ``hedui node serve``
    process), the hub runtime in this process and, when asked for, the case floor over the
    same stores: what the CPU and phase benchmarks measure."""

    tb: Testbed
    nodes: list[NodeProcess]
    hub: Runtime
    floor: FloorFederation | None


@contextlib.contextmanager
def federation(root: Path, residents: int, *, floor: bool = False) -> Iterator[Federation]:
    """Starts :class:`Federation` under ``root`` and stops all of it on exit (the floor's
    provider runtimes and processes included)."""
    tb, _, _, key = _setup(root, residents)
    env = tb.env()
    nodes = [NodeProcess(tb.config_path(c), env, log=root / f"{c}.log") for c in PROVIDERS]
    prov_rts: list[Runtime] = []
    fed = None
    try:
        for n in nodes:
            n.start()
        hub = Runtime.open(tb.config_path("hub"))
        fed = Federation(tb, nodes, hub, None)
        if floor:
            global REFERENCE_MONTH
            REFERENCE_MONTH = str(Month.of(hub.clock.today()).plus(-1))   # the hub's default
            prov_rts = [Runtime.open(tb.config_path(c)) for c in PROVIDERS]
            fed.floor = FloorFederation(hub, prov_rts, key, load_catalogue(tb.member_dir("p1") / "fields.toml"),
                                        "income_last_year", REFERENCE_MONTH, configs=[tb.config_path(c) for c in PROVIDERS], env=env)
        yield fed
    finally:
        if fed is not None and fed.floor is not None:
            fed.floor.close()
        for rt in prov_rts:
            rt.close()
        if fed is not None:
            fed.hub.close()
        for n in nodes:
            n.stop()


def _households(n_cases: int, residents: int) -> list[list[str]]:
    rng = random.Random(42)
    return [[resident(rng.randint(1, residents), SEED).id_number for _ in range(4)] for _ in range(n_cases)]


def _cpu() -> float:
    """This process's user + system CPU seconds (every thread): the hub side of every path runs here."""
    return time.process_time()


def _run_hedui(hub, households, conc: int, cpu: list[float] | None = None) -> tuple[list[float], float, int]:
    """``cpu``: gets this process's CPU seconds per case of the timed part (opening excluded)."""
    refs = [open_case(hub, [(i, "m") for i in dict.fromkeys(h)], purpose="dibao",
                      # one authorisation per household (issue 18 refuses a scan reused for another member set)
                      consent_digest=consent_digest_of(os.urandom(16)), operator="bench", region="370304") for h in households]
    lat: list[float] = []
    incomplete = 0
    lock = threading.Lock()

    def one(ref):
        nonlocal incomplete
        t = time.perf_counter()
        r = run_case(hub, ref, timeout=60)
        with lock:
            lat.append(time.perf_counter() - t)
            incomplete += not r.complete

    t0, c0 = time.perf_counter(), _cpu()
    with ThreadPoolExecutor(max_workers=conc) as pool:
        list(pool.map(one, refs))
    if cpu is not None:
        cpu.append((_cpu() - c0) / len(refs))
    return lat, len(refs) / (time.perf_counter() - t0), incomplete


def _bare_context(hub, n: int, case_ref: str) -> common_pb2.RequestContext:
    """What the hub's context carries since issue 18: its signed consent record for the case
    (and its revocation list), so the bare path puts the same bytes on the wire and pays the
    same signing cost per case as run_case does (its revocation list as run_case's: one signed
    list reused while unchanged, consent.current_revocations)."""
    # One authorisation per case, as run_case has (a one-off authorisation serves one case, issue 18c).
    ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref=case_ref, consent_digest=consent_digest_of(case_ref.encode()),
                                    operator="bench", request_id=os.urandom(16))
    signer, now = hub.signer_for(ROLE_ANSWERS), hub.clock.now()
    ctx.consent.CopyFrom(consent.issue_for_context(signer, hub.member, ctx, members=n, issued_at=now))
    ctx.revocations.CopyFrom(consent.current_revocations(signer, hub.member, [], now))
    return ctx


def _run_bare(stubs, key: ServerKey, households, conc: int, hub) -> tuple[list[float], float]:
    lat: list[float] = []
    lock = threading.Lock()
    per_provider = ThreadPoolExecutor(max_workers=len(stubs) * conc)

    def one(h):
        t = time.perf_counter()
        tokens = [key.token(i) for i in dict.fromkeys(h)]
        req = lookup_pb2.LookupRequest(context=_bare_context(hub, len(tokens), f"BARE-{os.urandom(4).hex()}"), epoch=1, tokens=tokens,
                                       queries=[lookup_pb2.FieldQuery(field="income_last_year")], reference_month=REFERENCE_MONTH)
        list(per_provider.map(lambda s: s.Lookup(req, timeout=60), stubs))
        with lock:
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=conc) as pool:
        list(pool.map(one, households))
    rate = len(households) / (time.perf_counter() - t0)
    per_provider.shutdown()
    return lat, rate


def _serve_bare(url: str, fields: str) -> None:
    """``bench_case.py --serve-bare STORE_URL fields.toml``: the bare baseline of one provider
    in its own process; prints its port, serves until stdin closes."""
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=server_options())
    lookup_pb2_grpc.add_LookupServiceServicer_to_server(_BareLookup(url, load_catalogue(Path(fields))), s)
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    print(port, flush=True)
    sys.stdin.read()
    s.stop(0)


def main() -> None:
    if sys.argv[1:2] == ["--serve-bare"]:
        _serve_bare(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=100_000)
    ap.add_argument("--cases", type=int, default=64, help="cases per concurrency level and path")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds per level (hedui, floor, bare)")
    ap.add_argument("--admit", type=int, default=ADMIT, help="calls each node admits at once (0: the testbed default, 8)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    globals()["ADMIT"] = a.admit
    levels = [int(x) for x in a.concurrency.split(",")]
    with tempfile.TemporaryDirectory(dir=os.environ.get("HEDUI_BENCH_TMP")) as d:
        tb, records, index_s, key = _setup(Path(d), a.residents)
        env = tb.env()
        nodes = [NodeProcess(tb.config_path(c), env, log=Path(d) / f"{c}.log") for c in PROVIDERS]
        for n in nodes:
            n.start()
        hub_rt = Runtime.open(tb.config_path("hub"))
        prov_rts = [Runtime.open(tb.config_path(c)) for c in PROVIDERS]
        global REFERENCE_MONTH
        REFERENCE_MONTH = str(Month.of(hub_rt.clock.today()).plus(-1))   # the hub's default
        cat = load_catalogue(tb.member_dir("p1") / "fields.toml")
        bare_procs, stubs, channels = [], [], []
        for code, rt in zip(PROVIDERS, prov_rts, strict=True):
            proc = subprocess.Popen([sys.executable, __file__, "--serve-bare", rt.config.store_url(),
                                     str(tb.member_dir(code) / "fields.toml")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env={**os.environ, **env})
            bare_procs.append(proc)
            ch = grpc.insecure_channel(f"127.0.0.1:{int(proc.stdout.readline())}")  # type: ignore[union-attr]
            channels.append(ch)
            stubs.append(lookup_pb2_grpc.LookupServiceStub(ch))
        floor = FloorFederation(hub_rt, prov_rts, key, cat, "income_last_year", REFERENCE_MONTH,
                                configs=[tb.config_path(c) for c in PROVIDERS], env=env)
        rows = []
        try:
            warm = _households(4, a.residents)
            _run_hedui(hub_rt, warm, 1)  # warm up channels and caches
            floor.run(warm, 1)
            _run_bare(stubs, key, warm, 1, hub_rt)
            for conc in levels:
                hh = _households(a.cases, a.residents)
                h_lat: list[float] = []
                f_lat: list[float] = []
                b_lat: list[float] = []
                h_rates, f_rates, b_rates = [], [], []
                h_cpu: list[float] = []
                f_cpu: list[float] = []
                inc = 0
                # Interleaved rounds: hedui, floor, bare, hedui, floor, bare, ...
                for _ in range(a.reps):
                    lat, rate, i = _run_hedui(hub_rt, hh, conc, h_cpu)
                    h_lat += lat
                    h_rates.append(rate)
                    inc += i
                    c0 = _cpu()
                    lat, rate = floor.run(hh, conc)
                    f_cpu.append((_cpu() - c0) / len(hh))
                    f_lat += lat
                    f_rates.append(rate)
                    lat, rate = _run_bare(stubs, key, hh, conc, hub_rt)
                    b_lat += lat
                    b_rates.append(rate)
                vs_floor = [h / f for h, f in zip(h_rates, f_rates)]
                loss = [b / h for h, b in zip(h_rates, b_rates)]
                rows.append({
                    "concurrency": conc,
                    "hedui p50 ms": percentile(h_lat, 50) * 1e3, "hedui p99 ms": percentile(h_lat, 99) * 1e3,
                    "hedui cases/s best": max(h_rates), "hedui cases/s median": statistics.median(h_rates),
                    "floor p50 ms": percentile(f_lat, 50) * 1e3, "floor cases/s median": statistics.median(f_rates),
                    "bare p50 ms": percentile(b_lat, 50) * 1e3, "bare cases/s median": statistics.median(b_rates),
                    "hedui ÷ floor min": min(vs_floor), "hedui ÷ floor median": statistics.median(vs_floor),
                    "loss vs bare × min": min(loss), "loss vs bare × median": statistics.median(loss),
                    # This process's CPU per case (the hub's side; its background loops included).
                    "hedui hub CPU ms/case median": statistics.median(h_cpu) * 1e3,
                    "floor hub CPU ms/case median": statistics.median(f_cpu) * 1e3,
                    "incomplete": inc,
                })
        finally:
            floor.close()
            for ch in channels:
                ch.close()
            for proc in bare_procs:
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(30)
            for rt in [hub_rt, *prov_rts]:
                rt.close()
            for n in nodes:
                n.stop()
        report("bench_case (4-member household × 8 providers)", rows, json_out=a.json, extra={
            "indexed residents per provider": f"{a.residents:,} ({records:,} records; index built in {index_s:.1f} s)",
            "cases per level": a.cases,
        })


if __name__ == "__main__":
    main()
