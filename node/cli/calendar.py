"""``hedui calendar check [YEAR]``: which years the working-day calendar covers, and by what.

Working-day deadlines (referrals due in 5 working days, notices due "within 3 working days")
rest on China's official holidays from ``chinese-calendar``, which knows only the years up
to its release. A year beyond it is covered by the operator's override file when the file
lists the year in ``years`` (docs/time.md "Working days"); otherwise deadlines in it are
counted Monday–Friday and marked ``weekdays-only`` wherever they are shown.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hedui.node.cli._common import cli_errors, console, emit_json, fail, wall_clock

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

_SAYS = {
    "official": "official holidays (chinese-calendar {version})",
    "override": "the override file (years = [...] in {file})",
    "weekdays-only": "NOT COVERED: Monday–Friday only; deadlines are marked weekdays-only",
}


@app.command("check")
@cli_errors
def check(
    years: list[int] = typer.Argument(None, help="Years to check (default: this year and next, in the federation zone)"),
    overrides: Path | None = typer.Option(None, "--overrides", help="Working-day override file (TOML)"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="A node.toml: use its [hub] or [provider] calendar_overrides"
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if a checked year is not covered"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Say which years have working-day data, and from where (official, override, or none)."""
    import chinese_calendar

    from hedui.node.discovery.calendar import WorkCalendar

    if overrides is not None and config is not None:
        fail("give --overrides or --config, not both")
    path = overrides
    if config is not None:
        from hedui.node.config import load_config

        cfg = load_config(config)
        for section in (cfg.hub, cfg.provider):
            if section is not None and section.calendar_overrides is not None:
                path = cfg.path(section.calendar_overrides)
                break
    cal = WorkCalendar(path)
    first, last = cal.official_years
    if not years:
        this = wall_clock().today().year
        years = [this, this + 1]
    for y in years:
        if not 1900 <= y <= 2199:
            fail(f"YEAR: got {y}, want a year 1900..2199", 2)
    checked = [cal.coverage(y) for y in sorted(set(years))]
    version = getattr(chinese_calendar, "__version__", "?")
    out = {
        "official": {"package": "chinesecalendar", "version": version, "first_year": first, "last_year": last},
        "overrides": {"file": str(path) if path is not None else None, "years": sorted(cal.override_years)},
        "years": [c.as_dict() for c in checked],
    }
    uncovered = [c.year for c in checked if c.basis == "weekdays-only"]
    if json_out:
        emit_json(out)
    else:
        console.print(f"official holidays: chinese-calendar {version} covers {first}–{last}")
        console.print("override file: " + (f"{path}, covers {', '.join(map(str, sorted(cal.override_years))) or 'no whole year'}"
                                           if path is not None else "none"))
        table = Table("year", "covered by", "override days")
        for c in checked:
            said = _SAYS[c.basis].format(version=version, file=path)
            table.add_row(str(c.year), said if c.basis != "weekdays-only" else f"[bold red]{said}[/]", str(c.override_days))
        console.print(table)
        if uncovered:
            console.print(f"to cover {', '.join(map(str, uncovered))}: add the State Council's holidays and make-up "
                          "working days to the override file and list the year in its years (docs/time.md)")
    if strict and uncovered:
        raise typer.Exit(1)
