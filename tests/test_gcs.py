"""Golomb-coded sets (node/crosscheck/gcs.py) and token shards (node/crosscheck/shards.py).

Conformance: every basic filter of the BIP-158 vectors (tests/vectors/bip158, see its
SOURCE.md) is rebuilt from the raw block and compared byte for byte, and decoded back.
Properties (hypothesis): round trips in both layouts, the split layout being the BIP-158
bits reordered, no false negative, a measured false-positive rate consistent with the
computed one, and malformed input giving a FilterError (the vectorised and the streaming
decoder agree on every input, valid or not).
"""

from __future__ import annotations

import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor

import bip158_blocks as bip
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedui.node.crosscheck import gcs, shards
from hedui.node.errors import InvalidArgument

_VECTORS = bip.load()


def _popcount(b: bytes) -> int:
    return int.from_bytes(b, "big").bit_count()


# --- conformance ------------------------------------------------------------------------


def test_siphash_reference_vector() -> None:
    # SipHash paper (Aumasson & Bernstein), Appendix A: key 00..0f, message 00..0e.
    assert bip.siphash(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5


def test_vector_file_has_every_case() -> None:
    assert [v.height for v in _VECTORS] == [0, 2, 3, 15007, 49291, 180480, 926485, 987876, 1263442, 1414221]


@pytest.mark.parametrize("v", _VECTORS, ids=lambda v: f"h{v.height}")
def test_bip158_basic_filter(v: bip.Vector) -> None:
    assert bip.block_hash(v.block)[::-1].hex() == v.block_hash
    # BIP-157 header chain: proves the vector's filter bytes are the ones the chain commits to.
    assert bip.dsha256(bip.dsha256(v.filter) + v.prev_header) == v.header
    items = bip.basic_items(v)
    n, used = bip.compact_size(v.filter)
    assert n == len(items)
    key = bip.block_hash(v.block)[:16]
    f = gcs.check_params(n, bip.BASIC_P, bip.BASIC_M)
    values = sorted(gcs.hash_to_range(bip.siphash(key, i), f) for i in items)
    arr = np.array(values, dtype=np.uint64)
    assert gcs.encode_bip158(arr, bip.BASIC_P, bip.BASIC_M) == v.filter[used:]
    assert list(gcs.iter_bip158(v.filter[used:], n, bip.BASIC_P, bip.BASIC_M)) == values
    # The vectorised mapping agrees with the integer one on the vector's hashes.
    hashes = np.array(sorted(bip.siphash(key, i) for i in items), dtype=np.uint64)
    assert gcs.hash_to_range_array(hashes, f).tolist() == sorted(values)
    # The same codes in the split layout: same set bits, same values back.
    split = gcs.encode(arr, bip.BASIC_P, bip.BASIC_M)
    assert _popcount(split) == _popcount(v.filter[used:])
    assert gcs.decode(split, n, bip.BASIC_P, bip.BASIC_M).tolist() == values
    for i in items:
        assert gcs.contains(split, n, gcs.hash_to_range(bip.siphash(key, i), f), bip.BASIC_P, bip.BASIC_M)


def test_bip158_golomb_rice_table() -> None:
    # BIP-158 "Golomb-Rice Coding": the P = 2 table, n -> unary quotient and 2-bit remainder.
    table = ["000", "001", "010", "011", "1000", "1001", "1010", "1011", "11000", "11001"]
    for x, code in enumerate(table):
        got = gcs.encode_bip158(np.array([x], dtype=np.uint64), 2, 16)
        bits = code.ljust(8 * len(got), "0")
        assert got == int(bits, 2).to_bytes(len(got), "big"), x


# --- round trips and agreement ------------------------------------------------------------


@st.composite
def sets(draw, max_n: int = 300):
    p = draw(st.integers(1, 45))
    m = draw(st.integers(1, 1 << (p + 8)))
    n = draw(st.integers(0, max_n))
    if n and n * (m + (1 << p)) >= 1 << 64:
        n = ((1 << 64) - 1) // (m + (1 << p))
    f = n * m
    values = sorted(draw(st.lists(st.integers(0, max(f - 1, 0)), min_size=n, max_size=n))) if n else []
    return n, p, m, values


@given(sets())
@settings(max_examples=300, deadline=None)
def test_round_trip_both_layouts(s) -> None:
    n, p, m, values = s
    arr = np.array(values, dtype=np.uint64)
    split = gcs.encode(arr, p, m)
    assert gcs.decode(split, n, p, m).tolist() == values
    assert list(gcs.iter_values(split, n, p, m)) == values
    least, most = gcs.size_bounds(n, p, m)
    assert least <= len(split) <= most
    inter = gcs.encode_bip158(arr, p, m)
    assert list(gcs.iter_bip158(inter, n, p, m)) == values
    # Same bits in another order: equal popcount, lengths within the split layout's one
    # extra padding byte.
    assert _popcount(split) == _popcount(inter)
    assert 0 <= len(split) - len(inter) <= 1


@given(sets(max_n=200), st.lists(st.integers(0, (1 << 64) - 1), max_size=200))
@settings(max_examples=200, deadline=None)
def test_intersect_agrees_with_a_python_set(s, extra) -> None:
    n, p, m, values = s
    f = n * m
    queries = [x % f for x in extra] + values[:20] if f else []
    data = gcs.encode(np.array(values, dtype=np.uint64), p, m)
    want = [q in set(values) for q in queries]
    assert gcs.intersect(data, n, np.array(queries, dtype=np.uint64), p, m).tolist() == want
    assert gcs.intersect_walk(data, n, queries, p, m) == want
    for q, w in zip(queries[:10], want):
        assert gcs.contains(data, n, q, p, m) == w


@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1))
@settings(max_examples=500, deadline=None)
def test_hash_to_range_array_is_the_128_bit_product(h, f) -> None:
    assert int(gcs.hash_to_range_array(np.array([h], dtype=np.uint64), f)[0]) == (h * f) >> 64


