"""Issue 13 benchmark: load shedding. A provider node (``hedui node serve`` in its own
process, loopback mTLS) under a burst of concurrent signed Lookups, with the call cap
(``[node] max_concurrent_rpcs``) versus without one (the cap set beyond the burst: calls queue
behind the handler threads, as before issue 13).

Three processes, so that no client's own overhead is charged to the server: the node; the
**load generator** (this script with ``--load-child``: the flooding hub, its own interpreter, so
its 1,000 futures and callbacks do not delay the measuring client); and the **probe** (this
process: a second hub calling one Lookup at a time). Per run: each client first measures its
unloaded p99 (sequential Lookups, after a warm-up), then the load — ``--mode burst``:
``--burst`` Lookups issued at once (the issue's scenario); ``--mode flood``: that many kept in
flight for ``--seconds``, refused ones retried after 100 ms — while the probe keeps calling.
Reported: the flooding hub's admitted calls' p99 against its own unloaded p99, how many were
refused with RESOURCE_EXHAUSTED and how quickly, and the probe's p99 under load against its
unloaded p99 (the latency a well-behaved caller sees beyond capacity; fairness). Baseline and
candidates are interleaved (B, C1, C2, B, ...), ``--runs`` each, min and median reported.

Server side too: the node runs under ``bench/_node_timeline.py``, which stamps every tagged call
when gRPC's polling thread takes it and when its handler enters, is admitted and leaves, so
each figure has a server-side twin (taken → left, unloaded calls measured the same way) and
the wait before the polling thread (sent → taken) is reported on its own.

    python bench/bench_shedding.py [--mode burst|flood] [--burst 1000] [--runs 3] [--caps 8,2]
        [--switch-ms 5,1] [--no-uncapped] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _node_timeline
from _common import percentile, report

from hedui.adapters.synthetic import resident
from hedui.common.periods import Month
from hedui.keys import oprf
from hedui.keys.directory import ROLE_ANSWERS
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import PeerClient
from hedui.node.runtime import Runtime
from hedui.node.testbed import MemberPlan, Testbed, default_policy
from hedui.node.verification import consent
from hedui.v1 import common_pb2, lookup_pb2, pseudonym_pb2

SEED = 13


#: ``--processes`` value for the Go front spike (bench/go_front/): a Go proxy in front of one
#: Python worker process.
GO = -1
#: The same with the Go runtime on one core (GOMAXPROCS=1): no scheduler threads spinning for
#: work on the 2 cores the worker and the clients share.
GO1 = -2
_GOS = {"go": GO, "go1": GO1}
_GO_FRONT = Path(__file__).resolve().parent / "go_front" / "hedui-go-front"
_ENDPOINTS: dict[Path, str] = {}
#: ``--pin``: the CPUs of the node's processes (and everything they start); the clients run on
#: the others. Empty: no pinning, every process on every core.
_NODE_CPUS: set[int] = set()


def _on_node_cores() -> None:
    """In a node process just forked, before it runs: keep it (and its workers, which inherit
    the mask) on the node's CPUs."""
    if _NODE_CPUS:
        os.sched_setaffinity(0, _NODE_CPUS)


def _go_front(tb: Testbed, cfg: Path, endpoint: str, cap: int, per_caller: int, timeline: Path,
              binary: Path, one_core: bool = False) -> subprocess.Popen:
    """The Go front spike (bench/go_front/README.md) on the node's endpoint, in front of the
    worker of the Python front just started (``worker_processes = 1``, its own front moved to
    another port and left idle): the same worker, reached through a compiled front. The TLS key
    goes to it decrypted on its stdin, never to disk (keys/ca.py ``key_pem``)."""
    from hedui.keys.ca import key_pem, load_tls_key
    from hedui.node.config import load_config
    from hedui.node.front.proxy import socket_folder

    c = load_config(cfg)
    key = key_pem(load_tls_key(c.path(c.tls.key), tb.passphrase.encode()))
    g = subprocess.Popen([str(binary), "-listen", endpoint, "-cert", str(c.path(c.tls.cert)), "-key", "/dev/stdin",
                          "-ca", str(c.path(c.tls.ca)), "-worker", str(socket_folder(cfg) / "w0.sock"), "-cap", str(cap),
                          "-per-caller", str(per_caller), "-timeline", f"{timeline}.wgo",
                          *os.environ.get("BENCH_GO_ARGS", "").split()],   # e.g. -cpuprofile FILE
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=_on_node_cores,
                         env={**os.environ, **({"GOMAXPROCS": "1"} if one_core else {})},
                         stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL)
    assert g.stdin is not None and g.stdout is not None
    g.stdin.write(key.decode())
    g.stdin.close()
    line = g.stdout.readline()
    if "serving on" not in line:
        g.kill()
        raise SystemExit(f"the Go front did not start: {line!r}")
    return g


