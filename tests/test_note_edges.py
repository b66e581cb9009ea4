"""Signed notes, checkpoints and cosignatures at their boundaries (c2sp.org/signed-note,
tlog-checkpoint, tlog-cosignature): limits, lengths, name rules, duplicate and repeated
signatures, parsing edge cases. The published vectors are in test_note_vectors.py."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.node.audit.errors import (
    AmbiguousKeyError,
    CheckpointError,
    CosignatureError,
    KeyFormatError,
    MalformedNoteError,
    NoteSignatureError,
    UnknownKeyError,
)
from hedui.node.audit.note import (
    MAX_SIGNATURES,
    Checkpoint,
    CosignatureVerifier,
    Signature,
    Signer,
    Verifier,
    Verifiers,
    add_signatures,
    cosignature_message,
    cosignature_timestamp,
    key_id,
    open_checkpoint,
    open_note,
    parse_verifier_key,
    sign_note,
    split_note,
    verify_cosignature,
)

# Fixed keys (RFC 8032 §7.1 TEST 1 and TEST 2 secret keys): deterministic signatures.
A = Signer("a.example/log", Ed25519PrivateKey.from_private_bytes(bytes.fromhex(
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")))
B = Signer("b.example/witness", Ed25519PrivateKey.from_private_bytes(bytes.fromhex(
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")))
TEXT = "a.example/log\n5\n" + base64.b64encode(bytes(range(32))).decode() + "\n"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# ---------------------------------------------------------------- keys and names


def test_key_id_is_sha256_of_name_newline_type_key():
    pub = A.public_key
    want = int.from_bytes(hashlib.sha256(b"a.example/log\n\x01" + pub).digest()[:4], "big")
    assert key_id("a.example/log", 0x01, pub) == want == A.key_id
    want4 = int.from_bytes(hashlib.sha256(b"a.example/log\n\x04" + pub).digest()[:4], "big")
    assert A.cosignature_key_id == want4
    assert A.vkey == f"a.example/log+{want:08x}+" + _b64(bytes([1]) + pub)
    assert A.cosignature_vkey == f"a.example/log+{want4:08x}+" + _b64(bytes([4]) + pub)


def test_signature_key_id_hex_keeps_leading_zeros():
    assert Signature.make("n", 0x00ABCDEF, b"\x00" * 64).key_id_hex == "00abcdef"
    sig = Signature.make("n", 1, b"\x07" * 64)
    assert sig.raw == b"\x07" * 64 and sig.line == f"\u2014 n {sig.base64}\n"


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\u3000b", "a\tb", "a\nb"])
def test_bad_key_names(name):
    with pytest.raises(KeyFormatError):
        Signer(name, Ed25519PrivateKey.generate())
    with pytest.raises(KeyFormatError):
        Verifier(name, A.public_key)


def test_verifier_key_parsing_edges():
    pub = A.public_key
    good = A.vkey
    assert parse_verifier_key(good) == A.verifier()
    assert isinstance(parse_verifier_key(A.cosignature_vkey), CosignatureVerifier)
    name, hex8, key64 = good.split("+", 2)
    bad = [
        f"{name}+{hex8}",  # no key
        f"{name}+{hex8[:7]}+{key64}",  # 7 hex digits
        f"{name}+{hex8}+{key64}=",  # padding where none belongs
        f"{name}+{hex8}+" + _b64(bytes([1]) + pub[:31]),  # 31-byte key
        f"{name}+{(A.key_id ^ 1):08x}+{key64}",  # key id does not match
        f"{name}+{hex8}+" + _b64(bytes([2]) + pub),  # unknown type (and id mismatch)
    ]
    for vkey in bad:
        with pytest.raises(KeyFormatError):
            parse_verifier_key(vkey)
    # Non-canonical base64 (the last character's unused bits set) is refused: a signature
    # line is 68 bytes, so its base64 ends in one "=" and its last character has 2 spare bits.
    sig = A.sign(TEXT)
    assert sig.base64.endswith("=") and not sig.base64.endswith("==")
    last = sig.base64[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sloppy = sig.base64[:-2] + alphabet[alphabet.index(last) | 1] + "="
    assert sloppy != sig.base64 and base64.b64decode(sloppy) == base64.b64decode(sig.base64)
    with pytest.raises(MalformedNoteError):
        split_note(TEXT + "\n" + f"\u2014 {A.name} {sloppy}\n")
    # A note verifier refuses a cosignature (0x04) key and vice versa only for other types.
    with pytest.raises(KeyFormatError, match="want 0x01"):
        Verifier.from_vkey(A.cosignature_vkey)
    assert CosignatureVerifier.from_vkey(A.vkey).key_id == A.cosignature_key_id


def test_signer_key_round_trip_and_errors():
    again = Signer.from_skey(A.skey)
    assert again.vkey == A.vkey and repr(again) == f"Signer(a.example/log+{A.key_id:08x})"
    parts = A.skey.split("+")
    for bad in (
        "+".join(["PRIVATE", "KEYS", *parts[2:]]),
        "+".join(parts[:4]),
        "+".join([*parts[:3], f"{A.key_id ^ 1:08x}", parts[4]]),
        "+".join([*parts[:4], _b64(b"\x01" + b"\x00" * 31)]),
        "+".join([*parts[:4], _b64(b"\x04" + b"\x00" * 32)]),
        42,
    ):
        with pytest.raises(KeyFormatError):
            Signer.from_skey(bad)  # type: ignore[arg-type]
    with pytest.raises(KeyFormatError):
        Signer("n", "not a key")  # type: ignore[arg-type]


def test_verifiers_lookup():
    vs = Verifiers([A.vkey, B.verifier()])
    assert len(vs) == 2 and list(vs) == [A.verifier(), B.verifier()]
    assert vs.lookup(A.name, A.key_id) == A.verifier()
    with pytest.raises(UnknownKeyError):
        vs.lookup(A.name, A.key_id ^ 1)
    with pytest.raises(UnknownKeyError):
        vs.lookup(B.name, A.key_id)
    vs.add(A.vkey)
    with pytest.raises(AmbiguousKeyError):
        vs.lookup(A.name, A.key_id)
    with pytest.raises(KeyFormatError):
        vs.add(42)  # type: ignore[arg-type]
    assert A.verifier() != A.cosignature_verifier() and hash(A.verifier()) == hash(Verifier(A.name, A.public_key))


# ---------------------------------------------------------------- notes


def test_sign_and_open_with_two_signers_and_unknown_ones():
    note = sign_note(TEXT, A, B)
    assert note == TEXT + "\n" + A.sign(TEXT).line + B.sign(TEXT).line
    opened = open_note(note, [A.vkey])
    assert opened.text == TEXT and [s.name for s in opened.signatures] == [A.name]
    assert [s.name for s in opened.unverified] == [B.name]
    both = open_note(note.encode(), Verifiers([A.vkey, B.vkey]))
    assert [s.name for s in both.signatures] == [A.name, B.name] and both.unverified == ()


def test_repeated_and_duplicate_signatures():
    line_a, line_b = A.sign(TEXT).line, B.sign(TEXT).line
    note = TEXT + "\n" + line_a + line_b + line_b + line_a
    opened = open_note(note, A.vkey)
    assert len(opened.signatures) == 1  # a key's repeated signature counts once
    assert len(opened.unverified) == 1  # identical unknown lines collapse


def test_a_bad_signature_by_a_known_key_rejects_the_note():
    sig = A.sign(TEXT)
    raw = bytearray(base64.b64decode(sig.base64))
    raw[-1] ^= 1
    note = TEXT + "\n" + Signature(A.name, A.key_id, _b64(bytes(raw))).line
    with pytest.raises(NoteSignatureError, match=f"{A.name}\\+{A.key_id:08x}"):
        open_note(note, A.vkey)
    short = TEXT + "\n" + Signature(A.name, A.key_id, _b64(bytes(raw[:-1]))).line  # 63-byte signature
    with pytest.raises(NoteSignatureError):
        open_note(short, A.vkey)


def test_no_verifiable_signature_names_the_signers():
    note = sign_note(TEXT, B, A)
    with pytest.raises(UnknownKeyError) as err:
        open_note(note, [Signer.generate("c.example").vkey])
    names = sorted([f"{A.name}+{A.key_id:08x}", f"{B.name}+{B.key_id:08x}"])
    assert str(err.value).endswith("(signed by: " + ", ".join(names) + ")")


def test_signature_count_limit():
    line = A.sign(TEXT).line
    at_limit = TEXT + "\n" + line * MAX_SIGNATURES
    assert len(split_note(at_limit)[1]) == MAX_SIGNATURES == 100
    with pytest.raises(MalformedNoteError, match="more than 100 signatures"):
        split_note(at_limit + line)


@pytest.mark.parametrize("msg", [
    TEXT,  # no blank line
    TEXT + "\n",  # nothing after it
    TEXT + "\n" + "\u2014 a.example/log AAAAAAA=",  # no final newline
    TEXT + "\n" + "- a.example/log AAAAAAA=\n",  # not an em dash
    TEXT + "\n" + "\u2014 a.example/log AAAA\n",  # 3 bytes: no room for key id + signature
    TEXT + "\n" + "\u2014 a.example/log AAAAAA==\n",  # 4 bytes: key id only
    TEXT + "\n" + "\u2014 a.example/log +++\n",
    TEXT + "\n" + "\u2014  AAAAAAA=\n",  # empty name
    "a\tb\n\n" + A.sign("a\tb\n").line,  # control character
    "a\rb\n\n" + A.sign("a\rb\n").line,
    b"\xff\n\n" + A.sign("x\n").line.encode(),  # not UTF-8
])
def test_malformed_notes(msg):
    with pytest.raises(MalformedNoteError):
        split_note(msg)


def test_five_byte_signature_is_well_formed():
    # The smallest signature line the format allows: a 4-byte key id and one byte.
    text, sigs = split_note(TEXT + "\n" + "\u2014 n " + _b64(b"\x00\x00\x00\x07\x01") + "\n")
    assert text == TEXT and sigs[0].key_id == 7


def test_note_text_may_contain_del_and_unicode():
    text = "x\x7f\u4e2d\n"
    assert open_note(sign_note(text, A), A.vkey).text == text


def test_sign_note_checks():
    for bad in ("no newline", "tab\there\n"):
        with pytest.raises(MalformedNoteError):
            sign_note(bad, A)
    with pytest.raises(MalformedNoteError, match="at least one signer"):
        sign_note(TEXT)


def test_add_signatures_replaces_same_key_and_keeps_others():
    note = sign_note(TEXT, A, B)
    other = Signature.make(B.name, B.key_id, b"\x01" * 64)
    new = add_signatures(note, other)
    assert new == TEXT + "\n" + A.sign(TEXT).line + other.line
    c = B.cosign(TEXT, 7)
    assert add_signatures(note, c).endswith(B.sign(TEXT).line + c.line)  # a cosignature has its own key id


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_size_and_root_limits():
    root = bytes(32)
    assert Checkpoint("o", 0, root).size == 0
    assert Checkpoint("o", 2**64 - 1, root).body == f"o\n{2**64 - 1}\n{_b64(root)}\n"
    for size in (-1, 2**64, True + 0.5):
        with pytest.raises(CheckpointError):
            Checkpoint("o", size, root)  # type: ignore[arg-type]
    for bad_root in (bytes(31), bytes(33)):
        with pytest.raises(CheckpointError):
            Checkpoint("o", 1, bad_root)
    for origin in ("", "a\nb"):
        with pytest.raises(CheckpointError):
            Checkpoint(origin, 1, root)
    for ext in ("", "a\nb"):
        with pytest.raises(CheckpointError):
            Checkpoint("o", 1, root, (ext,))


@pytest.mark.parametrize(("body", "ok"), [
    (f"o\n18446744073709551615\n{_b64(bytes(32))}\n", True),
    (f"o\n18446744073709551616\n{_b64(bytes(32))}\n", False),
    (f"o\n0\n{_b64(bytes(32))}\n", True),
    (f"o\n01\n{_b64(bytes(32))}\n", False),
    (f"o\n-1\n{_b64(bytes(32))}\n", False),
    (f"o\n1\n{_b64(bytes(32))}\next\n", True),
    (f"o\n1\n{_b64(bytes(32))}\n\n", False),
    (f"o\n1\n{_b64(bytes(31))}\n", False),
    ("o\n1\n", False),
    (f"o\n1\n{_b64(bytes(32))}", False),
    (b"\xff\n1\n" + _b64(bytes(32)).encode() + b"\n", False),
])
def test_checkpoint_parse_edges(body, ok):
    if ok:
        cp = Checkpoint.parse(body)
        assert cp.body == (body if isinstance(body, str) else body.decode())
    else:
        with pytest.raises(CheckpointError):
            Checkpoint.parse(body)


def test_open_checkpoint_checks_the_origin():
    cp = Checkpoint("a.example/log", 5, bytes(range(32)))
    signed = cp.sign(A)
    got, note = open_checkpoint(signed, A.vkey, origin="a.example/log")
    assert got == cp and note.text == cp.body == TEXT
    with pytest.raises(CheckpointError, match="origin"):
        open_checkpoint(signed, A.vkey, origin="b.example/log")


# ---------------------------------------------------------------- cosignatures


def test_cosignature_message_bytes():
    assert cosignature_message(TEXT, 1679315147) == b"cosignature/v1\ntime 1679315147\n" + TEXT.encode()


def test_cosignature_timestamp_limits():
    top = 2**63 - 1
    sig = B.cosign(TEXT, top)
    assert cosignature_timestamp(sig) == top and cosignature_timestamp(sig.base64) == top
    assert verify_cosignature(B.cosignature_vkey, TEXT, sig) == top
    assert verify_cosignature(B.cosignature_verifier(), TEXT, B.cosign(TEXT, 0)) == 0
    for bad in (-1, 2**63):
        with pytest.raises(CosignatureError):
            B.cosign(TEXT, bad)
    # A timestamp of 2^63 forged into the signature bytes is refused by both readers.
    raw = bytearray(base64.b64decode(sig.base64))
    raw[4:12] = (2**63).to_bytes(8, "big")
    forged = Signature(B.name, B.cosignature_key_id, _b64(bytes(raw)))
    with pytest.raises(CosignatureError, match="exceeds"):
        cosignature_timestamp(forged)
    assert not B.cosignature_verifier()._verify(TEXT.encode(), bytes(raw[4:]))
    for length in (75, 77):
        with pytest.raises(CosignatureError):
            cosignature_timestamp(_b64(bytes(length)))
    assert not B.cosignature_verifier()._verify(TEXT.encode(), bytes(raw[4:-1]))


def test_verify_cosignature_inputs():
    sig = B.cosign(TEXT, 1700000000)
    # A whole line, with or without its newline; a note (0x01) verifier is converted.
    assert verify_cosignature(B.cosignature_vkey, TEXT, sig.line) == 1700000000
    assert verify_cosignature(B.cosignature_vkey, TEXT.encode(), sig.line.rstrip("\n")) == 1700000000
    assert verify_cosignature(B.verifier(), TEXT, sig) == 1700000000
    with pytest.raises(CosignatureError, match="cosignature line"):
        verify_cosignature(B.cosignature_vkey, TEXT, "not a line")
    with pytest.raises(CosignatureError, match="exactly one"):
        verify_cosignature(B.cosignature_vkey, TEXT, sig.line + sig.line)
    with pytest.raises(UnknownKeyError):
        verify_cosignature(A.cosignature_vkey, TEXT, sig)
    with pytest.raises(CosignatureError, match="invalid cosignature"):
        verify_cosignature(B.cosignature_vkey, TEXT + "x\n", sig)
    # The note signature of the same key is no cosignature (other key id).
    with pytest.raises(UnknownKeyError):
        verify_cosignature(B.cosignature_vkey, TEXT, B.sign(TEXT))


def test_cosigned_note_opens_with_either_verifier():
    note = add_signatures(sign_note(TEXT, A), B.cosign(TEXT, 5))
    assert [s.name for s in open_note(note, [A.vkey, B.cosignature_vkey]).signatures] == [A.name, B.name]
    with pytest.raises(UnknownKeyError):
        open_note(note, [B.vkey])  # B signed as a witness (0x04), not as a note signer (0x01)


def test_cosignature_verifier_refuses_a_validly_signed_timestamp_of_2_63():
    # Signed with the key directly (Signer.cosign refuses such a timestamp): the signature is
    # genuine, so only the 2^63 - 1 limit can refuse it.
    ts = 2**63
    sig = B._key.sign(cosignature_message(TEXT, ts))
    assert not B.cosignature_verifier()._verify(TEXT.encode(), ts.to_bytes(8, "big") + sig)
    ok = 2**63 - 1
    sig_ok = B._key.sign(cosignature_message(TEXT, ok))
    assert B.cosignature_verifier()._verify(TEXT.encode(), ok.to_bytes(8, "big") + sig_ok)


def test_sign_accepts_text_or_bytes():
    assert A.sign(TEXT.encode()) == A.sign(TEXT)
    assert B.cosign(TEXT.encode(), 9) == B.cosign(TEXT, 9)


def test_malformed_note_messages_say_what_is_wrong():
    with pytest.raises(MalformedNoteError, match="no blank line"):
        split_note(TEXT + A.sign(TEXT).line)
    with pytest.raises(MalformedNoteError, match="no final newline"):
        split_note(TEXT + "\n" + A.sign(TEXT).line.rstrip("\n"))
    with pytest.raises(MalformedNoteError, match="not a signature"):
        split_note(TEXT + "\n" + "x\n")
    with pytest.raises(MalformedNoteError, match="bad signature line"):
        split_note(TEXT + "\n" + "\u2014 n AAAA\n")


def test_a_note_whose_text_is_one_empty_line():
    # Go's note.Open splits at the last "\n\n" even when it is at offset 0: the text is "\n".
    note = sign_note("\n", A)
    assert note.startswith("\n\n")
    assert open_note(note, A.vkey).text == "\n"
