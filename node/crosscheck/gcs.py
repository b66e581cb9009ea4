"""Golomb-coded sets (GCS) with Golomb–Rice coding: the codec under signed token filters.

Construction is BIP-158's ("Golomb-Coded Sets", "Set Construction"): ``N`` items are hashed
to 64 bits and mapped to ``[0, F)``, ``F = N·M``, by ``hash_to_range(h, F) = (h·F) >> 64``;
the values are sorted and their deltas Golomb–Rice coded with parameter ``P``: the quotient
``q = d >> P`` in unary (``q`` one-bits and a zero), the remainder as ``P`` bits big-endian,
most significant bit first, the stream zero-padded to a byte. One query that is not in the
set matches with probability at most ``N/F = 1/M`` (BIP-158 "Set Querying").

Hedui's parameters are :data:`P` = 30 and :data:`M` = 2^30: a false-positive rate of at most
2^-30 ≈ 9.31·10^-10 ≤ 10^-9 per query, at about ``P + 1.58`` bits per item (deltas are near
geometric with mean ``M = 2^P``, so E[q] = 1/(e - 1) ≈ 0.58). BIP-158 takes ``M ≈ 1.497·2^P``
to save about 0.1 bit per item; its basic filter uses P = 19, M = 784931.

Two bit layouts of the same codes are implemented:

* **BIP-158** (:func:`encode_bip158`, :func:`iter_bip158`): each unary part directly followed
  by its remainder, as published. Decoding is inherently sequential (where code ``i + 1``
  starts depends on every earlier quotient), so it runs one code at a time in Python
  (≈ 1.2 µs per item measured). It is the layout the published vectors pin down
  (``tests/vectors/bip158``): the mapping, the delta/quotient/remainder split and the bit
  order are shared with the layout below.
* **Split** (:func:`encode`, :func:`decode`, the wire layout of Hedui's filters): the ``N``
  remainders first, as a packed array of ``P``-bit fields padded to a byte, then the ``N``
  unary parts, padded to a byte. The very same bits in another order, so the same size
  (at most one byte more for the extra padding); but both halves decode with whole-array
  NumPy operations — remainders are fixed-width fields, and the quotients are the gaps
  between the zero bits of the unary half — measured 17× faster than the BIP-158 loop
  (``bench/bench_filter.py`` part (c): 10^6 items, 10^5 queries).

Malformed input (truncated, trailing bytes, non-zero padding, values out of range, absurd
parameters) raises a :class:`FilterError` subclass. Before any work, the byte length is
checked against the bounds ``N`` and the parameters imply (a valid set has at most
``N·(P + 258)`` bits, see :func:`check_params`), so decoding time and memory are bounded by
``N`` whatever the input claims.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from hedui.common.errors import Reason
from hedui.node.errors import InvalidArgument

__all__ = [
    "P",
    "M",
    "MAX_P",
    "MAX_ITEMS",
    "FilterError",
    "BadParameters",
    "Truncated",
    "TrailingData",
    "OutOfRange",
    "check_params",
    "size_bounds",
    "hash_to_range",
    "hash_to_range_array",
    "encode",
    "decode",
    "iter_values",
    "contains",
    "intersect",
    "intersect_walk",
    "encode_bip158",
    "iter_bip158",
]

#: Golomb–Rice parameter of Hedui's filters.
P = 30
#: Inverse false-positive rate: one non-member query matches with probability ≤ 1/M = 2^-30.
M = 1 << 30
#: A remainder plus its bit offset inside a byte fits one 64-bit window.
MAX_P = 57
#: Items in one set (one shard); far above a shard's intended ~2^16.
MAX_ITEMS = (1 << 32) - 1

_MAX_UNARY_BITS = 8
_U64 = np.uint64
_M32 = _U64(0xFFFFFFFF)
_S32 = _U64(32)


class FilterError(InvalidArgument):
    """An encoded set is malformed or its parameters are unusable."""

    default_reason = Reason.BAD_FILTER


class BadParameters(FilterError):
    """``N``, ``P`` or ``M`` is out of range, or values would not fit 64 bits."""


class Truncated(FilterError):
    """The bytes end before ``N`` codes are complete."""


class TrailingData(FilterError):
    """Bytes or non-zero padding bits after the last code."""


class OutOfRange(FilterError):
    """A decoded value is at or above ``F = N·M``, or the input is not sorted."""


def _int(name: str, v) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise BadParameters(f"{name}: got {type(v).__name__}, want an integer")
    return int(v)


def check_params(n: int, p: int, m: int) -> int:
    """Validates ``(N, P, M)`` and returns ``F = N·M``.

    Besides the ranges, requires ``M ≤ 2^(P+8)``: the unary parts then average at most
    ~256 bits (Rice coding with ``M`` far above ``2^P`` is a unary code in disguise), which
    caps any valid set at ``N·(P + 258)`` bits. And ``N·(M + 2^P) < 2^64``: every value is
    below ``F`` and a partial sum of deltas adds at most ``N`` remainders below ``2^P`` to
    it, so 64-bit arithmetic (NumPy ``uint64``) never wraps.
    """
    n, p, m = _int("n", n), _int("p", p), _int("m", m)
    if not 1 <= p <= MAX_P:
        raise BadParameters(f"p: got {p}, want 1 to {MAX_P}")
    if not 1 <= m <= 1 << (p + _MAX_UNARY_BITS):
        raise BadParameters(f"m: got {m}, want 1 to 2^(p+{_MAX_UNARY_BITS}) = {1 << (p + _MAX_UNARY_BITS)}")
    if not 0 <= n <= MAX_ITEMS:
        raise BadParameters(f"n: got {n}, want 0 to {MAX_ITEMS}")
    if n * (m + (1 << p)) >= 1 << 64:
        raise BadParameters(f"n*(m + 2^p): got 2^{(n * (m + (1 << p))).bit_length() - 1} or more, want < 2^64")
    return n * m


def hash_to_range(h: int, f: int) -> int:
    """BIP-158 ``hash_to_range``: ``(h·F) >> 64`` for a 64-bit ``h`` (no modulo bias)."""
    return (h * f) >> 64


def hash_to_range_array(h: np.ndarray, f: int) -> np.ndarray:
    """:func:`hash_to_range` over a ``uint64`` array: the high word of the 128-bit product,
    from four 32×32-bit partial products (NumPy has no 128-bit type). Nondecreasing in ``h``."""
    if not 0 <= f < 1 << 64:
        raise BadParameters(f"f: got {f}, want 0 to 2^64 - 1")
    a = np.asarray(h, dtype=_U64)
    a_lo, a_hi = a & _M32, a >> _S32
    b_lo, b_hi = _U64(f & 0xFFFFFFFF), _U64(f >> 32)
    lo_lo = a_lo * b_lo
    hi_lo = a_hi * b_lo
    lo_hi = a_lo * b_hi
    # Each term < 2^32, 2^32 and 2^64 - 2^33 + 1: the sum fits 64 bits.
    mid = (lo_lo >> _S32) + (hi_lo & _M32) + lo_hi
    return a_hi * b_hi + (hi_lo >> _S32) + (mid >> _S32)


def _sizes(n: int, p: int, f: int) -> tuple[int, int, int]:
    """``(remainder bytes, least length, greatest length)`` of a split-layout set.

    The unary half holds ``N`` zeros and ``Σq`` ones; ``Σq·2^P ≤ Σd = last value < F``, so
    ``Σq ≤ (F - 1) >> P``. Anything longer is trailing data, whatever it contains.
    """
    rem = (n * p + 7) // 8
    if n == 0:
        return 0, 0, 0
    return rem, rem + (n + 7) // 8, rem + (n + ((f - 1) >> p) + 7) // 8


def size_bounds(n: int, p: int = P, m: int = M) -> tuple[int, int]:
    """The least and greatest byte length of a valid split-layout set of ``n`` items."""
    _, least, most = _sizes(n, p, check_params(n, p, m))
    return least, most


def _check_values(values, p: int, m: int) -> tuple[np.ndarray, int]:
    v = np.asarray(values)
    if v.ndim != 1 or (v.size and v.dtype != _U64):
        raise InvalidArgument(f"values: got {v.dtype} array of shape {v.shape}, want a 1-d uint64 array")
    v = v.astype(_U64, copy=False)
    f = check_params(len(v), p, m)
    if v.size and (np.any(v[1:] < v[:-1]) or int(v[-1]) >= f):
        raise InvalidArgument(f"values: got unsorted or >= n*m = {f}, want nondecreasing values below n*m")
    return v, f


def _deltas(v: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    # BIP-158 construct_gcs: deltas from 0, quotient and remainder modulo 2^P.
    d = np.diff(v, prepend=_U64(0))
    return d >> _U64(p), d & _U64((1 << p) - 1)


def _pack_fields(r: np.ndarray, p: int) -> bytes:
    """Packs ``P``-bit values MSB-first into bytes, through 64-bit big-endian words.

    Field ``i`` occupies bits ``[iP, iP + P)``; it lies in word ``iP >> 6`` and, when it
    crosses the word boundary, spills its low bits into the next word. Fields never
    overlap, so OR-reducing each word's contributions (in order, hence ``reduceat``) packs.
    """
    n = len(r)
    nbytes = (n * p + 7) // 8
    if n == 0:
        return b""
    bit = np.arange(n, dtype=np.int64) * p
    word = bit >> 6
    spill = (bit & 63) + p - 64  # > 0: bits that go to the next word
    first = np.where(spill <= 0, r << np.clip(-spill, 0, 63).astype(_U64), r >> np.clip(spill, 0, 63).astype(_U64))
    words = np.zeros(int(word[-1]) + 2, dtype=_U64)
    starts = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
    words[word[starts]] = np.bitwise_or.reduceat(first, starts)
    crossing = np.flatnonzero(spill > 0)
    if crossing.size:
        # At most one field crosses into any word, so these indices are distinct.
        words[word[crossing] + 1] |= r[crossing] << (64 - spill[crossing]).astype(_U64)
    return words.astype(">u8").tobytes()[:nbytes]


def _unpack_fields(buf: np.ndarray, n: int, p: int) -> np.ndarray:
    """Inverse of :func:`_pack_fields`: one 8-byte big-endian window per field."""
    bit = np.arange(n, dtype=np.int64) * p
    padded = np.zeros(len(buf) + 8, dtype=np.uint8)
    padded[: len(buf)] = buf
    windows = as_strided(padded, shape=(len(padded) - 7, 8), strides=(1, 1), writeable=False)
    w = windows[bit >> 3].view(">u8").ravel().astype(_U64)
    return (w >> (_U64(64 - p) - (bit & 7).astype(_U64))) & _U64((1 << p) - 1)


def encode(values, p: int = P, m: int = M) -> bytes:
    """Encodes a sorted ``uint64`` array of values in ``[0, N·M)`` in the split layout."""
    v, _ = _check_values(values, p, m)
    if v.size == 0:
        return b""
    q, r = _deltas(v, p)
    ends = np.cumsum(q.astype(np.int64) + 1)
    unary = np.ones(int(ends[-1]), dtype=np.uint8)
    unary[ends - 1] = 0
    return _pack_fields(r, p) + np.packbits(unary).tobytes()


def decode(data: bytes, n: int, p: int = P, m: int = M) -> np.ndarray:
    """Decodes and validates a split-layout set: the sorted ``uint64`` values.

    Raises :class:`Truncated`, :class:`TrailingData`, :class:`OutOfRange` or
    :class:`BadParameters`. Canonical form is enforced (padding bits zero, no extra byte), so
    one set has exactly one encoding and its digest names it.
    """
    f = check_params(n, p, m)
    rem, least, most = _sizes(n, p, f)
    size = len(data)
    if size < least:
        raise Truncated(f"filter: got {size} bytes, want at least {least} for {n} items")
    if size > most:
        raise TrailingData(f"filter: got {size} bytes, want at most {most} for {n} items")
    if n == 0:
        return np.zeros(0, dtype=_U64)
    buf = np.frombuffer(data, dtype=np.uint8)
    pad = rem * 8 - n * p
    if pad and int(buf[rem - 1]) & ((1 << pad) - 1):
        raise TrailingData("filter: got non-zero padding after the remainders, want zero bits")
    r = _unpack_fields(buf[:rem], n, p)
    bits = np.unpackbits(buf[rem:])
    zeros = np.flatnonzero(bits == 0)
    if len(zeros) < n:
        raise Truncated(f"filter: got {len(zeros)} unary codes, want {n}")
    last = int(zeros[n - 1])
    if last // 8 != len(bits) // 8 - 1 or bits[last + 1:].any():
        raise TrailingData("filter: got bits after the last unary code, want zero padding to the byte")
    if last - (n - 1) > (f - 1) >> p:
        raise OutOfRange(f"filter: got quotients summing to {last - (n - 1)}, want at most {(f - 1) >> p}")
    q = np.diff(zeros[:n], prepend=-1) - 1
    values = np.cumsum((q.astype(_U64) << _U64(p)) | r, dtype=_U64)
    if int(values[-1]) >= f:
        raise OutOfRange(f"filter: got a value >= n*m = {f}, want values below it")
    return values


class _Bits:
    """Reads bits MSB-first from ``data`` starting at bit ``pos``: unary runs and fields."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos, self.end = data, pos, len(data) * 8

    def unary(self, limit: int) -> int:
        """Counts one-bits up to the next zero (consumed). More than ``limit`` ones is
        :class:`OutOfRange`; the end of data first is :class:`Truncated`."""
        q = 0
        data = self.data
        while True:
            pos = self.pos
            if pos >= self.end:
                raise Truncated("filter: got the end of data inside a unary code, want a zero bit")
            byte = pos >> 3
            chunk = data[byte: byte + 8]
            avail = len(chunk) * 8 - (pos & 7)
            full = (1 << avail) - 1
            w = int.from_bytes(chunk, "big") & full
            zeros = w ^ full
            if zeros:
                ones = avail - zeros.bit_length()
                q += ones
                self.pos = pos + ones + 1
            else:
                q += avail
                self.pos = pos + avail
            if q > limit:
                raise OutOfRange(f"filter: got a unary run over {limit}, want at most {limit} (values below n*m)")
            if zeros:
                return q

    def field(self, width: int) -> int:
        pos = self.pos
        if pos + width > self.end:
            raise Truncated("filter: got the end of data inside a remainder, want more bits")
        byte = pos >> 3
        chunk = self.data[byte: byte + 9]
        w = int.from_bytes(chunk, "big")
        self.pos = pos + width
        return (w >> (len(chunk) * 8 - (pos & 7) - width)) & ((1 << width) - 1)

    def padding_ok(self) -> bool:
        rest = self.end - self.pos
        return rest < 8 and not (self.data[-1] & ((1 << rest) - 1) if rest else 0)


