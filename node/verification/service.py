"""Provider services: pseudonym evaluation, token filter, lookup (``pseudonym.proto``,
``lookup.proto``). Thin: each method validates (:mod:`~hedui.node.verification.protocol`),
asks the policy (:mod:`hedui.node.policy`), makes one domain call, audits and returns."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hedui.common.errors import Reason
from hedui.keys import dsse
from hedui.keys.directory import ROLE_ANSWERS
from hedui.node import logs, policy
from hedui.node.audit.entry import Kind
from hedui.node.crosscheck.filterfmt import chunks as filter_chunks
from hedui.node.crosscheck.publish import published_filter
from hedui.node.crosscheck.wire import header_digest
from hedui.node.errors import ConfigError, InvalidArgument
from hedui.node.rpc import Call, rpc_method, rpc_stream
from hedui.node.verification import consent, consent_state, protocol
from hedui.node.verification.answer import answer_lookup
from hedui.node.verification.index_read import snapshot
from hedui.node.verification.provider import ProviderState
from hedui.node.verification.replica import read_index
from hedui.v1 import common_pb2, lookup_pb2, lookup_pb2_grpc, pseudonym_pb2, pseudonym_pb2_grpc

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["PseudonymServicer", "LookupServicer"]

_EVALUATE = "/hedui.v1.PseudonymService/Evaluate"
_FILTER = "/hedui.v1.PseudonymService/GetTokenFilter"
_LOOKUP = "/hedui.v1.LookupService/Lookup"


def _state(rt: Runtime) -> ProviderState:
    if rt.provider is None:
        raise ConfigError("provider.oprf_seed: got none, want the encrypted OPRF seed file (hedui keys oprf-init)")
    return rt.provider


def _base(caller: str, ctx: common_pb2.RequestContext) -> dict:
    """The audit fields every entry about a request carries."""
    out = {"peer": caller, "purpose": int(ctx.purpose), "case_ref": ctx.case_ref, "request_id": bytes(ctx.request_id).hex()}
    # The W3C trace context the hub sent (issue 17: one case is one trace across departments).
    tp = logs.current_traceparent()
    if tp is not None:
        out["traceparent"] = tp
    return out


class PseudonymServicer(pseudonym_pb2_grpc.PseudonymServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        _state(rt)

    @rpc_method(_EVALUATE)
    def Evaluate(self, request: pseudonym_pb2.EvaluateRequest, call: Call) -> pseudonym_pb2.EvaluateResponse:
        st = _state(self.rt)
        n = len(request.blinded_elements)
        if n == 0:
            raise InvalidArgument("blinded_elements: got 0, want at least 1")
        epoch = st.epoch(request.epoch)
        grant = policy.check(self.rt, call.caller.code, _EVALUATE, request.context, batch=n, need_consent=False,
                             replay_guard=False, charge=False)
        elements, proof = st.keys[epoch].evaluate_batch(list(request.blinded_elements))
        # Issue 16: the quota charge and pseudonym.evaluated commit together (group commit),
        # before the evaluation leaves; an overrun sends nothing and logs the refusal only.
        policy.charge(self.rt, call.caller.code, _EVALUATE, grant,
                      audit=[(Kind.PSEUDONYM_EVALUATED, {**_base(call.caller.code, request.context), "epoch": epoch, "count": n})])
        return pseudonym_pb2.EvaluateResponse(epoch=epoch, evaluated_elements=elements, proof=proof)

    @rpc_stream(_FILTER)
    def GetTokenFilter(self, request: pseudonym_pb2.GetTokenFilterRequest, call: Call) -> Iterator[pseudonym_pb2.GetTokenFilterResponse]:
        """Streams the signed filter (issue 14; a generator: gRPC needs an iterator): the
        first message carries the DSSE-signed header, then the bytes of the shards asked for
        (all unless ``header_only`` or a list of ``shards``, for a refresh). The quota and the
        request id are reserved before the first message — so a caller over quota gets
        nothing — and released again if the stream does not complete (the peer cancels, a
        write fails): a filter is charged, and ``filter.sent`` audited, only once every
        message was sent."""
        st = _state(self.rt)
        epoch = st.epoch(request.epoch)
        grant = policy.check(self.rt, call.caller.code, _FILTER, request.context, need_consent=False)
        pub = published_filter(self.rt, epoch)
        n = 1 << pub.header.shard_bits
        bad = [s for s in request.shards if s >= n]
        if bad:
            raise InvalidArgument(f"shards: got index {bad[0]}, want 0 to {n - 1}", reason=Reason.BAD_FILTER)
        total = pub.header.total
        wanted = list(request.shards) or None
        at = policy.commit(self.rt, call.caller.code, _FILTER, request.context, grant, b"", b"")
        done, sent = False, 0
        try:
            yield pseudonym_pb2.GetTokenFilterResponse(epoch=epoch, total=total, header=pub.envelope)
            if not request.header_only:
                for c in filter_chunks(pub.content, wanted):
                    yield pseudonym_pb2.GetTokenFilterResponse(epoch=epoch, total=total, data=c.data, shard=c.shard, offset=c.offset)
                    sent += 1
            done = True  # gRPC asked for the next message after the last one was written
        finally:
            if not done:
                policy.release(self.rt, call.caller.code, _FILTER, request.context, grant, at)
        self.rt.audit.record(Kind.FILTER_SENT, {**_base(call.caller.code, request.context), "epoch": epoch, "count": total,
                                                "chunks": sent, "data_date": pub.header.data_date.isoformat(),
                                                "digest": header_digest(pub.envelope).hex()})


#: Up to this many tokens a ``query.received`` entry lists them; beyond, only their digest
#: (a 4,096-token list is ~537 KB of hex, the audit log takes 64 KiB per entry).
TOKENS_LISTED = 32


def tokens_field(tokens) -> dict:
    """The audit fields naming a request's tokens: always ``tokens_digest`` (SHA-256 over the
    tokens in request order, each prefixed by its 2-byte length) and the tokens themselves
    (hex) only for small batches, so an entry's size does not grow with the batch."""
    h = hashlib.sha256()
    for t in tokens:
        b = bytes(t)
        h.update(len(b).to_bytes(2, "big") + b)
    out: dict = {"tokens_digest": h.hexdigest()}
    if len(tokens) <= TOKENS_LISTED:
        out["tokens"] = [bytes(t).hex() for t in tokens]
    return out


