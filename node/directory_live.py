"""The live directory (issue 17 item 1, after X-Road's global configuration): a node pulls the
signed directory from its configured sources every ``refresh_seconds``, verifies it against
the authority key (pinned by ``trust_anchor``), and applies a newer one **without restart**.

What a pull does, in order (DESIGN.md "Directory"):

1. fetch from each source in turn (``http(s)://`` URL, file path, or ``peer:CODE`` — the
   directory another member's node serves over ``NodeService/GetDirectory``) until one answers;
2. verify the DSSE signature with the authority key, the expiry against the node's clock, and
   the version: older than the current one is a rollback, the same version with other content
   a split view (keys/directory.py :func:`verify_directory`); the same one again changes nothing;
3. check this node is still the member it serves as (certificate fingerprint, signing key, CA):
   a directory that no longer lists us as we are would make us refuse every call; it is refused;
4. persist it (the local directory file, atomically, and ``node_state``'s accepted version and
   digest, so a restart and the CLI use it too) and audit ``directory.applied``;
5. swap it in: every reader takes ``rt.directory`` per call (policy, membership, notice
   verification, the hub's providers and their OPRF keys), peers whose endpoint changed are
   redialled, and health is re-evaluated.

Applied live: members (added, removed, endpoints, certificates, signing keys), policy,
field catalogues, OPRF epochs as the hub sees them, the maintenance flag. Needs a restart:
this node's own TLS certificate and key (bound into the listening socket), its listen
address, the federation CA, and a provider's own OPRF seed/epoch (node.toml).

A refused directory is logged, counted (``hedui_directory_refused_total{reason}``) and kept
out; the node keeps its current one until that expires (then the guard refuses every call).
Failed pulls back off exponentially up to ``max_backoff_seconds``
(``hedui_directory_fetch_failures`` counts them in a row).
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from hedui.keys import dsse
from hedui.keys.ca import cert_fingerprint, load_cert
from hedui.keys.directory import TrustedDirectory, directory_digest, verify_directory
from hedui.keys.signing import load_public
from hedui.node.audit.entry import Kind
from hedui.node.errors import HeduiError, Reason
from hedui.node.loops import PeriodicJob

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["DirectoryPuller", "DirectoryRefused", "MAX_DIRECTORY_BYTES", "fetch"]

log = logging.getLogger("hedui.node.directory")

#: A signed directory of a few hundred members is well below this; more is refused unread.
MAX_DIRECTORY_BYTES = 8 * 1024 * 1024


class DirectoryRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def fetch(source: str, base: Path, *, timeout: float = 10.0) -> bytes:
    """The bytes at ``source``: an http(s) URL, or a file path (relative to node.toml's folder)."""
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=timeout) as r:  # the scheme is checked above
            data: bytes = r.read(MAX_DIRECTORY_BYTES + 1)
    else:
        p = Path(source)
        with open(p if p.is_absolute() else base / p, "rb") as f:
            data = f.read(MAX_DIRECTORY_BYTES + 1)
    if len(data) > MAX_DIRECTORY_BYTES:
        raise DirectoryRefused("TOO_LARGE", f"{source}: more than {MAX_DIRECTORY_BYTES} bytes")
    return data


