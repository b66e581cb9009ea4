"""Calling other members: one mTLS channel per peer, stubs for every service."""

from __future__ import annotations

import grpc

from hedui.v1 import audit_pb2_grpc, lookup_pb2_grpc, node_pb2_grpc, notice_pb2_grpc, pseudonym_pb2_grpc

__all__ = ["PeerClient", "channel_credentials"]


def channel_credentials(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)


class PeerClient:
    """Stubs to one peer. The server's certificate must chain to the federation CA and carry
    the endpoint host as SAN; the peer's answers are signed, so they are checked against the
    directory's signing key as well."""

    def __init__(self, endpoint: str, creds: grpc.ChannelCredentials, *, code: str = "") -> None:
        self.code = code
        self.endpoint = endpoint
        self.channel = grpc.secure_channel(
            endpoint,
            creds,
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.enable_retries", 0),
                # A peer that restarts should be reachable again within a second, not after
                # gRPC's default reconnect backoff (which grows to two minutes).
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self.node = node_pb2_grpc.NodeServiceStub(self.channel)
        self.pseudonym = pseudonym_pb2_grpc.PseudonymServiceStub(self.channel)
        self.lookup = lookup_pb2_grpc.LookupServiceStub(self.channel)
        self.notice = notice_pb2_grpc.NoticeServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)

    @classmethod
    def to_member(cls, rt, code: str) -> "PeerClient":
        m = rt.directory.member(code)
        return cls(m.endpoint, channel_credentials(rt.ca_pem, rt.tls_cert_pem, rt.tls_key_pem), code=code)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "PeerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
