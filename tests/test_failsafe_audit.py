"""Fault suite, the audit log (issue 13 items 4 and 8): an unsigned tail is never OK, a log
shorter than what a peer cosigned is TRUNCATED, and every process that appends entries — the
CLI included — signs a checkpoint (and has it cosigned) before it exits. On SQLite and
PostgreSQL (the log under test); the peer's log is an export file or a SQLite store."""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

import hedui.node.audit.tables  # noqa: F401 - registers the tables before `engine` creates them
from hedui.node.audit import export as audit_export
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.entry import Kind
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Signer
from hedui.node.audit.tables import audit_checkpoints, audit_entries, audit_head, audit_nodes
from hedui.node.audit.tree import TreeReader
from hedui.node.audit.verdict import Verdict
from hedui.node.store import migrate
from hedui.node.store.db import open_engine, sqlite_url

ORIGIN = "hedui.test/hub"
PEER = "hedui.test/tax"
T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


class Logs:
    """Our log (the store under test) with checkpoints at 40 and 100, and a peer that
    cosigned checkpoint 100; the peer's log is a SQLite store, also exported."""

    def __init__(self, engine, tmp_path) -> None:
        self.engine = engine
        self.signer = Signer.generate(ORIGIN)
        self.peer_signer = Signer.generate(PEER)
        t = [T0]
        self.log = AuditLog(engine, ORIGIN, self.signer, tile_height=2, clock=lambda: t[0])
        self.log.append_many((Kind.ADMIN, {"action": f"a{i}", "operator": "op"}) for i in range(40))
        self.cp40 = self.log.checkpoint()
        self.log.append_many((Kind.ADMIN, {"action": f"b{i}", "operator": "op"}) for i in range(60))
        t[0] = T0 + timedelta(seconds=10)
        self.cp100 = self.log.checkpoint()
        self.peer_url = sqlite_url(tmp_path / "peer.db")
        peng = open_engine(self.peer_url)
        migrate.upgrade(peng)
        self.peer_log = AuditLog(peng, PEER, self.peer_signer, clock=lambda: t[0])
        self.peer_log.append_many((Kind.ADMIN, {"action": "p", "operator": "op"}) for _ in range(3))
        reader = TreeReader(engine)
        for cp in (self.cp40, self.cp100):
            self.peer_log.observe_peer_checkpoint("hub", cp.note, self.signer.vkey, reader.consistency_proof)
        self.peer_log.checkpoint()
        self.peer_log.close()
        self.peer_export = tmp_path / "peer.ndjson"
        audit_export.export(peng, 0, None, self.peer_export, now=t[0])
        peng.dispose()
        self.log.close()
        self.keys = [self.signer.vkey, self.peer_signer.vkey]

    def verify(self, **kw):
        return audit_verify.verify(self.engine, self.keys, **kw)

    def cut(self, size: int, *, checkpoints: bool = True) -> None:
        """The careful attacker: entries from ``size`` on, the checkpoints and cached subtrees
        covering them, and the head — a self-consistent shorter log."""
        with self.engine.begin() as c:
            c.execute(delete(audit_entries).where(audit_entries.c.seq >= size))
            if checkpoints:
                c.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size > size))
            for lvl, idx in c.execute(select(audit_nodes.c.level, audit_nodes.c.idx)).all():
                if (idx + 1) << lvl > size:
                    c.execute(delete(audit_nodes).where(audit_nodes.c.level == lvl, audit_nodes.c.idx == idx))
            c.execute(update(audit_head).values(size=size))


@pytest.fixture
def logs(engine, tmp_path) -> Logs:
    return Logs(engine, tmp_path)


def test_intact_log_with_peer_cosignatures_is_ok(logs):
    for peers in ([logs.peer_export], [logs.peer_url]):
        r = logs.verify(peers=peers)
        assert r.verdict is Verdict.OK, r.problems
        assert r.witnessed == 2 and r.unsigned_tail == 0


def test_unsigned_tail_is_its_own_verdict(logs):
    log = AuditLog(logs.engine, ORIGIN, logs.signer, clock=lambda: T0 + timedelta(seconds=20))
    log.append_many((Kind.ADMIN, {"action": f"c{i}", "operator": "op"}) for i in range(7))
    log.close()
    r = logs.verify()
    assert r.verdict is Verdict.UNSIGNED_TAIL and r.unsigned_tail == 7
    assert int(r.verdict) not in (0, 9) and r.verdict.name == "UNSIGNED_TAIL"