def test_hash_to_range_extremes() -> None:
    top = (1 << 64) - 1
    hs = np.array([0, 1, top, top - 1, 1 << 63], dtype=np.uint64)
    for f in (0, 1, top, 1 << 63, 784931 * 7, (1 << 30) * 10**8):
        assert gcs.hash_to_range_array(hs, f).tolist() == [(int(h) * f) >> 64 for h in hs]
    with pytest.raises(gcs.BadParameters):
        gcs.hash_to_range_array(hs, 1 << 64)


def test_encode_rejects_unsorted_or_out_of_range_values() -> None:
    with pytest.raises(InvalidArgument):
        gcs.encode(np.array([5, 3], dtype=np.uint64), 4, 16)
    with pytest.raises(InvalidArgument):
        gcs.encode(np.array([0, 32], dtype=np.uint64), 4, 16)  # F = 2·16
    with pytest.raises(InvalidArgument):
        gcs.encode(np.array([1, 2], dtype=np.int64), 4, 16)


def test_duplicate_values_are_kept() -> None:
    # BIP-158 allows equal hashed values (delta 0); a set of N items may map onto fewer values.
    values = np.array([7, 7, 7, 40], dtype=np.uint64)
    data = gcs.encode(values, 3, 16)
    assert gcs.decode(data, 4, 3, 16).tolist() == [7, 7, 7, 40]


def test_hedui_parameters_and_size() -> None:
    assert gcs.P == 30 and gcs.M == 1 << 30 and 1 / gcs.M <= 1e-9
    rng = np.random.default_rng(20261031)
    n = 50_000
    values = np.sort(rng.integers(0, n * gcs.M, size=n, dtype=np.uint64))
    bits = len(gcs.encode(values)) * 8 / n
    # Expected P + 1 + 1/(e - 1) ≈ 31.58 bits per item; a random set lands within 0.05.
    assert abs(bits - (30 + 1 + 1 / (np.e - 1))) < 0.05


# --- hostile input -------------------------------------------------------------------------


def _valid(n: int = 100, p: int = 12, m: int = 1 << 12, seed: int = 1) -> tuple[bytes, int, int, int]:
    rng = np.random.default_rng(seed)
    values = np.sort(rng.integers(0, n * m, size=n, dtype=np.uint64))
    return gcs.encode(values, p, m), n, p, m


