"""Separate signing keys per role (issue 18 part B, item 2).

A member may publish one key per role — answers (and notices, receipts, consent records),
checkpoints, cosignatures — and each is trusted for its role only. Reproduced as attacks: an
answer signed with the member's checkpoint key, and a checkpoint signed with its answer key,
are refused; a key file of one role does not open as another's. Members without role keys
keep working with their single signing key (every other testbed in the suite)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hedui.adapters.synthetic import resident
from hedui.keys import dsse
from hedui.keys.directory import ROLE_ANSWERS, ROLE_CHECKPOINTS, ROLE_COSIGNATURES, role_key_of
from hedui.keys.errors import KeyFileError
from hedui.keys.keyfile import PASSPHRASE_ENV, PURPOSE_ANSWER_SIGNING, PURPOSE_CHECKPOINT_SIGNING, PURPOSE_COSIGNING
from hedui.keys.passphrase import forget
from hedui.keys.rekey import PURPOSES
from hedui.keys.signing import SigningKey
from hedui.node.audit.errors import CheckpointError, UnknownKeyError
from hedui.node.audit.note import Checkpoint, Signer, Verifiers, open_checkpoint
from hedui.node.audit.recorder import origin_of
from hedui.node.cli._app import app
from hedui.node.errors import VerificationError
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.protocol import verify_answer
from hedui.v1 import lookup_pb2

SEED = 3

def _role_keys(tb: Testbed) -> None:
    """Set-up step: every member makes a key per role with ``hedui keys role-keys``; the
    authority takes the lines of its request file into the directory spec, the member the
    printed ``[keys]`` lines into node.toml."""
    for m in tb.members:
        d = tb.member_dir(m.code)
        r = _cli(["--passphrase-file", str(_pw_file(tb)), "keys", "role-keys", "--dir", str(d),
                                     "--member", m.code, "--json"])
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        m.extra_spec.update(tomllib.loads(Path(out["request"]).read_text(encoding="utf-8")))
        for line in out["config"]:
            m.extra_config.setdefault("keys", {}).update(tomllib.loads(line.replace(str(d) + "/", "")))


def _cli(args: list[str]):
    """``hedui ARGS`` in this process; the passphrase it read from a file is forgotten after
    (it is kept in memory for the process, and later testbeds use their own)."""
    try:
        return CliRunner().invoke(app, args)
    finally:
        forget()


def _pw_file(tb: Testbed) -> Path:
    p = tb.root / "member.pass"
    if not p.exists():
        p.write_text(tb.passphrase + "\n", encoding="utf-8")
        p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    names = {"hub": ["hub"], "tax": ["provider"]}
    tb = Testbed(tmp_path_factory.mktemp("roles") / "fed", [MemberPlan(c, c, r) for c, r in names.items()],
                 residents=40, data_seed=SEED, setup=[_role_keys])
    tb.create()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes()
    tb.start()
    yield tb
    tb.stop()


def test_purposes_are_listed_for_rekey():
    assert {PURPOSE_ANSWER_SIGNING, PURPOSE_CHECKPOINT_SIGNING, PURPOSE_COSIGNING} <= set(PURPOSES)


def test_each_role_has_its_own_published_key_and_a_case_runs(bed):
    hub, tax = bed.runtime("hub"), bed.runtime("tax")
    m = hub.directory.member("tax")
    keys = {role_key_of(m, r) for r in (ROLE_ANSWERS, ROLE_CHECKPOINTS, ROLE_COSIGNATURES)}
    assert len(keys) == 3 and bytes(m.signing_key) not in keys
    assert tax.signer_for(ROLE_ANSWERS).public.raw == role_key_of(m, ROLE_ANSWERS)
    ref = open_case(hub, [(resident(1, SEED).id_number, "member")], purpose="dibao",
                    consent_digest=consent_digest_of(b"roles"), operator="cw01", region="370304")
    assert run_case(hub, ref).complete
    # tax's checkpoint, as attached to its answer, is signed by the checkpoint key.
    note = tax.audit.latest_checkpoint_note()
    v = hub.audit.verifier_for("tax")
    assert v.public_key == role_key_of(m, ROLE_CHECKPOINTS)
    open_checkpoint(note, Verifiers([v]), origin=origin_of(hub.directory.msg.federation, "tax"))


def test_an_answer_signed_with_the_checkpoint_key_is_refused(bed):
    hub, tax = bed.runtime("hub"), bed.runtime("tax")
    a = lookup_pb2.LookupAnswer(provider="tax", request_digest=b"d" * 32)
    a.members.add(token=b"t" * 64)
    env = dsse.sign(dsse.ANSWER, a.SerializeToString(deterministic=True), [tax.signer_for(ROLE_CHECKPOINTS)])
    with pytest.raises(VerificationError) as e:
        verify_answer(hub.directory.signing_keys(), "tax", env, b"d" * 32, [b"t" * 64])
    assert e.value.reason == "UNKNOWN_SIGNER"
    # ... and with the old single signing key, now that the directory names an answers key.
    env = dsse.sign(dsse.ANSWER, a.SerializeToString(deterministic=True), [tax.signer])
    with pytest.raises(VerificationError):
        verify_answer(hub.directory.signing_keys(), "tax", env, b"d" * 32, [b"t" * 64])


def test_a_checkpoint_signed_with_the_answer_key_is_refused(bed):
    hub, tax = bed.runtime("hub"), bed.runtime("tax")
    origin = origin_of(hub.directory.msg.federation, "tax")
    forged = Checkpoint(origin, 1, b"\x00" * 32).sign(Signer(origin, tax.signer_for(ROLE_ANSWERS).private_key))
    with pytest.raises((UnknownKeyError, CheckpointError)):
        open_checkpoint(forged, Verifiers([hub.audit.verifier_for("tax")]), origin=origin)


def test_a_key_file_of_one_role_does_not_open_as_another(bed):
    d = bed.member_dir("tax")
    with pytest.raises(KeyFileError):
        SigningKey.load("tax", d / "answer-signing.key", bed.passphrase.encode(), purpose=PURPOSE_CHECKPOINT_SIGNING)
    SigningKey.load("tax", d / "answer-signing.key", bed.passphrase.encode(), purpose=PURPOSE_ANSWER_SIGNING)


def test_role_keys_cli_refuses_to_overwrite_a_bad_role_and_a_bad_tag(bed, tmp_path):
    d = bed.member_dir("tax")
    pw = ["--passphrase-file", str(_pw_file(bed))]
    r = _cli([*pw, "keys", "role-keys", "--dir", str(d), "--member", "tax"])
    assert r.exit_code != 0 and "already exists" in r.output and "Traceback" not in r.output
    r = _cli([*pw, "keys", "role-keys", "--dir", str(tmp_path), "--member", "tax", "--role", "receipts"])
    assert r.exit_code != 0 and "role: got 'receipts'" in r.output and not list(tmp_path.iterdir())
    r = _cli([*pw, "keys", "role-keys", "--dir", str(tmp_path), "--member", "tax", "--tag", "../x"])
    assert r.exit_code != 0 and "tag:" in r.output and not list(tmp_path.iterdir())


def test_role_keys_cli_rotates_one_role_beside_the_keys_in_use(bed):
    """A rotation: new files under a tag, the ones in use untouched, the request names the new .pub."""
    d = bed.member_dir("tax")
    before = (d / "checkpoint-signing.key").read_bytes()
    r = _cli(["--passphrase-file", str(_pw_file(bed)), "keys", "role-keys", "--dir", str(d), "--member", "tax",
                                 "--role", "checkpoints", "--tag", "2027", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["spec"] == ['checkpoint_key = "members/tax/checkpoint-signing-2027.pub"']
    assert tomllib.loads(Path(out["request"]).read_text(encoding="utf-8")) == {"checkpoint_key": "members/tax/checkpoint-signing-2027.pub"}
    assert (d / "checkpoint-signing.key").read_bytes() == before
    new = d / "checkpoint-signing-2027.key"
    assert new.stat().st_mode & 0o777 == 0o600
    k = SigningKey.load("tax", new, bed.passphrase.encode(), purpose=PURPOSE_CHECKPOINT_SIGNING)
    assert k.public.raw != bed.runtime("tax").signer_for(ROLE_CHECKPOINTS).public.raw
