"""A node of several processes (``[node] worker_processes``, node/front/): a front that ends
TLS, admits or refuses each call, and passes the admitted ones to worker processes over unix
sockets. End to end through real ``hedui node serve`` processes: the answers are the
one-process node's, caller identity is still the TLS certificate (a TCP caller cannot inject
the front's identity metadata), a call beyond the cap is refused RESOURCE_EXHAUSTED and
audited, a killed worker fails its call UNAVAILABLE and is restarted, and the front's exit
takes its workers with it; the ops port shows every worker's metrics."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select, text

from hedui.adapters.synthetic import resident
from hedui.common.periods import Month
from hedui.keys import oprf
from hedui.keys.directory import ROLE_ANSWERS
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit import verdict as audit_verdict
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.note import Verifier, Verifiers
from hedui.node.audit.recorder import origin_of
from hedui.node.audit.tables import audit_entries
from hedui.node.client import PeerClient
from hedui.node.config import load_config
from hedui.node.errors import ConfigError
from hedui.node.front.proxy import WorkerSlot, socket_folder
from hedui.node.peer import FORWARDED_CERT
from hedui.node.runtime import Runtime
from hedui.node.testbed import MemberPlan, Testbed, default_policy
from hedui.node.testbed.ports import free_port
from hedui.node.testbed.procs import NodeProcess, serve_command
from hedui.node.verification import consent
from hedui.v1 import common_pb2, lookup_pb2, node_pb2, pseudonym_pb2

SEED = 7


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    root = tmp_path_factory.mktemp("front")
    tb = Testbed(root / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"]),
                                MemberPlan("fire", "fire", ["provider"])], residents=30, data_seed=SEED)
    tb.create()
    tb.policy = [dict(r, per_minute=0, per_day=0) for r in default_policy(tb.members)]
    tb.sign_directory()
    old = os.environ.get(PASSPHRASE_ENV)
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes(["tax"])
    hub = Runtime.open(tb.config_path("hub"))
    fire = Runtime.open(tb.config_path("fire"))
    yield tb, hub, fire
    hub.close()
    fire.close()
    if old is None:
        os.environ.pop(PASSPHRASE_ENV, None)
    else:
        os.environ[PASSPHRASE_ENV] = old


def _set_node(tb: Testbed, code: str, **values: int) -> Path:
    cfg = tb.config_path(code)
    lines = [ln for ln in cfg.read_text().splitlines() if ln.split(" = ")[0] not in values]
    at = lines.index("[node]") + 1
    lines[at:at] = [f"{k} = {v}" for k, v in values.items()]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _serve(tb: Testbed, tmp: Path, workers: int, cap: int = 8) -> NodeProcess:
    cfg = _set_node(tb, "tax", worker_processes=workers, max_concurrent_rpcs=cap)
    return NodeProcess(cfg, tb.env(), log=tmp / f"tax-{workers}.log")   # started by `with`, or .start()


def _children(pid: int, *, every: bool = False) -> set[int]:
    """The worker processes of the front ``pid`` (``every``: with multiprocessing's resource
    tracker)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out |= {int(x) for x in (task / "children").read_text().split()}
        except FileNotFoundError:   # a thread that ended meanwhile
            continue
    return out if every else {c for c in out if b"spawn_main" in _cmdline(c)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait(pred, what: str, bound: float = 60.0) -> None:
    """A safety net for something that happens in another process, not a timing assertion."""
    end = time.monotonic() + bound
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {bound} s")
        time.sleep(0.05)


def _unread(pid: int) -> int:
    """Bytes waiting unread on the unix sockets of process ``pid`` (``ss``'s Recv-Q): a
    stopped worker's, once the front has passed it a call."""
    out = subprocess.run(["ss", "-x", "-p", "-H"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[2]) for line in out.splitlines() if f"pid={pid}," in line)


def _replacement(front: int, gone: set[int]) -> int:
    """The worker process the front started in place of the killed ``gone``, as soon as it
    exists (before it opened the node and could tell the front it is ready)."""
    new: set[int] = set()

    def started() -> bool:
        new.update(_children(front) - gone)
        return bool(new)

    _wait(started, "the front starts a worker again")
    (pid,) = new
    return pid


def _worker_index(pid: int, folder: Path) -> int:
    """Which worker ``pid`` is: the index of the unix socket it listens on (``w<i>.sock``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[6] in inodes and Path(parts[7]).parent == folder:
            return int(Path(parts[7]).stem[1:])
    raise AssertionError(f"process {pid} listens on no socket in {folder}")


def _one_refused(c: PeerClient) -> tuple:
    """Two Pings at once to a front of cap 1 whose workers are stopped: the one it admits
    first stays held in a worker, the other is refused at once. Which arrives first is the
    front's threads' choice, so both are sent and the one that ends is the refused one.
    Returns the held call and the refusal."""
    calls = [c.node.Ping.future(node_pb2.PingRequest(), timeout=60) for _ in range(2)]
    _wait(lambda: any(f.done() for f in calls), "one of two calls over the cap is refused")
    (refused,) = [f for f in calls if f.done()]
    (held,) = [f for f in calls if f is not refused]
    err = refused.exception()
    assert isinstance(err, grpc.RpcError), err
    return held, err


def _blinded():
    return oprf.blind([resident(i, SEED).id_number for i in (1, 2, 3)])


def _evaluate(c: PeerClient, state, **kw):
    return c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(
        context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="FRONT-1", request_id=os.urandom(16)),
        epoch=1, blinded_elements=state.blinded), timeout=30, **kw)


def _lookup_request(hub: Runtime, tokens: list[bytes]) -> lookup_pb2.LookupRequest:
    ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="FRONT-1", consent_digest=os.urandom(32),
                                    request_id=os.urandom(16), operator="test")
    ctx.consent.CopyFrom(consent.issue_for_context(hub.signer_for(ROLE_ANSWERS), hub.member, ctx, members=len(tokens),
                                                   issued_at=hub.clock.now()))
    return lookup_pb2.LookupRequest(context=ctx, epoch=1, tokens=tokens, queries=[lookup_pb2.FieldQuery(field="income_last_year")],
                                    reference_month=str(Month.of(hub.clock.today()).plus(-1)))


def _answers(tb: Testbed, hub: Runtime) -> tuple[list[bytes], list[bytes]]:
    """What the node answers: the tokens one Evaluate yields (the blinding differs per call,
    the tokens do not), and each member's answer (fields, values, dates) of one Lookup."""
    state = _blinded()
    with PeerClient.to_member(hub, "tax") as c:
        ev = _evaluate(c, state)
        tokens = oprf.finalize(state, list(ev.evaluated_elements), ev.proof, bytes(hub.directory.member("tax").oprf_keys[0].public_key))
        resp = c.lookup.Lookup(_lookup_request(hub, tokens), timeout=30)
    answer = lookup_pb2.LookupAnswer()
    answer.ParseFromString(resp.answer.payload)
    assert answer.provider == "tax"
    return tokens, [m.SerializeToString(deterministic=True) for m in answer.members]


def test_front_answers_as_the_one_process_node(bed, tmp_path):
    tb, hub, _ = bed
    with _serve(tb, tmp_path, 0):
        one = _answers(tb, hub)
    with _serve(tb, tmp_path, 1) as node:
        assert len(_children(node.pid)) >= 1   # a front and its worker
        front = _answers(tb, hub)
    assert front == one
    assert any(front[1])   # records were answered, not only "no record"


def test_caller_identity_is_the_tls_certificate_not_metadata(bed, tmp_path):
    tb, hub, fire = bed
    with _serve(tb, tmp_path, 1), PeerClient.to_member(fire, "tax") as c:
        # fire may not ask tax for pseudonyms: refused by the worker's policy, as by one process.
        with pytest.raises(grpc.RpcError) as e:
            _evaluate(c, _blinded())
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Claiming the hub's certificate in the front's identity metadata changes nothing.
        with pytest.raises(grpc.RpcError) as e2:
            _evaluate(c, _blinded(), metadata=((FORWARDED_CERT, hub.tls_cert_pem),))
        assert e2.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert e2.value.details() == e.value.details()
        # And the hub itself is answered.
        with PeerClient.to_member(hub, "tax") as h:
            assert len(_evaluate(h, _blinded()).evaluated_elements) == 3


def test_beyond_the_cap_the_front_refuses_resource_exhausted_and_it_is_audited(bed, tmp_path):
    tb, hub, _ = bed
    with _serve(tb, tmp_path, 1, cap=1) as node, PeerClient.to_member(hub, "tax") as c:
        c.node.Ping(node_pb2.PingRequest(), timeout=30)
        (worker,) = _children(node.pid)
        os.kill(worker, signal.SIGSTOP)   # the admitted call stays in the worker: its slot stays held
        try:
            held, e = _one_refused(c)
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert e.details().startswith("OVERLOADED")
        finally:
            os.kill(worker, signal.SIGCONT)
        held.result()
        c.node.Ping(node_pb2.PingRequest(), timeout=30)   # the slot is free again
    # The front handed its refusal to the worker, which audited it before it stopped.
    eng = create_engine(load_config(tb.config_path("tax")).store_url())
    with eng.connect() as conn:
        rows = [json.loads(bytes(e))["fields"] for e in conn.execute(
            select(audit_entries.c.entry).where(audit_entries.c.kind == "refusal.aggregated")).scalars()]
    eng.dispose()
    assert any(r["cause"] == "overloaded" and r["peer"] == "hub" and r["count"] >= 1 for r in rows), rows


def test_a_killed_worker_fails_its_call_unavailable_and_is_started_again(bed, tmp_path):
    tb, hub, _ = bed
    with _serve(tb, tmp_path, 1) as node, PeerClient.to_member(hub, "tax") as c:
        c.node.Ping(node_pb2.PingRequest(), timeout=30)
        (worker,) = _children(node.pid)
        os.kill(worker, signal.SIGSTOP)
        call = c.node.Ping.future(node_pb2.PingRequest(), timeout=60)
        # Killed only once the call is in the worker (else it may reach the replacement).
        _wait(lambda: _unread(worker) > 0, "the front passing the call to the stopped worker")
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(grpc.RpcError) as e:
            call.result()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # While no worker is up (its replacement held stopped before it could start), the
        # front itself refuses calls UNAVAILABLE.
        spare = _replacement(node.pid, {worker})
        os.kill(spare, signal.SIGSTOP)
        try:
            with pytest.raises(grpc.RpcError) as e:
                c.node.Ping(node_pb2.PingRequest(), timeout=30)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert e.value.details().startswith("UNAVAILABLE: node: no worker process is up"), e.value.details()
        finally:
            os.kill(spare, signal.SIGCONT)

        def recovered() -> bool:
            try:
                c.node.Ping(node_pb2.PingRequest(), timeout=5)
                return True
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                return False

        _wait(recovered, "a new worker answers")
        (again,) = _children(node.pid)
        assert again != worker
        assert node.alive()
        assert len(_evaluate(c, _blinded()).evaluated_elements) == 3   # audited by the new worker
    # The restarted worker stopped gracefully with its front: its last entries are signed.
    assert node.proc is not None and node.proc.returncode == 0
    eng = create_engine(load_config(tb.config_path("tax")).store_url())
    with eng.connect() as conn:
        size, signed = conn.execute(text("SELECT (SELECT size FROM audit_head), max(size) FROM audit_checkpoints")).one()
    eng.dispose()
    assert size == signed


def test_the_fronts_end_ends_its_workers(bed, tmp_path):
    tb, hub, _ = bed
    node = _serve(tb, tmp_path, 1).start()
    try:
        (worker,) = _children(node.pid)
        every = _children(node.pid, every=True)   # multiprocessing's resource tracker too
        assert worker in every
        os.kill(node.pid, signal.SIGKILL)   # the front alone, not its process group
        node.proc.wait()
        _wait(lambda: not any(_alive(p) for p in every), "the front's children end with it")
    finally:
        node.kill()
    # A graceful stop ends them too, and the front exits 0.
    node = _serve(tb, tmp_path, 1).start()
    (worker,) = _children(node.pid)
    os.kill(node.pid, signal.SIGTERM)
    assert node.proc.wait(120) == 0
    _wait(lambda: not _alive(worker), "the worker stops with its front")
    node.kill()


def test_a_front_killed_9_leaves_its_socket_folder_to_its_next_start(bed, tmp_path):
    """The workers' sockets live in a fixed 0700 folder of the node (next to its node.toml),
    held by a lock for the front's life: a second front of the same node does not start, and
    what a front killed with ``kill -9`` left is removed when the node starts again."""
    tb, hub, _ = bed
    folder = socket_folder(tb.config_path("tax"))
    node = _serve(tb, tmp_path, 1).start()
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and (folder / "w0.sock").exists()
        second = subprocess.run(serve_command(node.config), env=node.env, capture_output=True, timeout=120)
        assert second.returncode != 0 and b"another front" in second.stdout + second.stderr, second
        assert node.alive() and (folder / "w0.sock").exists()   # the running front keeps its folder
        every = _children(node.pid, every=True)
        os.kill(node.pid, signal.SIGKILL)
        node.proc.wait()
        _wait(lambda: not any(_alive(p) for p in every), "the front's children end with it")
    finally:
        node.kill()
    assert (folder / "w0.sock").exists()   # left behind by the killed front
    (folder / "w5.sock").touch()           # and whatever else was in it
    with _serve(tb, tmp_path, 1), PeerClient.to_member(hub, "tax") as c:
        c.node.Ping(node_pb2.PingRequest(), timeout=30)
        assert sorted(os.listdir(folder)) == ["front.lock", "w0.sock"]
    assert not folder.exists()   # a front that stops removes it


def test_several_workers_on_sqlite_are_a_config_error(bed):
    tb, _, _ = bed
    cfg = _set_node(tb, "tax", worker_processes=2)
    try:
        with pytest.raises(ConfigError, match="worker_processes"):
            load_config(cfg)
    finally:
        _set_node(tb, "tax", worker_processes=0)


@pytest.mark.postgres
def test_two_workers_on_postgresql_answer_alike_and_survive_one_killed(tmp_path, pg_url):
    """Two workers share one PostgreSQL store as node replicas do (audit log, quota, replay
    cache): the answers are the one-process node's, and with one worker killed the other
    keeps answering while the front starts the first again."""
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 residents=30, data_seed=SEED, store=lambda code: pg_url if code == "tax" else "sqlite:///node.db")
    tb.create()
    tb.policy = [dict(r, per_minute=0, per_day=0) for r in default_policy(tb.members)]
    tb.sign_directory()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes(["tax"])
    hub = Runtime.open(tb.config_path("hub"))
    try:
        with _serve(tb, tmp_path, 0):
            one = _answers(tb, hub)
        with _serve(tb, tmp_path, 2) as node:
            workers = _children(node.pid)
            assert len(workers) == 2
            assert [_answers(tb, hub) for _ in range(4)] == [one] * 4   # calls go to both workers in turn
            os.kill(min(workers), signal.SIGKILL)
            with PeerClient.to_member(hub, "tax") as c:
                oks = 0
                for _ in range(20):   # the survivor answers; a call routed to the dead one fails UNAVAILABLE
                    try:
                        c.node.Ping(node_pb2.PingRequest(), timeout=30)
                        oks += 1
                    except grpc.RpcError as err:
                        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                assert oks >= 1
            _wait(lambda: len(_children(node.pid)) == 2 and min(workers) not in _children(node.pid), "the killed worker is replaced")
            assert _answers(tb, hub) == one
        # One audit log, two writers and a kill: still one consistent tree, re-derived and checked.
        d = hub.directory
        keys = Verifiers([Verifier(origin_of(d.msg.federation, m.code), bytes(m.checkpoint_key or m.signing_key))
                          for m in d.msg.members])
        rep = audit_verify.verify(pg_url, keys)
        assert rep.verdict is audit_verdict.Verdict.OK, rep.to_dict()
    finally:
        hub.close()


