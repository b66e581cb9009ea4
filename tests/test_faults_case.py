"""Fault suite, household verification (issue 13 "Done when"): kill -9 of the hub's process at
every phase of a case, and SIGSTOP of a department in the middle of one — real processes.

- kill -9: the hub runs the case in a child process (as ``hedui case run`` does) and is killed
  before the first call, after the pseudonyms came back, and after a department answered but
  before the hub stored it. Then the case runs again in a fresh process. Asserted: the case
  completes with one stored answer per department (nothing doubled), each answer equals what
  an uninterrupted case of the same household got (no false answer, nothing lost), and the
  hub's audit log verifies (nothing half-written).
- SIGSTOP: a department (``hedui node serve`` in its own process) is stopped between its
  pseudonym answer and the lookup. The case does not hang: the department is ``unavailable``
  after its deadline, nothing is stored as its answer, the report concludes nothing; after
  SIGCONT the case completes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

import pytest
from conftest import scratch_database
from sqlalchemy import select

from hedui.adapters.synthetic import resident
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.note import Verifier, Verifiers
from hedui.node.audit.recorder import origin_of
from hedui.node.audit.verdict import Verdict
from hedui.node.runtime import Runtime
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.hub_tables import case_answers
from hedui.node.verification.report import build_report

SEED = 7
MEMBERS = (1, 2, 3)

# The hub's process: runs the case and blocks at the named phase (every thread that reaches
# it blocks; the first says READY), to be killed there.
_CHILD = r"""
import sys, threading, time
from pathlib import Path
from hedui.node.runtime import Runtime
from hedui.node.verification import cases

config, ref, phase = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
said = threading.Lock()
calls = []
real = cases._call

def block():
    if said.acquire(blocking=False):
        print("READY", flush=True)
    time.sleep(600)

def hooked(fn, req, timeout, retries):
    calls.append(1)
    kind = type(req).__name__
    if phase == "before-evaluate" and kind == "EvaluateRequest":
        block()
    out = real(fn, req, timeout, retries)
    if phase == "after-evaluate" and kind == "EvaluateRequest":
        block()
    if phase == "after-lookup" and kind == "LookupRequest":
        block()   # the department answered (and committed its side); the hub has not stored it
    return out

cases._call = hooked
rt = Runtime.open(config)
cases.run_case(rt, ref, timeout=10, retries=0)
print("FINISHED", flush=True)
"""


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def bed(request, tmp_path_factory):
    """The hub's store on SQLite, or on PostgreSQL (a scratch database); departments on SQLite."""
    with contextlib.ExitStack() as stack:
        hub_url = "sqlite:///node.db"
        if request.param == "postgres":
            hub_url = stack.enter_context(scratch_database(request.getfixturevalue("pg_admin")))
        members = [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"]), MemberPlan("hrss", "hrss", ["provider"])]
        tb = Testbed(tmp_path_factory.mktemp("faults") / "fed", members, residents=40, data_seed=SEED,
                     store=lambda code: hub_url if code == "hub" else "sqlite:///node.db")
        tb.create()
        mp = pytest.MonkeyPatch()
        mp.setenv(PASSPHRASE_ENV, tb.passphrase)
        tb.build_indexes()
        tb.start(["tax", "hrss"])  # the hub is a short-lived process, as `hedui case run` is
        try:
            yield tb
        finally:
            tb.stop()
            mp.undo()


def _open(tb) -> str:
    rt = Runtime.open(tb.config_path("hub"))
    try:
        return open_case(rt, [(resident(n, SEED).id_number, "m") for n in MEMBERS], purpose="dibao",
                         consent_digest=consent_digest_of(b"auth"), operator="cw", region="370304")
    finally:
        rt.close()


def _answers(rt, ref: str) -> dict[str, list]:
    """Each department's stored answer cells: (member, field, state, value) — what the report reads."""
    rep = build_report(rt.engine, ref, rt.hub.rules, tz=rt.clock.zone)
    return {"fields": rep["fields"], "members": [[(i["item"], i["state"], i["value"]) for i in m["income"]]
                                                   for m in rep["members"]]}


def _strip(fields):
    """The answer table without what differs between two runs of the same household (evidence
    ids, signatures, times)."""
    keep = ("provider", "field", "member", "state", "value", "unit", "window", "as_of", "data_date")
    if isinstance(fields, list):
        return [_strip(f) for f in fields]
    if isinstance(fields, dict):
        return {k: _strip(v) for k, v in fields.items() if k in keep or not isinstance(v, (str, int, float))}
    return fields


def _kill_at(tb, ref: str, phase: str) -> None:
    p = subprocess.Popen([sys.executable, "-c", _CHILD, str(tb.config_path("hub")), ref, phase],
                         stdout=subprocess.PIPE, env={**os.environ, **tb.env()})
    try:
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(p.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(120)  # a safety net for a hung child, not a timing assertion
        assert line and line[0].strip() == b"READY", (line, p.poll())
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    assert p.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def control(bed):
    """The same household, verified without interruption."""
    ref = _open(bed)
    rt = Runtime.open(bed.config_path("hub"))
    try:
        assert run_case(rt, ref).complete
        got = _answers(rt, ref)
        # Something to compare: answers from both departments, some with a value.
        assert {f["provider"] for f in got["fields"]} == {"tax", "hrss"} and any(f["value"] for f in got["fields"])
        return got
    finally:
        rt.close()


@pytest.mark.parametrize("phase", ["before-evaluate", "after-evaluate", "after-lookup"])
def test_kill_9_of_the_hub_mid_case_then_the_case_completes_truthfully(bed, control, phase):
    ref = _open(bed)
    _kill_at(bed, ref, phase)
    rt = Runtime.open(bed.config_path("hub"))
    try:
        with rt.engine.connect() as c:
            stored = c.execute(select(case_answers.c.provider, case_answers.c.status).where(case_answers.c.case_ref == ref)).all()
        # Killed before anything was stored: nothing, or nothing but whole rows.
        assert all(s == "ok" for _, s in stored) and len(stored) <= 2
        res = run_case(rt, ref)
        assert res.complete and {o.provider for o in res.outcomes} | {p for p, _ in stored} == {"tax", "hrss"}
        with rt.engine.connect() as c:
            rows = c.execute(select(case_answers.c.provider).where(case_answers.c.case_ref == ref)).scalars().all()
        assert sorted(rows) == ["hrss", "tax"]  # one answer per department: nothing doubled
        got = _answers(rt, ref)
        assert got["members"] == control["members"]
        assert _strip(got["fields"]) == _strip(control["fields"])
        url, d = rt.config.store_url(), rt.directory
    finally:
        rt.close()
    # The killed process's entries are whole, and this process signed before it closed: the
    # hub's log verifies OK (never TAMPERED, TRUNCATED or an unsigned tail).
    keys = Verifiers([Verifier(origin_of(d.msg.federation, m.code), bytes(m.signing_key)) for m in d.msg.members])
    rep = audit_verify.verify(url, keys)
    assert rep.verdict is Verdict.OK, rep.problems


# -- SIGSTOP of a department ------------------------------------------------------------------------

def _serve(tb: Testbed, code: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "hedui.node.cli", "node", "serve", "--config", str(tb.config_path(code))],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **tb.env()}, text=True)
    line = p.stdout.readline() if p.stdout else ""
    assert "serving on" in line, line
    return p


