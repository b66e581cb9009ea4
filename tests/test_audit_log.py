"""The audit log in the node store (SQLite and PostgreSQL): appends, proofs against the
stored tree, checkpoints, the identity guard, peer cosigning, offline round trips."""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select, update

import hedui.node.audit.tables  # noqa: F401 - registers the tables before `engine` creates them
from hedui.adapters import idnum
from hedui.common.clock import FixedClock as _FixedClock
from hedui.node.audit import export as audit_export
from hedui.node.audit import merkle
from hedui.node.audit import proof as audit_proof
from hedui.node.audit import reconcile as audit_reconcile
from hedui.node.audit import verdict as audit_verdict
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.entry import REQUIRED_FIELDS, Kind, decode_entry, encode_entry
from hedui.node.audit.errors import (
    CheckpointError,
    ForkError,
    IdentityInEntryError,
    NoteSignatureError,
    TamperedLogError,
    UnknownKeyError,
)
from hedui.node.audit.log import AuditLog, CheckpointScheduler
from hedui.node.audit.note import Checkpoint, Signer, open_checkpoint, split_note, verify_cosignature
from hedui.node.audit.tables import audit_cosignatures, audit_entries, audit_forks, audit_nodes
from hedui.node.audit.tree import TreeReader
from hedui.node.errors import ConfigError, InvalidArgument, VerificationError
from hedui.node.store import schema
from hedui.node.store.db import open_engine, sqlite_url

# Entries and checkpoints are stamped with a fixed instant, never the wall clock.
AUDIT_CLOCK = _FixedClock(_dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC))

ORIGIN = "test.hedui/audit"
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def signer() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(engine, signer, clock):
    log = AuditLog(engine, ORIGIN, signer, tile_height=2, clock=clock)
    yield log
    log.close()


def admin(i: int) -> tuple[str, dict]:
    return Kind.ADMIN, {"action": f"action-{i}", "operator": "op-7"}


def memory_tree(log: TreeReader) -> merkle.MemoryTree:
    return merkle.MemoryTree(merkle.leaf_hash(log.entry(i)) for i in range(log.size()))


# -- appending -------------------------------------------------------------------------


def test_append_stores_the_exact_canonical_bytes(audit: AuditLog, engine, clock: Clock) -> None:
    fields = {"request_id": "00ff" * 8, "peer": "P1", "purpose": "PURPOSE_DIBAO", "case_ref": "HUB-2026-000123",
              "request_digest": "ab" * 32, "count": 3, "nested": {"z": [1, True, None], "a": "中文"}}
    assert audit.append(Kind.QUERY_SENT, fields) == 0
    assert audit.append(*admin(1)) == 1
    data = audit.entry(0)
    assert data == encode_entry(Kind.QUERY_SENT, fields, clock())
    # canonical JSON: sorted keys, no whitespace, UTF-8
    assert data.startswith(b'{"fields":{"case_ref":"HUB-2026-000123","count":3,"nested":{"a":"\xe4\xb8\xad')
    assert b" " not in data
    obj = decode_entry(data)
    assert obj["kind"] == Kind.QUERY_SENT and obj["fields"] == fields and obj["time"] == "2026-05-01T08:00:00.000000Z"
    with engine.connect() as conn:
        row = conn.execute(select(audit_entries).where(audit_entries.c.seq == 0)).one()
    assert bytes(row.leaf_hash) == merkle.leaf_hash(data)
    assert (row.kind, row.request_id) == (Kind.QUERY_SENT, "00ff" * 8)


