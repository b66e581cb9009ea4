"""Every kind of tampering with a stored log, an export file or a proof is detected, with
the right verdict (audit_verify.verify) or typed error (audit_proof.verify_proof)."""

from __future__ import annotations

import base64
import datetime as _dt
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, update

import hedui.node.audit.tables  # noqa: F401 - registers the tables before `engine` creates them
from hedui.common.clock import FixedClock as _FixedClock
from hedui.node.audit import export as audit_export
from hedui.node.audit import merkle
from hedui.node.audit import proof as audit_proof
from hedui.node.audit import verdict as audit_verdict
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.entry import Kind
from hedui.node.audit.errors import InclusionProofError, ProofFormatError, UnknownKeyError
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Checkpoint, Signer
from hedui.node.audit.tables import (
    audit_checkpoints,
    audit_cosignatures,
    audit_entries,
    audit_head,
    audit_nodes,
)
from hedui.node.audit.verdict import Verdict

# Entries and checkpoints are stamped with a fixed instant, never the wall clock.
AUDIT_CLOCK = _FixedClock(_dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC))

ORIGIN = "tamper.hedui/audit"
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


class Built:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.signer = Signer.generate(ORIGIN)
        self.keys = [self.signer.vkey]
        t = [T0]
        self.log = AuditLog(engine, ORIGIN, self.signer, tile_height=2, clock=lambda: t[0])
        for i in range(0, 40, 8):
            self.log.append_many((Kind.ADMIN, {"action": f"a{i + j}", "operator": "op"}) for j in range(8))
        self.cp40 = self.log.checkpoint()
        self.log.append_many((Kind.ADMIN, {"action": f"b{j}", "operator": "op"}) for j in range(60))
        t[0] = T0 + timedelta(seconds=10)
        self.cp100 = self.log.checkpoint()
        peer = Signer.generate("peer.hedui/audit")
        tree = merkle.MemoryTree(merkle.leaf_hash(bytes([i])) for i in range(5))
        self.log.observe_peer_checkpoint(
            "P1", Checkpoint(peer.name, 5, tree.root()).sign(peer), peer.vkey, tree.consistency_proof
        )
        self.log.close()

    def verify(self, **kw) -> audit_verdict.VerifyReport:
        return audit_verify.verify(self.engine, self.keys, **kw)

    def sql(self, stmt) -> None:
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def row(self, seq: int):
        with self.engine.connect() as conn:
            return conn.execute(select(audit_entries).where(audit_entries.c.seq == seq)).one()


@pytest.fixture
def built(engine) -> Built:
    return Built(engine)


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def test_untouched_log_is_ok(built: Built) -> None:
    r = built.verify(last_trusted_checkpoint=built.cp100.note)
    assert r.verdict is Verdict.OK, r.problems
    assert (r.entries, r.checkpoints_verified, r.cosignatures) == (100, 2, 1)


def test_flipped_byte_in_an_entry(built: Built) -> None:
    row = built.row(17)
    built.sql(update(audit_entries).where(audit_entries.c.seq == 17).values(entry=_flip(bytes(row.entry), 30)))
    r = built.verify()
    assert r.verdict is Verdict.TAMPERED
    assert any("entry 17" in p.message for p in r.problems)
    assert any("checkpoint 40" in p.message and "[0, 40)" in p.message for p in r.problems)


def test_flipped_byte_with_a_recomputed_leaf_hash(built: Built) -> None:
    data = _flip(bytes(built.row(55).entry), 30)
    built.sql(update(audit_entries).where(audit_entries.c.seq == 55)
              .values(entry=data, leaf_hash=merkle.leaf_hash(data)))
    r = built.verify()
    assert r.verdict is Verdict.TAMPERED
    assert any("checkpoint 100" in p.message and "[40, 100)" in p.message for p in r.problems)


def test_deleted_entry_in_the_middle(built: Built) -> None:
    built.sql(delete(audit_entries).where(audit_entries.c.seq == 50))
    r = built.verify()
    assert r.verdict is Verdict.TAMPERED
    assert any("entry 50 is missing" in p.message for p in r.problems)


def test_deleted_tail(built: Built) -> None:
    built.sql(delete(audit_entries).where(audit_entries.c.seq >= 90))
    assert built.verify().verdict is Verdict.TRUNCATED


