"""Separate signing keys per role (issue 18 part B, item 2).

A member may publish one key per role — answers (and notices, receipts, consent records),
checkpoints, cosignatures — and each is trusted for its role only. Reproduced as attacks: an
answer signed with the member's checkpoint key, and a checkpoint signed with its answer key,
are refused; a key file of one role does not open as another's. Members without role keys
keep working with their single signing key (every other testbed in the suite)."""

from __future__ import annotations

import os

import pytest

from hedui.adapters.synthetic import resident
from hedui.keys import dsse
from hedui.keys.directory import ROLE_ANSWERS, ROLE_CHECKPOINTS, ROLE_COSIGNATURES, role_key_of
from hedui.keys.errors import KeyFileError
from hedui.keys.keyfile import PASSPHRASE_ENV, PURPOSE_ANSWER_SIGNING, PURPOSE_CHECKPOINT_SIGNING, PURPOSE_COSIGNING
from hedui.keys.rekey import PURPOSES
from hedui.keys.signing import SigningKey
from hedui.node.audit.errors import CheckpointError, UnknownKeyError
from hedui.node.audit.note import Checkpoint, Signer, Verifiers, open_checkpoint
from hedui.node.audit.recorder import origin_of
from hedui.node.errors import VerificationError
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.protocol import verify_answer
from hedui.v1 import lookup_pb2

SEED = 3
ROLE_FILES = {"answer_key": ("answer-signing", PURPOSE_ANSWER_SIGNING, "answer_signing"),
              "checkpoint_key": ("checkpoint-signing", PURPOSE_CHECKPOINT_SIGNING, "checkpoint_signing"),
              "cosign_key": ("cosign-signing", PURPOSE_COSIGNING, "cosign_signing")}


def _role_keys(tb: Testbed) -> None:
    """Set-up step: every member gets a key per role, published and configured."""
    for m in tb.members:
        d = tb.member_dir(m.code)
        for spec_field, (stem, purpose, option) in ROLE_FILES.items():
            k = SigningKey.generate(m.code)
            k.save(d / f"{stem}.key", tb.passphrase.encode(), purpose=purpose)
            k.save_public(d / f"{stem}.pub")
            m.extra_spec[spec_field] = f"members/{m.code}/{stem}.pub"
            m.extra_config.setdefault("keys", {})[option] = f"{stem}.key"


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
