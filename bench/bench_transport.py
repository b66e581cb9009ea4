"""Issue 3 benchmark: a trivial node rpc (NodeService.Ping) over mTLS through the full node
stack (caller identification from the certificate, directory membership, error mapping,
metrics) against a bare grpcio echo server with the same TLS set-up (the transport floor),
measured in the same run; and the cost of a new connection (mTLS vs insecure handshake).

    python bench/bench_transport.py [--calls 3000] [--threads 8] [--json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, report

from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import channel_credentials
from hedui.node.server import server_options
from hedui.node.testbed import MemberPlan, Testbed
from hedui.v1 import node_pb2, node_pb2_grpc


class _Echo(node_pb2_grpc.NodeServiceServicer):
    def Ping(self, request, context):
        return node_pb2.PingResponse(nonce=request.nonce, member="echo")


def _bare_server(rt, secure: bool) -> tuple[grpc.Server, int]:
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=server_options())
    node_pb2_grpc.add_NodeServiceServicer_to_server(_Echo(), s)
    if secure:
        creds = grpc.ssl_server_credentials([(rt.tls_key_pem, rt.tls_cert_pem)], root_certificates=rt.ca_pem, require_client_auth=True)
        port = s.add_secure_port("127.0.0.1:0", creds)
    else:
        port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    return s, port


def _latency(stub, n: int) -> list[float]:
    req = node_pb2.PingRequest(nonce=b"12345678")
    out = []
    for _ in range(n):
        t = time.perf_counter()
        stub.Ping(req, timeout=10)
        out.append(time.perf_counter() - t)
    return out


def _throughput(stub, n: int, threads: int) -> float:
    req = node_pb2.PingRequest(nonce=b"12345678")
    per = n // threads
    barrier = threading.Barrier(threads + 1)

    def work():
        barrier.wait()
        for _ in range(per):
            stub.Ping(req, timeout=10)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return per * threads / (time.perf_counter() - t0)


def _handshakes(target: str, creds, n: int) -> list[float]:
    out = []
    req = node_pb2.PingRequest()
    for _ in range(n):
        t = time.perf_counter()
        ch = grpc.secure_channel(target, creds) if creds is not None else grpc.insecure_channel(target)
        node_pb2_grpc.NodeServiceStub(ch).Ping(req, timeout=10)
        out.append(time.perf_counter() - t)
        ch.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--handshakes", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tb = Testbed(Path(d) / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("echo", "echo", ["hub"])])
        tb.create()
        os.environ[PASSPHRASE_ENV] = tb.passphrase
        tb.start(["hub"])
        rt = tb.runtime("hub")
        creds = channel_credentials(rt.ca_pem, rt.tls_cert_pem, rt.tls_key_pem)
        bare, bare_port = _bare_server(rt, True)
        plain, plain_port = _bare_server(rt, False)
        node_ch = grpc.secure_channel(f"127.0.0.1:{tb.servers['hub'].port}", creds)
        bare_ch = grpc.secure_channel(f"127.0.0.1:{bare_port}", creds)
        node_stub, bare_stub = node_pb2_grpc.NodeServiceStub(node_ch), node_pb2_grpc.NodeServiceStub(bare_ch)
        rows = []
        try:
            for stub in (node_stub, bare_stub):  # warm up both
                _latency(stub, 200)
            # Interleave the two in rounds so machine noise hits both alike.
            lat = {"node": [], "bare": []}
            tput = {"node": [], "bare": []}
            for _ in range(3):
                lat["node"] += _latency(node_stub, a.calls // 3)
                lat["bare"] += _latency(bare_stub, a.calls // 3)
                tput["node"].append(_throughput(node_stub, a.calls, a.threads))
                tput["bare"].append(_throughput(bare_stub, a.calls, a.threads))
            for k, label in (("node", "hedui Ping (mTLS, full node stack)"), ("bare", "bare grpcio echo (same mTLS)")):
                rows.append({
                    "server": label, "p50 µs": percentile(lat[k], 50) * 1e6, "p99 µs": percentile(lat[k], 99) * 1e6,
                    f"calls/s ({a.threads} threads)": max(tput[k]),
                })
            hs_tls = _handshakes(f"127.0.0.1:{bare_port}", creds, a.handshakes)
            hs_plain = _handshakes(f"127.0.0.1:{plain_port}", None, a.handshakes)
        finally:
            node_ch.close()
            bare_ch.close()
            bare.stop(0)
            plain.stop(0)
            tb.stop()
        extra = {
            "latency ratio node/bare (p50)": round(rows[0]["p50 µs"] / rows[1]["p50 µs"], 2),
            "throughput ratio node/bare": round(rows[0][f"calls/s ({a.threads} threads)"] / rows[1][f"calls/s ({a.threads} threads)"], 2),
            "new connection + first call, mTLS p50 ms": round(percentile(hs_tls, 50) * 1e3, 2),
            "new connection + first call, insecure p50 ms": round(percentile(hs_plain, 50) * 1e3, 2),
            "handshake ratio mTLS/insecure": round(percentile(hs_tls, 50) / percentile(hs_plain, 50), 2),
        }
        report("bench_transport", rows, json_out=a.json, extra=extra)


if __name__ == "__main__":
    main()
