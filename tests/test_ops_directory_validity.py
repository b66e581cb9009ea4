"""Issue 17 item 1: the authority tooling warns when a directory's validity is not several
(>= 3) times the nodes' refresh interval (X-Road: valid 600 s, pulled every 60 s), both when
signing (`hedui keys sign-directory`) and when publishing (`hedui directory serve`)."""

from __future__ import annotations

import datetime as _dt
import tomllib

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from hedui.common.clock import FixedClock
from hedui.keys.directory import MIN_VALIDITY_FACTOR, load_directory, validity_warning
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.keys.passphrase import DIRECTORY_PASSPHRASE_ENV
from hedui.keys.signing import load_public
from hedui.node.cli import directory as directory_cli
from hedui.node.cli import keys as keys_cli
from hedui.node.cli._app import app
from hedui.node.testbed import MemberPlan, Testbed

NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)
runner = CliRunner()


@pytest.fixture
def bed(tmp_path, monkeypatch):
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 clock=FixedClock(NOW), residents=10)
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    monkeypatch.setenv(DIRECTORY_PASSPHRASE_ENV, tb.directory_passphrase)
    # The command signs "now": the test's fixed instant, not the wall clock.
    monkeypatch.setattr(keys_cli, "wall_clock", lambda tz="": FixedClock(NOW))
    return tb


def _sign(tb, tmp_path, **spec_update) -> tuple[object, str]:
    spec = tomllib.loads(tb.spec_path.read_text(encoding="utf-8"))
    spec.update(version=spec["version"] + 1, **spec_update)
    tb.spec_path.write_text(tomli_w.dumps(spec), encoding="utf-8")
    out = tmp_path / "published.dsse.json"
    r = runner.invoke(app, ["keys", "sign-directory", "--authority", str(tb.authority.root), "--spec", str(tb.spec_path),
                            "--out", str(out)])
    return r, out


def test_sign_directory_warns_when_validity_is_under_three_refresh_intervals(bed, tmp_path):
    r, out = _sign(bed, tmp_path, valid_seconds=120)   # 2 pulls of 60 s
    assert r.exit_code == 0, r.output          # a warning, not a refusal: the directory is signed
    assert "warning" in r.stderr and "less than 3x the refresh interval 60 s" in r.stderr
    td = load_directory(out, load_public("authority", bed.authority.root / "signing.pub"), now=NOW)
    assert td.expires_at == NOW + _dt.timedelta(seconds=120)
    # The X-Road figures: 600 s valid, 60 s refresh -> no warning.
    r, out = _sign(bed, tmp_path, valid_seconds=600)
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output
    # The spec states the nodes' refresh interval; a slower one makes 600 s too short.
    r, _ = _sign(bed, tmp_path, valid_seconds=600, refresh_seconds=300)
    assert r.exit_code == 0 and "less than 3x the refresh interval 300 s" in r.stderr
    # The default (valid_days = 30) is far beyond any refresh interval.
    spec = tomllib.loads(bed.spec_path.read_text(encoding="utf-8"))
    spec.pop("valid_seconds"), spec.pop("refresh_seconds")
    bed.spec_path.write_text(tomli_w.dumps(spec), encoding="utf-8")
    r, _ = _sign(bed, tmp_path)
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output


def test_sign_directory_refuses_a_validity_below_one_minute(bed, tmp_path):
    r, out = _sign(bed, tmp_path, valid_seconds=10)
    assert r.exit_code != 0 and "valid_seconds" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_directory_serve_checks_the_published_file(bed, tmp_path):
    r, out = _sign(bed, tmp_path, valid_seconds=600)
    assert r.exit_code == 0
    assert directory_cli.check_validity(out, 60) is None
    w = directory_cli.check_validity(out, 600)
    assert w is not None and "validity 600 s is less than 3x the refresh interval 600 s" in w
    # Not a directory (or not there): nothing to judge; the nodes refuse it on their side.
    (tmp_path / "junk.json").write_text("{not json")
    assert directory_cli.check_validity(tmp_path / "junk.json", 60) is None
    assert directory_cli.check_validity(tmp_path / "absent.json", 60) is None


@given(validity=st.integers(0, 10**7), refresh=st.integers(1, 86400))
def test_warning_exactly_when_validity_is_under_the_factor(validity, refresh):
    w = validity_warning(_dt.timedelta(seconds=validity), refresh)
    assert (w is not None) == (validity < MIN_VALIDITY_FACTOR * refresh)


def test_directory_publish_resigns_at_the_next_version_with_the_spec_validity(bed, tmp_path, monkeypatch):
    """The generator (X-Road: generated every 60 s, valid 600 s): each step signs the spec at a
    version above the published one, valid from that step's instant."""
    from hedui.common.clock import FixedClock as _Clock
    from hedui.node.cli import _common

    clock = _Clock(NOW)
    monkeypatch.setattr(_common, "wall_clock", lambda tz="": clock)
    spec = tomllib.loads(bed.spec_path.read_text(encoding="utf-8"))
    spec.update(valid_seconds=600, refresh_seconds=60)
    bed.spec_path.write_text(tomli_w.dumps(spec), encoding="utf-8")
    out = tmp_path / "live.dsse.json"
    authority_key = load_public("authority", bed.authority.root / "signing.pub")
    args = ["directory", "publish", "--authority", str(bed.authority.root), "--spec", str(bed.spec_path), "--out", str(out), "--once"]
    got = []
    for _ in range(3):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "warning" not in r.stderr, r.output
        td = load_directory(out, authority_key, now=clock.now())
        got.append((td.version, td.expires_at - clock.now()))
        clock.advance(_dt.timedelta(seconds=60))
    assert got == [(spec["version"] + i, _dt.timedelta(seconds=600)) for i in range(3)]
    # Re-signing every 300 s with a 600 s validity leaves too little slack: warned.
    r = runner.invoke(app, [*args[:-1], "--every", "300", "--once"])
    assert r.exit_code == 0 and "less than 3x the refresh interval 300 s" in r.stderr
    # A spec whose version is ahead of the published one wins.
    spec["version"] = 50
    bed.spec_path.write_text(tomli_w.dumps(spec), encoding="utf-8")
    assert runner.invoke(app, args).exit_code == 0
    assert load_directory(out, authority_key, now=clock.now()).version == 50
