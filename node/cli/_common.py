"""Shared CLI plumbing: one-line errors with non-zero exit, JSON output, rich consoles."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape

from hedui.adapters import idnum
from hedui.common.clock import Clock, ClockError, FixedClock, SystemClock, fmt_instant, parse_as_of, zone
from hedui.node.errors import HeduiError

__all__ = [
    "console", "err_console", "cli_errors", "emit_json", "fail", "wall_clock", "as_of_clock", "AS_OF_HELP",
    "EXIT_USAGE", "EXIT_ERROR",
]

console = Console()
err_console = Console(stderr=True)
EXIT_ERROR = 1
EXIT_USAGE = 2


def wall_clock(tz: str = "") -> Clock:
    """The clock of a command run by a person: the wall clock, in the federation zone ``tz``
    (the directory's; empty = Asia/Shanghai). Commands whose result depends on a date build a
    FixedClock from ``--as-of`` instead (DESIGN.md "Time")."""
    return SystemClock(zone(tz))


#: The one help text of every ``--as-of`` (docs/time.md "--as-of").
AS_OF_HELP = (
    "Act as of this date (YYYY-MM-DD: the end of that day in the federation zone) or instant "
    "(2026-12-01T02:40+08:00, with its offset); default: now"
)


def as_of_clock(as_of: str | None, tz: ZoneInfo | str = "", *, option: str = "--as-of",
                future: bool = True, wall: Clock | None = None) -> Clock:
    """The clock a date-dependent command runs on: the wall clock, or a FixedClock at
    ``--as-of`` (parsed by :func:`hedui.common.clock.parse_as_of` in the zone ``tz``).

    ``future=False`` refuses an ``--as-of`` after now, for commands where acting in the
    future makes no sense (escalating referrals that are not yet due, detecting events that
    have not happened): a date after today, or an instant after now, is a one-line error."""
    wall = wall if wall is not None else wall_clock(tz.key if isinstance(tz, ZoneInfo) else tz)
    if as_of is None:
        return wall
    try:
        at = parse_as_of(as_of, wall.zone, field=option)
    except ClockError as exc:
        fail(exc.message, EXIT_USAGE)
    if not future:
        is_date = re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}\s*", as_of) is not None
        today, now = wall.today(), wall.now()
        if (is_date and at.astimezone(wall.zone).date() > today) or (not is_date and at > now):
            fail(f"{option}: got {as_of.strip()[:32]}, in the future (now {fmt_instant(now, wall.zone)}), "
                 "want a date or instant not after now", EXIT_USAGE)
    return FixedClock(at, wall.zone)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
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
        _forget_final_failures()  # only this command's count
        try:
            out = fn(*args, **kwargs)
        except typer.Exit:
            _unsigned_at_exit()
            raise
        except HeduiError as exc:
            fail(exc.message)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:
            if _is_storage_full(exc):
                fail(f"store: could not write ({_one_line(exc)}): the disk is full, a file size limit was reached or the disk failed; "
                     "the step that failed was not stored (each write is one transaction) — free space and run again")
            # a bug: say so plainly, log details at debug level
            logging.getLogger("hedui.cli").debug("unexpected error", exc_info=True)
            fail(f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''} (run with HEDUI_DEBUG=1 for details)")
        _unsigned_at_exit()
        return out

    return wrapper


def _one_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


#: What SQLite and the OS say when a write finds no room (ENOSPC, EFBIG past RLIMIT_FSIZE):
#: SQLite reports a short write as "disk I/O error" and a full database as "database or disk
#: is full".
_FULL = ("database or disk is full", "disk i/o error", "no space left on device", "file too large")


def _is_storage_full(exc: BaseException) -> bool:
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG):
        return True
    text = str(exc).lower()
    return type(exc).__name__ in ("OperationalError", "DiskFull") and any(t in text for t in _FULL)


def _forget_final_failures() -> None:
    from hedui.node.audit.recorder import final_failures

    final_failures()


def _unsigned_at_exit() -> None:
    """A process that appended audit entries and could not sign them before exiting says so
    and exits 1 (issue 13): its entries stay unsigned until the node signs again."""
    from hedui.node.audit.recorder import final_failures

    failures = final_failures()
    if failures:
        fail(f"audit: could not sign the final checkpoint ({failures[0]}); this run's entries stay unsigned "
             "(`hedui audit verify` says UNSIGNED_TAIL) until the node signs — free space and start the node")


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
