"""RFC 9162 Merkle trees over SHA-256: roots, inclusion and consistency proofs.

Hashing (RFC 9162 §2.1.1): leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left ||
right), empty tree = SHA-256(""). Proofs are lists of 32-byte hashes in RFC order.

Proof *generation* never rehashes the log. A proof element is MTH(D[a:b]) for a range the
RFC recursion picks; every such range splits into O(log n) *complete* subtrees (aligned,
power-of-two sized; :func:`perfect_pieces`). Generators ask a :data:`SubtreeHashes`
callable for all complete subtrees a proof needs in one batch, so a store-backed log
answers one proof with a handful of range reads; :class:`SubtreeCache` keeps the
(immutable) complete subtrees it has seen. :class:`CompactRange` is the O(log n) right
frontier used to stream a root over 10^6+ leaves.

Proof *verification* follows RFC 9162 §2.1.3.2 and §2.1.4.2 with the stricter edge rules
of transparency-dev/merkle (see ``vectors/merkle/SOURCE.md``): exactly the right number
of 32-byte proof elements; ``size1 == 0`` is always an error; with ``size1 == size2`` the
proof must be empty and the roots equal. Failures raise :class:`InclusionProofError` /
:class:`ConsistencyProofError`; nothing returns a bool.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from hedui.node.audit.errors import ConsistencyProofError, InclusionProofError

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "Range",
    "SubtreeHashes",
    "leaf_hash",
    "node_hash",
    "root_of",
    "perfect_pieces",
    "inclusion_ranges",
    "consistency_ranges",
    "root_at",
    "inclusion_proof",
    "consistency_proof",
    "verify_inclusion",
    "verify_consistency",
    "CompactRange",
    "MemoryTree",
    "SubtreeCache",
]

HASH_SIZE = 32
_sha256 = hashlib.sha256
# RFC 9162 §2.1.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT = _sha256(b"").digest()

Range = tuple[int, int]
"""A half-open leaf range ``[start, end)``."""

SubtreeHashes = Callable[[Sequence[Range]], Sequence[bytes]]
"""Returns MTH(D[start:end]) for each given *complete* subtree range (``end - start`` a
power of two, ``start`` a multiple of it), in the same order."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH({d(0)}) = HASH(0x00 || d(0))."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return _sha256(b"\x01" + left + right).digest()


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH of a whole list of leaf hashes (streams; O(log n) memory)."""
    cr = CompactRange()
    cr.extend(leaf_hashes)
    return cr.root()


def _split(n: int) -> int:
    # RFC 9162 §2.1.1: k is the largest power of two smaller than n (n > 1).
    return 1 << ((n - 1).bit_length() - 1)


def perfect_pieces(start: int, end: int) -> list[Range]:
    """Splits ``[start, end)`` into the complete subtrees MTH(D[start:end]) is built from:
    the binary digits of ``end - start``, largest first, so that
    MTH = node(P1, node(P2, ... Pk)) (RFC 9162 §2.1.1 applied recursively). Ranges the
    RFC recursion produces are always aligned; anything else is a ``ValueError``."""
    if not 0 <= start <= end:
        raise ValueError(f"range: got [{start}, {end}), want 0 <= start <= end")
    out: list[Range] = []
    a, s = start, end - start
    while s:
        p = 1 << (s.bit_length() - 1)
        if a % p:
            raise ValueError(f"range [{start}, {end}) is not a Merkle subtree range")
        out.append((a, a + p))
        a += p
        s -= p
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    r = hashes[-1]
    for h in reversed(hashes[:-1]):
        r = _sha256(b"\x01" + h + r).digest()
    return r


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose MTH form the audit path of leaf ``index`` in a tree of ``size``
    leaves, leaf upwards (RFC 9162 §2.1.3.1 PATH(m, D[n]))."""
    if not 0 <= index < size:
        raise InclusionProofError(f"index: got {index}, want 0 <= index < tree size {size}")
    out: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k
            out.append((lo + k, hi))
            hi = lo + k
        else:
            # PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k]) for m >= k
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(size1: int, size2: int) -> list[Range]:
    """The ranges whose MTH form the consistency proof from ``size1`` to ``size2``
    (RFC 9162 §2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true))."""
    if size1 <= 0 or size1 > size2:
        raise ConsistencyProofError(f"sizes: got {size1} -> {size2}, want 0 < size1 <= size2")
    out: list[Range] = []
    lo, hi, m, b = 0, size2, size1, True
    while True:
        n = hi - lo
        if m == n:
            # SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}
            if not b:
                out.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            # SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            out.append((lo + k, hi))
            hi = lo + k
        else:
            # SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            out.append((lo, lo + k))
            lo += k
            m -= k
            b = False
    out.reverse()
    return out


