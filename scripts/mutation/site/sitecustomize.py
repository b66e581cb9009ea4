"""Loaded by every Python process the mutation run starts (PYTHONPATH points here).

1. Imports of ``hedui`` resolve to the temporary copy being mutated (HEDUI_MUTATION_ROOT),
   not to the worktree the editable install points at: a finder placed before the editable
   finder maps each ``package-dir`` entry of pyproject.toml into the copy. Child processes
   (CLI tests, kill -9 tests) inherit the environment and so import the mutant too.
2. When HEDUI_MUTATION_COVERAGE is set (the mapping run), coverage measures the target files
   in this process, under the context named by HEDUI_MUTATION_CONTEXT (the test id that
   started the process; the pytest plugin switches it per test in the main process).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path


class _CopyFinder(importlib.abc.MetaPathFinder):
    def __init__(self, mapping: dict[str, Path]) -> None:
        self._mapping = mapping

    def find_spec(self, fullname, path=None, target=None):
        folder = self._mapping.get(fullname)
        if folder is None:
            return None
        init = folder / "__init__.py"
        if not init.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(folder)])


def _install_finder(root: Path) -> None:
    import tomllib

    doc = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    pkg_dir = doc.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    mapping = {name: (root / rel).resolve() for name, rel in pkg_dir.items()}
    sys.meta_path.insert(0, _CopyFinder(mapping))


def _start_coverage(prefix: str) -> None:
    import atexit

    import coverage

    include = [p for p in os.environ.get("HEDUI_MUTATION_INCLUDE", "").split(os.pathsep) if p]
    cov = coverage.Coverage(
        data_file=prefix, data_suffix=True, include=include, branch=False,
        context=os.environ.get("HEDUI_MUTATION_CONTEXT", "") or None, config_file=False,
    )
    cov.start()

    def _save() -> None:
        cov.stop()
        cov.save()

    atexit.register(_save)


_root = os.environ.get("HEDUI_MUTATION_ROOT")
if _root:
    _install_finder(Path(_root))
    if os.environ.get("HEDUI_MUTATION_COVERAGE"):
        _start_coverage(os.environ["HEDUI_MUTATION_COVERAGE"])
