"""AuditService: every node serves its log's checkpoints and proofs, and cosigns peers'."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hedui.node.audit.note import split_note
from hedui.node.errors import InvalidArgument, NotFound, Reason
from hedui.node.rpc import Call, rpc_method
from hedui.v1 import audit_pb2, audit_pb2_grpc, common_pb2

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["AuditServicer"]

_MAX_NOTE = 16 * 1024


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    @property
    def _log(self):
        return self.rt.audit.log

    @rpc_method("/hedui.v1.AuditService/GetCheckpoint")
    def GetCheckpoint(self, request, call: Call) -> audit_pb2.GetCheckpointResponse:
        return audit_pb2.GetCheckpointResponse(checkpoint=common_pb2.SignedCheckpoint(note=self.rt.audit.latest_checkpoint_note()))

    @rpc_method("/hedui.v1.AuditService/GetInclusionProof")
    def GetInclusionProof(self, request: audit_pb2.GetInclusionProofRequest, call: Call) -> audit_pb2.GetInclusionProofResponse:
        size = self._checkpointed(request.tree_size)
        if request.index >= size:
            raise InvalidArgument(f"index: got {request.index}, want < tree_size {size}")
        hashes = self._log.inclusion_proof(request.index, size)
        return audit_pb2.GetInclusionProofResponse(index=request.index, tree_size=size, hashes=hashes)

    @rpc_method("/hedui.v1.AuditService/GetConsistencyProof")
    def GetConsistencyProof(self, request: audit_pb2.GetConsistencyProofRequest, call: Call) -> audit_pb2.GetConsistencyProofResponse:
        if request.first == 0 or request.first > request.second:
            raise InvalidArgument(f"first: got {request.first}, want 0 < first <= second ({request.second})")
        self._checkpointed(request.second)
        return audit_pb2.GetConsistencyProofResponse(hashes=self._log.consistency_proof(request.first, request.second))

    @rpc_method("/hedui.v1.AuditService/Cosign")
    def Cosign(self, request: audit_pb2.CosignRequest, call: Call) -> audit_pb2.CosignResponse:
        note = bytes(request.checkpoint.note)
        if not note or len(note) > _MAX_NOTE:
            raise InvalidArgument(f"checkpoint.note: got {len(note)} bytes, want 1..{_MAX_NOTE}")
        split_note(note)  # malformed notes are refused before any key work
        line = self.rt.audit.observe_peer(call.caller.code, note)
        return audit_pb2.CosignResponse(cosignature=line or "")

    def _checkpointed(self, size: int) -> int:
        if size == 0:
            raise InvalidArgument("tree_size: got 0, want a checkpointed size > 0")
        if self._log.checkpoint_at(size) is None:
            raise NotFound(f"tree_size: no checkpoint of size {size}", reason=Reason.NO_SUCH_CHECKPOINT)
        return size
