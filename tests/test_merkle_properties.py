"""Property tests: every generated proof verifies, and any bit flip, truncation or padding
makes it fail; compact ranges agree with whole trees; the identity guard's shape."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.adapters import idnum
from hedui.node.audit import merkle
from hedui.node.audit.errors import ConsistencyProofError, InclusionProofError, NoteError
from hedui.node.audit.note import Signer, open_note, sign_note

MAX = 1100
LEAVES = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(MAX)]
TREE = merkle.MemoryTree(LEAVES)
SIGNER = Signer.generate("prop.hedui/log")

sizes = st.integers(min_value=1, max_value=MAX)


def _flip(b: bytes, bit: int) -> bytes:
    i = bit % (8 * len(b))
    return b[: i // 8] + bytes([b[i // 8] ^ (1 << (i % 8))]) + b[i // 8 + 1 :]


@settings(max_examples=200, deadline=None)
@given(size=sizes, data=st.data())
def test_inclusion_proofs_verify_and_any_change_fails(size: int, data) -> None:
    index = data.draw(st.integers(0, size - 1))
    proof, root, leaf = TREE.inclusion_proof(index, size), TREE.root(size), LEAVES[index]
    merkle.verify_inclusion(leaf, index, size, proof, root)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(InclusionProofError):
        merkle.verify_inclusion(_flip(leaf, bit), index, size, proof, root)
    with pytest.raises(InclusionProofError):
        merkle.verify_inclusion(leaf, index, size, proof, _flip(root, bit))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = proof[:k] + [_flip(proof[k], bit)] + proof[k + 1 :]
        with pytest.raises(InclusionProofError):
            merkle.verify_inclusion(leaf, index, size, bad, root)
        with pytest.raises(InclusionProofError):
            merkle.verify_inclusion(leaf, index, size, proof[:-1], root)
    with pytest.raises(InclusionProofError):
        merkle.verify_inclusion(leaf, index, size, proof + [hashlib.sha256(b"pad").digest()], root)


@settings(max_examples=200, deadline=None)
@given(size2=sizes, data=st.data())
def test_consistency_proofs_verify_and_any_change_fails(size2: int, data) -> None:
    size1 = data.draw(st.integers(1, size2))
    proof = TREE.consistency_proof(size1, size2)
    r1, r2 = TREE.root(size1), TREE.root(size2)
    merkle.verify_consistency(size1, size2, proof, r1, r2)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ConsistencyProofError):
        merkle.verify_consistency(size1, size2, proof, _flip(r1, bit), r2)
    with pytest.raises(ConsistencyProofError):
        merkle.verify_consistency(size1, size2, proof, r1, _flip(r2, bit))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = proof[:k] + [_flip(proof[k], bit)] + proof[k + 1 :]
        with pytest.raises(ConsistencyProofError):
            merkle.verify_consistency(size1, size2, bad, r1, r2)
        with pytest.raises(ConsistencyProofError):
            merkle.verify_consistency(size1, size2, proof[:-1], r1, r2)
    with pytest.raises(ConsistencyProofError):
        merkle.verify_consistency(size1, size2, proof + [hashlib.sha256(b"pad").digest()], r1, r2)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, MAX), data=st.data())
def test_compact_range_matches_the_whole_tree(size: int, data) -> None:
    start = data.draw(st.integers(0, size))
    frontier = TREE.subtrees(merkle.perfect_pieces(0, start)) if start else []
    cr = merkle.CompactRange(start, frontier)
    cr.extend(LEAVES[start:size])
    assert cr.root() == (TREE.root(size) if size else merkle.EMPTY_ROOT)
    assert merkle.root_of(LEAVES[:size]) == cr.root()


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF), min_size=1, max_size=80),
       data=st.data())
def test_signed_notes_round_trip_and_edits_fail(text: str, data) -> None:
    body = text.replace("\u2014", "-") + "\n"
    note = sign_note(body, SIGNER)
    assert open_note(note, [SIGNER.vkey]).text == body
    i = data.draw(st.integers(0, len(body) - 2))
    edited = body[:i] + ("a" if body[i] != "a" else "b") + body[i + 1 :] + note[len(body) :]
    with pytest.raises(NoteError):
        open_note(edited, [SIGNER.vkey])


@settings(max_examples=200, deadline=None)
@given(digest=st.binary(min_size=32, max_size=32), n=st.integers(0, 10**17 - 1), check=st.sampled_from("0123456789X"),
       sep=st.sampled_from([" ", ":", "\"", "-", "/", "=", ",", "\n"]))
def test_identity_shape(digest: bytes, n: int, check: str, sep: str) -> None:
    assert not idnum.contains(digest.hex())
    assert not idnum.contains(f"{n:017d}")
    assert idnum.contains(f"x{sep}{n:017d}{check}{sep}y")
