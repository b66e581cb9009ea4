"""Active discovery end to end on a real testbed: a hub and department nodes on loopback,
mutual TLS, the signed directory, sealed and signed notices, signed receipts, leads merged
per person, referrals, refusals, replays, a hub outage and kill -9 of a provider.

The departments' background pushers are stopped in these tests (see ``quiet``), so each test
decides when a push happens; every push below is the node's own code path.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from hedui.adapters import idnum
from hedui.keys import dsse
from hedui.keys import federation as fed
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.keys.sealing import SealingKey
from hedui.keys.signing import SigningKey
from hedui.node.audit.entry import decode_entry
from hedui.node.audit.tables import audit_entries
from hedui.node.client import PeerClient, channel_credentials
from hedui.node.discovery import tables as t
from hedui.node.discovery.calendar import local_date
from hedui.node.discovery.detect import Detection
from hedui.node.discovery.notice import open_notice, seal_notice
from hedui.node.discovery.outbox import enqueue
from hedui.node.discovery.provider import DetectionScheduler, ProviderNotices, PushLoop
from hedui.node.runtime import Runtime
from hedui.node.testbed import MemberPlan, Testbed, default_policy
from hedui.node.testbed.discovery import SCENARIO_AS_OF, expected_detections, planted_identity
from hedui.v1 import common_pb2, notice_pb2

# Certificates and directories are issued and checked at a fixed instant, never the wall clock.
NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)

PUSH = "/hedui.v1.NoticeService/Push"
PROVIDERS = ("medins", "disability", "fire")


def _members() -> list[MemberPlan]:
    return [
        MemberPlan("hub", "博山区社会救助服务中心", ["hub"]),
        MemberPlan("medins", "博山区医疗保障分局", ["provider"]),
        MemberPlan("disability", "博山区残疾人联合会", ["provider"]),
        MemberPlan("fire", "博山区消防救援大队", ["provider"]),
        MemberPlan("traffic", "博山交警大队", ["provider"]),  # has no Push rule (below)
    ]


def _policy(members: list[MemberPlan]) -> list[dict]:
    return [r for r in default_policy(members) if not (r["caller"] == "traffic" and r["method"] == PUSH)]


def quiet(tb: Testbed, code: str) -> None:
    """Stops a department node's background detection and pushing."""
    for job in tb.servers[code].background:
        if isinstance(job, (PushLoop, DetectionScheduler)):
            job.stop()


def _make(root: Path, store=None) -> Testbed:
    members = _members()
    return Testbed(root, members, policy=_policy(members), store=store, residents=120)


@pytest.fixture
def fed_tb(tmp_path, monkeypatch):
    tb = _make(tmp_path / "fed").create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.start()
    for code in PROVIDERS + ("traffic",):
        quiet(tb, code)
    yield tb
    tb.stop()


def notices(tb: Testbed, code: str) -> ProviderNotices:
    n = tb.runtime(code).notices
    assert n is not None
    return n


def hub_counts(tb: Testbed) -> dict[str, int]:
    with tb.runtime("hub").engine.connect() as c:
        return {
            tbl.name: c.execute(select(func.count()).select_from(tbl)).scalar_one()
            for tbl in (t.notice_inbox, t.leads, t.lead_events, t.referrals)
        }


def audit_log(rt) -> list[dict]:
    rt.audit.log.flush()
    with rt.engine.connect() as c:
        return [decode_entry(bytes(e)) for e in c.execute(select(audit_entries.c.entry).order_by(audit_entries.c.seq)).scalars()]


def run_all(tb: Testbed) -> dict:
    return {code: notices(tb, code).run(SCENARIO_AS_OF) for code in PROVIDERS}


# ---------------------------------------------------------------- the happy path


