"""Who is calling: the peer's TLS client certificate, matched against the directory.

In a node of several processes (node/front/) the TLS connection ends at the front, which
passes each admitted call on to a worker process over a unix socket, with the client
certificate it verified in the call's metadata (:data:`FORWARDED_CERT`). A worker reads the
certificate from there only when :func:`trust_front` was called in its process (the worker's
entry point does, before it serves) **and** the call came over a unix socket without TLS: a
worker has no TCP listener, and in any other process — or on any TCP listener — the metadata
is ignored and the TLS layer's certificate is the only one that counts.
"""

from __future__ import annotations

import functools

import grpc

from hedui.keys.ca import pem_fingerprint
from hedui.keys.directory import TrustedDirectory
from hedui.keys.errors import CertificateError
from hedui.node.errors import PermissionDenied, Reason, Unauthenticated
from hedui.v1 import directory_pb2

__all__ = ["caller_of", "peer_cert_pem", "trust_front", "FORWARDED_CERT"]

#: Metadata key of the client certificate (PEM) the front verified, on a worker's unix socket.
FORWARDED_CERT = "x-hedui-front-peer-cert-bin"

_front_trusted = False


def trust_front() -> None:
    """Called once by a worker process (node/front/worker.py) before it serves on its unix
    socket: calls arriving over a unix socket carry the front's verified peer certificate."""
    global _front_trusted
    _front_trusted = True


def peer_cert_pem(context: grpc.ServicerContext) -> bytes | None:
    """The client certificate (PEM) of the call: the TLS layer's, or — in a worker, for a call
    from the front over its unix socket — the one the front verified."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert") or []
    if pems:
        return bytes(pems[0])
    if _front_trusted and auth.get("transport_security_type") == [b"insecure"] and context.peer().startswith("unix:"):
        for key, value in context.invocation_metadata() or ():
            if key == FORWARDED_CERT:
                return bytes(value)
    return None


@functools.lru_cache(maxsize=1024)
def _fingerprint(pem: bytes) -> bytes:
    # Parsing the PEM on every call costs more than the rest of a trivial rpc; the same
    # peer presents the same bytes on every call of a connection.
    try:
        return pem_fingerprint(pem)
    except CertificateError:
        raise Unauthenticated("peer: client certificate unreadable", reason=Reason.BAD_CLIENT_CERT) from None


def caller_of(context: grpc.ServicerContext, directory: TrustedDirectory) -> directory_pb2.Member:
    """The directory member whose certificate the peer presented.

    The TLS layer already required a client certificate chaining to the federation CA; here
    the exact certificate must be the one the directory lists (a revoked or replaced
    certificate from the same CA is refused).
    """
    pem = peer_cert_pem(context)
    if pem is None:
        raise Unauthenticated("peer: got no client certificate, want a federation member certificate", reason=Reason.NO_CLIENT_CERT)
    fp = _fingerprint(pem)
    member = directory.by_cert.get(fp)
    if member is None:
        raise PermissionDenied(
            f"peer: certificate {fp.hex()[:16]}… is not in directory v{directory.version}",
            reason=Reason.NOT_A_MEMBER,
        )
    return member
