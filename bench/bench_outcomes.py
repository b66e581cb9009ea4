"""Issue 17 item 3 benchmark: what the per-peer outcome counter (``hedui_rpc_outcomes_total``,
side "called": a client interceptor on every call a node makes) costs per call.

A hub and a provider of the testbed on loopback (mutual TLS, the full node stack on the
server side); NodeService.Ping from the hub to the provider over two channels that differ only
in the counter: baseline (pin check + traceparent) and candidate (the same + the counter).
Warm-up, then rounds interleaved baseline/candidate in the same run; per round the mean
latency per call; min and median over the rounds, and their ratio.

    python bench/bench_outcomes.py [--calls 200] [--rounds 30] [--json]
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
from _common import report

from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import PeerClient, channel_credentials, pin_for
from hedui.node.metrics import Metrics
from hedui.node.testbed import MemberPlan, Testbed
from hedui.v1 import node_pb2


def _client(hub, metrics: Metrics | None) -> PeerClient:
    m = hub.directory.member("tax")
    return PeerClient(m.endpoint, channel_credentials(hub.ca_pem, hub.tls_cert_pem, hub.tls_key_pem), code="tax",
                      pin=pin_for(hub.directory, "tax", hub.ca_pem, (hub.tls_cert_pem, hub.tls_key_pem)), metrics=metrics)


def _round(client: PeerClient, n: int) -> float:
    req = node_pb2.PingRequest(nonce=b"12345678")
    t = time.perf_counter()
    for _ in range(n):
        client.node.Ping(req, timeout=10)
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200, help="calls per round")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tb = Testbed(Path(tmp) / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                     residents=10).create()
        os.environ[PASSPHRASE_ENV] = tb.passphrase
        tb.start()
        try:
            hub = tb.runtime("hub")
            counted = Metrics()
            base, cand = _client(hub, None), _client(hub, counted)
            for c in (base, cand):
                _round(c, 200)  # warm-up: channel, TLS, pin check, server threads
            b, c = [], []
            for _ in range(a.rounds):
                b.append(_round(base, a.calls))
                c.append(_round(cand, a.calls))
            n = counted.registry.get_sample_value("hedui_rpc_outcomes_total", {
                "side": "called", "method": "/hedui.v1.NodeService/Ping", "peer": "tax", "outcome": "ok"})
            assert n == 200 + a.rounds * a.calls, n   # the candidate did count every call
            base.close()
            cand.close()
        finally:
            tb.stop()
    us = 1e6
    rows = [
        {"channel": "baseline (pin + traceparent)", "min µs/call": min(b) * us, "median µs/call": statistics.median(b) * us},
        {"channel": "candidate (+ outcome counter)", "min µs/call": min(c) * us, "median µs/call": statistics.median(c) * us},
    ]
    report("outcome counter per call (NodeService.Ping, mTLS, loopback)", rows, json_out=a.json,
           extra={"ratio candidate/baseline (min)": round(min(c) / min(b), 3),
                  "ratio candidate/baseline (median)": round(statistics.median(c) / statistics.median(b), 3),
                  "calls per round": a.calls, "rounds": a.rounds})


if __name__ == "__main__":
    main()
