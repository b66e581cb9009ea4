"""Fault suite, department data (issue 13, ``notices detect``'s part): a run names every row
it could not use by locator, and fails — exit 3, period not marked done — when more than
``provider.max_unusable_share`` of the rows could not be used (an undecodable or truncated
export used to exit 0 having detected nothing)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from hedui.adapters import idnum
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.cli._app import app
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.testbed.discovery import SCENARIO_AS_OF

runner = CliRunner()


@pytest.fixture
def tb(tmp_path, monkeypatch):
    members = [MemberPlan("hub", "hub", ["hub"]), MemberPlan("fire", "fire", ["provider"])]
    bed = Testbed(tmp_path / "fed", members, residents=60).create()
    cfg = bed.config_path("fire")
    # The default share (the testbed allows more for its five-row scenario).
    cfg.write_text(cfg.read_text().replace("max_unusable_share = 0.25", "max_unusable_share = 0.05"))
    monkeypatch.setenv(PASSPHRASE_ENV, bed.passphrase)
    yield bed
    bed.stop()


def _fire_csv(tb: Testbed):
    return tb.member_dir("fire") / "discovery" / "fire.csv"


def _detect(tb: Testbed):
    r = runner.invoke(app, ["notices", "detect", "--config", str(tb.config_path("fire")), "--as-of", SCENARIO_AS_OF.isoformat(), "--json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


def _rows(tb):
    text = _fire_csv(tb).read_text(encoding="utf-8")
    return list(csv.reader(io.StringIO(text)))


def _write(tb, rows):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    _fire_csv(tb).write_text(buf.getvalue(), encoding="utf-8")


def _grow(tb, n: int) -> list[list[str]]:
    """The planted export plus ``n`` good rows (same shape, other keys), so shares are meaningful."""
    rows = _rows(tb)
    header, body = rows[0], rows[1:]
    good = next(r for r in body if idnum.contains(r[1]))
    extra = [[f"FIRE-9{i:04d}", *good[1:]] for i in range(n)]
    return [header, *body, *extra]


def test_a_few_bad_rows_are_named_and_the_run_succeeds(tb):
    rows = _grow(tb, 95)
    _write(tb, rows)
    r = _detect(tb)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["problems"] == 1 and out["too_many_unusable"] is False
    assert [p["locator"] for p in out["problem_rows"]] and all("fire.csv" in p["locator"] for p in out["problem_rows"])
    assert not idnum.contains(r.stdout)


def test_undecodable_identities_beyond_the_share_fail_the_run(tb):
    rows = _grow(tb, 95)
    fixed = [list(r) for r in rows]
    header, body = rows[0], rows[1:]
    # Ten rows whose identity column is mangled (an encoding accident): 11 of 100 unusable.
    for row in body[5:15]:
        row[1] = "Ã¦Â—Â¥" + row[1][:4]
    _write(tb, [header, *body])
    r = _detect(tb)
    assert r.exit_code == 3, r.output
    out = json.loads(r.stdout)
    assert out["problems"] == 11 and out["too_many_unusable"] is True
    assert len(out["problem_rows"]) == 11
    lines = {p["locator"] for p in out["problem_rows"]}
    assert len(lines) == 11  # each named by its own locator
    assert "could not be used" in r.stderr and "11 of 100" in r.stderr
    assert not idnum.contains(r.stdout + r.stderr)
    # The run is not the period's run: the scheduler will run these rules again.
    from hedui.node.runtime import Runtime

    rt = Runtime.open(tb.config_path("fire"))
    try:
        assert rt.notices is not None and len(rt.notices.due_rules(SCENARIO_AS_OF)) == len(rt.notices.rules.rules)
    finally:
        rt.close()
    _write(tb, fixed)
    assert _detect(tb).exit_code == 0
    rt = Runtime.open(tb.config_path("fire"))
    try:
        assert rt.notices is not None and rt.notices.due_rules(SCENARIO_AS_OF) == ()
    finally:
        rt.close()


def test_every_row_failing_is_never_a_success(tb):
    rows = _rows(tb)
    header, body = rows[0], rows[1:]
    for row in body:
        row[1] = "garbled"
    _write(tb, [header, *body])
    r = _detect(tb)
    assert r.exit_code == 3
    out = json.loads(r.stdout)
    assert out["records"] == 0 and out["problems"] == len(body) and out["detections"] == []