def test_deleted_tail_with_its_checkpoints_needs_the_trusted_checkpoint(built: Built) -> None:
    # A careful attacker also deletes the checkpoints, the cached subtrees and fixes the head:
    # the log is then self-consistent, and only the officer's last trusted checkpoint shows it.
    with built.engine.begin() as conn:
        conn.execute(delete(audit_entries).where(audit_entries.c.seq >= 60))
        conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size > 60))
        for lvl, idx in conn.execute(select(audit_nodes.c.level, audit_nodes.c.idx)).all():
            if (idx + 1) << lvl > 60:
                conn.execute(delete(audit_nodes).where(audit_nodes.c.level == lvl, audit_nodes.c.idx == idx))
        conn.execute(update(audit_head).values(size=60))
    # Entries 40..60 are left beyond the newest remaining checkpoint (40): never OK (issue
    # 13); the officer's last trusted checkpoint, or a peer's cosignature of checkpoint 100
    # (tests/test_failsafe_audit.py), shows the truncation itself.
    assert built.verify().verdict is Verdict.UNSIGNED_TAIL
    r = built.verify(last_trusted_checkpoint=built.cp100.note)
    assert r.verdict is Verdict.TRUNCATED


def test_reordered_entries(built: Built) -> None:
    a, b = built.row(10), built.row(11)
    with built.engine.begin() as conn:
        for seq, src in ((10, b), (11, a)):
            conn.execute(update(audit_entries).where(audit_entries.c.seq == seq).values(
                entry=src.entry, leaf_hash=src.leaf_hash, kind=src.kind, request_id=src.request_id,
                created_at=src.created_at))
    r = built.verify()
    assert r.verdict is Verdict.TAMPERED
    assert any("checkpoint 40" in p.message for p in r.problems)


def test_checkpoint_signed_by_an_unknown_key(built: Built) -> None:
    stranger = Signer.generate(ORIGIN)  # same name, other key
    cp = Checkpoint(ORIGIN, 100, built.cp100.root)
    built.sql(insert(audit_checkpoints).values(size=100, root=cp.root, note=cp.sign(stranger), created_at=T0))
    r = built.verify()
    assert r.verdict is Verdict.UNKNOWN_KEY
    assert r.checkpoints_verified == 2


def test_forked_checkpoint(built: Built) -> None:
    other = bytes(32)
    note = Checkpoint(ORIGIN, 100, other).sign(built.signer)
    built.sql(insert(audit_checkpoints).values(size=100, root=other, note=note, created_at=T0))
    r = built.verify()
    assert r.verdict is Verdict.FORK
    assert any("2 different roots signed for tree size 100" in p.message for p in r.problems)


def test_log_forked_from_the_trusted_checkpoint(built: Built) -> None:
    # The officer trusted a checkpoint of size 40 with another root: a split view.
    trusted = Checkpoint(ORIGIN, 40, bytes(range(32))).sign(built.signer)
    assert built.verify(last_trusted_checkpoint=trusted).verdict is Verdict.FORK


def test_edited_checkpoint_note(built: Built) -> None:
    forged = built.cp40.note.replace("\n40\n", "\n41\n")
    built.sql(update(audit_checkpoints).where(audit_checkpoints.c.size == 40).values(note=forged, size=41))
    assert built.verify().verdict is Verdict.TAMPERED


def test_edited_cosignature(built: Built) -> None:
    with built.engine.connect() as conn:
        line = conn.execute(select(audit_cosignatures.c.cosignature)).scalar_one()
    raw = base64.b64decode(line.split(" ")[-1])
    bad = line.rsplit(" ", 1)[0] + " " + base64.b64encode(_flip(raw, 40)).decode()
    built.sql(update(audit_cosignatures).values(cosignature=bad))
    assert built.verify().verdict is Verdict.TAMPERED


def test_edited_subtree_cache(built: Built) -> None:
    built.sql(update(audit_nodes).where(audit_nodes.c.level == 2, audit_nodes.c.idx == 3).values(hash=bytes(32)))
    r = built.verify()
    assert r.verdict is Verdict.TAMPERED and any("(2, 3)" in p.message for p in r.problems)


