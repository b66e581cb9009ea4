"""The node's facade over its audit log: one call, ``record(kind, fields)``.

Every event a node takes part in goes through here into the RFC 9162 log of
:mod:`hedui.node.audit.log`. Field values are digests, pseudonymous tokens (hex), codes and
counts; the log itself refuses anything shaped like an identity number.
"""

from __future__ import annotations

import logging

from hedui.node.audit.log import AuditLog, CheckpointScheduler

__all__ = ["NodeAudit", "open_audit"]

log = logging.getLogger("hedui.node.audit")


class NodeAudit:
    def __init__(self, rt, log_: AuditLog, scheduler: CheckpointScheduler) -> None:
        self._rt = rt
        self.log = log_
        self.scheduler = scheduler

    def record(self, kind: str, fields: dict) -> int:
        seq = self.log.append(kind, fields)
        if self._rt.metrics is not None:
            self._rt.metrics.audit_size.set(seq + 1)
        return seq

    def latest_checkpoint_note(self) -> bytes:
        cp = self.log.latest_checkpoint()
        if cp is None:
            cp = self.log.checkpoint(force=True)
        return cp.encode() if isinstance(cp, str) else bytes(cp)

    def close(self) -> None:
        self.scheduler.stop()
        self.log.close()


def open_audit(rt) -> NodeAudit:
    origin = f"hedui.{rt.directory.msg.federation}/{rt.member}"
    al = AuditLog(rt.engine, origin=origin, signer=rt.signer)
    return NodeAudit(rt, al, CheckpointScheduler(al))
