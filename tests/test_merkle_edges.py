"""RFC 9162 Merkle edge cases the vectors do not reach: the subtree cache (hits, LRU
eviction, a lying source), compact-range construction, range helpers and input checks.
Expected hashes come from the reference tree in tests/vectors/merkle/reference_tree.json
or from a direct RFC 9162 §2.1.1 recursion written here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hedui.node.audit import merkle
from hedui.node.audit.errors import ConsistencyProofError, InclusionProofError


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, straight from the definition (the oracle)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


DATA = [b"leaf-%d" % i for i in range(40)]
HASHES = [merkle.leaf_hash(d) for d in DATA]


@pytest.fixture(scope="module")
def reference(vectors: Path) -> dict:
    return json.loads((vectors / "merkle" / "reference_tree.json").read_text())


def test_roots_match_the_reference_tree_and_the_definition(reference):
    leaves = [bytes.fromhex(x) for x in reference["leaves_hex"]]
    for size in range(len(leaves) + 1):
        want = bytes.fromhex(reference["roots_hex"][str(size)])
        assert _mth(leaves[:size]) == want
        assert merkle.root_of(merkle.leaf_hash(x) for x in leaves[:size]) == want
        assert merkle.MemoryTree(merkle.leaf_hash(x) for x in leaves[:size]).root() == want
    for size in range(len(DATA) + 1):
        assert merkle.root_of(HASHES[:size]) == _mth(DATA[:size])


def test_leaf_and_node_hash_prefixes():
    assert merkle.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert merkle.HASH_SIZE == 32


class _CountingSource:
    def __init__(self, tree: merkle.MemoryTree) -> None:
        self.tree = tree
        self.calls: list[list[tuple[int, int]]] = []

    def __call__(self, ranges):
        self.calls.append(list(ranges))
        return self.tree.subtrees(ranges)


def test_subtree_cache_hits_and_lru_eviction():
    tree = merkle.MemoryTree(HASHES[:16])
    src = _CountingSource(tree)
    cache = merkle.SubtreeCache(src, max_entries=2)
    a, b, c = (0, 8), (8, 16), (0, 4)
    assert cache([a, b]) == tree.subtrees([a, b])
    assert src.calls == [[a, b]]
    assert cache([a]) == tree.subtrees([a])  # hit: no new call, and a becomes most recent
    assert len(src.calls) == 1
    assert cache([c]) == tree.subtrees([c])  # third entry: evicts b, the least recently used
    assert src.calls[-1] == [c]
    cache([a, c])  # both still cached
    assert len(src.calls) == 2
    cache([b])  # b was evicted: fetched again
    assert src.calls[-1] == [b]
    assert len(src.calls) == 3
    cache([a])  # a was the least recently used when b came back: evicted
    assert src.calls[-1] == [a] and len(src.calls) == 4


def test_subtree_cache_at_exactly_its_size_keeps_everything():
    tree = merkle.MemoryTree(HASHES[:16])
    src = _CountingSource(tree)
    cache = merkle.SubtreeCache(src, max_entries=3)
    ranges = [(0, 8), (8, 12), (12, 16)]
    cache(ranges)
    cache(ranges)
    assert len(src.calls) == 1
    cache.clear()
    cache(ranges)
    assert len(src.calls) == 2


def test_subtree_cache_only_asks_for_what_it_lacks_and_keeps_order():
    tree = merkle.MemoryTree(HASHES[:16])
    src = _CountingSource(tree)
    cache = merkle.SubtreeCache(src)
    cache([(4, 8)])
    got = cache([(0, 4), (4, 8), (8, 16)])
    assert got == tree.subtrees([(0, 4), (4, 8), (8, 16)])
    assert src.calls[-1] == [(0, 4), (8, 16)]


def test_subtree_cache_default_size_is_65536_entries():
    calls = []

    def source(ranges):
        calls.append(list(ranges))
        return [r[0].to_bytes(32, "big") for r in ranges]

    cache = merkle.SubtreeCache(source)
    cache([(i, i + 1) for i in range(1 << 16)])
    cache([(0, 1)])
    assert len(calls) == 1  # all 65536 kept
    cache([(1 << 16, (1 << 16) + 1)])  # one more evicts the least recently used, (1, 2)
    cache([(1, 2)])
    assert calls[-1] == [(1, 2)] and len(calls) == 3


def test_subtree_cache_refuses_a_source_that_answers_short():
    cache = merkle.SubtreeCache(lambda ranges: [b"\x00" * 32] * (len(ranges) - 1))
    with pytest.raises(ValueError, match="wrong number"):
        cache([(0, 1), (1, 2)])


def test_resolve_refuses_a_source_that_answers_short():
    tree = merkle.MemoryTree(HASHES[:8])
    with pytest.raises(ValueError, match="returned 1 hashes for 2"):
        merkle.root_at(6, lambda ranges: tree.subtrees(ranges)[:1])


def test_cached_proofs_equal_uncached_and_verify():
    tree = merkle.MemoryTree(HASHES)
    cache = merkle.SubtreeCache(tree.subtrees, max_entries=4)  # small: evictions happen throughout
    for size in (1, 2, 3, 7, 8, 9, 31, 32, 33, 40):
        root = merkle.root_at(size, cache)
        assert root == _mth(DATA[:size])
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, cache)
            assert proof == tree.inclusion_proof(index, size)
            merkle.verify_inclusion(HASHES[index], index, size, proof, root)
        for size1 in range(1, size + 1):
            proof = merkle.consistency_proof(size1, size, cache)
            assert proof == tree.consistency_proof(size1, size)
            merkle.verify_consistency(size1, size, proof, _mth(DATA[:size1]), root)


def test_perfect_pieces():
    assert merkle.perfect_pieces(0, 0) == []
    assert merkle.perfect_pieces(0, 1) == [(0, 1)]
    assert merkle.perfect_pieces(0, 13) == [(0, 8), (8, 12), (12, 13)]
    assert merkle.perfect_pieces(8, 16) == [(8, 16)]
    assert merkle.perfect_pieces(12, 15) == [(12, 14), (14, 15)]
    for bad in ((-1, 3), (5, 4)):
        with pytest.raises(ValueError, match="want 0 <= start <= end"):
            merkle.perfect_pieces(*bad)
    with pytest.raises(ValueError, match="not a Merkle subtree range"):
        merkle.perfect_pieces(2, 10)


def test_inclusion_and_consistency_ranges():
    # RFC 9162 §2.1.3.1 PATH(3, D[7]): MTH(D[2:3]), MTH(D[0:2]), MTH(D[4:7]).
    assert merkle.inclusion_ranges(3, 7) == [(2, 3), (0, 2), (4, 7)]
    assert merkle.inclusion_ranges(0, 1) == []
    assert merkle.inclusion_ranges(6, 7) == [(4, 6), (0, 4)]
    # RFC 9162 §2.1.4.1 examples (tree of 7): PROOF(3) = [c, d, g, l], PROOF(4) = [l], PROOF(6) = [i, j, k, l].
    assert merkle.consistency_ranges(3, 7) == [(2, 3), (3, 4), (0, 2), (4, 7)]
    assert merkle.consistency_ranges(4, 7) == [(4, 7)]
    assert merkle.consistency_ranges(6, 7) == [(4, 6), (6, 7), (0, 4)]
    assert merkle.consistency_ranges(7, 7) == []
    for bad in ((-1, 4), (4, 3), (0, 0)):
        with pytest.raises(ConsistencyProofError, match="want 0 < size1 <= size2"):
            merkle.consistency_ranges(*bad)
    for index, size in ((-1, 4), (4, 4), (0, 0)):
        with pytest.raises(InclusionProofError, match="want 0 <= index < tree size"):
            merkle.inclusion_ranges(index, size)


def test_verify_input_checks():
    tree = merkle.MemoryTree(HASHES[:5])
    root, proof = tree.root(), tree.inclusion_proof(2)
    with pytest.raises(InclusionProofError, match="leaf hash: got 31 bytes, want 32"):
        merkle.verify_inclusion(HASHES[2][:31], 2, 5, proof, root)
    with pytest.raises(InclusionProofError, match="root: got str bytes"):
        merkle.verify_inclusion(HASHES[2], 2, 5, proof, "x" * 32)
    with pytest.raises(InclusionProofError, match=r"proof\[1\]: got 33 bytes"):
        merkle.verify_inclusion(HASHES[2], 2, 5, [proof[0], proof[1] + b"!", *proof[2:]], root)
    with pytest.raises(InclusionProofError, match="want 0 <= index < tree size 5"):
        merkle.verify_inclusion(HASHES[2], 5, 5, proof, root)
    with pytest.raises(InclusionProofError, match="want 0 <= index < tree size 5"):
        merkle.verify_inclusion(HASHES[2], -1, 5, proof, root)
    with pytest.raises(InclusionProofError, match="too many for index 2 in size 5"):
        merkle.verify_inclusion(HASHES[2], 2, 5, [*proof, proof[0]], root)
    with pytest.raises(InclusionProofError, match="too few for index 2 in size 5"):
        merkle.verify_inclusion(HASHES[2], 2, 5, proof[:-1], root)
    r2, r5 = tree.root(2), tree.root(5)
    cons = tree.consistency_proof(2, 5)
    with pytest.raises(ConsistencyProofError, match="too many for 2 -> 5"):
        merkle.verify_consistency(2, 5, [*cons, cons[0]], r2, r5)
    with pytest.raises(ConsistencyProofError, match="too few for 2 -> 5"):
        merkle.verify_consistency(2, 5, cons[:-1], r2, r5)
    # bytearray inputs are accepted like bytes
    merkle.verify_inclusion(bytearray(HASHES[2]), 2, 5, [bytearray(p) for p in proof], bytearray(root))
    r1, r3 = tree.root(1), tree.root(3)
    with pytest.raises(ConsistencyProofError, match="size2 2 < size1 3"):
        merkle.verify_consistency(3, 2, [], r3, r1)
    with pytest.raises(ConsistencyProofError, match="size1: got 0"):
        merkle.verify_consistency(0, 3, [], merkle.EMPTY_ROOT, r3)
    merkle.verify_consistency(3, 3, [], r3, bytearray(r3))
    with pytest.raises(ConsistencyProofError, match="the proof has 1 hashes, want 0"):
        merkle.verify_consistency(3, 3, [r1], r3, r3)
    with pytest.raises(ConsistencyProofError, match="roots must be bytes"):
        merkle.verify_consistency(3, 3, [], r3.hex(), r3)
    with pytest.raises(ConsistencyProofError, match="but the roots differ"):
        merkle.verify_consistency(3, 3, [], r3, r1)
    with pytest.raises(ConsistencyProofError, match="empty proof for 1 -> 3"):
        merkle.verify_consistency(1, 3, [], r1, r3)
    with pytest.raises(ConsistencyProofError, match="root1: got 31 bytes"):
        merkle.verify_consistency(1, 3, tree.consistency_proof(1, 3), r1[:31], r3)


def test_compact_range_checks_and_callbacks():
    with pytest.raises(ValueError, match="size 3 needs 2 hashes"):
        merkle.CompactRange(3, [HASHES[0]])
    with pytest.raises(ValueError, match="size -1 needs 0 hashes"):
        merkle.CompactRange(-1, [])
    with pytest.raises(ValueError, match="size -1 needs 0 hashes"):
        merkle.CompactRange(-1, [HASHES[0]])  # bin(-1) has one "1": the sign must refuse it
    with pytest.raises(ValueError, match="must be 32 bytes"):
        merkle.CompactRange(1, [b"short"])
    seen = []
    cr = merkle.CompactRange(on_node=lambda h, i, x: seen.append((h, i, x)))
    cr.extend(HASHES[:8])
    tree = merkle.MemoryTree(HASHES[:8])
    # Every complete subtree of height >= 1, as soon as it is complete: 4 + 2 + 1.
    assert [(h, i) for h, i, _ in seen] == [(1, 0), (1, 1), (2, 0), (1, 2), (1, 3), (2, 1), (3, 0)]
    for h, i, x in seen:
        assert x == tree.subtrees([(i << h, (i + 1) << h)])[0]
    assert cr.size == 8 and cr.hashes == (tree.root(),)
    copy = cr.copy()
    copy.append(HASHES[8])
    assert (cr.size, copy.size) == (8, 9)
    assert copy.root() == _mth(DATA[:9]) and cr.root() == _mth(DATA[:8])
    assert merkle.CompactRange().root() == merkle.EMPTY_ROOT


def test_memory_tree_checks():
    tree = merkle.MemoryTree()
    assert tree.size == 0 and tree.root() == merkle.EMPTY_ROOT
    assert tree.append(b"leaf-0") == 0 and tree.append(b"leaf-1") == 1
    assert tree.root() == _mth(DATA[:2])
    with pytest.raises(ValueError, match="leaf hashes must be 32 bytes"):
        tree.append_hash(b"x")
    for bad in ((0, 0), (0, 3), (1, 3), (0, 4), (-2, 0)):
        with pytest.raises(ValueError, match="not a complete subtree"):
            tree.subtrees([bad])
