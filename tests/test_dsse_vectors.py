"""DSSE v1 against the specification's own example (tests/vectors/dsse/, see its SOURCE.md).

The published example is signed with ECDSA P-256 (deterministic RFC 6979). Hedui signs and
verifies with Ed25519 only, so the published vector pins what both algorithms share: the PAE
bytes (the published signature verifies, with the published key, over the PAE that
``hedui.keys.dsse.pae`` builds) and the JSON envelope parsing. The ECDSA check below uses
``cryptography`` as an independent verifier of the vector itself, not as Hedui code. Hedui's
Ed25519 envelope verification is pinned by the ``derived_not_upstream`` envelope (RFC 8032
TEST 1 key), which the vector file marks as computed, not published.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hedui.keys import dsse
from hedui.keys.signing import VerifyingKey
from hedui.node.errors import VerificationError


@pytest.fixture(scope="module")
def vec(vectors: Path) -> dict:
    return json.loads((vectors / "dsse" / "protocol-example.json").read_text(encoding="utf-8"))


def _ecdsa_ok(v: dict, message: bytes, sig: bytes) -> bool:
    """The published P-256 key verifying a raw r||s signature (protocol.md "Test Vectors")."""
    k = v["protocol_example"]["key"]
    pub = ec.EllipticCurvePublicNumbers(int(k["X"]), int(k["Y"]), ec.SECP256R1()).public_key()
    if len(sig) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        pub.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def test_pae_is_the_published_bytes(vec):
    p = vec["protocol_example"]
    got = dsse.pae(p["payload_type"], p["serialized_body"].encode("utf-8"))
    assert got == p["pae"].encode("ascii")
    assert got == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


@pytest.mark.parametrize(
    ("ptype", "body", "want"),
    [
        # protocol.md: LEN(s) is the byte length as ASCII decimal, no leading zeros; SP is 0x20.
        ("", b"", b"DSSEv1 0  0 "),
        ("t", b"\x00 \xff", b"DSSEv1 1 t 3 \x00 \xff"),
        # UTF-8 bytes, not characters: "类型" is 6 bytes.
        ("类型", b"x" * 10, b"DSSEv1 6 \xe7\xb1\xbb\xe5\x9e\x8b 10 xxxxxxxxxx"),
    ],
)
def test_pae_lengths_are_byte_counts(ptype, body, want):
    assert dsse.pae(ptype, body) == want


def test_published_signature_verifies_over_hedui_pae(vec):
    p = vec["protocol_example"]
    env = dsse.from_json(p["envelope_json"])
    assert env.payload_type == p["payload_type"]
    assert env.payload == p["serialized_body"].encode("utf-8")
    assert len(env.signatures) == 1
    # envelope.md "Parsing rules": an unset keyid is the same as set-but-empty.
    assert env.signatures[0].keyid == ""
    msg = dsse.pae(env.payload_type, env.payload)
    assert _ecdsa_ok(vec, msg, env.signatures[0].sig)
    # Any other message (payload, type or one length changed) does not verify.
    assert not _ecdsa_ok(vec, dsse.pae(env.payload_type, b"hello world!"), env.signatures[0].sig)
    assert not _ecdsa_ok(vec, dsse.pae("http://example.com/HelloWorlds", env.payload), env.signatures[0].sig)
    assert not _ecdsa_ok(vec, msg.replace(b" 11 ", b" 011 "), env.signatures[0].sig)


def test_published_signature_is_reproduced_by_rfc6979(vec):
    """Deterministic ECDSA over Hedui's PAE gives exactly the published signature."""
    k = vec["protocol_example"]["key"]
    pub = ec.EllipticCurvePublicNumbers(int(k["X"]), int(k["Y"]), ec.SECP256R1())
    priv = ec.EllipticCurvePrivateNumbers(int(k["d"]), pub).private_key()
    p = vec["protocol_example"]
    try:
        der = priv.sign(dsse.pae(p["payload_type"], b"hello world"), ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    except Exception as exc:  # OpenSSL < 3.2 has no RFC 6979; cryptography's wheels bundle a newer one
        pytest.fail(f"deterministic ECDSA unavailable: {exc}")
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert base64.b64encode(raw).decode() == json.loads(p["envelope_json"])["signatures"][0]["sig"]


def test_reference_implementation_envelope_parses_with_keyid(vec):
    r = vec["reference_implementation_example"]
    env = dsse.from_json(json.dumps(r["envelope"]))
    assert [s.keyid for s in env.signatures] == [r["keyid"]]
    assert _ecdsa_ok(vec, dsse.pae(env.payload_type, env.payload), env.signatures[0].sig)
    # Round trip through Hedui's own encoder keeps every byte.
    again = dsse.from_json(dsse.to_json(env))
    assert again == env


def test_url_safe_base64_is_accepted(vec):
    """envelope.md: "Either standard or URL-safe encoding is allowed"."""
    doc = json.loads(vec["protocol_example"]["envelope_json"])
    raw_sig = base64.b64decode(doc["signatures"][0]["sig"])
    assert b"+" in base64.b64encode(raw_sig) or b"/" in base64.b64encode(raw_sig)  # the vector exercises it
    doc["signatures"][0]["sig"] = base64.urlsafe_b64encode(raw_sig).decode()
    env = dsse.from_json(json.dumps(doc))
    assert env.signatures[0].sig == raw_sig


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.pop("payload"),
        lambda d: d.pop("payloadType"),
        lambda d: d.pop("signatures"),
        lambda d: d["signatures"][0].pop("sig"),
        lambda d: d.__setitem__("payload", "aGVsbG8gd29ybGQ"),  # bad padding
        lambda d: d.__setitem__("payload", "aGVsbG8*d29ybGQ="),  # not base64
        lambda d: d.__setitem__("signatures", {"sig": "AA=="}),  # not a list
    ],
    ids=["no-payload", "no-payloadType", "no-signatures", "no-sig", "bad-padding", "not-base64", "signatures-not-list"],
)
def test_malformed_published_envelope_is_a_typed_error(vec, mangle):
    doc = json.loads(vec["protocol_example"]["envelope_json"])
    mangle(doc)
    with pytest.raises(VerificationError) as err:
        dsse.from_json(json.dumps(doc))
    assert err.value.reason == "BAD_ENVELOPE"


