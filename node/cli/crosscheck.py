"""``hedui crosscheck run``: a named bulk cross-check on the hub (node/crosscheck/run.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hedui.node.cli._common import AS_OF_HELP, as_of_clock, cli_errors, console, emit_json, fail, progress_bar

app = typer.Typer(no_args_is_help=True)


@app.command("run")
@cli_errors
def run(
    check_file: Path = typer.Argument(..., help="The check (TOML: name, reference_month, population, criteria)"),
    config: Path = typer.Option(..., "--config", "-c", help="The hub's node.toml"),
    count_only: bool = typer.Option(False, "--count-only", help="Only |hits| per criterion: no identities, no leads"),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP),
    timeout: float = typer.Option(60.0, help="Deadline per provider call, seconds"),
    workers: int = typer.Option(0, "--workers", help="Processes for the shard-by-shard intersection (0: in this process)"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Check a population against departments' signed token filters; hits become stop-warning leads."""
    from hedui.node.crosscheck.check import load_check
    from hedui.node.crosscheck.run import run_check
    from hedui.node.runtime import Runtime

    try:
        check = load_check(check_file)
    except OSError as exc:
        fail(f"{check_file}: {exc.strerror}")
    rt = Runtime.open(config, clock=as_of_clock(as_of))
    try:
        if "hub" not in rt.config.node.roles:
            fail(f"{config}: node.roles has no 'hub'; cross-checks run on the hub")
        with progress_bar(disable=json_out) as bar:
            tasks: dict[str, int] = {}

            def progress(what: str, done: int, total: int) -> None:
                if what not in tasks:
                    tasks[what] = bar.add_task(what, total=total)
                bar.update(tasks[what], completed=done, total=total)

            if workers > 0:
                from hedui.node.procs import worker_pool

                with worker_pool(workers) as pool:
                    res = run_check(rt, check, count_only=count_only, progress=progress, timeout=timeout, executor=pool)
            else:
                res = run_check(rt, check, count_only=count_only, progress=progress, timeout=timeout)
    finally:
        rt.close()
    out = res.as_dict()
    if json_out:
        emit_json(out)
        return
    console.print(f"[bold]{res.name}[/] (run {res.run_id}) as of {res.day}: population {res.population}, "
                  f"invalid lines {', '.join(map(str, res.invalid_lines)) or 'none'}")
    t = Table(title="hits by criterion")
    t.add_column("criterion")
    t.add_column("hits", justify="right")
    for k, v in res.counts.items():
        t.add_row(k, str(v))
    console.print(t)
    if not count_only:
        h = Table(title="hits (stop-warning leads)")
        for col in ("lead", "identity", "town", "reasons"):
            h.add_column(col)
        for hit in out["hits"]:
            h.add_row(str(hit["lead_id"]), hit["identity"], hit["town"], ", ".join(hit["reasons"]))
        console.print(h)
