"""Fault suite, honest exits (issue 13 item 9): ``hedui case run`` exits 4 on an incomplete
case, says why per department with the advice that fits the cause (a policy refusal is not
"run again later"), and no income total is shown for an incomplete case — in the CLI, nor in
the report's JSON or HTML. A complete case exits 0."""

from __future__ import annotations

import json
import tomllib

import pytest
import tomli_w
from typer.testing import CliRunner

from hedui.adapters.synthetic import resident
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.cli._app import app
from hedui.node.cli.case import EXIT_INCOMPLETE
from hedui.node.testbed import MemberPlan, Testbed, default_policy
from hedui.node.verification.advice import for_gap, for_outcome, reason_code
from hedui.node.verification.cases import consent_digest_of, open_case

SEED = 7
runner = CliRunner()

# Rules the two departments of this bed can complete: income from hrss only, a standard for
# the region (the packaged rules also need vehicle and real-estate departments).
RULES = """
[standards]
default = 950
"370304" = 1010

[[income]]
provider = "hrss"
field = "wages_12m"
months = 12
label = "wages"
"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    root = tmp_path_factory.mktemp("exit")
    members = [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"]), MemberPlan("hrss", "hrss", ["provider"])]
    tb = Testbed(root / "fed", members, residents=40, data_seed=SEED)
    tb.create()
    # hrss answers no "tekun" lookups: a refusal by policy, which running again cannot cure.
    pol = default_policy(tb.members)
    for r in pol:
        if r["provider"] == "hrss" and r["method"].endswith("/Lookup"):
            r["purposes"] = [p for p in r["purposes"] if p != "tekun"]
    tb.policy = pol
    tb.sign_directory()
    rules = root / "hub-rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    path = tb.config_path("hub")
    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    cfg.setdefault("hub", {})["rules"] = str(rules)
    path.write_text(tomli_w.dumps(cfg), encoding="utf-8")
    mp = pytest.MonkeyPatch()
    mp.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.build_indexes()
    tb.start()
    yield tb
    tb.stop()
    mp.undo()


def _case(tb, purpose: str = "dibao") -> str:
    ids = [(resident(n, SEED).id_number, "m") for n in (1, 2)]
    return open_case(tb.runtime("hub"), ids, purpose=purpose, consent_digest=consent_digest_of(b"auth"),
                     operator="cw", region="370304")


def _run(tb, ref: str, *extra: str):
    r = runner.invoke(app, ["case", "run", ref, "--config", str(tb.config_path("hub")), "--timeout", "2",
                            "--retries", "0", *extra])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


def _report(tb, ref: str, fmt: str) -> str:
    r = runner.invoke(app, ["case", "report", ref, "--config", str(tb.config_path("hub")), "--format", fmt, "--lang", "en"])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_complete_case_exits_zero_and_shows_its_total(bed):
    ref = _case(bed)
    r = _run(bed, ref, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "complete" and out["exit_code"] == 0 and out["missing"] == []
    assert all(p["advice"] is None for p in out["providers"])
    rep = json.loads(_report(bed, ref, "json"))
    assert rep["conclusion"] == "complete" and rep["income"]["total"] is not None


def test_unavailable_department_exits_4_says_retry_and_shows_no_total(bed):
    # hrss holds the income the rules need: without it the report cannot conclude.
    ref = _case(bed)
    bed.stop(["hrss"])
    try:
        r = _run(bed, ref)
    finally:
        bed.start(["hrss"])
    assert r.exit_code == EXIT_INCOMPLETE, r.output
    assert "incomplete: hrss: unavailable" in r.stderr and "run the case again later" in r.stderr
    assert "no income total" in r.stderr
    rep = json.loads(_report(bed, ref, "json"))
    assert rep["conclusion"] == "incomplete"
    assert rep["income"]["total"] is None and rep["income"]["per_capita_monthly"] is None
    html = _report(bed, ref, "html")
    assert "INCOMPLETE" in html and "Annual total" not in html and "Per-capita monthly income" not in html


def test_policy_refusal_exits_4_and_says_fix_the_policy_not_retry(bed):
    ref = _case(bed, "tekun")
    r = _run(bed, ref, "--json")
    assert r.exit_code == EXIT_INCOMPLETE
    out = json.loads(r.stdout)
    by = {p["provider"]: p for p in out["providers"]}
    assert by["hrss"]["status"] == "refused" and "PURPOSE_NOT_ALLOWED" in by["hrss"]["reason"]
    assert by["hrss"]["advice"]["kind"] == "policy" and "will not help" in by["hrss"]["advice"]["text"]
    assert by["tax"]["advice"] is None
    # And in words, for the caseworker.
    r = _run(bed, ref)
    assert r.exit_code == EXIT_INCOMPLETE
    assert "refused by policy (PURPOSE_NOT_ALLOWED)" in r.stderr and "again later" not in r.stderr


@pytest.mark.parametrize(("status", "reason", "kind"), [
    ("unavailable", "DEADLINE_EXCEEDED: deadline", "retry"),
    ("maintenance", "in maintenance (directory v3)", "maintenance"),
    ("refused", "RESOURCE_EXHAUSTED: QUOTA_EXCEEDED: 2 per minute", "retry"),
    ("refused", "RESOURCE_EXHAUSTED: OVERLOADED: at capacity", "retry"),
    ("refused", "PERMISSION_DENIED: PURPOSE_NOT_ALLOWED: no", "policy"),
    ("refused", "PERMISSION_DENIED: FIELD_NOT_ALLOWED: no", "policy"),
    ("refused", "PERMISSION_DENIED: CONSENT_REVOKED: revoked", "consent"),
    ("refused", "INVALID_ARGUMENT: something new", "policy"),
    ("bad_signature", "BAD_SIGNATURE: x", "security"),
    ("bad_proof", "BAD_PROOF: x", "security"),
])
def test_advice_fits_the_cause(status, reason, kind):
    a = for_outcome(status, reason)
    assert a is not None and a.kind == kind
    assert for_outcome("ok", "") is None


def test_advice_for_report_gaps_and_reason_codes():
    assert for_gap("not_current").kind == "not_current"
    assert for_gap("not_answered").kind == "policy"
    assert reason_code("PERMISSION_DENIED: PURPOSE_NOT_ALLOWED: x") == "PURPOSE_NOT_ALLOWED"
    assert reason_code("QUOTA_EXCEEDED: x") == "QUOTA_EXCEEDED"
    assert reason_code("went away") == ""
