"""The ``hedui`` command: ``keys``, ``node``, ``demo`` and the workflow sub-commands."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from hedui.node.cli import audit, calendar, case, consent, console, crosscheck, directory, leads, notices
from hedui.node.cli.demo import demo
from hedui.node.cli.keys import app as keys_app
from hedui.node.cli.keys_show import register as _register_keys_show
from hedui.node.cli.node import app as node_app
from hedui.node.cli.node_ops import register as _register_node_ops

app = typer.Typer(
    name="hedui",
    help="Hedui (核对): consented, pseudonymous verification across government departments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from hedui.node.buildinfo import build_info

        info = build_info()
        typer.echo(f"hedui {info['version']} (python {info['python']}, grpc {info['grpc']})")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit"),
    log_level: str | None = typer.Option(None, "--log-level", help="debug, info (one access line per RPC), warning, error"),
    log_format: str | None = typer.Option(None, "--log-format", help="json (default) or text"),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Read the key passphrase from this file (one trailing newline is dropped)"
    ),
    passphrase_fd: int | None = typer.Option(
        None, "--passphrase-fd", help="Read the key passphrase from this open file descriptor, e.g. 3 with 3<secret"
    ),
) -> None:
    """Options before the command apply to it: the key passphrase for every key the command
    opens (not the CA's or the directory key's, which have their own options). Without them
    the passphrase comes from $HEDUI_KEY_PASSPHRASE (read once, then removed from the
    environment) or the file named by $HEDUI_KEY_PASSPHRASE_FILE."""
    from hedui.node.cli.keys import take_passphrase

    if log_level or log_format:
        _configure_logs(log_level, log_format)
    take_passphrase(passphrase_file, passphrase_fd, env=None, option="--passphrase")


_register_keys_show(keys_app)
app.add_typer(keys_app, name="keys", help="Federation CA, member certificates, signing keys, the signed directory.")
_register_node_ops(node_app)
app.add_typer(node_app, name="node", help="Run and maintain a node.")
app.add_typer(directory.app, name="directory", help="Authority: publish the signed directory for nodes to pull.")
app.command("demo")(demo)

app.add_typer(audit.app, name="audit", help="Security officer: export, verify, prove and reconcile audit logs.")
app.add_typer(case.app, name="case", help="Caseworker: open, run, report and verify household verification cases.")
app.add_typer(consent.app, name="consent", help="Hub: consent records; revoke one (providers refuse it from the next request on).")
app.add_typer(notices.app, name="notices", help="Department: run detection rules and push notices.")
app.add_typer(leads.leads_app, name="leads", help="Hub: discovery leads.")
app.add_typer(leads.referrals_app, name="referrals", help="Hub: referral slips (线索转办单) and their deadlines.")
app.add_typer(leads.report_app, name="report", help="Hub: monthly reports.")
app.add_typer(crosscheck.app, name="crosscheck", help="Hub: bulk cross-checks (大数据比对) against signed token filters.")
app.add_typer(calendar.app, name="calendar", help="Working-day calendar: which years are covered, and by what.")
app.add_typer(console.app, name="console", help="Hub: serve the caseworkers' web console (核对工作台); manage its operators.")


def _configure_logs(level: str | None, fmt: str | None) -> None:
    """JSON lines on stderr at $HEDUI_LOG_LEVEL (default warning; $HEDUI_DEBUG=1 still means
    debug), $HEDUI_LOG_FORMAT json|text; the --log-level/--log-format options win (issue 17)."""
    from hedui.adapters.idnum import install_log_guard
    from hedui.node.logs import configure

    level = level or os.environ.get("HEDUI_LOG_LEVEL") or ("debug" if os.environ.get("HEDUI_DEBUG") else "warning")
    fmt = fmt or os.environ.get("HEDUI_LOG_FORMAT") or "json"
    try:
        configure(level, fmt)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    # Whatever any module logs passes the identity guard (issue 13).
    install_log_guard()


def run() -> None:
    _configure_logs(None, None)
    app()
