"""``hedui notices | leads | referrals | report``: outputs, one-line errors, no identities."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import typer
from typer.testing import CliRunner

from hedui.keys.sealing import SealingKey
from hedui.node.cli import leads as leads_cli
from hedui.node.cli import notices as notices_cli
from hedui.node.discovery import tables  # noqa: F401 - registers the tables
from hedui.node.store.db import open_engine, sqlite_url
from hedui.node.store.schema import metadata

runner = CliRunner()


def _idn(body17: str) -> str:
    w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body17 + "10X98765432"[sum(int(c) * x for c, x in zip(body17, w)) % 11]


P1, P2 = _idn("37030419600101001"), _idn("37030419600101002")

app = typer.Typer()
app.add_typer(notices_cli.app, name="notices")
app.add_typer(leads_cli.leads_app, name="leads")
app.add_typer(leads_cli.referrals_app, name="referrals")
app.add_typer(leads_cli.report_app, name="report")


@pytest.fixture
def env(tmp_path, monkeypatch):
    db = sqlite_url(tmp_path / "node.db")
    eng = open_engine(db)
    metadata.create_all(eng)
    eng.dispose()
    key = SealingKey.generate()
    key.save(tmp_path / "sealing.pem", b"pw")
    (tmp_path / "sealing.pub").write_bytes(key.public_bytes())
    (tmp_path / "person.secret").write_bytes(b"k" * 32)
    (tmp_path / "dedup.secret").write_bytes(b"d" * 32)
    (tmp_path / "hub.toml").write_text(
        """
hub = "370304-mz"
person_secret_file = "person.secret"
sealing_public_file = "sealing.pub"

[[routes]]
region = ""
event_type = "*"
assignee = "370304-mz-center"
assignee_kind = "department"
name = "区社会救助综合服务中心"

