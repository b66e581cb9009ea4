"""The error vocabulary: every refusal reason is a member of the one ``Reason`` enum, every
error family maps to a gRPC status, and a peer's status decodes back to the typed error."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grpc
import pytest

from hedui.adapters.errors import InvalidIdentity, MappingError, SourceError
from hedui.common.errors import (
    ConfigError,
    FailedPrecondition,
    HeduiError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VerificationError,
)
from hedui.keys.errors import (
    CertificateError,
    DirectoryError,
    DirectorySpecError,
    InvalidBlindedElement,
    KeyFileError,
    OprfProofError,
    SealError,
    SignatureError,
)
from hedui.node.audit.errors import ForkError, IdentityInEntryError, InclusionProofError
from hedui.node.errors import describe_remote, from_rpc_error, status_code, to_status

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [p for d in ("common", "keys", "adapters", "node") for p in (ROOT / d).rglob("*.py") if "migrations" not in p.parts]


def _code(node: ast.AST) -> bool:
    """A string constant shaped like a reason code (``"UPPER_SNAKE"``)."""
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value))


def _free_string_reasons(path: Path) -> list[str]:
    """``reason="X"`` arguments, ``default_reason = "X"`` and ``.reason == "X"`` in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "reason" and _code(node.value):
            found.append(f"{path.name}:{node.value.lineno}")
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "default_reason" for t in node.targets):
            if _code(node.value):
                found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "reason":
            if any(_code(c) for c in node.comparators):
                found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(_code(e) for e in node.elts):
            # a collection of reason codes (e.g. which refusals are permanent) — not any tuple
            # of upper-case names (a department table's column names are those too)
            if any(e.value in Reason.__members__ for e in node.elts):  # type: ignore[attr-defined]
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_free_string_reasons_in_product_code():
    assert len(PRODUCT) > 50
    found = [hit for p in PRODUCT for hit in _free_string_reasons(p)]
    assert found == [], f"refusal reasons must be hedui.common.errors.Reason members: {found}"


def test_the_grep_finds_a_free_string(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('raise X("m", reason="SOMETHING")\nclass E:\n    default_reason = "YES"\nif e.reason == "ZED": pass\n'
                   'PERMANENT = ("BAD_NOTICE", "WRONG_HUB")\nrow.update(reason="")\n')
    assert len(_free_string_reasons(bad)) == 4


def test_reason_values_are_their_names():
    assert all(r.value == r.name for r in Reason)


@pytest.mark.parametrize(("err", "code"), [
    (HeduiError("x"), grpc.StatusCode.INTERNAL),
    (ConfigError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
    (ResourceExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (VerificationError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    # keys/
    (KeyFileError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (DirectorySpecError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (CertificateError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (SignatureError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (DirectoryError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidBlindedElement("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (OprfProofError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (SealError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    # adapters/
    (MappingError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (SourceError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidIdentity("x"), grpc.StatusCode.INVALID_ARGUMENT),
    # node/audit/
    (InclusionProofError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (ForkError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (IdentityInEntryError("x"), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_every_family_maps_to_a_status(err, code):
    assert status_code(err) == code
    got_code, details = to_status(err)
    assert got_code == code and details == f"{err.reason}: x"


class _Status(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details


@pytest.mark.parametrize("err", [
    PermissionDenied("policy: field x not allowed", reason=Reason.FIELD_NOT_ALLOWED),
    ResourceExhausted("quota: 7 calls", reason=Reason.QUOTA_EXCEEDED),
    InvalidIdentity("identity: check digit mismatch"),
    NotFound("epoch: got 9", reason=Reason.UNKNOWN_EPOCH),
    Unauthenticated("peer: got no client certificate", reason=Reason.NO_CLIENT_CERT),
    Unavailable("store away"),
])
def test_a_status_decodes_back_to_the_typed_error(err):
    code, details = to_status(err)
    back = from_rpc_error(_Status(code, details))
    assert back.reason == err.reason and back.message == err.message and back.remote_code == code.name
    family = next(c for c in type(err).__mro__ if c.__module__ == "hedui.common.errors")
    assert isinstance(back, family)


def test_a_status_without_our_reason_keeps_the_details():
    back = from_rpc_error(_Status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert isinstance(back, Unavailable) and back.reason == Reason.DEADLINE_EXCEEDED
    assert describe_remote(back) == "DEADLINE_EXCEEDED: Deadline Exceeded"
    back = from_rpc_error(_Status(grpc.StatusCode.INTERNAL, "INTERNAL: internal error, logged at the node"))
    assert type(back) is HeduiError and back.reason == Reason.INTERNAL
    back = from_rpc_error(_Status(grpc.StatusCode.PERMISSION_DENIED, "SOMETHING_NEW: from a newer peer"))
    assert isinstance(back, PermissionDenied) and back.reason == Reason.POLICY_DENIED
    assert back.message == "SOMETHING_NEW: from a newer peer"
    back = from_rpc_error(_Status(grpc.StatusCode.UNKNOWN, None))
    assert type(back) is HeduiError and back.reason == Reason.UNKNOWN and back.message == ""
    assert describe_remote(from_rpc_error(_Status(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED: 7 calls"))) == \
        "RESOURCE_EXHAUSTED: QUOTA_EXCEEDED: 7 calls"