def iter_values(data: bytes, n: int, p: int = P, m: int = M) -> Iterator[int]:
    """Yields a split-layout set's values one at a time (pure Python, no array): the
    streaming form of :func:`decode` for walks that stop early. Validates as it goes; the
    trailing-data check runs when the walk reaches the end."""
    f = check_params(n, p, m)
    rem, least, most = _sizes(n, p, f)
    if len(data) < least:
        raise Truncated(f"filter: got {len(data)} bytes, want at least {least} for {n} items")
    if len(data) > most:
        raise TrailingData(f"filter: got {len(data)} bytes, want at most {most} for {n} items")
    data = bytes(data)
    pad = rem * 8 - n * p
    if pad and data[rem - 1] & ((1 << pad) - 1):
        raise TrailingData("filter: got non-zero padding after the remainders, want zero bits")
    rems, unary = _Bits(data[:rem], 0), _Bits(data, rem * 8)
    acc, budget = 0, (f - 1) >> p if n else 0
    for _ in range(n):
        q = unary.unary(budget)
        budget -= q
        acc += (q << p) | rems.field(p)
        if acc >= f:
            raise OutOfRange(f"filter: got a value >= n*m = {f}, want values below it")
        yield acc
    if not unary.padding_ok():
        raise TrailingData("filter: got bits after the last unary code, want zero padding to the byte")


