"""The hub's side of signed token filters (issue 14): fetch, verify, cache, refresh.

``current_filter`` asks the provider for its signed header only; when the cached copy has
the same header digest it is used as is, otherwise only the shards that changed
(``filterfmt.refresh_plan``) are streamed and verified against the new header, and the row
is replaced in one transaction. Anything wrong — a signature not by the member's directory
key, another member's or another epoch's header, a chunk out of place, a shard whose bytes
do not hash to the signed digest — is refused: audited as ``filter.refused`` with its reason
and raised, nothing cached."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from sqlalchemy import delete, insert, select

from hedui.common.errors import Reason
from hedui.node.audit.entry import Kind
from hedui.node.crosscheck import shards
from hedui.node.crosscheck.filterfmt import Assembler, FilterChunk, FilterFormatError, FilterHeader, refresh_plan
from hedui.node.crosscheck.tables import token_filters
from hedui.node.crosscheck.wire import header_digest, verify_header
from hedui.node.errors import FailedPrecondition, VerificationError, from_rpc_error
from hedui.node.store.raw import Prepared
from hedui.v1 import common_pb2, directory_pb2, pseudonym_pb2

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from hedui.node.runtime import Runtime

__all__ = ["CachedFilter", "current_filter", "cached_filter", "member_epoch"]


@dataclass(frozen=True)
class CachedFilter:
    header: FilterHeader
    envelope: common_pb2.Envelope
    content: shards.ShardedSet

    @property
    def digest(self) -> bytes:
        return header_digest(self.envelope)


def member_epoch(m: directory_pb2.Member) -> int:
    """The newest OPRF epoch the directory publishes for ``m``."""
    if not m.oprf_keys:
        raise VerificationError(f"directory: {m.code} publishes no OPRF key", reason=Reason.NO_OPRF_KEY)
    return max(k.epoch for k in m.oprf_keys)


def _split(header: FilterHeader, bodies: bytes) -> dict[int, bytes]:
    out, off = {}, 0
    for s in header.shards:
        out[s.index] = bodies[off: off + s.size]
        off += s.size
    return out


_MEMO: dict[tuple[str, str, bytes], CachedFilter] = {}
_MEMO_LOCK = threading.Lock()


def cached_digests(rt: Runtime, conn: Connection | None = None) -> dict[str, bytes]:
    """Provider -> header digest of every cached filter, in one read (a case consults every
    department's: one statement per case instead of one per department); ``conn``: an open
    connection of ``rt.engine`` to read on (run_case's, which reads the case: issue 16)."""
    if conn is None:
        with rt.engine.connect() as c:
            return cached_digests(rt, c)
    return {p: bytes(d) for p, d in _DIGESTS.run(conn)}


# On the driver's cursor (node/store/raw.py): read at the start of every case (issue 16).
_DIGESTS = Prepared(select(token_filters.c.provider, token_filters.c.header_sha256))


def cached_filter(rt: Runtime, code: str, sha: bytes | None = None) -> CachedFilter | None:
    """The cached filter of ``code``, verified against its signed header. Decoded filters are
    kept in memory per (store, provider, header digest): a case asks this for every
    department, and re-reading megabytes of shards per case would cost more than it saves.
    ``sha``: its header digest as just read by :func:`cached_digests` (else read here)."""
    if sha is not None:
        # A case asks for every department with the digest it has just read: a filter in
        # memory is found without a connection checked out of the pool (issue 16).
        with _MEMO_LOCK:
            hit = _MEMO.get((str(rt.engine.url), code, bytes(sha)))
        if hit is not None:
            return hit
    with rt.engine.connect() as c:
        if sha is None:
            sha = c.execute(select(token_filters.c.header_sha256).where(token_filters.c.provider == code)).scalar_one_or_none()
        if sha is None:
            return None
        key = (str(rt.engine.url), code, bytes(sha))
        with _MEMO_LOCK:
            hit = _MEMO.get(key)
        if hit is not None:
            return hit
        row = c.execute(select(token_filters).where(token_filters.c.provider == code)).first()
    if row is None:
        return None
    env = common_pb2.Envelope.FromString(bytes(row.envelope))
    header = verify_header(env, rt.directory.signing_keys(), code, epoch=row.epoch)
    asm = Assembler(header, [], reuse=_split(header, bytes(row.bodies)))
    out = CachedFilter(header, env, asm.result())
    with _MEMO_LOCK:
        for k in [k for k in _MEMO if k[:2] == key[:2]]:
            del _MEMO[k]
        if out.digest == bytes(row.header_sha256):
            _MEMO[(key[0], key[1], out.digest)] = out
    return out


def _stream(rt: Runtime, code: str, ctx: common_pb2.RequestContext, epoch: int, *, timeout: float,
            header_only: bool = False, wanted: list[int] | None = None) -> Iterator[pseudonym_pb2.GetTokenFilterResponse]:
    req = pseudonym_pb2.GetTokenFilterRequest(context=ctx, epoch=epoch, header_only=header_only, shards=wanted or [])
    return iter(rt.peers.get(code).pseudonym.GetTokenFilter(req, timeout=timeout))


def _refuse(rt: Runtime, code: str, rid: bytes, exc: Exception) -> None:
    reason = str(getattr(exc, "reason", Reason.BAD_FILTER))
    rt.audit.record(Kind.FILTER_REFUSED, {"request_id": rid.hex(), "peer": code, "reason": reason})


def current_filter(rt: Runtime, m: directory_pb2.Member, ctx_base: dict, *, timeout: float = 60.0) -> CachedFilter:
    """The verified filter of provider ``m`` for its current epoch, refreshed when the
    provider's header changed (new epoch, data date or tokens). Raises
    ``FailedPrecondition`` (``NO_FILTER``) when the provider has none yet."""
    code, epoch = m.code, member_epoch(m)
    rid = os.urandom(16)
    ctx = common_pb2.RequestContext(request_id=rid, **ctx_base)
    try:
        first = next(iter(_stream(rt, code, ctx, epoch, timeout=timeout, header_only=True)))
        header = verify_header(first.header, rt.directory.signing_keys(), code, epoch=epoch)
        cached = None
        try:
            cached = cached_filter(rt, code)
        except (VerificationError, FilterFormatError):
            cached = None  # an unusable cache row is simply replaced
        if cached is not None and cached.digest == header_digest(first.header):
            return cached
        reuse_from = cached.header if cached is not None else None
        plan = refresh_plan(reuse_from, header)
        asm = Assembler(header, plan, reuse=dict(zip(range(len(cached.content.bodies)), cached.content.bodies)) if cached else None)
        if plan:
            rid = os.urandom(16)
            ctx = common_pb2.RequestContext(request_id=rid, **ctx_base)
            msgs = iter(_stream(rt, code, ctx, epoch, timeout=timeout, wanted=plan))
            head = next(msgs)
            if header_digest(head.header) != header_digest(first.header):
                raise FilterFormatError("header: changed between the header request and the shard request, want the same")
            for msg in msgs:
                asm.add(FilterChunk(msg.shard, msg.offset, bytes(msg.data)))
        content = asm.result()
    except grpc.RpcError as err:
        e = from_rpc_error(err)
        if getattr(e, "reason", None) == Reason.NO_FILTER:
            raise FailedPrecondition(f"filter: {code} has no token filter yet (its index is empty)", reason=Reason.NO_FILTER) from None
        raise
    except (VerificationError, FilterFormatError) as exc:
        _refuse(rt, code, rid, exc)
        raise
    now = rt.clock.now()
    with rt.engine.begin() as c:
        c.execute(delete(token_filters).where(token_filters.c.provider == code))
        c.execute(insert(token_filters).values(
            provider=code, epoch=header.epoch, data_date=header.data_date, total=header.total,
            header_sha256=header_digest(first.header), envelope=first.header.SerializeToString(deterministic=True),
            bodies=b"".join(content.bodies), fetched_at=now,
        ))
    rt.audit.record(Kind.FILTER_RECEIVED, {"request_id": rid.hex(), "peer": code, "epoch": epoch, "count": header.total,
                                           "header_digest": header_digest(first.header).hex(),
                                           "data_date": header.data_date.isoformat(), "shards_fetched": len(plan)})
    return CachedFilter(header, first.header, content)