class DirectoryPuller(PeriodicJob):
    def __init__(self, rt: Runtime) -> None:
        d = rt.config.directory
        super().__init__("directory-pull", interval=float(d.refresh_seconds))
        self._rt = rt
        self._authority = load_public("authority", rt.config.path(d.authority_key))
        self._failures = 0
        self._listeners: list = []
        self.last_source: str | None = None
        self.last_refusal: str | None = None

    def on_applied(self, fn) -> None:  # type: ignore[no-untyped-def]
        self._listeners.append(fn)

    def step(self) -> float | None:
        cfg = self._rt.config.directory
        try:
            self.pull()
        except DirectoryRefused as exc:
            self._failures += 1
            self.last_refusal = exc.reason
            self._rt.metrics.directory_fetch_failures.set(self._failures)
            if exc.reason != Reason.FETCH_FAILED:
                self._rt.metrics.directory_refused.labels(exc.reason).inc()
            log.warning("directory refused (%s): %s; keeping v%d", exc.reason, exc.message, self._rt.directory.version)
            return float(min(cfg.refresh_seconds * 2 ** min(self._failures, 16), cfg.max_backoff_seconds))
        self._failures = 0
        self.last_refusal = None
        self._rt.metrics.directory_fetch_failures.set(0)
        return None

    def state(self) -> dict[str, object]:
        """For ``/readyz``'s ``info`` (issue 17: unreachable sources "reported in health"):
        failed pulls in a row, the last refusal's reason, the source that answered last."""
        return {"failures": self._failures, "last_refusal": self.last_refusal, "source": self.last_source}

    def pull(self) -> bool:
        """One pull; True when a newer directory was applied. Raises :class:`DirectoryRefused`."""
        rt = self._rt
        data, errors = None, []
        for src in rt.config.directory.sources:
            try:
                data = self._from_peer(src[5:]) if src.startswith("peer:") else fetch(src, rt.config.base)
                self.last_source = src
                break
            except DirectoryRefused:
                raise
            except Exception as exc:
                errors.append(f"{src}: {type(exc).__name__}")
        if data is None:
            raise DirectoryRefused(Reason.FETCH_FAILED.value, "no source answered (" + "; ".join(errors) + ")")
        try:
            env = dsse.from_json(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, HeduiError):
            raise DirectoryRefused(Reason.BAD_DIRECTORY.value, f"{self.last_source}: not a signed directory") from None
        cur = rt.directory
        try:
            td = verify_directory(env, self._authority, min_version=cur.version, accepted_digest=directory_digest(cur),
                                  now=rt.clock.now())
        except HeduiError as exc:
            raise DirectoryRefused(exc.reason.value if exc.reason else "BAD_DIRECTORY", exc.message) from None
        if td.version == cur.version:
            return False
        self._check_self(td)
        self._persist(td, data)
        self.apply(td)
        return True

    def _from_peer(self, code: str) -> bytes:
        """The directory a peer node currently trusts (NodeService/GetDirectory): peers pass
        the authority's signed bytes on, so an outage of the authority's source does not stop
        the federation before expiry. Verified exactly as from any other source."""
        from hedui.v1 import node_pb2

        resp = self._rt.peers.get(code).node.GetDirectory(node_pb2.GetDirectoryRequest(), timeout=10)
        return dsse.to_json(resp.directory).encode("utf-8")

    def _check_self(self, td: TrustedDirectory) -> None:
        rt = self._rt
        me = td.by_code.get(rt.member)
        if me is None:
            raise DirectoryRefused("NOT_A_MEMBER", f"directory v{td.version}: does not list this node ({rt.member})")
        cert = load_cert(rt.config.path(rt.config.tls.cert))
        if cert_fingerprint(cert) not in td.cert_fingerprints(rt.member):
            raise DirectoryRefused("CERT_MISMATCH", f"directory v{td.version}: lists another certificate for {rt.member} "
                                   "(install the renewed certificate and restart)")
        if bytes(me.signing_key) != rt.signer.public.raw:
            raise DirectoryRefused("KEY_MISMATCH", f"directory v{td.version}: lists another signing key for {rt.member}")
        if bytes(td.msg.ca_fingerprint) != bytes(cur_ca := rt.directory.msg.ca_fingerprint):
            raise DirectoryRefused("CA_CHANGED", f"directory v{td.version}: names another CA ({bytes(cur_ca).hex()[:8]}…); "
                                   "a CA change needs a restart")

    def _persist(self, td: TrustedDirectory, data: bytes) -> None:
        from hedui.node.runtime import _set_state

        rt = self._rt
        path = rt.config.path(rt.config.directory.path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        _set_state(rt.engine, "directory_version", str(td.version))
        _set_state(rt.engine, "directory_digest", directory_digest(td).hex())
        rt.audit.record(Kind.ADMIN, {
            "action": "directory.applied", "operator": "hedui/node", "version": td.version,
            "previous_version": rt.directory.version, "digest": hashlib.sha256(td.envelope.payload).hexdigest(),
            "source": self.last_source or "",
        })

    def apply(self, td: TrustedDirectory) -> None:
        rt = self._rt
        old = rt.directory
        rt.directory = td
        rt.peers.update_directory(td)
        log.warning("directory v%d applied (was v%d), from %s", td.version, old.version, self.last_source)
        for fn in self._listeners:
            fn(td)