def _check_delivered(tb: Testbed, runs: dict) -> None:
    hub_rt = tb.runtime("hub")
    hub = hub_rt.hub.discovery
    hub_key = hub_rt.hub.sealing_key
    total = sum(len(r.detections) for r in runs.values())
    assert total == sum(r.queued for r in runs.values()) > 0

    # Provider side: every outbox row delivered, with a receipt the hub signed over the
    # SHA-256 of the exact notice payload.
    hub_vk = hub_rt.signer.public
    for code in runs:
        rt = tb.runtime(code)
        with rt.engine.connect() as c:
            rows = c.execute(select(t.notice_outbox)).all()
        assert len(rows) == len(runs[code].detections)
        for row in rows:
            assert row.status == "delivered" and row.receipt is not None
            env = common_pb2.Envelope.FromString(row.envelope)
            payload, _ = dsse.verify(env, {rt.signer.keyid: rt.signer.public}, payload_type=dsse.NOTICE)
            renv = common_pb2.Envelope.FromString(row.receipt)
            rpayload, _ = dsse.verify(renv, {hub_vk.keyid: hub_vk}, payload_type=dsse.RECEIPT)
            receipt = notice_pb2.Receipt.FromString(rpayload)
            assert (receipt.hub, bytes(receipt.notice_id), bytes(receipt.notice_digest), receipt.duplicate) == (
                "hub", bytes(row.notice_id), hashlib.sha256(payload).digest(), False)

    # Hub side: one inbox row per notice; the personal part is sealed and opens with the
    # hub's key only.
    with hub_rt.engine.connect() as c:
        inbox = c.execute(select(t.notice_inbox)).all()
    assert len(inbox) == total
    opened = []
    for row in inbox:
        notice = notice_pb2.Notice.FromString(common_pb2.Envelope.FromString(row.envelope).payload)
        assert notice.provider == row.provider and notice.sealed_suite == "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
        opened.append((notice.provider, notice.rule, notice.event_date, open_notice(notice, hub_key).identity))
        with pytest.raises(Exception, match="could not open"):
            open_notice(notice, SealingKey.generate())
    # The sealed identities are exactly the people the departments detected, notice by notice.
    detected = [(code, d.rule, d.event_date.isoformat(), d.identity) for code, r in runs.items() for d in r.detections]
    assert sorted(opened) == sorted(detected)

    # Leads: one per person, merging every department's notices about them.
    by_person: dict[str, list[tuple[str, Detection]]] = {}
    for code, run in runs.items():
        for d in run.detections:
            by_person.setdefault(d.identity, []).append((code, d))
    leads = hub.list_leads(limit=1000)
    assert len(leads) == len(by_person)
    for identity, found in by_person.items():
        with hub_rt.engine.connect() as c:
            lead_id = c.execute(select(t.leads.c.lead_id).where(t.leads.c.person_key == hub.person_key(identity))).scalar_one()
        lead = hub.lead(lead_id)
        assert lead["providers"] == sorted({code for code, _ in found})
        assert len(lead["events"]) == len(found)
        assert hub.reveal_identity(lead_id, hub_key) == identity
        # One referral per lead, due 5 working days after it was made.
        (ref,) = lead["referrals"]
        created = datetime.fromisoformat(ref["created_at"])
        assert ref["due_date"] == hub.calendar.add_workdays(local_date(created), 5).isoformat()
        route = hub.routing.route(lead["region"], ref["event_type"])
        assert (ref["assignee"], ref["assignee_kind"]) == (route.assignee, route.assignee_kind)

    # Audit: the provider logged notice.sent + receipt per delivery, the hub notice.received
    # + receipt per notice, with the same ids and digests.
    sent = {}
    for code in runs:
        for e in audit_log(tb.runtime(code)):
            if e["kind"] == "notice.sent":
                sent[e["fields"]["request_id"]] = e["fields"]["request_digest"]
    received = {e["fields"]["request_id"]: e["fields"]["request_digest"]
                for e in audit_log(hub_rt) if e["kind"] == "notice.received"}
    assert sent == received and len(sent) == total
    hub_receipts = [e for e in audit_log(hub_rt) if e["kind"] == "receipt"]
    assert len(hub_receipts) == total