@pytest.mark.parametrize("tile", [1, 2, 3, 8])
def test_store_proofs_equal_an_in_memory_tree(engine, signer, tile: int) -> None:
    rnd = random.Random(tile)
    with AuditLog(engine, ORIGIN, signer, tile_height=tile, clock=AUDIT_CLOCK.now) as log:
        n = 0
        while n < 530:  # uneven batches, so subtrees complete across batch boundaries
            k = rnd.choice([1, 1, 2, 3, 7, 31, 64])
            log.append_many(admin(n + i) for i in range(k))
            n += k
        tree = memory_tree(log)
        size = log.size()
        assert size == n == tree.size
        assert log.root() == tree.root()
        for s in [1, 2, 3, 4, 5, 8, 255, 256, 257, 511, 512, size] + rnd.sample(range(1, size + 1), 20):
            root = tree.root(s)
            assert log.root(s) == root
            for i in {0, s - 1, rnd.randrange(s)}:
                p = log.inclusion_proof(i, s)
                assert p == tree.inclusion_proof(i, s)
                merkle.verify_inclusion(merkle.leaf_hash(log.entry(i)), i, s, p, root)
            for s1 in {1, s, rnd.randint(1, s)}:
                p = log.consistency_proof(s1, s)
                assert p == tree.consistency_proof(s1, s)
                merkle.verify_consistency(s1, s, p, tree.root(s1), root)
        assert log.compact_range(size) == tree.subtrees(merkle.perfect_pieces(0, size))


def test_proof_arguments_are_checked(audit: AuditLog) -> None:
    audit.append_many(admin(i) for i in range(5))
    with pytest.raises(InvalidArgument):
        audit.inclusion_proof(0, 6)
    with pytest.raises((InvalidArgument, VerificationError)):
        audit.inclusion_proof(5, 5)
    with pytest.raises((InvalidArgument, VerificationError)):
        audit.consistency_proof(0, 5)
    with pytest.raises(InvalidArgument):
        audit.entry(5)


def test_concurrent_submits_get_distinct_consecutive_seqs(audit: AuditLog) -> None:
    seqs: list[int] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        futs = [audit.submit(*admin(w * 1000 + i)) for i in range(60)]
        got = [f.result() for f in futs]
        with lock:
            seqs.extend(got)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    direct = audit.append_many(admin(9000 + i) for i in range(10))
    for t in threads:
        t.join()
    audit.flush()
    assert sorted(seqs + direct) == list(range(250))
    assert audit.size() == 250
    assert audit.root() == memory_tree(audit).root()


def test_append_after_close_is_refused(audit: AuditLog) -> None:
    audit.append(*admin(0))
    audit.close()
    with pytest.raises(InvalidArgument):
        audit.append(*admin(1))


# -- entry validation and the identity guard ---------------------------------------------

ID = "11010119900307123" + "4"


@pytest.mark.parametrize(
    "value",
    [
        ID,
        ID[:-1] + "X",
        ID[:-1] + "x",
        "".join(chr(ord(c) - ord("0") + 0xFF10) for c in ID),  # full-width digits
        int(ID),
        f"lookup for {ID} failed",
        [1, {"deep": ID}],
        f"id:{ID};",
    ],
)
def test_identity_shaped_values_are_refused(audit: AuditLog, value) -> None:
    with pytest.raises(IdentityInEntryError) as e:
        audit.append(Kind.ADMIN, {"action": "x", "operator": "op", "note": value})
    assert ID[:10] not in str(e.value) and "note" in str(e.value)
    with pytest.raises(IdentityInEntryError):
        audit.append_many([admin(0), (Kind.ADMIN, {"action": value, "operator": "op"})])
    assert audit.size() == 0


@pytest.mark.parametrize(
    "value",
    [
        "1234567890123456789012345678901234567890123456789012345678901234",  # all-digit hex digest
        "a" + ID + "b",  # inside a longer token
        ID[:-1],  # 17 digits
        ID + "5",  # 19 digits
        "HUB-2026-000123",
        "2026-05-01T08:00:00.000000Z",
    ],
)
def test_non_identity_values_pass(audit: AuditLog, value: str) -> None:
    audit.append(Kind.ADMIN, {"action": "x", "operator": "op", "note": value})
    assert not idnum.contains("ab" * 32)


@pytest.mark.parametrize(
    "kind, fields",
    [
        ("Query.Sent", {}),
        ("", {}),
        (Kind.QUERY_SENT, {"request_id": "00", "peer": "P1"}),  # missing fields
        (Kind.ADMIN, {"action": "x", "operator": "op", "ratio": 0.5}),  # float
        (Kind.ADMIN, {"action": b"x", "operator": "op"}),  # bytes
        (Kind.ADMIN, {"action": "x", "operator": "op", "request_id": "ABCD"}),  # upper-case hex
        (Kind.ANSWER_SENT, {"request_id": "00", "peer": "P", "answer_digest": "xyz", "outcome": "ok"}),
        (Kind.ADMIN, {"action": "x" * 70000, "operator": "op"}),  # too big
    ],
)
def test_invalid_entries_are_refused(audit: AuditLog, kind, fields) -> None:
    with pytest.raises(InvalidArgument):
        audit.append(kind, fields)
    assert audit.size() == 0