@pytest.mark.parametrize("cut_at, want", [(60, Verdict.TRUNCATED), (40, Verdict.TRUNCATED), (100, Verdict.OK)])
def test_tail_deleted_with_its_checkpoints_is_truncated_given_peer_cosignatures(logs, cut_at, want):
    logs.cut(cut_at)
    alone = logs.verify()
    # Alone, the cut log is self-consistent: at best an unsigned tail, never silently OK
    # unless it ends exactly at a checkpoint.
    assert alone.verdict in ((Verdict.UNSIGNED_TAIL,) if cut_at not in (40, 100) else (Verdict.OK,))
    r = logs.verify(peers=[logs.peer_export])
    assert r.verdict is want, r.problems
    if want is Verdict.TRUNCATED:
        assert any("peer tax cosigned checkpoint 100" in p.message for p in r.problems)


def test_checkpoints_deleted_but_entries_kept_is_truncated(logs):
    with logs.engine.begin() as c:
        c.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size == 100))
    assert logs.verify().verdict is Verdict.UNSIGNED_TAIL
    r = logs.verify(peers=[logs.peer_export])
    assert r.verdict is Verdict.TRUNCATED and any("newer than the log's newest checkpoint 40" in p.message for p in r.problems)


def test_rewritten_history_is_a_fork_against_the_peer(logs, tmp_path):
    """The owner rebuilds a log of the same size with other entries and re-signs it: alone
    it verifies, the peer's cosignature of the old root says FORK."""
    logs.cut(0)
    with logs.engine.begin() as c:
        c.execute(delete(audit_checkpoints))
    log = AuditLog(logs.engine, ORIGIN, logs.signer, clock=lambda: T0)
    log.append_many((Kind.ADMIN, {"action": f"forged{i}", "operator": "op"}) for i in range(100))
    log.checkpoint()
    log.close()
    assert logs.verify().verdict is Verdict.OK
    r = logs.verify(peers=[logs.peer_export])
    assert r.verdict is Verdict.FORK


def test_cosignature_by_an_untrusted_peer_is_not_used(logs):
    logs.cut(60)
    r = audit_verify.verify(logs.engine, [logs.signer.vkey], peers=[logs.peer_export])
    assert r.verdict is Verdict.UNSIGNED_TAIL and r.witnessed == 0
    assert any("not used" in n for n in r.notes)


def test_cli_verify_exit_codes(logs, tmp_path):
    from hedui.node.cli._app import app

    keyfile = tmp_path / "keys.txt"
    keyfile.write_text("\n".join(logs.keys) + "\n")
    url = str(logs.engine.url.render_as_string(hide_password=False))
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "verify", "--db", url, "--key", str(keyfile), "--peer", str(logs.peer_export)])
    assert r.exit_code == 0, r.output
    logs.cut(60)
    r = runner.invoke(app, ["audit", "verify", "--db", url, "--key", str(keyfile)])
    assert r.exit_code == int(Verdict.UNSIGNED_TAIL) == 10 and "UNSIGNED_TAIL" in r.output
    r = runner.invoke(app, ["audit", "verify", "--db", url, "--key", str(keyfile), "--peer", str(logs.peer_export)])
    assert r.exit_code == int(Verdict.TRUNCATED) and "TRUNCATED" in r.output
    r = runner.invoke(app, ["audit", "verify", "--db", url, "--key", str(keyfile), "--peer", str(tmp_path / "nope.ndjson")])
    assert r.exit_code == 2