def _serve(tb: Testbed, cap: int, workers: int, timeline: Path, switch_ms: float | None = None,
           processes: int = 0, per_caller: int = 0, go_front: Path = _GO_FRONT) -> list[subprocess.Popen]:
    """The node's processes, the one clients reach first (and to stop first) first."""
    cfg = tb.config_path("tax")
    # The directory's endpoint, as the testbed wrote it first (a Go run moves the listen away).
    endpoint = _ENDPOINTS.setdefault(cfg, re.findall(r'\[node\][^\[]*?\nlisten = "([^"]+)"', cfg.read_text())[0])
    text = re.sub(r"\n(max_concurrent_rpcs|switch_interval_ms|worker_processes|max_concurrent_per_caller) = [\d.]+", "",
                  cfg.read_text())
    text = text.replace("[node]\n", f"[node]\nmax_concurrent_rpcs = {cap}\n", 1)
    if per_caller:   # a caller's share of the cap (node/admission.py; 0: its default)
        text = text.replace("[node]\n", f"[node]\nmax_concurrent_per_caller = {per_caller}\n", 1)
    if processes:  # a front and its worker processes (node/front/; after issue 13's third pass)
        text = text.replace("[node]\n", f"[node]\nworker_processes = {1 if processes in (GO, GO1) else processes}\n", 1)
    # With the Go front, it takes the node's endpoint; the Python front, idle, another port.
    text = re.sub(r'(\[node\][^\[]*?\nlisten = )"[^"]+"', rf'\1"{"127.0.0.1:0" if processes in (GO, GO1) else endpoint}"', text, count=1)
    if switch_ms is not None:  # only where the node knows the setting (after issue 13's shedding pass)
        text = text.replace("[node]\n", f"[node]\nswitch_interval_ms = {switch_ms}\n", 1)
    text = re.sub(r"workers = \d+", f"workers = {workers}", text)
    cfg.write_text(text)
    env = {**os.environ, PASSPHRASE_ENV: tb.passphrase, "HEDUI_BENCH_TIMELINE": str(timeline)}
    # `hedui node serve` with per-call stamps for the server-side figures (bench/_node_timeline.py).
    p = subprocess.Popen([sys.executable, _node_timeline.__file__, "node", "serve", "--config", str(cfg)],
                         preexec_fn=_on_node_cores, stdout=subprocess.PIPE, env=env, text=True,
                         stderr=subprocess.PIPE if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL)
    line = p.stdout.readline() if p.stdout else ""
    if "serving on" not in line:
        p.kill()
        err = p.stderr.read() if p.stderr else ""
        raise SystemExit(f"tax did not start: {line!r} {err[-2000:]}")
    if processes not in (GO, GO1):
        return [p]
    try:
        return [_go_front(tb, cfg, endpoint, cap, per_caller, timeline, go_front, processes == GO1), p]
    except BaseException:
        p.kill()
        raise


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (``/proc/<pid>/stat``, its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _request(hub: Runtime, tokens: list[bytes]) -> lookup_pb2.LookupRequest:
    """A Lookup as ``hub`` sends it: with its signed consent record (issue 18; the provider
    refuses CONSENT_MISSING without one) and a reference month (DESIGN-12 "Wire")."""
    # A new authorisation per request: a provider counts each authorisation's members and case
    # (issue 18c), and these requests stand for many households.
    ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="BENCH-1", consent_digest=os.urandom(32),
                                    request_id=os.urandom(16), operator="bench")
    ctx.consent.CopyFrom(consent.issue_for_context(hub.signer_for(ROLE_ANSWERS), hub.member, ctx, members=len(tokens),
                                                   issued_at=hub.clock.now()))
    return lookup_pb2.LookupRequest(context=ctx, epoch=1, tokens=tokens, queries=[lookup_pb2.FieldQuery(field="income_last_year")],
                                    reference_month=str(Month.of(hub.clock.today()).plus(-1)))


