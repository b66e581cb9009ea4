"""``hedui demo``: a throwaway federation on loopback that shows every flow end to end."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import typer
from rich.table import Table

from hedui.node.cli._common import cli_errors, console, emit_json


@cli_errors
def demo(
    workdir: Path | None = typer.Option(None, "--workdir", help="Keep the federation's files here (default: a temporary folder, removed)"),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary"),
) -> None:
    """Build a CA, a hub and seven department nodes on loopback with synthetic data; run every flow; stop."""
    from hedui.node.testbed.demo import run_demo

    keep = workdir is not None
    root = Path(workdir) if keep else Path(tempfile.mkdtemp(prefix="hedui-demo-"))
    if keep and root.exists() and any(root.iterdir()):
        from hedui.node.cli._common import fail

        fail(f"--workdir {root}: not empty; choose a new folder")
    started = time.monotonic()
    try:
        summary = run_demo(root, say=(lambda *_a, **_k: None) if json_out else console.print)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["workdir"] = str(root) if keep else None
    if json_out:
        emit_json(summary)
        return
    t = Table(title="Hedui demo summary")
    t.add_column("step")
    t.add_column("result")
    for step in summary["steps"]:
        t.add_row(step["name"], step["result"])
    console.print(t)
    console.print(f"[green]ok[/] in {summary['seconds']} s" + (f"; files kept in {root}" if keep else ""))
