"""``NoticeService.PushBatch`` (issue 16): many notices per call, one signed receipt per
notice, one transaction per batch on each side.

- A batch mixing good notices with malformed or forged ones: a receipt for each good one, a
  refusal (status code + ``REASON: message``) for each bad one, each refusal audited at the
  hub in the batch's transaction, only the good ones stored (SQLite and PostgreSQL).
- Refusals of the call itself (empty, oversized, a caller without the Push rule): one status,
  one audit entry, nothing stored.
- The node's pusher: good notices delivered, a refused one rejected, in one batch; an older
  hub without PushBatch (UNIMPLEMENTED) gets single pushes.
- Hypothesis: batches of good notices and arbitrary malformed envelopes.
- kill -9 of the hub (a real ``hedui node serve`` process) while two providers push batches:
  every notice a provider holds a receipt for is at the hub with its audit entries, and after
  the restart every notice is there exactly once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from datetime import date, timedelta

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from test_notices_e2e import (
    NOW,
    REFUSALS,
    Clock,
    _make,
    _notice,
    _outbox,
    _signed,
    audit_log,
    hub_counts,
    notices,
    pg_urls,  # noqa: F401  (fixture)
    quiet,
)

from hedui.adapters.synthetic import resident
from hedui.keys import dsse
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import PeerClient
from hedui.node.discovery import tables as t
from hedui.node.discovery.detect import Detection
from hedui.node.discovery.outbox import enqueue
from hedui.node.discovery.provider import ProviderNotices
from hedui.node.discovery.service import MAX_BATCH, NoticeServicer
from hedui.node.runtime import Runtime
from hedui.node.testbed.discovery import planted_identity
from hedui.node.testbed.procs import NodeProcess
from hedui.v1 import common_pb2, notice_pb2, notice_pb2_grpc

BATCH = "/hedui.v1.NoticeService/PushBatch"
# Bad notices whose caller is "fire" (the caller without a Push rule refuses the whole call).
BAD = {k: v for k, v in REFUSALS.items() if k != "caller without a Push rule"}


def _batch(tb, caller: str, envs: list[common_pb2.Envelope]) -> notice_pb2.PushBatchResponse:
    with PeerClient.to_member(tb.runtime(caller), "hub") as c:
        return c.notice.PushBatch(notice_pb2.PushBatchRequest(notices=envs), timeout=30)


def _receipt(tb, result: notice_pb2.PushResult) -> notice_pb2.Receipt:
    assert result.WhichOneof("result") == "receipt", result
    vk = tb.runtime("hub").signer.public
    payload, _ = dsse.verify(result.receipt, {vk.keyid: vk}, payload_type=dsse.RECEIPT)
    return notice_pb2.Receipt.FromString(payload)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def batch_tb(request, tmp_path, monkeypatch):
    store = None
    if request.param == "postgres":
        urls = request.getfixturevalue("pg_urls")
        store = lambda code: urls[code]  # noqa: E731
    tb = _make(tmp_path / "fed", store=store).create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.start()
    for code in ("medins", "disability", "fire", "traffic"):
        quiet(tb, code)
    yield tb
    tb.stop()


def test_a_batch_answers_each_notice_and_stores_only_the_good_ones(batch_tb):
    tb = batch_tb
    good = [_notice(tb, identity=planted_identity(tb, 40 + i)) for i in range(3)]
    reused = _notice(tb, notice_id=bytes(good[0].notice_id))    # the id of good[0], other contents
    bad = {name: make(tb)[1] for name, (make, _code, _reason) in BAD.items()}
    fire = tb.runtime("fire").signer
    envs = [_signed(good[0], fire), *bad.values(), _signed(good[1], fire), _signed(reused, fire),
            _signed(good[0], fire), _signed(good[2], fire)]
    resp = _batch(tb, "fire", envs)
    assert len(resp.results) == len(envs)
    assert resp.checkpoint.note.startswith(b"hedui.demo/hub\n")
    # Results in request order: the good ones receipted (good[0] again: a duplicate of the
    # first, inside the same batch), every bad one refused as Push would refuse it.
    first = _receipt(tb, resp.results[0])
    assert (bytes(first.notice_id), first.duplicate) == (bytes(good[0].notice_id), False)
    assert first.notice_digest == hashlib.sha256(envs[0].payload).digest()
    for i, (name, (_maker, code, reason)) in enumerate(BAD.items(), start=1):
        r = resp.results[i]
        assert r.WhichOneof("result") == "refusal", name
        assert (r.refusal.code, r.refusal.details.split(":")[0]) == (code.name, reason), name
    k = 1 + len(BAD)
    assert bytes(_receipt(tb, resp.results[k]).notice_id) == bytes(good[1].notice_id)
    assert resp.results[k + 1].refusal.details.startswith("NOTICE_ID_REUSED:")
    again = _receipt(tb, resp.results[k + 2])
    assert again.duplicate and again.received_at == first.received_at
    assert bytes(_receipt(tb, resp.results[k + 3]).notice_id) == bytes(good[2].notice_id)
    # Only the three good notices are stored, each once.
    assert hub_counts(tb) == {"notice_inbox": 3, "leads": 3, "lead_events": 3, "referrals": 3}
    # Audit, in the batch's transaction: a refusal per bad notice (the id it claims, the
    # digest of its payload), notice.received + receipt per good one and per duplicate.
    log = audit_log(tb.runtime("hub"))
    refusals = [e["fields"] for e in log if e["kind"] == "refusal"]
    want = [(hashlib.sha256(e.payload).hexdigest(), r) for e, r in
            zip([*bad.values(), envs[k + 1]], [*(v[2] for v in BAD.values()), "NOTICE_ID_REUSED"], strict=True)]
    assert sorted((f["request_digest"], f["outcome"]) for f in refusals) == sorted(want)
    assert {(f["method"], f["peer"]) for f in refusals} == {(BATCH, "fire")}
    received = Counter((e["fields"]["request_id"], e["fields"]["outcome"]) for e in log if e["kind"] == "notice.received")
    assert received == Counter({(bytes(good[0].notice_id).hex(), "ok"): 1, (bytes(good[0].notice_id).hex(), "duplicate"): 1,
                                (bytes(good[1].notice_id).hex(), "ok"): 1, (bytes(good[2].notice_id).hex(), "ok"): 1})
    assert sum(1 for e in log if e["kind"] == "receipt") == 4


def test_refusals_of_the_whole_batch_store_nothing_and_are_audited_once(batch_tb):
    tb = batch_tb
    good = _signed(_notice(tb), tb.runtime("fire").signer)
    cases = [
        ("fire", [], grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE"),
        ("fire", [good] * (MAX_BATCH + 1), grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE"),
        ("traffic", [_signed(_notice(tb, provider="traffic"), tb.runtime("traffic").signer)],
         grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED"),
    ]
    for caller, envs, code, reason in cases:
        before = [e for e in audit_log(tb.runtime("hub")) if e["kind"] == "refusal"]
        with pytest.raises(grpc.RpcError) as e:
            _batch(tb, caller, envs)
        assert (e.value.code(), e.value.details().split(":")[0]) == (code, reason)
        after = [e["fields"] for e in audit_log(tb.runtime("hub")) if e["kind"] == "refusal"]
        assert [(f["method"], f["peer"], f["outcome"]) for f in after[len(before):]] == [(BATCH, caller, reason)]
    assert hub_counts(tb) == {"notice_inbox": 0, "leads": 0, "lead_events": 0, "referrals": 0}


def _det(tb, n: int, *, identity: str | None = None) -> Detection:
    on = date(2025, 10, 7)
    return Detection(
        rule="fire.large_loss", event_type="fire_loss", identity=identity or planted_identity(tb, 50 + n),
        region="370304001", event_date=on, due_date=on + timedelta(days=4), period=on.isoformat(),
        details={"fact": "fire", "value": "60000.00", "unit": "CNY"}, dedup_key=f"{n:064x}",
    )


def test_the_node_pusher_delivers_the_good_and_rejects_the_refused_in_one_batch(batch_tb):
    tb = batch_tb
    rt = tb.runtime("fire")
    pn = notices(tb, "fire")
    idn = planted_identity(tb, 33)
    bad = idn[:17] + ("0" if idn[17] != "0" else "1")
    with rt.engine.begin() as conn:
        ids = [enqueue(conn, _det(tb, i, identity=bad if i == 1 else None), pn.sign_and_seal, hub="hub", now=NOW)[0]
               for i in range(3)]
    stats = pn.push()
    assert (stats.attempted, stats.delivered, stats.failed) == (3, 2, 1)
    rows = {bytes(r.notice_id): r for r in _outbox(rt)}
    assert [rows[i].status for i in ids] == ["delivered", "rejected", "delivered"]
    assert "INVALID_IDENTITY" in rows[ids[1]].last_error and bad not in rows[ids[1]].last_error
    assert rows[ids[0]].attempts == rows[ids[1]].attempts == 1     # one claim, one call
    assert hub_counts(tb)["notice_inbox"] == 2
    sent = [e["fields"]["request_id"] for e in audit_log(rt) if e["kind"] == "notice.sent"]
    assert sorted(sent) == sorted([ids[0].hex(), ids[2].hex()])


def test_a_hub_without_push_batch_gets_single_pushes(tmp_path, monkeypatch):
    # The servicer of an older hub: PushBatch is the generated base's UNIMPLEMENTED.
    monkeypatch.setattr(NoticeServicer, "PushBatch", notice_pb2_grpc.NoticeServiceServicer.PushBatch)
    tb = _make(tmp_path / "fed").create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.start(["hub", "fire"])
    try:
        quiet(tb, "fire")
        rt, pn = tb.runtime("fire"), notices(tb, "fire")
        with rt.engine.begin() as conn:
            for i in range(3):
                enqueue(conn, _det(tb, i), pn.sign_and_seal, hub="hub", now=NOW)
        stats = pn.push()
        assert (stats.delivered, stats.failed) == (3, 0)
        assert hub_counts(tb)["notice_inbox"] == 3
        assert not pn._hub_batches   # remembered: the next passes push one by one at once
    finally:
        tb.stop()


# ---------------------------------------------------------------- hypothesis

@pytest.fixture(scope="module")
def hyp_tb(tmp_path_factory):
    from hedui.keys.keyfile import PASSPHRASE_ENV as ENV

    tb = _make(tmp_path_factory.mktemp("hyp") / "fed").create()
    old = os.environ.get(ENV)
    os.environ[ENV] = tb.passphrase
    tb.start(["hub", "fire"])
    quiet(tb, "fire")
    yield tb
    tb.stop()
    if old is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = old


_junk_envelope = st.builds(
    common_pb2.Envelope,
    payload=st.binary(max_size=300),
    payload_type=st.sampled_from([dsse.NOTICE, dsse.RECEIPT, "", "x/y"]),
    signatures=st.lists(st.builds(common_pb2.Signature, keyid=st.text(max_size=80), sig=st.binary(max_size=80)), max_size=2),
)
_item = st.one_of(
    st.just("good"),
    st.tuples(st.just("junk"), _junk_envelope),
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(_item, min_size=1, max_size=6))
def test_malformed_envelopes_in_a_batch_are_refused_one_by_one(hyp_tb, items):
    tb = hyp_tb
    fire = tb.runtime("fire").signer
    envs, good = [], []
    for it in items:
        env = _signed(_notice(tb, identity=resident(60 + len(good) % 40, tb.data_seed).id_number), fire)
        if it == "good":
            good.append(len(envs))
        elif it[0] == "junk":
            env = it[1]
        else:   # one byte of the signed payload changed: the signature no longer holds
            payload = bytearray(env.payload)
            payload[it[1] % len(payload)] ^= it[2]
            env.payload = bytes(payload)
        envs.append(env)
    before = hub_counts(tb)["notice_inbox"]
    resp = _batch(tb, "fire", envs)
    assert len(resp.results) == len(envs)
    for i, r in enumerate(resp.results):
        if i in good:
            assert bytes(_receipt(tb, r).notice_id) == notice_pb2.Notice.FromString(envs[i].payload).notice_id
        else:
            assert r.WhichOneof("result") == "refusal"
            assert r.refusal.code in ("INVALID_ARGUMENT", "PERMISSION_DENIED"), r.refusal
            assert r.refusal.details.split(":")[0] in {
                "BAD_ENVELOPE", "BAD_SIGNATURE", "UNKNOWN_SIGNER", "BAD_NOTICE", "PROVIDER_MISMATCH", "WRONG_HUB",
                "SEAL_OPEN_FAILED", "SEAL_SUITE_UNSUPPORTED", "INVALID_IDENTITY", "INVALID_ARGUMENT"}, r.refusal
    assert hub_counts(tb)["notice_inbox"] == before + len(good)


# ---------------------------------------------------------------- kill -9 of the hub

def _detections(tb, provider: int, n: int) -> list[Detection]:
    on = date(2025, 10, 7)
    return [Detection(
        rule="fire.large_loss", event_type="fire_loss", identity=resident(1000 + provider * n + k, tb.data_seed).id_number,
        region="370304001", event_date=on, due_date=on + timedelta(days=4), period=on.isoformat(),
        details={"fact": "fire", "value": "60000.00", "unit": "CNY"},
        dedup_key=hashlib.sha256(f"kill:{provider}:{k}".encode()).hexdigest(),
    ) for k in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill_9_of_the_hub_mid_batches_loses_no_receipted_notice_and_doubles_none(tmp_path, monkeypatch, store, request):
    urls = request.getfixturevalue("pg_urls") if store == "postgres" else None
    tb = _make(tmp_path / "fed", store=(lambda code: urls[code]) if urls else None).create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    per = 240
    codes = ("fire", "medins")
    rts = [Runtime.open(tb.config_path(c)) for c in codes]
    clock = Clock()
    pns = [ProviderNotices(rt, clock=clock, batch=40, base_delay=0.5, max_delay=2.0) for rt in rts]
    hub = NodeProcess(tb.config_path("hub"), tb.env(), log=tmp_path / "hub.log").start()
    try:
        for i, (rt, pn) in enumerate(zip(rts, pns, strict=True)):
            with rt.engine.begin() as conn:
                for d in _detections(tb, i, per):
                    enqueue(conn, d, pn.sign_and_seal, hub="hub", now=NOW)
        stop = threading.Event()
        errors: list[BaseException] = []

        def pushing(pn: ProviderNotices) -> None:
            try:
                while not stop.is_set() and pn.pending():
                    pn.push()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=pushing, args=(pn,)) for pn in pns]
        for th in threads:
            th.start()

        def delivered() -> set[bytes]:
            return {bytes(r.notice_id) for rt in rts for r in _outbox(rt) if r.status == "delivered"}

        # Kill the hub while both providers are pushing batches (after the first few were receipted).
        while len(delivered()) < 120 and all(th.is_alive() for th in threads):
            threading.Event().wait(0.02)
        hub.kill()
        acked = delivered()
        stop.set()
        for th in threads:
            th.join(60)
        assert not errors, errors
        assert 120 <= len(acked) < 2 * per, "the hub was not killed mid-run"
        # Receipts that reached a provider up to the kill (a reply in flight is recorded
        # after it): each must have survived the crash at the hub.
        acked = delivered()
        hub = NodeProcess(tb.config_path("hub"), tb.env(), log=tmp_path / "hub.log").start()
        from hedui.node.config import load_config
        from hedui.node.store.db import open_engine

        eng = open_engine(load_config(tb.config_path("hub")).store_url())
        try:
            with eng.connect() as c:
                at_hub = {bytes(x) for x in c.execute(select(t.notice_inbox.c.notice_id)).scalars()}
            assert acked <= at_hub, f"{len(acked - at_hub)} receipted notices lost at the hub"
            clock.advance(600)   # past the killed calls' leases and backoffs
            for pn in pns:
                while pn.pending():
                    assert pn.push().failed == 0
            ids = sorted(bytes(r.notice_id) for rt in rts for r in _outbox(rt))
            assert len(ids) == 2 * per and all(r.status == "delivered" for rt in rts for r in _outbox(rt))
            with eng.connect() as c:
                inbox = sorted(bytes(x) for x in c.execute(select(t.notice_inbox.c.notice_id)).scalars())
                events = c.execute(select(func.count()).select_from(t.lead_events)).scalar_one()
                from hedui.node.audit.entry import decode_entry
                from hedui.node.audit.tables import audit_entries

                entries = [decode_entry(bytes(e)) for e in c.execute(select(audit_entries.c.entry)).scalars()]
            assert inbox == ids and events == 2 * per   # exactly once each
            ok = Counter(e["fields"]["request_id"] for e in entries
                         if e["kind"] == "notice.received" and e["fields"]["outcome"] == "ok")
            assert ok == Counter({i.hex(): 1 for i in ids})
            # Providers: one notice.sent per notice, though some were pushed twice.
            for rt in rts:
                sent = Counter(e["fields"]["request_id"] for e in audit_log(rt) if e["kind"] == "notice.sent")
                assert set(sent.values()) == {1} and len(sent) == per
        finally:
            eng.dispose()
    finally:
        for pn in pns:
            pn.close()
        for rt in rts:
            rt.close()
        hub.stop()


def test_push_batch_and_interval_settings_are_checked_and_used(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from hedui.node.config import ProviderSection
    from hedui.node.discovery.provider import PushLoop, provider_background

    assert (ProviderSection().push_batch, ProviderSection().push_interval, ProviderSection().push_in_flight) == (100, 1.0, 1)
    for bad in ({"push_batch": 0}, {"push_batch": 501}, {"push_interval": 0}, {"push_in_flight": 0}, {"push_in_flight": 9}):
        with pytest.raises(ValidationError):
            ProviderSection(**bad)
    tb = _make(tmp_path / "fed").create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    rt = Runtime.open(tb.config_path("fire"))
    try:
        assert ProviderNotices(rt).pusher._send_batch is not None          # default: PushBatch
        assert ProviderNotices(rt, batch=1).pusher._send_batch is None     # one Push per notice
        assert ProviderNotices(rt).pusher._in_flight == 1
        rt.config.provider.push_in_flight = 3  # type: ignore[union-attr]
        assert ProviderNotices(rt).pusher._in_flight == 3
        rt.config.provider.push_interval = 0.25  # type: ignore[union-attr]
        (loop,) = [j for j in provider_background(rt) if isinstance(j, PushLoop)]
        assert loop.interval == 0.25
    finally:
        rt.close()


# ---------------------------------------------------------------- the outbox doorbell

_QUEUE_AND_RING = r"""
import sys
from datetime import date, timedelta
from pathlib import Path
from hedui.node.runtime import Runtime
from hedui.node.discovery.detect import Detection
from hedui.node.discovery.outbox import enqueue_many
from hedui.node.discovery.provider import ProviderNotices

