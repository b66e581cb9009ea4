"""The console's way to run a cross-check (issue 15 item 4) takes a file NAME from a form:
only a ``*.toml`` directly in the configured folder is accepted, so no path, traversal or
other file ever reaches the file system; anything else is a clear InvalidArgument before
any runtime is touched."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedui.node.crosscheck.history import available_checks, run_named_check
from hedui.node.errors import InvalidArgument


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("checks")
    (d / "income.toml").write_text('name = "x"\n', encoding="utf-8")
    (d / "pop.csv").write_text("identity\n", encoding="utf-8")
    (d / "sub").mkdir()
    (d / "sub" / "inner.toml").write_text('name = "y"\n', encoding="utf-8")
    (d / "dir.toml").mkdir()
    return d


def test_only_toml_files_directly_in_the_folder(folder, tmp_path):
    assert available_checks(folder) == ["income.toml"]
    assert available_checks(None) == [] and available_checks(tmp_path / "absent") == []


_ODD = ["../income.toml", "sub/inner.toml", "pop.csv", "dir.toml", "/etc/passwd", "income.toml\x00", " income.toml",
        "INCOME.TOML", "income/toml"]


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=80) | st.sampled_from(_ODD))
def test_any_other_name_is_refused_before_anything_runs(folder, name):
    if name == "income.toml":
        return
    with pytest.raises(InvalidArgument) as ei:
        run_named_check(None, folder, name, operator="sv01")  # type: ignore[arg-type]  (never reached)
    assert "want one of ['income.toml']" in ei.value.message


def test_no_folder_configured_refuses_every_name():
    with pytest.raises(InvalidArgument) as ei:
        run_named_check(None, None, "income.toml", operator="sv01")  # type: ignore[arg-type]
    assert "configured check files" in ei.value.message