def _resolve(ranges: Sequence[Range], subtrees: SubtreeHashes) -> list[bytes]:
    """MTH of each range, asking ``subtrees`` once for every complete piece needed."""
    split = [perfect_pieces(a, b) for a, b in ranges]
    wanted: list[Range] = list(dict.fromkeys(p for ps in split for p in ps))
    got = list(subtrees(wanted)) if wanted else []
    if len(got) != len(wanted):
        raise ValueError(f"subtree source returned {len(got)} hashes for {len(wanted)} ranges")
    table = dict(zip(wanted, got))
    return [_fold([table[p] for p in ps]) for ps in split]


def root_at(size: int, subtrees: SubtreeHashes) -> bytes:
    """MTH(D[0:size]) from at most log2(size)+1 complete subtrees."""
    if size == 0:
        return EMPTY_ROOT
    return _resolve([(0, size)], subtrees)[0]


def inclusion_proof(index: int, size: int, subtrees: SubtreeHashes) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof for leaf ``index`` in the tree of ``size``."""
    return _resolve(inclusion_ranges(index, size), subtrees)


def consistency_proof(size1: int, size2: int, subtrees: SubtreeHashes) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof from ``size1`` to ``size2`` (0 < size1 <= size2)."""
    return _resolve(consistency_ranges(size1, size2), subtrees)


def _check_hash(what: str, value: bytes, err: type[Exception]) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        n = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise err(f"{what}: got {n} bytes, want {HASH_SIZE}")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Verifies that ``leaf`` (an RFC 9162 leaf *hash*) is at ``index`` in the tree of
    ``size`` leaves with root ``root``. Raises :class:`InclusionProofError`."""
    E = InclusionProofError
    proof = list(proof or [])
    _check_hash("leaf hash", leaf, E)
    _check_hash("root", root, E)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p, E)
    # RFC 9162 §2.1.3.2 step 1: leaf_index must be < tree_size.
    if index < 0 or index >= size:
        raise E(f"index: got {index}, want 0 <= index < tree size {size}")
    # step 2-3
    fn, sn, r = index, size - 1, bytes(leaf)
    # step 4
    for p in proof:
        if sn == 0:
            raise E(f"proof has {len(proof)} hashes, too many for index {index} in size {size}")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    # step 5: sn must be 0 (all levels consumed) and r must equal the root.
    if sn != 0:
        raise E(f"proof has {len(proof)} hashes, too few for index {index} in size {size}")
    if not hmac.compare_digest(r, bytes(root)):
        raise E(f"calculated root does not match the given root (index {index}, size {size})")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Verifies that the tree of ``size2`` with ``root2`` extends the tree of ``size1``
    with ``root1``. Raises :class:`ConsistencyProofError`."""
    E = ConsistencyProofError
    proof = list(proof or [])
    # Strict edge rules (vectors/merkle/SOURCE.md), checked before RFC 9162 §2.1.4.2.
    if size2 < size1:
        raise E(f"sizes: got size2 {size2} < size1 {size1}")
    if size1 == 0:
        raise E("size1: got 0, want > 0 (a consistency proof from the empty tree proves nothing)")
    if size1 == size2:
        if proof:
            raise E(f"size1 == size2 == {size1}, but the proof has {len(proof)} hashes, want 0")
        if not isinstance(root1, (bytes, bytearray)) or not isinstance(root2, (bytes, bytearray)):
            raise E("roots must be bytes")
        if not hmac.compare_digest(bytes(root1), bytes(root2)):
            raise E(f"size1 == size2 == {size1}, but the roots differ")
        return
    _check_hash("root1", root1, E)
    _check_hash("root2", root2, E)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p, E)
    # RFC 9162 §2.1.4.2 step 1: an empty consistency_path fails.
    if not proof:
        raise E(f"empty proof for {size1} -> {size2}")
    # step 2: if first is an exact power of 2, prepend first_hash.
    if size1 & (size1 - 1) == 0:
        proof = [bytes(root1)] + proof
    # step 3
    fn, sn = size1 - 1, size2 - 1
    # step 4: if LSB(fn) is set, shift both until it is not.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # step 5
    fr = sr = proof[0]
    # step 6
    for c in proof[1:]:
        if sn == 0:
            raise E(f"proof has {len(proof)} hashes, too many for {size1} -> {size2}")
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    # step 7: fr == first_hash, sr == second_hash, sn == 0.
    if sn != 0:
        raise E(f"proof has {len(proof)} hashes, too few for {size1} -> {size2}")
    if not hmac.compare_digest(fr, bytes(root1)):
        raise E(f"calculated root1 does not match the given root1 ({size1} -> {size2})")
    if not hmac.compare_digest(sr, bytes(root2)):
        raise E(f"calculated root2 does not match the given root2 ({size1} -> {size2})")


