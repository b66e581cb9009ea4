"""Provider services: pseudonym evaluation, token filter, lookup. Thin: validation and
policy in :mod:`hedui.node.policy`, crypto in :mod:`hedui.keys.oprf`, facts in the index."""

from __future__ import annotations

import datetime as dt
import hashlib
import zlib

from hedui.keys import dsse
from hedui.node import policy
from hedui.node.errors import InvalidArgument, NotFound, Reason
from hedui.node.verification.catalogue import derive, evaluate_predicate, parse_operand
from hedui.node.verification.provider import load_provider
from hedui.node.rpc import Call, rpc_method
from hedui.v1 import common_pb2, lookup_pb2, lookup_pb2_grpc, pseudonym_pb2, pseudonym_pb2_grpc

__all__ = ["PseudonymServicer", "LookupServicer", "request_digest"]

_EVALUATE = "/hedui.v1.PseudonymService/Evaluate"
_FILTER = "/hedui.v1.PseudonymService/GetTokenFilter"
_LOOKUP = "/hedui.v1.LookupService/Lookup"
_TOKEN_SIZE = 64
_FILTER_PREFIX = 16  # bytes of each token kept in the filter (2^-128 false-match odds)
_CHUNK = 1 << 20


def request_digest(req: lookup_pb2.LookupRequest) -> bytes:
    """The digest a signed answer binds: SHA-256 of the deterministic serialisation."""
    return hashlib.sha256(req.SerializeToString(deterministic=True)).digest()


def _state(rt):
    st = rt.extras.get("provider")
    if st is None:
        st = rt.extras["provider"] = load_provider(rt)
    return st


def _epoch(st, asked: int) -> int:
    epoch = asked or st.current_epoch
    if epoch not in st.keys:
        raise NotFound(f"epoch: got {asked}, want one of {sorted(st.keys)}", reason=Reason.UNKNOWN_EPOCH)
    return epoch


class PseudonymServicer(pseudonym_pb2_grpc.PseudonymServiceServicer):
    def __init__(self, rt) -> None:
        self.rt = rt
        _state(rt)

    @rpc_method(_EVALUATE)
    def Evaluate(self, request: pseudonym_pb2.EvaluateRequest, call: Call) -> pseudonym_pb2.EvaluateResponse:
        st = _state(self.rt)
        n = len(request.blinded_elements)
        if n == 0:
            raise InvalidArgument("blinded_elements: got 0, want at least 1")
        epoch = _epoch(st, request.epoch)
        policy.check(self.rt, call.caller.code, _EVALUATE, request.context, batch=n, need_consent=False, replay_guard=False)
        elements, proof = st.keys[epoch].evaluate_batch(list(request.blinded_elements))
        self.rt.audit.record("pseudonym.evaluated", {
            "peer": call.caller.code, "purpose": int(request.context.purpose), "case_ref": request.context.case_ref,
            "request_id": bytes(request.context.request_id).hex(), "epoch": epoch, "count": n,
        })
        return pseudonym_pb2.EvaluateResponse(epoch=epoch, evaluated_elements=elements, proof=proof)

    @rpc_method(_FILTER)
    def GetTokenFilter(self, request: pseudonym_pb2.GetTokenFilterRequest, call: Call):
        from hedui.node.verification.index import all_tokens

        st = _state(self.rt)
        epoch = _epoch(st, request.epoch)
        grant = policy.check(self.rt, call.caller.code, _FILTER, request.context, need_consent=False)
        policy.commit(self.rt, call.caller.code, _FILTER, request.context, grant, b"", b"")
        prefixes = sorted({t[:_FILTER_PREFIX] for t in all_tokens(self.rt.engine, epoch)})
        blob = zlib.compress(b"".join(prefixes), 6)
        self.rt.audit.record("filter.sent", {
            "peer": call.caller.code, "purpose": int(request.context.purpose), "case_ref": request.context.case_ref,
            "request_id": bytes(request.context.request_id).hex(), "epoch": epoch, "count": len(prefixes),
        })
        return [
            pseudonym_pb2.GetTokenFilterResponse(epoch=epoch, total=len(prefixes), data=blob[i:i + _CHUNK])
            for i in range(0, max(len(blob), 1), _CHUNK)
        ]


_OPS = {lookup_pb2.OPERATOR_UNSPECIFIED: "", lookup_pb2.OPERATOR_GE: "ge", lookup_pb2.OPERATOR_EQ: "eq"}


