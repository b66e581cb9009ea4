"""Both ends of the verification wire (``pseudonym.proto``, ``lookup.proto``).

The hub builds a :class:`~hedui.v1.lookup_pb2.LookupRequest`, the provider parses and
answers it; both compute the same :func:`request_digest`, and the hub checks that the
provider's signed answer binds it (:func:`verify_answer`). The token filter a provider
serves for a bulk cross-check is encoded and decoded here too. Neither side imports the
other's code: this module is what they share.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from hedui.adapters import idnum
from hedui.common.periods import Month, PeriodError, parse_month
from hedui.keys import dsse
from hedui.keys.signing import VerifyingKey
from hedui.node.errors import InvalidArgument, Reason, VerificationError
from hedui.node.verification.catalogue import Catalogue, FieldDef
from hedui.v1 import common_pb2, lookup_pb2

__all__ = [
    "TOKEN_SIZE",
    "MAX_QUERIES",
    "FILTER_PREFIX",
    "FILTER_CHUNK",
    "Query",
    "request_digest",
    "serialized_request_digest",
    "parse_lookup",
    "parse_operand",
    "parse_reference_month",
    "verify_answer",
    "encode_token_filter",
    "decode_token_filter",
]

TOKEN_SIZE = 64  # RFC 9497 ristretto255-SHA512 output (Nh)
MAX_QUERIES = 64
FILTER_PREFIX = 16  # bytes of each token kept in the filter (2^-128 false-match odds)
FILTER_CHUNK = 1 << 20  # bytes of compressed filter per streamed response
_MAX_FILTER = 1 << 31  # bytes a decoded filter may take (10^8 tokens * 16 bytes fits)

OPERATORS = {lookup_pb2.OPERATOR_UNSPECIFIED: "", lookup_pb2.OPERATOR_GE: "ge", lookup_pb2.OPERATOR_EQ: "eq"}


class Query(NamedTuple):
    """One parsed ``FieldQuery``: the catalogue field, ``""``/``"ge"``/``"eq"``, the operand."""

    field: FieldDef
    op: str
    operand: Decimal | str | None


def request_digest(req: lookup_pb2.LookupRequest) -> bytes:
    """The digest a signed answer binds: SHA-256 of the deterministic serialisation."""
    return serialized_request_digest(req.SerializeToString(deterministic=True))


def serialized_request_digest(raw: bytes) -> bytes:
    """:func:`request_digest` of a request already serialised deterministically (the hub
    stores those bytes too: one serialisation for both, issue 16)."""
    return hashlib.sha256(raw).digest()


def parse_lookup(req: lookup_pb2.LookupRequest, catalogue: Catalogue) -> list[Query]:
    """Shape checks of a lookup against the provider's catalogue, before any policy or
    storage work (``Field: got X, want Y``)."""
    if not req.tokens:
        raise InvalidArgument("tokens: got 0, want at least 1")
    for i, t in enumerate(req.tokens):
        if len(t) != TOKEN_SIZE:
            raise InvalidArgument(f"tokens[{i}]: got {len(t)} bytes, want {TOKEN_SIZE}", reason=Reason.BAD_TOKEN)
    if len(set(req.tokens)) != len(req.tokens):
        raise InvalidArgument("tokens: got duplicates, want each member once", reason=Reason.DUPLICATE_TOKEN)
    if not req.queries:
        raise InvalidArgument("queries: got 0, want at least 1")
    if len(req.queries) > MAX_QUERIES:
        raise InvalidArgument(f"queries: got {len(req.queries)}, want at most {MAX_QUERIES}")
    if not req.reference_month:
        raise InvalidArgument("reference_month: got '', want YYYY-MM", reason=Reason.BAD_REFERENCE_MONTH)
    parse_reference_month(req.reference_month)
    cat = catalogue.by_name()
    out = []
    for i, q in enumerate(req.queries):
        fd = cat.get(q.field)
        if fd is None:
            raise InvalidArgument(f"queries[{i}].field: got {q.field[:64]!r}, want one of {sorted(cat)}", reason=Reason.UNKNOWN_FIELD)
        if q.op not in OPERATORS:
            raise InvalidArgument(f"queries[{i}].op: got {int(q.op)}, want GE or EQ or unspecified")
        op = OPERATORS[q.op]
        if op == "ge" and not fd.numeric:
            raise InvalidArgument(f"queries[{i}]: got >= on {fd.type} field {fd.name}, want a numeric field", reason=Reason.BAD_PREDICATE)
        if not op and q.operand:
            raise InvalidArgument(f"queries[{i}].operand: got one without an operator, want op GE or EQ")
        out.append(Query(fd, op, parse_operand(fd, q.operand) if op else None))
    return out


def parse_reference_month(text: str) -> Month:
    """A request's reference month, ``YYYY-MM`` (DESIGN-12 "Wire"): every window is relative
    to it, so a provider never falls back to its own today."""
    try:
        return parse_month(text, field="reference_month")
    except PeriodError:
        shown = "a value shaped like an identity number" if idnum.contains(text) else repr(text[:16])
        raise InvalidArgument(f"reference_month: got {shown}, want YYYY-MM", reason=Reason.BAD_REFERENCE_MONTH) from None


def parse_operand(fd: FieldDef, operand: str) -> Decimal | str:
    """A predicate's operand as the field's type: ``true``/``false``, a code, or a decimal."""
    if fd.type == "boolean":
        if operand not in ("true", "false"):
            raise InvalidArgument(f"queries[{fd.name}].operand: got {operand[:20]!r}, want true or false")
        return operand
    if fd.type == "code":
        if not operand or len(operand) > 32:
            raise InvalidArgument(f"queries[{fd.name}].operand: got {len(operand)} characters, want 1..32")
        return operand
    try:
        d = Decimal(operand)
    except InvalidOperation:
        raise InvalidArgument(f"queries[{fd.name}].operand: got {operand[:20]!r}, want a decimal number") from None
    if not d.is_finite() or abs(d) > Decimal("1e15"):
        raise InvalidArgument(f"queries[{fd.name}].operand: got {operand[:20]!r}, want a finite number below 1e15")
    return d


def verify_answer(
    signing_keys: Mapping[str, VerifyingKey], code: str, env: common_pb2.Envelope, digest: bytes, tokens: list[bytes]
) -> lookup_pb2.LookupAnswer:
    """The hub's end: verifies an answer envelope over its exact bytes against ``code``'s
    directory key (DESIGN.md "Signed messages"), then checks what it binds: the provider,
    the digest of the request sent, and the tokens in order."""
    key = {k: v for k, v in signing_keys.items() if v.owner == code}
    payload, _ = dsse.verify(env, key, payload_type=dsse.ANSWER)
    try:
        answer = lookup_pb2.LookupAnswer.FromString(payload)
    except Exception:
        raise VerificationError("answer: signed payload is not a LookupAnswer", reason=Reason.BAD_ANSWER) from None
    if answer.provider != code:
        raise VerificationError(f"answer.provider: got {answer.provider[:32]!r}, want {code!r}", reason=Reason.BAD_ANSWER)
    if bytes(answer.request_digest) != digest:
        raise VerificationError("answer.request_digest: does not match the request sent (replayed answer?)", reason=Reason.ANSWER_NOT_BOUND)
    if [bytes(a.token) for a in answer.members] != list(tokens):
        raise VerificationError("answer.members: tokens differ from the request", reason=Reason.BAD_ANSWER)
    return answer


def encode_token_filter(tokens: Iterable[bytes]) -> tuple[int, list[bytes]]:
    """The provider's end of ``GetTokenFilter``: the sorted, distinct :data:`FILTER_PREFIX`-
    byte prefixes of ``tokens``, concatenated, zlib-compressed and cut into
    :data:`FILTER_CHUNK`-byte chunks (one per streamed response). Returns ``(count, chunks)``."""
    prefixes = sorted({bytes(t[:FILTER_PREFIX]) for t in tokens})
    blob = zlib.compress(b"".join(prefixes), 6)
    return len(prefixes), [blob[i:i + FILTER_CHUNK] for i in range(0, max(len(blob), 1), FILTER_CHUNK)]


def decode_token_filter(chunks: Iterable[bytes], total: int) -> frozenset[bytes]:
    """The hub's end: the prefixes of a filter streamed as ``chunks`` that announced
    ``total`` prefixes; a filter that does not decode to exactly that is refused."""
    d = zlib.decompressobj()
    raw = bytearray()
    try:
        for c in chunks:
            raw += d.decompress(bytes(c), _MAX_FILTER - len(raw))
            if d.unconsumed_tail:
                raise VerificationError("token filter: got more data than any filter holds", reason=Reason.BAD_ANSWER)
        raw += d.flush()
    except zlib.error:
        raise VerificationError("token filter: got bytes that are not a zlib stream", reason=Reason.BAD_ANSWER) from None
    if not d.eof or len(raw) != total * FILTER_PREFIX:
        raise VerificationError(f"token filter: got {len(raw)} bytes, want {total} prefixes of {FILTER_PREFIX}", reason=Reason.BAD_ANSWER)
    prefixes = frozenset(bytes(raw[i:i + FILTER_PREFIX]) for i in range(0, len(raw), FILTER_PREFIX))
    if len(prefixes) != total:
        raise VerificationError("token filter: got repeated prefixes, want each once", reason=Reason.BAD_ANSWER)
    return prefixes
