"""NodeService: authenticated ping and directory fetch (every role)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hedui.node.errors import InvalidArgument
from hedui.node.rpc import Call, rpc_method
from hedui.v1 import node_pb2, node_pb2_grpc

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["NodeServicer"]

_MAX_NONCE = 1024


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    @rpc_method("/hedui.v1.NodeService/Ping")
    def Ping(self, request: node_pb2.PingRequest, call: Call) -> node_pb2.PingResponse:
        if len(request.nonce) > _MAX_NONCE:
            raise InvalidArgument(f"nonce: got {len(request.nonce)} bytes, want at most {_MAX_NONCE}")
        return node_pb2.PingResponse(
            nonce=request.nonce,
            member=self.rt.member,
            caller=call.caller.code,
            directory_version=self.rt.directory.version,
        )

    @rpc_method("/hedui.v1.NodeService/GetDirectory")
    def GetDirectory(self, request: node_pb2.GetDirectoryRequest, call: Call) -> node_pb2.GetDirectoryResponse:
        return node_pb2.GetDirectoryResponse(directory=self.rt.directory.envelope)
