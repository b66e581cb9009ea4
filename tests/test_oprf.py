"""RFC 9497 VOPRF (ristretto255-SHA512) behind hedui.keys.oprf: conformance and round trips."""

from __future__ import annotations

import json
import pickle
import random

import pytest

from hedui.adapters.errors import InvalidIdentity
from hedui.adapters.idnum import synthetic
from hedui.keys import oprf
from hedui.keys.errors import InvalidBlindedElement, OprfProofError
from hedui.keys.oprf import ServerKey
from hedui.node.errors import InvalidArgument, VerificationError

SEED = bytes(range(32))


@pytest.fixture(scope="module")
def suites(vectors):
    entries = json.loads((vectors / "oprf" / "rfc9497-ristretto255-sha512.json").read_text())
    assert [e["mode"] for e in entries] == [0, 1, 2]
    assert all(e["identifier"] == "ristretto255-SHA512" for e in entries)
    return {e["mode"]: e for e in entries}


def _key_from_vector(entry) -> ServerKey:
    """A ServerKey whose evaluator is DeriveKeyPair(Seed, KeyInfo) of the vector (§3.2.1)."""
    return ServerKey(bytes.fromhex(entry["seed"]), bytes.fromhex(entry["keyInfo"]), 0)


def _split(v: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in v.split(",")]


# --- conformance: RFC 9497 Appendix A.1 --------------------------------------------------

def test_derive_key_pair_voprf(suites):
    """§3.2.1 DeriveKeyPair(Seed, KeyInfo) yields the vector's pkSm (mode 1, VOPRF)."""
    key = _key_from_vector(suites[1])
    assert key.public_key_bytes.hex() == suites[1]["pkSm"]


def test_derive_key_pair_is_mode_separated(suites):
    """DeriveKeyPair's DST includes the mode's contextString (§3.1, §3.2.1): the mode-0 and
    mode-2 entries derive other keys from the same seed. The library implements mode 1 only,
    so the OPRF (mode 0) and POPRF (mode 2) outputs are out of its reach and must differ."""
    key = _key_from_vector(suites[0])
    assert suites[0]["skSm"] != suites[1]["skSm"]
    assert key.public_key_bytes.hex() == suites[1]["pkSm"]  # same as mode 1: mode 1 derivation
    assert key.public_key_bytes.hex() != suites[2]["pkSm"]
    for mode in (0, 2):
        for v in suites[mode]["vectors"]:
            for x, out in zip(_split(v["Input"]), _split(v["Output"])):
                assert key._evaluate(x) != out


def test_blind_evaluate_vector_elements(suites):
    """§3.3.2 BlindEvaluate: the vector's blinded elements evaluate to its evaluated
    elements, batch of 1 and batch of 2. The proof differs (its random scalar r is fixed in
    the vectors but drawn fresh here), so only its length is checked."""
    key = _key_from_vector(suites[1])
    batches = [len(v["BlindedElement"].split(",")) for v in suites[1]["vectors"]]
    assert batches == [1, 1, 2]
    for v in suites[1]["vectors"]:
        elements, proof = key.evaluate_batch(_split(v["BlindedElement"]))
        assert elements == _split(v["EvaluationElement"])
        assert len(proof) == oprf.PROOF_SIZE


def test_outputs_voprf(suites):
    """§3.3.1 Evaluate (server side, known input) equals the vector's Output, mode 1."""
    key = _key_from_vector(suites[1])
    n = 0
    for v in suites[1]["vectors"]:
        for x, out in zip(_split(v["Input"]), _split(v["Output"])):
            assert key._evaluate(x) == out
            n += 1
    assert n == 4


# --- the module's own API ------------------------------------------------------------------

@pytest.fixture(scope="module")
def key() -> ServerKey:
    return ServerKey.derive(SEED, 3)


@pytest.fixture(scope="module")
def ids() -> list[str]:
    rng = random.Random(9)
    return [synthetic(rng) for _ in range(5)]


def test_round_trip_equals_token(key, ids):
    state = oprf.blind(ids)
    assert len(state) == 5 and all(len(b) == oprf.ELEMENT_SIZE for b in state.blinded)
    elements, proof = key.evaluate_batch(state.blinded)
    tokens = oprf.finalize(state, elements, proof, key.public_key_bytes)
    assert tokens == [key.token(i) for i in ids]
    assert all(len(t) == oprf.TOKEN_SIZE for t in tokens)
    assert len(set(tokens)) == 5


def test_token_normalises_input(key, ids):
    n = ids[0]
    fw = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in n)
    assert key.token(f"  {fw.lower()} ") == key.token(n)
    with pytest.raises(InvalidIdentity):
        key.token(n[:-1])
    with pytest.raises(InvalidIdentity):
        oprf.blind([ids[1], n[:-1]])


