"""The methods a front passes on (node/front/proxy.py): every method of the node's public
services, with its cardinality, and whether it takes a call slot (node/admission.py).

The front forwards raw bytes (no decoding), so it must know from the method's name alone
whether requests and responses stream. The table is read from the services' descriptors, so a
method added to a ``.proto`` is forwarded without a change here; a name that is not in it
(the workers' internal method included) is answered ``UNIMPLEMENTED`` by the front.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from hedui.v1 import audit_pb2, lookup_pb2, node_pb2, notice_pb2, pseudonym_pb2

__all__ = ["Method", "method_table"]


@dataclass(frozen=True)
class Method:
    path: str               # "/package.Service/Method"
    request_streaming: bool
    response_streaming: bool
    admitted: bool          # takes a call slot: the node's own services, not health or reflection


def _methods(fd: Any, admitted: bool) -> list[Method]:
    out = []
    for svc in fd.services_by_name.values():
        for m in svc.methods:
            out.append(Method(f"/{svc.full_name}/{m.name}", bool(m.client_streaming), bool(m.server_streaming), admitted))
    return out


def method_table() -> dict[str, Method]:
    """``{"/package.Service/Method": Method}`` for everything a node serves."""
    table: dict[str, Method] = {}
    ours: list[Any] = [node_pb2.DESCRIPTOR, audit_pb2.DESCRIPTOR, lookup_pb2.DESCRIPTOR, pseudonym_pb2.DESCRIPTOR,
                       notice_pb2.DESCRIPTOR]
    grpcs: list[Any] = [health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR]
    for fd in ours:
        table.update({m.path: m for m in _methods(fd, True)})
    for fd in grpcs:
        table.update({m.path: m for m in _methods(fd, False)})
    return table