def test_unknown_fields_are_ignored(vec):
    """envelope.md: "Consumers MUST ignore unrecognized fields"."""
    doc = json.loads(vec["protocol_example"]["envelope_json"])
    doc["extension"] = {"x": 1}
    doc["signatures"][0]["cert"] = "ignored"
    env = dsse.from_json(json.dumps(doc))
    assert env.payload == b"hello world"


# -- Ed25519 (derived, see SOURCE.md) ---------------------------------------------------


@pytest.fixture(scope="module")
def derived(vec) -> tuple[dict, VerifyingKey]:
    d = vec["derived_not_upstream"]
    t1 = d["rfc8032_test1"]
    sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(t1["secret_key_hex"]))
    # The key is RFC 8032 §7.1 TEST 1: its public key and empty-message signature as published.
    assert sk.public_key().public_bytes_raw().hex() == t1["public_key_hex"]
    assert sk.sign(b"").hex() == t1["empty_message_signature_hex"]
    return d, VerifyingKey("rfc8032-test1", bytes.fromhex(t1["public_key_hex"]))


def _derived_envelope(d: dict, key: VerifyingKey, **over) -> str:
    doc = {"payloadType": d["payload_type"], "payload": d["payload_b64"],
           "signatures": [{"keyid": key.keyid, "sig": d["sig_b64"]}]}
    doc.update(over)
    return json.dumps(doc)


def test_ed25519_envelope_verifies(derived):
    d, key = derived
    env = dsse.from_json(_derived_envelope(d, key))
    payload, signers = dsse.verify(env, {key.keyid: key}, payload_type=d["payload_type"])
    assert payload == b"hello world"
    assert [s.keyid for s in signers] == [key.keyid]


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"payload": base64.b64encode(b"hello world!").decode()}, "BAD_SIGNATURE"),
        ({"payload": base64.b64encode(b"").decode()}, "BAD_SIGNATURE"),
    ],
)
def test_ed25519_envelope_with_changed_payload_is_refused(derived, over, reason):
    d, key = derived
    env = dsse.from_json(_derived_envelope(d, key, **over))
    with pytest.raises(VerificationError) as err:
        dsse.verify(env, {key.keyid: key}, payload_type=d["payload_type"])
    assert err.value.reason == reason


def test_ed25519_envelope_refusals(derived):
    d, key = derived
    env = dsse.from_json(_derived_envelope(d, key))
    with pytest.raises(VerificationError) as err:  # type is bound by PAE and checked first
        dsse.verify(env, {key.keyid: key}, payload_type="http://example.com/HelloWorlds")
    assert err.value.reason == "BAD_ENVELOPE"
    with pytest.raises(VerificationError) as err:
        dsse.verify(env, {"someone/else": key}, payload_type=d["payload_type"])
    assert err.value.reason == "UNKNOWN_SIGNER"
    sig = bytearray(base64.b64decode(d["sig_b64"]))
    for i in (0, 31, 32, 63):  # R and S halves
        bad = bytearray(sig)
        bad[i] ^= 0x01
        env = dsse.from_json(_derived_envelope(d, key, signatures=[{"keyid": key.keyid, "sig": base64.b64encode(bytes(bad)).decode()}]))
        with pytest.raises(VerificationError) as err:
            dsse.verify(env, {key.keyid: key}, payload_type=d["payload_type"])
        assert err.value.reason == "BAD_SIGNATURE"
    # The published ECDSA signature is no Ed25519 signature under any key id.
    env = dsse.from_json(_derived_envelope(d, key, signatures=[
        {"keyid": key.keyid, "sig": json.loads(_published(d))["signatures"][0]["sig"]}]))
    with pytest.raises(VerificationError):
        dsse.verify(env, {key.keyid: key}, payload_type=d["payload_type"])


def _published(_d: dict) -> str:
    vec = json.loads((Path(__file__).parent / "vectors" / "dsse" / "protocol-example.json").read_text(encoding="utf-8"))
    return vec["protocol_example"]["envelope_json"]


def test_ed25519_threshold_counts_distinct_keys(derived):
    d, key = derived
    same_twice = [{"keyid": key.keyid, "sig": d["sig_b64"]}] * 2
    env = dsse.from_json(_derived_envelope(d, key, signatures=same_twice))
    with pytest.raises(VerificationError):
        dsse.verify(env, {key.keyid: key}, payload_type=d["payload_type"], threshold=2)
    payload, signers = dsse.verify(env, {key.keyid: key}, payload_type=d["payload_type"], threshold=1)
    assert len(signers) == 1