def test_edited_index_columns(built: Built) -> None:
    built.sql(update(audit_entries).where(audit_entries.c.seq == 5).values(kind=Kind.QUERY_SENT))
    assert built.verify().verdict is Verdict.TAMPERED


def test_stale_checkpoint(built: Built) -> None:
    fresh = built.verify(max_age=60, now=T0 + timedelta(seconds=30))
    assert fresh.verdict is Verdict.OK and fresh.latest_checkpoint_time == int(T0.timestamp()) + 10
    assert built.verify(max_age=timedelta(hours=1), now=T0 + timedelta(hours=2)).verdict is Verdict.STALE


def test_wrong_key_is_unknown_key(built: Built) -> None:
    r = audit_verify.verify(built.engine, [Signer.generate(ORIGIN).vkey])
    assert r.verdict is Verdict.UNKNOWN_KEY and r.checkpoints_verified == 0


def test_empty_and_missing_logs_are_never_ok(engine, tmp_path: Path) -> None:
    keys = [Signer.generate(ORIGIN).vkey]
    assert audit_verify.verify(engine, keys).verdict is Verdict.EMPTY  # tables, no log
    log = AuditLog(engine, ORIGIN, Signer.generate(ORIGIN), clock=AUDIT_CLOCK.now)
    assert audit_verify.verify(engine, keys).verdict is Verdict.EMPTY  # empty log
    log.append(Kind.ADMIN, {"action": "x", "operator": "op"})
    assert audit_verify.verify(engine, [log.signer.vkey]).verdict is Verdict.EMPTY  # nothing signed
    log.close()
    assert audit_verify.verify(tmp_path / "missing.ndjson", keys).verdict is Verdict.EMPTY
    (tmp_path / "empty.ndjson").write_bytes(b"")
    assert audit_verify.verify(tmp_path / "empty.ndjson", keys).verdict is Verdict.EMPTY


# -- export files ----------------------------------------------------------------------


@pytest.fixture
def exported(built: Built, tmp_path: Path) -> tuple[Built, Path]:
    path = tmp_path / "log.ndjson"
    audit_export.export(built.engine, 0, None, path, now=AUDIT_CLOCK.now())
    assert audit_verify.verify(path, built.keys).verdict is Verdict.OK
    return built, path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_export_cut_anywhere_is_truncated(exported, tmp_path: Path) -> None:
    built, path = exported
    data = path.read_bytes()
    lines = _lines(path)
    boundaries = [sum(len(x) for x in lines[:k]) for k in range(1, len(lines))]
    cuts = random.Random(7).sample(range(1, len(data) - 1), 25) + boundaries
    for cut in cuts:
        p = tmp_path / "cut.ndjson"
        p.write_bytes(data[:cut])
        r = audit_verify.verify(p, built.keys)
        assert r.verdict is Verdict.TRUNCATED, (cut, r.problems)


