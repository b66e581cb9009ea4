"""Filter header, shard digests, chunk assembly and per-shard refresh (node/crosscheck/filterfmt.py).

The header is what the provider signs; these tests show that it binds every chunk: a chunk
stream is accepted only if it rebuilds exactly the shards the header names, and a refresh
fetches only the shards whose entry changed. Dates are fixed; no clock is read.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.node.crosscheck import filterfmt as ff
from hedui.node.crosscheck import gcs, shards
from hedui.node.errors import InvalidArgument, VerificationError

D = date(2026, 10, 31)


def _tokens(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 64), dtype=np.uint8)


@pytest.fixture(scope="module")
def built():
    toks = _tokens(40_000, 1)
    content = shards.build(toks, shard_bits=3)
    return toks, content, ff.header_for(content, provider="tax", epoch=2, data_date=D)


def _assemble(header, stream, wanted=None, reuse=None):
    a = ff.Assembler(header, ff.refresh_plan(None, header) if wanted is None else wanted, reuse=reuse)
    for c in stream:
        a.add(c)
    return a.result()


def test_header_describes_the_content(built) -> None:
    _, content, h = built
    assert h.total == 40_000 == sum(s.count for s in h.shards)
    assert (h.p, h.m, h.shard_bits, h.layout) == (30, 1 << 30, 3, ff.LAYOUT)
    assert h.false_positive_rate <= 1e-9
    for s, body in zip(h.shards, content.bodies):
        assert s.size == len(body) and s.sha256 == ff.shard_digest(body)


@pytest.mark.parametrize("size", [997, ff.CHUNK_SIZE])
def test_chunks_reassemble_to_the_same_filter(built, size) -> None:
    toks, content, h = built
    got = _assemble(h, ff.chunks(content, chunk_size=size))
    assert got == content
    assert shards.intersect(toks[:1000], got).all()


def test_one_byte_chunks(built) -> None:
    _, content, h = built
    # Two shards byte by byte, the other six reused from a cache.
    reuse = {i: content.bodies[i] for i in range(8) if i not in (0, 5)}
    assert _assemble(h, ff.chunks(content, [5, 0], chunk_size=1), wanted=[0, 5], reuse=reuse) == content


def test_refresh_fetches_only_changed_shards(built) -> None:
    toks, content, h = built
    # The department's data changes by three records: one leaves, two arrive.
    changed = np.concatenate([toks[1:], _tokens(2, 99)])
    new_content = shards.build(changed, shard_bits=3)
    new = ff.header_for(new_content, provider="tax", epoch=2, data_date=date(2026, 11, 30))
    plan = ff.refresh_plan(h, new)
    touched = sorted({shards.shard_of(bytes(t), 3) for t in [toks[0], *_tokens(2, 99)]})
    assert plan == touched and len(plan) < 8
    reuse = {i: content.bodies[i] for i in range(8) if i not in plan}
    got = _assemble(new, ff.chunks(new_content, plan), wanted=plan, reuse=reuse)
    assert got == new_content


def test_new_parameters_refetch_everything(built) -> None:
    _, content, h = built
    for changed in (replace(h, epoch=3), replace(h, provider="vehicles"), replace(h, p=29)):
        assert ff.refresh_plan(h, changed) == [s.index for s in changed.shards if s.size]
    assert ff.refresh_plan(None, h) == list(range(8))


def test_stale_cached_shard_is_refused(built) -> None:
    toks, content, h = built
    new_content = shards.build(toks[1:], shard_bits=3)
    new = ff.header_for(new_content, provider="tax", epoch=2, data_date=D)
    s = shards.shard_of(bytes(toks[0]), 3)
    # The hub wrongly offers its old copy of the changed shard: the digest catches it.
    a = ff.Assembler(new, [], reuse=dict(enumerate(content.bodies)))
    with pytest.raises(VerificationError) as e:
        a.result()
    assert e.value.reason == "FILTER_DIGEST" and f"shard {s}" in e.value.message


def test_tampered_chunk_is_refused(built) -> None:
    _, content, h = built
    stream = list(ff.chunks(content, chunk_size=50_000))
    bad = bytearray(stream[3].data)
    bad[17] ^= 1
    stream[3] = ff.FilterChunk(stream[3].shard, stream[3].offset, bytes(bad))
    with pytest.raises(VerificationError) as e:
        _assemble(h, stream)
    assert e.value.reason == "FILTER_DIGEST"


def test_chunk_stream_faults(built) -> None:
    _, content, h = built
    stream = list(ff.chunks(content, chunk_size=5_000))
    assert stream[0].shard == stream[1].shard == 0
    with pytest.raises(ff.FilterFormatError, match="offset"):
        _assemble(h, [stream[1], stream[0], *stream[2:]])  # out of order within a shard
    with pytest.raises(ff.FilterFormatError, match="already complete|offset"):
        _assemble(h, [stream[0], stream[0], *stream[1:]])  # repeated
    with pytest.raises(ff.FilterFormatError, match="not asked for"):
        _assemble(h, stream, wanted=[1, 2])
    with pytest.raises(ff.FilterFormatError, match="want"):
        _assemble(h, stream[:-1])  # the last shard stops short
    last = stream[-1]
    with pytest.raises(ff.FilterFormatError, match="past its size"):
        _assemble(h, [*stream[:-1], ff.FilterChunk(last.shard, last.offset, last.data + b"\x00")])
    with pytest.raises(ff.FilterFormatError, match="1 to"):
        _assemble(h, [ff.FilterChunk(0, 0, b"")])
    with pytest.raises(InvalidArgument):
        ff.Assembler(h, [8])
    with pytest.raises(InvalidArgument):
        list(ff.chunks(content, [9]))
    with pytest.raises(InvalidArgument):
        list(ff.chunks(content, chunk_size=0))


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_any_reordered_or_damaged_stream_is_refused_or_exact(data) -> None:
    content = shards.build(_tokens(3_000, 5), shard_bits=2)
    h = ff.header_for(content, provider="tax", epoch=1, data_date=D)
    stream = list(ff.chunks(content, chunk_size=2_000))
    ops = data.draw(st.lists(st.sampled_from(["swap", "drop", "dup", "flip", "none"]), max_size=3))
    for op in ops:
        i = data.draw(st.integers(0, len(stream) - 1))
        c = stream[i]
        if op == "swap":
            j = data.draw(st.integers(0, len(stream) - 1))
            stream[i], stream[j] = stream[j], stream[i]
        elif op == "drop":
            del stream[i]
        elif op == "dup":
            stream.insert(i, c)
        elif op == "flip":
            b = bytearray(c.data)
            b[data.draw(st.integers(0, len(b) - 1))] ^= 1 << data.draw(st.integers(0, 7))
            stream[i] = ff.FilterChunk(c.shard, c.offset, bytes(b))
        if not stream:
            break
    try:
        got = _assemble(h, stream)
    except (ff.FilterFormatError, VerificationError):
        return
    assert got == content  # accepted only when the stream was (effectively) intact


def test_signed_but_malformed_shard_is_refused() -> None:
    # A provider could sign a header over bytes that do not decode; the digest matches,
    # the decode check refuses it.
    content = shards.build(_tokens(500, 3), shard_bits=0)
    junk = content.bodies[0][:-2] + b"\xff\xff"
    forged = shards.ShardedSet(content.p, content.m, 0, content.counts, (junk,))
    entry = ff.ShardEntry(0, 500, len(junk), ff.shard_digest(junk))
    h = ff.FilterHeader("tax", 1, D, 500, content.p, content.m, 0, (entry,))
    with pytest.raises(gcs.FilterError):
        _assemble(h, ff.chunks(forged))


def _entry(**kw):
    base = dict(index=0, count=0, size=0, sha256=ff.shard_digest(b""))
    base.update(kw)
    return ff.ShardEntry(**base)


@pytest.mark.parametrize("change,match", [
    (dict(layout="gcs-bip158"), "layout"),
    (dict(provider=""), "provider"),
    (dict(epoch=0), "epoch"),
    (dict(epoch=True), "epoch"),
    (dict(data_date="2026-10-31"), "data_date"),
    (dict(p=0), "parameters"),
    (dict(m=0), "parameters"),
    (dict(shard_bits=17), "shard_bits"),
    (dict(shard_bits=1), "shards: got 1, want 2"),
    (dict(total=5), "total"),
    (dict(shards=(_entry(index=1),)), r"shards\[0\].index"),
    (dict(shards=(_entry(sha256=b"\x00" * 31),)), "sha256"),
    (dict(shards=(_entry(count=3, size=1),)), r"shards\[0\].size"),
    (dict(shards=(_entry(count=1 << 40),)), r"shards\[0\].count"),
    (dict(shards=(_entry(size="12"),)), r"shards\[0\].size"),
])
def test_header_validation(change, match) -> None:
    h = ff.FilterHeader("tax", 1, D, 0, gcs.P, gcs.M, 0, (_entry(),))
    h.validate()
    with pytest.raises(ff.FilterFormatError, match=match):
        replace(h, **change).validate()


def test_empty_filter_round_trip() -> None:
    content = shards.build([], shard_bits=2)
    h = ff.header_for(content, provider="tax", epoch=1, data_date=D)
    assert h.total == 0 and ff.refresh_plan(None, h) == []
    assert _assemble(h, ff.chunks(content)) == content