def _outcome(fn):
    try:
        return list(fn())
    except gcs.FilterError as exc:
        return type(exc)


@pytest.mark.parametrize("cut", [1, 2, 10, 50])
def test_truncated(cut: int) -> None:
    data, n, p, m = _valid()
    for decoder in (gcs.decode, gcs.iter_values):
        with pytest.raises(gcs.Truncated):
            list(decoder(data[:-cut], n, p, m))


@pytest.mark.parametrize("extra", [b"\x00", b"\xff", b"\x00" * 1000, b"\x01\x02"])
def test_trailing_garbage(extra: bytes) -> None:
    data, n, p, m = _valid()
    for decoder in (gcs.decode, gcs.iter_values):
        with pytest.raises((gcs.TrailingData, gcs.OutOfRange)):
            list(decoder(data + extra, n, p, m))


def test_non_zero_padding_is_refused() -> None:
    # n·p = 5·3 = 15 bits of remainders: one padding bit in their second byte.
    values = np.array([1, 2, 3, 4, 5], dtype=np.uint64)
    data = bytearray(gcs.encode(values, 3, 8))
    data[1] |= 1
    for decoder in (gcs.decode, gcs.iter_values):
        with pytest.raises(gcs.TrailingData):
            list(decoder(bytes(data), 5, 3, 8))
    good = gcs.encode(values, 3, 8)
    tail = bytearray(good)
    tail[-1] |= 1  # a padding bit after the last unary code
    for decoder in (gcs.decode, gcs.iter_values):
        with pytest.raises(gcs.TrailingData):
            list(decoder(bytes(tail), 5, 3, 8))


@pytest.mark.parametrize("n,p,m", [
    (1 << 40, 30, 1 << 30), (10**18, 30, 1 << 30), (-1, 30, 1 << 30), (5, 0, 16), (5, 58, 16),
    (5, 1000, 16), (5, 12, 0), (5, 12, -7), (5, 12, 1 << 64), (5, 4, 1 << 13), (True, 12, 16), (5, 12.0, 16),
])
def test_absurd_parameters_fail_fast(n, p, m) -> None:
    data, _, _, _ = _valid()
    for decoder in (gcs.decode, gcs.iter_values, gcs.iter_bip158):
        with pytest.raises(gcs.BadParameters):
            list(decoder(data, n, p, m))


def test_huge_count_with_little_data_is_truncated_not_allocated() -> None:
    # Valid parameters, 2^31 items claimed, 1 KiB supplied: refused on length alone.
    for decoder in (gcs.decode, gcs.iter_values, gcs.iter_bip158):
        with pytest.raises(gcs.Truncated):
            list(decoder(b"\x00" * 1024, 1 << 31, 30, 1 << 30))