@pytest.mark.parametrize("kind", ["key.rotated", "Query.Sent", "", "query.sent ", "refusal.x"])
def test_unknown_kinds_are_refused(audit: AuditLog, kind: str) -> None:
    # The vocabulary is closed (issue 11): a kind the offline tools do not know is not written.
    with pytest.raises(InvalidArgument, match="audit entry kind"):
        audit.append(kind, {"epoch": 2})
    assert audit.size() == 0


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_refuses_an_entry_missing_a_required_field(audit: AuditLog, kind: Kind) -> None:
    full = {name: ("00ff" * 8 if name == "request_id" else "ab" * 32 if name.endswith("digest") else "x")
            for name in REQUIRED_FIELDS[kind]}
    for name in sorted(full):
        partial = {k: v for k, v in full.items() if k != name}
        with pytest.raises(InvalidArgument, match=f"missing fields \\['{name}'\\]"):
            audit.append(kind, partial)
    assert audit.size() == 0
    assert audit.append(kind, full) == 0


# -- opening ---------------------------------------------------------------------------


def test_origin_and_tile_height_are_fixed(engine, signer) -> None:
    with pytest.raises(ConfigError):
        AuditLog(engine, "other.origin", signer, clock=AUDIT_CLOCK.now)
    AuditLog(engine, ORIGIN, signer, tile_height=4, clock=AUDIT_CLOCK.now).close()
    with pytest.raises(ConfigError):
        AuditLog(engine, ORIGIN, signer, tile_height=8, clock=AUDIT_CLOCK.now)
    other = Signer.generate("other.origin")
    with pytest.raises(ConfigError):
        AuditLog(engine, "other.origin", other, clock=AUDIT_CLOCK.now)
    assert TreeReader(engine).tile_height == 4


def test_reopening_detects_a_head_that_disagrees_with_the_entries(audit: AuditLog, engine, signer) -> None:
    audit.append_many(admin(i) for i in range(10))
    AuditLog(engine, ORIGIN, signer, clock=AUDIT_CLOCK.now).close()  # consistent: fine
    with engine.begin() as conn:
        conn.execute(delete(audit_entries).where(audit_entries.c.seq == 9))
    with pytest.raises(TamperedLogError):
        AuditLog(engine, ORIGIN, signer, clock=AUDIT_CLOCK.now)


# -- checkpoints -----------------------------------------------------------------------


def test_checkpoints(audit: AuditLog, signer: Signer, clock: Clock) -> None:
    first = audit.checkpoint()
    assert (first.size, first.root) == (0, merkle.EMPTY_ROOT)
    assert audit.checkpoint() == first  # nothing new, not idle
    audit.append_many(admin(i) for i in range(13))
    clock.advance(5)
    cp = audit.checkpoint()
    assert cp.size == 13 and cp.root == audit.root(13) and cp.time == int(clock().timestamp())
    body, n = open_checkpoint(cp.note, [signer.vkey], origin=ORIGIN)
    assert (body.size, body.root) == (13, cp.root)
    clock.advance(100)
    assert audit.checkpoint(max_idle=3600) == cp  # not yet idle long enough
    clock.advance(3600)
    fresh = audit.checkpoint(max_idle=3600)
    assert (fresh.size, fresh.root) == (13, cp.root) and fresh.time > cp.time and fresh.note != cp.note
    assert audit.latest_checkpoint() == fresh
    assert audit.checkpoint_at(13) == fresh
    assert audit.checkpoint_at(12) is None