def test_sigstop_of_a_department_mid_case_is_unavailable_not_a_hang_nor_an_answer(bed):
    from hedui.node.verification import cases

    bed.stop(["tax"])
    tax = _serve(bed, "tax")  # same config, same port: now a process that can be stopped
    ref = _open(bed)
    rt = Runtime.open(bed.config_path("hub"))
    real, real_ask = cases._call, cases._ask_provider
    stopped = threading.Event()
    asking = threading.local()

    def ask(rt_, m, *rest):
        asking.code = m.code  # which department this worker thread is asking
        return real_ask(rt_, m, *rest)

    def stop_before_lookup(fn, req, timeout, retries):
        # Between the department's pseudonym answer and its lookup: the middle of the case.
        if type(req).__name__ == "LookupRequest" and getattr(asking, "code", "") == "tax" and not stopped.is_set():
            os.kill(tax.pid, signal.SIGSTOP)
            stopped.set()
        return real(fn, req, timeout, retries)

    try:
        rt.peers.reset("tax")
        cases._call, cases._ask_provider = stop_before_lookup, ask
        try:
            res = run_case(rt, ref, timeout=1.5, retries=1)
        finally:
            cases._call, cases._ask_provider = real, real_ask
        st = {o.provider: o for o in res.outcomes}
        if not stopped.is_set():
            pytest.fail("the hook did not see tax's lookup (the case asked tax nothing?)")
        assert st["tax"].status == "unavailable" and "DEADLINE_EXCEEDED" in st["tax"].reason, st["tax"]
        assert st["hrss"].status == "ok"
        with rt.engine.connect() as c:
            rows = dict(c.execute(select(case_answers.c.provider, case_answers.c.status).where(case_answers.c.case_ref == ref)).all())
        assert rows.get("tax") != "ok"  # no answer stored for the stopped department
        rep = build_report(rt.engine, ref, rt.hub.rules, tz=rt.clock.zone)
        assert not rep["complete"] and rep["income"]["total"] is None
        os.kill(tax.pid, signal.SIGCONT)
        res = run_case(rt, ref, timeout=10, retries=2)
        assert [o.provider for o in res.outcomes] == ["tax"] and res.complete
    finally:
        rt.close()
        if tax.poll() is None:
            os.kill(tax.pid, signal.SIGCONT)
            tax.terminate()
            try:
                tax.wait(30)
            except subprocess.TimeoutExpired:
                tax.kill()
                tax.wait(30)
        bed.start(["tax"])
