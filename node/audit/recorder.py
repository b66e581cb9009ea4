"""The node's facade over its audit log: ``record(kind, fields)``, checkpoints to attach to
answers, and cross-cosigning of the peers' checkpoints they attach to theirs.

Every event a node takes part in goes through here into the RFC 9162 log of
:mod:`hedui.node.audit.log`. Field values are digests, pseudonymous tokens (hex), codes and
counts; the log itself refuses anything shaped like an identity number. A node's log origin
(and checkpoint key name) is ``hedui.<federation>/<member>``; its checkpoint key is the
member's Ed25519 signing key from the directory, so any peer can verify it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from hedui.keys.directory import PURPOSE_NAMES, ROLE_CHECKPOINTS, ROLE_COSIGNATURES, role_key_of
from hedui.node.audit.entry import Kind
from hedui.node.audit.log import AuditLog, CheckpointScheduler
from hedui.node.audit.note import Signer, Verifier
from hedui.node.errors import VerificationError
from hedui.node.loops import PeriodicJob

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["NodeAudit", "final_failures", "open_audit", "origin_of"]

log = logging.getLogger("hedui.node.audit")

#: Why a process could not sign its final checkpoint (see :meth:`NodeAudit.close`), taken by
#: :func:`final_failures`.
_FINAL_FAILURES: list[str] = []


def final_failures() -> list[str]:
    """And forgets: the reasons the final checkpoints of this process could not be signed."""
    out = list(_FINAL_FAILURES)
    _FINAL_FAILURES.clear()
    return out


def origin_of(federation: str, member: str) -> str:
    return f"hedui.{federation}/{member}"


class NodeAudit:
    def __init__(self, rt: Runtime, log_: AuditLog, scheduler: CheckpointScheduler) -> None:
        self._rt = rt
        self.log = log_
        self.scheduler = scheduler
        self._peers: set[str] = set()
        self._pending: dict[str, bytes] = {}
        self._cosigned_size: dict[str, int] = {}
        self.cosigner = _CosignLoop(self)

    def record(self, kind: str, fields: dict, *, wait: bool = True):
        """Appends one entry; durable when it returns (group-committed with concurrent ones).

        ``wait=False`` validates the entry now, queues it and returns the future: use it for
        the first entry of an exchange whose last entry is recorded with ``wait=True`` — the
        writer commits in order, so both are durable before the exchange completes.
        """
        f = dict(fields)
        if isinstance(f.get("purpose"), int):
            f["purpose"] = PURPOSE_NAMES.get(f["purpose"], str(f["purpose"]))
        fut = self.log.submit(kind, f)
        if not wait:
            return fut
        seq = fut.result()
        if self._rt.metrics is not None:
            self._rt.metrics.audit_size.set(seq + 1)
        return seq

    def prepare(self, items: list[tuple[str, dict]]) -> list:
        """Entries validated and encoded now, to be written with :meth:`write_in` inside
        another transaction (the exchange's own: one durable commit per exchange)."""
        out = []
        for kind, fields in items:
            f = dict(fields)
            if isinstance(f.get("purpose"), int):
                f["purpose"] = PURPOSE_NAMES.get(f["purpose"], str(f["purpose"]))
            out.append((kind, f))
        return self.log.prepare_many(out)

    def write_in(self, conn, prepared: list) -> list[int]:
        """Appends :meth:`prepare`'d entries in the caller's transaction ``conn``."""
        return self.log.write_in(conn, prepared)

    def committed(self, seqs: list[int]) -> None:
        """Tells the metrics about entries whose transaction has committed."""
        if self._rt.metrics is not None and seqs:
            self._rt.metrics.audit_size.set(max(seqs) + 1)

    def record_many(self, items: list[tuple[str, dict]]) -> list[int]:
        """Appends several entries (one event's, e.g. a notice and its receipt); they are
        submitted together so the writer commits them in one transaction. Durable on return."""
        futures = []
        for kind, fields in items:
            f = dict(fields)
            if isinstance(f.get("purpose"), int):
                f["purpose"] = PURPOSE_NAMES.get(f["purpose"], str(f["purpose"]))
            futures.append(self.log.submit(kind, f))
        seqs = [fut.result() for fut in futures]
        if self._rt.metrics is not None and seqs:
            self._rt.metrics.audit_size.set(max(seqs) + 1)
        return seqs

    def latest_checkpoint_note(self) -> bytes:
        """The newest signed checkpoint (the scheduler signs one every few seconds while the
        log grows); one is signed here only if none exists yet. Never on the hot path."""
        cp = self.log.latest_signed()
        if cp is None:
            cp = self.log.checkpoint()
        return cp.note.encode()

    def offer_peer_checkpoint(self, code: str, note: bytes) -> None:
        """Keeps the newest checkpoint a peer attached to an exchange; the background loop
        verifies and cosigns it (consistency proof fetched from the peer), off the hot path."""
        if note and code != self._rt.member:
            self._peers.add(code)
            self._pending[code] = bytes(note)

    def process_peer_checkpoints(self) -> int:
        n = 0
        while self._pending:
            code, note = self._pending.popitem()
            safe_observe(self._rt, code, note)
            n += 1
        return n

    def verifier_for(self, code: str) -> Verifier:
        d = self._rt.directory
        return Verifier(origin_of(d.msg.federation, code), role_key_of(d.member(code), ROLE_CHECKPOINTS))

    def observe_peer(self, code: str, note: bytes) -> str | None:
        """Verifies and cosigns a peer's checkpoint (fetching a consistency proof from the
        peer when needed). A fork raises after the evidence is stored."""
        from hedui.v1 import audit_pb2

        def fetch(size1: int, size2: int) -> list[bytes]:
            r = self._rt.peers.get(code).audit.GetConsistencyProof(audit_pb2.GetConsistencyProofRequest(first=size1, second=size2), timeout=10)
            return list(r.hashes)

        return self.log.observe_peer_checkpoint(code, note, self.verifier_for(code), fetch)

    def note_peer(self, code: str) -> None:
        """Remembers a peer this node exchanged with; it will be asked to cosign."""
        if code != self._rt.member:
            self._peers.add(code)

    def request_cosignatures(self, timeout: float = 10.0) -> dict[str, str]:
        """Asks every peer this node exchanged with to cosign its latest checkpoint
        (tlog-cosignature/v1). The peer checks consistency with the last checkpoint it
        cosigned for us before it signs; what it returns is logged as ``cosignature``."""
        from hedui.v1 import audit_pb2, common_pb2

        note = self.latest_checkpoint_note()
        size = self.log.latest_checkpoint().size
        out: dict[str, str] = {}
        for code in sorted(self._peers):
            if self._cosigned_size.get(code) == size:
                continue
            try:
                r = self._rt.peers.get(code).audit.Cosign(audit_pb2.CosignRequest(checkpoint=common_pb2.SignedCheckpoint(note=note)), timeout=timeout)
            except Exception as exc:  # the peer is down or refuses: try again next round
                why = exc.code().name if isinstance(exc, grpc.RpcError) else type(exc).__name__
                log.info("cosignature from %s: %s", code, why)
                continue
            self._cosigned_size[code] = size
            out[code] = r.cosignature
            self.record(Kind.COSIGNATURE, {"peer": code, "size": size, "cosignature": r.cosignature[:300]})
        return out

    def close(self, *, final: bool = True) -> None:
        """Stops the loops and, with ``final``, leaves nothing unsigned behind (issue 13): a
        short-lived process (the CLI: ``case run``, ``notices detect``/``push``) never ran the
        loops, yet appended entries and received peers' checkpoints. Before it exits it
        cosigns those checkpoints, signs a checkpoint covering its entries, asks the peers it
        talked to to cosign that checkpoint, and signs again over their cosignature entries."""
        ran = self.scheduler.ever_started or self.cosigner.ever_started
        self.cosigner.stop()
        self.scheduler.stop()
        if final:
            try:
                self._sign_before_exit(asked_peers=not ran)
            except Exception as exc:  # closing must finish; verify will report the unsigned tail
                why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
                log.error("could not sign the final checkpoint: %s", why)
                # A CLI process must not exit as if all were well (issue 13: disk full at the
                # end of `case run` left its entries unsigned behind exit 0/4); node/cli/_common.py
                # turns this into one line and exit 1.
                _FINAL_FAILURES.append(why)
        self.log.close()

    def _sign_before_exit(self, *, asked_peers: bool) -> None:
        self.process_peer_checkpoints()
        self.log.flush()
        self.log.checkpoint()
        if asked_peers and self._peers:
            # A serving node asks every 30 s; a process that never ran the loop asks now.
            if self.request_cosignatures(timeout=5.0):
                self.log.flush()
                self.log.checkpoint()


class _CosignLoop(PeriodicJob):
    """Every ``tick`` seconds cosigns the peers' checkpoints queued by exchanges; every
    ``interval`` seconds asks the peers to cosign this node's newest checkpoint."""

    def __init__(self, audit: NodeAudit, interval: float = 30.0, tick: float = 2.0) -> None:
        super().__init__("cosign", interval=tick, join_timeout=5.0)
        self._audit, self._every = audit, max(1, round(interval / tick))
        self._ticks = 0

    def step(self) -> None:
        self._ticks += 1
        self._audit.process_peer_checkpoints()
        if self._ticks >= self._every:
            self._ticks = 0
            self._audit.request_cosignatures()

    def final(self) -> None:
        self._audit.process_peer_checkpoints()


def open_audit(rt: Runtime) -> NodeAudit:
    origin = origin_of(rt.directory.msg.federation, rt.member)
    # Per-role keys (issue 18): checkpoints and cosignatures each under their own key (the
    # member's single signing key where the directory publishes no role key).
    al = AuditLog(rt.engine, origin=origin, signer=Signer(origin, rt.signer_for(ROLE_CHECKPOINTS).private_key), clock=rt.clock.now,
                  cosigner=Signer(origin, rt.signer_for(ROLE_COSIGNATURES).private_key))
    return NodeAudit(rt, al, CheckpointScheduler(al))


def safe_observe(rt: Runtime, code: str, note: bytes) -> None:
    """Cosigning must never fail the exchange it rides on; a fork is logged loudly."""
    if not note:
        return
    rt.audit.note_peer(code)
    try:
        rt.audit.observe_peer(code, note)
    except VerificationError as exc:
        log.warning("checkpoint from %s not cosigned: %s %s", code, exc.reason, exc.message[:200])
    except Exception as exc:  # peer unreachable for a proof, etc.
        log.warning("checkpoint from %s not cosigned: %s", code, type(exc).__name__)
