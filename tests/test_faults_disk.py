"""Fault suite, a full disk (issue 13 "Done when"): the hub's ``hedui case run`` and
``hedui audit export`` run in a subprocess whose file size limit (RLIMIT_FSIZE, SIGXFSZ
ignored, so a write past it fails with EFBIG as on a full disk) stops them at two points —
the first write, and late in the run. Asserted: one line of error and exit 1 (never a
traceback, never the case's own exit code as if all were well), nothing half-written (each
stored answer whole, no partial export file), and once there is room again the same case
completes with one answer per department and the log verifies OK.

SQLite only: a PostgreSQL server's disk is the server's, not the process's."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from hedui.adapters.synthetic import resident
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.entry import Kind
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Signer, Verifier, Verifiers
from hedui.node.audit.recorder import origin_of
from hedui.node.audit.verdict import Verdict
from hedui.node.runtime import Runtime
from hedui.node.store import migrate
from hedui.node.store.db import open_engine, sqlite_url
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.hub_tables import case_answers

SEED = 5
T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
HEDUI = [sys.executable, "-m", "hedui.node.cli"]


def _limited(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    members = [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"]), MemberPlan("hrss", "hrss", ["provider"])]
    tb = Testbed(tmp_path_factory.mktemp("disk") / "fed", members, residents=30, data_seed=SEED)
    tb.create()
    mp = pytest.MonkeyPatch()
    mp.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.build_indexes()
    tb.start(["tax", "hrss"])
    yield tb
    tb.stop()
    mp.undo()


# The WAL index (node.db-shm) takes 32 KiB: just above it the run's first write fails; at 64 KiB
# the exchanges fit and signing the final checkpoint does not.
@pytest.mark.parametrize("limit", [36 * 1024, 64 * 1024])
def test_case_run_on_a_full_disk_fails_in_one_line_and_leaves_nothing_half_written(bed, limit):
    rt = Runtime.open(bed.config_path("hub"))
    try:
        ref = open_case(rt, [(resident(n, SEED).id_number, "m") for n in (1, 2)], purpose="dibao",
                        consent_digest=consent_digest_of(b"auth"), operator="cw", region="370304")
    finally:
        rt.close()
    p = subprocess.run([*HEDUI, "case", "run", ref, "--config", str(bed.config_path("hub")), "--json"],
                       capture_output=True, text=True, preexec_fn=_limited(limit), env={**os.environ, **bed.env()},
                       timeout=180)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    line = _one_error_line(p.stderr)
    assert "could not write" in line or "could not sign the final checkpoint" in line, line
    rt = Runtime.open(bed.config_path("hub"))
    try:
        with rt.engine.connect() as c:
            rows = c.execute(select(case_answers.c.provider, case_answers.c.status, case_answers.c.envelope)
                             .where(case_answers.c.case_ref == ref)).all()
        # What was stored is whole: an "ok" row carries its signed answer.
        assert all(r.status != "ok" or r.envelope for r in rows)
        res = run_case(rt, ref)
        assert res.complete, res.outcomes
        with rt.engine.connect() as c:
            got = sorted(c.execute(select(case_answers.c.provider).where(case_answers.c.case_ref == ref)).scalars())
        assert got == ["hrss", "tax"]
        url, d = rt.config.store_url(), rt.directory
    finally:
        rt.close()
    keys = Verifiers([Verifier(origin_of(d.msg.federation, m.code), bytes(m.signing_key)) for m in d.msg.members])
    r = audit_verify.verify(url, keys)
    assert r.verdict is Verdict.OK, r.problems


def test_audit_export_on_a_full_disk_leaves_no_file(tmp_path):
    signer = Signer.generate("hedui.test/tax")
    url = sqlite_url(tmp_path / "node.db")
    eng = open_engine(url)
    migrate.upgrade(eng)
    log = AuditLog(eng, "hedui.test/tax", signer, clock=lambda: T0)
    log.append_many((Kind.ADMIN, {"action": f"a{i}", "operator": "op"}) for i in range(1500))
    log.checkpoint()
    log.close()
    eng.dispose()
    out = tmp_path / "tax.ndjson"
    p = subprocess.run([*HEDUI, "audit", "export", "--db", url, "--out", str(out)], capture_output=True, text=True,
                       preexec_fn=_limited(64 * 1024), timeout=120)
    assert p.returncode != 0
    line = _one_error_line(p.stderr)
    assert "too large" in line.lower(), line
    assert not out.exists() and not (tmp_path / "tax.ndjson.part").exists()
    p = subprocess.run([*HEDUI, "audit", "export", "--db", url, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text(signer.vkey + "\n")
    p = subprocess.run([*HEDUI, "audit", "verify", "--file", str(out), "--key", str(keyfile)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
