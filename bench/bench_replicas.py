"""Lookup throughput of one department served by one vs two ``hedui node serve`` replicas
sharing one PostgreSQL (issue 16 item 6).

    python bench/bench_replicas.py [--residents N] [--requests R] [--concurrency C] [--reps K] [--json]

Set-up (node/testbed/pgpair.py): a local PostgreSQL primary and a streaming replica
(``pg_basebackup -R``) in a temporary directory; the department ``hrss`` with its token index
on the primary (partitioned), ``[store] read_database_url`` on the replica; two serve
processes A and B of it, listed in the directory as ``endpoint`` and ``replica_endpoints``.

Measured: R Lookup rpcs (4 tokens each, fresh request id, the hub's signed consent record,
built before the clock starts) sent by C client threads, over

- one: a channel to A only (pinned to the member's certificate), and
- two: the member's balanced channel (A and B, gRPC round_robin), as the hub dials it.

Each round runs one then two, or two then one (alternating), after one warm-up round of each;
min/median of K rounds and of the per-round ratio two/one. Every answer is checked (signed,
one member per token). On a machine with fewer cores than processes the second replica
adds no CPU: the ratio then says what the replicas cost, not what they scale to.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from hedui.adapters.synthetic import resident
from hedui.keys import oprf
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import PeerClient, channel_credentials
from hedui.node.pinning import PinningInterceptor
from hedui.node.procs import exec_dies_with_parent
from hedui.node.testbed import MemberPlan, Testbed, pgpair
from hedui.node.testbed.federation import default_policy, free_port
from hedui.node.verification.consent import issue_for_context
from hedui.v1 import common_pb2, lookup_pb2, pseudonym_pb2

SEED = 11


def _serve(cfg: Path, env: dict) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "hedui.node.cli", "node", "serve", "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                         preexec_fn=exec_dies_with_parent)  # dies with this process (node/procs.py)
    line = p.stdout.readline()
    if "serving on" not in line:
        raise SystemExit(f"node replica did not start: {line!r}")
    return p


def _tokens(hub, client: PeerClient, n: int) -> list[bytes]:
    m = hub.directory.member("hrss")
    state = oprf.blind([resident(i, SEED).id_number for i in range(1, n + 1)])
    ev = client.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(
        context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="B-1", request_id=os.urandom(16)),
        epoch=1, blinded_elements=state.blinded), timeout=30)
    return oprf.finalize(state, list(ev.evaluated_elements), ev.proof, bytes(m.oprf_keys[0].public_key))


def _requests(hub, tokens: list[bytes], n: int) -> list[lookup_pb2.LookupRequest]:
    out = []
    for i in range(n):
        toks = [tokens[(4 * i + k) % len(tokens)] for k in range(4)]
        ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref=f"B-{i % 97}",
                                        consent_digest=bytes([i % 251]) * 32, request_id=os.urandom(16))
        ctx.consent.CopyFrom(issue_for_context(hub.signer, "hub", ctx, members=4, issued_at=hub.clock.now()))
        out.append(lookup_pb2.LookupRequest(context=ctx, epoch=1, tokens=toks,
                                            queries=[lookup_pb2.FieldQuery(field="wages_12m")], reference_month="2026-08"))
    return out


def _round(client: PeerClient, reqs: list, concurrency: int) -> float:
    def one(r) -> None:
        resp = client.lookup.Lookup(r, timeout=60)
        if not resp.answer.signatures:
            raise AssertionError("unsigned answer")

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, reqs))
    return len(reqs) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--residents", type=int, default=400)
    ap.add_argument("--requests", type=int, default=200, help="Lookup rpcs per round")
    ap.add_argument("--concurrency", type=int, default=6, help="at most a caller's share of one node's call slots (6 of 8)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.reps < 3:
        raise SystemExit("--reps: want at least 3 (min/median)")
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp, pgpair.primary_and_replica() as pair:
        port_b = free_port()
        hrss = MemberPlan("hrss", "hrss", ["provider"], extra_spec={"replica_endpoints": [f"127.0.0.1:{port_b}"]},
                          extra_config={"store": {"read_database_url": pair.replica_url}})
        members = [MemberPlan("hub", "hub", ["hub"]), hrss]
        tb = Testbed(Path(tmp) / "fed", members, residents=a.residents, data_seed=SEED,
                     store=lambda code: pair.primary_url if code == "hrss" else "sqlite:///node.db")
        tb.create()
        # No quota in the way of a benchmark: Lookup unlimited (0) for the hub.
        tb.policy = [dict(r, per_minute=0, per_day=0) if r["method"].endswith("Lookup") else r for r in default_policy(members)]
        tb.sign_directory()
        os.environ[PASSPHRASE_ENV] = tb.passphrase
        env = {**os.environ, PASSPHRASE_ENV: tb.passphrase}
        tb.build_indexes()
        pair.wait_replayed()
        cfg_a = tb.config_path("hrss")
        cfg_b = cfg_a.with_name("node-b.toml")
        cfg_b.write_text(cfg_a.read_text().replace(f"127.0.0.1:{hrss.port}", f"127.0.0.1:{port_b}"))
        try:
            procs += [_serve(cfg_a, env), _serve(cfg_b, env)]
            tb.start(["hub"])
            hub = tb.runtime("hub")
            creds = channel_credentials(hub.ca_pem, hub.tls_cert_pem, hub.tls_key_pem)
            endpoint = hub.directory.member("hrss").endpoint
            pin = PinningInterceptor("hrss", endpoint, hub.ca_pem, lambda: hub.directory.cert_fingerprints("hrss"),
                                     client=(hub.tls_cert_pem, hub.tls_key_pem))
            clients = {"one": PeerClient(endpoint, creds, code="hrss", pin=pin), "two": PeerClient.to_member(hub, "hrss")}
            tokens = _tokens(hub, clients["one"], min(a.residents, 256))
            rates: dict[str, list[float]] = {"one": [], "two": []}
            for name in ("one", "two"):                      # warm-up
                _round(clients[name], _requests(hub, tokens, a.requests // 4), a.concurrency)
            ratios = []
            for k in range(a.reps):
                order = ("one", "two") if k % 2 == 0 else ("two", "one")
                got = {}
                for name in order:
                    reqs = _requests(hub, tokens, a.requests)
                    got[name] = _round(clients[name], reqs, a.concurrency)
                    rates[name].append(got[name])
                ratios.append(got["two"] / got["one"])
            for c in clients.values():
                c.close()
        finally:
            tb.stop()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    rows = [{"replicas": name, "lookups_per_s_min": min(v), "lookups_per_s_median": statistics.median(v),
             "rounds": len(v)} for name, v in rates.items()]
    report("Lookup throughput, one vs two node replicas (PostgreSQL primary + streaming replica)", rows,
           json_out=a.json, extra={"ratio_two_over_one_min": min(ratios), "ratio_two_over_one_median": statistics.median(ratios),
                                   "requests_per_round": a.requests, "concurrency": a.concurrency,
                                   "tokens_per_lookup": 4, "load_average": os.getloadavg()[0]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
