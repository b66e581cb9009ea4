"""``hedui node probe PEER``: why can this node not talk to that one? (issue 17 item 5)

Step by step, stopping at the first that fails, so the answer names one cause:

1. ``directory`` — the peer is a member of our directory (and not in maintenance);
2. ``dns`` — its endpoint host resolves;
3. ``tcp`` — a TCP connection opens (refused or timed out: **firewall closed**, or nothing listening);
4. ``tls`` — a TLS handshake without our certificate shows a server certificate that chains to
   the federation CA, names the host, and is the one the directory lists for the peer;
5. ``mtls`` — ``NodeService/Ping`` with our certificate: UNAVAILABLE after a good TLS step
   means the peer refused our certificate (**certificate rejected**); PERMISSION_DENIED
   NOT_A_MEMBER means the peer's directory does not know us (**membership**);
6. ``policy`` — the directory gives us at least one rule at the peer (else **not allowed**).

Each step is a dict ``{"step", "ok", "detail"}``; the verdict is the first failed step's
``kind`` (firewall_closed, certificate_rejected, not_a_member, not_allowed, ...) or ``ok``.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

import grpc

from hedui.keys.ca import pem_fingerprint
from hedui.keys.directory import TrustedDirectory

__all__ = ["ProbeResult", "probe"]


@dataclass
class ProbeResult:
    peer: str
    verdict: str = "ok"
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def step(self, name: str, ok: bool, detail: str, kind: str = "") -> bool:
        self.steps.append({"step": name, "ok": ok, "detail": detail})
        if not ok and self.verdict == "ok":
            self.verdict = kind or name
        return ok

    def as_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "verdict": self.verdict, "ok": self.ok, "steps": self.steps}


def probe(directory: TrustedDirectory, me: str, peer: str, *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes,
          timeout: float = 5.0, endpoint: str | None = None) -> ProbeResult:
    r = ProbeResult(peer)
    m = directory.by_code.get(peer)
    if not r.step("directory", m is not None,
                  f"{peer} in directory v{directory.version}" if m is not None else
                  f"{peer}: not a member of directory v{directory.version}", "not_in_directory"):
        return r
    assert m is not None
    if getattr(m, "maintenance", False):
        r.step("directory", False, f"{peer}: in maintenance (directory v{directory.version})", "maintenance")
        return r
    endpoint = endpoint or m.endpoint
    host, _, port_s = endpoint.rpartition(":")
    host = host.strip("[]")
    try:
        addrs = socket.getaddrinfo(host, int(port_s), type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError) as exc:
        r.step("dns", False, f"{host}: does not resolve ({exc})", "dns_failed")
        return r
    r.step("dns", True, f"{host} → {', '.join(sorted({str(a[4][0]) for a in addrs}))}")
    try:
        with socket.create_connection((host, int(port_s)), timeout=timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        r.step("tcp", False, f"{endpoint}: {why} (firewall closed or nothing listening)", "firewall_closed")
        return r
    r.step("tcp", True, f"{endpoint}: connected")
    if not _tls_step(r, host, int(port_s), ca_pem, directory.cert_fingerprints(peer), timeout):
        return r
    if not _mtls_step(r, endpoint, ca_pem, cert_pem, key_pem, timeout):
        return r
    rules = [x for x in directory.msg.policy if x.caller == me and x.provider == peer]
    r.step("policy", bool(rules),
           f"{len(rules)} rule(s) for {me} at {peer}: {', '.join(sorted({x.method for x in rules}))}" if rules
           else f"directory v{directory.version} gives {me} no rule at {peer} (not allowed)", "not_allowed")
    return r


def _tls_step(r: ProbeResult, host: str, port: int, ca_pem: bytes, want: set[bytes], timeout: float) -> bool:
    ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True) or b""
    except ssl.SSLCertVerificationError as exc:
        return r.step("tls", False, f"server certificate refused by us: {exc.verify_message}", "server_certificate_rejected")
    except ssl.SSLError as exc:
        # TLS 1.2 servers that require a client certificate fail the handshake here; that
        # is not the server's fault: the mTLS step says whether ours is accepted.
        if "CERTIFICATE_REQUIRED" in str(exc) or "HANDSHAKE_FAILURE" in str(exc):
            return r.step("tls", True, "server requires a client certificate (expected)")
        return r.step("tls", False, f"TLS handshake failed: {exc.reason}", "tls_failed")
    except OSError as exc:
        return r.step("tls", False, f"TLS: {exc}", "tls_failed")
    fp = pem_fingerprint(ssl.DER_cert_to_PEM_cert(der).encode("ascii"))
    if fp not in want:
        return r.step("tls", False, f"server certificate sha256 {fp.hex()[:16]}…, want one the directory lists "
                      f"({', '.join(sorted(w.hex()[:16] + '…' for w in want))})", "certificate_mismatch")
    return r.step("tls", True, f"server certificate matches the directory (sha256 {fp.hex()[:16]}…)")


def _mtls_step(r: ProbeResult, endpoint: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, timeout: float) -> bool:
    from hedui.node.client import PeerClient, channel_credentials
    from hedui.v1 import node_pb2

    with PeerClient(endpoint, channel_credentials(ca_pem, cert_pem, key_pem)) as c:
        try:
            resp = c.node.Ping(node_pb2.PingRequest(nonce=b"probe"), timeout=timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.PERMISSION_DENIED and details.startswith("NOT_A_MEMBER"):
                return r.step("mtls", False, f"peer does not know our certificate: {details}", "not_a_member")
            if code == grpc.StatusCode.UNAVAILABLE and ("handshake" in details.lower() or "ssl" in details.lower()
                                                         or "connect" in details.lower() or "socket" in details.lower()):
                return r.step("mtls", False, f"peer refused our certificate ({details[:120]})", "certificate_rejected")
            return r.step("mtls", False, f"Ping: {code.name} {details[:160]}", "mtls_failed")
    return r.step("mtls", True, f"Ping answered by {resp.member} (directory v{resp.directory_version}), "
                  f"we are {resp.caller}")