def test_checkpoint_refuses_to_sign_over_a_changed_tree(audit: AuditLog, engine, signer) -> None:
    audit.append_many(admin(i) for i in range(20))
    audit.checkpoint()
    # The pre-signing check re-derives the last signed root from the stored subtrees
    # (a changed entry is the offline verifier's job: see test_audit_tamper.py).
    with engine.begin() as conn:
        conn.execute(update(audit_nodes).where(audit_nodes.c.level == 4).values(hash=b"\x00" * 32))
    log = AuditLog(engine, ORIGIN, signer, tile_height=2, clock=AUDIT_CLOCK.now)  # fresh subtree cache
    log.append(*admin(99))
    with pytest.raises(TamperedLogError):
        log.checkpoint()
    log.close()


def test_scheduler_checkpoints_the_tree(audit: AuditLog) -> None:
    sched = CheckpointScheduler(audit, interval=0.01, idle_interval=3600)
    sched.start()
    for i in range(25):
        audit.submit(*admin(i))
    sched.stop(final=True)
    assert sched.last_error is None
    assert audit.latest_checkpoint().size == audit.size() == 25
    with pytest.raises(ConfigError):
        CheckpointScheduler(audit, interval=0)


# -- peers -----------------------------------------------------------------------------


class Peer:
    """A peer log simulated in memory."""

    def __init__(self, origin: str = "peer.hedui/audit") -> None:
        self.signer = Signer.generate(origin)
        self.tree = merkle.MemoryTree()

    def grow(self, n: int) -> None:
        for _ in range(n):
            self.tree.append(random.randbytes(20))

    def note(self, size: int | None = None, root: bytes | None = None) -> str:
        size = self.tree.size if size is None else size
        return Checkpoint(self.signer.name, size, root or self.tree.root(size)).sign(self.signer)

    def fetch(self, a: int, b: int) -> list[bytes]:
        return self.tree.consistency_proof(a, b)


def test_cosigning_a_peer(audit: AuditLog, engine, signer: Signer) -> None:
    peer = Peer()
    peer.grow(5)
    line = audit.observe_peer_checkpoint("P1", peer.note(), peer.signer.verifier(), peer.fetch)
    body = split_note(peer.note())[0]
    assert verify_cosignature(signer.cosignature_verifier(), body, line) == int(T0.timestamp())
    peer.grow(300)
    audit.observe_peer_checkpoint("P1", peer.note(), peer.signer.vkey, peer.fetch)
    audit.observe_peer_checkpoint("P1", peer.note(), peer.signer.vkey, peer.fetch)  # same again: fine
    with pytest.raises(CheckpointError):  # older than the last cosigned, though consistent
        audit.observe_peer_checkpoint("P1", peer.note(100), peer.signer.vkey, peer.fetch)
    with engine.connect() as conn:
        rows = conn.execute(select(audit_cosignatures).order_by(audit_cosignatures.c.id)).all()
    assert [(r.peer, r.size) for r in rows] == [("P1", 5), ("P1", 305), ("P1", 305)]
    assert all(r.cosignature.startswith("\u2014 " + ORIGIN + " ") for r in rows)


def test_bad_peer_signatures_are_not_cosigned(audit: AuditLog, engine) -> None:
    peer, stranger = Peer(), Peer("stranger.hedui/audit")
    peer.grow(3)
    with pytest.raises(UnknownKeyError):
        audit.observe_peer_checkpoint("P1", peer.note(), stranger.signer.vkey, peer.fetch)
    forged = peer.note().replace("\n3\n", "\n4\n")
    with pytest.raises(NoteSignatureError):
        audit.observe_peer_checkpoint("P1", forged, peer.signer.vkey, peer.fetch)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_cosignatures)).scalar() == 0


def test_peer_fork_same_size_other_root(audit: AuditLog, engine, caplog) -> None:
    peer = Peer()
    peer.grow(10)
    audit.observe_peer_checkpoint("P1", peer.note(), peer.signer.vkey, peer.fetch)
    with caplog.at_level(logging.WARNING, logger="hedui.audit"), pytest.raises(ForkError):
        audit.observe_peer_checkpoint("P1", peer.note(10, b"\x07" * 32), peer.signer.vkey, peer.fetch)
    assert any(r.levelno == logging.WARNING and "FORK" in r.getMessage() for r in caplog.records)
    with engine.connect() as conn:
        fork = conn.execute(select(audit_forks)).one()
        kinds = [r.kind for r in conn.execute(select(audit_entries.c.kind))]
    assert (fork.peer, fork.size_a, fork.size_b) == ("P1", 10, 10)
    assert Kind.PEER_FORK in kinds