def contains(data: bytes, n: int, value: int, p: int = P, m: int = M) -> bool:
    """BIP-158 ``gcs_match`` for one value already mapped to ``[0, N·M)``: walks the set
    until it reaches or passes ``value``."""
    for v in iter_values(data, n, p, m):
        if v >= value:
            return v == value
    return False


def intersect(data: bytes, n: int, queries, p: int = P, m: int = M) -> np.ndarray:
    """Membership of each query value (``uint64``, mapped to ``[0, N·M)``, any order) in a
    split-layout set: a boolean array in query order. Decodes the set once into an array
    (8 bytes per item, one shard at a time) and binary-searches it."""
    values = decode(data, n, p, m)
    qv = np.asarray(queries, dtype=_U64)
    if values.size == 0 or qv.size == 0:
        return np.zeros(qv.shape, dtype=bool)
    at = np.minimum(np.searchsorted(values, qv), values.size - 1)
    return values[at] == qv


def intersect_walk(data: bytes, n: int, queries, p: int = P, m: int = M) -> list[bool]:
    """The same as :func:`intersect` by a merge walk of :func:`iter_values` against the
    sorted queries (BIP-158 Appendix B ``gcs_match_any``), holding no decoded array."""
    qs = [int(x) for x in queries]
    order = sorted(range(len(qs)), key=qs.__getitem__)
    out = [False] * len(qs)
    it = iter_values(data, n, p, m)
    cur = next(it, None)
    for i in order:
        while cur is not None and cur < qs[i]:
            cur = next(it, None)
        if cur is None:
            break
        out[i] = cur == qs[i]
    for _ in it:  # finish the walk so the trailing-data check runs
        pass
    return out


