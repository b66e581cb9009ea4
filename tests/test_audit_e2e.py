"""Audit across a real exchange: both sides logged, cross-cosigned, verified offline,
reconciled; an injected query with no counterpart is found."""

from __future__ import annotations

import os

import pytest

from hedui.adapters.synthetic import resident
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit import offline
from hedui.node.audit.note import Verifier, Verifiers
from hedui.node.auditing import origin_of
from hedui.node.hub.cases import consent_digest_of, open_case, run_case
from hedui.node.testbed import MemberPlan, Testbed

SEED = 7


@pytest.fixture
def bed(tmp_path, monkeypatch):
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])], residents=40, data_seed=SEED)
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.build_indexes()
    tb.start()
    yield tb
    tb.stop()


def _keys(tb):
    d = tb.runtime("hub").directory
    return Verifiers([Verifier(origin_of(d.msg.federation, m.code), bytes(m.signing_key)) for m in d.msg.members])


def test_exchange_is_logged_cosigned_verified_and_reconciled(bed):
    hub, tax = bed.runtime("hub"), bed.runtime("tax")
    ref = open_case(hub.engine, [(resident(1, SEED).id_number, "self")], purpose="dibao",
                    consent_digest=consent_digest_of(b"a"), operator="cw", region="370304")
    assert run_case(hub, ref).complete
    # The provider's checkpoint rode on its answer: the hub cosigns it off the hot path.
    assert hub.audit.process_peer_checkpoints() >= 1
    assert hub.audit.log.last_cosigned("tax") is not None
    # The hub asks the provider to cosign its own checkpoint.
    assert "tax" in hub.audit.request_cosignatures()
    assert tax.audit.log.last_cosigned("hub") is not None
    for rt in (hub, tax):
        rt.audit.log.flush()
        rt.audit.log.checkpoint()
        rep = offline.verify(rt.config.store_url(), _keys(bed))
        assert rep.verdict.name == "OK", rep.to_dict()
    rec = offline.reconcile(hub.config.store_url(), {"tax": tax.config.store_url()}, hub_code="hub", hub_cases=[ref])
    assert rec.clean, rec.to_dict()
    assert rec.counts.get("hub_sent") == 1


def test_reconcile_finds_an_injected_unmatched_query(bed):
    hub, tax = bed.runtime("hub"), bed.runtime("tax")
    ref = open_case(hub.engine, [(resident(2, SEED).id_number, "self")], purpose="dibao",
                    consent_digest=consent_digest_of(b"b"), operator="cw", region="370304")
    assert run_case(hub, ref).complete
    # A query the provider received that the hub never sent (e.g. a rogue client with a
    # copied certificate), and one the hub claims to have sent that never arrived.
    tax.audit.record("query.received", {"peer": "hub", "purpose": "PURPOSE_DIBAO", "case_ref": "HUB-9999-000001",
                                        "request_id": os.urandom(16).hex(), "request_digest": "ab" * 32})
    ghost = os.urandom(16).hex()
    hub.audit.record("query.sent", {"peer": "tax", "purpose": "PURPOSE_DIBAO", "case_ref": ref,
                                    "request_id": ghost, "request_digest": "cd" * 32})
    rec = offline.reconcile(hub.config.store_url(), {"tax": tax.config.store_url()}, hub_code="hub", hub_cases=[ref])
    assert not rec.clean
    assert [i["request_id"] for i in rec.sent_not_received] == [ghost]
    assert len(rec.received_not_sent) == 1 and rec.received_not_sent[0]["case_ref"] == "HUB-9999-000001"