def test_peer_fork_without_a_valid_consistency_proof(audit: AuditLog, engine) -> None:
    peer = Peer()
    peer.grow(10)
    audit.observe_peer_checkpoint("P1", peer.note(), peer.signer.vkey, peer.fetch)
    other = Peer()  # same key, rewritten history
    other.signer = peer.signer
    other.grow(20)
    with pytest.raises(ForkError):
        audit.observe_peer_checkpoint("P1", other.note(), peer.signer.vkey, other.fetch)
    peer.grow(10)
    with pytest.raises(ForkError):  # a truncated proof is no proof
        audit.observe_peer_checkpoint("P1", peer.note(), peer.signer.vkey, lambda a, b: peer.fetch(a, b)[:-1])
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_forks)).scalar() == 2
    audit.observe_peer_checkpoint("P1", peer.note(), peer.signer.vkey, peer.fetch)  # honest: cosigned


# -- offline round trips -----------------------------------------------------------------


def test_export_verify_and_proof_round_trip(audit: AuditLog, engine, signer, tmp_path) -> None:
    peer = Peer()
    peer.grow(4)
    audit.observe_peer_checkpoint("P1", peer.note(), peer.signer.vkey, peer.fetch)
    audit.append_many(admin(i) for i in range(50))
    cp50 = audit.checkpoint()
    audit.append_many(admin(i) for i in range(250))
    cp = audit.checkpoint()
    audit.append_many(admin(i) for i in range(20))  # not yet checkpointed
    keys = [signer.vkey]
    r = audit_verify.verify(engine, keys, cp.note)
    # Entries after the newest checkpoint are never OK (issue 13): a verdict of their own.
    assert r.verdict is audit_verdict.Verdict.UNSIGNED_TAIL, r.problems
    assert [p.verdict for p in r.problems] == [audit_verdict.Verdict.UNSIGNED_TAIL]
    assert (r.entries, r.unsigned_tail, r.cosignatures, r.checkpoints_verified) == (320, 20, 1, 2)
    out = audit_export.export(engine, 0, None, tmp_path / "all.ndjson", now=AUDIT_CLOCK.now())
    assert (out.entries, out.end, out.checkpoints, out.cosignatures) == (300, 300, 2, 1)
    r = audit_verify.verify(tmp_path / "all.ndjson", keys, cp.note)
    assert r.verdict is audit_verdict.Verdict.OK and r.entries == 300, r.problems
    first = json.loads((tmp_path / "all.ndjson").read_text().splitlines()[0])
    assert first["format"] == audit_export.EXPORT_FORMAT and first["origin"] == ORIGIN
    # a partial export verifies through its frontier
    audit_export.export(engine, 123, None, tmp_path / "part.ndjson", now=AUDIT_CLOCK.now())
    r = audit_verify.verify(tmp_path / "part.ndjson", keys)
    assert r.verdict is audit_verdict.Verdict.OK and (r.start, r.entries) == (123, 177), r.problems
    # ...but cannot vouch for a trusted checkpoint before its start
    r = audit_verify.verify(tmp_path / "part.ndjson", keys, cp50.note)
    assert r.verdict is audit_verdict.Verdict.TRUNCATED, r.problems
    assert audit_verify.verify(tmp_path / "all.ndjson", keys, cp50.note).verdict is audit_verdict.Verdict.OK
    # proofs
    text = audit_proof.proof(engine, 42)
    assert text.startswith(audit_proof.PROOF_HEADER + "\nextra ")
    res = audit_proof.verify_proof(text, keys, origin=ORIGIN)
    assert res.index == 42 and res.entry == audit.entry(42) and res.checkpoint.size == 300
    with pytest.raises(InvalidArgument):
        audit_proof.proof(engine, 305)  # not covered by a checkpoint yet


def _q(kind: str, rid: str, peer: str, *, digest: str = "aa" * 32, case: str = "HUB-1", **extra) -> tuple:
    return kind, {"request_id": rid, "peer": peer, "purpose": "PURPOSE_DIBAO", "case_ref": case,
                  "request_digest": digest, **extra}


