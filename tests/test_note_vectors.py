"""Signed notes, checkpoints and cosignature/v1 against tests/vectors/note/ (see its
SOURCE.md): golang/mod sumdb/note, C2SP specs, transparency-dev/formats, derived vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hedui.node.audit.errors import (
    AmbiguousKeyError,
    CheckpointError,
    CosignatureError,
    KeyFormatError,
    MalformedNoteError,
    NoteError,
    NoteSignatureError,
    UnknownKeyError,
)
from hedui.node.audit.note import (
    Checkpoint,
    CosignatureVerifier,
    Signer,
    Verifier,
    Verifiers,
    add_signatures,
    cosignature_message,
    cosignature_timestamp,
    key_id,
    open_checkpoint,
    open_note,
    sign_note,
    split_note,
    verify_cosignature,
)
from hedui.node.errors import VerificationError


@pytest.fixture(scope="module")
def sn(vectors: Path) -> dict:
    return json.loads((vectors / "note" / "signed-note.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def go(sn: dict) -> dict:
    return sn["golang_mod_sumdb_note"]


@pytest.fixture(scope="module")
def cs(vectors: Path) -> dict:
    return json.loads((vectors / "note" / "cosignature-v1.json").read_text(encoding="utf-8"))


def _labels(sigs) -> list[str]:
    return [f"{s.name}+{s.key_id_hex}" for s in sigs]


# -- golang/mod sumdb/note ---------------------------------------------------------------


def test_keys_round_trip(go: dict) -> None:
    for name, k in go["keys"].items():
        v = Verifier.from_vkey(k["verifier_key"])
        assert (v.name, f"{v.key_id:08x}", v.vkey) == (k["name"], k["key_id_hex"], k["verifier_key"])
        if "signer_key" in k:
            s = Signer.from_skey(k["signer_key"])
            assert s.skey == k["signer_key"] and s.vkey == k["verifier_key"]
            assert key_id(name, 0x01, s.public_key) == int(k["key_id_hex"], 16)


def test_sign_reproduces_the_note_byte_for_byte(go: dict) -> None:
    c = go["sign"]
    s = Signer.from_skey(c["signer_key"])
    assert s.sign(c["text"]).line == c["signature_line"]
    assert sign_note(c["text"], s) == c["signed_note"]


def test_sign_errors(go: dict) -> None:
    s = Signer.from_skey(go["sign"]["signer_key"])
    for c in go["sign_errors"]:
        with pytest.raises(MalformedNoteError):
            sign_note(c["text"], s)


def _open_case_note(c: dict) -> str:
    if "note" in c:
        return c["note"]
    return c["text"] + "\n" + c["signature_line"] * c["repeat_signature_line"]


@pytest.mark.parametrize("i", range(8))
def test_open(go: dict, i: int) -> None:
    c = go["open"][i]
    note = _open_case_note(c)
    if "expect_error" in c:
        with pytest.raises(NoteError):
            open_note(note, c["verifier_keys"])
        return
    n = open_note(note, c["verifier_keys"])
    assert n.text == c["expect_text"]
    assert _labels(n.signatures) == c["expect_verified"]
    if "expect_unverified" in c:
        assert _labels(n.unverified) == c["expect_unverified"]
    if "expect_unverified_signatures" in c:
        got = [{"name": s.name, "key_id_hex": s.key_id_hex, "base64": s.base64} for s in n.unverified]
        assert got == c["expect_unverified_signatures"]


def test_open_error_types(go: dict) -> None:
    by_desc = {c["desc"].split(":")[0]: c for c in go["open"]}
    cases = {
        "no known keys": UnknownKeyError,
        "same verifier key listed twice and used by the note": AmbiguousKeyError,
        "known key with a corrupted signature ('ABCD' inserted at byte offset 60 of the signature line)":
            NoteSignatureError,
        "too many signatures": MalformedNoteError,
    }
    for desc, err in cases.items():
        c = by_desc[desc]
        with pytest.raises(err):
            open_note(_open_case_note(c), c["verifier_keys"])
    assert len(go["open"]) == 8


@pytest.mark.parametrize("i", range(7))
def test_malformed_notes(go: dict, i: int) -> None:
    c = go["malformed_notes"][i]
    raw = bytes.fromhex(c["note_hex"])
    if "note" in c:
        assert c["note"].encode("utf-8") == raw
    with pytest.raises(MalformedNoteError):
        open_note(raw, c["verifier_keys"])
    assert len(go["malformed_notes"]) == 7


def test_bad_verifier_keys(go: dict) -> None:
    for c in go["bad_verifier_keys"]:
        with pytest.raises(KeyFormatError):
            Verifier.from_vkey(c["vkey"])


def test_key_mangling_rules(go: dict) -> None:
    vkey = go["keys"]["PeterNeumann"]["verifier_key"]
    skey = go["keys"]["PeterNeumann"]["signer_key"]
    for key, parse in ((vkey, Verifier.from_vkey), (skey, Signer.from_skey)):
        parse(key)
        for i in range(len(key)):
            for j in range(i, len(key) + 1):
                if (i, j) != (0, len(key)):
                    with pytest.raises(KeyFormatError):
                        parse(key[i:j])
            with pytest.raises(KeyFormatError):
                parse(key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :])


def test_verifier_lookup(go: dict) -> None:
    for c in go["verifier_lookup"]:
        vs = Verifiers(c["verifier_keys"])
        kid = int(c["key_id_hex"], 16)
        if "expect_error" in c:
            err = AmbiguousKeyError if c["expect_error"].startswith("ambiguous") else UnknownKeyError
            with pytest.raises(err, match=c["expect_error"].split(" ", 1)[1].replace("+", r"\+")):
                vs.lookup(c["name"], kid)
        else:
            assert vs.lookup(c["name"], kid).vkey == c["expect_verifier_key"]


# -- C2SP signed-note and tlog-checkpoint ------------------------------------------------


def test_c2sp_signed_note_example(sn: dict) -> None:
    c = sn["c2sp"]["signed_note_spec"]["verifiable_example"]
    n = open_note(c["note"], [c["vkey"]])
    assert n.text == c["expect_text"] and _labels(n.signatures) == c["expect_verified"]


def test_c2sp_format_example_splits_at_last_blank_line(sn: dict) -> None:
    c = sn["c2sp"]["signed_note_spec"]["format_example"]
    text, sigs = split_note(c["note"])
    assert text == c["expect_text"]
    assert [{"name": s.name, "base64": s.base64} for s in sigs] == c["expect_signatures"]
    with pytest.raises(UnknownKeyError):  # no key is known for it
        open_note(c["note"], [])


def test_c2sp_checkpoint_example(sn: dict) -> None:
    c = sn["c2sp"]["tlog_checkpoint_spec"]["format_example"]
    text, sigs = split_note(c["note"])
    cp = Checkpoint.parse(text)
    assert cp.origin == c["expect_origin"] and cp.size == c["expect_tree_size"]
    assert cp.root == __import__("base64").b64decode(c["expect_root_hash_base64"])
    assert list(cp.extensions) == c["expect_extension_lines"]
    assert cp.body == text
    assert [{"name": s.name, "base64": s.base64} for s in sigs] == c["expect_signatures"]


@pytest.mark.parametrize(
    "body",
    [
        "origin\n20\n",  # too few lines
        "origin\n020\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # leading zero
        "origin\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "origin\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",  # not padded
        "origin\n20\nAAAA\n",  # not 32 bytes
        "\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # empty origin
        "origin\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",  # empty extension line
        "origin\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",  # no final newline
        "origin\n18446744073709551616\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # 2^64
    ],
)
def test_malformed_checkpoint_bodies(body: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(body)


def test_checkpoint_sign_and_open_round_trip() -> None:
    s = Signer.generate("example.org/log")
    cp = Checkpoint("example.org/log", 7, bytes(range(32)), ("ext one",))
    note = cp.sign(s)
    got, n = open_checkpoint(note, [s.vkey], origin="example.org/log")
    assert got == cp and _labels(n.signatures) == [f"{s.name}+{s.key_id:08x}"]
    with pytest.raises(CheckpointError):
        open_checkpoint(note, [s.vkey], origin="other.org/log")
    forged = note.replace("\n7\n", "\n8\n")
    with pytest.raises(NoteSignatureError):
        open_checkpoint(forged, [s.vkey])


# -- cosignature/v1 ----------------------------------------------------------------------


def test_cosignature_verifier_keys(cs: dict) -> None:
    for c in cs["transparency_dev_formats"]["verifier_keys"]:
        if c["want_err"]:
            with pytest.raises(KeyFormatError):
                CosignatureVerifier.from_vkey(c["vkey"])
        else:
            v = CosignatureVerifier.from_vkey(c["vkey"])
            assert v.key_id == key_id(v.name, 0x04, v.public_key)


def test_cosignature_timestamps(cs: dict) -> None:
    for c in cs["transparency_dev_formats"]["timestamp_extraction"]:
        if c["want_err"]:
            with pytest.raises(CosignatureError):
                cosignature_timestamp(c["signature_base64"])
        else:
            assert cosignature_timestamp(c["signature_base64"]) == c["want_timestamp"]


def test_spec_cosigned_checkpoint_and_message(cs: dict) -> None:
    spec = cs["c2sp_tlog_cosignature_spec"]
    ex = spec["example_cosigned_checkpoint"]
    _, sigs = split_note(ex["note"])
    w = [s for s in sigs if s.name == ex["expect_cosignature"]["name"]][0]
    assert w.key_id_hex == ex["expect_cosignature"]["key_id_hex"]
    assert cosignature_timestamp(w) == ex["expect_cosignature"]["timestamp"]
    m = spec["example_signed_message"]
    assert cosignature_message(m["checkpoint_body"], m["timestamp"]).decode() == m["signed_message"]


def test_derived_cosignatures(cs: dict) -> None:
    d = cs["derived_not_upstream"]
    s = Signer.from_skey(d["signer_key"])
    assert s.cosignature_vkey == d["cosignature_vkey"]
    assert f"{s.cosignature_key_id:08x}" == d["cosignature_key_id_hex"]
    assert s.vkey == cs["transparency_dev_formats"]["fixed_ed25519_test_key"]["verifier_key"]
    for v in d["vectors"]:
        assert cosignature_message(v["checkpoint_body"], v["timestamp"]).decode() == v["signed_message"]
        sig = s.cosign(v["checkpoint_body"], v["timestamp"])
        assert sig.base64 == v["signature_base64"] and sig.line == v["signature_line"]
        assert verify_cosignature(d["cosignature_vkey"], v["checkpoint_body"], v["signature_line"]) == v["timestamp"]
        # the cosigned checkpoint opens with the 0x04 key, and the 0x01 key does not verify it
        n = open_note(v["cosigned_checkpoint"], [d["cosignature_vkey"]])
        assert n.text == v["checkpoint_body"]
        with pytest.raises(UnknownKeyError):
            open_note(v["cosigned_checkpoint"], [s.vkey])
        assert add_signatures(v["checkpoint_body"] + "\n" + s.sign(v["checkpoint_body"]).line, sig).endswith(
            v["signature_line"]
        )


def test_cosignature_covers_extension_lines(cs: dict) -> None:
    body = cs["transparency_dev_formats"]["roundtrip_checkpoint_body_with_extension"]
    s = Signer.generate("witness.example/w")
    sig = s.cosign(body, 1727964367)
    assert verify_cosignature(s.cosignature_verifier(), body, sig) == 1727964367
    ext_at = body.index("Extendo")
    for i in range(ext_at, len(body) - 1):
        changed = body[:i] + chr(ord(body[i]) + 1) + body[i + 1 :]
        with pytest.raises(CosignatureError):
            verify_cosignature(s.cosignature_verifier(), changed, sig)
    with pytest.raises(UnknownKeyError):
        verify_cosignature(Signer.generate("other.example/w").cosignature_verifier(), body, sig)


def test_errors_are_verification_errors() -> None:
    for err in (MalformedNoteError, NoteSignatureError, UnknownKeyError, KeyFormatError, CosignatureError):
        assert issubclass(err, VerificationError)