class LookupServicer(lookup_pb2_grpc.LookupServiceServicer):
    def __init__(self, rt) -> None:
        self.rt = rt
        _state(rt)

    @rpc_method(_LOOKUP)
    def Lookup(self, request: lookup_pb2.LookupRequest, call: Call) -> lookup_pb2.LookupResponse:
        from hedui.node.verification.index import facts_for_tokens

        rt, st = self.rt, _state(self.rt)
        queries = _validate_lookup(request, st)
        digest = request_digest(request)
        grant = policy.check(
            rt, call.caller.code, _LOOKUP, request.context,
            fields=[q.field for q in request.queries], batch=len(request.tokens), request_digest=digest,
        )
        ctx = request.context
        base = {
            "peer": call.caller.code, "purpose": int(ctx.purpose), "case_ref": ctx.case_ref,
            "request_id": bytes(ctx.request_id).hex(), "request_digest": digest.hex(),
        }
        if grant.cached_answer is not None:
            env = common_pb2.Envelope.FromString(grant.cached_answer)
            rt.audit.record("answer.sent", {**base, "answer_digest": hashlib.sha256(env.payload).hexdigest(), "outcome": "ok", "resent": True})
            return lookup_pb2.LookupResponse(answer=env, checkpoint=common_pb2.SignedCheckpoint(note=rt.audit.latest_checkpoint_note()))
        epoch = _epoch(st, request.epoch)
        rt.audit.record("query.received", {
            **base, "epoch": epoch, "count": len(request.tokens),
            "fields": [q.field for q in request.queries], "tokens": [bytes(t).hex() for t in request.tokens],
        }, wait=False)
        facts = facts_for_tokens(rt.engine, epoch, list(request.tokens))
        today = dt.date.today()
        answer = lookup_pb2.LookupAnswer(provider=rt.member, request_digest=digest, directory_version=rt.directory.version)
        answer.issued_at.GetCurrentTime()
        found = 0
        for tok in request.tokens:
            have = facts.get(bytes(tok))
            ta = answer.members.add(token=tok, found=have is not None)
            found += have is not None
            for q, (fd, op, operand) in zip(request.queries, queries):
                fa = ta.fields.add(field=fd.name, unit=fd.unit)
                if have is None:
                    if op:
                        fa.truth = lookup_pb2.TRUTH_UNKNOWN
                    continue
                d = derive(fd, have, today)
                fa.present, fa.as_of = d.present, d.as_of
                if op:
                    t = evaluate_predicate(fd, op, operand, d)
                    fa.truth = lookup_pb2.TRUTH_UNKNOWN if t is None else (lookup_pb2.TRUTH_TRUE if t else lookup_pb2.TRUTH_FALSE)
                else:
                    fa.value = d.value
        payload = answer.SerializeToString(deterministic=True)
        env = dsse.sign(dsse.ANSWER, payload, [rt.signer])
        policy.commit(rt, call.caller.code, _LOOKUP, ctx, grant, digest, env.SerializeToString(deterministic=True))
        rt.audit.record("answer.sent", {**base, "answer_digest": hashlib.sha256(payload).hexdigest(), "outcome": "ok", "found": found})
        return lookup_pb2.LookupResponse(answer=env, checkpoint=common_pb2.SignedCheckpoint(note=rt.audit.latest_checkpoint_note()))


def _validate_lookup(req: lookup_pb2.LookupRequest, st) -> list:
    """Shape checks before any policy or storage work."""
    if not req.tokens:
        raise InvalidArgument("tokens: got 0, want at least 1")
    for i, t in enumerate(req.tokens):
        if len(t) != _TOKEN_SIZE:
            raise InvalidArgument(f"tokens[{i}]: got {len(t)} bytes, want {_TOKEN_SIZE}", reason=Reason.BAD_TOKEN)
    if len(set(req.tokens)) != len(req.tokens):
        raise InvalidArgument("tokens: got duplicates, want each member once", reason=Reason.DUPLICATE_TOKEN)
    if not req.queries:
        raise InvalidArgument("queries: got 0, want at least 1")
    if len(req.queries) > 64:
        raise InvalidArgument(f"queries: got {len(req.queries)}, want at most 64")
    cat = st.catalogue.by_name()
    out = []
    for i, q in enumerate(req.queries):
        fd = cat.get(q.field)
        if fd is None:
            raise InvalidArgument(f"queries[{i}].field: got {q.field[:64]!r}, want one of {sorted(cat)}", reason=Reason.UNKNOWN_FIELD)
        if q.op not in _OPS:
            raise InvalidArgument(f"queries[{i}].op: got {int(q.op)}, want GE or EQ or unspecified")
        op = _OPS[q.op]
        if op == "ge" and not fd.numeric:
            raise InvalidArgument(f"queries[{i}]: got >= on {fd.type} field {fd.name}, want a numeric field", reason=Reason.BAD_PREDICATE)
        if not op and q.operand:
            raise InvalidArgument(f"queries[{i}].operand: got one without an operator, want op GE or EQ")
        operand = parse_operand(fd, q.operand) if op else None
        out.append((fd, op, operand))
    return out
