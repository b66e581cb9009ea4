"""The command line as a user runs it: real processes, real signals, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hedui.adapters.synthetic import resident
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.testbed import MemberPlan, Testbed

HEDUI = [sys.executable, "-m", "hedui.node.cli"]
SEED = 7


def case_opened_entries(db, case_ref: str) -> int:
    """``case.opened`` entries for ``case_ref`` in a hub's SQLite store (read as a file)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        rows = [json.loads(e) for (e,) in con.execute("SELECT entry FROM audit_entries WHERE kind = 'case.opened'")]
    finally:
        con.close()
    return sum(1 for r in rows if r["fields"]["case_ref"] == case_ref)


def run(args, env, *, check=True, input=None, timeout=120):
    p = subprocess.run(HEDUI + args, env=env, capture_output=True, text=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    tb = Testbed(tmp_path_factory.mktemp("cli") / "fed",
                 [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"]), MemberPlan("hrss", "hrss", ["provider"])],
                 residents=80, data_seed=SEED)
    tb.create()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    env = {**os.environ, PASSPHRASE_ENV: tb.passphrase}
    for code in ("tax", "hrss"):
        out = json.loads(run(["node", "index", "--config", str(tb.config_path(code)), "--json", "--workers", "0"], env).stdout)
        assert out["tokens"] > 0 and out["records"] > 0
    procs = {}
    for code in ("hub", "tax", "hrss"):
        procs[code] = subprocess.Popen(HEDUI + ["node", "serve", "--config", str(tb.config_path(code))], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for code, p in procs.items():
        line = p.stdout.readline()
        assert "serving on" in line, (code, line, p.stderr.read() if p.poll() is not None else "")
    tb.env_ = env
    tb.procs = procs
    yield tb
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def test_case_open_run_report_verify(bed, tmp_path):
    env, hub = bed.env_, str(bed.config_path("hub"))
    members = tmp_path / "members.csv"
    members.write_text("identity,relation\n" + "".join(f"{resident(n, SEED).id_number},m{n}\n" for n in (1, 2, 3)))
    consent = tmp_path / "auth.pdf"
    consent.write_bytes(b"%PDF signed authorisation")
    ref = json.loads(run(["case", "open", "--config", hub, "--members-file", str(members), "--purpose", "dibao",
                          "--consent-file", str(consent), "--operator", "cw7", "--region", "370304", "--json",
                          "--reference-month", "2026-08"], env).stdout)["case_ref"]
    assert case_opened_entries(bed.member_dir("hub") / "node.db", ref) == 1  # recorded by open_case, once
    counted = json.loads(run(["case", "count", ref, "--config", hub, "--member", "2", "--not-counted", "--reason", "在外地服刑",
                              "--operator", "cw7", "--json"], env).stdout)
    assert counted == {"case_ref": ref, "position": 1, "counted": False, "reason": "在外地服刑", "operator": "cw7"}
    p = run(["case", "run", ref, "--config", hub, "--json"], env, check=False)
    out = json.loads(p.stdout)
    # Every department answered, but no department of this federation offers the asset
    # fields the packaged rules need: the case is incomplete, exit 4, and says why (issue 13).
    assert out["complete"] and out["status"] == "incomplete" and p.returncode == 4, (p.returncode, out)
    assert {(g["provider"], g["advice"]["kind"]) for g in out["missing"]} == {("vehicles", "policy"), ("realestate", "policy")}
    rep = json.loads(run(["case", "report", ref, "--config", hub, "--format", "json"], env).stdout)
    assert rep["case_ref"] == ref and rep["reference_month"] == "2026-08"
    # This federation has no vehicle or real-estate department: the packaged rules' asset flags
    # cannot be decided, so the report is incomplete (never a "clear" flag from nobody's answer).
    assert rep["conclusion"] == "incomplete" and rep["income"]["per_capita_monthly"] is None
    assert {(g["provider"], g["why"]) for g in rep["missing"]} == {("vehicles", "not_answered"), ("realestate", "not_answered")}
    assert rep["counted"] == [0, 2] and rep["excluded"] == [{"position": 1, "reason": "在外地服刑", "day": None, "note": "override"}]
    assert rep["income_window"] == "2025-08..2026-07" and rep["time_zone"] == "Asia/Shanghai"
    html = tmp_path / "r.html"
    run(["case", "report", ref, "--config", hub, "--format", "html", "--out", str(html)], env)
    assert "核对报告" in html.read_text()
    v = json.loads(run(["case", "verify", ref, "--config", hub, "--json"], env).stdout)
    assert v["ok"] and {p["provider"] for p in v["providers"]} == {"tax", "hrss"}
    exp = tmp_path / "ev.json"
    run(["case", "export", ref, "--config", hub, "--out", str(exp)], env)
    v2 = json.loads(run(["case", "verify", "--file", str(exp), "--authority-key", str(bed.authority.signing_pub), "--json"], env).stdout)
    assert v2["ok"]
    for n in (1, 2, 3):
        ident = resident(n, SEED).id_number
        assert ident not in html.read_text() and ident not in exp.read_text()


def test_case_open_as_of_is_the_application_date(bed, tmp_path):
    """docs/time.md "--as-of": an application received on 1 March is verified for February."""
    members = tmp_path / "members.csv"
    members.write_text("".join(f"{resident(n, SEED).id_number},m{n}\n" for n in (7, 8)))
    out = json.loads(run(["case", "open", "--config", str(bed.config_path("hub")), "--members-file", str(members),
                          "--purpose", "dibao", "--consent-digest", "ab" * 32, "--operator", "cw7", "--region", "370304",
                          "--as-of", "2026-03-01", "--json"], bed.env_).stdout)
    assert out["reference_month"] == "2026-02"


@pytest.mark.parametrize("args, message", [
    (["case", "open", "--members-file", "MEMBERS", "--purpose", "dibao", "--operator", "x", "--region", "370304"], "consent"),
    (["case", "open", "--members-file", "MEMBERS", "--purpose", "lottery", "--consent-digest", "00" * 32, "--operator", "x", "--region", "370304"], "purpose"),
    (["case", "open", "--members-file", "MEMBERS", "--purpose", "dibao", "--consent-digest", "zz", "--operator", "x", "--region", "370304"], "consent-digest"),
    (["case", "open", "--members-file", "MEMBERS", "--purpose", "dibao", "--consent-digest", "00" * 32, "--operator", "x",
      "--region", "370304", "--reference-month", "2026-13"], "--reference-month: got '2026-13'"),
    (["case", "open", "--members-file", "MEMBERS", "--purpose", "dibao", "--consent-digest", "00" * 32, "--operator", "x",
      "--region", "370304", "--as-of", "2199-01-01"], "--as-of: got 2199-01-01, in the future"),
    (["case", "count", "HUB-0000-999999", "--member", "1", "--counted", "--reason", "x", "--operator", "x"], "case: got"),
    (["case", "run", "HUB-0000-999999"], "case"),
    (["case", "report", "HUB-0000-999999", "--format", "pdf"], "--format"),
])
def test_case_cli_errors_are_one_line(bed, tmp_path, args, message):
    members = tmp_path / "m.csv"
    members.write_text(f"{resident(5, SEED).id_number},self\n{resident(5, SEED).id_number},dup\n")
    args = [str(members) if a == "MEMBERS" else a for a in args]
    p = run(args[:2] + ["--config", str(bed.config_path("hub"))] + args[2:], bed.env_, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr and message in p.stderr, p.stderr
    assert resident(5, SEED).id_number not in p.stderr + p.stdout


def test_duplicate_member_in_file_is_refused_without_echo(bed, tmp_path):
    ident = resident(6, SEED).id_number
    members = tmp_path / "dup.csv"
    members.write_text(f"{ident},self\n {ident.lower()} ,again\n")
    p = run(["case", "open", "--config", str(bed.config_path("hub")), "--members-file", str(members), "--purpose", "dibao",
             "--consent-digest", "ab" * 32, "--operator", "x", "--region", "370304"], bed.env_, check=False)
    assert p.returncode != 0 and "same person" in p.stderr and ident not in p.stderr


def test_node_check_and_keys_show_directory(bed):
    out = json.loads(run(["node", "check", "--config", str(bed.config_path("tax")), "--json"], bed.env_).stdout)
    assert out["member"] == "tax" and out["directory_version"] == 1
    d = json.loads(run(["keys", "show-directory", str(bed.directory_path), "--authority-key", str(bed.authority.signing_pub), "--json"], bed.env_).stdout)
    assert {m["code"] for m in d["members"]} == {"hub", "tax", "hrss"}


def test_node_check_refuses_hub_rules_naming_departments_not_in_the_directory(bed):
    # The packaged rules name vehicle and real-estate fields; this federation has neither.
    p = run(["node", "check", "--config", str(bed.config_path("hub"))], bed.env_, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    err = " ".join(p.stderr.split())
    assert "verification-rules.toml (packaged default): assets[0].provider: got 'vehicles', want a department in the directory (hrss, tax)" in err, err
    assert "assets[1].provider: got 'realestate'" in err


def test_missing_passphrase_is_a_clear_cli_error(bed):
    env = {k: v for k, v in bed.env_.items() if not k.startswith("HEDUI_KEY_PASSPHRASE")}
    p = run(["node", "check", "--config", str(bed.config_path("tax"))], env, check=False)
    assert p.returncode == 1 and "HEDUI_KEY_PASSPHRASE" in p.stderr and "Traceback" not in p.stderr


def test_running_nodes_keep_no_passphrase_in_their_environment(bed):
    """Issue 18, finding 2: the nodes were started with $HEDUI_KEY_PASSPHRASE; once read it is
    gone from what /proc/<pid>/environ (and so ps eww) shows."""
    alive = [p for p in bed.procs.values() if p.poll() is None]
    assert alive
    for p in alive:
        environ = Path(f"/proc/{p.pid}/environ").read_bytes()
        # The initial environment block cannot shrink: the name stays, its value is overwritten.
        assert bed.passphrase.encode() not in environ
        assert b"HEDUI_KEY_PASSPHRASE=" + b"x" * len(bed.passphrase) in environ


def test_passphrase_from_a_descriptor(bed):
    env = {k: v for k, v in bed.env_.items() if not k.startswith("HEDUI_KEY_PASSPHRASE")}
    r, w = os.pipe()
    os.write(w, bed.passphrase.encode() + b"\n")
    os.close(w)
    try:
        p = subprocess.run(HEDUI + ["--passphrase-fd", str(r), "node", "check", "--config", str(bed.config_path("tax")), "--json"],
                           env=env, capture_output=True, text=True, timeout=120, pass_fds=(r,))
    finally:
        os.close(r)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["member"] == "tax"


def test_second_node_on_same_port_fails_cleanly(bed):
    p = run(["node", "serve", "--config", str(bed.config_path("tax"))], bed.env_, check=False, timeout=60)
    assert p.returncode == 1 and "cannot bind" in p.stderr and "Traceback" not in p.stderr


def test_sigterm_stops_a_node_gracefully(bed, tmp_path):
    # Stop hrss with SIGTERM: it exits 0 and its store stays consistent (migrations at head).
    p = bed.procs["hrss"]
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
    out = json.loads(run(["node", "migrate", "--config", str(bed.config_path("hrss")), "--json"], bed.env_).stdout)
    assert out["before"] == out["after"]