[[routes]]
region = "370304001"
assignee = "370304001"
assignee_kind = "town"
name = "城东街道"
""",
        encoding="utf-8",
    )
    (tmp_path / "stays.csv").write_text(
        "identity,fact,value,unit,on,hospital,region\n"
        f"{P1},inpatient_stay,20000.00,CNY,2025-05-31,区医院,370304001\n"
        f"{P2},inpatient_stay,19999.99,CNY,2025-05-30,区医院,370304001\n"
        f"{P2},inpatient_stay,30000,CNY,2025-06-01,区医院,370304001\n",
        encoding="utf-8-sig",
    )
    monkeypatch.setenv("HEDUI_SEALING_PASSPHRASE", "pw")
    return tmp_path, db


def invoke(*args: str, input: str | None = None):
    result = runner.invoke(app, list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_detect_from_csv_lists_public_fields_only(env):
    tmp, _ = env
    r = invoke("notices", "detect", "--provider", "370304-medins", "--department", "medins",
               "--records-csv", str(tmp / "stays.csv"), "--as-of", "2025-06-03",
               "--dedup-secret-file", str(tmp / "dedup.secret"), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    # P1's stay is exactly 20,000 in May; P2's 19,999.99 is not, but with June's 30,000 P2's
    # year-to-date total (49,999.99) crosses the yearly 40,000 rule.
    assert [(d["rule"], d["event_date"], d["due_date"]) for d in out["detections"]] == [
        ("medins.inpatient_single_20k", "2025-05-31", "2025-06-05"),
        ("medins.inpatient_yearly_40k", "2025-06-01", "2025-12-31"),
    ]
    assert P1 not in r.output and P2 not in r.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--as-of", "2025-13-01"], "--as-of: got '2025-13-01'"),
        (["--department", "police"], "department: got 'police'"),
        (["--enqueue", "370304-mz"], "--db: got nothing"),
    ],
)
def test_detect_bad_input_is_one_line_error(env, args, needle):
    tmp, _ = env
    base = ["notices", "detect", "--provider", "p", "--records-csv", str(tmp / "stays.csv"),
            "--dedup-secret-file", str(tmp / "dedup.secret")]
    if "--department" not in args:
        base += ["--department", "medins"]
    r = invoke(*base, *args)
    assert r.exit_code != 0
    assert needle in r.output
    assert "Traceback" not in r.output


def test_bad_csv_names_line_not_identity(env):
    tmp, _ = env
    bad = tmp / "bad.csv"
    bad.write_text(f"identity,fact,value,unit,on\n{P1},inpatient_stay,lots,CNY,2025-05-31\n", encoding="utf-8")
    r = invoke("notices", "detect", "--provider", "p", "--department", "medins", "--records-csv", str(bad),
               "--dedup-secret-file", str(tmp / "dedup.secret"))
    assert r.exit_code != 0
    assert "line 2: value: got 'lots', want a decimal" in r.output
    assert P1 not in r.output


@pytest.mark.timesensitive
def test_hub_commands_end_to_end(env):
    """On the wall clock (the product's SystemClock path; .ci/run repeats it under faketime
    at instants that break naive code). The test never reads the clock itself: it checks that
    every date the product shows agrees with the instant it recorded."""
    tmp, db = env
    common = ["--db", db, "--hub-config", str(tmp / "hub.toml")]
    (tmp / "id.txt").write_text(P1 + "\n", encoding="utf-8")
    r = invoke("leads", "add", *common, "--identity-file", str(tmp / "id.txt"), "--region", "370304001",
               "--event-type", "illness", "--reporter", "grid-0107", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["new_lead"] and first["referral_id"]
    r = invoke("leads", "add", *common, "--identity-file", "-", "--region", "370304001",
               "--event-type", "fire_loss", "--reporter", "grid-0107", "--json", input=P1 + "\n")
    assert json.loads(r.stdout) == {"lead_id": first["lead_id"], "new_lead": False, "referral_id": None}

    r = invoke("leads", "list", *common, "--json")
    assert [(x["lead_id"], x["events"]) for x in json.loads(r.stdout)] == [(first["lead_id"], 2)]
    r = invoke("leads", "merged", *common, "--json")
    assert json.loads(r.stdout)[0]["event_types"] == ["fire_loss", "illness"]
    r = invoke("leads", "show", str(first["lead_id"]), *common, "--json")
    assert P1 not in r.output
    r = invoke("leads", "show", str(first["lead_id"]), *common, "--reveal", "--sealing-key",
               str(tmp / "sealing.pem"), "--json")
    assert json.loads(r.stdout)["identity"] == P1

    r = invoke("referrals", "list", *common, "--status", "open", "--json")
    (ref,) = json.loads(r.stdout)
    assert ref["assignee"] == "370304001"
    # "created" is the local date in China (UTC+8, computed here with a fixed offset) of the
    # instant stored in UTC: at 23:30 UTC on the 30th it is already the 1st.
    made = datetime.fromisoformat(ref["created_at"])
    assert made.utcoffset() == timedelta(0)
    today = (made + timedelta(hours=8)).date().isoformat()
    assert ref["created_on"] == today
    # A deadline counted in a year chinese_calendar has no data for says so.
    import chinese_calendar

    last_official = max(chinese_calendar.holidays).year
    want_basis = "official" if int(ref["due_date"][:4]) <= last_official else "weekdays-only"
    assert ref["due_basis"] == want_basis, ref
    r = invoke("referrals", "list", *common)
    assert r.exit_code == 0 and f"{today}" in r.stdout and "UTC" in r.stdout
    assert (want_basis != "official") == ("weekdays-only" in r.stdout)
    # Escalating as of a future date is refused in one line; a bad --as-of too.
    r = invoke("referrals", "escalate", *common, "--as-of", "2199-01-01")
    assert r.exit_code != 0 and "--as-of: got 2199-01-01, in the future" in r.output and r.output.count("\n") == 1
    r = invoke("referrals", "escalate", *common, "--as-of", "2026-12-01T02:40")
    assert r.exit_code != 0 and "without a UTC offset" in r.output
    r = invoke("referrals", "list", *common, "--as-of", "2000-01-01", "--json")
    assert json.loads(r.stdout) == []  # nothing had been referred by then
    r = invoke("referrals", "overdue", *common, "--as-of", ref["due_date"], "--json")
    assert json.loads(r.stdout) == []
    r = invoke("referrals", "respond", str(ref["referral_id"]), *common, "--outcome", "assisted", "--json")
    assert r.exit_code != 0 and "programme: got None" in r.output
    r = invoke("referrals", "respond", str(ref["referral_id"]), *common, "--outcome", "assisted",
               "--programme", "dibao", "--json")
    assert json.loads(r.stdout)["status"] == "responded"
    r = invoke("referrals", "respond", "999", *common, "--outcome", "found")
    assert r.exit_code != 0 and "referral: got 999" in r.output

    y, m = int(today[:4]), int(today[5:7])
    r = invoke("report", "monthly", *common, "--year", str(y), "--month", str(m))
    rep = json.loads(r.stdout)
    assert rep["referred"] == 1 and rep["received"]["manual"] == 2
    assert rep["period"] == today[:7] and rep["time_zone"] == "Asia/Shanghai"
    r = invoke("report", "monthly", *common)  # default: the month of today in China
    assert json.loads(r.stdout)["period"] == today[:7]
    r = invoke("report", "monthly", *common, "--month", today[:7], "--as-of", today)
    assert (json.loads(r.stdout)["referred"], json.loads(r.stdout)["as_at"]) == (1, today)
    out = tmp / "report.html"
    r = invoke("report", "monthly", *common, "--year", str(y), "--month", str(m), "--format", "html",
               "--out", str(out))
    assert r.exit_code == 0 and "<svg" in out.read_text(encoding="utf-8")
    r = invoke("report", "monthly", *common, "--year", str(y), "--month", "13")
    assert r.exit_code != 0 and "month: got" in r.output


def test_identity_file_and_store_errors(env, tmp_path):
    tmp, db = env
    common = ["--db", db, "--hub-config", str(tmp / "hub.toml")]
    (tmp / "two.txt").write_text(f"{P1}\n{P2}\n", encoding="utf-8")
    r = invoke("leads", "add", *common, "--identity-file", str(tmp / "two.txt"), "--region", "370304001",
               "--event-type", "illness", "--reporter", "g")
    assert r.exit_code != 0 and "got 2 non-empty lines" in r.output and P1 not in r.output
    empty = sqlite_url(tmp_path / "empty.db")
    r = invoke("leads", "list", "--db", empty, "--hub-config", str(tmp / "hub.toml"))
    assert r.exit_code != 0 and "is missing" in r.output
    r = invoke("leads", "list", "--db", db, "--hub-config", str(tmp / "nope.toml"))
    assert r.exit_code != 0 and "unreadable" in r.output


def test_detect_enqueue_with_keys_and_status(env, monkeypatch):
    """Queueing off the node: the notices are sealed to the hub's key and signed with the
    department's key given on the command line (no module global, issue 11)."""
    from sqlalchemy import select

    from hedui.keys import dsse
    from hedui.keys.keyfile import PASSPHRASE_ENV
    from hedui.keys.signing import SigningKey
    from hedui.node.discovery.notice import open_notice
    from hedui.node.discovery.tables import notice_outbox
    from hedui.v1 import common_pb2, notice_pb2

    tmp, db = env
    monkeypatch.setenv(PASSPHRASE_ENV, "department passphrase")
    signer = SigningKey.generate("370304-medins")
    signer.save(tmp / "signing.key", b"department passphrase")
    args = ["notices", "detect", "--provider", "370304-medins", "--department", "medins",
            "--records-csv", str(tmp / "stays.csv"), "--as-of", "2025-06-03",
            "--dedup-secret-file", str(tmp / "dedup.secret"), "--enqueue", "370304-mz", "--db", db,
            "--signing-key", str(tmp / "signing.key"), "--hub-sealing-key", str(tmp / "sealing.pub"), "--json"]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["queued"] == 2
    r = invoke(*args)  # a re-run of the same period queues nothing new
    assert json.loads(r.stdout)["queued"] == 0
    eng = open_engine(db)
    try:
        with eng.connect() as c:
            envelopes = [common_pb2.Envelope.FromString(bytes(e)) for e in c.execute(select(notice_outbox.c.envelope)).scalars()]
    finally:
        eng.dispose()
    hub_key = SealingKey.load(tmp / "sealing.pem", b"pw")
    opened = set()
    for env_ in envelopes:
        payload, _ = dsse.verify(env_, {signer.public.keyid: signer.public}, payload_type=dsse.NOTICE)
        notice = notice_pb2.Notice.FromString(payload)
        assert (notice.provider, notice.hub) == ("370304-medins", "370304-mz")
        opened.add(open_notice(notice, hub_key).identity)
    assert opened == {P1, P2}
    r = invoke("notices", "detect", "--provider", "p", "--department", "medins", "--records-csv", str(tmp / "stays.csv"),
               "--dedup-secret-file", str(tmp / "dedup.secret"), "--enqueue", "370304-mz", "--db", db)
    assert r.exit_code != 0 and "--signing-key" in r.output
    r = invoke("notices", "status", "--db", db, "--json")
    st = json.loads(r.stdout)
    assert (st["pending"], st["delivered"]) == (2, 0)
    assert {p["rule"] for p in st["oldest_pending"]} == {"medins.inpatient_single_20k", "medins.inpatient_yearly_40k"}
    assert P1 not in r.output and P2 not in r.output
