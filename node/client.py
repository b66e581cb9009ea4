"""Calling other members: one mTLS channel per peer, stubs for every service."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import grpc

from hedui.keys.directory import TrustedDirectory
from hedui.node import logs
from hedui.node.metrics import outcome_class
from hedui.node.pinning import PinningInterceptor
from hedui.v1 import audit_pb2_grpc, lookup_pb2_grpc, node_pb2_grpc, notice_pb2_grpc, pseudonym_pb2_grpc

if TYPE_CHECKING:
    from hedui.node.metrics import Metrics
    from hedui.node.runtime import Runtime

__all__ = ["PeerClient", "Peers", "channel_credentials", "pin_for", "balanced_target"]


def pin_for(directory: TrustedDirectory, code: str, ca_pem: bytes, client: tuple[bytes, bytes] | None = None, *,
            live: Callable[[], TrustedDirectory] | None = None) -> PinningInterceptor:
    """The pin of member ``code``: its ``tls_cert_sha256`` or a ``renewed_tls_cert_sha256`` in
    the directory (node/pinning.py; issue 17's overlap); ``live``: the directory in force when
    the pin is checked (a live directory update), else ``directory``; ``client``: our
    certificate and key PEM, presented on the probe."""
    m = directory.member(code)
    current = live or (lambda: directory)
    return PinningInterceptor(code, m.endpoint, ca_pem, lambda: current().cert_fingerprints(code), client=client,
                              replicas=tuple(m.replica_endpoints))


def _addresses(endpoint: str) -> list[str]:
    """``host:port`` as IP ``addr:port`` strings (a name is resolved now, every address)."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        return [f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError:
        return []
    out = []
    for fam, *_rest, sa in infos:
        addr = str(sa[0])
        port_ = int(sa[1])
        out.append(f"[{addr}]:{port_}" if fam == socket.AF_INET6 else f"{addr}:{port_}")
    return list(dict.fromkeys(out))


def balanced_target(endpoint: str, replicas: Sequence[str]) -> tuple[str, list[tuple[str, object]]]:
    """The gRPC target and channel options for a member (issue 16 item 6): its one endpoint
    as is; with replicas, an ``ipv4:``/``ipv6:`` target listing every address of ``endpoint``
    and the replicas, balanced by gRPC's ``round_robin`` policy (each call goes to the next
    ready replica; a replica that dies leaves the rotation and comes back when it answers
    again). The TLS name checked on every replica is the host of ``endpoint``: replicas
    present the member's one certificate. Names are resolved when the channel is made."""
    if not replicas:
        return endpoint, []
    addrs: list[str] = []
    for e in (endpoint, *replicas):
        addrs.extend(_addresses(e))
    v4 = [a for a in addrs if not a.startswith("[")]
    v6 = [a for a in addrs if a.startswith("[")]
    # One target cannot mix families; IPv4 when there is any (a replica reachable only by
    # IPv6 then goes unused: list replicas by address of one family).
    target = ("ipv4:" + ",".join(dict.fromkeys(v4))) if v4 else ("ipv6:" + ",".join(dict.fromkeys(v6))) if v6 else endpoint
    host = endpoint.rpartition(":")[0].strip("[]")
    config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    return target, [("grpc.service_config", json.dumps(config)), ("grpc.ssl_target_name_override", host),
                    ("grpc.default_authority", endpoint)]


def channel_credentials(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)


class _Details(grpc.ClientCallDetails):
    def __init__(self, d: grpc.ClientCallDetails, metadata: list) -> None:
        self.method = d.method
        self.timeout = d.timeout
        self.metadata = tuple(metadata)
        self.credentials = d.credentials
        self.wait_for_ready = getattr(d, "wait_for_ready", None)
        self.compression = getattr(d, "compression", None)


class _TraceContext(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Sends the W3C ``traceparent`` of the call being handled (a child of it) and its
    request id on every outgoing call, so hub → provider is one trace (node/logs.py)."""

    @staticmethod
    def _with(d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        md = [(k, v) for k, v in (d.metadata or ()) if k not in ("traceparent",)]
        md.append(("traceparent", logs.child_traceparent()))
        return _Details(d, md)

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._with(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._with(client_call_details), request_iterator)


class _Outcomes(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Counts the outcome class of every call this node makes to peer ``code`` (issue 17 item
    3: the per-peer success rate seen from the caller, ``side="called"``), when the call ends.
    Labels: the method name and the peer's member code only."""

    def __init__(self, metrics: Metrics, code: str) -> None:
        self._metrics = metrics
        self._code = code

    def _inc(self, method: str, code_name: str) -> None:
        m = self._metrics
        m.child(m.outcomes, "called", method, self._code, outcome_class(code_name)).inc()

    def _count(self, method: str, start):  # type: ignore[no-untyped-def]
        try:
            call = start()
        except grpc.RpcError as exc:  # refused before the call went out (the pin check)
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            self._inc(method, code.name if code is not None else "UNKNOWN")
            raise

        def done(c) -> None:  # type: ignore[no-untyped-def]
            try:
                # A streamed call refused by an inner interceptor comes back as gRPC's failure
                # outcome (status INTERNAL) wrapping the real refusal: count the refusal's status.
                inner = c.exception() if callable(getattr(c, "exception", None)) else None
                src = inner if isinstance(inner, grpc.RpcError) and callable(getattr(inner, "code", None)) else c
                name = src.code().name
            except Exception:  # a call object without a status (never expected): counted as an error
                name = "UNKNOWN"
            self._inc(method, name)

        if isinstance(call, grpc.RpcError) and not hasattr(call, "add_done_callback"):
            # An inner interceptor's refusal (the pin check's PinError) is handed back by gRPC as
            # a bare exception, not a call: counted, and raised as it would be without this one.
            done(call)
            raise call
        call.add_done_callback(done)
        return call

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return self._count(client_call_details.method, lambda: continuation(client_call_details, request))

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return self._count(client_call_details.method, lambda: continuation(client_call_details, request))


class _LeanUnary:
    """A unary-unary multicallable of a peer channel, made once per channel and method (the
    stubs are built once per :class:`PeerClient`), doing inline what the three interceptors
    did per call (issue 16, the hub's side of a case): the pin check, the ``traceparent`` and
    the outcome count (issue 17 item 3, issue 18). gRPC's interceptor chain built a call
    details object, a continuation closure and an outcome wrapper per interceptor and call,
    and the counter looked up its labelled child every time; here it is cached
    (:meth:`~hedui.node.metrics.Metrics.child`). Same behaviour: a pin refusal is counted and raised before anything goes
    out (``future`` hands it back as a failed future, as gRPC's interceptor chain did)."""

    __slots__ = ("_inner", "_method", "_pin", "_metrics", "_code", "_ok")

    def __init__(self, inner: grpc.UnaryUnaryMultiCallable, method: str, pin: PinningInterceptor | None,
                 metrics: Metrics | None, code: str) -> None:
        self._inner = inner
        self._method = method
        self._pin = pin
        self._metrics = metrics if metrics is not None and code else None
        self._code = code
        self._ok = None   # the counter child of this method's successful calls, once looked up

    def _count(self, code_name: str) -> None:
        if self._metrics is not None:
            if code_name == "OK" and self._ok is not None:
                self._ok.inc()
                return
            m = self._metrics
            child = m.child(m.outcomes, "called", self._method, self._code, outcome_class(code_name))
            if code_name == "OK":
                self._ok = child
            child.inc()

    def _refused(self, exc: grpc.RpcError) -> None:
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        self._count(code.name if code is not None else "UNKNOWN")

    def _start(self, metadata):  # type: ignore[no-untyped-def]
        """Pin check (raises, counted), then the metadata with a child ``traceparent``."""
        if self._pin is not None:
            try:
                self._pin.check()
            except grpc.RpcError as exc:
                self._refused(exc)
                raise
        md = [(k, v) for k, v in metadata if k != "traceparent"] if metadata else []
        md.append(("traceparent", logs.child_traceparent()))
        return md

    def _run(self, fn, request, timeout, metadata, *rest):  # type: ignore[no-untyped-def]
        md = self._start(metadata)
        try:
            out = fn(request, timeout, md, *rest)
        except grpc.RpcError as exc:
            self._refused(exc)
            raise
        self._count("OK")
        return out

    def __call__(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None,  # type: ignore[no-untyped-def]
                 compression=None):
        return self._run(self._inner, request, timeout, metadata, credentials, wait_for_ready, compression)

    def with_call(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None,  # type: ignore[no-untyped-def]
                  compression=None):
        return self._run(self._inner.with_call, request, timeout, metadata, credentials, wait_for_ready, compression)

    def future(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None,  # type: ignore[no-untyped-def]
               compression=None):
        try:
            md = self._start(metadata)
        except grpc.RpcError as exc:
            from grpc._interceptor import _FailureOutcome

            return _FailureOutcome(exc, exc.__traceback__)  # type: ignore[arg-type]
        fut = self._inner.future(request, timeout, md, credentials, wait_for_ready, compression)

        def done(c) -> None:  # type: ignore[no-untyped-def]
            try:
                name = c.code().name
            except Exception:  # a call object without a status (never expected): an error
                name = "UNKNOWN"
            self._count(name)

        fut.add_done_callback(done)
        return fut


class _PeerChannel:
    """What a peer's stubs are built on: unary-unary methods go through :class:`_LeanUnary`,
    the streamed ones (filters, audit, notices) through gRPC's interceptor chain as before."""

    def __init__(self, channel: grpc.Channel, intercepted: grpc.Channel, pin: PinningInterceptor | None,
                 metrics: Metrics | None, code: str) -> None:
        self._channel, self._intercepted = channel, intercepted
        self._pin, self._metrics, self._code = pin, metrics, code

    def unary_unary(self, method, request_serializer=None, response_deserializer=None,  # type: ignore[no-untyped-def]
                    _registered_method=False):
        inner = self._channel.unary_unary(method, request_serializer, response_deserializer, _registered_method=_registered_method)  # type: ignore[call-arg]
        return _LeanUnary(inner, method, self._pin, self._metrics, self._code)

    def unary_stream(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self._intercepted.unary_stream(*args, **kwargs)

    def stream_unary(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self._intercepted.stream_unary(*args, **kwargs)

    def stream_stream(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self._intercepted.stream_stream(*args, **kwargs)


class PeerClient:
    """Stubs to one peer. The server's certificate must chain to the federation CA and carry
    the endpoint host as SAN; the peer's answers are signed, so they are checked against the
    directory's signing key as well."""

    def __init__(self, endpoint: str, creds: grpc.ChannelCredentials, *, code: str = "",
                 pin: PinningInterceptor | None = None, metrics: Metrics | None = None,
                 replicas: Sequence[str] = ()) -> None:
        self.code = code
        self.endpoint = endpoint
        self.replicas = tuple(replicas)
        self.pin = pin
        target, balancing = balanced_target(endpoint, self.replicas)
        self.channel = grpc.secure_channel(
            target,
            creds,
            options=[
                *balancing,
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.enable_retries", 0),
                # A peer that restarts should be reachable again within a second, not after
                # gRPC's default reconnect backoff (which grows to two minutes).
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        # Issue 18: the server must present a certificate the directory lists for `code`; the
        # pin runs first, then the traceparent (issue 17) is added to every outgoing call.
        # The outcome counter (issue 17 item 3) is outermost, so it sees a pin refusal as well.
        interceptors: list[grpc.UnaryUnaryClientInterceptor] = [_Outcomes(metrics, code)] if metrics is not None and code else []
        interceptors += [pin] if pin is not None else []
        traced = grpc.intercept_channel(self.channel, *interceptors, _TraceContext())
        # Unary calls (Evaluate, Lookup: a case's rpcs) skip the chain (_LeanUnary, issue 16).
        peer = cast(grpc.Channel, _PeerChannel(self.channel, traced, pin, metrics, code))
        self.node = node_pb2_grpc.NodeServiceStub(peer)
        self.pseudonym = pseudonym_pb2_grpc.PseudonymServiceStub(peer)
        self.lookup = lookup_pb2_grpc.LookupServiceStub(peer)
        self.notice = notice_pb2_grpc.NoticeServiceStub(peer)
        self.audit = audit_pb2_grpc.AuditServiceStub(peer)

    @classmethod
    def to_member(cls, rt: Runtime, code: str) -> PeerClient:
        """A new client to member ``code`` with ``rt``'s certificate (a node itself goes
        through :attr:`Runtime.peers <hedui.node.runtime.Runtime.peers>`, which caches them)."""
        m = rt.directory.member(code)
        return cls(m.endpoint, channel_credentials(rt.ca_pem, rt.tls_cert_pem, rt.tls_key_pem), code=code,
                   pin=pin_for(rt.directory, code, rt.ca_pem, (rt.tls_cert_pem, rt.tls_key_pem)),
                   replicas=m.replica_endpoints)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Peers:
    """The one place a node creates and caches its clients to other members: one mTLS
    channel per peer, shared by every caller on the node (cases, the pusher, cosigning)."""

    def __init__(self, directory: TrustedDirectory, credentials: grpc.ChannelCredentials, *, ca_pem: bytes | None = None,
                 client: tuple[bytes, bytes] | None = None, metrics: Metrics | None = None) -> None:
        self._directory = directory
        self._metrics = metrics
        self._client = client
        self._credentials = credentials
        self._ca_pem = ca_pem  # None: no pinning (tools dialling a bare endpoint)
        self._clients: dict[str, PeerClient] = {}
        self._lock = threading.Lock()

    def get(self, code: str) -> PeerClient:
        """The cached client to member ``code`` (dialled on first use)."""
        with self._lock:
            client = self._clients.get(code)
            if client is None:
                m = self._directory.member(code)
                pin = pin_for(self._directory, code, self._ca_pem, self._client, live=lambda: self._directory) if self._ca_pem is not None else None
                client = self._clients[code] = PeerClient(m.endpoint, self._credentials, code=code, pin=pin,
                                                          metrics=self._metrics, replicas=m.replica_endpoints)
            return client

    def update_directory(self, directory: TrustedDirectory) -> None:
        """A newer directory applied while running (node/directory_live.py): channels to peers
        whose endpoint changed or that left are closed; the rest stay open."""
        with self._lock:
            self._directory = directory
            stale = [c for code, c in self._clients.items()
                     if code not in directory.by_code or directory.by_code[code].endpoint != c.endpoint
                     or tuple(directory.by_code[code].replica_endpoints) != c.replicas]
            for c in stale:
                del self._clients[c.code]
        for c in stale:
            c.close()

    def reset(self, code: str, client: PeerClient | None = None) -> None:
        """Closes the channel to ``code`` (only if it is still ``client``, when given), so the
        next call dials afresh instead of waiting out gRPC's reconnect backoff; closing also
        cancels an RPC in flight on it."""
        with self._lock:
            current = self._clients.get(code)
            if current is None or (client is not None and current is not client):
                return
            del self._clients[code]
        current.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            c.close()