def test_saved_checkpoint_is_what_catches_a_later_tail_deletion(logs, tmp_path):
    """What an officer keeps (docs/security-officer.md): ``--save-checkpoint`` writes the newest
    verified checkpoint; given back as ``--trusted-checkpoint`` it turns a later deletion of the
    tail and its checkpoints — self-consistent alone — into TRUNCATED. A log that did not
    verify leaves no checkpoint to trust."""
    from hedui.node.cli._app import app

    keyfile = tmp_path / "keys.txt"
    keyfile.write_text("\n".join(logs.keys) + "\n")
    url = str(logs.engine.url.render_as_string(hide_password=False))
    kept = tmp_path / "kept.cp"
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "verify", "--db", url, "--key", str(keyfile), "--save-checkpoint", str(kept)])
    assert r.exit_code == 0, r.output
    assert kept.read_text(encoding="utf-8") == logs.cp100.note and not (tmp_path / "kept.cp.tmp").exists()
    logs.cut(40)  # ends exactly at checkpoint 40: alone it is OK
    r = runner.invoke(app, ["audit", "verify", "--db", url, "--key", str(keyfile)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", "verify", "--db", url, "--key", str(keyfile), "--trusted-checkpoint", str(kept)])
    assert r.exit_code == int(Verdict.TRUNCATED), r.output
    other = tmp_path / "other.cp"
    r = runner.invoke(app, ["audit", "verify", "--db", url, "--key", str(keyfile), "--trusted-checkpoint", str(kept),
                            "--save-checkpoint", str(other)])
    assert r.exit_code == int(Verdict.TRUNCATED) and not other.exists() and "not written" in r.stderr


# -- every process signs before it exits ------------------------------------------------------

@pytest.fixture
def fed(tmp_path, monkeypatch):
    from hedui.common.clock import FixedClock
    from hedui.keys.keyfile import PASSPHRASE_ENV
    from hedui.node.testbed import MemberPlan, Testbed

    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 residents=30, data_seed=5, clock=FixedClock(dt.datetime(2026, 11, 30, 3, 0, 30, tzinfo=UTC)))
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.build_indexes()
    tb.start(["tax"])  # the hub is a short-lived CLI process below
    yield tb
    tb.stop()


def test_a_cli_process_signs_and_gets_cosigned_before_it_exits(fed):
    """``hedui case run`` as the CLI does it: a Runtime that never serves, runs a case, and
    closes. Its log then verifies OK (no unsigned tail), it cosigned the provider's
    checkpoint, and the provider cosigned its own."""
    from hedui.adapters.synthetic import resident
    from hedui.node.audit.note import Verifier, Verifiers
    from hedui.node.audit.recorder import origin_of
    from hedui.node.audit.tables import audit_cosignatures
    from hedui.node.runtime import Runtime
    from hedui.node.verification.cases import consent_digest_of, open_case, run_case

    hub = Runtime.open(fed.config_path("hub"), clock=fed.clock)
    ref = open_case(hub, [(resident(1, 5).id_number, "m")], purpose="dibao", consent_digest=consent_digest_of(b"a"),
                    operator="cw", region="370304")
    run_case(hub, ref)
    url = hub.config.store_url()
    d = hub.directory
    hub.close()
    keys = Verifiers([Verifier(origin_of(d.msg.federation, m.code), bytes(m.signing_key)) for m in d.msg.members])
    r = audit_verify.verify(url, keys)
    assert r.verdict is Verdict.OK, r.problems
    assert r.unsigned_tail == 0 and r.cosignatures >= 1  # the hub cosigned tax's checkpoint
    tax = fed.runtime("tax")
    with tax.engine.connect() as c:
        peers = [p for p in c.execute(select(audit_cosignatures.c.peer)).scalars()]
    assert "hub" in peers  # tax cosigned the hub's final checkpoint
    # And tax's log, handed over as the hub's peer, vouches for the hub's log.
    r = audit_verify.verify(url, keys, peers=[tax.config.store_url()])
    assert r.verdict is Verdict.OK and r.witnessed >= 1, r.problems


def test_notices_detect_and_push_from_the_cli_leave_nothing_unsigned(tmp_path, monkeypatch):
    """The issue's case: `notices detect` / `push` from the CLI wrote entries that stayed
    unsigned until the node ran again. Now each command signs before it exits, and the push's
    receiver (the hub) cosigns the department's final checkpoint."""
    from hedui.keys.keyfile import PASSPHRASE_ENV
    from hedui.node.audit.note import Verifier, Verifiers
    from hedui.node.audit.recorder import origin_of
    from hedui.node.audit.tables import audit_cosignatures
    from hedui.node.cli._app import app
    from hedui.node.runtime import Runtime
    from hedui.node.testbed import MemberPlan, Testbed
    from hedui.node.testbed.discovery import SCENARIO_AS_OF

    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("fire", "fire", ["provider"])], residents=20).create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.start(["hub"])
    try:
        runner = CliRunner()
        fire = str(tb.config_path("fire"))
        assert runner.invoke(app, ["notices", "detect", "--config", fire, "--as-of", SCENARIO_AS_OF.isoformat()]).exit_code == 0
        r = runner.invoke(app, ["notices", "push", "--config", fire, "--json"])
        assert r.exit_code == 0, r.output
        rt = Runtime.open(tb.config_path("fire"))
        url, d = rt.config.store_url(), rt.directory
        rt.close()
        keys = Verifiers([Verifier(origin_of(d.msg.federation, m.code), bytes(m.signing_key)) for m in d.msg.members])
        rep = audit_verify.verify(url, keys)
        assert rep.verdict is Verdict.OK and rep.unsigned_tail == 0 and rep.entries > 0, rep.problems
        hub = tb.runtime("hub")
        with hub.engine.connect() as c:
            assert "fire" in set(c.execute(select(audit_cosignatures.c.peer)).scalars())
        rep = audit_verify.verify(url, keys, peers=[hub.config.store_url()])
        assert rep.verdict is Verdict.OK and rep.witnessed >= 1, rep.problems
    finally:
        tb.stop()