def _a(kind: str, rid: str, peer: str, digest: str, outcome: str = "ok") -> tuple:
    return kind, {"request_id": rid, "peer": peer, "answer_digest": digest, "outcome": outcome}


def test_reconcile(engine, tmp_path) -> None:
    hub_clock, prov_clock = Clock(), Clock()
    hub = AuditLog(engine, "hub.hedui/audit", Signer.generate("hub.hedui/audit"), clock=hub_clock)
    prov_engine = open_engine(sqlite_url(tmp_path / "provider.db"))
    schema.load_all().create_all(prov_engine)
    prov = AuditLog(prov_engine, "p1.hedui/audit", Signer.generate("p1.hedui/audit"), clock=prov_clock)
    S, R, AS, AR = Kind.QUERY_SENT, Kind.QUERY_RECEIVED, Kind.ANSWER_SENT, Kind.ANSWER_RECEIVED
    rid = {name: f"{i:032x}" for i, name in enumerate(["ok", "lost", "digest", "nocase", "answer", "other",
                                                        "rogue", "late", "refused", "outside"], start=1)}
    # in the period [T0, T0 + 1h)
    hub.append_many([
        _q(S, rid["ok"], "P1"), _a(AR, rid["ok"], "P1", "11" * 32),
        _q(S, rid["lost"], "P1"),
        _q(S, rid["digest"], "P1", digest="bb" * 32),
        _q(S, rid["nocase"], "P1", case=""),
        _q(S, rid["answer"], "P1"), _a(AR, rid["answer"], "P1", "22" * 32),
        _q(S, rid["other"], "P2"),
        _q(S, rid["refused"], "P1"), _a(AR, rid["refused"], "P1", "", outcome="POLICY_DENIED"),
    ])
    prov.append_many([
        _q(R, rid["ok"], "HUB"), _a(AS, rid["ok"], "HUB", "11" * 32),
        _q(R, rid["digest"], "HUB", digest="cc" * 32),
        _q(R, rid["nocase"], "HUB", case=""),
        _q(R, rid["answer"], "HUB"), _a(AS, rid["answer"], "HUB", "33" * 32),
        _q(R, rid["rogue"], "HUB"),
        _q(R, rid["refused"], "HUB"), (Kind.REFUSAL, {"request_id": rid["refused"], "peer": "HUB",
                                                      "outcome": "POLICY_DENIED"}),
        _q(R, rid["rogue"] + "00", "OTHERHUB"),  # another hub's query: ignored with hub_code
    ])
    # sent just before the period ends, received just after
    hub_clock.advance(3599)
    hub.append(*_q(S, rid["late"], "P1"))
    prov_clock.advance(3601)
    prov.append(*_q(R, rid["late"], "HUB"))
    # entirely outside the period
    hub_clock.advance(7200)
    hub.append(*_q(S, rid["outside"], "P1"))
    hub.close()
    prov.close()

    period = (T0, T0 + timedelta(hours=1))
    for hub_src, prov_src in ((engine, prov_engine), (tmp_path / "hub.ndjson", tmp_path / "p1.ndjson")):
        if not isinstance(hub_src, type(engine)):
            audit_export.export(engine, 0, TreeReader(engine).size(), hub_src, now=AUDIT_CLOCK.now())
            audit_export.export(prov_engine, 0, TreeReader(prov_engine).size(), prov_src, now=AUDIT_CLOCK.now())
        r = audit_reconcile.reconcile(hub_src, {"P1": prov_src}, period, hub_code="HUB")
        got = {k: sorted(i["request_id"] for i in getattr(r, k)) for k in
               ("sent_not_received", "received_not_sent", "request_mismatches", "answer_mismatches", "no_case")}
        assert got == {
            "sent_not_received": [rid["lost"]],
            "received_not_sent": [rid["rogue"]],
            "request_mismatches": [rid["digest"]],
            "answer_mismatches": [rid["answer"]],
            "no_case": [rid["nocase"]],
        }
        assert not r.clean and r.counts["sent_to_other_providers"] == 1
        r = audit_reconcile.reconcile(hub_src, {"P1": prov_src}, period, hub_code="HUB", hub_cases={"OTHER"})
        assert len(r.no_case) == 8  # every query in the period now cites an unknown case
    prov_engine.dispose()