def test_overlong_unary_runs() -> None:
    # Remainders fine, then a unary half of all ones: quotients would pass F.
    n, p, m = 8, 4, 16
    rem = (n * p + 7) // 8
    _, most = gcs.size_bounds(n, p, m)
    data = b"\x00" * rem + b"\xff" * (most - rem)
    with pytest.raises(gcs.Truncated):  # no zero bit at all: fewer than N unary codes
        gcs.decode(data, n, p, m)
    with pytest.raises(gcs.OutOfRange):  # the streaming walk stops at the budget instead
        list(gcs.iter_values(data, n, p, m))
    # Enough zeros, but the ones between them pass the quotient budget (F - 1) >> P = 7.
    ones_then_zeros = b"\x00" * rem + bytes([0xFF, 0x00])
    for decoder in (gcs.decode, gcs.iter_values):
        with pytest.raises(gcs.OutOfRange):
            list(decoder(ones_then_zeros, n, p, m))
    with pytest.raises(gcs.OutOfRange):
        list(gcs.iter_bip158(b"\xff" * ((n * (p + 1) + ((n * m - 1) >> p) + 7) // 8), n, p, m))
    # One more byte than the bound is trailing data before any bit is read.
    with pytest.raises(gcs.TrailingData):
        gcs.decode(b"\xff" * (most + 1), n, p, m)


def test_value_past_the_range_is_refused() -> None:
    # Quotients within budget but the remainders push the last value to F or beyond.
    n, p, m = 2, 4, 16  # F = 32, budget Σq <= 1
    data = gcs._pack_fields(np.array([15, 15], dtype=np.uint64), p) + bytes([0b10000000])  # q = 1, 0
    with pytest.raises(gcs.OutOfRange):
        gcs.decode(data, n, p, m)
    with pytest.raises(gcs.OutOfRange):
        list(gcs.iter_values(data, n, p, m))


@given(st.binary(max_size=300), st.integers(0, 400), st.integers(1, 40), st.integers(1, 1 << 48))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes_give_the_same_outcome_in_both_decoders(data, n, p, m) -> None:
    m = m % (1 << (p + 8)) + 1
    try:
        gcs.check_params(n, p, m)
    except gcs.BadParameters:
        return
    a = _outcome(lambda: gcs.decode(data, n, p, m).tolist())
    b = _outcome(lambda: gcs.iter_values(data, n, p, m))
    assert a == b or (isinstance(a, type) and isinstance(b, type))
    if isinstance(a, list):
        assert a == sorted(a) and (not a or a[-1] < n * m)
    _outcome(lambda: gcs.iter_bip158(data, n, p, m))  # only FilterError may escape


@given(sets(max_n=120), st.data())
@settings(max_examples=300, deadline=None)
def test_mutated_encodings_decode_consistently_or_fail_typed(s, data) -> None:
    n, p, m, values = s
    enc = bytearray(gcs.encode(np.array(values, dtype=np.uint64), p, m))
    op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if op == "flip" and enc:
        i = data.draw(st.integers(0, len(enc) * 8 - 1))
        enc[i // 8] ^= 0x80 >> (i % 8)
    elif op == "cut" and enc:
        del enc[data.draw(st.integers(0, len(enc) - 1))]
    else:
        enc.insert(data.draw(st.integers(0, len(enc))), data.draw(st.integers(0, 255)))
    a = _outcome(lambda: gcs.decode(bytes(enc), n, p, m).tolist())
    b = _outcome(lambda: gcs.iter_values(bytes(enc), n, p, m))
    if isinstance(a, list) or isinstance(b, list):
        assert a == b
        assert a == sorted(a) and (not a or a[-1] < n * m)


# --- token shards ---------------------------------------------------------------------------


def _tokens(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, shards.TOKEN_SIZE), dtype=np.uint8)


def test_no_false_negatives_and_input_forms() -> None:
    toks = _tokens(20_000, 7)
    filt = shards.build(toks, shard_bits=3)
    assert filt.total == 20_000 and filt.shard_bits == 3
    assert shards.intersect(toks, filt).all()
    as_list = [bytes(t) for t in toks[:500]]
    assert shards.intersect(as_list, filt).all()
    assert shards.intersect(b"".join(as_list), filt).all()
    assert all(shards.contains(t, filt) for t in as_list[:50])
    assert shards.build(as_list, shard_bits=2) == shards.build(toks[:500], shard_bits=2)


@given(st.lists(st.binary(min_size=64, max_size=64), max_size=300, unique=True), st.integers(0, 5))
@settings(max_examples=100, deadline=None)
def test_no_false_negative_ever(tokens, k) -> None:
    filt = shards.build(tokens, shard_bits=k)
    assert shards.intersect(tokens, filt).tolist() == [True] * len(tokens)
    assert all(shards.contains(t, filt) for t in tokens)


def test_measured_false_positive_rate_matches_the_computed_one() -> None:
    # P = M = 2^8 (rate ≤ 1/256) so that 200,000 non-members give ~780 hits to count.
    p, m = 8, 1 << 8
    held = _tokens(20_000, 11)
    filt = shards.build(held, p=p, m=m, shard_bits=2)
    probes = _tokens(200_000, 12)
    hits = int(shards.intersect(probes, filt).sum())
    # Exact expectation: a probe in shard s hits with probability (distinct values)/F_s.
    shard, _ = shards.token_keys(probes, 2)
    rate = [len(np.unique(gcs.decode(b, c, p, m))) / (c * m) for c, b in zip(filt.counts, filt.bodies)]
    expected = float(sum(rate[s] for s in shard.tolist()))
    sigma = (expected * (1 - 1 / m)) ** 0.5
    assert all(r <= 1 / m for r in rate)
    assert abs(hits - expected) <= 5 * sigma, (hits, expected, sigma)


def test_shard_and_value_come_from_disjoint_token_bytes() -> None:
    base = bytearray(_tokens(1, 3)[0].tobytes())
    tail = bytearray(base)
    tail[16:] = bytes(48)  # bytes past 15 are not used: the same item
    assert shards.build([bytes(base), bytes(tail)], shard_bits=4).total == 1
    other = bytearray(base)
    other[0] ^= 0x80  # the top bit picks the shard at k >= 1
    assert shards.shard_of(bytes(other), 1) != shards.shard_of(bytes(base), 1)
    assert shards.shard_of(bytes(base), 0) == 0


def test_default_shard_bits() -> None:
    assert shards.default_shard_bits(0) == 0
    assert shards.default_shard_bits(1 << 16) == 0
    assert shards.default_shard_bits((1 << 16) + 1) == 1
    assert shards.default_shard_bits(10**6) == 4
    assert shards.default_shard_bits(10**8) == 11
    assert shards.default_shard_bits(10**12) == 16


@pytest.mark.parametrize("bad", [b"\x00" * 63, [b"\x00" * 64, b"\x00" * 65], [b"\x00" * 64, "text"],
                                 np.zeros((3, 32), dtype=np.uint8), np.zeros((3, 64), dtype=np.int16)])
def test_malformed_tokens_are_refused(bad) -> None:
    with pytest.raises(InvalidArgument):
        shards.build(bad)


def test_empty_and_sparse_shards() -> None:
    filt = shards.build([], shard_bits=3)
    assert filt.total == 0 and filt.bodies == (b"",) * 8
    assert not shards.intersect(_tokens(10, 1), filt).any()
    one = shards.build(_tokens(1, 2), shard_bits=4)
    assert sum(1 for c in one.counts if c) == 1


def test_process_pool_gives_the_serial_result() -> None:
    toks = _tokens(30_000, 5)
    probes = np.concatenate([toks[::3], _tokens(10_000, 6)])
    serial = shards.build(toks, shard_bits=4)
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        pooled = shards.build(toks, shard_bits=4, executor=pool)
        hits = shards.intersect(probes, pooled, executor=pool)
    assert pooled == serial
    assert hits.tolist() == shards.intersect(probes, serial).tolist()
    assert hits[:10_000].all()


def test_map_only_shard_builds_equal_the_central_build() -> None:
    toks = _tokens(8_000, 13)
    central = shards.build(toks, shard_bits=3)
    shard, _ = shards.token_keys(toks, 3)
    for i in range(8):
        assert shards.build_shard(toks[shard == i], i, 3) == (central.counts[i], central.bodies[i])
    with pytest.raises(InvalidArgument, match="want 2"):
        shards.build_shard(toks[:50], 2, 3)
    with pytest.raises(InvalidArgument):
        shards.build_shard(toks[shard == 0], 8, 3)


def test_corrupt_shard_surfaces_as_filter_error() -> None:
    toks = _tokens(2_000, 8)
    filt = shards.build(toks, shard_bits=1)
    bodies = list(filt.bodies)
    bodies[0] = bodies[0][:-3]
    bad = shards.ShardedSet(filt.p, filt.m, 1, filt.counts, tuple(bodies))
    with pytest.raises(gcs.FilterError):
        shards.intersect(toks, bad)


def test_random_probe_walks_agree_with_vectorised_intersection() -> None:
    toks = _tokens(5_000, 9)
    filt = shards.build(toks, shard_bits=2)
    rnd = random.Random(4)
    probes = [bytes(toks[rnd.randrange(5_000)]) for _ in range(50)] + [rnd.randbytes(64) for _ in range(50)]
    assert [shards.contains(t, filt) for t in probes] == shards.intersect(probes, filt).tolist()
