"""OPRF key rotation: the next epoch is built while the current one answers; during the
overlap both epochs answer; the directory carries both public keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest

from hedui.adapters.synthetic import resident
from hedui.keys import oprf
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import PeerClient
from hedui.node.errors import InvalidArgument
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.consent import issue_for_context
from hedui.v1 import common_pb2, lookup_pb2, pseudonym_pb2

SEED = 7


def _tokens(hub, epoch: int, ids: list[str]) -> list[bytes]:
    pub = {k.epoch: bytes(k.public_key) for k in hub.directory.member("tax").oprf_keys}[epoch]
    st = oprf.blind(ids)
    with PeerClient.to_member(hub, "tax") as c:
        r = c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(
            context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="ROT", request_id=os.urandom(16)),
            epoch=epoch, blinded_elements=st.blinded), timeout=10)
    assert r.epoch == epoch
    return oprf.finalize(st, list(r.evaluated_elements), r.proof, pub)


def _found(hub, epoch: int, tokens: list[bytes]) -> list[bool]:
    with PeerClient.to_member(hub, "tax") as c:
        ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="ROT", consent_digest=b"c" * 32,
                                        request_id=os.urandom(16))
        ctx.consent.CopyFrom(issue_for_context(hub.signer, "hub", ctx, members=len(tokens), issued_at=hub.clock.now()))
        r = c.lookup.Lookup(lookup_pb2.LookupRequest(
            context=ctx,
            epoch=epoch, tokens=tokens, queries=[lookup_pb2.FieldQuery(field="income_last_year")],
            reference_month="2026-08"), timeout=10)
    return [m.found for m in lookup_pb2.LookupAnswer.FromString(r.answer.payload).members]


def test_rotation_overlap_both_epochs_answer(tmp_path, monkeypatch):
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 residents=40, data_seed=SEED)
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.build_indexes()
    env = {**os.environ, PASSPHRASE_ENV: tb.passphrase}
    cfg = tb.config_path("tax")
    out = subprocess.run([sys.executable, "-m", "hedui.node.cli", "node", "rotate-oprf-key", "--config", str(cfg), "--json", "--workers", "0"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rot = json.loads(out.stdout)
    assert rot["epoch"] == 2 and rot["tokens"] > 0 and rot["next_steps"]
    # Authority: publish both epochs. Department: serve epoch 2, keep epoch 1 during the overlap.
    tax = next(m for m in tb.members if m.code == "tax")
    tax.extra_spec = {"oprf_keys": [{"epoch": 1, "public_key_hex": tax.oprf_public.hex()},
                                     {"epoch": 2, "public_key_hex": rot["public_key_hex"]}]}
    tb.version = 2
    tb.sign_directory()
    text = cfg.read_text().replace("epoch = 1", 'epoch = 2\nprevious_epoch = 1\nprevious_oprf_seed = "oprf-epoch1.seed"')
    text = text.replace('oprf_seed = "oprf-epoch1.seed"\nepoch = 2', 'oprf_seed = "oprf-epoch2.seed"\nepoch = 2', 1)
    cfg.write_text(text)
    assert 'oprf_seed = "oprf-epoch2.seed"' in cfg.read_text() and "previous_epoch = 1" in cfg.read_text()
    tb.start()
    try:
        hub = tb.runtime("hub")
        ids = [resident(n, SEED).id_number for n in (1, 2, 3)]
        t1, t2 = _tokens(hub, 1, ids), _tokens(hub, 2, ids)
        assert t1 != t2  # tokens of different epochs never compare equal
        assert _found(hub, 1, t1) == _found(hub, 2, t2)  # both epochs answer alike
        assert any(_found(hub, 2, t2))
        with PeerClient.to_member(hub, "tax") as c, pytest.raises(grpc.RpcError) as e:
            c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(
                context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="ROT", request_id=os.urandom(16)),
                epoch=3, blinded_elements=oprf.blind(ids).blinded), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details().startswith("UNKNOWN_EPOCH")
    finally:
        tb.stop()


def test_predicate_on_code_field_is_refused():
    from hedui.node.verification.catalogue import Catalogue, FieldDef
    from hedui.node.verification.protocol import parse_lookup

    catalogue = Catalogue(fields=[FieldDef(name="disability_grade", type="code", fact="disability", agg="latest")])

    req = lookup_pb2.LookupRequest(tokens=[b"t" * 64], queries=[lookup_pb2.FieldQuery(field="disability_grade", op=lookup_pb2.OPERATOR_GE, operand="2")],
                                   reference_month="2026-08")
    with pytest.raises(InvalidArgument) as e:
        parse_lookup(req, catalogue)
    assert e.value.reason == "BAD_PREDICATE"
    req.queries[0].op = lookup_pb2.OPERATOR_EQ
    assert parse_lookup(req, catalogue)[0].op == "eq"