class CompactRange:
    """The right frontier of a growing tree: the complete subtrees that D[0:size]
    decomposes into (one per set bit of ``size``, largest first). Appending a leaf costs
    one hash amortised; :meth:`root` folds the frontier (RFC 9162 §2.1.1).

    ``on_node(height, index, hash)``, if given, is called for every complete subtree of
    height >= 1 as soon as it is complete (used to cross-check stored subtree caches)."""

    __slots__ = ("_size", "_stack", "_on_node")

    def __init__(
        self,
        size: int = 0,
        hashes: Sequence[bytes] = (),
        on_node: Callable[[int, int, bytes], None] | None = None,
    ) -> None:
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise ValueError(f"compact range of size {size} needs {bin(max(size, 0)).count('1')} hashes")
        for h in hashes:
            if len(h) != HASH_SIZE:
                raise ValueError("compact range hashes must be 32 bytes")
        self._size = size
        self._stack = [bytes(h) for h in hashes]
        self._on_node = on_node

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._stack)

    def append(self, leaf: bytes) -> None:
        """Appends one leaf *hash*."""
        n, stack, h = self._size, self._stack, leaf
        if self._on_node is None:
            while n & 1:
                h = _sha256(b"\x01" + stack.pop() + h).digest()
                n >>= 1
        else:
            height = 0
            while n & 1:
                h = _sha256(b"\x01" + stack.pop() + h).digest()
                n >>= 1
                height += 1
                self._on_node(height, self._size >> height, h)
        stack.append(h)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for h in leaves:
            self.append(h)

    def root(self) -> bytes:
        """MTH(D[0:size]); the empty-tree hash for size 0."""
        if not self._stack:
            return EMPTY_ROOT
        return _fold(self._stack)

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._stack, self._on_node)


class MemoryTree:
    """A whole tree in memory (every level). For tests, tools and small logs; the node's
    store uses :class:`hedui.node.audit.log.AuditLog` instead."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append_hash(h)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, data: bytes) -> int:
        return self.append_hash(leaf_hash(data))

    def append_hash(self, h: bytes) -> int:
        if len(h) != HASH_SIZE:
            raise ValueError("leaf hashes must be 32 bytes")
        idx = len(self._levels[0])
        self._levels[0].append(bytes(h))
        level, i = 0, idx
        while i & 1:
            row = self._levels[level]
            parent = node_hash(row[i - 1], row[i])
            level += 1
            if len(self._levels) <= level:
                self._levels.append([])
            self._levels[level].append(parent)
            i >>= 1
        return idx

    def subtrees(self, ranges: Sequence[Range]) -> list[bytes]:
        """A :data:`SubtreeHashes` source over this tree."""
        out = []
        for a, b in ranges:
            n = b - a
            h = n.bit_length() - 1
            if a < 0 or n <= 0 or n != 1 << h or a % n or b > self.size:
                raise ValueError(f"[{a}, {b}) is not a complete subtree of this tree")
            out.append(self._levels[h][a >> h])
        return out

    def root(self, size: int | None = None) -> bytes:
        return root_at(self.size if size is None else size, self.subtrees)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self.size if size is None else size, self.subtrees)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(size1, self.size if size2 is None else size2, self.subtrees)


class SubtreeCache:
    """Wraps a :data:`SubtreeHashes` source with an LRU of complete subtrees. Complete
    subtrees never change in an append-only log, so cached values never go stale."""

    def __init__(self, source: SubtreeHashes, max_entries: int = 1 << 16) -> None:
        self._source = source
        self._max = max_entries
        self._cache: OrderedDict[Range, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, ranges: Sequence[Range]) -> list[bytes]:
        found: dict[Range, bytes] = {}
        with self._lock:
            for r in ranges:
                h = self._cache.get(r)
                if h is not None:
                    self._cache.move_to_end(r)
                    found[r] = h
        missing = [r for r in ranges if r not in found]
        if missing:
            got = list(self._source(missing))
            if len(got) != len(missing):
                raise ValueError("subtree source returned the wrong number of hashes")
            with self._lock:
                for r, h in zip(missing, got):
                    found[r] = h
                    self._cache[r] = h
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        return [found[r] for r in ranges]

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