def test_export_encodes_entries_in_base64(audit: AuditLog, engine, tmp_path) -> None:
    audit.append(*admin(0))
    audit.checkpoint()
    audit_export.export(engine, 0, None, tmp_path / "e.ndjson", now=AUDIT_CLOCK.now())
    lines = (tmp_path / "e.ndjson").read_text().splitlines()
    entry = json.loads([ln for ln in lines if '"type":"entry"' in ln][0])
    assert base64.b64decode(entry["entry"]) == audit.entry(0)
    assert json.loads(lines[-1])["type"] == "footer"


def test_last_cosigned(audit: AuditLog) -> None:
    peer = Peer()
    assert audit.last_cosigned("P1") is None
    peer.grow(9)
    audit.observe_peer_checkpoint("P1", peer.note(), peer.signer.vkey, peer.fetch)
    assert audit.last_cosigned("P1") == (9, peer.tree.root())


# -- the CLI -----------------------------------------------------------------------------


@pytest.mark.timesensitive
def test_cli(audit: AuditLog, engine, store_url, signer, tmp_path) -> None:
    from typer.testing import CliRunner

    from hedui.node.cli.audit import RECONCILE_MISMATCH_EXIT, app

    run = CliRunner().invoke
    audit.append_many(admin(i) for i in range(40))
    audit.append(*_q(Kind.QUERY_SENT, "ab" * 16, "P1"))
    audit.checkpoint()
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text(f"# the log's key\n{signer.vkey}\n")
    export = tmp_path / "e.ndjson"
    r = run(app, ["export", "--db", store_url, "--out", str(export), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["entries"] == 41
    # The header says when in UTC and as a person reads it in China (the same instant + 8 h).
    head = json.loads(export.read_text(encoding="utf-8").splitlines()[0])
    at = datetime.fromisoformat(head["exported_at"].replace("Z", "+00:00"))
    assert head["time_zone"] == "Asia/Shanghai"
    assert head["exported_at_local"] == (at + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S") + " (UTC+8)"
    r = run(app, ["verify", "--file", str(export), "--key", str(keyfile), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["verdict"] == "OK", r.output
    r = run(app, ["verify", "--db", store_url, "--key", signer.vkey])
    assert r.exit_code == 0 and r.output.startswith("OK"), r.output
    r = run(app, ["verify", "--db", store_url, "--key", Signer.generate(ORIGIN).vkey, "--json"])
    assert r.exit_code == int(audit_verdict.Verdict.UNKNOWN_KEY), r.output
    cut = tmp_path / "cut.ndjson"
    cut.write_bytes(export.read_bytes()[: export.stat().st_size // 2])
    r = run(app, ["verify", "--file", str(cut), "--key", signer.vkey])
    assert r.exit_code == int(audit_verdict.Verdict.TRUNCATED), r.output
    proof = tmp_path / "p.tlog-proof"
    assert run(app, ["proof", "--db", store_url, "--seq", "7", "--out", str(proof)]).exit_code == 0
    r = run(app, ["proof", "--check", str(proof), "--key", signer.vkey, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["index"] == 7, r.output
    proof.write_text(proof.read_text().replace("index 7", "index 8"))
    assert run(app, ["proof", "--check", str(proof), "--key", signer.vkey]).exit_code == int(audit_verdict.Verdict.TAMPERED)
    r = run(app, ["reconcile", "--hub", store_url, "--provider", f"P1={export}", "--from", "2026-05-01T00:00:00Z",
                  "--to", "2026-05-02T00:00:00Z", "--json"])
    assert r.exit_code == RECONCILE_MISMATCH_EXIT, r.output
    assert [i["request_id"] for i in json.loads(r.output)["received_not_sent"]] == []
    assert [i["request_id"] for i in json.loads(r.output)["sent_not_received"]] == ["ab" * 16]
    # Reconcile periods are local days in the federation zone (default Asia/Shanghai): the
    # query was sent at T0, 08:00 UTC = 16:00 on 1 May in China.
    for window in (["--period", "2026-05"], ["--period", "2026-W18"], ["--from", "2026-05-01", "--to", "2026-05-01"],
                   ["--period", "2026-05-01..2026-05-01", "--as-of", "2026-05-01T08:00:01Z"]):
        r = run(app, ["reconcile", "--hub", store_url, "--provider", f"P1={export}", *window, "--json"])
        assert r.exit_code == RECONCILE_MISMATCH_EXIT, (window, r.output)
        assert [i["request_id"] for i in json.loads(r.output)["sent_not_received"]] == ["ab" * 16], window
    assert json.loads(r.output)["period_local"] == ["2026-05-01 00:00 (UTC+8)", "2026-05-01 16:00 (UTC+8)"]
    for window in (["--period", "2026-04"], ["--from", "2026-05-02"], ["--to", "2026-04-30"],
                   ["--as-of", "2026-05-01T07:59:59Z"], ["--from", "2026-05-01T16:00:01+08:00"],
                   ["--period", "2026-05", "--time-zone", "Pacific/Pago_Pago"]):  # UTC-11: still 30 April
        r = run(app, ["reconcile", "--hub", store_url, "--provider", f"P1={export}", *window, "--json"])
        assert r.exit_code == 0, (window, r.output)
    r = run(app, ["reconcile", "--hub", store_url, "--provider", f"P1={export}", "--period", "2026-05"])
    assert "period: 2026-05-01 00:00 (UTC+8) to 2026-06-01 00:00 (UTC+8)" in r.output
    assert "2026-05-01 16:00:00 (UTC+8) P1" in r.output
    for args, want in ((["--from", "2026-05-01T08:00"], "--from: got a date-time without a UTC offset"),
                       (["--period", "2026-13"], "--period: got '2026-13'"),
                       (["--period", "2026-05", "--to", "2026-05-02"], "give --period or --from/--to, not both"),
                       (["--time-zone", "Mars/Olympus"], "--time-zone: got 'Mars/Olympus', want an IANA zone"),
                       (["--from", "2026-05-02", "--to", "2026-05-01"], "want a start before the end")):
        r = run(app, ["reconcile", "--hub", store_url, "--provider", f"P1={export}", *args])
        assert r.exit_code == 2 and want in r.output, (args, r.output)
    # errors: one line, non-zero, no traceback
    for args in (
        ["verify", "--db", store_url, "--key", "not-a-key"],
        ["verify", "--key", signer.vkey],
        ["export", "--db", store_url, "--out", str(tmp_path / "no" / "such" / "dir.ndjson")],
        ["proof", "--db", store_url, "--seq", "4000"],
        ["reconcile", "--hub", store_url, "--provider", "P1"],
    ):
        r = run(app, args)
        assert r.exit_code not in (0, None), args
        assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), args
        assert "error:" in r.output, (args, r.output)


def test_periodic_job_steps_survives_errors_and_stops_promptly() -> None:
    """The one loop shape (node/loops.py): steps at once, retries after an error, wakes
    early on ``wake``, and stop() interrupts, joins and runs ``final`` once."""
    import time as _time

    from hedui.node.loops import PeriodicJob

    calls: list[str] = []
    wake = threading.Event()

    class Job(PeriodicJob):
        def step(self) -> float:
            calls.append("step")
            if len(calls) == 2:
                raise RuntimeError("store briefly away 110105194912310021")
            return 3600.0

        def interrupt(self) -> None:
            calls.append("interrupt")

        def final(self) -> None:
            calls.append("final")

    job = Job("test-job", interval=0.01, wake=wake)
    with pytest.raises(ValueError):
        Job("bad", interval=0)
    job.start()
    deadline = _time.monotonic() + 10
    while calls.count("step") < 1 and _time.monotonic() < deadline:
        _time.sleep(0.01)
    assert job.next_due is not None and job.next_due > _time.monotonic() + 3000  # waits an hour...
    wake.set()  # ...unless woken: the second step fails, the third comes after `interval`
    while calls.count("step") < 3 and _time.monotonic() < deadline:
        _time.sleep(0.01)
    assert calls.count("step") == 3 and job.last_error is None
    started = _time.monotonic()
    job.stop()
    assert _time.monotonic() - started < 5 and job.next_due is None
    assert calls[-2:] == ["interrupt", "final"]
    job.stop()  # idempotent: no second final
    assert calls.count("final") == 1