def test_blinding_is_fresh(ids):
    assert oprf.blind(ids[:1]).blinded != oprf.blind(ids[:1]).blinded


def test_epochs_and_seeds_separate_tokens(ids):
    a, b, c = ServerKey.derive(SEED, 1), ServerKey.derive(SEED, 2), ServerKey.derive(bytes(32), 1)
    assert len({a.token(ids[0]), b.token(ids[0]), c.token(ids[0])}) == 3
    assert len({a.public_key_bytes, b.public_key_bytes, c.public_key_bytes}) == 3
    assert ServerKey.derive(SEED, 1).token(ids[0]) == a.token(ids[0])


def test_key_pickles_for_workers_without_repr_leak(key, ids):
    clone = pickle.loads(pickle.dumps(key))
    assert clone.token(ids[0]) == key.token(ids[0]) and clone.epoch == 3
    assert SEED.hex() not in repr(key)


def test_bad_key_parameters():
    with pytest.raises(InvalidArgument, match="oprf seed: got 31 bytes, want 32"):
        ServerKey.derive(bytes(31), 0)
    with pytest.raises(InvalidArgument, match="epoch"):
        ServerKey.derive(SEED, -1)


def test_wrong_key_proof_rejected(key, ids):
    state = oprf.blind(ids)
    elements, proof = key.evaluate_batch(state.blinded)
    other = ServerKey.derive(SEED, 4)
    with pytest.raises(OprfProofError) as ei:
        oprf.finalize(state, elements, proof, other.public_key_bytes)
    assert isinstance(ei.value, VerificationError) and ei.value.reason == "BAD_PROOF"


@pytest.mark.parametrize("tamper", ["proof_c", "proof_s", "element", "swap"])
def test_tampered_evaluation_rejected(key, ids, tamper):
    state = oprf.blind(ids)
    elements, proof = key.evaluate_batch(state.blinded)
    if tamper == "proof_c":
        proof = bytes([proof[0] ^ 1]) + proof[1:]
    elif tamper == "proof_s":
        proof = proof[:40] + bytes([proof[40] ^ 1]) + proof[41:]
    elif tamper == "element":
        # A valid element, but evaluated under a different key.
        elements[2] = ServerKey.derive(SEED, 9).evaluate_batch([state.blinded[2]])[0][0]
    else:
        elements[0], elements[1] = elements[1], elements[0]
    with pytest.raises(OprfProofError, match="^(proof|elements)"):
        oprf.finalize(state, elements, proof, key.public_key_bytes)


def test_count_and_shape_mismatches_rejected(key, ids):
    state = oprf.blind(ids)
    elements, proof = key.evaluate_batch(state.blinded)
    with pytest.raises(OprfProofError, match="elements: got 4, want 5"):
        oprf.finalize(state, elements[:4], proof, key.public_key_bytes)
    with pytest.raises(OprfProofError, match="proof: got 63 bytes, want 64"):
        oprf.finalize(state, elements, proof[:63], key.public_key_bytes)
    with pytest.raises(OprfProofError, match=r"elements\[1\]: got 31 bytes"):
        oprf.finalize(state, [elements[0], elements[1][:31]] + elements[2:], proof, key.public_key_bytes)
    with pytest.raises(OprfProofError, match="elements: got an invalid encoding"):
        oprf.finalize(state, elements[:4] + [bytes(32)], proof, key.public_key_bytes)
    with pytest.raises(OprfProofError, match="public_key"):
        oprf.finalize(state, elements, proof, b"\xff" * 32)


def test_invalid_blinded_elements_named_by_index(key, ids):
    good = oprf.blind(ids[:2]).blinded
    for bad, why in [(bytes(32), "invalid encoding"), (b"\xff" * 32, "invalid encoding"), (b"\x01" * 31, "got 31 bytes")]:
        with pytest.raises(InvalidBlindedElement, match=rf"^blinded\[2\]: .*{why}") as ei:
            key.evaluate_batch(good + [bad])
        assert ei.value.reason == "INVALID_ELEMENT"
    with pytest.raises(InvalidArgument, match="blinded: got 0 elements"):
        key.evaluate_batch([])
    with pytest.raises(InvalidArgument, match="identities: got 0"):
        oprf.blind([])


def test_large_batch(key):
    rng = random.Random(2)
    ids = [synthetic(rng) for _ in range(300)]
    state = oprf.blind(ids)
    elements, proof = key.evaluate_batch(state.blinded)
    assert oprf.finalize(state, elements, proof, key.public_key_bytes) == [key.token(i) for i in ids]


def test_blind_state_is_not_picklable(ids):
    with pytest.raises(TypeError):
        pickle.dumps(oprf.blind(ids[:1]))
