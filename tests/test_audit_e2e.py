"""Audit across a real exchange: both sides logged, cross-cosigned, verified offline,
reconciled; an injected query with no counterpart is found."""

from __future__ import annotations

import datetime as _dt
import os

import pytest

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock as _FixedClock
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit import reconcile as audit_reconcile
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.note import Verifier, Verifiers
from hedui.node.audit.recorder import origin_of
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.cases import consent_digest_of, open_case, run_case

# Entries and checkpoints are stamped with a fixed instant, never the wall clock.
AUDIT_CLOCK = _FixedClock(_dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC))

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
    ref = open_case(hub, [(resident(1, SEED).id_number, "self")], purpose="dibao",
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
        rep = audit_verify.verify(rt.config.store_url(), _keys(bed))
        assert rep.verdict.name == "OK", rep.to_dict()
    rec = audit_reconcile.reconcile(hub.config.store_url(), {"tax": tax.config.store_url()}, hub_code="hub", hub_cases=[ref])
    assert rec.clean, rec.to_dict()
    assert rec.counts.get("hub_sent") == 1


def test_reconcile_finds_an_injected_unmatched_query(bed):
    hub, tax = bed.runtime("hub"), bed.runtime("tax")
    ref = open_case(hub, [(resident(2, SEED).id_number, "self")], purpose="dibao",
                    consent_digest=consent_digest_of(b"b"), operator="cw", region="370304")
    assert run_case(hub, ref).complete
    # A query the provider received that the hub never sent (e.g. a rogue client with a
    # copied certificate), and one the hub claims to have sent that never arrived.
    tax.audit.record("query.received", {"peer": "hub", "purpose": "PURPOSE_DIBAO", "case_ref": "HUB-9999-000001",
                                        "request_id": os.urandom(16).hex(), "request_digest": "ab" * 32})
    ghost = os.urandom(16).hex()
    hub.audit.record("query.sent", {"peer": "tax", "purpose": "PURPOSE_DIBAO", "case_ref": ref,
                                    "request_id": ghost, "request_digest": "cd" * 32})
    rec = audit_reconcile.reconcile(hub.config.store_url(), {"tax": tax.config.store_url()}, hub_code="hub", hub_cases=[ref])
    assert not rec.clean
    assert [i["request_id"] for i in rec.sent_not_received] == [ghost]
    assert len(rec.received_not_sent) == 1 and rec.received_not_sent[0]["case_ref"] == "HUB-9999-000001"


def test_reconcile_pairs_discovery_notices(tmp_path):
    from hedui.node.audit.log import AuditLog
    from hedui.node.audit.note import Signer
    from hedui.node.store import migrate
    from hedui.node.store.db import open_engine, sqlite_url

    def log(name):
        eng = open_engine(sqlite_url(tmp_path / f"{name}.db"))
        migrate.upgrade(eng)
        return eng, AuditLog(eng, f"hedui.t/{name}", Signer.generate(f"hedui.t/{name}"), clock=AUDIT_CLOCK.now)

    hub_eng, hub = log("hub")
    med_eng, med = log("medins")
    nid = {k: os.urandom(16).hex() for k in ("ok", "retried", "lost", "rogue", "digest", "receipt")}
    d = {k: os.urandom(32).hex() for k in nid}
    r = {k: os.urandom(32).hex() for k in nid}

    def sent(k, digest=None, receipt=None):
        return [("notice.sent", {"request_id": nid[k], "peer": "hub", "request_digest": digest or d[k]}),
                ("receipt", {"request_id": nid[k], "peer": "hub", "answer_digest": receipt or r[k]})]

    def received(k, digest=None, receipt=None, outcome="ok"):
        return [("notice.received", {"request_id": nid[k], "peer": "medins", "request_digest": digest or d[k], "outcome": outcome}),
                ("receipt", {"request_id": nid[k], "peer": "medins", "answer_digest": receipt or r[k]})]

    # A retried push: the hub issued two receipts, the department kept the second.
    hub.append_many(received("ok") + received("retried", receipt="ee" * 32) + received("retried", outcome="duplicate")
                    + received("rogue") + received("digest", digest="aa" * 32) + received("receipt"))
    med.append_many(sent("ok") + sent("retried") + sent("lost") + sent("digest") + sent("receipt", receipt="bb" * 32))
    for al in (hub, med):
        al.close()
    rep = audit_reconcile.reconcile(sqlite_url(tmp_path / "hub.db"), {"medins": sqlite_url(tmp_path / "medins.db")}, hub_code="hub")
    assert [i["request_id"] for i in rep.notices_sent_not_received] == [nid["lost"]]
    assert [i["request_id"] for i in rep.notices_received_not_sent] == [nid["rogue"]]
    assert sorted(i["request_id"] for i in rep.notice_mismatches) == sorted([nid["digest"], nid["receipt"]])
    assert rep.counts["notices_sent"] == 5 and rep.counts["notices_received"] == 5 and not rep.clean
    hub_eng.dispose()
    med_eng.dispose()
