"""The package works from a built wheel, not only from the editable install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_imports_and_cli_from_built_wheel(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("hedui-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = (
        "import hedui, hedui.v1.lookup_pb2, hedui.node.server, hedui.adapters.idnum, hedui.keys.oprf, hedui.node.store.migrate as m;"
        "import hedui.node.audit.log, hedui.node.discovery.hub, hedui.node.verification.report;"
        "from importlib import resources;"
        f"assert hedui.__file__.startswith({str(target)!r}), hedui.__file__;"
        f"assert hedui.node.server.__file__.startswith({str(target)!r});"
        "assert m.head() is not None;"
        "assert resources.files('hedui.node').joinpath('templates/case-report.html').is_file();"
        "assert resources.files('hedui.node').joinpath('templates/monthly-report.html').is_file();"
        "assert resources.files('hedui.node').joinpath('data/verification-rules.toml').is_file();"
        "assert resources.files('hedui.node.console').joinpath('static/htmx.min.js').is_file();"
        "assert resources.files('hedui.node.console').joinpath('templates/cases/show.html').is_file();"
        "import hedui.node.console.app, hedui.common.clock;"
        "print('ok')"
    )
    # -I would drop the venv's site-packages (dependencies); PYTHONPATH puts the wheel's copy
    # ahead of the editable finder, and the assertions prove which copy was imported.
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    cli = subprocess.run([sys.executable, "-m", "hedui.node.cli", "--help"], env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert cli.returncode == 0 and "keys" in cli.stdout
