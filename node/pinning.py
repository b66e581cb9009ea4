"""Pinned peers (issue 18 part B, item 4): a client checks that the server it reached
presents the certificate the directory lists for the member it meant to reach.

gRPC's Python client checks the chain to the federation CA and the endpoint host (SAN) but
exposes neither a verification callback nor the server's certificate. Every member's
certificate chains to the same CA, so on a shared host (or after a DNS/route change) another
member's server passes both checks. The pin closes that: before a channel's first call, the
client makes one TLS 1.3 handshake to the endpoint (chain checked against the federation CA;
in TLS 1.3 the server's certificate arrives before it asks for the client's, so no client
key is needed for this), hashes the DER certificate (SHA-256) and compares it with the
member's ``tls_cert_sha256`` in the directory. A mismatch fails every call on that channel
with ``UNAUTHENTICATED`` / ``SERVER_NOT_PINNED``, audited by the caller as a failed query.
A connection failure is not cached: the next call checks again.

Residual risk, stated: the pin is checked per channel, on a separate handshake; a server
swapped between that handshake and gRPC's own is only caught at the next channel.

Replicas (issue 16): a member whose directory entry lists ``replica_endpoints`` is one
channel balanced over several servers; each must present a listed certificate. The check
probes every endpoint: a server presenting another certificate fails the channel as above;
one that cannot be reached does not hold up the others (calls go on once at least one
endpoint passed) and is probed again on a later call, after 1 s, then 2, 4 … up to 60 s,
until it passes. Until then gRPC may already send calls to it when it comes up: the same residual
risk as above, for that window.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import grpc

__all__ = ["PinError", "PinningInterceptor", "server_fingerprint"]


class PinError(grpc.RpcError):
    """A refused or failed pin check, shaped like a peer's status so callers treat it as one."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def server_fingerprint(endpoint: str, ca_pem: bytes, timeout: float = 5.0, *, client: tuple[bytes, bytes] | None = None) -> bytes:
    """SHA-256 of the DER certificate the server at ``host:port`` presents (chain checked
    against ``ca_pem``; the host name is gRPC's to check). ``client``: our (certificate, key)
    PEM, presented so the server completes the handshake instead of logging a refused one."""
    host, _, port = endpoint.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    ctx.set_alpn_protocols(["h2"])
    if client is not None:
        _load_client(ctx, *client)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock, \
            ctx.wrap_socket(sock, server_hostname=None) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("server presented no certificate")
    return hashlib.sha256(der).digest()


def _load_client(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # ssl loads a chain from a path only: an anonymous in-memory file (memfd, Linux), so the
    # decrypted key never touches a disk. Elsewhere the probe goes without a client cert.
    if not hasattr(os, "memfd_create"):
        return
    fd = os.memfd_create("hedui-pin", 0)
    try:
        os.write(fd, cert_pem + b"\n" + key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class PinningInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Checks the pin once per channel before its first call (see the module docstring)."""

    #: Seconds before the first re-probe of a replica that could not be reached (issue 16),
    #: doubling up to MAX_RETRY_SECONDS while it stays away (a probe of a host that drops
    #: packets holds the channel's calls up to its timeout).
    RETRY_SECONDS = 1.0
    MAX_RETRY_SECONDS = 60.0

    def __init__(self, code: str, endpoint: str, ca_pem: bytes, expected: Callable[[], bytes | Collection[bytes]],
                 probe: Callable[[str, bytes], bytes] | None = None, *, client: tuple[bytes, bytes] | None = None,
                 replicas: tuple[str, ...] = ()) -> None:
        self.code, self.endpoint, self.ca_pem = code, endpoint, ca_pem
        self.replicas = tuple(replicas)
        self._expected = expected
        self._probe = probe or (lambda e, ca: server_fingerprint(e, ca, client=client))
        self._ok = False
        self._pinned: set[str] = set()      # endpoints that presented a listed certificate
        self._retry_at = 0.0                # monotonic time of the next probe of the others
        self._retry = self.RETRY_SECONDS
        self._lock = threading.Lock()

    def _done(self) -> bool:
        return self._ok and (len(self._pinned) == 1 + len(self.replicas) or time.monotonic() < self._retry_at)

    def check(self) -> None:
        if self._done():
            return
        with self._lock:
            if self._done():
                return
            # One fingerprint, or every one the directory lists for the member: its current
            # certificate and any renewed one during the overlap (issue 17's renewed_tls_cert_sha256).
            exp = self._expected()
            wants = {exp} if isinstance(exp, bytes) else {bytes(f) for f in exp}
            wants.discard(b"")
            failed: Exception | None = None
            for endpoint in (self.endpoint, *self.replicas):
                if endpoint in self._pinned:
                    continue
                try:
                    got = self._probe(endpoint, self.ca_pem)
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    failed = failed or exc
                    continue
                if got not in wants:
                    raise PinError(
                        grpc.StatusCode.UNAUTHENTICATED,
                        f"SERVER_NOT_PINNED: {self.code} at {endpoint} presented certificate {got.hex()[:16]}, "
                        f"want {' or '.join(sorted(w.hex()[:16] for w in wants)) or 'one listed in the directory'}",
                    )
                self._pinned.add(endpoint)
            if not self._pinned:
                where = self.endpoint if not self.replicas else f"{self.endpoint} and {len(self.replicas)} replica(s)"
                raise PinError(grpc.StatusCode.UNAVAILABLE,
                               f"UNAVAILABLE: {self.code} at {where}: pin check could not connect ({type(failed).__name__})")
            if self._ok:   # a re-probe that still missed one: wait longer before the next
                self._retry = min(self._retry * 2, self.MAX_RETRY_SECONDS)
            self._retry_at = time.monotonic() + self._retry
            self._ok = True

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        self.check()
        return continuation(client_call_details, request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        self.check()
        return continuation(client_call_details, request)