def test_export_with_a_changed_entry(exported, tmp_path: Path) -> None:
    built, path = exported
    lines = _lines(path)
    i = next(k for k, ln in enumerate(lines) if b'"seq":33,' in ln)
    rec = json.loads(lines[i])
    rec["entry"] = base64.b64encode(_flip(base64.b64decode(rec["entry"]), 12)).decode()
    lines[i] = json.dumps(rec, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    assert audit_verify.verify(path, built.keys).verdict is Verdict.TAMPERED


def test_export_with_swapped_or_missing_lines(exported, tmp_path: Path) -> None:
    built, path = exported
    lines = _lines(path)
    i = next(k for k, ln in enumerate(lines) if b'"seq":70,' in ln)
    swapped = lines[:i] + [lines[i + 1], lines[i]] + lines[i + 2 :]
    (tmp_path / "swapped.ndjson").write_bytes(b"".join(swapped))
    assert audit_verify.verify(tmp_path / "swapped.ndjson", built.keys).verdict is Verdict.TAMPERED
    missing = lines[:i] + lines[i + 1 :]
    (tmp_path / "missing.ndjson").write_bytes(b"".join(missing))
    assert audit_verify.verify(tmp_path / "missing.ndjson", built.keys).verdict is Verdict.TAMPERED
    padded = lines + [lines[i]]
    (tmp_path / "padded.ndjson").write_bytes(b"".join(padded))
    assert audit_verify.verify(tmp_path / "padded.ndjson", built.keys).verdict is Verdict.TAMPERED


def test_export_with_a_removed_footer_or_checkpoint(exported, tmp_path: Path) -> None:
    built, path = exported
    lines = _lines(path)
    (tmp_path / "nofooter.ndjson").write_bytes(b"".join(lines[:-1]))
    assert audit_verify.verify(tmp_path / "nofooter.ndjson", built.keys).verdict is Verdict.TRUNCATED
    no_cp = [ln for ln in lines if b'"type":"checkpoint","size":40' not in ln]
    assert len(no_cp) == len(lines) - 1
    (tmp_path / "nocp.ndjson").write_bytes(b"".join(no_cp))
    assert audit_verify.verify(tmp_path / "nocp.ndjson", built.keys).verdict is Verdict.TAMPERED


# -- proofs ----------------------------------------------------------------------------


@pytest.fixture
def proof_text(built: Built) -> str:
    text = audit_proof.proof(built.engine, 37)
    assert audit_proof.verify_proof(text, built.keys).index == 37
    return text


def _parts(text: str) -> tuple[list[str], str]:
    head, _, note = text.partition("\n\n")
    return head.split("\n"), note


def _join(lines: list[str], note: str) -> str:
    return "\n".join(lines) + "\n\n" + note


def test_truncated_and_padded_proofs_fail(built: Built, proof_text: str) -> None:
    lines, note = _parts(proof_text)
    hashes = lines[3:]
    assert len(hashes) >= 3
    for bad in (
        lines[:-1],  # truncated
        lines[:3] + lines[4:],  # a middle hash removed
        lines + [hashes[0]],  # padded at the end
        lines[:3] + [hashes[0]] + hashes,  # padded at the start
        lines[:3] + hashes[::-1],  # reordered
    ):
        with pytest.raises(InclusionProofError):
            audit_proof.verify_proof(_join(bad, note), built.keys)


def test_bit_flips_in_a_proof_fail(built: Built, proof_text: str) -> None:
    lines, note = _parts(proof_text)
    for k in range(3, len(lines)):
        raw = base64.b64decode(lines[k])
        for bit in (0, 77, 255):
            bad = lines.copy()
            bad[k] = base64.b64encode(raw[: bit // 8] + bytes([raw[bit // 8] ^ (1 << (bit % 8))]) + raw[bit // 8 + 1 :]).decode()
            with pytest.raises(InclusionProofError):
                audit_proof.verify_proof(_join(bad, note), built.keys)
    extra = base64.b64decode(lines[1][6:])
    bad = lines.copy()
    bad[1] = "extra " + base64.b64encode(_flip(extra, 3)).decode()
    with pytest.raises(InclusionProofError):
        audit_proof.verify_proof(_join(bad, note), built.keys)
    for index in ("index 36", "index 38", "index 0"):
        with pytest.raises(InclusionProofError):
            audit_proof.verify_proof(_join(lines[:2] + [index] + lines[3:], note), built.keys)
    with pytest.raises(InclusionProofError):
        audit_proof.verify_proof(proof_text, built.keys, entry=b"another entry")


def test_malformed_proofs_and_unknown_keys(built: Built, proof_text: str) -> None:
    lines, note = _parts(proof_text)
    with pytest.raises(UnknownKeyError):
        audit_proof.verify_proof(proof_text, [Signer.generate(ORIGIN).vkey])
    for bad in (
        proof_text.replace(audit_proof.PROOF_HEADER, "c2sp.org/tlog-proof@v2"),
        _join(lines[:2] + ["index 037"] + lines[3:], note),
        _join(lines[:3] + ["not-base64!"] + lines[3:], note),
        _join(lines[:3] + ["AAAA"] + lines[3:], note),
        "\n".join(lines),
        _join([lines[0], lines[2]] + lines[3:], note),  # no extra and no entry given
    ):
        with pytest.raises(ProofFormatError):
            audit_proof.verify_proof(bad, built.keys)
    # without the extra line, the entry can be supplied by the caller
    assert audit_proof.verify_proof(_join([lines[0], lines[2]] + lines[3:], note), built.keys,
                                entry=base64.b64decode(lines[1][6:])).index == 37
