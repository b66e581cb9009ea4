"""Shared CLI plumbing: one-line errors with non-zero exit, JSON output, rich consoles."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from hedui.adapters import idnum
from hedui.common.clock import Clock, SystemClock, zone
from hedui.node.errors import HeduiError

__all__ = ["console", "err_console", "cli_errors", "emit_json", "fail", "wall_clock", "EXIT_USAGE", "EXIT_ERROR"]

console = Console()
err_console = Console(stderr=True)
EXIT_ERROR = 1
EXIT_USAGE = 2


def wall_clock(tz: str = "") -> Clock:
    """The clock of a command run by a person: the wall clock, in the federation zone ``tz``
    (the directory's; empty = Asia/Shanghai). Commands whose result depends on a date build a
    FixedClock from ``--as-of`` instead (DESIGN.md "Time")."""
    return SystemClock(zone(tz))


def fail(message: str, code: int = EXIT_ERROR) -> None:
    # The one guard (issue 13): nothing shaped like an identity number, nor a piece of one
    # given on the command line, reaches the terminal.
    message = idnum.guard(message, sys.argv[1:])
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def refuse_identity_arguments(args: tuple, kwargs: dict) -> None:
    """Identity numbers are read from files, never from the command line (shell history,
    ``ps``): a command given one is refused before it runs, without echoing it."""
    for value in [*args, *kwargs.values()]:
        if isinstance(value, str) and idnum.contains(value):
            fail("argument: got something shaped like a resident identity number, want a case reference or a "
                 "file (identity numbers are read from files, never from the command line)", EXIT_USAGE)


def cli_errors(fn: Callable) -> Callable:
    """Turns every expected error into one clear line and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        refuse_identity_arguments(args, kwargs)
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except HeduiError as exc:
            fail(exc.message)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:  # a bug: say so plainly, log details at debug level
            logging.getLogger("hedui.cli").debug("unexpected error", exc_info=True)
            fail(f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''} (run with HEDUI_DEBUG=1 for details)")

    return wrapper


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=1, default=str) + "\n")
    sys.stdout.flush()


def progress_bar(*, disable: bool = False):
    """The one progress display for long jobs: bar, count, rate and ETA (when a total is known)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")

    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console, disable=disable,
    )