def test_notices_arrive_sealed_and_signed_and_become_merged_leads(fed_tb):
    tb = fed_tb
    runs = run_all(tb)
    # The planted events are all found (the synthetic background may add a few more).
    for code, run in runs.items():
        found = {(d.identity, d.rule) for d in run.detections}
        for resident, rule in expected_detections(code):
            assert (planted_identity(tb, resident), rule) in found, (code, resident, rule)
    assert runs["fire"].problems == 1  # the row with a bad identity is counted, not read
    # Fire reports within 3 working days: the fire of 30 September (before the National Day
    # holiday, 1-8 October) is due on Saturday 11 October, a make-up working day.
    fire = {d.event_date: d.due_date for d in runs["fire"].detections}
    assert fire[date(2025, 9, 30)] == date(2025, 10, 11)
    for code in PROVIDERS:
        stats = notices(tb, code).push()
        assert (stats.delivered, stats.failed, stats.duplicates) == (len(runs[code].detections), 0, 0)
    _check_delivered(tb, runs)
    # The same person at two departments is one lead: resident 1 (hospital stay + new
    # disability certificate) and resident 2 (hospital stay + fire).
    hub = tb.runtime("hub").hub.discovery
    merged = {tuple(lead["providers"]) for lead in (hub.lead(m["lead_id"]) for m in hub.merged_leads())}
    assert ("disability", "medins") in merged and ("fire", "medins") in merged
    # A re-run of the same periods queues nothing new.
    assert [notices(tb, code).run(SCENARIO_AS_OF).queued for code in PROVIDERS] == [0, 0, 0]


# ---------------------------------------------------------------- refusals


def _detection(tb: Testbed, *, identity: str | None = None) -> Detection:
    return Detection(
        rule="fire.large_loss", event_type="fire_loss", identity=identity or planted_identity(tb, 31),
        region="370304001", event_date=date(2025, 10, 7), due_date=date(2025, 10, 11), period="2025-10-07",
        details={"fact": "fire", "value": "60000.00", "unit": "CNY"}, dedup_key="0" * 64,
    )


def _notice(tb: Testbed, *, provider: str = "fire", hub: str = "hub", sealed_to: bytes | None = None,
            identity: str | None = None, notice_id: bytes | None = None) -> notice_pb2.Notice:
    return seal_notice(_detection(tb, identity=identity), notice_id=notice_id or os.urandom(16), provider=provider,
                       hub=hub, hub_sealing_key=sealed_to or notices(tb, "fire").hub_public,
                       created_at=datetime.combine(SCENARIO_AS_OF, datetime.min.time(), UTC))


def _signed(notice: notice_pb2.Notice, signer: SigningKey) -> common_pb2.Envelope:
    return dsse.sign(dsse.NOTICE, notice.SerializeToString(), [signer])


def _push(tb: Testbed, caller: str, env: common_pb2.Envelope) -> notice_pb2.PushResponse:
    with PeerClient.to_member(tb.runtime(caller), "hub") as c:
        return c.notice.Push(notice_pb2.PushRequest(notice=env), timeout=10)


def _bad_signature(tb):
    env = _signed(_notice(tb), tb.runtime("fire").signer)
    sig = bytearray(env.signatures[0].sig)
    sig[5] ^= 1
    env.signatures[0].sig = bytes(sig)
    return "fire", env


def _tampered_payload(tb):
    env = _signed(_notice(tb), tb.runtime("fire").signer)
    n = notice_pb2.Notice.FromString(env.payload)
    n.region = "370304002"
    env.payload = n.SerializeToString()
    return "fire", env


def _signed_by_other_member(tb):
    return "fire", _signed(_notice(tb), tb.runtime("disability").signer)


def _signed_with_other_key(tb):
    return "fire", _signed(_notice(tb), SigningKey.generate("fire"))


def _sealed_to_other_key(tb):
    return "fire", _signed(_notice(tb, sealed_to=SealingKey.generate().public_bytes()), tb.runtime("fire").signer)


def _metadata_changed_after_sealing(tb):
    n = _notice(tb)
    n.event_type = "traffic_accident"  # re-signed by the provider, but the seal binds the metadata
    return "fire", _signed(n, tb.runtime("fire").signer)


def _claims_other_provider(tb):
    return "fire", _signed(_notice(tb, provider="disability"), tb.runtime("fire").signer)


def _addressed_to_other_hub(tb):
    return "fire", _signed(_notice(tb, hub="medins"), tb.runtime("fire").signer)


def _invalid_identity(tb):
    idn = planted_identity(tb, 32)
    bad = idn[:17] + ("0" if idn[17] != "0" else "1")
    return "fire", _signed(_notice(tb, identity=bad), tb.runtime("fire").signer)


def _no_push_rule(tb):
    n = _notice(tb, provider="traffic")
    return "traffic", _signed(n, tb.runtime("traffic").signer)