def _tagged(tag: str | None) -> tuple[tuple[str, str], ...] | None:
    """The metadata that names a call in the node's timeline (bench/_node_timeline.py)."""
    return None if tag is None else ((_node_timeline.TAG, tag),)


def _unloaded(client: PeerClient, hub: Runtime, tokens: list[bytes], n: int, tag: str | None = None,
              sent: dict | None = None) -> list[float]:
    """``n`` sequential Lookups; with ``tag``, each is named ``tag + i`` and its send and answer
    times (CLOCK_MONOTONIC) go into ``sent``."""
    out = []
    for i in range(n):
        req = _request(hub, tokens)
        t = time.monotonic()
        client.lookup.Lookup(req, timeout=30, metadata=_tagged(None if tag is None else f"{tag}{i}"))
        d = time.monotonic()
        out.append(d - t)
        if tag is not None and sent is not None:
            sent[f"{tag}{i}"] = (t, d, "OK")
    return out


def _burst(client: PeerClient, hub: Runtime, tokens: list[bytes], n: int,
           sent: dict) -> tuple[list[float], list[float], dict[str, int]]:
    """``n`` Lookups issued at once (the issue's 1,000 concurrent lookups); each call's send and
    answer times and status go into ``sent`` by its tag."""
    reqs = [_request(hub, tokens) for _ in range(n)]
    done = threading.Semaphore(0)
    ok: list[float] = []
    shed: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()

    def issue(i: int, req) -> None:
        t = time.monotonic()
        fut = client.lookup.Lookup.future(req, timeout=60, metadata=_tagged(f"b{i}"))

        def finished(f) -> None:
            d = time.monotonic()
            dt = d - t
            code = f.code()
            with lock:
                sent[f"b{i}"] = (t, d, code.name)
                codes[code.name] = codes.get(code.name, 0) + 1
                if code not in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED):
                    detail = f"{code.name}: {f.details()}"[:80]
                    codes[detail] = codes.get(detail, 0) + 1
                (ok if code == grpc.StatusCode.OK else shed if code == grpc.StatusCode.RESOURCE_EXHAUSTED else []).append(dt)
            done.release()

        fut.add_done_callback(finished)

    for i, r in enumerate(reqs):
        issue(i, r)
    for _ in range(n):
        done.acquire()
    return ok, shed, codes


def _flood(client: PeerClient, hub: Runtime, tokens: list[bytes], outstanding: int, seconds: float, sent: dict,
           backoff: float = 0.1) -> tuple[list[float], list[float], dict[str, int]]:
    """Keeps ``outstanding`` Lookups in flight for ``seconds`` (each completion issues the
    next), then waits for the last ones: a sustained overload, not one burst."""
    ok: list[float] = []
    shed: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    end = time.perf_counter() + seconds
    live = [0]
    drained = threading.Event()
    serial = iter(range(10**9))

    def issue() -> None:
        req = _request(hub, tokens)
        with lock:
            tag = f"f{next(serial)}"
        t = time.monotonic()
        fut = client.lookup.Lookup.future(req, timeout=60, metadata=_tagged(tag))

        def finished(f) -> None:
            d = time.monotonic()
            dt = d - t
            code = f.code()
            with lock:
                sent[tag] = (t, d, code.name)
                codes[code.name] = codes.get(code.name, 0) + 1
                (ok if code == grpc.StatusCode.OK else shed if code == grpc.StatusCode.RESOURCE_EXHAUSTED else []).append(dt)
            if time.perf_counter() < end:
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    # A well-behaved caller backs off when told the node is at capacity.
                    threading.Timer(backoff, issue).start()
                else:
                    issue()
            else:
                with lock:
                    live[0] -= 1
                    if live[0] == 0:
                        drained.set()

        fut.add_done_callback(finished)

    live[0] = outstanding
    for _ in range(outstanding):
        issue()
    drained.wait(seconds + 120)
    return ok, shed, codes


