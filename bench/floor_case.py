"""The case floor (issue 16 item 7): the minimal implementation of Hedui's case protocol, the
baseline ``bench_case.py`` compares a household case with.

Same libraries, same crypto, same rpcs as a Hedui case, nothing else:

* the hub blinds the members' identity numbers (RFC 9497 VOPRF, ristretto255-SHA512), asks
  each provider ``PseudonymService.Evaluate`` over mutual TLS with the members' own
  certificates, verifies the batched DLEQ proof and finalises the tokens;
* then ``LookupService.Lookup`` with those tokens, the same field and reference month; the
  provider refuses a repeated request id, reads the facts from the same token index, derives
  the answers with the same catalogue code, DSSE-signs the answer with its signing key and
  records the exchange (request id, counts, answer digest) in **one commit** of its own store;
* the hub verifies the answer's DSSE signature and records the case's answers in **one
  commit** of its own store.

So a case against 8 providers costs 16 rpcs and 9 commits (one per side per exchange), with
no policy engine, no audit log, no metrics, no retries: what Hedui's hot path could cost if
everything but the protocol were free. Servers and stores are those of the bench federation
(same certificates, same node databases, same SQLite/PostgreSQL settings).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

import grpc
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, insert

from hedui.common.periods import parse_month
from hedui.keys import dsse, oprf
from hedui.keys.oprf import ServerKey
from hedui.node.client import channel_credentials
from hedui.node.server import server_options
from hedui.node.verification.answer import derive, window_of
from hedui.node.verification.index import facts_for_tokens
from hedui.v1 import common_pb2, lookup_pb2, lookup_pb2_grpc, pseudonym_pb2, pseudonym_pb2_grpc

__all__ = ["FloorFederation"]

_md = MetaData()
# One row per exchange on the provider: what an audit entry of the exchange would carry.
floor_exchanges = Table(
    "floor_exchanges", _md,
    Column("request_id", LargeBinary(16), primary_key=True),
    Column("case_ref", String(64), nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("answer_digest", LargeBinary(32), nullable=False),
)
# One row per case on the hub: the providers' answer digests.
floor_cases = Table(
    "floor_cases", _md,
    Column("case_ref", String(64), primary_key=True),
    Column("digests", LargeBinary, nullable=False),
)


class _Provider(pseudonym_pb2_grpc.PseudonymServiceServicer, lookup_pb2_grpc.LookupServiceServicer):
    def __init__(self, rt, key: ServerKey, catalogue) -> None:
        self.engine = rt.engine
        self.signer = rt.signer
        self.code = rt.member
        self.key = key
        self.cat = catalogue.by_name()
        self.seen: set[bytes] = set()
        self.lock = threading.Lock()

    def Evaluate(self, request, context):
        elements, proof = self.key.evaluate_batch(list(request.blinded_elements))
        return pseudonym_pb2.EvaluateResponse(evaluated_elements=elements, proof=proof)

    def Lookup(self, request, context):
        rid = bytes(request.context.request_id)
        with self.lock:   # replay guard (the durable record below is the real one)
            if rid in self.seen:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "request id seen")
            self.seen.add(rid)
        facts = facts_for_tokens(self.engine, request.epoch, list(request.tokens))
        ans = lookup_pb2.LookupAnswer(provider=self.code)
        ref = parse_month(request.reference_month)
        for tok in request.tokens:
            have = facts.get(bytes(tok))
            ta = ans.members.add(token=tok, found=have is not None)
            for q in request.queries:
                fd = self.cat[q.field]
                fa = ta.fields.add(field=q.field)
                if have is not None:
                    d = derive(fd, have, window_of(fd, ref))
                    fa.state, fa.present, fa.value, fa.as_of = d.state, d.present, d.value, d.as_of
        payload = ans.SerializeToString()
        env = dsse.sign(dsse.ANSWER, payload, [self.signer])
        with self.engine.begin() as c:   # the provider's one commit of this exchange
            c.execute(insert(floor_exchanges).values(
                request_id=rid, case_ref=request.context.case_ref, tokens=len(request.tokens),
                answer_digest=hashlib.sha256(payload).digest()))
        return lookup_pb2.LookupResponse(answer=env)


def _serve(config: str) -> None:
    """``python floor_case.py --serve node.toml``: one floor provider as its own process (as
    Hedui's providers run, issue 16 item 5) on a free port of its member's host, with the
    member's TLS key, OPRF key, catalogue and store; prints the port, serves until stdin closes."""
    from pathlib import Path

    from hedui.keys.keyfile import load_secret
    from hedui.node.runtime import Runtime
    from hedui.node.verification.catalogue import load_catalogue
    from hedui.node.verification.provider import OPRF_SEED_LABEL

    rt = Runtime.open(Path(config))
    p = rt.config.provider
    seed = load_secret(rt.config.path(p.oprf_seed), rt.passphrase, label=OPRF_SEED_LABEL)
    _md.create_all(rt.engine)
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=server_options())
    svc = _Provider(rt, ServerKey.derive(seed, p.epoch), load_catalogue(rt.config.path(p.fields)))
    pseudonym_pb2_grpc.add_PseudonymServiceServicer_to_server(svc, s)
    lookup_pb2_grpc.add_LookupServiceServicer_to_server(svc, s)
    host = rt.directory.member(rt.member).endpoint.rsplit(":", 1)[0]
    port = s.add_secure_port(f"{host}:0", grpc.ssl_server_credentials(
        [(rt.tls_key_pem, rt.tls_cert_pem)], root_certificates=rt.ca_pem, require_client_auth=True))
    s.start()
    print(port, flush=True)
    sys.stdin.read()
    s.stop(0)


