"""Signed token filters on the wire: the header, shard digests, chunks and refresh.

A provider publishes, per OPRF key epoch and data date, one :class:`FilterHeader` signed as
a DSSE envelope (payload type :data:`PAYLOAD_TYPE`; the payload is the header's protobuf
serialisation once the proto binds these dataclasses field for field). The header names
every shard by its item count, byte size and SHA-256, so the one signature covers every
chunk: the hub accepts a chunk only at the next offset of a shard it asked for, never past
the shard's declared size, and keeps a shard only when its bytes hash to the signed digest
and decode as a set of the declared count (:class:`Assembler`). A filter is signed negative
evidence, "this token is not held as of ``data_date``" (up to the stated false-positive
rate, which errs only towards "held"); citing it means citing the envelope, or the SHA-256 of
its payload.

Refresh is per shard (:func:`refresh_plan`): the hub keeps the last verified shards and asks
only for those whose ``(count, size, sha256)`` differ under the same parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date

from hedui.common.errors import Reason
from hedui.node.crosscheck import gcs
from hedui.node.crosscheck.shards import MAX_SHARD_BITS, ShardedSet
from hedui.node.errors import InvalidArgument, VerificationError

__all__ = [
    "LAYOUT",
    "PAYLOAD_TYPE",
    "CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_TOTAL",
    "FilterFormatError",
    "ShardEntry",
    "FilterHeader",
    "FilterChunk",
    "shard_digest",
    "header_for",
    "chunks",
    "refresh_plan",
    "Assembler",
]

#: Codec and bit layout of every shard body (``gcs`` split layout, version 1).
LAYOUT = "gcs-split-v1"
#: DSSE payload type of a signed filter header.
PAYLOAD_TYPE = "application/vnd.hedui.tokenfilter.v1+proto"
#: Chunk size a provider sends (gRPC's default message limit is 4 MiB).
CHUNK_SIZE = 1 << 20
#: Largest chunk a hub accepts.
MAX_CHUNK_SIZE = 4 << 20
#: Most tokens one filter may declare (≈ 4.3·10^9, far above a province's 10^8).
MAX_TOTAL = 1 << 32
_DIGEST = 32


class FilterFormatError(InvalidArgument):
    """A header or chunk stream breaks the format: ``Field: got X, want Y``."""

    default_reason = Reason.BAD_FILTER


def shard_digest(body: bytes) -> bytes:
    """SHA-256 of a shard's encoded bytes, as the header lists it."""
    return hashlib.sha256(body).digest()


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the header names it."""

    index: int
    count: int
    size: int
    sha256: bytes


@dataclass(frozen=True)
class FilterHeader:
    """What the provider signs. ``shards`` lists all ``2^shard_bits`` shards in index order."""

    provider: str
    epoch: int
    data_date: date
    total: int
    p: int
    m: int
    shard_bits: int
    shards: tuple[ShardEntry, ...]
    layout: str = LAYOUT

    @property
    def false_positive_rate(self) -> float:
        """Upper bound for one token not held: ``1/M`` (BIP-158 "Set Querying")."""
        return 1 / self.m

    def parameters(self) -> tuple:
        """What must be equal for a cached shard to be reusable under this header."""
        return (self.provider, self.epoch, self.layout, self.p, self.m, self.shard_bits)

    def validate(self) -> FilterHeader:
        """Checks the header on its own (the signature is checked before, by DSSE)."""
        if self.layout != LAYOUT:
            raise FilterFormatError(f"layout: got {self.layout[:40]!r}, want {LAYOUT!r}")
        if not isinstance(self.provider, str) or not self.provider:
            raise FilterFormatError("provider: got an empty code, want the member code")
        if not isinstance(self.epoch, int) or isinstance(self.epoch, bool) or self.epoch < 1:
            raise FilterFormatError(f"epoch: got {self.epoch!r}, want an integer >= 1")
        if not isinstance(self.data_date, date):
            raise FilterFormatError(f"data_date: got {type(self.data_date).__name__}, want a date")
        if not isinstance(self.shard_bits, int) or not 0 <= self.shard_bits <= MAX_SHARD_BITS:
            raise FilterFormatError(f"shard_bits: got {self.shard_bits!r}, want 0 to {MAX_SHARD_BITS}")
        try:
            gcs.check_params(0, self.p, self.m)
        except gcs.BadParameters as exc:
            raise FilterFormatError(f"parameters: {exc.message}") from None
        want = 1 << self.shard_bits
        if len(self.shards) != want:
            raise FilterFormatError(f"shards: got {len(self.shards)}, want {want} (2^shard_bits)")
        total = 0
        for i, s in enumerate(self.shards):
            if s.index != i:
                raise FilterFormatError(f"shards[{i}].index: got {s.index}, want {i}")
            if not isinstance(s.sha256, bytes) or len(s.sha256) != _DIGEST:
                got = f"{len(s.sha256)} bytes" if isinstance(s.sha256, bytes) else f"a {type(s.sha256).__name__}"
                raise FilterFormatError(f"shards[{i}].sha256: got {got}, want {_DIGEST} bytes")
            try:
                least, most = gcs.size_bounds(s.count, self.p, self.m)
            except gcs.BadParameters as exc:
                raise FilterFormatError(f"shards[{i}].count: {exc.message}") from None
            if not isinstance(s.size, int) or not least <= s.size <= most:
                raise FilterFormatError(f"shards[{i}].size: got {s.size}, want {least} to {most} for {s.count} items")
            total += s.count
        if total != self.total or not 0 <= self.total <= MAX_TOTAL:
            raise FilterFormatError(f"total: got {self.total}, want the sum of shard counts {total} (at most {MAX_TOTAL})")
        return self


@dataclass(frozen=True)
class FilterChunk:
    """A piece of one shard's bytes at ``offset``."""

    shard: int
    offset: int
    data: bytes


