"""pytest plugin for scripts/mutation.sh (loaded with ``-p hedui_mutation_plugin``).

- Checks that ``hedui`` really comes from the mutated copy (else the run would test the
  unmutated worktree and report every mutant as a survivor).
- A deterministic Hypothesis profile: derandomised (the same examples for every mutant), no
  deadline and no health checks (a loaded machine must not "kill" a mutant), no database.
- ``--mutation-select FILE``: run only the test ids listed in FILE (one per line).
- Mapping run: switches the coverage context to the test id for each test (and to
  ``collect:<file>`` while a test module is imported), and writes each test's outcome and
  duration to HEDUI_MUTATION_REPORT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_outcomes: dict[str, dict] = {}


def pytest_addoption(parser):
    parser.addoption("--mutation-select", default=None, help="run only the test ids in this file")


def _cov():
    if not os.environ.get("HEDUI_MUTATION_COVERAGE"):
        return None
    import coverage

    return coverage.Coverage.current()


def _context(name: str) -> None:
    os.environ["HEDUI_MUTATION_CONTEXT"] = name
    cov = _cov()
    if cov is not None:
        cov.switch_context(name)


def pytest_configure(config):
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # pragma: no cover
        return
    settings.register_profile(
        "hedui-mutation", derandomize=True, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), print_blob=False,
    )
    settings.load_profile("hedui-mutation")


def pytest_sessionstart(session):
    root = os.environ.get("HEDUI_MUTATION_ROOT")
    if not root:
        raise pytest.UsageError("hedui_mutation_plugin: HEDUI_MUTATION_ROOT is not set")
    import hedui

    where = Path(hedui.__file__).resolve()
    if not where.is_relative_to(Path(root).resolve()):
        raise pytest.UsageError(f"hedui_mutation_plugin: hedui imported from {where}, not from the copy {root}")


def pytest_collectstart(collector):
    if isinstance(collector, pytest.Module):
        _context(f"collect:{collector.nodeid}")


def pytest_collection_modifyitems(session, config, items):
    _context("")
    sel = config.getoption("--mutation-select")
    if not sel:
        return
    ranked = Path(sel).read_text(encoding="utf-8").splitlines()
    rank = {t: i for i, t in enumerate(ranked)}
    keep = [i for i in items if i.nodeid in rank]
    drop = [i for i in items if i.nodeid not in rank]
    # The file's order (so module fixtures are set up once per file), then the listed order.
    file_rank: dict[str, int] = {}
    for t in ranked:
        file_rank.setdefault(t.split("::", 1)[0], len(file_rank))
    keep.sort(key=lambda i: (file_rank.get(i.nodeid.split("::", 1)[0], 0), rank[i.nodeid]))
    items[:] = keep
    if drop:
        config.hook.pytest_deselected(items=drop)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _context(item.nodeid)
    yield
    _context("")


def pytest_runtest_logreport(report):
    rec = _outcomes.setdefault(report.nodeid, {"outcome": "passed", "duration": 0.0})
    rec["duration"] += report.duration
    if report.failed:
        rec["outcome"] = "failed"
    elif report.skipped and rec["outcome"] == "passed" and report.when in ("setup", "call"):
        rec["outcome"] = "skipped"


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("HEDUI_MUTATION_REPORT")
    if out:
        Path(out).write_text(json.dumps(_outcomes), encoding="utf-8")