def encode_bip158(values, p: int, m: int) -> bytes:
    """Encodes sorted values in the BIP-158 layout (``construct_gcs`` without the
    ``CompactSize(N)`` prefix of a block filter)."""
    v, _ = _check_values(values, p, m)
    out = bytearray()
    acc = nbits = 0
    prev = 0
    for x in v.tolist():
        d, prev = x - prev, x
        q = d >> p
        while q >= 32:  # keep the accumulator small on long runs
            acc, nbits, q = (acc << 32) | 0xFFFFFFFF, nbits + 32, q - 32
            while nbits >= 8:
                nbits -= 8
                out.append((acc >> nbits) & 0xFF)
        acc = (((acc << (q + 1)) | (((1 << q) - 1) << 1)) << p) | (d & ((1 << p) - 1))
        nbits += q + 1 + p
        while nbits >= 8:
            nbits -= 8
            out.append((acc >> nbits) & 0xFF)
        acc &= (1 << nbits) - 1
    if nbits:
        out.append((acc << (8 - nbits)) & 0xFF)
    return bytes(out)


def iter_bip158(data: bytes, n: int, p: int, m: int) -> Iterator[int]:
    """Yields the values of a BIP-158-layout set (``golomb_decode`` in a loop), validating
    as :func:`iter_values` does."""
    f = check_params(n, p, m)
    least = (n * (p + 1) + 7) // 8
    most = (n * (p + 1) + ((f - 1) >> p if n else 0) + 7) // 8
    if len(data) < least:
        raise Truncated(f"filter: got {len(data)} bytes, want at least {least} for {n} items")
    if len(data) > most:
        raise TrailingData(f"filter: got {len(data)} bytes, want at most {most} for {n} items")
    bits = _Bits(bytes(data), 0)
    acc, budget = 0, (f - 1) >> p if n else 0
    for _ in range(n):
        q = bits.unary(budget)
        budget -= q
        acc += (q << p) | bits.field(p)
        if acc >= f:
            raise OutOfRange(f"filter: got a value >= n*m = {f}, want values below it")
        yield acc
    if not bits.padding_ok():
        raise TrailingData("filter: got bits after the last code, want zero padding to the byte")
