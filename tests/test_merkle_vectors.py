"""RFC 9162 Merkle proofs against every transparency-dev/merkle vector in
tests/vectors/merkle/ (see its SOURCE.md), plus the 8-leaf reference tree."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from hedui.node.audit import merkle
from hedui.node.audit.errors import ConsistencyProofError, InclusionProofError

_MERKLE = Path(__file__).resolve().parent / "vectors" / "merkle"


def _files(kind: str) -> list:
    files = sorted((_MERKLE / kind).rglob("*.json")) if _MERKLE.is_dir() else []
    if not files:  # one placeholder so the test runs and fails (test_every_vector_file_is_collected too)
        return [pytest.param(None, id=f"{kind}-missing")]
    return [pytest.param(f, id=str(f.relative_to(_MERKLE / kind))) for f in files]


def _b(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _proof(d: dict) -> list[bytes]:
    return [_b(x) for x in d["proof"] or []]


def test_every_vector_file_is_collected(vectors: Path) -> None:
    # SOURCE.md: 98 inclusion and 98 consistency files, 6 of each with wantErr false.
    inc = sorted((vectors / "merkle" / "inclusion").rglob("*.json"))
    con = sorted((vectors / "merkle" / "consistency").rglob("*.json"))
    assert (len(inc), len(con)) == (98, 98)
    ok = [f for f in inc + con if not json.loads(f.read_text())["wantErr"]]
    assert len(ok) == 12


@pytest.mark.parametrize("path", _files("inclusion"))
def test_inclusion_vector(vectors: Path, path: Path | None) -> None:
    if path is None:
        pytest.fail(f"no inclusion vectors under {_MERKLE}")
    d = json.loads(path.read_text())
    args = (_b(d["leafHash"]), d["leafIdx"], d["treeSize"], _proof(d), _b(d["root"]))
    if d["wantErr"]:
        with pytest.raises(InclusionProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _files("consistency"))
def test_consistency_vector(vectors: Path, path: Path | None) -> None:
    if path is None:
        pytest.fail(f"no consistency vectors under {_MERKLE}")
    d = json.loads(path.read_text())
    args = (d["size1"], d["size2"], _proof(d), _b(d["root1"]), _b(d["root2"]))
    if d["wantErr"]:
        with pytest.raises(ConsistencyProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


@pytest.fixture
def reference(vectors: Path) -> dict:
    return json.loads((vectors / "merkle" / "reference_tree.json").read_text())


@pytest.fixture
def tree(reference: dict) -> merkle.MemoryTree:
    return merkle.MemoryTree(merkle.leaf_hash(bytes.fromhex(x)) for x in reference["leaves_hex"])


def test_reference_roots(reference: dict, tree: merkle.MemoryTree) -> None:
    assert merkle.EMPTY_ROOT.hex() == reference["roots_hex"]["0"]
    for size, root in reference["roots_hex"].items():
        assert tree.root(int(size)).hex() == root, size
        leaves = [merkle.leaf_hash(bytes.fromhex(x)) for x in reference["leaves_hex"][: int(size)]]
        assert merkle.root_of(leaves).hex() == root, size


def test_reference_node_hashes(reference: dict, tree: merkle.MemoryTree) -> None:
    for level, row in enumerate(reference["node_hashes_hex"]):
        for i, h in enumerate(row):
            assert tree.subtrees([(i << level, (i + 1) << level)])[0].hex() == h


def test_generated_happy_paths_equal_the_vectors(vectors: Path, tree: merkle.MemoryTree) -> None:
    for f in sorted((vectors / "merkle" / "inclusion").glob("*/happy-path.json")):
        d = json.loads(f.read_text())
        assert tree.inclusion_proof(d["leafIdx"], d["treeSize"]) == _proof(d), f
    for f in sorted((vectors / "merkle" / "consistency").glob("*/happy-path.json")):
        d = json.loads(f.read_text())
        if d["size1"] == d["size2"]:
            assert _proof(d) == []
            continue
        assert tree.consistency_proof(d["size1"], d["size2"]) == _proof(d), f


def test_every_proof_in_the_reference_tree_verifies(reference: dict, tree: merkle.MemoryTree) -> None:
    roots = {int(k): bytes.fromhex(v) for k, v in reference["roots_hex"].items()}
    leaves = [merkle.leaf_hash(bytes.fromhex(x)) for x in reference["leaves_hex"]]
    for size in range(1, 9):
        for i in range(size):
            path = tree.inclusion_proof(i, size)
            merkle.verify_inclusion(leaves[i], i, size, path, roots[size])
            if size > 1:  # the same path does not prove the leaf at another index
                with pytest.raises(InclusionProofError):
                    merkle.verify_inclusion(leaves[i], (i + 1) % size, size, path, roots[size])
        for s1 in range(1, size + 1):
            merkle.verify_consistency(s1, size, tree.consistency_proof(s1, size), roots[s1], roots[size])


def test_proof_generation_rejects_bad_arguments(tree: merkle.MemoryTree) -> None:
    with pytest.raises(InclusionProofError):
        tree.inclusion_proof(8, 8)
    with pytest.raises(ConsistencyProofError):
        tree.consistency_proof(0, 8)
    with pytest.raises(ConsistencyProofError):
        tree.consistency_proof(5, 4)


def test_compact_range_resumes_from_a_frontier(tree: merkle.MemoryTree) -> None:
    leaves = [tree.subtrees([(i, i + 1)])[0] for i in range(8)]
    for start in range(9):
        frontier = tree.subtrees(merkle.perfect_pieces(0, start)) if start else []
        cr = merkle.CompactRange(start, frontier)
        cr.extend(leaves[start:])
        assert cr.root() == tree.root(8)
