"""Fault suite, discovery notices (issue 13 "Done when"): kill -9 of the **hub** at each phase of
receiving a push — inside the transaction that accepts the notice, and after it committed but
before the receipt went back. (The department's side — killed mid-transaction, after the
commit, and after the hub accepted but before the receipt was stored — is
tests/test_notices_e2e.py::test_kill_9_of_the_provider_loses_nothing_and_delivers_exactly_once.)

The hub is ``hedui node serve`` in a child process, blocked at the phase by a hook and killed
there; the department pushes from this process. Asserted after the hub is back: every notice
delivered exactly once (the hub's inbox holds each notice once, one lead event each, one
``notice.received`` with outcome ``ok`` each), a notice the hub had committed is answered as a
duplicate, never accepted twice, and the department's outbox shows every notice delivered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from conftest import scratch_database
from sqlalchemy import func, select
from test_notices_e2e import Clock, _make, _outbox

from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit.tables import audit_entries
from hedui.node.discovery import tables as t
from hedui.node.discovery.provider import ProviderNotices
from hedui.node.runtime import Runtime
from hedui.node.testbed.discovery import SCENARIO_AS_OF

# The hub's process: `hedui node serve`, with the hook that blocks (and says READY) at the phase.
_HUB = r"""
import sys, threading, time
from hedui.node.discovery.hub import Hub
from hedui.node.audit.recorder import NodeAudit

config, phase = sys.argv[1], sys.argv[2]
said = threading.Lock()

def block():
    if said.acquire(blocking=False):
        print("READY", flush=True)
    time.sleep(600)

if phase == "in-transaction":
    accept = Hub.accept_notices   # PushBatch and Push both take notices through it
    def accept_then_block(self, *a, **k):
        out = accept(self, *a, **k)   # inbox row, lead, referral, receipt written; not committed
        block()
        return out
    Hub.accept_notices = accept_then_block
else:  # after-commit: the notice and its entries are committed, the receipt not yet sent
    offer = NodeAudit.offer_peer_checkpoint
    def offer_then_block(self, *a, **k):
        block()
        return offer(self, *a, **k)
    NodeAudit.offer_peer_checkpoint = offer_then_block

from hedui.node.cli._app import app
sys.argv = ["hedui", "node", "serve", "--config", config]
app()
"""


def _hub_counts(rt) -> tuple[list[bytes], int, list[str]]:
    with rt.engine.connect() as c:
        inbox = sorted(bytes(x) for x in c.execute(select(t.notice_inbox.c.notice_id)).scalars())
        leads = c.execute(select(func.count()).select_from(t.lead_events)).scalar_one()
        entries = [json.loads(bytes(e)) for e in c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == "notice.received")).scalars()]
    return inbox, leads, [e["fields"]["outcome"] for e in entries]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub_store(request):
    """The hub's store URL: SQLite (the default file) or a scratch PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite:///node.db"
        return
    with scratch_database(request.getfixturevalue("pg_admin")) as url:
        yield url


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["in-transaction", "after-commit"])
def test_kill_9_of_the_hub_mid_push_delivers_each_notice_exactly_once(tmp_path, monkeypatch, phase, hub_store):
    tb = _make(tmp_path / "fed", store=lambda code: hub_store if code == "hub" else "sqlite:///node.db").create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    hub = subprocess.Popen([sys.executable, "-c", _HUB, str(tb.config_path("hub")), phase],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **tb.env()}, text=True)
    rt = pn = None
    try:
        assert hub.stdout is not None and "serving on" in hub.stdout.readline()
        rt = Runtime.open(tb.config_path("fire"))
        clock = Clock()
        pn = ProviderNotices(rt, clock=clock, timeout=5)
        assert pn.run(SCENARIO_AS_OF).queued == 2
        pushed: list = []
        pusher = threading.Thread(target=lambda: pushed.append(pn.push()))
        pusher.start()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(hub.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(120)  # a safety net for a hung child, not a timing assertion
        assert line and line[0].strip() == "READY", (line, hub.poll())
        os.kill(hub.pid, signal.SIGKILL)
        hub.wait(30)
        pusher.join(120)
        assert hub.returncode == -signal.SIGKILL
        assert pushed and pushed[0].delivered == 0 and pushed[0].failed >= 1  # no receipt: still queued

        tb.start(["hub"])  # the same store and port
        clock.advance(300)  # past the backoff and the pusher's lease
        stats = pn.push(retry_now=True)
        assert stats.failed == 0 and stats.delivered + stats.duplicates >= 1
        assert all(r.status == "delivered" for r in _outbox(rt))
        ids = sorted(bytes(r.notice_id) for r in _outbox(rt))
        assert len(ids) == 2
        inbox, leads, outcomes = _hub_counts(tb.runtime("hub"))
        assert inbox == ids and leads == 2  # nothing lost, nothing doubled
        assert outcomes.count("ok") == 2
        # A notice the killed hub had committed comes back as a duplicate, never accepted again:
        # both, since they travelled in one PushBatch that the hub committed whole (issue 16).
        assert outcomes.count("duplicate") == (2 if phase == "after-commit" else 0)
    finally:
        if pn is not None:
            pn.close()
        if rt is not None:
            rt.close()
        if hub.poll() is None:
            hub.kill()
            hub.wait(30)
        tb.stop()