REFUSALS = {
    "bad signature": (_bad_signature, grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIGNATURE"),
    "payload changed after signing": (_tampered_payload, grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIGNATURE"),
    "signed by another member": (_signed_by_other_member, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_SIGNER"),
    "signed with another key": (_signed_with_other_key, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_SIGNER"),
    "sealed to another key": (_sealed_to_other_key, grpc.StatusCode.INVALID_ARGUMENT, "SEAL_OPEN_FAILED"),
    "metadata changed after sealing": (_metadata_changed_after_sealing, grpc.StatusCode.INVALID_ARGUMENT, "SEAL_OPEN_FAILED"),
    "claims another provider": (_claims_other_provider, grpc.StatusCode.PERMISSION_DENIED, "PROVIDER_MISMATCH"),
    "addressed to another hub": (_addressed_to_other_hub, grpc.StatusCode.INVALID_ARGUMENT, "WRONG_HUB"),
    "invalid identity in the sealed part": (_invalid_identity, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_IDENTITY"),
    "caller without a Push rule": (_no_push_rule, grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED"),
}


def test_refused_notices_are_audited_and_nothing_is_stored(fed_tb):
    tb = fed_tb
    hub_rt = tb.runtime("hub")
    for name, (make, code, reason) in REFUSALS.items():
        caller, env = make(tb)
        with pytest.raises(grpc.RpcError) as e:
            _push(tb, caller, env)
        assert e.value.code() == code, name
        assert e.value.details().startswith(reason + ":"), (name, e.value.details())
        nid = bytes(notice_pb2.Notice.FromString(env.payload).notice_id).hex()
        refusals = [x["fields"] for x in audit_log(hub_rt) if x["kind"] == "refusal" and x["fields"]["request_id"] == nid]
        assert [(r["outcome"], r["peer"], r["method"]) for r in refusals] == [(reason, caller, PUSH)], name
        assert refusals[0]["request_digest"] == hashlib.sha256(env.payload).hexdigest()
        assert hub_counts(tb) == {"notice_inbox": 0, "leads": 0, "lead_events": 0, "referrals": 0}, name
    assert not [x for x in audit_log(hub_rt) if x["kind"] in ("notice.received", "receipt")]


def test_notice_the_hub_refuses_as_such_is_rejected_by_the_node_pusher(fed_tb):
    """The node's own push path turns the hub's status back into the typed error, so a
    refusal of the notice itself (here an invalid identity in the sealed part) marks the
    outbox row rejected instead of retrying it forever; a transient failure would not."""
    tb = fed_tb
    pn = notices(tb, "fire")
    idn = planted_identity(tb, 33)
    bad = idn[:17] + ("0" if idn[17] != "0" else "1")
    det = Detection(rule="fire.large_loss", event_type="fire_loss", identity=bad, region="370304001",
                    event_date=date(2025, 10, 7), due_date=date(2025, 10, 10), period="2025-10-07",
                    details={"fact": "fire"}, dedup_key="f" * 64)
    with tb.runtime("fire").engine.begin() as conn:
        nid, created = enqueue(conn, det, pn.sign_and_seal, hub="hub", now=NOW)
    assert created
    stats = pn.push()
    assert (stats.attempted, stats.failed) == (1, 1)
    with tb.runtime("fire").engine.connect() as c:
        row = c.execute(select(t.notice_outbox.c.status, t.notice_outbox.c.last_error)
                        .where(t.notice_outbox.c.notice_id == nid)).one()
    assert row.status == "rejected" and "INVALID_IDENTITY" in row.last_error and bad not in row.last_error
    assert hub_counts(tb) == {"notice_inbox": 0, "leads": 0, "lead_events": 0, "referrals": 0}


def test_certificate_from_the_ca_but_not_in_the_directory_is_refused(fed_tb, tmp_path):
    tb = fed_tb
    pw = tb.passphrase.encode()
    m = fed.init_member(tmp_path / "stranger", "stranger", "127.0.0.1", pw)
    fed.issue_cert(tb.authority, m.tls_csr, m.tls_cert, tb.ca_passphrase.encode(), now=NOW)
    hub_rt = tb.runtime("hub")
    creds = channel_credentials(hub_rt.ca_pem, m.tls_cert.read_bytes(), fed.load_tls_key_pem(m.tls_key, pw))
    env = _signed(_notice(tb), tb.runtime("fire").signer)  # even a well-signed member notice
    with PeerClient(f"127.0.0.1:{tb.servers['hub'].port}", creds) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.notice.Push(notice_pb2.PushRequest(notice=env), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details().startswith("NOT_A_MEMBER:")
    nid = bytes(notice_pb2.Notice.FromString(env.payload).notice_id).hex()
    assert [x["fields"]["outcome"] for x in audit_log(hub_rt)
            if x["kind"] == "refusal" and x["fields"]["request_id"] == nid] == ["NOT_A_MEMBER"]
    assert hub_counts(tb)["notice_inbox"] == 0


# ---------------------------------------------------------------- replays


def test_replayed_notice_gets_a_duplicate_receipt_and_no_new_lead(fed_tb):
    tb = fed_tb
    run = notices(tb, "fire").run(SCENARIO_AS_OF)
    assert notices(tb, "fire").push().delivered == len(run.detections) == 2
    before = hub_counts(tb)
    with tb.runtime("fire").engine.connect() as c:
        row = c.execute(select(t.notice_outbox).order_by(t.notice_outbox.c.created_at)).first()
    first = notice_pb2.Receipt.FromString(common_pb2.Envelope.FromString(row.receipt).payload)
    resp = _push(tb, "fire", common_pb2.Envelope.FromString(row.envelope))
    hub_vk = tb.runtime("hub").signer.public
    payload, _ = dsse.verify(resp.receipt, {hub_vk.keyid: hub_vk}, payload_type=dsse.RECEIPT)
    again = notice_pb2.Receipt.FromString(payload)
    assert again.duplicate and bytes(again.notice_id) == bytes(row.notice_id)
    assert (again.notice_digest, again.received_at) == (first.notice_digest, first.received_at)
    assert resp.checkpoint.note.startswith(b"hedui.demo/hub\n")
    assert hub_counts(tb) == before
    outcomes = [x["fields"]["outcome"] for x in audit_log(tb.runtime("hub"))
                if x["kind"] == "notice.received" and x["fields"]["request_id"] == bytes(row.notice_id).hex()]
    assert outcomes == ["ok", "duplicate"]
    # The same id with other contents is not a replay: refused, nothing changes.
    other = _notice(tb, notice_id=bytes(row.notice_id))
    with pytest.raises(grpc.RpcError) as e:
        _push(tb, "fire", _signed(other, tb.runtime("fire").signer))
    assert e.value.details().startswith("NOTICE_ID_REUSED:")
    assert hub_counts(tb) == before


# ---------------------------------------------------------------- hub outage


class Clock:
    """The provider's clock, moved by the test (a fixed start: tests never read the wall clock)."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _outbox(rt) -> list:
    with rt.engine.connect() as c:
        return c.execute(select(t.notice_outbox).order_by(t.notice_outbox.c.created_at)).all()


def test_hub_down_then_back_nothing_lost_nothing_doubled(fed_tb):
    tb = fed_tb
    clock = Clock()
    rt = tb.runtime("fire")
    pn = ProviderNotices(rt, clock=clock)  # the node's own code, on a clock the test moves
    try:
        run = pn.run(SCENARIO_AS_OF)
        assert run.queued == 2
        tb.stop(["hub"])
        stats = pn.push()
        assert (stats.attempted, stats.failed, stats.delivered) == (2, 2, 0)
        for row in _outbox(rt):
            assert (row.status, row.attempts) == ("pending", 1) and "UNAVAILABLE" in row.last_error
            delay = t.utc(row.next_attempt_at) - clock.now
            assert timedelta(seconds=1) <= delay <= timedelta(seconds=2)  # backoff after 1 failure: 1-2 s
        assert pn.push().attempted == 0  # not due yet: the backoff holds
        clock.advance(3)
        assert pn.push().failed == 2
        for row in _outbox(rt):
            assert row.attempts == 2
            assert timedelta(seconds=2) <= t.utc(row.next_attempt_at) - clock.now <= timedelta(seconds=4)

        tb.start(["hub"])  # same port, same store
        clock.advance(5)
        stats = pn.push()
        assert (stats.delivered, stats.failed, stats.duplicates) == (2, 0, 0)
        assert pn.push().attempted == 0
        assert all(r.status == "delivered" for r in _outbox(rt))
        assert hub_counts(tb)["notice_inbox"] == 2 and hub_counts(tb)["lead_events"] == 2
        assert pn.run(SCENARIO_AS_OF).queued == 0
    finally:
        pn.close()


# ---------------------------------------------------------------- kill -9

_KILL_SCRIPT = r"""
import sys, threading, time
from pathlib import Path
from hedui.node.runtime import Runtime
from hedui.node.discovery.provider import ProviderNotices
from hedui.node.testbed.discovery import SCENARIO_AS_OF

config, mode = Path(sys.argv[1]), sys.argv[2]
rt = Runtime.open(config)
pn = ProviderNotices(rt, batch=1 if mode == "mid-push" else 100)
if mode == "mid-transaction":
    seal = pn.sign_and_seal
    done = []
    def slow(d, nid):
        done.append(1)
        if len(done) == 2:
            print("READY", flush=True)
            time.sleep(600)
        return seal(d, nid)
    pn.sign_and_seal = slow
    pn.run(SCENARIO_AS_OF)
elif mode == "after-commit":
    pn.run(SCENARIO_AS_OF)
    print("READY", flush=True)
    time.sleep(600)
elif mode == "mid-push":  # single pushes: the hub has the notice, the provider dies before it records the receipt
    pn.run(SCENARIO_AS_OF)
    send = pn.pusher._send
    def send_then_hang(envelope):
        receipt = send(envelope)
        print("READY", flush=True)
        time.sleep(600)
        return receipt
    pn.pusher._send = send_then_hang
    pn.push()
elif mode == "two-in-flight":  # two batches in flight at once, both committed at the hub, neither recorded
    pn.run(SCENARIO_AS_OF)
    pn.pusher._batch = 1   # one notice per PushBatch: the scenario's two notices are two batches
    pn.pusher._in_flight = 2   # [provider] push_in_flight = 2
    send_batch = pn.pusher._send_batch
    both = threading.Barrier(2)   # passed only while both lanes are in their call
    def batch_then_hang(envelopes):
        results = send_batch(envelopes)
        assert len(results) == 1 and isinstance(results[0], bytes)
        if both.wait() == 0:
            print("READY", flush=True)
        time.sleep(600)
        return results
    pn.pusher._send_batch = batch_then_hang
    pn.push()
else:  # mid-batch: the hub has committed the whole batch, the provider dies before it records the receipts
    pn.run(SCENARIO_AS_OF)
    send_batch = pn.pusher._send_batch
    def batch_then_hang(envelopes):
        results = send_batch(envelopes)
        assert len(results) == 2 and all(isinstance(r, bytes) for r in results)
        print("READY", flush=True)
        time.sleep(600)
        return results
    pn.pusher._send_batch = batch_then_hang
    pn.push()
"""


def _wait_ready(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)  # a safety net for a hung child, not a timing assertion
    assert line and line[0].strip() == b"READY", (line, proc.poll())


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["mid-transaction", "after-commit", "mid-push", "mid-batch", "two-in-flight"])
def test_kill_9_of_the_provider_loses_nothing_and_delivers_exactly_once(tmp_path, monkeypatch, moment):
    tb = _make(tmp_path / "fed").create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.start(["hub"])
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_SCRIPT, str(tb.config_path("fire")), moment],
            stdout=subprocess.PIPE, env={**os.environ, **tb.env()},
        )
        try:
            _wait_ready(proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL

        rt = Runtime.open(tb.config_path("fire"))
        rows = _outbox(rt)
        # The killed node ran on the wall clock; this one starts where its outbox left off
        # (the latest instant it recorded), so the test never reads the clock itself.
        clock = Clock(max((t.utc(r.next_attempt_at) for r in rows), default=NOW))
        pn = ProviderNotices(rt, clock=clock)
        try:
            assert len(rows) == {"mid-transaction": 0, "after-commit": 2, "mid-push": 2, "mid-batch": 2,
                                 "two-in-flight": 2}[moment]
            assert pn.run(SCENARIO_AS_OF).queued == 2 - len(rows)  # the re-run fills the gap, no more
            clock.advance(300)  # past the crashed pusher's lease
            stats = pn.push()
            assert (stats.delivered, stats.failed) == (2, 0)
            assert stats.duplicates == {"mid-push": 1, "mid-batch": 2, "two-in-flight": 2}.get(moment, 0)
            assert all(r.status == "delivered" for r in _outbox(rt))
            ids = sorted(bytes(r.notice_id) for r in _outbox(rt))
            # Delivered and audited in one transaction: one notice.sent + receipt per notice.
            sent = sorted(e["fields"]["request_id"] for e in audit_log(rt) if e["kind"] in ("notice.sent", "receipt"))
            assert sent == sorted([i.hex() for i in ids] * 2)
        finally:
            pn.close()
            rt.close()
        with tb.runtime("hub").engine.connect() as c:
            assert sorted(bytes(x) for x in c.execute(select(t.notice_inbox.c.notice_id)).scalars()) == ids
            assert c.execute(select(func.count()).select_from(t.lead_events)).scalar_one() == 2
    finally:
        tb.stop()


# ---------------------------------------------------------------- no identity anywhere


def test_no_identity_number_in_stores_audit_entries_or_logs(fed_tb, caplog):
    tb = fed_tb
    caplog.set_level(logging.DEBUG)
    runs = run_all(tb)
    for code in PROVIDERS:
        notices(tb, code).push()
    for make, _code, _reason in REFUSALS.values():
        caller, env = make(tb)
        with pytest.raises(grpc.RpcError):
            _push(tb, caller, env)
    identities = {d.identity for r in runs.values() for d in r.detections}
    identities |= {planted_identity(tb, n) for n in range(1, 40)}
    assert len(identities) > 10

    # Every node store: each column of each row through the one identity guard (reading the
    # raw file would join neighbouring columns, a date and a region code, into a false hit),
    # and the raw database file and WAL, free pages included, for the identities we know.
    for m in tb.members:
        db = tb.member_dir(m.code) / "node.db"
        con = sqlite3.connect(db)
        try:
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                for row in con.execute(f'SELECT * FROM "{table}"'):
                    for v in row:
                        if isinstance(v, (str, bytes)):
                            assert not idnum.contains(v), (m.code, table)
        finally:
            con.close()
        for f in sorted(tb.member_dir(m.code).glob("node.db*")):
            data = f.read_bytes()
            assert not any(i.encode() in data for i in identities), f
    # The provider outbox's public columns, explicitly.
    for code in PROVIDERS:
        for row in _outbox(tb.runtime(code)):
            public = " ".join(str(row._mapping[k]) for k in row._mapping.keys() if k not in ("envelope", "receipt"))
            assert not idnum.contains(public)
    # Every audit entry of every node.
    for code in tb.servers:
        for e in audit_log(tb.runtime(code)):
            text = repr(e)
            assert not idnum.contains(text) and not any(i in text for i in identities)
    # Every log line of the run.
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert logged and not idnum.contains(logged)
    assert not any(i in logged for i in identities)


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_urls(pg_admin):
    import uuid

    from sqlalchemy import text

    names = {code: f"hedui_t_{uuid.uuid4().hex[:12]}" for code in ("hub", "medins", "disability", "fire", "traffic")}
    with pg_admin.connect() as c:
        for n in names.values():
            c.execute(text(f'CREATE DATABASE "{n}"'))
    yield {code: pg_admin.url.set(database=n).render_as_string(hide_password=False) for code, n in names.items()}
    with pg_admin.connect() as c:
        for n in names.values():
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": n})
            c.execute(text(f'DROP DATABASE IF EXISTS "{n}"'))


@pytest.mark.postgres
def test_end_to_end_on_postgresql(tmp_path, monkeypatch, pg_urls):
    tb = _make(tmp_path / "fed", store=lambda code: pg_urls[code]).create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.start()
    try:
        for code in PROVIDERS + ("traffic",):
            quiet(tb, code)
        assert tb.runtime("hub").engine.dialect.name == "postgresql"
        runs = run_all(tb)
        for code in PROVIDERS:
            assert notices(tb, code).push().failed == 0
        _check_delivered(tb, runs)
        before = hub_counts(tb)
        row = _outbox(tb.runtime("medins"))[0]
        resp = _push(tb, "medins", common_pb2.Envelope.FromString(row.envelope))
        assert notice_pb2.Receipt.FromString(resp.receipt.payload).duplicate
        assert hub_counts(tb) == before
    finally:
        tb.stop()