class LookupServicer(lookup_pb2_grpc.LookupServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        _state(rt)

    @rpc_method(_LOOKUP)
    def Lookup(self, request: lookup_pb2.LookupRequest, call: Call) -> lookup_pb2.LookupResponse:
        rt, st = self.rt, _state(self.rt)
        queries = protocol.parse_lookup(request, st.catalogue)
        digest = protocol.request_digest(request)
        # One read connection per Lookup (issue 16 item 3): the replay cache, the stored
        # revocation serial and the index (its live state and facts) come from one snapshot of
        # the primary, instead of a connection each. Closed before the exchange commits.
        with snapshot(rt.engine) as conn:
            grant = policy.check(
                rt, call.caller.code, _LOOKUP, request.context,
                fields=[q.field for q in request.queries], batch=len(request.tokens), request_digest=digest, conn=conn,
            )
            # Issue 18: the caller's signed consent record must cover this request.
            accepted = consent.check_consent(
                request.context, caller=call.caller.code, directory_keys=rt.directory.signing_keys_of(call.caller.code),
                members=len(request.tokens), now=rt.clock.now(), revocations=st.revocations, conn=conn,
            )
            base = {**_base(call.caller.code, request.context), "request_digest": digest.hex(),
                    "consent": accepted.digest.hex()}
            if grant.cached_answer is not None:
                env = common_pb2.Envelope.FromString(grant.cached_answer)
                rt.audit.record(Kind.ANSWER_SENT, {**base, "answer_digest": hashlib.sha256(env.payload).hexdigest(), "outcome": "ok", "resent": True})
                return lookup_pb2.LookupResponse(answer=env, checkpoint=common_pb2.SignedCheckpoint(note=rt.audit.latest_checkpoint_note()))
            epoch = st.epoch(request.epoch)
            # Issue 18c: one-off / periodic use of the authorisation (consent_state.check_use),
            # checked and recorded inside the transaction that stores the answer: a refusal there
            # rolls the exchange back (no answer leaves, nothing is charged) and is audited like a
            # quota refusal. Not checked again before the work: a refused use is rare, and a
            # separate read costs every lookup a round trip (bench/bench_consent.py).
            hub, ctx, tokens = call.caller.code, request.context, list(request.tokens)
            month = request.reference_month  # validated by parse_lookup (YYYY-MM)

            def use(c) -> None:
                consent_state.check_use(c, hub, accepted.record, accepted.digest, ctx.case_ref, epoch, tokens, rt.clock.now(),
                                        reference_month=month, record=True)

            received = {
                **base, "epoch": epoch, "count": len(request.tokens),
                "fields": [q.field for q in request.queries], **tokens_field(request.tokens),
                "reference_month": request.reference_month,
            }
            try:
                # Facts and data dates of the live build only, from one snapshot; INDEX_NOT_READY
                # (UNAVAILABLE) while some source has no complete build (issue 13 item 1). Read on
                # the replica when one is configured (issue 16); quota and replay stay on the primary.
                live = read_index(rt, epoch, list(request.tokens), st.sources, conn=conn)
            except BaseException:
                rt.audit.record(Kind.QUERY_RECEIVED, received)   # a query that got this far is logged
                raise
        try:
            answer = answer_lookup(
                live.facts, list(request.tokens), queries,
                provider=rt.member, digest=digest, directory_version=rt.directory.version,
                reference_month=protocol.parse_reference_month(request.reference_month), now=rt.clock.now(),
                data_dates=live.data_dates, sources_of=st.sources_of,
            )
            answer.consent_digest, answer.purpose, answer.case_ref = accepted.digest, request.context.purpose, request.context.case_ref
            payload = answer.SerializeToString(deterministic=True)
            env = dsse.sign(dsse.ANSWER, payload, [rt.signer_for(ROLE_ANSWERS)])  # issue 18: the answers key
            found = sum(1 for m in answer.members if m.found)
            sent = {**base, "answer_digest": hashlib.sha256(payload).hexdigest(), "outcome": "ok", "found": found}
        except BaseException:
            rt.audit.record(Kind.QUERY_RECEIVED, received)   # a query that got this far is logged
            raise
        # One durable transaction for the exchange (issue 16): quota, request id, the signed
        # answer, query.received and answer.sent commit together or not at all. A commit
        # that fails (quota, replay) leaves no entry here; its refusal is logged by the rpc
        # layer (node/rpc.py) with the request id.
        try:
            policy.commit(rt, call.caller.code, _LOOKUP, request.context, grant, digest,
                          env.SerializeToString(deterministic=True),
                          audit=[(Kind.QUERY_RECEIVED, received), (Kind.ANSWER_SENT, sent)], also=use)
        except BaseException:
            rt.audit.record(Kind.QUERY_RECEIVED, received)
            raise
        return lookup_pb2.LookupResponse(answer=env, checkpoint=common_pb2.SignedCheckpoint(note=rt.audit.latest_checkpoint_note()))