class FloorFederation:
    """Floor servers for ``providers`` (runtimes of the bench federation), each on a new port
    of its member's host with the member's TLS key, and the hub's client side. With
    ``configs`` (the providers' node.toml paths) and ``env`` each floor provider runs as its
    own process, as Hedui's nodes do in ``bench_case.py``."""

    def __init__(self, hub_rt, provider_rts: Sequence, key: ServerKey, catalogue, field: str, reference_month: str,
                 *, configs: Sequence | None = None, env: dict | None = None) -> None:
        self.hub = hub_rt
        self.key_pub = key.public_key_bytes
        self.field = field
        self.month = reference_month
        _md.create_all(hub_rt.engine)
        creds = channel_credentials(hub_rt.ca_pem, hub_rt.tls_cert_pem, hub_rt.tls_key_pem)
        self.servers, self.channels, self.peers = [], [], []
        self.procs: list[subprocess.Popen] = []
        for i, rt in enumerate(provider_rts):
            _md.create_all(rt.engine)
            if configs is not None:
                proc = subprocess.Popen([sys.executable, __file__, "--serve", str(configs[i])], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env={**os.environ, **(env or {})})
                self.procs.append(proc)
                host = hub_rt.directory.member(rt.member).endpoint.rsplit(":", 1)[0]
                ch = grpc.secure_channel(f"{host}:{int(proc.stdout.readline())}", creds)  # type: ignore[union-attr]
                self.channels.append(ch)
                trusted = {rt.signer.keyid: rt.signer.public}
                self.peers.append((pseudonym_pb2_grpc.PseudonymServiceStub(ch), lookup_pb2_grpc.LookupServiceStub(ch), trusted))
                continue
            s = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=server_options())
            svc = _Provider(rt, key, catalogue)
            pseudonym_pb2_grpc.add_PseudonymServiceServicer_to_server(svc, s)
            lookup_pb2_grpc.add_LookupServiceServicer_to_server(svc, s)
            host = hub_rt.directory.member(rt.member).endpoint.rsplit(":", 1)[0]
            port = s.add_secure_port(f"{host}:0", grpc.ssl_server_credentials(
                [(rt.tls_key_pem, rt.tls_cert_pem)], root_certificates=rt.ca_pem, require_client_auth=True))
            s.start()
            ch = grpc.secure_channel(f"{host}:{port}", creds)
            self.servers.append(s)
            self.channels.append(ch)
            trusted = {rt.signer.keyid: rt.signer.public}
            self.peers.append((pseudonym_pb2_grpc.PseudonymServiceStub(ch), lookup_pb2_grpc.LookupServiceStub(ch), trusted))
        self.pool = ThreadPoolExecutor(max_workers=len(self.peers) * 32)
        self._n = 0
        self._lock = threading.Lock()

    def _exchange(self, peer, ids: list[str], case_ref: str) -> bytes:
        ev, lk, trusted = peer
        ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref=case_ref,
                                        consent_digest=bytes(32), request_id=os.urandom(16), operator="bench")
        st = oprf.blind(ids)
        r = ev.Evaluate(pseudonym_pb2.EvaluateRequest(context=ctx, epoch=1, blinded_elements=st.blinded), timeout=60)
        tokens = oprf.finalize(st, list(r.evaluated_elements), r.proof, self.key_pub)
        ctx.request_id = os.urandom(16)
        resp = lk.Lookup(lookup_pb2.LookupRequest(context=ctx, epoch=1, tokens=tokens, reference_month=self.month,
                                                  queries=[lookup_pb2.FieldQuery(field=self.field)]), timeout=60)
        payload, _ = dsse.verify(resp.answer, trusted, payload_type=dsse.ANSWER)
        lookup_pb2.LookupAnswer.FromString(payload)
        return hashlib.sha256(payload).digest()

    def run_case(self, ids: list[str]) -> None:
        with self._lock:
            self._n += 1
            case_ref = f"FLOOR-{os.getpid()}-{self._n:07d}"
        members = list(dict.fromkeys(ids))
        digests = list(self.pool.map(lambda p: self._exchange(p, members, case_ref), self.peers))
        with self.hub.engine.begin() as c:   # the hub's one commit of this case
            c.execute(insert(floor_cases).values(case_ref=case_ref, digests=b"".join(digests)))

    def run(self, households: list[list[str]], conc: int) -> tuple[list[float], float]:
        lat: list[float] = []
        lock = threading.Lock()

        def one(h: list[str]) -> None:
            t = time.perf_counter()
            self.run_case(h)
            with lock:
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=conc) as pool:
            list(pool.map(one, households))
        return lat, len(households) / (time.perf_counter() - t0)

    def close(self) -> None:
        self.pool.shutdown()
        for ch in self.channels:
            ch.close()
        for s in self.servers:
            s.stop(0)
        for proc in self.procs:
            proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"] and len(sys.argv) == 3:
        _serve(sys.argv[2])
    else:
        raise SystemExit("usage: floor_case.py --serve node.toml (bench_case.py runs the floor)")
