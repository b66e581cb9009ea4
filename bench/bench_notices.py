"""Active-discovery benchmark: notices from 5 department nodes to one hub, end to end.

hedui path (what the nodes do): each department seals the personal part of every notice to
the hub's key (HPKE ML-KEM-768 + X25519), DSSE-signs it and queues it in its durable outbox
(one transaction per batch, like a detection run); its pusher sends the queued notices over
mutual TLS to the hub node, which identifies the caller, checks the policy, verifies the
signature, opens the sealed part, merges the notice into the person's lead with a referral,
signs a receipt and audits it; the department verifies the receipt, audits it and stores it.
Enqueueing and pushing overlap, as on a node whose detection run is followed by its pusher.
The hub runs as its own process (``hedui node serve``), the departments in this one.

Baseline, same run: the same notices, personal part in clear and unsigned, pushed with the
same concurrency over plain (insecure) gRPC to a bare NoticeService in its own process that
parses the notice and answers an unsigned receipt, storing nothing.

Reports notices/s for both and their ratio, and the delivery delay of the hedui path
(enqueue → receipt stored in the outbox) at p50 and p99.

Baseline and hedui alternate in --reps rounds (after a warm-up), each on fresh notices.

    python bench/bench_notices.py [--notices 100000] [--providers 5] [--batch 500] [--reps 3] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, report

from hedui.adapters.synthetic import resident
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.discovery.detect import Detection
from hedui.node.discovery.outbox import enqueue
from hedui.node.discovery.provider import ProviderNotices
from hedui.node.discovery.tables import notice_inbox, notice_outbox, utc
from hedui.node.runtime import Runtime
from hedui.node.testbed import MemberPlan, Testbed
from hedui.v1 import common_pb2, notice_pb2, notice_pb2_grpc

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


def _delays(rts, since: datetime) -> list[float]:
    """Seconds from enqueue to receipt stored, for outbox rows queued since ``since``."""
    out: list[float] = []
    for rt in rts:
        with rt.engine.connect() as c:
            rows = c.execute(
                notice_outbox.select().with_only_columns(notice_outbox.c.created_at, notice_outbox.c.delivered_at)
                .where(notice_outbox.c.status == "delivered", notice_outbox.c.created_at >= since)
            ).all()
        out += [(utc(r.delivered_at) - utc(r.created_at)).total_seconds() for r in rows]
    return out


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_hub(tb: Testbed) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("hedui")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from hedui.node.cli import main; main()"]
    proc = subprocess.Popen(cmd + ["node", "serve", "--config", str(tb.config_path("hub"))],
                            stdout=subprocess.PIPE, env={**os.environ, **tb.env()})
    line = proc.stdout.readline()
    if b"serving on" not in line:
        proc.kill()
        raise SystemExit(f"hub did not start: {line!r}")
    return proc


def _hedui_run(pns: list[ProviderNotices], per: list[list[Detection]], batch: int, rate: float = 0.0) -> float:
    """Enqueue (seal + sign, one transaction per batch) and push, overlapped; returns seconds
    from the first enqueue to the last receipt stored. With ``rate`` (notices/s in total) the
    batches are queued at that pace instead of as fast as possible."""
    done = [threading.Event() for _ in pns]
    wake = [threading.Event() for _ in pns]
    errors: list[BaseException] = []

    def enqueuer(i: int) -> None:
        pn, dets = pns[i], per[i]
        start = time.perf_counter()
        try:
            for a in range(0, len(dets), batch):
                if rate:
                    ahead = start + a * len(pns) / rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
                with pn.rt.engine.begin() as conn:
                    for d in dets[a:a + batch]:
                        enqueue(conn, d, pn.sign_and_seal, hub=pn.hub, now=pn.rt.clock.now())
                wake[i].set()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done[i].set()
            wake[i].set()

    def pusher(i: int) -> None:
        pn = pns[i]
        try:
            while True:
                stats = pn.pusher.push_due()
                if stats.failed:
                    errors.append(RuntimeError(f"{pn.rt.member}: {stats.failed} push(es) failed"))
                    return
                if done[i].is_set() and stats.attempted == 0 and pn.pending() == 0:
                    return
                if stats.attempted == 0:
                    wake[i].wait(0.05)
                    wake[i].clear()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f, args=(i,)) for i in range(len(pns)) for f in (enqueuer, pusher)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"hedui run failed: {errors[0]!r}")
    return elapsed


def _baseline(port: int, per: list[list[Detection]]) -> float:
    """The same notices in clear, unsigned, over insecure gRPC to the bare servicer."""
    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = notice_pb2_grpc.NoticeServiceStub(ch)
    errors: list[BaseException] = []

    def push(i: int) -> None:
        try:
            for d in per[i]:
                n = notice_pb2.Notice(
                    notice_id=os.urandom(16), provider=f"dept-{i + 1}", hub="bare", rule=d.rule,
                    event_type=d.event_type, region=d.region, event_date=d.event_date.isoformat(),
                    due_date=d.due_date.isoformat(), sealed_suite="none",
                    sealed_ciphertext=notice_pb2.SealedDetails(identity=d.identity, details=dict(d.details)).SerializeToString(),
                )
                n.created_at.GetCurrentTime()
                env = common_pb2.Envelope(payload_type="application/vnd.hedui.notice.v1+proto", payload=n.SerializeToString())
                resp = stub.Push(notice_pb2.PushRequest(notice=env), timeout=30)
                notice_pb2.Receipt.FromString(resp.receipt.payload)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(per))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ch.close()
    if errors:
        raise SystemExit(f"baseline failed: {errors[0]!r}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notices", type=int, default=20_000,
                    help="notices in total (split over the providers); 10^5 takes about 13 minutes on 2 cores")
    ap.add_argument("--paced", type=int, default=2000,
                    help="notices for the delay measurement at half the measured throughput (0: skip)")
    ap.add_argument("--providers", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500, help="notices queued per outbox transaction")
    ap.add_argument("--hub-store", default=None,
                    help="the hub's store URL (an empty PostgreSQL database); default a SQLite file")
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds (the notices are split over them)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    load_before = os.getloadavg()[0]
    n_round = a.notices // a.providers // a.reps
    total = n_round * a.providers   # per round
    rules = str(resources.files("hedui.node") / "data" / "rules-fire.toml")
    with tempfile.TemporaryDirectory() as d:
        codes = [f"dept-{i}" for i in range(1, a.providers + 1)]
        members = [MemberPlan("hub", "hub", ["hub"])] + [
            MemberPlan(c, c, ["provider"], extra_config={"provider": {
                "rules": rules, "hub": "hub", "mapping": "unused.toml", "detect_at": "manual"}})
            for c in codes
        ]
        def store(code: str) -> str:
            return a.hub_store if code == "hub" else f"sqlite:///{Path(d) / 'fed' / 'members' / code / 'node.db'}"

        tb = Testbed(Path(d) / "fed", members, residents=10, store=store if a.hub_store else None).create()
        os.environ[PASSPHRASE_ENV] = tb.passphrase
        hub = _start_hub(tb)
        rts = [Runtime.open(tb.config_path(c)) for c in codes]
        pns = [ProviderNotices(rt, base_delay=0.2, max_delay=5.0) for rt in rts]
        bare = subprocess.Popen([sys.executable, "-c", _BARE], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        bare_port = int(bare.stdout.readline())
        try:
            # Warm-up (connections, caches, first SQLite pages): 20 notices each, not counted.
            warm = [_detections(i, 20, 10_000_000 + i * 1000) for i in range(a.providers)]
            _hedui_run(pns, warm, a.batch)
            _baseline(bare_port, warm)
            # Interleaved rounds: baseline, hedui, baseline, hedui, ... on fresh notices each
            # round, so load drift on the shared machine enters both sides alike.
            t_base_r: list[float] = []
            t_hedui_r: list[float] = []
            delays = []
            cpu_hub = cpu_dept = 0.0
            for r in range(a.reps):
                off = 1 + r * total
                per = [_detections(i, n_round, off + i * n_round) for i in range(a.providers)]
                t_base_r.append(_baseline(bare_port, per))
                mark = datetime.now(UTC)
                cpu0 = _cpu(hub.pid), time.process_time()
                t_hedui_r.append(_hedui_run(pns, per, a.batch))
                cpu_hub += _cpu(hub.pid) - cpu0[0]
                cpu_dept += time.process_time() - cpu0[1]
                delays += _delays(rts, mark)
            t_hedui = statistics.median(t_hedui_r)
            t_base = statistics.median(t_base_r)
            paced: list[float] = []
            paced_rate = 0.5 * total / t_hedui
            if a.paced:
                # The delay a notice sees when the hub is not behind: queued one by one at half
                # the throughput just measured.
                n_paced = a.paced // a.providers
                mark2 = datetime.now(UTC)
                _hedui_run(pns, [_detections(i, n_paced, 20_000_000 + i * n_paced) for i in range(a.providers)], 1,
                           rate=paced_rate)
                paced = _delays(rts, mark2)
        finally:
            for pn in pns:
                pn.close()
            for rt in rts:
                rt.close()
            bare.stdin.close()
            bare.wait(10)
            hub.terminate()
            hub.wait(60)
        from sqlalchemy import func, select

        from hedui.node.config import load_config
        from hedui.node.store.db import open_engine

        eng = open_engine(load_config(tb.config_path("hub")).store_url())
        with eng.connect() as c:
            received = c.execute(select(func.count()).select_from(notice_inbox)).scalar_one()
        eng.dispose()
        warm_n = 20 * a.providers + len(paced)
        if received != total * a.reps + warm_n or len(delays) != total * a.reps:
            raise SystemExit(f"hub holds {received} notices and the outboxes {len(delays)} receipts, "
                             f"want {total * a.reps + warm_n}")
        ratios = [b / h for h, b in zip(t_hedui_r, t_base_r)]
        rows = [
            {"path": "hedui: sealed + signed, mTLS, verify + open + merge + signed receipt, audited both sides",
             "notices per round": total, "median s": t_hedui, "notices/s best": total / min(t_hedui_r),
             "notices/s median": total / t_hedui},
            {"path": "baseline: same notices in clear, unsigned, insecure gRPC, bare servicer (no store)",
             "notices per round": total, "median s": t_base, "notices/s best": total / min(t_base_r),
             "notices/s median": total / t_base},
        ]
        extra = {
            "providers": a.providers,
            f"ratio hedui/baseline (notices/s), per round, min / median of {a.reps}":
                f"{min(ratios):.3f} / {statistics.median(ratios):.3f}",
            "delivery delay p50 / p99 s, burst (all queued at once; mostly queueing)":
                f"{percentile(delays, 50):.3f} / {percentile(delays, 99):.3f}",
            f"delivery delay p50 / p99 s, paced at {paced_rate:.0f} notices/s ({len(paced)} notices)":
                f"{percentile(paced, 50):.3f} / {percentile(paced, 99):.3f}" if paced else "skipped",
            "CPU s during the hedui run: hub process / department processes": f"{cpu_hub:.1f} / {cpu_dept:.1f}",
            "hub store": "PostgreSQL" if a.hub_store else "SQLite (WAL)",
            "load average (1 min) before / after": f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
            "notices at the hub (incl. warm-up and paced)": received,
        }
        report("bench_notices", rows, json_out=a.json, extra=extra)


if __name__ == "__main__":
    main()
