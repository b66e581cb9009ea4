"""Scale-out on PostgreSQL (issue 16 item 6), end to end: a local primary and streaming
replica (node/testbed/pgpair.py), two ``hedui node serve`` processes of one department (hrss)
sharing the primary, listed in the directory as one member with a replica endpoint, and a
hub that balances its calls over both (gRPC round_robin). One node replica is killed with
SIGKILL while cases run. Expectations, in straight SQL where possible (tests/oracle style):

- every case ends with hrss answered and every wage figure equal to the department's own
  table (nothing wrong);
- every answer the hub holds is in the department's store: its request id in the replay
  cache with both audit entries (nothing lost);
- the quota counted each stored exchange once, the shared audit log of both writers
  verifies as one consistent Merkle tree;
- lookups were served by both node replicas, and read the index from the streaming replica.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, select, text

from hedui.adapters.synthetic import resident
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit import verdict as audit_verdict
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.note import Verifier, Verifiers
from hedui.node.audit.recorder import origin_of
from hedui.node.cli.node import check_read_replica
from hedui.node.procs import exec_dies_with_parent
from hedui.node.store.tables import quota_counters
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.testbed import pgpair as pgcluster
from hedui.node.testbed.federation import free_port
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.hub_tables import case_answers
from hedui.node.verification.report import build_report
from hedui.node.verification.rules import default_rules

pytestmark = [pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.skipif(pgcluster.pg_bin() is None, reason="no PostgreSQL server binaries")]

SEED = 11
CASES = 24


def _serve(cfg, env) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "hedui.node.cli", "node", "serve", "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=(cfg.parent / f"{cfg.stem}.err").open("w"), text=True, env=env,
                         preexec_fn=exec_dies_with_parent)  # dies with this process (node/procs.py)
    line = p.stdout.readline()
    assert "serving on" in line, line
    return p


def _metric(port: int, name: str, **labels: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _expected_wages(tb, identity: str, today: dt.date) -> Decimal | None:
    """Straight SQL over the department's own table (as tests/test_case_e2e.py)."""
    eng = create_engine(f"sqlite:///{tb.member_dir('hrss') / 'dept.db'}")
    y, m = divmod(today.year * 12 + today.month - 1 - 13, 12)
    start = dt.date(y, m + 1, 1).isoformat()
    first_of_ref = (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    end = (first_of_ref - dt.timedelta(days=1)).isoformat()
    try:
        with eng.connect() as c:
            person = c.execute(text("SELECT id FROM ss_person WHERE id_number = :i"), {"i": identity}).scalar()
            if person is None:
                return None
            fen = c.execute(text("SELECT COALESCE(SUM(wage_fen), 0) FROM ss_monthly WHERE person_id = :p "
                                 "AND month >= :s AND month <= :t"), {"p": person, "s": start, "t": end}).scalar()
    finally:
        eng.dispose()
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


@pytest.fixture(scope="module")
def pair():
    with pgcluster.primary_and_replica() as p:
        yield p


def test_two_node_replicas_one_killed_mid_load_lose_nothing_and_answer_right(tmp_path, pair):
    port_b, metrics_a, metrics_b = free_port(), free_port(), free_port()
    hrss = MemberPlan("hrss", "hrss", ["provider"],
                      extra_spec={"replica_endpoints": [f"127.0.0.1:{port_b}"]},
                      extra_config={"store": {"read_database_url": pair.replica_url, "index_partitions": 4},
                                    "metrics": {"listen": f"127.0.0.1:{metrics_a}"}})
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), hrss], residents=120, data_seed=SEED,
                 store=lambda code: pair.primary_url if code == "hrss" else "sqlite:///node.db")
    tb.create()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    env = {**os.environ, PASSPHRASE_ENV: tb.passphrase, "PYTHONUNBUFFERED": "1"}
    tb.build_indexes()
    pair.wait_replayed()
    cfg_a = tb.config_path("hrss")
    cfg_b = cfg_a.with_name("node-b.toml")
    cfg_b.write_text(cfg_a.read_text().replace(f"127.0.0.1:{hrss.port}", f"127.0.0.1:{port_b}")
                     .replace(f"127.0.0.1:{metrics_a}", f"127.0.0.1:{metrics_b}"))
    procs = [_serve(cfg_a, env), _serve(cfg_b, env)]
    try:
        tb.start(["hub"])
        hub = tb.runtime("hub")
        standby = SimpleNamespace(read_engine=create_engine(pair.replica_url))
        assert check_read_replica(standby) == []            # `hedui node check` accepts the standby
        standby.read_engine.dispose()
        assert list(hub.directory.member("hrss").replica_endpoints) == [f"127.0.0.1:{port_b}"]
        households = [[1 + 3 * i, 2 + 3 * i, 3 + 3 * i] for i in range(CASES)]
        refs = [open_case(hub, [(resident(n, SEED).id_number, "member") for n in h], purpose="dibao",
                          consent_digest=consent_digest_of(b"signed authorisation %d" % h[0]), operator="cw01", region="370304")
                for h in households]
        done = Counter()
        killed = threading.Event()

        def one(ref: str) -> str:
            o = {o.provider: o for o in run_case(hub, ref, timeout=5, retries=3).outcomes}["hrss"]
            done[o.status] += 1
            return o.status

        served_a = 0.0
        with ThreadPoolExecutor(max_workers=4) as pool:
            futs = [pool.submit(one, r) for r in refs]
            while sum(done.values()) < CASES // 3:
                time.sleep(0.05)
            served_a = _metric(metrics_a, "hedui_rpc_total", method="/hedui.v1.LookupService/Lookup")
            procs[0].send_signal(signal.SIGKILL)          # replica A dies mid-load
            killed.set()
            statuses = [f.result() for f in futs]
        # A case whose answer was lost in the kill is re-run (as an operator would): it then
        # completes, from replica B.
        reruns = [r for r, s in zip(refs, statuses) if s != "ok"]
        for ref in reruns:
            assert {o.provider: o.status for o in run_case(hub, ref, timeout=5, retries=3).outcomes}["hrss"] == "ok"
        served_b = _metric(metrics_b, "hedui_rpc_total", method="/hedui.v1.LookupService/Lookup")
        assert served_a > 0 and served_b > 0, (served_a, served_b)        # round_robin used both
        assert _metric(metrics_b, "hedui_index_reads_total", store="replica") > 0   # reads on the standby

        # Nothing wrong: every figure equals the department's own data.
        today = hub.clock.today()
        for ref, h in zip(refs, households):
            rep = build_report(hub.engine, ref, default_rules())
            for pos, n in enumerate(h):
                want = _expected_wages(tb, resident(n, SEED).id_number, today)
                got = [f for f in rep["fields"] if f["member"] == pos and f["field"] == "wages_12m"]
                assert len(got) == 1, (ref, pos)
                if want is None:
                    assert got[0]["found"] is False
                else:
                    assert Decimal(got[0]["value"]) == want, (ref, pos)

        # Nothing lost: every answer the hub holds is stored whole at the department.
        with hub.engine.connect() as c:
            held = {bytes(r).hex() for r in c.execute(select(case_answers.c.request_id).where(
                case_answers.c.provider == "hrss", case_answers.c.status == "ok")).scalars()}
        assert len(held) == CASES
        prim = create_engine(pair.primary_url)
        try:
            with prim.connect() as c:
                seen = {bytes(r[0]).hex() for r in c.execute(text(
                    "SELECT request_id FROM seen_requests WHERE method LIKE '%Lookup'"))}
                kinds = Counter((r[0], r[1]) for r in c.execute(text("SELECT request_id, kind FROM audit_entries")))
                quota = c.execute(select(quota_counters.c.count).where(
                    quota_counters.c.window == "d", quota_counters.c.method.like("%Lookup"))).scalars().all()
            assert held <= seen
            for rid in seen:
                assert kinds[(rid, "query.received")] == 1 and kinds[(rid, "answer.sent")] >= 1, rid
            assert sum(quota) == len(seen), "the quota must count each stored exchange exactly once"
            # One log, two writers: one consistent tree. Replica B signs a last checkpoint
            # over all of it when it stops; the whole log is then re-derived and checked.
            procs[1].send_signal(signal.SIGTERM)
            assert procs[1].wait(timeout=30) == 0
            with prim.connect() as c:
                size, signed = c.execute(text("SELECT (SELECT size FROM audit_head), max(size) FROM audit_checkpoints")).one()
            assert size == signed == sum(kinds.values())
            d = hub.directory
            keys = Verifiers([Verifier(origin_of(d.msg.federation, m.code), bytes(m.checkpoint_key or m.signing_key))
                              for m in d.msg.members])
            rep = audit_verify.verify(pair.primary_url, keys)
            assert rep.verdict is audit_verdict.Verdict.OK, rep.to_dict()
        finally:
            prim.dispose()
        assert killed.is_set()
    finally:
        tb.stop()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
