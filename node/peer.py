"""Who is calling: the peer's TLS client certificate, matched against the directory."""

from __future__ import annotations

import functools

import grpc

from hedui.keys.ca import pem_fingerprint
from hedui.keys.directory import TrustedDirectory
from hedui.keys.errors import CertificateError
from hedui.node.errors import PermissionDenied, Reason, Unauthenticated
from hedui.v1 import directory_pb2

__all__ = ["caller_of"]


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
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        raise Unauthenticated("peer: got no client certificate, want a federation member certificate", reason=Reason.NO_CLIENT_CERT)
    fp = _fingerprint(bytes(pems[0]))
    member = directory.by_cert.get(fp)
    if member is None:
        raise PermissionDenied(
            f"peer: certificate {fp.hex()[:16]}… is not in directory v{directory.version}",
            reason=Reason.NOT_A_MEMBER,
        )
    return member