rt = Runtime.open(Path(sys.argv[1]))
pn = ProviderNotices(rt)
on = date(2025, 10, 7)
dets = [Detection(rule="fire.large_loss", event_type="fire_loss", identity=idn, region="370304001", event_date=on,
                  due_date=on + timedelta(days=4), period=on.isoformat(),
                  details={"fact": "fire", "value": "60000.00", "unit": "CNY"}, dedup_key=f"{900 + k:064x}")
        for k, idn in enumerate(sys.argv[2:])]
with rt.engine.begin() as conn:
    enqueue_many(conn, dets, pn.sign_and_seal, hub=pn.hub, now=rt.clock.now())
pn.queued()   # what a detection run in another process does after its commit
rt.close()
"""


def test_a_detection_in_another_process_wakes_the_node_pusher_through_the_doorbell(batch_tb):
    import subprocess
    import sys

    from hedui.node.discovery.provider import PushLoop

    tb = batch_tb
    rt, pn = tb.runtime("fire"), notices(tb, "fire")
    loop = PushLoop(pn, poll_interval=3600.0)   # its own poll would not come within the test
    pause = threading.Event()                    # never set: waits below are sleeps, not clock reads
    loop.start()
    try:
        if loop.doorbell._sock is None:
            pytest.skip("no outbox doorbell on this host: the pusher polls")
        for _ in range(1200):                     # the first pass (at start) is over
            if loop.next_due is not None:
                break
            pause.wait(0.05)
        subprocess.run([sys.executable, "-c", _QUEUE_AND_RING, str(tb.config_path("fire")),
                        *(planted_identity(tb, 70 + k) for k in range(3))],
                       env={**os.environ, **tb.env()}, check=True, timeout=120)
        for _ in range(1200):                     # a safety net, not a timing assertion
            if [r.status for r in _outbox(rt)] == ["delivered"] * 3:
                break
            pause.wait(0.05)
        assert [r.status for r in _outbox(rt)] == ["delivered"] * 3
        assert hub_counts(tb)["notice_inbox"] == 3
    finally:
        loop.stop()