def _filter(hub: Runtime) -> list:
    ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_BULK_CROSS_CHECK, case_ref="XC-2026-07",
                                    request_id=os.urandom(16))
    with PeerClient.to_member(hub, "tax") as c:
        stream = c.pseudonym.GetTokenFilter(pseudonym_pb2.GetTokenFilterRequest(context=ctx, epoch=1), timeout=30)
        assert iter(stream) is stream
        return list(stream)


def test_streaming_methods_pass_through_the_front(bed, tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    tb, hub, _ = bed
    with _serve(tb, tmp_path, 0):
        one = _filter(hub)
    with _serve(tb, tmp_path, 1):
        parts = _filter(hub)   # server streaming (GetTokenFilter)
        with PeerClient.to_member(hub, "tax") as c:
            health = health_pb2_grpc.HealthStub(c.channel)
            assert health.Check(health_pb2.HealthCheckRequest(service="hedui.v1.LookupService"),
                                timeout=30).status == health_pb2.HealthCheckResponse.SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
    assert len(parts) == len(one) > 1 and parts[0].total == one[0].total > 0


# -- the ops port of a node of several processes (node/front/ops.py) --------------------------

PING = "/hedui.v1.NodeService/Ping"


def _samples(port: int) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")]
    assert len(types) == len(set(types)), "one family per name, whichever processes it came from"
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _two_workers_on_pg_with_metrics(tmp_path, pg_url, cap: int):
    """A hub (SQLite) and a tax node of two workers on PostgreSQL with the call cap ``cap``,
    no quota, and its metrics on a free loopback port: (testbed, tax's node.toml, ops port)."""
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 residents=10, data_seed=7, store=lambda code: pg_url if code == "tax" else "sqlite:///node.db")
    tb.create()
    tb.policy = [dict(r, per_minute=0, per_day=0) for r in default_policy(tb.members)]
    tb.sign_directory()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    cfg = _set_node(tb, "tax", worker_processes=2, max_concurrent_rpcs=cap)
    ops = free_port()
    cfg.write_text(cfg.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{ops}"\n')
    return tb, cfg, ops


@pytest.mark.postgres
def test_the_scrape_of_a_two_worker_node_counts_every_workers_calls_and_the_fronts_refusals(tmp_path, pg_url):
    tb, cfg, ops = _two_workers_on_pg_with_metrics(tmp_path, pg_url, cap=1)
    hub = Runtime.open(tb.config_path("hub"))
    try:
        with NodeProcess(cfg, tb.env(), log=tmp_path / "tax.log") as node, PeerClient.to_member(hub, "tax") as c:
            calls = 9
            for _ in range(calls):   # one after the other: the front routes them to both workers in turn
                c.node.Ping(node_pb2.PingRequest(), timeout=30)
            # One refusal by the front: cap 1, one call held in a stopped worker.
            workers = _children(node.pid)
            assert len(workers) == 2
            for w in workers:
                os.kill(w, signal.SIGSTOP)
            try:
                held, e = _one_refused(c)
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            finally:
                for w in workers:
                    os.kill(w, signal.SIGCONT)
            held.result()

            got = _samples(ops)
            ok = {s.labels["worker"]: s.value for s in got
                  if s.name == "hedui_rpc_total" and s.labels["method"] == PING and s.labels["code"] == "OK"}
            assert set(ok) == {"0", "1"} and all(v >= 1 for v in ok.values()), ok   # both workers served
            assert sum(ok.values()) == calls + 1                                    # every call, the held one too
            busy = [s for s in got if s.name == "hedui_rpc_total" and s.labels["method"] == PING
                    and s.labels["code"] == "RESOURCE_EXHAUSTED"]
            assert [(s.labels["worker"], s.value) for s in busy] == [("front", 1.0)]
            shed = [(s.labels["worker"], s.labels["peer"], s.value) for s in got if s.name == "hedui_rpc_shed_total"]
            assert shed == [("front", "hub", 1.0)]
            served = sum(s.value for s in got if s.name == "hedui_rpc_outcomes_total" and s.labels["method"] == PING)
            assert served == calls + 2
            assert {s.labels["worker"]: s.value for s in got if s.name == "hedui_worker_up"} == {"0": 1.0, "1": 1.0}
            # The state read from the shared store is there once, without a worker label.
            version = [s for s in got if s.name == "hedui_directory_version"]
            assert len(version) == 1 and "worker" not in version[0].labels and version[0].value >= 1
            assert _get(ops, "/healthz")[0] == 200
            code, body = _get(ops, "/readyz")
            states = body["workers"]   # each worker answered; the node is ready when one is
            assert set(states) == {"0", "1"} and set(states.values()) <= {"ready", "not ready"}, body
            assert (code == 200) == ("ready" in states.values()) and "checks" in body
            assert _get(ops, "/nothing")[0] == 404
    finally:
        hub.close()


def _pings(got: list) -> dict[str, float]:
    """Each worker's count of Pings answered OK, in one scrape."""
    return {s.labels["worker"]: s.value for s in got
            if s.name == "hedui_rpc_total" and s.labels["method"] == PING and s.labels["code"] == "OK"}


def _up(got: list) -> dict[str, float]:
    return {s.labels["worker"]: s.value for s in got if s.name == "hedui_worker_up"}


@pytest.mark.postgres
def test_a_worker_killed_9_is_down_in_the_scrape_and_readyz_and_comes_back_with_its_counters_from_0(tmp_path, pg_url):
    """While a killed worker is being started again, the scrape shows it ``hedui_worker_up 0``
    (its series missing) and the other worker's figures as before, and ``/readyz`` names it;
    back, it is up 1 again and its counters start from 0 while the other's go on."""
    tb, cfg, ops = _two_workers_on_pg_with_metrics(tmp_path, pg_url, cap=8)
    hub = Runtime.open(tb.config_path("hub"))
    try:
        with NodeProcess(cfg, tb.env(), log=tmp_path / "tax.log") as node, PeerClient.to_member(hub, "tax") as c:
            for _ in range(10):   # one after the other: both workers serve
                c.node.Ping(node_pb2.PingRequest(), timeout=30)
            workers = _children(node.pid)
            assert len(workers) == 2
            victim = max(workers)
            dead = str(_worker_index(victim, socket_folder(cfg)))
            (other,) = {"0", "1"} - {dead}
            before = _pings(_samples(ops))
            assert set(before) == {"0", "1"} and sum(before.values()) == 10 and before[dead] >= 2, before

            os.kill(victim, signal.SIGKILL)
            spare = _replacement(node.pid, workers)
            os.kill(spare, signal.SIGSTOP)   # its replacement exists but cannot start: the worker stays away
            try:
                got = _samples(ops)
                assert _up(got) == {dead: 0.0, other: 1.0}
                assert _pings(got) == {other: before[other]}   # the dead worker's series are missing, the other's as they were
                code, body = _get(ops, "/readyz")
                assert body["workers"][dead] == "not up", body
                assert body["workers"][other] in ("ready", "not ready") and (code == 200) == (body["workers"][other] == "ready"), body
                for _ in range(4):   # the front routes every call to the worker that is up
                    c.node.Ping(node_pb2.PingRequest(), timeout=30)
                got = _samples(ops)
                assert _up(got) == {dead: 0.0, other: 1.0}
                assert _pings(got) == {other: before[other] + 4}
            finally:
                os.kill(spare, signal.SIGCONT)

            _wait(lambda: _up(_samples(ops)).get(dead) == 1.0, "the restarted worker answers the scrape")
            got = _samples(ops)
            assert _up(got) == {"0": 1.0, "1": 1.0}
            back = _pings(got)
            assert back.get(dead, 0.0) == 0.0 and back[other] == before[other] + 4, (before, back)   # from 0; the other's go on
            assert _get(ops, "/readyz")[1]["workers"][dead] in ("ready", "not ready")
            for _ in range(4):
                c.node.Ping(node_pb2.PingRequest(), timeout=30)
            after = _pings(_samples(ops))
            assert after[dead] >= 1 and after[other] >= back[other] and sum(after.values()) == before[other] + 8, (back, after)
    finally:
        hub.close()


def test_a_node_toml_too_deep_for_a_unix_socket_puts_the_socket_folder_under_tmpdir(bed, tmp_path, request):
    """When ``.hedui-front.<toml name>`` next to the node.toml would make a socket path
    longer than the kernel takes, the workers' sockets go to a 0700 folder under $TMPDIR,
    removed when the front stops."""
    import shutil
    import tempfile

    tb, hub, _ = bed
    _set_node(tb, "tax", worker_processes=1, max_concurrent_rpcs=8)
    deep = tmp_path / ("deep-" * 12) / ("folder-" * 6) / "tax"
    shutil.copytree(tb.member_dir("tax"), deep, ignore=shutil.ignore_patterns(".hedui-front.*"))
    cfg = deep / "node.toml"
    cfg.write_text(cfg.read_text().replace('"../../', f'"{tb.config_path("tax").parent.parent.parent.resolve()}/'))  # the federation's files
    assert len(os.fsencode(deep / ".hedui-front.node" / "w0.sock")) > 107   # next to it: too long for a socket
    # A fresh temporary folder of its own, short (pytest's tmp_path may be too long for a socket itself).
    tmpdir = Path(tempfile.mkdtemp(prefix="hf-"))
    request.addfinalizer(lambda: shutil.rmtree(tmpdir, ignore_errors=True))
    held = tempfile.tempdir
    tempfile.tempdir = str(tmpdir)
    try:
        folder = socket_folder(cfg)
    finally:
        tempfile.tempdir = held
    assert folder.parent == tmpdir and folder.name.startswith(f"hedui-front-{os.getuid()}-")
    with NodeProcess(cfg, {**tb.env(), "TMPDIR": str(tmpdir)}, log=tmp_path / "deep.log") as node, \
            PeerClient.to_member(hub, "tax") as c:
        c.node.Ping(node_pb2.PingRequest(), timeout=30)
        assert len(_evaluate(c, _blinded()).evaluated_elements) == 3
        assert os.listdir(tmpdir) == [folder.name]
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
        assert sorted(os.listdir(folder)) == ["front.lock", "w0.sock"]
        assert not (deep / ".hedui-front.node").exists()
        (worker,) = _children(node.pid)
        assert _worker_index(worker, folder) == 0
    assert node.proc is not None and node.proc.returncode == 0
    assert os.listdir(tmpdir) == []   # a clean stop removes it


# -- a worker that dies between being picked and being called (in process) -------------------

FILTER = "/hedui.v1.PseudonymService/GetTokenFilter"


def _dying_slots(tmp_path: Path) -> list[WorkerSlot]:
    """Worker slots as a scrape, a probe or a call sees them when the watch finds their worker
    dead between the moment they were read as ready and the moment they are used: the
    channel closed (gRPC then raises ValueError, not an RpcError), or already dropped."""
    closed = grpc.insecure_channel(f"unix:{tmp_path / 'w0.sock'}")
    closed.close()
    return [WorkerSlot(0, str(tmp_path / "w0.sock"), channel=closed, ready=True),
            WorkerSlot(1, str(tmp_path / "w1.sock"), channel=None, ready=True)]


def _front_over(slot: WorkerSlot):
    """An in-process front (its own admission, cap 4) over ``slot``, on a loopback port."""
    from concurrent import futures

    from hedui.common.clock import FixedClock
    from hedui.node.admission import Admission
    from hedui.node.front.proxy import Front

    admission = Admission(4)
    front = Front(admission, [slot], FixedClock(dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((front,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return admission, server, port


def test_a_worker_dying_as_it_is_scraped_is_down_not_an_error(tmp_path):
    from hedui.node.front.ops import NodeFigures
    from hedui.node.front.ops import _ready as ready
    from hedui.node.metrics import FrontMetrics

    slots = _dying_slots(tmp_path)
    got = [s for fam in NodeFigures(FrontMetrics(), slots[:1], timeout=5).collect() for s in fam.samples]
    assert {s.labels["worker"]: s.value for s in got if s.name == "hedui_worker_up"} == {"0": 0.0}
    ok, body = ready(slots, 5)
    assert not ok and body["workers"] == {"0": "not answering", "1": "not up"}


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("method", [PING, FILTER])
def test_a_call_routed_to_a_worker_dying_as_it_is_called_fails_unavailable(tmp_path, which, method):
    """Not UNKNOWN (an exception in the front): the caller, a hub, retries UNAVAILABLE. The
    third case: the worker is dead but the front has not noticed yet (its socket file left,
    nobody listening on it), and the call is sent."""
    import socket


    if which < 2:
        slot = _dying_slots(tmp_path)[which]
    else:
        left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)   # bound, never listening: what a killed worker leaves
        left.bind(str(tmp_path / "w2.sock"))
        slot = WorkerSlot(2, str(tmp_path / "w2.sock"), channel=grpc.insecure_channel(f"unix:{tmp_path / 'w2.sock'}"), ready=True)
    admission, server, port = _front_over(slot)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.RpcError) as e:
                if method == PING:
                    ch.unary_unary(method)(b"", timeout=30)
                else:
                    list(ch.unary_stream(method)(b"", timeout=30))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        if which < 2:
            assert e.value.details().startswith("UNAVAILABLE: node: the worker process ended"), e.value.details()
        assert slot.in_flight == 0 and admission.in_flight == 0   # what the call held is given back
    finally:
        server.stop(None).wait()
        if slot.channel is not None:
            slot.channel.close()
        if which == 2:
            left.close()


@pytest.mark.parametrize("method", [PING, FILTER])
def test_a_call_inside_a_worker_found_dead_ends_unavailable_at_once(tmp_path, method):
    """The call is in the worker (its handler entered) when the watch finds the worker dead
    (``WorkerSlot.died``, what the watch calls): the caller gets UNAVAILABLE now, whatever
    gRPC makes of the closed channel — not CANCELLED, not the 60 s deadline (the defect seen
    under CI load, closing note 2026-12-02). The stand-in worker never answers, so only the
    front can end the call; everything the call held is given back."""
    import threading
    from concurrent import futures


    entered, release = threading.Event(), threading.Event()

    def hold(request, context):
        entered.set()
        release.wait(60)
        return b""

    def hold_stream(request, context):
        entered.set()
        release.wait(60)
        yield b""

    worker = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    worker.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("hedui.v1.NodeService", {
        "Ping": grpc.unary_unary_rpc_method_handler(hold)}), grpc.method_handlers_generic_handler(
        "hedui.v1.PseudonymService", {"GetTokenFilter": grpc.unary_stream_rpc_method_handler(hold_stream)})))
    sock = tmp_path / "w0.sock"
    worker.add_insecure_port(f"unix:{sock}")
    worker.start()
    slot = WorkerSlot(0, str(sock), channel=grpc.insecure_channel(f"unix:{sock}"), ready=True)
    admission, server, port = _front_over(slot)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            if method == PING:
                call = ch.unary_unary(method).future(b"", timeout=60)
                wait = call.result
            else:
                stream = ch.unary_stream(method)(b"", timeout=60)
                wait = functools.partial(list, stream)
            assert entered.wait(30), "the call reached the stand-in worker"
            assert len(slot.flights) == 1
            assert slot.died() == 1
            with pytest.raises(grpc.RpcError) as e:
                wait()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert e.value.details().startswith("UNAVAILABLE: node: the worker process ended"), e.value.details()
        assert not slot.ready and slot.channel is None and not slot.flights
        _wait(lambda: slot.in_flight == 0 and admission.in_flight == 0, "the front giving back the call's slots")
    finally:
        release.set()
        server.stop(None).wait()
        worker.stop(None).wait()


def test_refusals_for_a_worker_dying_as_they_are_handed_over_are_kept(tmp_path):
    from hedui.common.clock import FixedClock
    from hedui.node.admission import Admission
    from hedui.node.front.proxy import Front, _hand_over

    front = Front(Admission(4), _dying_slots(tmp_path), FixedClock(dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)))
    front.tally.count("overloaded", "hub", "hedui.v1.NodeService/Ping")
    _hand_over(front, front.workers)   # neither worker takes them; the front keeps them for later
    assert [(t["cause"], t["peer"], t["count"]) for t in front.tally.take()] == [("overloaded", "hub", 1)]


def test_a_tmpdir_too_long_as_well_is_a_config_error(tmp_path, monkeypatch):
    import tempfile

    deep = tmp_path / ("deep-" * 20) / "node.toml"
    short = tempfile.gettempdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / ("t" * 120)))
    with pytest.raises(ConfigError, match="TMPDIR"):
        socket_folder(deep)
    monkeypatch.setattr(tempfile, "tempdir", short)
    assert socket_folder(deep).parent == Path(short)