def _bystander(client: PeerClient, hub: Runtime, tokens: list[bytes], stop: threading.Event, out: dict) -> None:
    """Another hub's sequential Lookups while the burst runs: does the flood starve it?"""
    lat: list[float] = []
    codes: dict[str, int] = {}
    gate: dict[str, int] = {}
    sent: dict[str, tuple[float, float, str]] = {}
    while not stop.is_set():
        tag = f"p{len(sent)}"
        t = time.monotonic()
        try:
            client.lookup.Lookup(_request(hub, tokens), timeout=60, metadata=_tagged(tag))
            name = "OK"
            lat.append(time.monotonic() - t)
        except grpc.RpcError as e:
            name = e.code().name
            if name == "RESOURCE_EXHAUSTED":   # which gate: the node's admission (per caller) or gRPC's limit (blind)
                by = "admission" if (e.details() or "").startswith("OVERLOADED") else "grpc"
                gate[by] = gate.get(by, 0) + 1
        sent[tag] = (t, time.monotonic(), name)
        codes[name] = codes.get(name, 0) + 1
    out.update(codes=codes, lat=lat, sent=sent, gate=gate)


def _tokens(c: PeerClient, hub: Runtime) -> list[bytes]:
    state = oprf.blind([resident(i, SEED).id_number for i in (1, 2, 3, 4)])
    ev = c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(
        context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="BENCH-1", request_id=os.urandom(16)),
        epoch=1, blinded_elements=state.blinded), timeout=30)
    return oprf.finalize(state, list(ev.evaluated_elements), ev.proof, bytes(hub.directory.member("tax").oprf_keys[0].public_key))


def _load_child(a: argparse.Namespace) -> None:
    """The flooding hub, in its own process: unloaded p99, "ready", waits for "go", the load,
    then one JSON line of results."""
    hub = Runtime.open(Path(a.load_child))
    try:
        with PeerClient.to_member(hub, "tax") as c:
            tokens = _tokens(c, hub)
            _unloaded(c, hub, tokens, 20)  # warm-up
            sent: dict[str, tuple[float, float, str]] = {}
            base = _unloaded(c, hub, tokens, a.unloaded, "u", sent)
            print("ready", flush=True)
            sys.stdin.readline()
            if a.mode == "burst":
                ok, shed, codes = _burst(c, hub, tokens, a.burst, sent)
            else:
                ok, shed, codes = _flood(c, hub, tokens, a.burst, a.seconds, sent)
    finally:
        hub.close()
    print(json.dumps({"base": base, "ok": ok, "shed": shed, "codes": codes, "sent": sent}), flush=True)


#: The clients' timeouts by call tag prefix: ``deadline - timeout`` is when a call reached the
#: server's gRPC core (bench/_node_timeline.py).
_TIMEOUT = {"u": 30.0, "pu": 30.0, "b": 60.0, "f": 60.0, "p": 60.0}


def _server_side(stamps: dict[str, dict[str, float]], sent: dict, prefix: str, first: str, last: str) -> list[float]:
    """For the admitted calls tagged ``prefix*``: the time from stamp ``first`` to ``last``
    (``issue`` and ``done`` are the client's send and answer times, ``core`` the call's arrival
    in the server's gRPC core)."""
    out = []
    for tag, (t, d, code) in sent.items():
        if code != "OK" or not tag.startswith(prefix):
            continue
        ev = {**stamps.get(tag, {}), "issue": t, "done": d}
        if "deadline" in ev:
            ev["core"] = ev["deadline"] - _TIMEOUT[tag.rstrip("0123456789")]
        if first in ev and last in ev:
            out.append(ev[last] - ev[first])
    return out


