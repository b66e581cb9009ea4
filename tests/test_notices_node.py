"""Discovery on a node, around the wire: schedules, the dedup secret, the escalation job,
config errors, and the ``hedui notices | leads | referrals | report --config`` commands."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.audit.entry import decode_entry
from hedui.node.audit.tables import audit_entries
from hedui.node.cli._app import app
from hedui.node.config import load_config
from hedui.node.discovery.calendar import CHINA_TZ
from hedui.node.discovery.provider import (
    DetectionScheduler,
    ProviderNotices,
    PushLoop,
    dedup_secret_path,
    load_or_create_dedup_secret,
    provider_background,
)
from hedui.node.discovery.referrals import EscalationJob
from hedui.node.discovery.service import NoticeServicer
from hedui.node.discovery.tables import notice_outbox
from hedui.node.errors import ConfigError
from hedui.node.runtime import Runtime
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.testbed.discovery import SCENARIO_AS_OF, planted_identity

runner = CliRunner()


@pytest.fixture
def tb(tmp_path, monkeypatch):
    members = [MemberPlan("hub", "hub", ["hub"]), MemberPlan("medins", "medins", ["provider"]),
               MemberPlan("fire", "fire", ["provider"])]
    bed = Testbed(tmp_path / "fed", members, residents=60).create()
    monkeypatch.setenv(PASSPHRASE_ENV, bed.passphrase)
    yield bed
    bed.stop()


@pytest.fixture
def open_rt(tb):
    opened = []

    def _open(code: str):
        rt = Runtime.open(tb.config_path(code))
        opened.append(rt)
        return rt

    yield _open
    for rt in opened:
        rt.close()


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at

    def __call__(self) -> datetime:
        return self.now


def _local(d: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(d, time(hh, mm), CHINA_TZ).astimezone(UTC)


# ---------------------------------------------------------------- schedules


def test_scheduler_runs_each_rule_once_per_period_or_day(open_rt):
    rt = open_rt("medins")
    clock = Clock(_local(SCENARIO_AS_OF, 1, 0))
    pn = ProviderNotices(rt, clock=clock)
    sched = DetectionScheduler(pn, at=time(1, 30), clock=clock)
    ids = {r.id for r in pn.rules.rules}
    assert ids == {"medins.inpatient_single_20k", "medins.inpatient_yearly_40k"}

    assert sched.tick() == pytest.approx(1800.0)  # 01:00: half an hour to go, nothing run
    assert {r.id for r in pn.due_rules(SCENARIO_AS_OF)} == ids
    clock.now = _local(SCENARIO_AS_OF, 1, 30)
    assert sched.tick() == 3600.0  # ran; next look within the hour
    assert pn.due_rules(SCENARIO_AS_OF) == ()
    with rt.engine.connect() as c:
        queued = c.execute(select(notice_outbox.c.rule)).scalars().all()
    assert "medins.inpatient_single_20k" in queued and "medins.inpatient_yearly_40k" in queued
    n = len(queued)

    # The next day: the this-year rule runs again (daily), the last-month rule does not.
    nxt = SCENARIO_AS_OF + timedelta(days=1)
    assert [r.id for r in pn.due_rules(nxt)] == ["medins.inpatient_yearly_40k"]
    clock.now = _local(nxt, 2)
    sched.tick()
    assert pn.due_rules(nxt) == ()
    # November: the last-month rule is due again (October's stays).
    assert "medins.inpatient_single_20k" in {r.id for r in pn.due_rules(date(2025, 11, 3))}
    with rt.engine.connect() as c:
        assert len(c.execute(select(notice_outbox.c.rule)).scalars().all()) == n  # re-runs queued nothing twice


def test_background_jobs_follow_the_config(tb, open_rt):
    assert provider_background(open_rt("hub")) == []  # no [provider] rules
    jobs = provider_background(open_rt("fire"))  # the testbed sets detect_at = "manual"
    assert [type(j) for j in jobs] == [PushLoop]
    p = tb.config_path("medins")
    p.write_text(p.read_text().replace('detect_at = "manual"', 'detect_at = "07:05"'))
    jobs = provider_background(open_rt("medins"))
    assert [type(j) for j in jobs] == [DetectionScheduler, PushLoop] and jobs[0].at == time(7, 5)
    for j in jobs:  # start and stop promptly
        j.start()
    for j in jobs:
        j.stop()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('detect_at = "manual"', 'detect_at = "25:00"'), "provider.detect_at"),
        (lambda t: t.replace('hub = "hub"', 'hub = "fire"'), "without the hub role"),
        (lambda t: t.replace('hub = "hub"', 'hub = "nobody"'), "'nobody'"),
    ],
)
def test_provider_discovery_config_errors_are_one_line(tb, edit, message):
    p = tb.config_path("fire")
    p.write_text(edit(p.read_text()))
    with pytest.raises(ConfigError) as e:
        rt = Runtime.open(p)
        try:
            ProviderNotices(rt)
        finally:
            rt.close()
    assert message in e.value.message and "\n" not in e.value.message


def test_hub_config_errors_stop_the_hub_at_start(tb, tmp_path):
    from hedui.keys.sealing import SealingKey

    p = tb.config_path("hub")
    text = p.read_text()
    p.write_text(text.replace('routing = "hub-discovery.toml"\n', ""))
    rt = Runtime.open(p)  # cases still run without discovery...
    try:
        assert rt.hub is not None and rt.hub.discovery is None
        with pytest.raises(ConfigError, match="hub.routing: got none"):
            NoticeServicer(rt)  # ...but the node does not start its NoticeService
    finally:
        rt.close()
    # A private key that is not the one the directory publishes.
    SealingKey.generate().save(tmp_path / "other.key", tb.passphrase.encode())
    p.write_text(text.replace('sealing_key = "sealing.key"', f'sealing_key = "{tmp_path / "other.key"}"'))
    with pytest.raises(ConfigError, match="differs from the sealing key in directory"):
        Runtime.open(p)


# ---------------------------------------------------------------- the dedup secret


def test_dedup_secret_is_created_once_next_to_the_store(tb, tmp_path):
    cfg = load_config(tb.config_path("fire"))
    path = dedup_secret_path(cfg)
    assert path == tb.member_dir("fire") / "dedup.secret" and not path.exists()
    pw = tb.passphrase.encode()
    got: list[bytes] = []
    threads = [threading.Thread(target=lambda: got.append(load_or_create_dedup_secret(path, pw))) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(got) == 4 and len(set(got)) == 1 and len(got[0]) == 32
    assert b"\x00" * 8 not in path.read_bytes() and got[0] not in path.read_bytes()  # encrypted at rest
    assert path.stat().st_mode & 0o077 == 0
    assert load_or_create_dedup_secret(path, pw) == got[0]
    with pytest.raises(ConfigError, match="wrong passphrase"):
        load_or_create_dedup_secret(path, b"not the passphrase")
    p = tb.config_path("fire")
    p.write_text(p.read_text().replace("[provider]\n", f'[provider]\ndedup_secret = "{tmp_path / "elsewhere.secret"}"\n'))
    assert dedup_secret_path(load_config(p)) == tmp_path / "elsewhere.secret"


# ---------------------------------------------------------------- escalation


def test_escalation_job_escalates_overdue_referrals_and_audits_it(tb, open_rt):
    tb.start(["hub"])
    rt = tb.runtime("hub")
    hub = rt.hub.discovery
    acc = hub.add_manual_lead(identity=planted_identity(tb, 5), region="370304001", event_type="illness",
                              event_date=date(2025, 10, 9), reporter="grid-017", now=_local(date(2025, 10, 9), 10))
    ref = hub.referral(acc.referral_id)
    # 5 working days after Thursday 9 October: 10, 11 (a Saturday worked after National Day), 13, 14, 15.
    assert ref.due_date == date(2025, 10, 15)
    job = EscalationJob(rt)
    assert job.run_once(date(2025, 10, 15)) == []  # due today: not overdue yet
    (done,) = job.run_once(date(2025, 10, 16))
    assert (done.referral_id, done.status) == (acc.referral_id, "escalated")
    assert job.run_once(date(2025, 10, 20)) == []  # once
    rt.audit.log.flush()
    with rt.engine.connect() as c:
        entries = [decode_entry(bytes(e)) for e in c.execute(select(audit_entries.c.entry)).scalars()]
    admin = [e["fields"] for e in entries if e["kind"] == "admin"]
    assert admin == [{"action": "referrals.escalate", "operator": "hedui/escalation-job", "as_of": "2025-10-16",
                      "count": 1, "referral_ids": [acc.referral_id]}]
    job.start()
    job.stop()


# ---------------------------------------------------------------- the commands on a node


def _cli(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.timesensitive
def test_notices_and_leads_commands_on_node_configs(tb):
    tb.start(["hub"])
    fire, hub = str(tb.config_path("fire")), str(tb.config_path("hub"))
    r = _cli("notices", "detect", "--config", fire, "--as-of", SCENARIO_AS_OF.isoformat(), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["queued"], out["problems"], len(out["detections"])) == (2, 1, 2)
    assert {d["due_date"] for d in out["detections"]} == {"2025-10-11"}
    r = _cli("notices", "detect", "--config", fire, "--as-of", SCENARIO_AS_OF.isoformat(), "--json")
    assert json.loads(r.stdout)["queued"] == 0

    r = _cli("notices", "push", "--config", fire, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"attempted": 2, "delivered": 2, "duplicates": 0, "failed": 0, "pending": 0}
    r = _cli("notices", "status", "--config", fire, "--json")
    assert (json.loads(r.stdout)["delivered"], json.loads(r.stdout)["pending"]) == (2, 0)

    r = _cli("leads", "list", "--config", hub, "--json")
    assert r.exit_code == 0, r.output
    leads = json.loads(r.stdout)
    assert len(leads) == 2
    r = _cli("referrals", "list", "--config", hub, "--json")
    refs = json.loads(r.stdout)
    assert sorted(x["assignee"] for x in refs) == ["370304001", "370304002"]  # routed to the fires' towns
    r = _cli("leads", "show", str(leads[0]["lead_id"]), "--config", hub, "--reveal", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["identity"] in {planted_identity(tb, 2), planted_identity(tb, 13)}
    r = _cli("referrals", "respond", str(refs[0]["referral_id"]), "--config", hub, "--outcome", "found", "--json")
    assert json.loads(r.stdout)["status"] == "responded"
    # The month the product filed the referrals under: the local date it shows (checked
    # against the stored UTC instant + 8 h), not the wall clock read here.
    made = datetime.fromisoformat(refs[0]["created_at"])
    assert refs[0]["created_on"] == (made + timedelta(hours=8)).date().isoformat()
    r = _cli("report", "monthly", "--config", hub, "--month", refs[0]["created_on"][:7])
    rep = json.loads(r.stdout)
    assert (rep["received"]["by_provider"], rep["referred"]) == ({"fire": 2}, 2)

    # The hub away: the push fails, says so in one line, exits 1; the notices stay queued.
    tb.stop(["hub"])
    _cli("notices", "detect", "--config", str(tb.config_path("medins")), "--as-of", SCENARIO_AS_OF.isoformat())
    r = _cli("notices", "push", "--config", str(tb.config_path("medins")))
    assert r.exit_code == 1
    assert "not delivered; they stay queued" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["notices", "detect", "--config", "{fire}", "--rules", "x.toml"], "--rules: not with --config"),
        (["notices", "detect", "--records-csv", "x.csv", "--department", "fire"], "--provider: got nothing"),
        (["notices", "push", "--config", "{hub}"], "want a node with the provider role"),
        (["leads", "list"], "--config: got nothing"),
        (["leads", "list", "--config", "{fire}"], "want a node with the hub role"),
        (["leads", "list", "--config", "{hub}", "--db", "sqlite:///x.db"], "not both"),
        (["notices", "status"], "exactly one of --db or --config"),
    ],
)
def test_command_errors_are_one_line(tb, args, message):
    paths = {"fire": str(tb.config_path("fire")), "hub": str(tb.config_path("hub"))}
    r = _cli(*[a.format(**paths) for a in args])
    assert r.exit_code != 0
    assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
