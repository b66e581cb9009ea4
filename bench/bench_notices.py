"""Active-discovery benchmark: notices from 5 department nodes to one hub, end to end, every
node its own process as deployed (issue 16: deployment shape = benchmark shape).

hedui path: the hub and each department run ``hedui node serve`` (node/testbed/procs.py).
Beside each department node a detection process (what ``hedui notices detect`` is) seals
the personal part of every notice to the hub's key (HPKE ML-KEM-768 + X25519), DSSE-signs it
and queues it in the department's durable outbox (one transaction per ``--batch``, the signing
before the inserts) and rings the node's outbox doorbell; the department node's pusher
(``[provider] push_interval`` as the fallback poll, ``push_batch``, ``push_in_flight``) sends
the queued notices with ``NoticeService.PushBatch`` over mutual TLS to the hub, which identifies the
caller, checks the policy, verifies each signature, opens each sealed part, merges each
notice into the person's lead with a referral, signs a receipt per notice and audits them,
one transaction per batch; the department verifies each receipt and stores it with its
audit entries, one transaction per batch. A round ends when every queued notice has its
receipt stored in its outbox.

Baseline, same run: the same notices, personal part in clear and unsigned, one ``Push`` per
notice over plain (insecure) gRPC to a bare NoticeService in its own process that parses the
notice and answers an unsigned receipt, storing nothing; one sender process per department.

Reports notices/s for both and their ratio, and the delivery delay of the hedui path
(enqueue → receipt stored in the outbox) at p50 and p99, in a burst and paced at half the
measured rate.

Baseline and hedui alternate in --reps rounds (after a warm-up), each on fresh notices.

    python bench/bench_notices.py [--notices 20000] [--providers 5] [--batch 500] [--push-batch 100] [--reps 3] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, report

from hedui.adapters.synthetic import resident
from hedui.common.clock import SystemClock
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.discovery.detect import Detection
from hedui.node.discovery.tables import notice_inbox, notice_outbox, utc
from hedui.node.store.db import open_engine
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.testbed.procs import NodeProcess

#: Delivery delays compare the nodes' own stored instants (their SystemClock) with this one.
WALL = SystemClock()

_TOWNS = ("370304001", "370304002", "370304003")

_BARE = r"""
import hashlib, sys
from concurrent import futures
import grpc
from hedui.node.server import server_options
from hedui.v1 import common_pb2, notice_pb2, notice_pb2_grpc

class Bare(notice_pb2_grpc.NoticeServiceServicer):
    def Push(self, request, context):
        n = notice_pb2.Notice.FromString(request.notice.payload)
        notice_pb2.SealedDetails.FromString(n.sealed_ciphertext)  # the personal part, in clear
        r = notice_pb2.Receipt(hub="bare", notice_id=n.notice_id,
                               notice_digest=hashlib.sha256(request.notice.payload).digest())
        r.received_at.GetCurrentTime()
        return notice_pb2.PushResponse(receipt=common_pb2.Envelope(
            payload_type="application/vnd.hedui.receipt.v1+proto", payload=r.SerializeToString()))

s = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=server_options())
notice_pb2_grpc.add_NoticeServiceServicer_to_server(Bare(), s)
port = s.add_insecure_port("127.0.0.1:0")
s.start()
print(port, flush=True)
sys.stdin.read()
s.stop(0)
"""


def _detections(provider: int, n: int, start: int) -> list[Detection]:
    """``n`` distinct notices of one department (persons ``start..start+n-1``)."""
    out = []
    for k in range(n):
        person = start + k
        on = date(2025, 10, 7) - timedelta(days=person % 20)
        out.append(Detection(
            rule="fire.large_loss", event_type="fire_loss", identity=resident(person, 7).id_number,
            region=_TOWNS[person % 3], event_date=on, due_date=on + timedelta(days=4), period=on.isoformat(),
            details={"fact": "fire", "value": f"{50000 + person % 9000}.00", "unit": "CNY", "large_loss": "true"},
            dedup_key=hashlib.sha256(f"bench:{provider}:{person}".encode()).hexdigest(),
        ))
    return out


def _delays(engines, since: datetime) -> list[float]:
    """Seconds from enqueue to receipt stored, for outbox rows queued since ``since``."""
    out: list[float] = []
    for eng in engines:
        with eng.connect() as c:
            rows = c.execute(
                notice_outbox.select().with_only_columns(notice_outbox.c.created_at, notice_outbox.c.delivered_at)
                .where(notice_outbox.c.status == "delivered", notice_outbox.c.created_at >= since)
            ).all()
        out += [(utc(r.delivered_at) - utc(r.created_at)).total_seconds() for r in rows]
    return out


def _undelivered(engines) -> tuple[int, str | None]:
    """Rows not yet delivered in every outbox, and a refusal if any row was rejected."""
    from sqlalchemy import func, select

    left, why = 0, None
    for eng in engines:
        with eng.connect() as c:
            counts = dict(c.execute(select(notice_outbox.c.status, func.count()).group_by(notice_outbox.c.status)).all())
            if counts.get("rejected"):
                why = c.execute(select(notice_outbox.c.last_error).where(notice_outbox.c.status == "rejected")).scalar()
        left += counts.get("pending", 0)
    return left, why


# ---------------------------------------------------------------- worker processes


def _worker(mode: str, arg: str, provider: int) -> None:
    """One sender beside a department: ``hedui`` queues notices in the department's outbox
    (the detection process: seal, sign, one transaction per batch), ``bare`` pushes them in
    clear to the bare servicer. Commands on stdin: ``n start batch rate``; answers ``done``."""
    if mode == "hedui":
        from hedui.node.discovery.outbox import enqueue_many
        from hedui.node.discovery.provider import ProviderNotices
        from hedui.node.runtime import Runtime

        rt = Runtime.open(Path(arg))
        pn = ProviderNotices(rt)
    else:
        import grpc

        from hedui.v1 import common_pb2, notice_pb2, notice_pb2_grpc

        ch = grpc.insecure_channel(f"127.0.0.1:{arg}")
        stub = notice_pb2_grpc.NoticeServiceStub(ch)
    print("READY", flush=True)
    for line in sys.stdin:
        n, first, batch, rate = line.split()
        dets = _detections(provider, int(n), int(first))
        t0 = time.perf_counter()
        if mode == "hedui":
            step = int(batch)
            for a in range(0, len(dets), step):
                if float(rate):
                    ahead = t0 + a / float(rate) - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
                with rt.engine.begin() as conn:
                    enqueue_many(conn, dets[a:a + step], pn.sign_and_seal, hub=pn.hub, now=rt.clock.now())
                pn.queued()   # as a detection run does: rings the node's outbox doorbell
        else:
            for d in dets:
                nt = notice_pb2.Notice(
                    notice_id=os.urandom(16), provider=f"dept-{provider + 1}", hub="bare", rule=d.rule,
                    event_type=d.event_type, region=d.region, event_date=d.event_date.isoformat(),
                    due_date=d.due_date.isoformat(), sealed_suite="none",
                    sealed_ciphertext=notice_pb2.SealedDetails(identity=d.identity, details=dict(d.details)).SerializeToString(),
                )
                nt.created_at.GetCurrentTime()
                env = common_pb2.Envelope(payload_type="application/vnd.hedui.notice.v1+proto", payload=nt.SerializeToString())
                resp = stub.Push(notice_pb2.PushRequest(notice=env), timeout=30)
                notice_pb2.Receipt.FromString(resp.receipt.payload)
        print("done", flush=True)


class _Workers:
    """One worker process per department, driven over stdin/stdout."""

    def __init__(self, mode: str, args: list[str], env: dict[str, str]) -> None:
        me = str(Path(__file__).resolve())
        self.procs = [subprocess.Popen([sys.executable, me, "--worker", mode, a, str(i)], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
                      for i, a in enumerate(args)]
        for p in self.procs:
            line = p.stdout.readline()  # type: ignore[union-attr]
            if line.strip() != "READY":
                raise SystemExit(f"{mode} worker did not start: {line!r}")

    def run(self, per: list[tuple[int, int]], batch: int = 1, rate: float = 0.0) -> None:
        """Sends every worker its command and returns when all have answered."""
        for p, (n, first) in zip(self.procs, per, strict=True):
            p.stdin.write(f"{n} {first} {batch} {rate}\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        for p in self.procs:
            if p.stdout.readline().strip() != "done":  # type: ignore[union-attr]
                raise SystemExit(f"a worker failed (exit {p.wait()})")

    def cpu(self) -> float:
        return sum(_cpu(p.pid) for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            p.stdin.close()  # type: ignore[union-attr]
            p.wait(30)


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hedui_round(enq: _Workers, engines, per: list[tuple[int, int]], batch: int, rate: float = 0.0) -> float:
    """Queues the notices (detection processes) while the department nodes push; returns
    seconds from the first enqueue to the last receipt stored."""
    t0 = time.perf_counter()
    enq.run(per, batch, rate)
    while True:
        left, why = _undelivered(engines)
        if why:
            raise SystemExit(f"a notice was rejected: {why}")
        if not left:
            return time.perf_counter() - t0
        time.sleep(0.01)


def _baseline_round(bare: _Workers, per: list[tuple[int, int]]) -> float:
    t0 = time.perf_counter()
    bare.run(per)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notices", type=int, default=20_000, help="notices in total (split over the providers and rounds)")
    ap.add_argument("--paced", type=int, default=2000,
                    help="notices for the delay measurement at half the measured throughput (0: skip)")
    ap.add_argument("--providers", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500, help="notices queued per outbox transaction")
    ap.add_argument("--push-batch", type=int, default=100, help="notices per PushBatch call ([provider] push_batch)")
    ap.add_argument("--push-interval", type=float, default=1.0,
                    help="[provider] push_interval, seconds (the poll; queued notices ring the doorbell)")
    ap.add_argument("--push-in-flight", type=int, default=1, help="[provider] push_in_flight")
    ap.add_argument("--hub-store", default=None,
                    help="the hub's store URL (an empty PostgreSQL database); default a SQLite file")
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds (the notices are split over them)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        _worker(a.worker[0], a.worker[1], int(a.worker[2]))
        return
    load_before = os.getloadavg()[0]
    n_round = a.notices // a.providers // a.reps
    total = n_round * a.providers   # per round
    rules = str(resources.files("hedui.node") / "data" / "rules-fire.toml")
    with tempfile.TemporaryDirectory() as d:
        codes = [f"dept-{i}" for i in range(1, a.providers + 1)]
        members = [MemberPlan("hub", "hub", ["hub"])] + [
            MemberPlan(c, c, ["provider"], extra_config={"provider": {
                "rules": rules, "hub": "hub", "mapping": "unused.toml", "detect_at": "manual",
                "push_interval": a.push_interval, "push_batch": a.push_batch,
                "push_in_flight": a.push_in_flight}})
            for c in codes
        ]

        def store(code: str) -> str:
            return a.hub_store if code == "hub" else f"sqlite:///{Path(d) / 'fed' / 'members' / code / 'node.db'}"

        tb = Testbed(Path(d) / "fed", members, residents=10, store=store if a.hub_store else None).create()
        os.environ[PASSPHRASE_ENV] = tb.passphrase
        logs = Path(d) / "logs"
        logs.mkdir()
        nodes = [NodeProcess(tb.config_path(c), tb.env(), log=logs / f"{c}.log") for c in ["hub", *codes]]
        for n in nodes:
            n.start()
        from hedui.node.config import load_config

        engines = [open_engine(load_config(tb.config_path(c)).store_url()) for c in codes]
        bare_srv = subprocess.Popen([sys.executable, "-c", _BARE], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        bare_port = int(bare_srv.stdout.readline())  # type: ignore[union-attr]
        enq = _Workers("hedui", [str(tb.config_path(c)) for c in codes], tb.env())
        bare = _Workers("bare", [str(bare_port)] * a.providers, {})
        try:
            # Warm-up (connections, caches, first SQLite pages): 40 notices each, not counted.
            warm = [(40, 10_000_000 + i * 1000) for i in range(a.providers)]
            _hedui_round(enq, engines, warm, a.batch)
            _baseline_round(bare, warm)
            # Interleaved rounds: baseline, hedui, baseline, hedui, ... on fresh notices each
            # round, so load drift on the shared machine enters both sides alike.
            t_base_r: list[float] = []
            t_hedui_r: list[float] = []
            delays: list[float] = []
            cpu_hub = cpu_dept = cpu_enq = cpu_bare_srv = cpu_bare_cli = 0.0
            # What the nodes spend idle (pushers polling, checkpoints, health): over 3 s, no notices.
            idle0 = [n.cpu_seconds() for n in nodes]
            time.sleep(3.0)
            idle = [(n.cpu_seconds() - c0) / 3.0 for n, c0 in zip(nodes, idle0, strict=True)]
            for r in range(a.reps):
                off = 1 + r * total
                per = [(n_round, off + i * n_round) for i in range(a.providers)]
                cpub = _cpu(bare_srv.pid), bare.cpu()
                t_base_r.append(_baseline_round(bare, per))
                cpu_bare_srv += _cpu(bare_srv.pid) - cpub[0]
                cpu_bare_cli += bare.cpu() - cpub[1]
                mark = WALL.now()
                cpu0 = nodes[0].cpu_seconds(), sum(n.cpu_seconds() for n in nodes[1:]), enq.cpu()
                t_hedui_r.append(_hedui_round(enq, engines, per, a.batch))
                cpu_hub += nodes[0].cpu_seconds() - cpu0[0]
                cpu_dept += sum(n.cpu_seconds() for n in nodes[1:]) - cpu0[1]
                cpu_enq += enq.cpu() - cpu0[2]
                delays += _delays(engines, mark)
            t_hedui = statistics.median(t_hedui_r)
            t_base = statistics.median(t_base_r)
            paced: list[float] = []
            paced_rate = 0.5 * total / t_hedui
            if a.paced:
                # The delay a notice sees when the hub is not behind: queued one by one (one
                # transaction each) at half the throughput just measured.
                n_paced = a.paced // a.providers
                mark2 = WALL.now()
                _hedui_round(enq, engines, [(n_paced, 20_000_000 + i * n_paced) for i in range(a.providers)], 1,
                             rate=paced_rate / a.providers)
                paced = _delays(engines, mark2)
        finally:
            enq.close()
            bare.close()
            for eng in engines:
                eng.dispose()
            bare_srv.stdin.close()  # type: ignore[union-attr]
            bare_srv.wait(120)   # a loaded machine can take a while to stop it
            for n in nodes:
                n.stop()
        from sqlalchemy import func, select

        eng = open_engine(load_config(tb.config_path("hub")).store_url())
        with eng.connect() as c:
            received = c.execute(select(func.count()).select_from(notice_inbox)).scalar_one()
        eng.dispose()
        warm_n = 40 * a.providers + len(paced)
        if received != total * a.reps + warm_n or len(delays) != total * a.reps:
            raise SystemExit(f"hub holds {received} notices and the outboxes {len(delays)} receipts, "
                             f"want {total * a.reps + warm_n}")
        ratios = [b / h for h, b in zip(t_hedui_r, t_base_r, strict=True)]
        rows = [
            {"path": "hedui: nodes as processes; sealed + signed, mTLS, PushBatch, verify + open + merge + signed receipt "
                     "per notice, audited both sides, one transaction per batch each side",
             "notices per round": total, "median s": t_hedui, "notices/s best": total / min(t_hedui_r),
             "notices/s median": total / t_hedui},
            {"path": "baseline: same notices in clear, unsigned, one Push each, insecure gRPC, bare servicer (no store)",
             "notices per round": total, "median s": t_base, "notices/s best": total / min(t_base_r),
             "notices/s median": total / t_base},
        ]
        extra = {
            "providers": a.providers,
            "push batch / outbox batch / in flight / push interval s":
                f"{a.push_batch} / {a.batch} / {a.push_in_flight} / {a.push_interval}",
            f"ratio hedui/baseline (notices/s), per round, min / median of {a.reps}":
                f"{min(ratios):.3f} / {statistics.median(ratios):.3f}",
            "per-round seconds hedui / baseline": f"{[round(x, 2) for x in t_hedui_r]} / {[round(x, 2) for x in t_base_r]}",
            "delivery delay p50 / p99 s, burst (all queued at once; mostly queueing)":
                f"{percentile(delays, 50):.3f} / {percentile(delays, 99):.3f}",
            f"delivery delay p50 / p99 s, paced at {paced_rate:.0f} notices/s ({len(paced)} notices)":
                f"{percentile(paced, 50):.3f} / {percentile(paced, 99):.3f}" if paced else "skipped",
            "CPU ms per notice in the timed rounds: hub node / department nodes / detection processes":
                f"{1000 * cpu_hub / (total * a.reps):.2f} / {1000 * cpu_dept / (total * a.reps):.2f} / "
                f"{1000 * cpu_enq / (total * a.reps):.2f}",
            "CPU ms per notice in the timed rounds, baseline: bare server / sender processes":
                f"{1000 * cpu_bare_srv / (total * a.reps):.2f} / {1000 * cpu_bare_cli / (total * a.reps):.2f}",
            "idle CPU of the nodes (ms per second): hub / department nodes":
                f"{1000 * idle[0]:.1f} / {1000 * sum(idle[1:]):.1f}",
            "hub store": "PostgreSQL" if a.hub_store else "SQLite (WAL)",
            "load average (1 min) before / after": f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
            "notices at the hub (incl. warm-up and paced)": received,
        }
        report("bench_notices", rows, json_out=a.json, extra=extra)


if __name__ == "__main__":
    main()
