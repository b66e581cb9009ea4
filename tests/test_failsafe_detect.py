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


def _set_mapping(tb, **identity) -> None:
    import tomllib

    import tomli_w

    path = tb.member_dir("fire") / "discovery" / "fire.toml"
    m = tomllib.loads(path.read_text(encoding="utf-8"))
    m["identity"].update(identity)
    path.write_text(tomli_w.dumps(m), encoding="utf-8")


def test_skipped_rows_are_named_apart_from_unusable_rows(tb):
    """A row the mapping filters out (not a person) is *skipped*, named with the filter; a row
    with a bad identity is *unusable*, named with its reason: the two never look the same."""
    rows = _grow(tb, 95)
    header, body = rows[0], rows[1:]
    # Three rows of an organisation (region code 999999 marks them in this export).
    for row in body[20:23]:
        row[-1] = "999999"
    _write(tb, [header, *body])
    _set_mapping(tb, skip_where={"区划代码": "999999"})
    r = _detect(tb)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["skipped"] == 3 and out["problems"] == 1
    assert [s["filter"] for s in out["skipped_rows"]] == ["identity.skip_where"] * 3
    skipped = {s["locator"] for s in out["skipped_rows"]}
    problems = {p["locator"] for p in out["problem_rows"]}
    assert skipped == {f"fire.csv:line {n}" for n in (22, 23, 24)} and not skipped & problems
    assert out["records"] == len(body) - 4
    # In words too, on standard error: "skipped row …" apart from "unusable row …".
    r = runner.invoke(app, ["notices", "detect", "--config", str(tb.config_path("fire")), "--as-of", SCENARIO_AS_OF.isoformat()])
    assert r.exit_code == 0, r.output
    assert r.stderr.count("skipped row fire.csv:line") == 3 and r.stderr.count("unusable row") == 1
    assert "identity.skip_where" in r.stderr and not idnum.contains(r.stdout + r.stderr)


def test_truncated_export_fails_however_few_rows_were_bad(tb):
    """An export cut off inside a row (a copy that stopped): one short row, but an unknown
    number missing after it — never a success."""
    rows = _grow(tb, 95)
    _write(tb, rows)
    text = _fire_csv(tb).read_text(encoding="utf-8")
    cut = text.rstrip("\n").rsplit("\n", 1)
    last = cut[1].split(",")
    _fire_csv(tb).write_text(cut[0] + "\n" + ",".join(last[:3]), encoding="utf-8")
    r = _detect(tb)
    assert r.exit_code == 3, r.output
    out = json.loads(r.stdout)
    assert out["truncated"] == f"fire.csv:line {len(rows)}" and out["too_many_unusable"] is True
    assert out["problems"] == 2  # the planted bad identity and the cut row
    assert "truncated export" in r.stderr and "rows after it are missing" in r.stderr
    # A complete last row without a final line end is not a truncation.
    _fire_csv(tb).write_text(text.rstrip("\n"), encoding="utf-8")
    r = _detect(tb)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["truncated"] is None


def test_unterminated_quote_names_every_swallowed_row_and_fails(tb):
    """A quote opened and never closed used to swallow every later row into one cell (606 rows
    read as one, exit 0): every line from the quote on is named and counted as unusable."""
    rows = _grow(tb, 95)
    _write(tb, rows)
    lines = _fire_csv(tb).read_text(encoding="utf-8").split("\n")
    n = 11  # file line 11 (the header is line 1)
    lines[n - 1] = lines[n - 1].replace(",", ',"', 1)
    _fire_csv(tb).write_text("\n".join(lines), encoding="utf-8")
    r = _detect(tb)
    assert r.exit_code == 3, r.output
    out = json.loads(r.stdout)
    last = len(rows)  # the file's last line
    got = [p["locator"] for p in out["problem_rows"] if "never closed" in p["reason"]]
    assert got == [f"fire.csv:line {k}" for k in range(n, last + 1)]
    assert out["truncated"] == f"fire.csv:line {n}"
    assert out["records"] + out["problems"] >= last - 1


def test_export_in_the_wrong_encoding_is_refused_with_one_line(tb):
    """All rows undecodable (a GBK export read as UTF-8): refused at the header, one line, exit
    1 — never a run that reads nothing and succeeds."""
    text = _fire_csv(tb).read_text(encoding="utf-8")
    _fire_csv(tb).write_bytes(text.encode("gbk"))
    r = _detect(tb)
    assert r.exit_code == 1
    assert "source.encoding" in r.stderr and "Traceback" not in r.output
