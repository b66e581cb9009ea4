"""The ``hedui`` command: ``keys``, ``node``, ``demo`` and the workflow sub-commands."""

from __future__ import annotations

import importlib
import logging
import os

import typer

from hedui.node.cli.keys import app as keys_app
from hedui.node.cli.node import app as node_app
from hedui.node.cli.demo import demo

app = typer.Typer(
    name="hedui",
    help="Hedui (核对): consented, pseudonymous verification across government departments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys_app, name="keys", help="Federation CA, member certificates, signing keys, the signed directory.")
app.add_typer(node_app, name="node", help="Run and maintain a node.")
app.command("demo")(demo)

# Workflow sub-apps, each in its own module: (module, attribute, name, help).
_SUBAPPS = [
    ("hedui.node.cli.audit", "app", "audit", "Security officer: export, verify, prove and reconcile audit logs."),
    ("hedui.node.cli.case", "app", "case", "Caseworker: open, run, report and verify household verification cases."),
    ("hedui.node.cli.discovery", "notices_app", "notices", "Department: run detection rules and push notices."),
    ("hedui.node.cli.discovery", "leads_app", "leads", "Hub: discovery leads."),
    ("hedui.node.cli.discovery", "referrals_app", "referrals", "Hub: referral slips (线索转办单) and their deadlines."),
    ("hedui.node.cli.discovery", "report_app", "report", "Hub: monthly reports."),
    ("hedui.node.cli.console", "app", "console", "Hub: serve the caseworkers' web console (核对工作台); manage its operators."),
]
for _mod, _attr, _name, _help in _SUBAPPS:
    try:
        _m = importlib.import_module(_mod)
    except ModuleNotFoundError as _exc:
        if _exc.name != _mod:
            raise
        continue
    app.add_typer(getattr(_m, _attr), name=_name, help=_help)


def run() -> None:
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("HEDUI_DEBUG") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app()