def _one_run(tb: Testbed, hub2: Runtime, a: argparse.Namespace, cap: int, switch_ms: float | None,
             processes: int = 0, per_caller: int = 0) -> dict:
    timeline = tb.root / f"timeline-{cap}.json"
    procs = _serve(tb, cap, a.workers, timeline, switch_ms, processes, per_caller, Path(a.go_front))
    child = None
    try:
        with PeerClient.to_member(hub2, "tax") as c2:
            tokens = _tokens(c2, hub2)
            _unloaded(c2, hub2, tokens, 20)  # warm-up
            probe_sent: dict[str, tuple[float, float, str]] = {}
            probe_base = _unloaded(c2, hub2, tokens, a.unloaded, "pu", probe_sent)
            child = subprocess.Popen(
                [sys.executable, __file__, "--load-child", str(tb.config_path("hub")), "--mode", a.mode,
                 "--burst", str(a.burst), "--seconds", str(a.seconds), "--unloaded", str(a.unloaded)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, PASSPHRASE_ENV: tb.passphrase})
            assert child.stdin is not None and child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("load generator did not start")
            stop, other = threading.Event(), {}
            th = threading.Thread(target=_bystander, args=(c2, hub2, tokens, stop, other))
            th.start()
            cpu0 = _cpu_seconds(procs[0].pid)
            child.stdin.write("go\n")
            child.stdin.flush()
            got = json.loads(child.stdout.readline())
            cpu = _cpu_seconds(procs[0].pid) - cpu0
            stop.set()
            th.join()
            child.wait(60)
    finally:
        if child is not None and child.poll() is None:
            child.kill()
        for p in procs:
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:  # a graceful stop with a thousand calls still draining
                p.kill()
                p.wait(30)
    ok, shed, codes, base = got["ok"], got["shed"], got["codes"], got["base"]
    stamps = _node_timeline.load(str(timeline))
    timeline.unlink(missing_ok=True)
    sent, probe_sent = got["sent"], {**probe_sent, **other["sent"]}
    load = "f" if a.mode == "flood" else "b"

    def p99(xs: list[float]) -> float:
        return percentile(xs, 99) * 1000 if xs else float("nan")

    return {
        # Server side (bench/_node_timeline.py): from gRPC's polling thread taking the call to
        # the handler leaving, for admitted calls; and how long an admitted call of the load
        # waited, after it was sent, for the polling thread to take it.
        "srv_unloaded_p99_ms": p99(_server_side(stamps, sent, "u", "seen", "leave")),
        "srv_admitted_p99_ms": p99(_server_side(stamps, sent, load, "seen", "leave")),
        "srv_handler_p99_ms": p99(_server_side(stamps, sent, load, "admit", "leave")),
        "wait_to_seen_p99_ms": p99(_server_side(stamps, sent, load, "issue", "seen")),
        # That wait split at the call's arrival in the server's gRPC core: sent -> arrived, and
        # arrived -> taken by the polling thread.
        "send_to_core_p99_ms": p99(_server_side(stamps, sent, load, "issue", "core")),
        "core_to_seen_p99_ms": p99(_server_side(stamps, sent, load, "core", "seen")),
        "unloaded_send_to_core_p99_ms": p99(_server_side(stamps, sent, "u", "issue", "core")),
        "hub2_srv_unloaded_p99_ms": p99(_server_side(stamps, probe_sent, "pu", "seen", "leave")),
        "hub2_srv_p99_ms": p99(_server_side(stamps, probe_sent, "p", "seen", "leave")) if other["lat"] else float("nan"),
        "hub2_wait_to_seen_p99_ms": p99(_server_side(stamps, {k: v for k, v in probe_sent.items() if not k.startswith("pu")},
                                                     "p", "issue", "seen")),
        # The way back: from the worker (or the one process) leaving the handler to the
        # flooding hub's callback, for admitted calls (the front's relay and the load
        # generator's own queue of completions, under its GIL).
        "leave_to_done_p99_ms": p99(_server_side(stamps, sent, load, "leave", "done")),
        # Its two parts with the Go front (bench/go_front/ stamps "out" when its handler
        # returns): the front's relay, and the rest (the loopback and the load generator).
        "leave_to_out_p99_ms": p99(_server_side(stamps, sent, load, "leave", "out")),
        "out_to_done_p99_ms": p99(_server_side(stamps, sent, load, "out", "done")),
        # CPU of the process clients reach (the front; the whole node in one process) during
        # the load, per call of the flooding hub.
        "entry_cpu_ms_per_call": cpu * 1000 / max(1, len(got["ok"]) + len(got["shed"])),
        "load1": os.getloadavg()[0],
        "unloaded_p99_ms": percentile(base, 99) * 1000, "admitted": len(ok), "refused": len(shed),
        "admitted_p99_ms": percentile(ok, 99) * 1000 if ok else float("nan"),
        "refused_p50_ms": percentile(shed, 50) * 1000 if shed else float("nan"),
        "refused_p99_ms": percentile(shed, 99) * 1000 if shed else float("nan"),
        "other": {k: v for k, v in codes.items() if k not in ("OK", "RESOURCE_EXHAUSTED")},
        "hub2_unloaded_p99_ms": percentile(probe_base, 99) * 1000,
        "hub2_ok": other["codes"].get("OK", 0), "hub2_refused": other["codes"].get("RESOURCE_EXHAUSTED", 0),
        # Of those refusals, how many the node's admission made (its per-caller share, details
        # "OVERLOADED: …") and how many gRPC's caller-blind limit of calls in the server.
        "hub2_refused_admission": other["gate"].get("admission", 0), "hub2_refused_grpc": other["gate"].get("grpc", 0),
        "hub2_p99_ms": percentile(other["lat"], 99) * 1000 if other["lat"] else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--burst", type=int, default=1000, help="Lookups kept in flight by the flooding hub")
    ap.add_argument("--seconds", type=float, default=3.0, help="how long the flood lasts")
    ap.add_argument("--mode", choices=["burst", "flood"], default="burst",
                    help="burst: --burst Lookups at once (issue 13's scenario); flood: kept in flight for --seconds, "
                    "refused calls retried after 100 ms")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--caps", default="8,2", help="candidate caps (max_concurrent_rpcs), comma-separated")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--switch-ms", default="", help="candidate GIL switch intervals of the node ([node] switch_interval_ms), "
                    "comma-separated: each cap is run with each; empty: the node's default")
    ap.add_argument("--no-uncapped", action="store_true", help="leave out the baseline without a cap")
    ap.add_argument("--processes", default="", help="candidate [node] worker_processes, comma-separated (0: one "
                    "process; N: a front and N workers, node/front/; go: the Go front spike, bench/go_front/, and one "
                    "worker; go1: the same on GOMAXPROCS=1): each cap is run with each; empty: the node's default")
    ap.add_argument("--go-front", default=str(_GO_FRONT), help="the Go front spike's binary (bench/go_front/README.md)")
    ap.add_argument("--per-caller", default="", help="candidate [node] max_concurrent_per_caller, comma-separated "
                    "(0: node/admission.py's default, three quarters of the cap — the whole cap below 4)")
    ap.add_argument("--store", default="sqlite", help="sqlite, or a PostgreSQL URL for the provider's store (an empty "
                    "database; worker_processes > 1 needs one)")
    ap.add_argument("--unloaded", type=int, default=200)
    ap.add_argument("--pin", default="", help="node CPUs, comma-separated (e.g. 0): the node's processes run on "
                    "these, the two hubs (load generator and probe) on the others — the load generator off the "
                    "node's cores, as a remote caller would be; the unloaded p99 is measured the same way")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--load-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.load_child:
        _load_child(a)
        return
    processes = [_GOS[x] if x in _GOS else int(x) for x in a.processes.split(",")] if a.processes else [0]
    if a.pin:
        _NODE_CPUS.update(int(x) for x in a.pin.split(","))
        clients = set(os.sched_getaffinity(0)) - _NODE_CPUS
        if not clients or not _NODE_CPUS <= set(os.sched_getaffinity(0)):
            raise SystemExit(f"--pin: got {a.pin}, want a proper subset of CPUs {sorted(os.sched_getaffinity(0))}")
        os.sched_setaffinity(0, clients)   # this process (the probe) and the load generator it starts
    if {GO, GO1} & set(processes) and not os.access(a.go_front, os.X_OK):   # the spike is optional: CI has no Go
        print(f"skipped: the Go front variants, no binary at {a.go_front} (bench/go_front/README.md)", file=sys.stderr)
        processes = [n for n in processes if n not in (GO, GO1)]
        if not processes:
            return
    root = Path(tempfile.mkdtemp(prefix="hedui-bench-shed-"))
    store = {} if a.store == "sqlite" else {"store": (lambda code: a.store if code == "tax" else "sqlite:///node.db")}
    tb = Testbed(root / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("hub2", "hub2", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 residents=200, data_seed=SEED, **store)
    tb.create()
    # No quota in the way: a QUOTA_EXCEEDED is a RESOURCE_EXHAUSTED too, and would count as shed.
    tb.policy = [dict(r, per_minute=0, per_day=0) for r in default_policy(tb.members)]
    tb.sign_directory()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes()
    hub2 = Runtime.open(tb.config_path("hub2"))
    variants: dict[str, tuple[int, float | None, int, int]] = {} if a.no_uncapped else {"baseline (no cap)": (4096, None, 0, 0)}
    for c in a.caps.split(","):
        for sw in a.switch_ms.split(",") if a.switch_ms else [None]:
            for n in processes:
                for pc in [int(x) for x in a.per_caller.split(",")] if a.per_caller else [0]:
                    front = (", Go front + 1 worker process" if n == GO else ", Go front (GOMAXPROCS=1) + 1 worker process" if n == GO1
                             else f", {n} worker processes" if n else "")
                    label = f"cap {c}{'' if sw is None else f', switch {sw} ms'}{front}{f', per caller {pc}' if pc else ''}"
                    variants[f"candidate ({label})"] = (int(c), None if sw is None else float(sw), n, pc)
    results: dict[str, list[dict]] = {k: [] for k in variants}
    try:
        for run in range(a.runs):
            for name, (cap, sw, n, pc) in variants.items():
                results[name].append(_one_run(tb, hub2, a, cap, sw, n, pc))
                print(f"run {run + 1} {name}: {results[name][-1]}", file=sys.stderr, flush=True)
    finally:
        hub2.close()
    rows = []
    for name, rs in results.items():
        row: dict = {"variant": name, "runs": len(rs), "burst": a.burst}
        for k in ("unloaded_p99_ms", "admitted_p99_ms", "refused_p50_ms", "refused_p99_ms", "admitted", "refused",
                  "hub2_unloaded_p99_ms", "hub2_ok", "hub2_refused", "hub2_refused_admission", "hub2_refused_grpc", "hub2_p99_ms", "srv_unloaded_p99_ms",
                  "srv_admitted_p99_ms", "srv_handler_p99_ms", "wait_to_seen_p99_ms", "hub2_srv_unloaded_p99_ms",
                  "hub2_srv_p99_ms", "hub2_wait_to_seen_p99_ms", "send_to_core_p99_ms", "core_to_seen_p99_ms",
                  "unloaded_send_to_core_p99_ms", "leave_to_done_p99_ms", "leave_to_out_p99_ms", "out_to_done_p99_ms", "entry_cpu_ms_per_call", "load1"):
            xs = [r[k] for r in rs if r[k] == r[k]]
            row[f"{k} min"] = round(min(xs), 2) if xs else None
            row[f"{k} median"] = round(statistics.median(xs), 2) if xs else None
        ratios = [r["admitted_p99_ms"] / r["unloaded_p99_ms"] for r in rs if r["admitted_p99_ms"] == r["admitted_p99_ms"]]
        row["admitted/unloaded p99 min"] = round(min(ratios), 2) if ratios else None
        row["admitted/unloaded p99 median"] = round(statistics.median(ratios), 2) if ratios else None
        srv = [r["srv_admitted_p99_ms"] / r["srv_unloaded_p99_ms"] for r in rs
               if r["srv_admitted_p99_ms"] == r["srv_admitted_p99_ms"] and r["srv_unloaded_p99_ms"] > 0]
        row["server-side admitted/unloaded p99 min"] = round(min(srv), 2) if srv else None
        row["server-side admitted/unloaded p99 median"] = round(statistics.median(srv), 2) if srv else None
        srv2 = [r["hub2_srv_p99_ms"] / r["hub2_srv_unloaded_p99_ms"] for r in rs
                if r["hub2_srv_p99_ms"] == r["hub2_srv_p99_ms"] and r["hub2_srv_unloaded_p99_ms"] > 0]
        row["hub2 server-side loaded/unloaded p99 min"] = round(min(srv2), 2) if srv2 else None
        row["hub2 server-side loaded/unloaded p99 median"] = round(statistics.median(srv2), 2) if srv2 else None
        probe = [r["hub2_p99_ms"] / r["hub2_unloaded_p99_ms"] for r in rs if r["hub2_p99_ms"] == r["hub2_p99_ms"]]
        row["hub2 loaded/unloaded p99 min"] = round(min(probe), 2) if probe else None
        row["hub2 loaded/unloaded p99 median"] = round(statistics.median(probe), 2) if probe else None
        rows.append(row)
    report("load shedding (issue 13)", rows, json_out=a.json, extra={"caps": a.caps, "workers": a.workers, "mode": a.mode,
                                                                         "processes": a.processes or "0", "store": a.store.split("@")[-1],
                                                                         "pin": a.pin or "none",
                                                                         "switch_ms": a.switch_ms or "default"})


if __name__ == "__main__":
    main()