def header_for(content: ShardedSet, *, provider: str, epoch: int, data_date: date) -> FilterHeader:
    """The header a provider signs for a built filter."""
    entries = tuple(
        ShardEntry(i, c, len(b), shard_digest(b)) for i, (c, b) in enumerate(zip(content.counts, content.bodies))
    )
    return FilterHeader(provider, epoch, data_date, content.total, content.p, content.m, content.shard_bits, entries).validate()


def chunks(content: ShardedSet, shards: Iterable[int] | None = None, *, chunk_size: int = CHUNK_SIZE) -> Iterator[FilterChunk]:
    """The chunks of the asked shards (all when ``None``), each shard in order of offset.

    An empty shard sends nothing: its header entry (count 0, size 0) is the whole of it.
    """
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidArgument(f"chunk_size: got {chunk_size}, want 1 to {MAX_CHUNK_SIZE}")
    n = 1 << content.shard_bits
    wanted = range(n) if shards is None else sorted(set(shards))
    for s in wanted:
        if not 0 <= s < n:
            raise InvalidArgument(f"shards: got index {s}, want 0 to {n - 1}")
        body = content.bodies[s]
        for off in range(0, len(body), chunk_size):
            yield FilterChunk(s, off, body[off: off + chunk_size])


def refresh_plan(cached: FilterHeader | None, new: FilterHeader) -> list[int]:
    """Shards to fetch for ``new`` when the hub holds the verified shards of ``cached``:
    all of them when nothing is cached or the parameters (provider, epoch, layout, P, M,
    shard count) differ, else those whose entry changed. Empty shards need no fetch."""
    if cached is None or cached.parameters() != new.parameters():
        return [s.index for s in new.shards if s.size]
    return [n.index for c, n in zip(cached.shards, new.shards) if n.size and (c.count, c.size, c.sha256) != (n.count, n.size, n.sha256)]


class Assembler:
    """Collects the chunks of one header's shards and verifies each against the header.

    ``reuse`` maps shard index to bytes the hub already verified under ``cached`` (see
    :func:`refresh_plan`); each is checked again against the new header before use. Memory
    never exceeds the declared sizes of the shards asked for.
    """

    def __init__(self, header: FilterHeader, wanted: Iterable[int], *, reuse: Mapping[int, bytes] | None = None) -> None:
        self.header = header.validate()
        self._want = set(wanted)
        n = 1 << header.shard_bits
        for s in self._want:
            if not 0 <= s < n:
                raise InvalidArgument(f"wanted: got shard {s}, want 0 to {n - 1}")
        self._parts: dict[int, bytearray] = {s: bytearray() for s in self._want if header.shards[s].size}
        self._done: dict[int, bytes] = {s: b"" for s in self._want if not header.shards[s].size}
        self._reuse = dict(reuse or {})

    def add(self, chunk: FilterChunk) -> None:
        s = chunk.shard
        if s not in self._parts:
            why = "already complete" if s in self._done else "not asked for"
            raise FilterFormatError(f"chunk.shard: got {s} ({why}), want one of the shards still open")
        buf, entry = self._parts[s], self.header.shards[s]
        if chunk.offset != len(buf):
            raise FilterFormatError(f"chunk.offset: got {chunk.offset} for shard {s}, want {len(buf)}")
        if not 1 <= len(chunk.data) <= MAX_CHUNK_SIZE:
            raise FilterFormatError(f"chunk.data: got {len(chunk.data)} bytes, want 1 to {MAX_CHUNK_SIZE}")
        if len(buf) + len(chunk.data) > entry.size:
            raise FilterFormatError(f"chunk: got shard {s} past its size {entry.size}, want at most the size the header signs")
        buf += chunk.data
        if len(buf) == entry.size:
            del self._parts[s]
            self._done[s] = self._verify(s, bytes(buf))

    def _verify(self, s: int, body: bytes) -> bytes:
        entry = self.header.shards[s]
        if len(body) != entry.size or shard_digest(body) != entry.sha256:
            raise VerificationError(
                f"shard {s}: got bytes whose SHA-256 differs from the signed header, want {entry.sha256.hex()[:16]}…",
                reason=Reason.FILTER_DIGEST,
            )
        # A signed but malformed shard is refused too: it must decode to `count` values.
        gcs.decode(body, entry.count, self.header.p, self.header.m)
        return body

    def result(self) -> ShardedSet:
        """The complete filter; raises when an asked shard is incomplete or a shard is
        neither asked for nor reusable."""
        if self._parts:
            s = min(self._parts)
            raise FilterFormatError(f"shard {s}: got {len(self._parts[s])} bytes, want {self.header.shards[s].size}")
        bodies = []
        for entry in self.header.shards:
            s = entry.index
            if s in self._done:
                bodies.append(self._done[s])
            elif not entry.size:
                bodies.append(b"")
            elif s in self._reuse:
                bodies.append(self._verify(s, self._reuse[s]))
            else:
                raise FilterFormatError(f"shard {s}: got neither chunks nor a cached copy, want one of them")
        h = self.header
        return ShardedSet(h.p, h.m, h.shard_bits, tuple(e.count for e in h.shards), tuple(bodies))
