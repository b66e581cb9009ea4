"""The testbed wing: the loopback federation (demo, tests, benchmarks) and, in
:mod:`hedui.node.testbed.departments`, nine realistic department databases.

Transitional, branch ``realdata`` only: on this branch the federation testbed is still the
single module ``node/testbed.py``, which this package directory shadows on import. Its code is
executed here unchanged so that ``hedui.node.testbed`` keeps every name it had. The layout move
(``node/testbed.py`` into this package) replaces this file; at merge, take that version.
"""

from pathlib import Path as _Path

_LEGACY = _Path(__file__).resolve().parent.parent / "testbed.py"
if _LEGACY.is_file():
    exec(compile(_LEGACY.read_text(encoding="utf-8"), str(_LEGACY), "exec"))  # noqa: S102
